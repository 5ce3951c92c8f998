//! The ITC feature queue of a task (pre-training, ITC retrieval): this step's features held
//! until the update, then queued; and the queue in checkpoints.

use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::TensorData;
use fiber_core::{StoredTensor, TensorStore};
use fiber_heads::FeatureQueue;

use crate::error::TrainError;
use crate::replica::Replica;

/// The ITC queue as checkpoint tensors: dataset indices and, when not empty, the features.
pub fn save<B: Backend>(queue: &FeatureQueue<B>) -> TensorStore {
    let mut store = TensorStore::new();
    store.insert(
        "queue.indices",
        StoredTensor::i64(
            vec![queue.len()],
            queue.indices().iter().map(|&i| i as i64).collect(),
        ),
    );
    if let (Some(image), Some(text)) = (queue.image(), queue.text()) {
        store.insert("queue.image", StoredTensor::from_tensor(image));
        store.insert("queue.text", StoredTensor::from_tensor(text));
    }
    store
}

/// A queue of `capacity` restored from [`save`]'s tensors.
pub fn restore<B: Backend>(
    capacity: usize,
    store: &TensorStore,
    device: &B::Device,
) -> Result<FeatureQueue<B>, TrainError> {
    let missing = |k: &str| TrainError::TaskState(format!("the task state lacks `{k}`"));
    let indices: Vec<usize> = store
        .get("queue.indices")
        .and_then(|t| t.as_i64())
        .ok_or_else(|| missing("queue.indices"))?
        .iter()
        .map(|&i| i as usize)
        .collect();
    let mut queue = FeatureQueue::new(capacity);
    if indices.is_empty() {
        return Ok(queue);
    }
    let read = |k: &str| -> Result<Tensor<B, 2>, TrainError> {
        let t = store.get(k).ok_or_else(|| missing(k))?;
        let values = t.as_f32().ok_or_else(|| missing(k))?;
        Ok(Tensor::from_data(
            TensorData::new(values.to_vec(), t.shape.clone()),
            device,
        ))
    };
    queue.push(read("queue.image")?, read("queue.text")?, &indices);
    Ok(queue)
}

/// A task's ITC feature queue and the features of the step in progress, which enter it after
/// the optimiser step (so a step never contrasts a batch with its own features).
#[derive(Clone)]
pub struct TaskQueue<B: Backend> {
    /// The queue (dataset indices kept for hard negatives).
    pub queue: FeatureQueue<B>,
    pending: Vec<(Tensor<B, 2>, Tensor<B, 2>, Vec<usize>)>,
}

impl<B: Backend> TaskQueue<B> {
    /// An empty queue of `capacity` features.
    pub fn new(capacity: usize) -> Self {
        Self {
            queue: FeatureQueue::new(capacity),
            pending: Vec::new(),
        }
    }

    /// A copy of the queue on `device` (another replica's), with nothing held.
    pub fn on_device(&self, device: &B::Device) -> Self {
        let queue = restore(self.queue.capacity, &save(&self.queue), device)
            .expect("a queue's own tensors restore");
        Self {
            queue,
            pending: Vec::new(),
        }
    }

    /// Holds a micro-batch's (detached) image and text features `[n, d]` of dataset `indices`
    /// until the step's update.
    pub fn hold(&mut self, image: Tensor<B, 2>, text: Tensor<B, 2>, indices: Vec<usize>) {
        self.pending.push((image, text, indices));
    }

    /// The queue as checkpoint tensors ([`save`]).
    pub fn state(&self) -> TensorStore {
        save(&self.queue)
    }

    /// Restores [`TaskQueue::state`].
    pub fn load_state(
        &mut self,
        store: &TensorStore,
        device: &B::Device,
    ) -> Result<(), TrainError> {
        self.queue = restore(self.queue.capacity, store, device)?;
        Ok(())
    }
}

/// Bytes per dataset index in the replicas' gather.
const INDEX_PARTS: usize = 4;

impl<B: AutodiffBackend> TaskQueue<B> {
    /// Queues the held features of the step (after the optimiser step): this replica's
    /// micro-batches in order, gathered with every other replica's in rank order (the
    /// collective runs on the inner backend, where the replicas registered).
    pub fn enter_held(&mut self, replica: &Replica) -> Result<(), TrainError> {
        let held = std::mem::take(&mut self.pending);
        if held.is_empty() || self.queue.capacity == 0 {
            return Ok(());
        }
        if replica.count() == 1 {
            for (image, text, ids) in held {
                self.queue.push(image, text, &ids);
            }
            return Ok(());
        }
        let device = held[0].0.device();
        let image_dim = held[0].0.dims()[1];
        let text_dim = held[0].1.dims()[1];
        // One gather of [image | text | index bytes] rows: each index travels as four 8-bit
        // parts, exact in every float type down to bf16 (indices below 2^32 survive).
        let rows: Vec<Tensor<B::InnerBackend, 2>> = held
            .into_iter()
            .map(|(image, text, ids)| {
                let parts: Vec<f32> = ids
                    .iter()
                    .flat_map(|&i| {
                        (0..INDEX_PARTS)
                            .rev()
                            .map(move |p| ((i >> (8 * p)) & 0xFF) as f32)
                    })
                    .collect();
                let ids =
                    Tensor::from_data(TensorData::new(parts, [ids.len(), INDEX_PARTS]), &device);
                Tensor::cat(vec![image.inner(), text.inner(), ids], 1)
            })
            .collect();
        let (gathered, _) = replica.gather_rows(Tensor::cat(rows, 0))?;
        let [n, _] = gathered.dims();
        let features = image_dim + text_dim;
        let index_parts = gathered
            .clone()
            .slice([0..n, features..features + INDEX_PARTS])
            .into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .map_err(|e| TrainError::Replica(format!("reading gathered indices back: {e:?}")))?;
        let indices: Vec<usize> = index_parts
            .chunks(INDEX_PARTS)
            .map(|c| c.iter().fold(0usize, |i, p| (i << 8) | p.round() as usize))
            .collect();
        let image = gathered.clone().slice([0..n, 0..image_dim]);
        let text = gathered.slice([0..n, image_dim..features]);
        self.queue.push(
            Tensor::from_inner(image),
            Tensor::from_inner(text),
            &indices,
        );
        Ok(())
    }
}
