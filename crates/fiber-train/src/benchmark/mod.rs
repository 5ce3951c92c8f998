//! Throughput of the coarse FIBER model on one backend (`cargo xtask bench`): the full coarse
//! pre-training step (ITC + ITM with in-batch hard negatives + MLM, backward, AdamW), its
//! forward alone, fused pair scoring, and dual-encoder image and text encoding. Each is timed
//! after warm-up runs, with the device synchronised and a value read back before the clock
//! stops. Weights and inputs are random (speed does not depend on their values); the inputs
//! follow [`BenchInputs`]' rule, which `bench/reference.py` repeats for PyTorch.

use std::time::Instant;

use burn::module::AutodiffModule;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use fiber_heads::FiberModel;
use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::error::TrainError;
use crate::optim::{AdamW, AdamWConfig, ParamGroups};
use crate::step::{apply_update, StepAccumulator, StepLoss};
use crate::tasks::pretrain::loss_parts;

pub mod detector;
pub mod replicas;
pub mod settings;

use settings::median;
pub use settings::{BenchConfig, BenchInputs, Measurement, MeasurementKind, StepPhases};

/// Samples the memory a backend holds, in bytes (`None` where it cannot tell).
pub type MemoryProbe<'a> = &'a dyn Fn() -> Option<u64>;

/// What [`run_benchmark`] measured.
#[derive(Debug, Clone)]
pub struct BenchOutcome {
    /// One entry per measurement, in the order run.
    pub measurements: Vec<Measurement>,
    /// The largest value the memory probe returned (sampled after every run, and after the
    /// step's forward with `phases`).
    pub peak_memory_bytes: Option<u64>,
    /// The backend's name for its device.
    pub device: String,
    /// Parameters of the model.
    pub parameters: usize,
    /// Mean of the step's total loss over the timed runs (a sanity value: finite).
    pub step_loss: Option<f64>,
}

/// Runs every measurement of `config` on backend `B`.
pub fn run_benchmark<B: AutodiffBackend>(
    config: &BenchConfig,
    device: &B::Device,
    memory: MemoryProbe,
) -> Result<BenchOutcome, TrainError> {
    config.validate()?;
    B::seed(device, 0x5EED);
    let mut model = FiberModel::<B>::new(&config.model, false, device)?.clamp_temperature();
    let parameters = model.num_params();
    let inputs = BenchInputs::<B>::new(
        config.batch,
        config.text_len,
        config.model.roberta.vocab_size,
        config.model.swin.image_size,
        device,
    );
    let batch = &inputs.batch;
    let mut rng = StdRng::seed_from_u64(7);
    let mut peak: Option<u64> = None;
    let sample_memory = |peak: &mut Option<u64>| {
        if let Some(bytes) = memory() {
            *peak = Some(peak.map_or(bytes, |p| p.max(bytes)));
        }
    };
    let sync = |what: &str| B::sync(device).map_err(|e| TrainError::Device(format!("{what}: {e}")));
    let mut measurements = Vec::new();
    let mut step_losses = Vec::new();
    let runs = config.warmup + config.reps;
    for kind in config.measurements() {
        let mut times = Vec::with_capacity(config.reps);
        let mut cpu = CpuClock::default();
        let mut phases: [Vec<f64>; 3] = Default::default();
        match kind {
            MeasurementKind::Step => {
                let mut optimizer =
                    AdamW::<B::InnerBackend>::new(AdamWConfig::new(), ParamGroups::fiber(5.0));
                for run in 0..runs {
                    // The step as training runs it (`stage`): everything queued, one read of
                    // the loss, its parts and the gradient norm before the update. With
                    // `phases` the device is also synchronised after the forward and backward.
                    let phase_end = |what: &str| -> Result<Option<Instant>, TrainError> {
                        if !config.phases {
                            return Ok(None);
                        }
                        sync(what)?;
                        Ok(Some(Instant::now()))
                    };
                    let start = Instant::now();
                    cpu.start(run >= config.warmup);
                    let losses = model.pretrain_losses(batch, &mut rng);
                    let micro = StepLoss {
                        parts: loss_parts(&losses),
                        loss: losses.total,
                    };
                    let forward_end = phase_end("forward")?;
                    // Sampled while the graph is alive, outside the timed phases.
                    let pause = forward_end.map(|end| {
                        sample_memory(&mut peak);
                        Instant::now() - end
                    });
                    let mut accumulator = StepAccumulator::<B>::default();
                    accumulator.add(&mut model, &optimizer, micro);
                    let prepared = accumulator.prepare(&optimizer);
                    let backward_end = phase_end("backward")?;
                    let (scalars, gradients) = prepared.read()?;
                    if !scalars.loss.is_finite() {
                        return Err(TrainError::NonFinite(format!(
                            "the benchmark's step loss is {}",
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
                    sync("training step")?;
                    let end = Instant::now();
                    cpu.stop();
                    sample_memory(&mut peak);
                    if run >= config.warmup {
                        let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1000.0;
                        let paused = pause.map_or(0.0, |p| p.as_secs_f64() * 1000.0);
                        times.push(ms(start, end) - paused);
                        step_losses.push(scalars.loss);
                        if let (Some(f), Some(b)) = (forward_end, backward_end) {
                            phases[0].push(ms(start, f));
                            phases[1].push(ms(f, b) - paused);
                            phases[2].push(ms(b, end));
                        }
                    }
                }
            }
            MeasurementKind::StepForward => {
                for run in 0..runs {
                    let start = Instant::now();
                    cpu.start(run >= config.warmup);
                    let total = model.pretrain_losses(batch, &mut rng).total;
                    let _ = total.clone().into_scalar();
                    sync("step forward")?;
                    cpu.stop();
                    let ms = start.elapsed().as_secs_f64() * 1000.0;
                    sample_memory(&mut peak);
                    // Burn 0.21's autodiff frees a graph only in a backward pass through it: a
                    // graph that is only dropped stays alive with the parameters it reaches,
                    // one more whole forward's activations per run. The untimed backward pass
                    // releases it.
                    drop(total.backward());
                    if run >= config.warmup {
                        times.push(ms);
                    }
                }
            }
            MeasurementKind::FusedInference
            | MeasurementKind::DualImage
            | MeasurementKind::DualText => {
                let frozen = model.valid();
                let pixels = batch.pixels.clone().inner();
                let ids = batch.input_ids.clone().inner();
                let mask = batch.attention_mask.clone().inner();
                for run in 0..runs {
                    let start = Instant::now();
                    cpu.start(run >= config.warmup);
                    let out = match kind {
                        MeasurementKind::FusedInference => {
                            let fused = frozen.backbone.forward_fused(
                                pixels.clone(),
                                ids.clone(),
                                mask.clone(),
                            );
                            frozen.itm_score.score(frozen.cls_feats(&fused))
                        }
                        MeasurementKind::DualImage => frozen
                            .itc_image_features(&frozen.backbone.image_prefix(pixels.clone()))
                            .sum(),
                        _ => frozen
                            .itc_text_features(
                                &frozen.backbone.text_prefix(ids.clone(), mask.clone()),
                            )
                            .sum(),
                    };
                    let _ = out.sum().into_scalar();
                    sync(kind.name())?;
                    cpu.stop();
                    let ms = start.elapsed().as_secs_f64() * 1000.0;
                    sample_memory(&mut peak);
                    if run >= config.warmup {
                        times.push(ms);
                    }
                }
            }
        }
        let wall_ms: f64 = times.iter().sum();
        let mut measurement = Measurement::new(kind, config.batch, times);
        measurement.cores_busy = cpu.seconds.map(|s| s * 1000.0 / wall_ms);
        if !phases[0].is_empty() {
            let [forward, backward, optimizer] = phases.map(median);
            measurement.phases_ms = Some(StepPhases {
                forward,
                backward,
                optimizer,
            });
        }
        measurements.push(measurement);
    }
    let step_loss = (!step_losses.is_empty())
        .then(|| step_losses.iter().sum::<f64>() / step_losses.len() as f64);
    Ok(BenchOutcome {
        measurements,
        peak_memory_bytes: peak,
        device: format!("{device:?}"),
        parameters,
        step_loss,
    })
}

/// The process's CPU time summed over the timed runs (`None` once any reading failed).
struct CpuClock {
    seconds: Option<f64>,
    started: Option<f64>,
}

impl Default for CpuClock {
    fn default() -> Self {
        Self {
            seconds: Some(0.0),
            started: None,
        }
    }
}

impl CpuClock {
    /// Starts a run's reading when `timed`.
    fn start(&mut self, timed: bool) {
        self.started = if timed { process_cpu_seconds() } else { None };
        if timed && self.started.is_none() {
            self.seconds = None;
        }
    }

    /// Adds the CPU time since [`CpuClock::start`] (nothing for an untimed run).
    fn stop(&mut self) {
        if let Some(started) = self.started.take() {
            self.seconds = match (self.seconds, process_cpu_seconds()) {
                (Some(total), Some(now)) => Some(total + now - started),
                _ => None,
            };
        }
    }
}

/// CPU time this process has used so far, user and system over all its threads, in seconds
/// (`utime` + `stime` of `/proc/self/stat`, in Linux's fixed 100 ticks per second; Linux
/// only).
pub fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) is parenthesised and may hold spaces: fields 14 and 15
    // (utime, stime) are the 12th and 13th after its closing parenthesis.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

/// Peak resident memory of this process in bytes (`VmHWM` in `/proc/self/status`; Linux only).
pub fn process_peak_memory() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
