//! Captioning (docs/model.md §4.4): beam-search captions scored with corpus BLEU-4 and CIDEr-D.

use burn::prelude::*;
use fiber_data::image::PixelImage;
use fiber_heads::{DecodeConfig, FiberModel};
use fiber_roberta::RobertaTokenizer;
use serde::Serialize;

use crate::config::EvalConfig;
use crate::error::TrainError;
use crate::metrics::{bleu, caption_tokens, cider_d};

/// Captioning scores.
#[derive(Debug, Clone, Serialize)]
pub struct CaptionReport {
    /// Corpus BLEU-4.
    pub bleu4: f64,
    /// CIDEr-D (document frequencies from the evaluated references).
    pub cider: f64,
    /// Images captioned.
    pub images: usize,
    /// Distinct generated captions over images captioned (1 when every caption differs; a
    /// model that describes templates rather than images scores low).
    pub distinct_fraction: f64,
    /// The same over the images' first references: what describing each image gives.
    pub reference_distinct_fraction: f64,
    /// A few generated captions with their references' first entry.
    pub examples: Vec<(String, String)>,
}

/// Generates a caption for each image and scores them against `references[i]`.
pub fn evaluate_captions<B: Backend>(
    model: &FiberModel<B>,
    images: &[PixelImage],
    references: &[Vec<String>],
    tokenizer: &RobertaTokenizer,
    decode: &DecodeConfig,
    device: &B::Device,
) -> Result<CaptionReport, TrainError> {
    let mut candidates = Vec::new();
    let mut generated = Vec::new();
    let mut examples = Vec::new();
    for (image, refs) in images.iter().zip(references) {
        let text = generate_caption_text(model, image, decode, tokenizer, device)?;
        if examples.len() < 5 {
            examples.push((
                text.trim().to_string(),
                refs.first().cloned().unwrap_or_default(),
            ));
        }
        candidates.push(caption_tokens(&text));
        generated.push(text);
    }
    let first_references: Vec<String> = references
        .iter()
        .map(|r| r.first().cloned().unwrap_or_default())
        .collect();
    let refs: Vec<Vec<Vec<String>>> = references
        .iter()
        .map(|rs| rs.iter().map(|r| caption_tokens(r)).collect())
        .collect();
    let (cider, _) = cider_d(&candidates, &refs);
    Ok(CaptionReport {
        bleu4: bleu(&candidates, &refs)[3],
        cider,
        images: images.len(),
        distinct_fraction: distinct_fraction(&generated),
        reference_distinct_fraction: distinct_fraction(&first_references),
        examples,
    })
}

/// Distinct texts (after trimming, case-insensitive) over all texts; 0 for none.
pub fn distinct_fraction(texts: &[String]) -> f64 {
    if texts.is_empty() {
        return 0.0;
    }
    let distinct: std::collections::HashSet<String> =
        texts.iter().map(|t| t.trim().to_lowercase()).collect();
    distinct.len() as f64 / texts.len() as f64
}

/// The beam-search caption of one normalised image, detokenised without special tokens.
pub fn generate_caption_text<B: Backend>(
    model: &FiberModel<B>,
    image: &PixelImage,
    decode: &DecodeConfig,
    tokenizer: &RobertaTokenizer,
    device: &B::Device,
) -> Result<String, TrainError> {
    let pixels = fiber_data::image::to_tensor::<B>(std::slice::from_ref(image), device)?;
    let caption = model.generate_caption(&model.backbone.caption_image(pixels), decode)?;
    let ids: Vec<u32> = caption.tokens.iter().map(|&t| t as u32).collect();
    Ok(tokenizer.decode(&ids, true)?.trim().to_string())
}

/// Beam-search settings of `eval` for captions in `tokenizer`'s ids (length-normalised scores,
/// `<mask>` never generated, docs/model.md §4.4).
pub fn decode_config(tokenizer: &RobertaTokenizer, eval: &EvalConfig) -> DecodeConfig {
    let s = tokenizer.special();
    DecodeConfig {
        beam_size: eval.beam_size,
        max_len: eval.max_caption_len,
        length_normalized: true,
        bos: s.bos as i64,
        eos: s.eos as i64,
        pad: s.pad as i64,
        mask: s.mask as i64,
    }
}

#[cfg(test)]
mod tests {
    use super::distinct_fraction;

    #[test]
    fn the_distinct_fraction_counts_each_caption_once() {
        let texts = [
            "a red circle.",
            "A red circle. ",
            "a blue square.",
            "a red circle.",
        ]
        .map(String::from);
        assert_eq!(distinct_fraction(&texts), 0.5);
        assert_eq!(distinct_fraction(&[]), 0.0);
    }
}
