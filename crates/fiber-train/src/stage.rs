//! One training stage (pre-training, a fine-tuning task): the step loop with gradient
//! accumulation, the learning-rate schedule, the optimiser, NaN checks, progress, the metrics
//! log and checkpoints with exact resume.
//!
//! Exact resume: a checkpoint holds the model, the optimiser state, the task's own state (e.g.
//! the ITC queue), the step and the data loader's position. The backend's random generator is
//! reseeded from (seed, stage, step) before every step and every data-side random choice is
//! seeded by position, so a resumed run computes the same losses as an uninterrupted one.

use std::path::PathBuf;
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Transaction;
use fiber_core::weights::{WeightCollector, WeightLoader, WeightVisitor};
use fiber_core::TensorStore;
use fiber_data::loader::{stream_seed, Loaded, Loader, LoaderPosition};
use fiber_data::Problem;
use serde::{Deserialize, Serialize};

use crate::checkpoint::CheckpointDir;
use crate::config::StageConfig;
use crate::error::TrainError;
use crate::log::MetricsLog;
use crate::optim::{
    linear_schedule, AdamW, GradientCollector, KeyedGradients, ParamGroups, PreparedGradients,
    StepInfo,
};

/// A model whose parameters can be walked under their checkpoint keys.
pub trait VisitWeights<B: Backend> {
    /// Visits every parameter.
    fn visit_weights_with<V: WeightVisitor<B>>(&mut self, v: &mut V);
}

impl<B: Backend> VisitWeights<B> for fiber_heads::FiberModel<B> {
    fn visit_weights_with<V: WeightVisitor<B>>(&mut self, v: &mut V) {
        self.visit_weights(v);
    }
}

/// The model's weights as safetensors bytes.
pub fn model_bytes<B: Backend, M: VisitWeights<B> + Clone>(
    model: &M,
) -> Result<Vec<u8>, TrainError> {
    let mut collector = WeightCollector::new();
    model.clone().visit_weights_with(&mut collector);
    Ok(collector.into_store().to_safetensors_bytes()?)
}

/// Loads every parameter of `model` from `store` (all keys must match).
pub fn load_model<B: Backend, M: VisitWeights<B>>(
    model: &mut M,
    store: TensorStore,
) -> Result<(), TrainError> {
    let mut loader = WeightLoader::new(store);
    model.visit_weights_with(&mut loader);
    loader.finish()?;
    Ok(())
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
    /// The loss (summed over micro-batches).
    pub loss: f64,
    /// Its named parts, in the order given (summed over micro-batches).
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

/// What a stage's task computes for one micro-batch.
pub struct StepLoss<B: AutodiffBackend> {
    /// The loss to minimise `[1]`.
    pub loss: Tensor<B, 1>,
    /// Named parts to log (e.g. `itc`, `itm`, `mlm`) `[1]` each, outside the graph; they are
    /// read back with the loss.
    pub parts: Vec<(&'static str, Tensor<B::InnerBackend, 1>)>,
}

/// A training task: how a batch becomes a loss, and any state it keeps between steps.
pub trait StageTask<B: AutodiffBackend> {
    /// The model trained.
    type Model: AutodiffModule<B> + VisitWeights<B> + Clone;
    /// A collated batch from the loader.
    type Batch: Send + 'static;

    /// Starts the loader at `position`.
    fn loader(&self, position: LoaderPosition) -> Result<Loader<Self::Batch>, TrainError>;
    /// The model as a step starts (e.g. with the temperature clamped).
    fn before_step(&mut self, model: Self::Model) -> Self::Model {
        model
    }
    /// The loss of one micro-batch.
    fn loss(
        &mut self,
        model: &Self::Model,
        batch: Self::Batch,
        step: u64,
    ) -> Result<StepLoss<B>, TrainError>;
    /// Called after the optimiser step (e.g. to push features into a queue).
    fn after_step(&mut self) {}
    /// The task's own state, for checkpoints.
    fn state(&self) -> TensorStore {
        TensorStore::new()
    }
    /// Restores [`StageTask::state`].
    fn load_state(&mut self, _store: &TensorStore) -> Result<(), TrainError> {
        Ok(())
    }
}

#[derive(Serialize, Deserialize)]
struct TrainerState {
    step: u64,
    position: LoaderPosition,
    skipped_samples: usize,
}

/// Where and how a stage runs.
pub struct StageRunner<'a> {
    /// Name of the stage (folder and log key).
    pub name: &'a str,
    /// The stage's folder (checkpoints go to `checkpoints/`).
    pub dir: PathBuf,
    /// Steps, batches, optimisation.
    pub config: &'a StageConfig,
    /// Seed of the run.
    pub seed: u64,
    /// Continue from the stage's latest checkpoint when there is one.
    pub resume: bool,
    /// Stop (as if killed) after this many steps of this process (tests of resumption).
    pub stop_after: Option<u64>,
}

/// How a stage ended.
pub struct StageOutcome<M> {
    /// The trained model.
    pub model: M,
    /// Steps completed.
    pub steps: u64,
    /// Samples the loader skipped (missing or corrupt images).
    pub skipped: Vec<Problem>,
    /// Wall time of this process's steps in seconds.
    pub seconds: f64,
    /// Whether the stage was already complete (loaded from its final checkpoint).
    pub reused: bool,
}

impl StageRunner<'_> {
    fn checkpoints(&self) -> CheckpointDir {
        CheckpointDir::new(self.dir.join("checkpoints"), self.config.keep_checkpoints)
    }

    /// Runs the stage on `model` (or resumes it), logging every step to `log`.
    pub fn run<B: AutodiffBackend, T: StageTask<B>>(
        &self,
        task: &mut T,
        mut model: T::Model,
        log: &mut MetricsLog,
        device: &B::Device,
    ) -> Result<StageOutcome<T::Model>, TrainError> {
        let config = self.config;
        let mut optimizer = AdamW::<B::InnerBackend>::new(
            config.optimizer.clone(),
            ParamGroups::fiber_with(
                config.head_lr_multiplier,
                config.fusion_lr_multiplier,
                config.cross_modal_lr_multiplier,
                config.temperature_lr_multiplier,
            ),
        );
        let mut state = TrainerState {
            step: 0,
            position: LoaderPosition::default(),
            skipped_samples: 0,
        };
        let checkpoints = self.checkpoints();
        if self.resume {
            if let Some((step, folder)) = checkpoints.latest()? {
                load_model(
                    &mut model,
                    TensorStore::from_safetensors_bytes(&CheckpointDir::read(
                        &folder,
                        "model.safetensors",
                    )?)?,
                )?;
                optimizer.load_state(
                    &TensorStore::from_safetensors_bytes(&CheckpointDir::read(
                        &folder,
                        "optimizer.safetensors",
                    )?)?,
                    device,
                )?;
                task.load_state(&TensorStore::from_safetensors_bytes(&CheckpointDir::read(
                    &folder,
                    "task.safetensors",
                )?)?)?;
                state = serde_json::from_slice(&CheckpointDir::read(&folder, "trainer.json")?)
                    .map_err(|e| TrainError::Checkpoint(format!("{}: {e}", folder.display())))?;
                if state.step != step {
                    return Err(TrainError::Checkpoint(format!(
                        "{} holds step {}",
                        folder.display(),
                        state.step
                    )));
                }
                log.truncate_stage(self.name, step)?;
            }
        }
        if state.step >= config.steps {
            return Ok(StageOutcome {
                model,
                steps: state.step,
                skipped: Vec::new(),
                seconds: 0.0,
                reused: true,
            });
        }
        let warmup = (config.steps as f64 * config.warmup_ratio).round() as u64;
        let mut loader = task.loader(state.position)?;
        let progress = progress_bar(self.name, config.steps, state.step);
        let start = Instant::now();
        let mut skipped = Vec::new();
        let mut done_here = 0u64;
        while state.step < config.steps {
            let step = state.step;
            B::seed(
                device,
                stream_seed(&[self.seed, name_seed(self.name), step]),
            );
            model = task.before_step(model);
            let mut gradients: Option<KeyedGradients<B::InnerBackend>> = None;
            // Summed on the device over micro-batches, read back once after the backward pass.
            let mut loss_sum: Option<Tensor<B::InnerBackend, 1>> = None;
            let mut parts_sum: Vec<(&'static str, Tensor<B::InnerBackend, 1>)> = Vec::new();
            for _ in 0..config.accumulation.max(1) {
                let Loaded {
                    batch,
                    next,
                    skipped: bad,
                    ..
                } = loader.next_batch()?;
                state.position = next;
                state.skipped_samples += bad.len();
                for problem in &bad {
                    progress.suspend(|| {
                        eprintln!("warning: {}: {}", problem.file.display(), problem.message)
                    });
                }
                skipped.extend(bad);
                let StepLoss { loss, parts } = task.loss(&model, batch, step)?;
                let value = loss.clone().inner();
                loss_sum = Some(match loss_sum {
                    Some(sum) => sum + value,
                    None => value,
                });
                for (name, v) in parts {
                    match parts_sum.iter_mut().find(|(n, _)| *n == name) {
                        Some(slot) => slot.1 = slot.1.clone() + v,
                        None => parts_sum.push((name, v)),
                    }
                }
                let micro = gradients_by_key(&mut model, optimizer.scale_loss(loss));
                match &mut gradients {
                    Some(acc) => acc.accumulate(micro),
                    None => gradients = Some(micro),
                }
            }
            let micro_batches = config.accumulation.max(1) as f64;
            let mut gradients = gradients.expect("at least one micro-batch");
            if micro_batches > 1.0 {
                gradients.scale(1.0 / micro_batches);
            }
            let gradients = optimizer.prepare(gradients);
            let scalars = read_step_scalars(
                loss_sum.expect("at least one micro-batch"),
                &parts_sum,
                &gradients,
            )?;
            let loss = scalars.loss / micro_batches;
            if !loss.is_finite() {
                let last = checkpoints
                    .latest()?
                    .map(|(s, p)| {
                        format!("; the last good checkpoint is step {s} in {}", p.display())
                    })
                    .unwrap_or_default();
                return Err(TrainError::NonFinite(format!(
                    "the {} loss is {loss} at step {step}{last}",
                    self.name
                )));
            }
            let lr = linear_schedule(step, config.steps, warmup, config.lr);
            let info = apply_update(&mut optimizer, &mut model, lr, gradients, scalars.grad_norm)
                .map_err(|e| match e {
                TrainError::NonFinite(m) => {
                    TrainError::NonFinite(format!("{m} at step {step} of {}", self.name))
                }
                other => other,
            })?;
            if info.skipped {
                progress.suspend(|| {
                    eprintln!(
                        "warning: {} step {}: the scaled gradients overflowed; step skipped, loss scale now {}",
                        self.name,
                        step + 1,
                        optimizer.loss_scale().unwrap_or(0.0)
                    )
                });
            }
            task.after_step();
            state.step += 1;
            done_here += 1;
            let parts: Vec<(&'static str, f64)> = scalars
                .parts
                .into_iter()
                .map(|(n, v)| (n, v / micro_batches))
                .collect();
            log.record(
                self.name,
                state.step,
                lr,
                loss,
                &parts,
                (!info.skipped).then_some(info.grad_norm),
                start.elapsed().as_secs_f64(),
            )?;
            progress.set_position(state.step);
            progress.set_message(format!("loss {loss:.4}"));
            if state.step % config.checkpoint_every == 0 || state.step == config.steps {
                let files = vec![
                    ("model.safetensors", model_bytes(&model)?),
                    (
                        "optimizer.safetensors",
                        optimizer.state().to_safetensors_bytes()?,
                    ),
                    ("task.safetensors", task.state().to_safetensors_bytes()?),
                    (
                        "trainer.json",
                        serde_json::to_vec_pretty(&state).expect("the trainer state serialises"),
                    ),
                ];
                checkpoints.save(state.step, &files)?;
            }
            if self.stop_after.is_some_and(|n| done_here >= n) {
                progress.abandon();
                return Err(TrainError::Stopped(state.step));
            }
        }
        progress.finish_and_clear();
        Ok(StageOutcome {
            model,
            steps: state.step,
            skipped,
            seconds: start.elapsed().as_secs_f64(),
            reused: false,
        })
    }
}

fn name_seed(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

fn progress_bar(name: &str, total: u64, position: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix:>9} [{bar:30}] {pos}/{len} {msg} {per_sec} eta {eta}",
        )
        .expect("a valid progress template")
        .progress_chars("=> "),
    );
    bar.set_prefix(name.to_string());
    bar.set_position(position);
    bar
}
