//! Data-parallel scaling of the coarse pre-training step (`cargo xtask bench --devices N`):
//! the step of [`super::run_benchmark`] (ITC + ITM + MLM, backward, AdamW) on 1 … N replicas,
//! each in its own thread with its own copy of the model and its own batch of the benchmark's
//! size, the gradients averaged over the replicas as training averages them (in flat buckets
//! of `bucket_elements` values, 0 meaning one all-reduce per parameter tensor).

use std::time::Instant;

use burn::module::Module;
use burn::tensor::backend::AutodiffBackend;
use fiber_heads::FiberModel;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::Serialize;

use super::settings::median;
use super::{BenchConfig, BenchInputs};
use crate::error::TrainError;
use crate::model_io::VisitWeights;
use crate::optim::{AdamW, AdamWConfig, Freeze, ParamGroups};
use crate::replica::{Replica, ReplicaConfig, ReplicaGroup};
use crate::step::{apply_update, StepAccumulator, StepLoss};
use crate::tasks::pretrain::loss_parts;

/// One scaling measurement: the step on `replicas` replicas.
#[derive(Debug, Clone, Serialize)]
pub struct ScalingRun {
    /// Replicas training together.
    pub replicas: usize,
    /// Values per gradient all-reduce (0: one call per parameter tensor).
    pub bucket_elements: usize,
    /// Median wall time of a step, in milliseconds (replica 0's clock; the all-reduce makes
    /// every replica wait for the slowest).
    pub step_ms: f64,
    /// Image–text pairs trained per second over all replicas: batch × replicas / step time.
    pub pairs_per_second: f64,
}

/// Times the coarse pre-training step of `config` on one replica per device of `devices`,
/// averaging gradients in buckets of `bucket_elements` values.
pub fn run_scaling<B: AutodiffBackend>(
    config: &BenchConfig,
    devices: &[B::Device],
    bucket_elements: usize,
) -> Result<ScalingRun, TrainError> {
    config.validate()?;
    let first = devices
        .first()
        .ok_or_else(|| TrainError::Setting("scaling needs at least one device".into()))?;
    B::seed(first, 0x5EED);
    let model = FiberModel::<B>::new(&config.model, false, first)?.clamp_temperature();
    let count = devices.len();
    let settings = ReplicaConfig::new().with_bucket_elements(bucket_elements);
    let times = if count == 1 {
        replica_steps(config, model, &Replica::single(), first)?
    } else {
        let group = ReplicaGroup::new(count, settings.clone());
        burn_collective::reset_collective::<B::InnerBackend>();
        std::thread::scope(|scope| {
            let handles: Vec<_> = devices
                .iter()
                .enumerate()
                .skip(1)
                .map(|(rank, device)| {
                    let model = model.clone().fork(device);
                    let replica = Replica::of(&settings, Some(&group), rank, None);
                    let group = &group;
                    scope.spawn(move || {
                        group.guard(rank, || replica_steps(config, model, &replica, device))
                    })
                })
                .collect();
            let replica = Replica::of(&settings, Some(&group), 0, None);
            let main = group.guard(0, || replica_steps(config, model, &replica, first));
            for handle in handles {
                handle
                    .join()
                    .map_err(|_| TrainError::Replica("a benchmark replica panicked".into()))??;
            }
            main
        })?
    };
    let step_ms = median(times);
    Ok(ScalingRun {
        replicas: count,
        bucket_elements,
        step_ms,
        pairs_per_second: (config.batch * count) as f64 / (step_ms / 1000.0),
    })
}

/// One replica's warm-up and timed steps; returns the timed steps' milliseconds.
fn replica_steps<B: AutodiffBackend>(
    config: &BenchConfig,
    mut model: FiberModel<B>,
    replica: &Replica,
    device: &B::Device,
) -> Result<Vec<f64>, TrainError> {
    replica.register::<B::InnerBackend>(device)?;
    let inputs = BenchInputs::<B>::new(
        config.batch,
        config.text_len,
        config.model.roberta.vocab_size,
        config.model.swin.image_size,
        device,
    );
    let mut rng = StdRng::seed_from_u64(7 + replica.rank as u64);
    let mut optimizer = AdamW::<B::InnerBackend>::new(AdamWConfig::new(), ParamGroups::fiber(5.0));
    let mut freeze = Freeze {
        groups: optimizer.groups(),
        frozen: 0,
        trainable: Vec::new(),
    };
    model.visit_weights_with(&mut freeze);
    let trainable = freeze.trainable;
    let mut times = Vec::with_capacity(config.reps);
    for run in 0..config.warmup + config.reps {
        let start = Instant::now();
        let losses = model.pretrain_losses(&inputs.batch, &mut rng);
        let micro = StepLoss {
            parts: loss_parts(&losses),
            loss: losses.total,
        };
        let mut accumulator = StepAccumulator::<B>::default();
        accumulator.add(&mut model, &optimizer, micro);
        let accumulator = accumulator.average_over(replica, &trainable)?;
        let (scalars, gradients) = accumulator.prepare(&optimizer).read()?;
        if !scalars.loss.is_finite() {
            return Err(TrainError::NonFinite(format!(
                "the scaling benchmark's step loss is {}",
                scalars.loss
            )));
        }
        apply_update(
            &mut optimizer,
            &mut model,
            1e-5,
            gradients,
            scalars.grad_norm,
        )?;
        B::sync(device).map_err(|e| TrainError::Device(format!("training step: {e}")))?;
        if run >= config.warmup {
            times.push(start.elapsed().as_secs_f64() * 1000.0);
        }
    }
    replica.finish::<B::InnerBackend>()?;
    Ok(times)
}
