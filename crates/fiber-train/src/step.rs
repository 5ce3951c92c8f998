//! One optimiser step, as training and the benchmark both run it: the micro-batches' losses
//! back-propagated into gradients by checkpoint key and accumulated, the gradients prepared for
//! the update, the step's one read from the device (loss, parts and gradient norm together),
//! and the AdamW update.

use burn::module::AutodiffModule;
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Transaction;

use crate::error::TrainError;
use crate::model_io::VisitWeights;
use crate::optim::{AdamW, GradientCollector, KeyedGradients, PreparedGradients, StepInfo};
use crate::replica::Replica;

/// What a stage's task computes for one micro-batch.
pub struct StepLoss<B: AutodiffBackend> {
    /// The loss to minimise `[1]`.
    pub loss: Tensor<B, 1>,
    /// Named parts to log (e.g. `itc`, `itm`, `mlm`) `[1]` each, outside the graph; they are
    /// read back with the loss.
    pub parts: Vec<(&'static str, Tensor<B::InnerBackend, 1>)>,
}

/// Back-propagates `loss` `[1]` and takes every parameter's gradient out, by checkpoint key.
pub fn gradients_by_key<B: AutodiffBackend, M: AutodiffModule<B> + VisitWeights<B>>(
    model: &mut M,
    loss: Tensor<B, 1>,
) -> KeyedGradients<B::InnerBackend> {
    let mut grads = GradientsParams::from_grads(loss.backward(), &*model);
    let mut collector = GradientCollector::new(&mut grads);
    model.visit_weights_with(&mut collector);
    collector.finish()
}

/// The scalars of one training step, read back from the device together.
#[derive(Debug, Clone, PartialEq)]
pub struct StepScalars {
    /// The loss (as given to [`read_step_scalars`]; averaged over the micro-batches by
    /// [`PreparedStep::read`]).
    pub loss: f64,
    /// Its named parts, in the order given (averaged likewise).
    pub parts: Vec<(&'static str, f64)>,
    /// The global gradient norm (0 without gradients).
    pub grad_norm: f64,
}

/// Reads `loss` `[1]`, the `parts` `[1]` and the squared norm of `gradients` back in **one**
/// transfer, the step's only synchronisation with the device: the forward, the backward pass
/// and the norm are queued without waiting, and the host learns whether the loss is finite
/// before the update is applied.
pub fn read_step_scalars<B: Backend>(
    loss: Tensor<B, 1>,
    parts: &[(&'static str, Tensor<B, 1>)],
    gradients: &PreparedGradients<B>,
) -> Result<StepScalars, TrainError> {
    let norm = gradients.squared_norm();
    let mut transaction = Transaction::default().register(loss);
    for (_, part) in parts {
        transaction = transaction.register(part.clone());
    }
    if let Some(norm) = &norm {
        transaction = transaction.register(norm.clone());
    }
    let data = transaction
        .try_execute()
        .map_err(|e| TrainError::Device(format!("reading the step's loss back failed: {e}")))?;
    let mut values = data.iter().map(|d| {
        d.iter::<f64>()
            .next()
            .expect("every registered scalar has one value")
    });
    let loss = values.next().expect("the loss was registered");
    let parts = parts
        .iter()
        .map(|(name, _)| (*name, values.next().expect("each part was registered")))
        .collect();
    let grad_norm = values.next().map_or(0.0, f64::sqrt);
    Ok(StepScalars {
        loss,
        parts,
        grad_norm,
    })
}

/// One AdamW update of `model` at base learning rate `lr` from prepared gradients and their
/// norm read back ([`read_step_scalars`]): checked, clipped, per-group rates.
pub fn apply_update<B: AutodiffBackend, M: VisitWeights<B>>(
    optimizer: &mut AdamW<B::InnerBackend>,
    model: &mut M,
    lr: f64,
    gradients: PreparedGradients<B::InnerBackend>,
    grad_norm: f64,
) -> Result<StepInfo, TrainError> {
    let mut update = optimizer.begin_prepared_step(lr, gradients, grad_norm)?;
    model.visit_weights_with(&mut update);
    update.finish()
}

/// The micro-batches of one optimiser step, back-propagated and summed on the device.
pub struct StepAccumulator<B: AutodiffBackend> {
    gradients: Option<KeyedGradients<B::InnerBackend>>,
    loss: Option<Tensor<B::InnerBackend, 1>>,
    parts: Vec<(&'static str, Tensor<B::InnerBackend, 1>)>,
    micro_batches: usize,
}

impl<B: AutodiffBackend> Default for StepAccumulator<B> {
    fn default() -> Self {
        Self {
            gradients: None,
            loss: None,
            parts: Vec::new(),
            micro_batches: 0,
        }
    }
}

impl<B: AutodiffBackend> StepAccumulator<B> {
    /// Back-propagates one micro-batch's loss (scaled when `optimizer` scales losses) and adds
    /// its gradients, loss and parts to the step's.
    pub fn add<M: AutodiffModule<B> + VisitWeights<B>>(
        &mut self,
        model: &mut M,
        optimizer: &AdamW<B::InnerBackend>,
        micro: StepLoss<B>,
    ) {
        let StepLoss { loss, parts } = micro;
        let value = loss.clone().inner();
        self.loss = Some(match self.loss.take() {
            Some(sum) => sum + value,
            None => value,
        });
        for (name, v) in parts {
            match self.parts.iter_mut().find(|(n, _)| *n == name) {
                Some(slot) => slot.1 = slot.1.clone() + v,
                None => self.parts.push((name, v)),
            }
        }
        let gradients = gradients_by_key(model, optimizer.scale_loss(loss));
        match &mut self.gradients {
            Some(sum) => sum.accumulate(gradients),
            None => self.gradients = Some(gradients),
        }
        self.micro_batches += 1;
    }

    /// The step's gradients, loss and parts averaged over the replicas of `replica`'s group
    /// (unchanged for a lone replica). `trainable` lists every trainable parameter's key and
    /// size, the same on every replica: a parameter that got no gradient here counts as a zero
    /// gradient, and one that got none on any replica stays without one.
    pub fn average_over(
        mut self,
        replica: &Replica,
        trainable: &[(String, usize)],
    ) -> Result<Self, TrainError> {
        if replica.count() == 1 {
            return Ok(self);
        }
        let loss = self.loss.take().expect("at least one micro-batch");
        let device = loss.device();
        let mut gradients = self.gradients.take().expect("at least one micro-batch");
        let present: Vec<f32> = trainable
            .iter()
            .map(|(key, _)| f32::from(u8::from(gradients.grads.contains_key(key))))
            .collect();
        let present = replica.sum_host::<B::InnerBackend>(&present, &device)?;
        let mut keys = Vec::new();
        let mut tensors = Vec::new();
        for ((key, size), anywhere) in trainable.iter().zip(present) {
            if anywhere > 0.0 {
                let g = gradients
                    .grads
                    .remove(key)
                    .unwrap_or_else(|| Tensor::zeros([*size], &device));
                keys.push(key.clone());
                tensors.push(g);
            }
        }
        let mut scalars = vec![loss.reshape([1])];
        scalars.extend(self.parts.iter().map(|(_, p)| p.clone().reshape([1])));
        // The scalars travel apart: they are f32 where the gradients may be half precision.
        let reduced = replica.mean_flat(tensors)?;
        let scalars = replica
            .mean_flat(vec![Tensor::cat(scalars, 0)])?
            .pop()
            .expect("the scalars were reduced");
        let mut split = scalars.split(1, 0).into_iter();
        self.loss = split.next();
        for (part, value) in self.parts.iter_mut().zip(split) {
            part.1 = value;
        }
        gradients.grads = keys.into_iter().zip(reduced).collect();
        self.gradients = Some(gradients);
        Ok(self)
    }

    /// The step's gradients averaged over its micro-batches and prepared for the update.
    /// Panics when no micro-batch was added.
    pub fn prepare(self, optimizer: &AdamW<B::InnerBackend>) -> PreparedStep<B::InnerBackend> {
        let mut gradients = self.gradients.expect("at least one micro-batch");
        if self.micro_batches > 1 {
            gradients.scale(1.0 / self.micro_batches as f64);
        }
        PreparedStep {
            gradients: optimizer.prepare(gradients),
            loss: self.loss.expect("at least one micro-batch"),
            parts: self.parts,
            micro_batches: self.micro_batches,
        }
    }
}

/// A step whose gradients are ready and whose scalars are still on the device.
pub struct PreparedStep<B: Backend> {
    gradients: PreparedGradients<B>,
    loss: Tensor<B, 1>,
    parts: Vec<(&'static str, Tensor<B, 1>)>,
    micro_batches: usize,
}

impl<B: Backend> PreparedStep<B> {
    /// Reads the loss, its parts (both averaged over the micro-batches) and the gradient norm
    /// back in one transfer ([`read_step_scalars`]); the gradients stay ready for
    /// [`apply_update`].
    pub fn read(self) -> Result<(StepScalars, PreparedGradients<B>), TrainError> {
        let mut scalars = read_step_scalars(self.loss, &self.parts, &self.gradients)?;
        let n = self.micro_batches.max(1) as f64;
        scalars.loss /= n;
        for part in &mut scalars.parts {
            part.1 /= n;
        }
        Ok((scalars, self.gradients))
    }
}
