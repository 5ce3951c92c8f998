//! FIBER for inference from a model folder: [`Fiber`] encodes images and texts for retrieval,
//! scores image–text pairs with ITM, answers questions and writes captions (docs/model.md §4),
//! with whichever heads the folder's weights hold.
//!
//! A model folder holds
//! - `config.json`: the backbone's [`FiberConfig`], as `cargo xtask convert` writes it;
//! - `model.safetensors`: the weights under the original checkpoint keys (docs/model.md §6.2);
//! - `tokenizer.json`: the HuggingFace RoBERTa tokenizer the model was trained with;
//! - `answers.json` (VQA models): the answer vocabulary in classifier order;
//! - `inference.json` (optional): [`InferenceSettings`].
//!
//! `cargo xtask export` writes one from a trained run; a folder converted from an original
//! checkpoint needs the `tokenizer.json` of HuggingFace's `roberta-base` copied in.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use burn::tensor::activation::sigmoid;
use fiber_core::store::tensor_values;
use fiber_core::TensorStore;
use fiber_fusion::weights::{has_caption_adapters, FiberCheckpoint};
use fiber_fusion::FiberConfig;
use fiber_roberta::RobertaTokenizer;
use serde::{Deserialize, Serialize};

use crate::caption::DecodeConfig;
use crate::error::HeadsError;
use crate::model::FiberModel;
use crate::task_models::VqaModel;

/// The backbone configuration's file in a model folder.
pub const CONFIG_FILE: &str = "config.json";
/// The weights' file in a model folder.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// The tokenizer's file in a model folder.
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// The VQA answer vocabulary's file in a model folder.
pub const ANSWERS_FILE: &str = "answers.json";
/// The inference settings' file in a model folder.
pub const SETTINGS_FILE: &str = "inference.json";

/// How a model folder's model is run; `inference.json`, each field optional.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InferenceSettings {
    /// Texts are cut to this many tokens, `<s>` and `</s>` included (the length the model
    /// was trained with; 40, the original's pre-training length, by default).
    pub max_text_len: usize,
    /// Beams of caption decoding (1 = greedy; 5 by default, docs/model.md §4.4).
    pub beam_size: usize,
    /// Most tokens of a generated caption (50 by default, docs/model.md §4.4).
    pub max_caption_len: usize,
}

impl Default for InferenceSettings {
    fn default() -> Self {
        Self {
            max_text_len: 40,
            beam_size: 5,
            max_caption_len: 50,
        }
    }
}

/// What the tokenizer file is, for the error that says it is missing.
pub(crate) const TOKENIZER_HINT: &str =
    "the RoBERTa tokenizer; for a converted original checkpoint, copy roberta-base's";

/// An error naming the first of `files` (name and what it is) that `dir` does not hold.
pub(crate) fn require_files(
    dir: &Path,
    files: &[(&'static str, &'static str)],
) -> Result<(), HeadsError> {
    match files.iter().find(|(file, _)| !dir.join(file).is_file()) {
        Some(&(file, hint)) => Err(HeadsError::MissingFile {
            dir: dir.to_path_buf(),
            file,
            hint,
        }),
        None => Ok(()),
    }
}

/// The folder's tokenizer, which must not have more tokens than the model's embedding table
/// (`vocab_size` rows).
pub(crate) fn load_tokenizer(
    dir: &Path,
    vocab_size: usize,
) -> Result<RobertaTokenizer, HeadsError> {
    let tokenizer = RobertaTokenizer::from_file(dir.join(TOKENIZER_FILE))?;
    if tokenizer.vocab_size() > vocab_size {
        return Err(HeadsError::Invalid(format!(
            "{}: the tokenizer has {} tokens, the model's embedding table {}",
            dir.display(),
            tokenizer.vocab_size(),
            vocab_size
        )));
    }
    Ok(tokenizer)
}

/// The JSON file at `path` when it exists, else the defaults.
pub(crate) fn read_or_default<T: serde::de::DeserializeOwned + Default>(
    path: &Path,
) -> Result<T, HeadsError> {
    Ok(if path.is_file() {
        fiber_core::json::read_json(path)?
    } else {
        T::default()
    })
}

/// An error unless the `max_text_len` of the settings file `path` lies in `[min, max]`: at
/// least the special tokens, at most the model's position table.
pub(crate) fn check_text_len(
    path: &Path,
    given: usize,
    min: usize,
    max: usize,
) -> Result<(), HeadsError> {
    if (min..=max).contains(&given) {
        return Ok(());
    }
    Err(HeadsError::Invalid(format!(
        "{}: max_text_len {given} must lie in {min}..={max} (at least <s>, </s> and the tokens between; at most the model's {max} text positions)",
        path.display()
    )))
}

/// The heads of the coarse model, each a group of checkpoint keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Head {
    /// `cross_modal_{text,image}_{transform,pooler}_itc`: the dual encoder's projections.
    Itc,
    /// `cross_modal_{text,image}_{transform,pooler}`: the fused path's projections.
    Fused,
    /// `mlm_score.*`.
    Mlm,
    /// `itm_score.*`.
    Itm,
    /// `temp`.
    Temperature,
}

impl Head {
    /// The head a checkpoint key belongs to, if any.
    fn of_key(key: &str) -> Option<Self> {
        if key.starts_with("cross_modal_att_layers.") {
            None
        } else if key.starts_with("cross_modal_") {
            let name = key.split('.').next().unwrap_or(key);
            Some(if name.ends_with("_itc") {
                Self::Itc
            } else {
                Self::Fused
            })
        } else if key.starts_with("mlm_score.") {
            Some(Self::Mlm)
        } else if key.starts_with("itm_score.") {
            Some(Self::Itm)
        } else if key == "temp" {
            Some(Self::Temperature)
        } else {
            None
        }
    }
}

/// The heads with at least one key in `store`.
fn heads_in(store: &TensorStore) -> Vec<Head> {
    let mut heads: Vec<Head> = Vec::new();
    for head in store.names().filter_map(Head::of_key) {
        if !heads.contains(&head) {
            heads.push(head);
        }
    }
    heads
}

/// The coarse model, or the VQA model with its answers.
#[derive(Debug)]
enum TaskModel<B: Backend> {
    Coarse(FiberModel<B>),
    Vqa(Box<VqaModel<B>>, Vec<String>),
}

/// A FIBER model ready for inference, with its tokenizer: one type for retrieval, image–text
/// matching, VQA and captioning.
///
/// Images are `[n, 3, S, S]` pixel tensors preprocessed as in training (square bicubic resize
/// to [`Fiber::image_size`], ImageNet normalisation: `fiber_data::image::preprocess_square`);
/// texts are strings.
#[derive(Debug)]
pub struct Fiber<B: Backend> {
    model: TaskModel<B>,
    config: FiberConfig,
    tokenizer: RobertaTokenizer,
    settings: InferenceSettings,
    heads: Vec<Head>,
    caption_ready: bool,
    dir: PathBuf,
    device: B::Device,
}

impl<B: Backend> Fiber<B> {
    /// Loads the model folder `dir` (see the module documentation) onto `device`. The backbone
    /// must be complete; heads the weights lack are reported when a task needs them. A
    /// folder with `vqa_classifier.*` weights is a VQA model and needs `answers.json`.
    pub fn load(dir: impl AsRef<Path>, device: &B::Device) -> Result<Self, HeadsError> {
        let dir = dir.as_ref().to_path_buf();
        require_files(
            &dir,
            &[
                (CONFIG_FILE, "the backbone configuration"),
                (
                    WEIGHTS_FILE,
                    "the weights under the original checkpoint keys",
                ),
                (TOKENIZER_FILE, TOKENIZER_HINT),
            ],
        )?;
        let checkpoint = FiberCheckpoint::read(&dir, None)?;
        let config = checkpoint.config;
        let tokenizer = load_tokenizer(&dir, config.roberta.vocab_size)?;
        let settings_path = dir.join(SETTINGS_FILE);
        let settings: InferenceSettings = read_or_default(&settings_path)?;
        check_text_len(
            &settings_path,
            settings.max_text_len,
            2,
            config.roberta.max_text_len(),
        )?;
        let store = checkpoint.store;
        let heads = heads_in(&store);
        // Captioning needs adapters where a fused layer pairs with a stage narrower than the
        // last (docs/model.md §2.5); a model without such pairs captions with none.
        let caption_adapters = has_caption_adapters(&store);
        let needs_adapters = config
            .fused_pairs()
            .iter()
            .any(|p| config.swin.stage_dim(p.stage) != config.swin.num_features());
        let fiber = FiberModel::new(&config, caption_adapters, device)?;
        let std = config.head_initializer_range;
        let is_vqa = store.names().any(|k| k.starts_with("vqa_classifier."));
        let model = if is_vqa {
            let path = dir.join(ANSWERS_FILE);
            if !path.is_file() {
                return Err(HeadsError::MissingFile {
                    dir,
                    file: ANSWERS_FILE,
                    hint: "a VQA model's answers, a JSON list in classifier order",
                });
            }
            let answers: Vec<String> = fiber_core::json::read_json(&path)?;
            let mut vqa = VqaModel::new(fiber, answers.len(), std, device);
            let mut loader = coarse_loader(&vqa.fiber, store, &heads);
            vqa.visit_weights(&mut loader);
            loader.finish()?;
            TaskModel::Vqa(Box::new(vqa), answers)
        } else {
            let mut fiber = fiber;
            let mut loader = coarse_loader(&fiber, store, &heads);
            fiber.visit_weights(&mut loader);
            loader.finish()?;
            TaskModel::Coarse(fiber)
        };
        Ok(Self {
            model,
            config,
            tokenizer,
            settings,
            heads,
            caption_ready: caption_adapters || !needs_adapters,
            dir,
            device: device.clone(),
        })
    }

    /// The coarse model (backbone and heads) behind every task.
    pub fn model(&self) -> &FiberModel<B> {
        match &self.model {
            TaskModel::Coarse(model) => model,
            TaskModel::Vqa(vqa, _) => &vqa.fiber,
        }
    }

    /// The backbone configuration.
    pub fn config(&self) -> &FiberConfig {
        &self.config
    }

    /// The side `S` of the square images the model takes.
    pub fn image_size(&self) -> usize {
        self.config().swin.image_size
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &RobertaTokenizer {
        &self.tokenizer
    }

    /// The inference settings (`inference.json`, else their defaults).
    pub fn settings(&self) -> &InferenceSettings {
        &self.settings
    }

    /// The answers a VQA model chooses from (empty for other models).
    pub fn answers(&self) -> &[String] {
        match &self.model {
            TaskModel::Coarse(_) => &[],
            TaskModel::Vqa(_, answers) => answers,
        }
    }

    fn require(&self, head: Head, task: &'static str) -> Result<(), HeadsError> {
        if self.heads.contains(&head) {
            return Ok(());
        }
        let (head, hint) = match head {
            Head::Itc => (
                "ITC projections (cross_modal_*_itc)",
                "any pre-trained or retrieval model",
            ),
            Head::Fused => (
                "fused-path projections (cross_modal_*_transform, cross_modal_*_pooler)",
                "any pre-trained model",
            ),
            Head::Mlm => (
                "MLM head (mlm_score.*)",
                "a pre-trained or captioning model",
            ),
            Head::Itm => (
                "ITM head (itm_score.*)",
                "a pre-trained or ITM retrieval model",
            ),
            Head::Temperature => ("ITC temperature (temp)", "a pre-trained model"),
        };
        Err(HeadsError::MissingHead {
            dir: self.dir.clone(),
            head,
            task,
            hint,
        })
    }

    /// Token ids and attention mask `[n, len]` of `texts`, `len` the longest text's length
    /// (at most `max_text_len`). Padding never changes the result: it is masked everywhere.
    pub fn encode_texts<S: AsRef<str>>(
        &self,
        texts: &[S],
    ) -> Result<(Tensor<B, 2, Int>, Tensor<B, 2, Int>), HeadsError> {
        if texts.is_empty() {
            return Err(HeadsError::Invalid("no texts to encode".into()));
        }
        let encoded = self
            .tokenizer
            .encode_batch(texts, self.settings.max_text_len)?;
        let len = (0..encoded.batch)
            .map(|i| {
                encoded.attention_mask[i * encoded.len..(i + 1) * encoded.len]
                    .iter()
                    .sum::<i64>() as usize
            })
            .max()
            .unwrap_or(2);
        let (ids, mask) = encoded.to_tensors(&self.device);
        Ok((
            ids.slice([0..texts.len(), 0..len]),
            mask.slice([0..texts.len(), 0..len]),
        ))
    }

    fn check_pixels(&self, pixels: &Tensor<B, 4>) -> Result<usize, HeadsError> {
        let [n, c, h, w] = pixels.dims();
        let s = self.image_size();
        if n == 0 || c != 3 || h != s || w != s {
            return Err(HeadsError::Invalid(format!(
                "images must be [n ≥ 1, 3, {s}, {s}] (square-resized to the model's image size); got [{n}, {c}, {h}, {w}]"
            )));
        }
        Ok(n)
    }

    /// Dual-encoder image features `[n, H]`, L2-normalised, of images `[n, 3, S, S]`.
    pub fn image_features(&self, pixels: Tensor<B, 4>) -> Result<Tensor<B, 2>, HeadsError> {
        self.require(Head::Itc, "image features")?;
        self.check_pixels(&pixels)?;
        let model = self.model();
        Ok(model.itc_image_features(&model.backbone.image_prefix(pixels)))
    }

    /// Dual-encoder text features `[n, H]`, L2-normalised.
    pub fn text_features<S: AsRef<str>>(&self, texts: &[S]) -> Result<Tensor<B, 2>, HeadsError> {
        self.require(Head::Itc, "text features")?;
        let (ids, mask) = self.encode_texts(texts)?;
        let model = self.model();
        Ok(model.itc_text_features(&model.backbone.text_prefix(ids, mask)))
    }

    /// ITM matching logits, one per pair of image `i` of `[n, 3, S, S]` and `texts[i]`
    /// (higher: a better match; the score the original ranks retrieval candidates by).
    pub fn match_scores<S: AsRef<str>>(
        &self,
        pixels: Tensor<B, 4>,
        texts: &[S],
    ) -> Result<Vec<f32>, HeadsError> {
        self.require(Head::Fused, "image–text matching")?;
        self.require(Head::Itm, "image–text matching")?;
        let n = self.check_pixels(&pixels)?;
        if texts.len() != n {
            return Err(HeadsError::Invalid(format!(
                "{n} images and {} texts: matching scores pairs, one text per image",
                texts.len()
            )));
        }
        let (ids, mask) = self.encode_texts(texts)?;
        let model = self.model();
        let images = model.backbone.image_prefix(pixels);
        let texts = model.backbone.text_prefix(ids, mask);
        let pairs: Vec<(usize, usize)> = (0..n).map(|i| (i, i)).collect();
        Ok(tensor_values(model.itm_scores(&images, &texts, &pairs)))
    }

    /// The `top` most likely answers to `question` about one image `[1, 3, S, S]`, with their
    /// sigmoid probabilities, best first (VQA models only).
    pub fn answer(
        &self,
        pixels: Tensor<B, 4>,
        question: &str,
        top: usize,
    ) -> Result<Vec<(String, f32)>, HeadsError> {
        let TaskModel::Vqa(vqa, answers) = &self.model else {
            return Err(HeadsError::MissingHead {
                dir: self.dir.clone(),
                head: "VQA classifier (vqa_classifier.*)",
                task: "answering questions",
                hint: "a run's vqa stage, or an original VQA checkpoint",
            });
        };
        if self.check_pixels(&pixels)? != 1 {
            return Err(HeadsError::Invalid("answer takes one image".into()));
        }
        let (ids, mask) = self.encode_texts(&[question])?;
        let probabilities = tensor_values(sigmoid(vqa.logits(pixels, ids, mask)));
        let mut ranked: Vec<(String, f32)> = answers.iter().cloned().zip(probabilities).collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
        ranked.truncate(top);
        Ok(ranked)
    }

    /// A caption for each image of `[n, 3, S, S]`, by beam search with the folder's settings.
    /// Meant for captioning models (a run's caption stage); a model whose fused layers pair
    /// with narrower image stages (FIBER-Base) also needs the captioning adapters' weights.
    pub fn caption(&self, pixels: Tensor<B, 4>) -> Result<Vec<String>, HeadsError> {
        if !self.caption_ready {
            return Err(HeadsError::MissingHead {
                dir: self.dir.clone(),
                head: "captioning adapters (cross_modal_att_layers.*)",
                task: "captioning",
                hint: "a run's caption stage",
            });
        }
        self.require(Head::Fused, "captioning")?;
        self.require(Head::Mlm, "captioning")?;
        let n = self.check_pixels(&pixels)?;
        let special = self.tokenizer.special();
        let decode = DecodeConfig {
            beam_size: self.settings.beam_size,
            max_len: self.settings.max_caption_len,
            length_normalized: true,
            bos: special.bos as i64,
            eos: special.eos as i64,
            pad: special.pad as i64,
            mask: special.mask as i64,
        };
        let model = self.model();
        let [_, c, h, w] = pixels.dims();
        (0..n)
            .map(|i| {
                let one = pixels.clone().slice([i..i + 1, 0..c, 0..h, 0..w]);
                let caption =
                    model.generate_caption(&model.backbone.caption_image(one), &decode)?;
                let ids: Vec<u32> = caption.tokens.iter().map(|&t| t as u32).collect();
                Ok(self.tokenizer.decode(&ids, true)?.trim().to_string())
            })
            .collect()
    }
}

/// The backbone's loader for `store` (every skip rule of the original checkpoint, position
/// tables resized), where heads with no key in the store may be missing.
fn coarse_loader<B: Backend>(
    model: &FiberModel<B>,
    store: TensorStore,
    present: &[Head],
) -> fiber_core::WeightLoader {
    let mut store = store;
    fiber_swin::weights::resize_position_tables(&mut store, &model.backbone.vit_model, "vit_model");
    let present = present.to_vec();
    model
        .backbone
        .fiber_loader(store)
        .allow_missing(move |k| Head::of_key(k).is_some_and(|h| !present.contains(&h)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_keys_fall_into_their_heads() {
        let cases = [
            ("cross_modal_text_transform_itc.weight", Some(Head::Itc)),
            ("cross_modal_image_pooler_itc.dense.bias", Some(Head::Itc)),
            ("cross_modal_text_transform.weight", Some(Head::Fused)),
            ("cross_modal_image_pooler.dense.weight", Some(Head::Fused)),
            ("cross_modal_att_layers.0.attention.self.query.weight", None),
            ("mlm_score.decoder.weight", Some(Head::Mlm)),
            ("itm_score.fc.bias", Some(Head::Itm)),
            ("temp", Some(Head::Temperature)),
            ("vit_model.norm.weight", None),
            ("vqa_classifier.0.weight", None),
        ];
        for (key, head) in cases {
            assert_eq!(Head::of_key(key), head, "{key}");
        }
    }

    #[test]
    fn settings_default_to_the_original_and_refuse_unknown_fields() {
        let path = Path::new("inference.json");
        let partial: InferenceSettings =
            fiber_core::json::parse_json(r#"{"beam_size": 1}"#, path).unwrap();
        assert_eq!(
            partial,
            InferenceSettings {
                beam_size: 1,
                ..InferenceSettings::default()
            }
        );
        let error = fiber_core::json::parse_json::<InferenceSettings>(r#"{"beams": 1}"#, path)
            .unwrap_err()
            .to_string();
        assert!(error.contains("beams"), "{error}");
    }
}
