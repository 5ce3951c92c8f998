//! Throughput of the fine-grained training step (`cargo xtask bench --model fiber-detect-train`):
//! the detector's forward on random pixels and prompt tokens, ATSS targets for fixed boxes, the
//! grounding + GIoU + centerness loss, the backward pass and the AdamW update with the
//! fine-grained stage's parameter groups and frozen keys, as `--stage fine` runs it (one read
//! from the device per step). `bench/detector.py --train` times the same step in PyTorch.

use std::time::Instant;

use burn::module::Module;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Distribution;
use fiber_heads::grounding::atss::{DetectionLossConfig, ImageTargets};
use fiber_heads::grounding::loss::batch_losses;
use fiber_heads::grounding::{DetectorConfig, GroundingDetector};

use crate::config::StageConfig;
use crate::error::TrainError;
use crate::model_io::VisitWeights;
use crate::optim::{AdamW, Freeze, ParamGroups};
use crate::step::{apply_update, StepAccumulator, StepLoss};

/// Boxes per image of the benchmark's ground truth.
pub const BENCH_BOXES: usize = 4;

/// The benchmark's ground truth on a `height × width` input with `len` prompt tokens: box `k`
/// of [`BENCH_BOXES`] a quarter of the image wide and high on the diagonal, named by tokens
/// `1 + 3k … 3 + 3k` (the rule `bench/detector.py` repeats).
pub fn bench_targets(height: usize, width: usize, len: usize) -> ImageTargets {
    let (h, w) = (height as f32, width as f32);
    let mut targets = ImageTargets::default();
    for k in 0..BENCH_BOXES {
        let f = k as f32 / BENCH_BOXES as f32;
        targets
            .boxes
            .push([f * w, f * h, (f + 0.25) * w, (f + 0.25) * h]);
        let mut row = vec![0.0; len];
        for t in 1 + 3 * k..(4 + 3 * k).min(len) {
            row[t] = 1.0;
        }
        targets.positive_map.push(row);
    }
    targets
}

/// What the step benchmark measured.
#[derive(Debug, Clone)]
pub struct DetectorStepTiming {
    /// Milliseconds of each timed step, ascending.
    pub runs_ms: Vec<f64>,
    /// Parameters of the detector.
    pub parameters: usize,
    /// The last step's total loss (a sanity value: finite).
    pub loss: f64,
}

/// Times `reps` fine-grained training steps (after `warmup`) of the detector of `config` at
/// batch `batch` on `height × width` inputs (multiples of 32) with `len`-token prompts, with the
/// optimisation of `stage` (its groups, frozen keys, clipping) at its base rate.
#[allow(clippy::too_many_arguments)]
pub fn detector_step_timing<B: AutodiffBackend>(
    config: &DetectorConfig,
    stage: &StageConfig,
    (height, width): (usize, usize),
    batch: usize,
    len: usize,
    warmup: usize,
    reps: usize,
    device: &B::Device,
) -> Result<DetectorStepTiming, TrainError> {
    B::seed(device, 0x5EED);
    let mut model = GroundingDetector::<B>::new(config, device)?;
    let parameters = model.num_params();
    let groups = ParamGroups::detector(
        stage.text_lr_multiplier,
        stage.bias_lr_multiplier,
        stage.frozen.clone(),
    );
    model.visit_weights_with(&mut Freeze {
        groups: &groups,
        frozen: 0,
        trainable: Vec::new(),
    });
    let mut optimizer = AdamW::<B::InnerBackend>::new(stage.optimizer.clone(), groups);
    let pixels = Tensor::<B, 4>::random(
        [batch, 3, height, width],
        Distribution::Normal(0.0, 1.0),
        device,
    );
    let vocab = config.backbone.roberta.vocab_size as f64;
    let ids = Tensor::<B, 2, Int>::random([batch, len], Distribution::Uniform(3.0, vocab), device);
    let mask = Tensor::<B, 2, Int>::ones([batch, len], device);
    let images = vec![bench_targets(height, width, len); batch];
    let loss_config = DetectionLossConfig::new();
    let mut step = |model: &mut GroundingDetector<B>| -> Result<(f64, f64), TrainError> {
        let start = Instant::now();
        let output = model.forward(pixels.clone(), ids.clone(), mask.clone());
        let (_, losses) = batch_losses(
            &output,
            mask.clone(),
            &images,
            &loss_config,
            &config.box_coder,
        )?;
        let mut accumulator = StepAccumulator::<B>::default();
        accumulator.add(
            model,
            &optimizer,
            StepLoss {
                loss: losses.total(&loss_config),
                parts: Vec::new(),
            },
        );
        let (scalars, gradients) = accumulator.prepare(&optimizer).read()?;
        apply_update(
            &mut optimizer,
            model,
            stage.lr,
            gradients,
            scalars.grad_norm,
        )?;
        let _ = B::sync(device);
        Ok((start.elapsed().as_secs_f64() * 1000.0, scalars.loss))
    };
    for _ in 0..warmup {
        step(&mut model)?;
    }
    let mut runs_ms = Vec::with_capacity(reps);
    let mut loss = f64::NAN;
    for _ in 0..reps {
        let (ms, l) = step(&mut model)?;
        runs_ms.push(ms);
        loss = l;
    }
    runs_ms.sort_by(f64::total_cmp);
    Ok(DetectorStepTiming {
        runs_ms,
        parameters,
        loss,
    })
}
