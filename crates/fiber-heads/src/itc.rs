//! docs/model.md §3.2: image–text contrastive loss with a learnable temperature and a FIFO queue of
//! features from earlier steps (no momentum encoder).

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::TensorData;

use crate::loss::cross_entropy;

/// Bounds of the temperature (docs/model.md §3.2).
pub const TEMPERATURE_RANGE: (f64, f64) = (0.001, 1.0);

/// The learnable temperature (`temp`, initialised to 0.07).
#[derive(Module, Debug)]
pub struct Temperature<B: Backend> {
    /// The raw value `[1]`; it is clamped into [`TEMPERATURE_RANGE`] when used.
    pub temp: Param<Tensor<B, 1>>,
}

impl<B: Backend> Temperature<B> {
    /// A temperature of `value`.
    pub fn new(value: f64, device: &B::Device) -> Self {
        Self {
            temp: Param::from_tensor(Tensor::from_floats([value as f32], device)),
        }
    }

    /// The clamped temperature `[1]`.
    pub fn value(&self) -> Tensor<B, 1> {
        self.temp
            .val()
            .clamp(TEMPERATURE_RANGE.0, TEMPERATURE_RANGE.1)
    }

    /// Clamps the stored value into [`TEMPERATURE_RANGE`], as the original does before every
    /// step: a value left outside the range would get no gradient through the clamp in
    /// [`Self::value`] and stay stuck at the bound.
    pub fn clamp_in_place(self) -> Self {
        let temp = self.temp.map(|t| {
            let trainable = t.is_require_grad();
            t.clamp(TEMPERATURE_RANGE.0, TEMPERATURE_RANGE.1)
                .detach()
                .set_require_grad(trainable)
        });
        Self { temp }
    }
}

/// Queue size of the original pre-training (docs/model.md §3.2).
pub const DEFAULT_QUEUE_SIZE: usize = 4096;

/// FIFO queue of past L2-normalised features and the dataset indices they came from (the
/// indices let ITM fetch a queued sample's inputs again instead of storing its pixels).
#[derive(Debug, Clone)]
pub struct FeatureQueue<B: Backend> {
    /// Maximum number of entries (4096 in the original).
    pub capacity: usize,
    image: Option<Tensor<B, 2>>,
    text: Option<Tensor<B, 2>>,
    indices: Vec<usize>,
}

impl<B: Backend> Default for FeatureQueue<B> {
    /// An empty queue of [`DEFAULT_QUEUE_SIZE`] entries.
    fn default() -> Self {
        Self::new(DEFAULT_QUEUE_SIZE)
    }
}

impl<B: Backend> FeatureQueue<B> {
    /// An empty queue holding at most `capacity` entries per modality.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            image: None,
            text: None,
            indices: Vec::new(),
        }
    }

    /// Number of queued entries.
    pub fn len(&self) -> usize {
        self.indices.len()
    }

    /// Whether the queue is empty.
    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }

    /// Dataset indices of the queued entries, oldest first.
    pub fn indices(&self) -> &[usize] {
        &self.indices
    }

    /// Queued image features `[len, d]` (detached), if any.
    pub fn image(&self) -> Option<Tensor<B, 2>> {
        self.image.clone()
    }

    /// Queued text features `[len, d]` (detached), if any.
    pub fn text(&self) -> Option<Tensor<B, 2>> {
        self.text.clone()
    }

    /// Appends a step's features `[batch, d]` (detached) and their dataset indices, dropping
    /// the oldest entries beyond the capacity.
    pub fn push(&mut self, image: Tensor<B, 2>, text: Tensor<B, 2>, indices: &[usize]) {
        if self.capacity == 0 {
            return;
        }
        let append = |queue: Option<Tensor<B, 2>>, new: Tensor<B, 2>| match queue {
            Some(q) => Tensor::cat(vec![q, new.detach()], 0),
            None => new.detach(),
        };
        let mut image = append(self.image.take(), image);
        let mut text = append(self.text.take(), text);
        self.indices.extend_from_slice(indices);
        let len = self.indices.len();
        if len > self.capacity {
            let drop = len - self.capacity;
            let d = image.dims()[1];
            image = image.slice([drop..len, 0..d]);
            text = text.slice([drop..len, 0..d]);
            self.indices.drain(..drop);
        }
        self.image = Some(image);
        self.text = Some(text);
    }
}

/// What [`itc_loss`] computes.
#[derive(Debug, Clone)]
pub struct ItcOutput<B: Backend> {
    /// `½ (CE_i2t + CE_t2i)` `[1]`.
    pub loss: Tensor<B, 1>,
    /// Image-to-text logits `[batch, batch + queue]` (columns: this batch's texts, then the queue's).
    pub logits_i2t: Tensor<B, 2>,
    /// Text-to-image logits `[batch, batch + queue]`.
    pub logits_t2i: Tensor<B, 2>,
}

/// ITC over the batch plus the queue: `image`, `text` `[batch, d]` L2-normalised features.
/// Row b's positive is column b; queue entries are negatives, even when they are in fact
/// positives (docs/model.md §3.2).
pub fn itc_loss<B: Backend>(
    image: Tensor<B, 2>,
    text: Tensor<B, 2>,
    queue: &FeatureQueue<B>,
    temperature: Tensor<B, 1>,
) -> ItcOutput<B> {
    let [batch, _] = image.dims();
    let with_queue = |own: Tensor<B, 2>, queued: Option<Tensor<B, 2>>| match queued {
        Some(q) => Tensor::cat(vec![own, q], 0),
        None => own,
    };
    let all_text = with_queue(text.clone(), queue.text());
    let all_image = with_queue(image.clone(), queue.image());
    let inv_temp = temperature.recip().unsqueeze::<2>();
    let logits_i2t = image.matmul(all_text.transpose()) * inv_temp.clone();
    let logits_t2i = text.matmul(all_image.transpose()) * inv_temp;
    let device = logits_i2t.device();
    let targets = Tensor::<B, 1, Int>::from_data(
        TensorData::new((0..batch as i64).collect::<Vec<_>>(), [batch]),
        &device,
    );
    let loss = (cross_entropy(logits_i2t.clone(), targets.clone(), None)
        + cross_entropy(logits_t2i.clone(), targets, None))
        / 2.0;
    ItcOutput {
        loss,
        logits_i2t,
        logits_t2i,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    type B = burn::backend::NdArray;

    #[test]
    fn itc_equals_the_hand_computation_with_a_queue() {
        let device = Default::default();
        let image = Tensor::<B, 2>::from_floats([[1.0, 0.0], [0.0, 1.0]], &device);
        let text = Tensor::<B, 2>::from_floats([[0.6, 0.8], [0.0, 1.0]], &device);
        let mut queue = FeatureQueue::new(4);
        queue.push(
            Tensor::from_floats([[0.8, 0.6]], &device),
            Tensor::from_floats([[1.0, 0.0]], &device),
            &[7],
        );
        let t = 0.5;
        let out = itc_loss(
            image.clone(),
            text.clone(),
            &queue,
            Tensor::from_floats([t as f32], &device),
        );
        assert_eq!(out.logits_i2t.dims(), [2, 3]);
        // i2t row 0: image0·[text0, text1, q] = [0.6, 0, 1.0]/t, target 0; row 1: [0.8, 1, 0]/t, target 1.
        let ce = |row: [f64; 3], target: usize| {
            -(row[target] / t - row.iter().map(|v| (v / t).exp()).sum::<f64>().ln())
        };
        let i2t = (ce([0.6, 0.0, 1.0], 0) + ce([0.8, 1.0, 0.0], 1)) / 2.0;
        // t2i row 0: text0·[image0, image1, q] = [0.6, 0.8, 0.96]; row 1: [0, 1, 0.6].
        let t2i = (ce([0.6, 0.8, 0.96], 0) + ce([0.0, 1.0, 0.6], 1)) / 2.0;
        let loss = out.loss.into_scalar() as f64;
        assert!((loss - (i2t + t2i) / 2.0).abs() < 1e-5, "{loss}");
    }

    #[test]
    fn the_queue_is_first_in_first_out_and_keeps_indices() {
        let device = Default::default();
        let mut queue = FeatureQueue::<B>::new(3);
        for step in 0..3 {
            let f = Tensor::<B, 2>::from_floats([[step as f32, 0.0], [step as f32, 1.0]], &device);
            queue.push(f.clone(), f, &[2 * step, 2 * step + 1]);
        }
        assert_eq!(queue.indices(), &[3, 4, 5]);
        let image: Vec<f32> = queue.image().unwrap().into_data().into_vec().unwrap();
        assert_eq!(image, vec![1.0, 1.0, 2.0, 0.0, 2.0, 1.0]);
    }

    #[test]
    fn temperature_is_clamped_when_used_and_in_place() {
        let device = Default::default();
        assert_eq!(
            Temperature::<B>::new(5.0, &device).value().into_scalar(),
            1.0
        );
        assert_eq!(
            Temperature::<B>::new(1e-5, &device).value().into_scalar(),
            0.001
        );
        let stored = Temperature::<B>::new(5.0, &device)
            .clamp_in_place()
            .temp
            .val()
            .into_scalar();
        assert_eq!(stored, 1.0);
    }
}
