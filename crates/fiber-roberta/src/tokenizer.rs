//! The byte-level BPE tokenizer of RoBERTa, wrapping the `tokenizers` crate.
//!
//! Loads a HuggingFace `tokenizer.json`, or `vocab.json` + `merges.txt` in roberta-base form,
//! and can train a fresh byte-level BPE vocabulary from a text corpus (no pretrained vocabulary
//! can be downloaded at run time; the built-in dataset trains its own). Special-token ids are
//! looked up in the loaded vocabulary, never assumed.

use std::path::Path;

use burn::prelude::*;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::processors::roberta::RobertaProcessing;
use tokenizers::{AddedToken, Tokenizer};

use crate::error::RobertaError;

/// Ids of the special tokens, read from the vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialTokens {
    /// `<s>`, the sequence start (its state is pooled).
    pub bos: u32,
    /// `</s>`, the sequence end.
    pub eos: u32,
    /// `<pad>`.
    pub pad: u32,
    /// `<mask>`, for masked-language modelling.
    pub mask: u32,
    /// `<unk>`.
    pub unk: u32,
}

/// The strings of RoBERTa's special tokens, in the order a trained vocabulary lists them.
pub const SPECIAL_TOKEN_STRINGS: [&str; 5] = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"];

/// Token ids and padding mask of a batch, row-major `[batch, len]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedBatch {
    /// Token ids, padded with `<pad>`.
    pub input_ids: Vec<i64>,
    /// 1 for real tokens, 0 for padding.
    pub attention_mask: Vec<i64>,
    /// Number of rows.
    pub batch: usize,
    /// Length of every row.
    pub len: usize,
}

impl EncodedBatch {
    /// The ids and the mask as `[batch, len]` integer tensors: the one path by which token
    /// batches reach the device.
    pub fn to_tensors<B: Backend>(
        &self,
        device: &B::Device,
    ) -> (Tensor<B, 2, Int>, Tensor<B, 2, Int>) {
        (
            fiber_core::host::int_matrix(&self.input_ids, self.len, device),
            fiber_core::host::int_matrix(&self.attention_mask, self.len, device),
        )
    }

    /// Row `i` of the ids.
    pub fn row(&self, i: usize) -> &[i64] {
        &self.input_ids[i * self.len..(i + 1) * self.len]
    }
}

/// A RoBERTa tokenizer: `<s> tokens </s>` with `<pad>` padding.
#[derive(Clone, Debug)]
pub struct RobertaTokenizer {
    inner: Tokenizer,
    special: SpecialTokens,
}

fn tk_err(e: impl std::fmt::Display) -> RobertaError {
    RobertaError::Tokenizer(e.to_string())
}

fn special_added_tokens() -> Vec<AddedToken> {
    SPECIAL_TOKEN_STRINGS
        .iter()
        .map(|s| AddedToken::from(*s, true).lstrip(*s == "<mask>"))
        .collect()
}

impl RobertaTokenizer {
    fn from_inner(mut inner: Tokenizer) -> Result<Self, RobertaError> {
        let id = |s: &str| {
            inner.token_to_id(s).ok_or_else(|| {
                RobertaError::Tokenizer(format!("the vocabulary has no `{s}` token"))
            })
        };
        let special = SpecialTokens {
            bos: id("<s>")?,
            pad: id("<pad>")?,
            eos: id("</s>")?,
            unk: id("<unk>")?,
            mask: id("<mask>")?,
        };
        // Sequences are wrapped here, not by the file's post-processor, so that truncation
        // keeps `</s>` whatever the file says; no padding or truncation inside the library.
        inner.with_padding(None);
        inner.with_truncation(None).map_err(tk_err)?;
        Ok(Self { inner, special })
    }

    /// Loads a HuggingFace `tokenizer.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, RobertaError> {
        let path = path.as_ref();
        if !path.exists() {
            return Err(RobertaError::Tokenizer(format!(
                "{}: file not found",
                path.display()
            )));
        }
        Self::from_inner(
            Tokenizer::from_file(path)
                .map_err(|e| RobertaError::Tokenizer(format!("{}: {e}", path.display())))?,
        )
    }

    /// Builds the roberta-base tokenizer from `vocab.json` and `merges.txt`.
    pub fn from_vocab_merges(
        vocab: impl AsRef<Path>,
        merges: impl AsRef<Path>,
    ) -> Result<Self, RobertaError> {
        let (vocab, merges) = (vocab.as_ref(), merges.as_ref());
        for p in [vocab, merges] {
            if !p.exists() {
                return Err(RobertaError::Tokenizer(format!(
                    "{}: file not found",
                    p.display()
                )));
            }
        }
        let bpe = BPE::from_file(&vocab.to_string_lossy(), &merges.to_string_lossy())
            .build()
            .map_err(tk_err)?;
        let mut inner = Tokenizer::new(bpe);
        inner.with_pre_tokenizer(Some(ByteLevel::default().add_prefix_space(false)));
        inner.with_decoder(Some(ByteLevelDecoder::default()));
        inner
            .add_special_tokens(special_added_tokens())
            .map_err(tk_err)?;
        let mut tokenizer = Self::from_inner(inner)?;
        tokenizer.set_post_processor();
        Ok(tokenizer)
    }

    /// Loads a `tokenizer.json` file, or a folder as [`Self::from_dir`] does.
    pub fn from_dir_or_file(path: impl AsRef<Path>) -> Result<Self, RobertaError> {
        let path = path.as_ref();
        if path.is_file() {
            Self::from_file(path)
        } else {
            Self::from_dir(path)
        }
    }

    /// Loads `dir/tokenizer.json`, or else `dir/vocab.json` + `dir/merges.txt`.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self, RobertaError> {
        let dir = dir.as_ref();
        if dir.join("tokenizer.json").exists() {
            Self::from_file(dir.join("tokenizer.json"))
        } else if dir.join("vocab.json").exists() {
            Self::from_vocab_merges(dir.join("vocab.json"), dir.join("merges.txt"))
        } else {
            Err(RobertaError::Tokenizer(format!(
                "{}: neither tokenizer.json nor vocab.json + merges.txt found",
                dir.display()
            )))
        }
    }

    /// Trains a byte-level BPE vocabulary of at most `vocab_size` entries (special tokens and
    /// the 256 byte symbols included) on `corpus`, one text per item.
    pub fn train<I, S>(
        corpus: I,
        vocab_size: usize,
        min_frequency: u64,
    ) -> Result<Self, RobertaError>
    where
        I: Iterator<Item = S> + Send,
        S: AsRef<str> + Send,
    {
        let mut trainer: TrainerWrapper = BpeTrainerBuilder::new()
            .vocab_size(vocab_size)
            .min_frequency(min_frequency)
            .special_tokens(special_added_tokens())
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .show_progress(false)
            .build()
            .into();
        let mut inner = Tokenizer::new(BPE::default());
        inner.with_pre_tokenizer(Some(ByteLevel::default().add_prefix_space(false)));
        inner.with_decoder(Some(ByteLevelDecoder::default()));
        inner.train(&mut trainer, corpus).map_err(tk_err)?;
        let mut tokenizer = Self::from_inner(inner)?;
        tokenizer.set_post_processor();
        Ok(tokenizer)
    }

    fn set_post_processor(&mut self) {
        let s = self.special;
        self.inner.with_post_processor(Some(RobertaProcessing::new(
            ("</s>".into(), s.eos),
            ("<s>".into(), s.bos),
        )));
    }

    /// The tokenizer as HuggingFace `tokenizer.json` text.
    pub fn to_json(&self) -> Result<String, RobertaError> {
        self.inner.to_string(true).map_err(tk_err)
    }

    /// Saves as a HuggingFace `tokenizer.json` (written to a temporary file, then renamed).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), RobertaError> {
        let path = path.as_ref();
        let json = self.to_json()?;
        fiber_core::store::write_atomically(path, json.as_bytes())
            .map_err(|e| RobertaError::Tokenizer(e.to_string()))
    }

    /// The special-token ids.
    pub fn special(&self) -> SpecialTokens {
        self.special
    }

    /// Vocabulary size, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Ids of `text` without special tokens.
    pub fn encode_plain(&self, text: &str) -> Result<Vec<u32>, RobertaError> {
        Ok(self
            .inner
            .encode(text, false)
            .map_err(tk_err)?
            .get_ids()
            .to_vec())
    }

    /// Ids of `text` without special tokens, each with the character range `[start, end)` of
    /// `text` it covers (Python string indices, as MDETR's `tokens_positive` use).
    pub fn encode_with_char_offsets(
        &self,
        text: &str,
    ) -> Result<Vec<(u32, (usize, usize))>, RobertaError> {
        let encoding = self
            .inner
            .encode_char_offsets(text, false)
            .map_err(tk_err)?;
        Ok(encoding
            .get_ids()
            .iter()
            .copied()
            .zip(encoding.get_offsets().iter().copied())
            .collect())
    }

    /// Encodes `texts` as `<s> … </s>`, truncated to `max_len` tokens (the `</s>` is kept) and
    /// padded with `<pad>` to exactly `max_len` (FIBER pads to the maximum length, docs/model.md §1.2).
    pub fn encode_batch<S: AsRef<str>>(
        &self,
        texts: &[S],
        max_len: usize,
    ) -> Result<EncodedBatch, RobertaError> {
        if max_len < 2 {
            return Err(RobertaError::Tokenizer(format!(
                "max_len {max_len} cannot hold <s> and </s>"
            )));
        }
        let inputs: Vec<&str> = texts.iter().map(|t| t.as_ref()).collect();
        let encodings = self.inner.encode_batch(inputs, false).map_err(tk_err)?;
        let s = self.special;
        let mut batch = EncodedBatch {
            input_ids: Vec::new(),
            attention_mask: Vec::new(),
            batch: texts.len(),
            len: max_len,
        };
        for encoding in encodings {
            let body = encoding.get_ids();
            let body = &body[..body.len().min(max_len - 2)];
            let real = body.len() + 2;
            batch.input_ids.push(s.bos as i64);
            batch.input_ids.extend(body.iter().map(|&id| id as i64));
            batch.input_ids.push(s.eos as i64);
            batch
                .input_ids
                .extend(std::iter::repeat_n(s.pad as i64, max_len - real));
            batch.attention_mask.extend(std::iter::repeat_n(1, real));
            batch
                .attention_mask
                .extend(std::iter::repeat_n(0, max_len - real));
        }
        Ok(batch)
    }

    /// Text of `ids`; with `skip_special` the special tokens are dropped.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String, RobertaError> {
        self.inner.decode(ids, skip_special).map_err(tk_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus() -> Vec<String> {
        let colours = ["red", "green", "blue", "yellow"];
        let shapes = ["circle", "square", "triangle"];
        let mut lines = Vec::new();
        for c in colours {
            for s in shapes {
                lines.push(format!("a {c} {s} left of a small {s}."));
                lines.push(format!("There is one {c} {s} in the picture"));
            }
        }
        lines
    }

    #[test]
    fn trained_tokenizer_round_trips_text_and_keeps_special_ids_first() {
        let tok = RobertaTokenizer::train(corpus().iter(), 300, 1).unwrap();
        let s = tok.special();
        assert_eq!((s.bos, s.pad, s.eos, s.unk, s.mask), (0, 1, 2, 3, 4));
        assert!(tok.vocab_size() > 256 + 5 && tok.vocab_size() <= 300);
        let text = "a blue triangle left of a small circle.";
        let batch = tok.encode_batch(&[text], 32).unwrap();
        let ids: Vec<u32> = batch.row(0).iter().map(|&i| i as u32).collect();
        assert_eq!(tok.decode(&ids, true).unwrap(), text);
    }

    #[test]
    fn batches_are_wrapped_truncated_and_padded() {
        let tok = RobertaTokenizer::train(corpus().iter(), 300, 1).unwrap();
        let s = tok.special();
        let batch = tok
            .encode_batch(
                &[
                    "a red circle",
                    "a green square left of a small square left of a small circle.",
                ],
                8,
            )
            .unwrap();
        assert_eq!((batch.batch, batch.len), (2, 8));
        let short = batch.row(0);
        let n = batch.attention_mask[..8].iter().sum::<i64>() as usize;
        assert_eq!(short[0], s.bos as i64);
        assert_eq!(short[n - 1], s.eos as i64);
        assert!(short[n..].iter().all(|&t| t == s.pad as i64));
        let long = batch.row(1);
        assert_eq!(long[7], s.eos as i64, "truncation keeps </s>");
        assert!(batch.attention_mask[8..].iter().all(|&m| m == 1));
    }

    #[test]
    fn save_and_reload_gives_the_same_ids_and_mask_text_is_one_token() {
        let tok = RobertaTokenizer::train(corpus().iter(), 300, 1).unwrap();
        let dir = std::env::temp_dir().join(format!("fiber-tok-{}", std::process::id()));
        tok.save(dir.join("tokenizer.json")).unwrap();
        let back = RobertaTokenizer::from_dir(&dir).unwrap();
        let text = ["a yellow square <mask> a red circle"];
        assert_eq!(
            back.encode_batch(&text, 20).unwrap(),
            tok.encode_batch(&text, 20).unwrap()
        );
        let plain = back.encode_plain("a square <mask>").unwrap();
        assert_eq!(*plain.last().unwrap(), back.special().mask);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn missing_files_are_reported_by_name() {
        let err = RobertaTokenizer::from_dir("/nonexistent/tokenizer/dir")
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/tokenizer/dir"), "{err}");
    }
}
