//! One training stage (pre-training, a fine-tuning task): the step loop (each step assembled
//! by [`crate::step`], with gradient accumulation), the learning-rate schedule, NaN checks,
//! progress, the metrics log and checkpoints with exact resume.
//!
//! Exact resume: a checkpoint holds the model, the optimiser state, the task's own state (e.g.
//! the ITC queue), the step and the data loader's position. The backend's random generator is
//! reseeded from (seed, stage, step) before every step and every data-side random choice is
//! seeded by position, so a resumed run computes the same losses as an uninterrupted one.
//!
//! Data parallelism: with several devices the stage runs one replica per device, each in its
//! own thread with its own copy of the model, optimiser and task ([`crate::replica`]). Replica
//! *r* takes the *r*-th batch of each group of `replicas` consecutive batches of the seeded
//! order, the gradients (and the logged loss) are averaged over the replicas before the same
//! update on every replica, and replica 0 alone writes checkpoints and metrics. Micro-batch
//! *m* of a step (counting over replicas, `m = accumulation round × replicas + rank`) draws
//! from the random streams of micro-batch *m*, so N replicas compute what one replica
//! accumulating N micro-batches computes.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use burn::module::{AutodiffModule, Module};
use burn::tensor::backend::AutodiffBackend;
use fiber_core::TensorStore;
use fiber_data::loader::{stream_seed, Loaded, Loader, LoaderPosition, Shard};
use fiber_data::Problem;
use serde::{Deserialize, Serialize};

use crate::checkpoint::CheckpointDir;
use crate::config::StageConfig;
use crate::error::TrainError;
use crate::log::MetricsLog;
use crate::model_io::{load_model, model_bytes, VisitWeights};
use crate::nodes::NodeLink;
use crate::optim::{AdamW, Freeze, ParamGroups, WeightAverage};
use crate::replica::{Replica, ReplicaConfig, ReplicaGroup};
use crate::step::{apply_update, StepAccumulator, StepLoss};

/// Which micro-batch of which step a task's loss computes, and the replica computing it.
pub struct MicroStep<'a> {
    /// The optimiser step, from 0.
    pub step: u64,
    /// The micro-batch within the step, counted over all replicas (`round × replicas + rank`).
    pub index: u64,
    /// The replica (for values that are global over replicas, e.g. positive counts).
    pub replica: &'a Replica,
}

impl MicroStep<'_> {
    /// The seed of the random stream `parts` of this micro-batch: `parts` and the step, and
    /// the micro-batch index after the first (so a step of one micro-batch keeps the stream
    /// it always had).
    pub fn seed(&self, parts: &[u64]) -> u64 {
        let mut all = parts.to_vec();
        all.push(self.step);
        if self.index > 0 {
            all.push(self.index);
        }
        stream_seed(&all)
    }
}

/// A training task: how a batch becomes a loss, and any state it keeps between steps.
pub trait StageTask<B: AutodiffBackend>: Send {
    /// The model trained.
    type Model: AutodiffModule<B> + VisitWeights<B> + Clone + Send;
    /// A collated batch from the loader.
    type Batch: Send + 'static;

    /// Starts the loader at `position`, producing the batches of `shard`.
    fn loader(
        &self,
        position: LoaderPosition,
        shard: Shard,
    ) -> Result<Loader<Self::Batch>, TrainError>;
    /// A copy of the task for another replica, computing on `device`.
    fn replica(&self, device: &B::Device) -> Self
    where
        Self: Sized;
    /// Which parameters decay, how each one's rate is scaled and which are frozen (default:
    /// FIBER's coarse groups with the stage's multipliers).
    fn param_groups(&self, config: &StageConfig) -> ParamGroups {
        ParamGroups::fiber_with(
            config.head_lr_multiplier,
            config.fusion_lr_multiplier,
            config.cross_modal_lr_multiplier,
            config.temperature_lr_multiplier,
        )
    }
    /// The model as a step starts (e.g. with the temperature clamped).
    fn before_step(&mut self, model: Self::Model) -> Self::Model {
        model
    }
    /// The loss of one micro-batch.
    fn loss(
        &mut self,
        model: &Self::Model,
        batch: Self::Batch,
        micro: &MicroStep<'_>,
    ) -> Result<StepLoss<B>, TrainError>;
    /// Called after the optimiser step on every replica (e.g. to push the features of every
    /// replica into a queue).
    fn after_step(&mut self, _replica: &Replica) -> Result<(), TrainError> {
        Ok(())
    }
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
    /// How replicas synchronise (with more than one device).
    pub replicas: &'a ReplicaConfig,
    /// The connections to the other nodes of a run over several machines.
    pub link: Option<&'a Arc<NodeLink>>,
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
    /// The moving average of the weights as a model, when the stage keeps one.
    pub average: Option<M>,
}

impl<M> StageOutcome<M> {
    /// The model to evaluate and use: the moving average when there is one, else the model.
    pub fn into_evaluated(self) -> M {
        self.average.unwrap_or(self.model)
    }
}

/// `model` with the averaged weights of `average` in place of its own.
fn averaged<B: AutodiffBackend, M: VisitWeights<B> + Clone>(
    model: &M,
    average: &WeightAverage<B::InnerBackend>,
) -> M {
    let mut copy = model.clone();
    copy.visit_weights_with(&mut average.apply());
    copy
}

impl StageRunner<'_> {
    fn checkpoints(&self) -> CheckpointDir {
        CheckpointDir::new(self.dir.join("checkpoints"), self.config.keep_checkpoints)
    }

    /// Runs the stage on `model` (or resumes it), logging every step to `log` (none on the
    /// nodes other than node 0): one replica per device of `devices` (at least one), each in
    /// its own thread; `task` and `model` are the first replica's, the others train copies of
    /// them.
    pub fn run<B: AutodiffBackend, T: StageTask<B>>(
        &self,
        task: &mut T,
        model: T::Model,
        log: Option<&mut MetricsLog>,
        devices: &[B::Device],
    ) -> Result<StageOutcome<T::Model>, TrainError> {
        let config = self.config;
        let count = devices.len().max(1);
        let nodes = self.link.map_or(1, |l| l.spec().count);
        let accumulation = config.accumulation.max(1);
        if count * nodes > 1 || accumulation > 1 {
            let on_nodes = if nodes > 1 {
                format!(" on each of {nodes} nodes")
            } else {
                String::new()
            };
            println!(
                "{}: {} samples per step ({} per batch × {count} replica(s){on_nodes} × {accumulation} accumulated)",
                self.name,
                config.batch_size * count * nodes * accumulation,
                config.batch_size,
            );
        }
        let first = devices
            .first()
            .ok_or_else(|| TrainError::Setting("a stage needs at least one device".into()))?;
        if count == 1 {
            let replica = match self.link {
                None => Replica::single(),
                Some(link) => Replica::of(self.replicas, None, 0, Some(link)),
            };
            return self.run_replica(task, model, log, &replica, first);
        }
        let group = ReplicaGroup::new(count, self.replicas.clone());
        burn_collective::reset_collective::<B::InnerBackend>();
        std::thread::scope(|scope| {
            let handles: Vec<_> = devices
                .iter()
                .enumerate()
                .skip(1)
                .map(|(rank, device)| {
                    let mut replica_task = task.replica(device);
                    let replica_model = model.clone().fork(device);
                    let replica = Replica::of(self.replicas, Some(&group), rank, self.link);
                    let group = &group;
                    scope.spawn(move || {
                        group.guard(rank, || {
                            self.run_replica(
                                &mut replica_task,
                                replica_model,
                                None,
                                &replica,
                                device,
                            )
                            .map(|outcome| outcome.skipped)
                        })
                    })
                })
                .collect();
            let main = group.guard(0, || {
                self.run_replica(
                    task,
                    model,
                    log,
                    &Replica::of(self.replicas, Some(&group), 0, self.link),
                    first,
                )
            });
            let mut first_error = None;
            let mut skipped = Vec::new();
            for handle in handles {
                let result = handle.join().unwrap_or_else(|_| {
                    Err(TrainError::Replica("a replica thread panicked".into()))
                });
                match result {
                    Ok(problems) => skipped.extend(problems),
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
            match (main, first_error) {
                (Err(e), _) => Err(e),
                (Ok(_), Some(e)) => Err(e),
                (Ok(mut outcome), None) => {
                    // Every replica's skipped samples count in the report.
                    outcome.skipped.extend(skipped);
                    Ok(outcome)
                }
            }
        })
    }

    /// One replica's training loop (the whole stage when it is the only one): checkpoints,
    /// metrics and the weight average on the main replica only.
    fn run_replica<B: AutodiffBackend, T: StageTask<B>>(
        &self,
        task: &mut T,
        model: T::Model,
        mut log: Option<&mut MetricsLog>,
        replica: &Replica,
        device: &B::Device,
    ) -> Result<StageOutcome<T::Model>, TrainError> {
        replica.register::<B::InnerBackend>(device)?;
        let outcome = self.train_replica(task, model, log.take(), replica, device);
        let finished = replica.finish::<B::InnerBackend>();
        let outcome = outcome?;
        finished?;
        Ok(outcome)
    }

    /// Runs one replica's steps on `model` in place.
    fn train_replica<B: AutodiffBackend, T: StageTask<B>>(
        &self,
        task: &mut T,
        mut model: T::Model,
        mut log: Option<&mut MetricsLog>,
        replica: &Replica,
        device: &B::Device,
    ) -> Result<StageOutcome<T::Model>, TrainError> {
        let config = self.config;
        let groups = task.param_groups(config);
        let main = replica.is_main();
        // Every node keeps the average, so that each returns the same model to evaluate or
        // train on; node 0 alone writes it.
        let mut average = config
            .ema_decay
            .filter(|_| replica.is_node_main())
            .map(WeightAverage::<B::InnerBackend>::new);
        let mut optimizer = AdamW::<B::InnerBackend>::new(config.optimizer.clone(), groups);
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
                if let Some(average) = average.as_mut() {
                    let mut saved = model.clone();
                    load_model(
                        &mut saved,
                        TensorStore::from_safetensors_bytes(&CheckpointDir::read(
                            &folder,
                            "ema.safetensors",
                        )?)?,
                    )?;
                    saved.visit_weights_with(&mut average.update());
                }
                state = serde_json::from_slice(&CheckpointDir::read(&folder, "trainer.json")?)
                    .map_err(|e| TrainError::TrainerState {
                        folder: folder.clone(),
                        message: e.to_string(),
                    })?;
                if state.step != step {
                    return Err(TrainError::TrainerState {
                        folder,
                        message: format!("holds step {}", state.step),
                    });
                }
                if let Some(log) = log.as_deref_mut() {
                    log.truncate_stage(self.name, step)?;
                }
            }
        }
        let mut freeze = Freeze {
            groups: optimizer.groups(),
            frozen: 0,
            trainable: Vec::new(),
        };
        model.visit_weights_with(&mut freeze);
        let trainable = freeze.trainable;
        if let Some(average) = average.as_mut().filter(|a| a.is_empty()) {
            model.visit_weights_with(&mut average.update());
        }
        if replica.spans_nodes() {
            let weights = match replica.is_node_main() {
                true => Some(crate::nodes::fingerprint(&model_bytes(&model)?)),
                false => None,
            };
            replica.agree_on_start::<B::InnerBackend>(self.name, state.step, weights, device)?;
        }
        if state.step >= config.steps {
            return Ok(StageOutcome {
                average: average.as_ref().map(|a| averaged::<B, _>(&model, a)),
                model,
                steps: state.step,
                skipped: Vec::new(),
                seconds: 0.0,
                reused: true,
            });
        }
        let warmup = (config.steps as f64 * config.warmup_ratio).round() as u64;
        let mut loader = task.loader(state.position, replica.shard())?;
        let progress = if replica.is_node_main() {
            progress_bar(self.name, config.steps, state.step)
        } else {
            indicatif::ProgressBar::hidden()
        };
        let accumulation = config.accumulation.max(1) as u64;
        let replicas = replica.count() as u64;
        let start = Instant::now();
        let mut skipped = Vec::new();
        let mut done_here = 0u64;
        while state.step < config.steps {
            let step = state.step;
            model = task.before_step(model);
            let mut accumulator = StepAccumulator::<B>::default();
            for round in 0..accumulation {
                let micro = MicroStep {
                    step,
                    index: round * replicas + replica.rank as u64,
                    replica,
                };
                B::seed(device, micro.seed(&[self.seed, name_seed(self.name)]));
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
                let loss = task.loss(&model, batch, &micro)?;
                accumulator.add(&mut model, &optimizer, loss);
            }
            let accumulator = accumulator.average_over(replica, &trainable)?;
            let (scalars, gradients) = accumulator.prepare(&optimizer).read()?;
            let loss = scalars.loss;
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
            let lr = config.schedule.lr(step, config.steps, warmup, config.lr);
            optimizer
                .set_weight_decay_factor(config.schedule.weight_decay_factor(step, config.steps));
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
            if let Some(average) = average.as_mut() {
                model.visit_weights_with(&mut average.update());
            }
            task.after_step(replica)?;
            state.step += 1;
            done_here += 1;
            let parts = scalars.parts;
            if let Some(log) = log.as_deref_mut() {
                log.record(
                    self.name,
                    state.step,
                    lr,
                    loss,
                    &parts,
                    (!info.skipped).then_some(info.grad_norm),
                    start.elapsed().as_secs_f64(),
                )?;
            }
            progress.set_position(state.step);
            progress.set_message(format!("loss {loss:.4}"));
            if main && (state.step % config.checkpoint_every == 0 || state.step == config.steps) {
                let mut files = vec![
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
                if let Some(average) = average.as_ref() {
                    files.push((
                        "ema.safetensors",
                        model_bytes(&averaged::<B, _>(&model, average))?,
                    ));
                }
                checkpoints.save(state.step, &files)?;
            }
            if self.stop_after.is_some_and(|n| done_here >= n) {
                progress.abandon();
                return Err(TrainError::Stopped(state.step));
            }
        }
        progress.finish_and_clear();
        Ok(StageOutcome {
            average: average.as_ref().map(|a| averaged::<B, _>(&model, a)),
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
