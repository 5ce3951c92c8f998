//! The detector's training batch (docs/model.md §5.4): a grounding record's image resized with
//! a shorter side drawn from a list (the longer side capped), flipped left to right unless the
//! caption speaks of left or right, normalised, and padded with its batch to a multiple of 32
//! with a pixel mask; its boxes scaled and flipped with it, and each box's token map.

use rand::Rng;

use fiber_roberta::RobertaTokenizer;

use crate::error::DataError;
use crate::grounding::{token_map, GroundingRecord};
use crate::image::{normalize, pad_batch, Normalization, PixelImage};
use crate::transforms::{detection_resize, hflip, hflip_boxes, BoxXyxy};

/// Settings of the detection batch.
#[derive(Debug, Clone, PartialEq)]
pub struct DetectionBatchConfig {
    /// Shorter sides to draw from, uniformly (training: 480, 560, 640, 720, 800; evaluation:
    /// 800).
    pub shorter_sides: Vec<usize>,
    /// Longest longer side (1333).
    pub max_longer: usize,
    /// Probability of a horizontal flip (0.5; 0 for referring expressions).
    pub flip_probability: f64,
    /// Batch height and width are padded to a multiple of this (32).
    pub size_divisor: usize,
    /// Token positions of the caption, `<s>` and `</s>` included (256).
    pub max_text_len: usize,
}

impl Default for DetectionBatchConfig {
    fn default() -> Self {
        Self {
            shorter_sides: vec![480, 560, 640, 720, 800],
            max_longer: 1333,
            flip_probability: 0.5,
            size_divisor: 32,
            max_text_len: 256,
        }
    }
}

impl DetectionBatchConfig {
    /// The evaluation transform: shorter side 800, no flip.
    pub fn evaluation() -> Self {
        Self {
            shorter_sides: vec![800],
            flip_probability: 0.0,
            ..Self::default()
        }
    }
}

/// Whether a caption names a side (the words "left" or "right", any case), so that a flipped
/// image would contradict it.
pub(crate) fn mentions_sides(caption: &str) -> bool {
    caption
        .split(|c: char| !c.is_alphanumeric())
        .any(|w| w.eq_ignore_ascii_case("left") || w.eq_ignore_ascii_case("right"))
}

/// One prepared image–caption–boxes sample.
#[derive(Debug, Clone, PartialEq)]
pub struct DetectionSample {
    /// The resized, possibly flipped, normalised image.
    pub pixels: PixelImage,
    /// Token ids, `<s>` … `</s>`, at most `max_text_len`.
    pub input_ids: Vec<u32>,
    /// Boxes `(x0, y0, x1, y1)` in pixels of `pixels`.
    pub boxes: Vec<BoxXyxy>,
    /// For each box, which token positions name it (`input_ids.len()` entries).
    pub positive_map: Vec<Vec<bool>>,
    /// Whether the image was flipped.
    pub flipped: bool,
    /// Boxes dropped because the truncated caption kept none of their tokens.
    pub dropped_boxes: usize,
}

/// Prepares one record whose image is already loaded (RGB in [0, 1]).
pub fn prepare_sample(
    record: &GroundingRecord,
    image: &PixelImage,
    tokenizer: &RobertaTokenizer,
    config: &DetectionBatchConfig,
    rng: &mut impl Rng,
) -> Result<DetectionSample, DataError> {
    if config.shorter_sides.is_empty() || config.max_text_len < 2 {
        return Err(DataError::Invalid(
            "the detection batch needs at least one shorter side and room for <s> and </s>".into(),
        ));
    }
    if record.caption.trim().is_empty() {
        return Err(DataError::Invalid(format!(
            "{}: empty caption; a grounding sample needs a prompt",
            record.path.display()
        )));
    }
    let shorter = config.shorter_sides[rng.random_range(0..config.shorter_sides.len())];
    let boxes: Vec<BoxXyxy> = record.boxes.iter().map(|b| b.xyxy).collect();
    let (mut resized, mut boxes) = detection_resize(image, &boxes, shorter, config.max_longer)?;
    let flipped = config.flip_probability > 0.0
        && !mentions_sides(&record.caption)
        && rng.random::<f64>() < config.flip_probability;
    if flipped {
        boxes = hflip_boxes(&boxes, resized.width);
        resized = hflip(&resized);
    }

    let tokens = tokenizer
        .encode_with_char_offsets(&record.caption)
        .map_err(|e| DataError::Invalid(format!("{}: {e}", record.path.display())))?;
    let special = tokenizer.special();
    let body = tokens.len().min(config.max_text_len - 2);
    let mut input_ids = Vec::with_capacity(body + 2);
    input_ids.push(special.bos);
    input_ids.extend(tokens[..body].iter().map(|(id, _)| *id));
    input_ids.push(special.eos);
    let map = token_map(&record.boxes, &tokens, input_ids.len());

    let mut kept_boxes = Vec::new();
    let mut positive_map = Vec::new();
    for (b, row) in boxes.into_iter().zip(map) {
        if row.iter().any(|&on| on) {
            kept_boxes.push(b);
            positive_map.push(row);
        }
    }
    Ok(DetectionSample {
        pixels: normalize(&resized, &Normalization::DETECTION_BGR255),
        input_ids,
        dropped_boxes: record.boxes.len() - kept_boxes.len(),
        boxes: kept_boxes,
        positive_map,
        flipped,
    })
}

/// A padded batch of samples.
#[derive(Debug, Clone, PartialEq)]
pub struct DetectionBatch {
    /// Pixels `[batch, 3, H, W]`, zero beyond each image.
    pub pixel_values: Vec<f32>,
    /// `(H, W)`, multiples of the divisor.
    pub padded_size: (usize, usize),
    /// Each image's `(height, width)` before padding.
    pub image_sizes: Vec<(usize, usize)>,
    /// `[batch, H, W]`: 1 on an image's pixels, 0 on padding.
    pub pixel_mask: Vec<u8>,
    /// Token ids `[batch, L]`, padded with `<pad>`; L is the longest caption.
    pub input_ids: Vec<i64>,
    /// `[batch, L]`: 1 on tokens, 0 on padding.
    pub attention_mask: Vec<i64>,
    /// Token positions L.
    pub len: usize,
    /// Each image's boxes.
    pub boxes: Vec<Vec<BoxXyxy>>,
    /// Each image's token maps as `[boxes][L]` values 0 or 1.
    pub positive_map: Vec<Vec<Vec<f32>>>,
    /// Boxes dropped over the batch (their tokens were cut off).
    pub dropped_boxes: usize,
}

/// Pads `samples` into one batch (`divisor` as in [`DetectionBatchConfig::size_divisor`]).
pub fn collate_detection(
    samples: Vec<DetectionSample>,
    divisor: usize,
    pad_id: u32,
) -> Result<DetectionBatch, DataError> {
    let (images, samples): (Vec<PixelImage>, Vec<DetectionSample>) = samples
        .into_iter()
        .map(|mut s| {
            (
                std::mem::replace(&mut s.pixels, PixelImage::filled(0, 0, [0.0; 3])),
                s,
            )
        })
        .unzip();
    let (pixel_values, (h, w)) = pad_batch(&images, divisor)?;
    let len = samples.iter().map(|s| s.input_ids.len()).max().unwrap_or(0);
    let mut batch = DetectionBatch {
        pixel_values,
        padded_size: (h, w),
        image_sizes: images.iter().map(|i| (i.height, i.width)).collect(),
        pixel_mask: vec![0; samples.len() * h * w],
        input_ids: vec![pad_id as i64; samples.len() * len],
        attention_mask: vec![0; samples.len() * len],
        len,
        boxes: Vec::with_capacity(samples.len()),
        positive_map: Vec::with_capacity(samples.len()),
        dropped_boxes: samples.iter().map(|s| s.dropped_boxes).sum(),
    };
    for (b, (sample, image)) in samples.into_iter().zip(&images).enumerate() {
        for y in 0..image.height {
            let row = (b * h + y) * w;
            batch.pixel_mask[row..row + image.width].fill(1);
        }
        for (t, &id) in sample.input_ids.iter().enumerate() {
            batch.input_ids[b * len + t] = id as i64;
            batch.attention_mask[b * len + t] = 1;
        }
        batch.boxes.push(sample.boxes);
        batch.positive_map.push(
            sample
                .positive_map
                .iter()
                .map(|row| {
                    let mut values: Vec<f32> = row.iter().map(|&on| f32::from(on)).collect();
                    values.resize(len, 0.0);
                    values
                })
                .collect(),
        );
    }
    Ok(batch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grounding::GroundedBox;
    use rand::SeedableRng;

    fn tokenizer() -> RobertaTokenizer {
        RobertaTokenizer::train(
            ["a red cup on the left of a blue ball", "a green box"].into_iter(),
            300,
            1,
        )
        .unwrap()
    }

    fn record(caption: &str, boxes: Vec<(BoxXyxy, (usize, usize))>) -> GroundingRecord {
        GroundingRecord {
            id: 1,
            path: "image.jpg".into(),
            height: 40,
            width: 60,
            caption: caption.into(),
            boxes: boxes
                .into_iter()
                .map(|(xyxy, span)| GroundedBox {
                    xyxy,
                    spans: vec![span],
                    category: None,
                })
                .collect(),
        }
    }

    #[test]
    fn side_words_are_found_as_words() {
        assert!(mentions_sides("the cup on the Left."));
        assert!(mentions_sides("right-hand dog"));
        assert!(!mentions_sides("a bright leftover"));
    }

    #[test]
    fn a_sample_is_resized_flipped_and_tokenised_with_its_boxes() {
        let tokenizer = tokenizer();
        let image = PixelImage::filled(40, 60, [0.5, 0.5, 0.5]);
        let rec = record("a green box", vec![([6.0, 4.0, 30.0, 20.0], (2, 11))]);
        let config = DetectionBatchConfig {
            shorter_sides: vec![80],
            max_longer: 1333,
            flip_probability: 1.0,
            ..DetectionBatchConfig::default()
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        let sample = prepare_sample(&rec, &image, &tokenizer, &config, &mut rng).unwrap();
        assert_eq!((sample.pixels.height, sample.pixels.width), (80, 120));
        assert!(sample.flipped);
        // scaled ×2, then mirrored in the 120-px width
        assert_eq!(sample.boxes, vec![[60.0, 8.0, 108.0, 40.0]]);
        let named: Vec<usize> = (0..sample.input_ids.len())
            .filter(|&t| sample.positive_map[0][t])
            .collect();
        assert!(!named.is_empty() && !named.contains(&0));
        assert_eq!(*sample.input_ids.last().unwrap(), tokenizer.special().eos);

        // A caption about sides is never flipped.
        let rec = record(
            "a red cup on the left of a blue ball",
            vec![([6.0, 4.0, 30.0, 20.0], (0, 9))],
        );
        let sample = prepare_sample(&rec, &image, &tokenizer, &config, &mut rng).unwrap();
        assert!(!sample.flipped);
        assert_eq!(sample.boxes, vec![[12.0, 8.0, 60.0, 40.0]]);
    }

    #[test]
    fn truncation_drops_boxes_whose_tokens_are_cut_and_empty_prompts_are_refused() {
        let tokenizer = tokenizer();
        let image = PixelImage::filled(40, 60, [0.5, 0.5, 0.5]);
        let caption = "a red cup on the left of a blue ball";
        let rec = record(
            caption,
            vec![
                ([1.0, 1.0, 10.0, 10.0], (2, 5)),    // "red"
                ([20.0, 5.0, 40.0, 30.0], (27, 36)), // "blue ball", cut off below
            ],
        );
        let config = DetectionBatchConfig {
            shorter_sides: vec![40],
            flip_probability: 0.0,
            max_text_len: 5,
            ..DetectionBatchConfig::default()
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        let sample = prepare_sample(&rec, &image, &tokenizer, &config, &mut rng).unwrap();
        assert_eq!(sample.input_ids.len(), 5);
        assert_eq!(sample.boxes.len(), 1);
        assert_eq!(sample.dropped_boxes, 1);

        let err = prepare_sample(&record("  ", vec![]), &image, &tokenizer, &config, &mut rng)
            .unwrap_err();
        assert!(err.to_string().contains("empty caption"), "{err}");
    }

    #[test]
    fn a_batch_is_padded_to_the_divisor_with_masks() {
        let tokenizer = tokenizer();
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        let config = DetectionBatchConfig {
            shorter_sides: vec![40],
            flip_probability: 0.0,
            ..DetectionBatchConfig::default()
        };
        let samples: Vec<DetectionSample> = [
            (PixelImage::filled(40, 60, [0.2; 3]), "a green box"),
            (
                PixelImage::filled(50, 40, [0.7; 3]),
                "a red cup on the left of a blue ball",
            ),
        ]
        .iter()
        .map(|(image, caption)| {
            let rec = record(caption, vec![([1.0, 1.0, 20.0, 20.0], (2, 5))]);
            prepare_sample(&rec, image, &tokenizer, &config, &mut rng).unwrap()
        })
        .collect();
        let short = samples[0].input_ids.len();
        let batch = collate_detection(samples, 32, tokenizer.special().pad).unwrap();
        assert_eq!(batch.image_sizes, vec![(40, 60), (50, 40)]);
        assert_eq!(batch.padded_size, (64, 64));
        let (h, w) = batch.padded_size;
        assert_eq!(batch.pixel_mask[39 * w + 59], 1);
        assert_eq!(batch.pixel_mask[40 * w + 10], 0);
        assert_eq!(batch.pixel_mask[(h + 49) * w + 39], 1);
        assert_eq!(batch.pixel_mask[(h + 10) * w + 40], 0);
        assert!(short < batch.len);
        assert_eq!(batch.attention_mask[short - 1], 1);
        assert_eq!(batch.attention_mask[short], 0);
        assert_eq!(batch.input_ids[short], tokenizer.special().pad as i64);
        assert_eq!(batch.positive_map[0][0].len(), batch.len);
        assert_eq!(batch.pixel_values.len(), 2 * 3 * h * w);
    }
}
