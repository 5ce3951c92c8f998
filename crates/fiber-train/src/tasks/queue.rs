//! The ITC feature queue of a task (pre-training, ITC retrieval): this step's features held
//! until the update, then queued; and the queue in checkpoints.

use burn::prelude::*;
use burn::tensor::TensorData;
use fiber_core::{StoredTensor, TensorStore};
use fiber_heads::FeatureQueue;

use crate::error::TrainError;

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
pub struct TaskQueue<B: Backend> {
    /// The queue (dataset indices kept for hard negatives).
    pub queue: FeatureQueue<B>,
    pending: Option<(Tensor<B, 2>, Tensor<B, 2>, Vec<usize>)>,
}

impl<B: Backend> TaskQueue<B> {
    /// An empty queue of `capacity` features.
    pub fn new(capacity: usize) -> Self {
        Self {
            queue: FeatureQueue::new(capacity),
            pending: None,
        }
    }

    /// Holds this step's (detached) image and text features `[n, d]` of dataset `indices`.
    pub fn hold(&mut self, image: Tensor<B, 2>, text: Tensor<B, 2>, indices: Vec<usize>) {
        self.pending = Some((image, text, indices));
    }

    /// Queues the held features (after the optimiser step).
    pub fn enter_held(&mut self) {
        if let Some((image, text, indices)) = self.pending.take() {
            self.queue.push(image, text, &indices);
        }
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
