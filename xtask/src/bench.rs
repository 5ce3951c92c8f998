//! `cargo xtask bench`: forward-pass timings of the backbones on any compiled backend, with
//! warm-up, repetitions, median and spread, printed as a table and optionally written as JSON.
//! Weights are random: speed does not depend on their values.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use burn::module::AutodiffModule;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Distribution;
use clap::{Args, ValueEnum};
use fiber_fusion::{FiberBackbone, FiberConfig};
use fiber_roberta::{RobertaConfig, RobertaModel};
use fiber_swin::{SwinConfig, SwinModel};
use fiber_train::{run_on, BackendJob, BackendKind};

/// Which model to time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchModel {
    /// Swin-B at 384 px, window 12 (FIBER's image backbone).
    SwinBase384,
    /// Swin-T at 224 px, window 7.
    SwinTiny224,
    /// RoBERTa-base on 40-token texts (FIBER's pre-training length).
    RobertaBase,
    /// FIBER-Base fused forward from pixels and 40-token texts (Swin-B/384 + RoBERTa-base,
    /// 6 fused pairs).
    FiberBase384Fused,
    /// FIBER-Base dual-encoder forward (image-only and text-only paths).
    FiberBase384Dual,
    /// The data pipeline alone: decoding, transforms and collation through the prefetching
    /// loader, in images/s (`--data`, `--transform`, `--image-size`).
    Data,
}

/// Transform timed by `--model data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchTransform {
    /// Square bicubic resize + normalisation (coarse pre-training, evaluation).
    Resize,
    /// RandomResizedCrop + flip + RandAugment + normalisation (fine-tuning).
    Augment,
}

/// Arguments of `bench`.
#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// The model to time.
    #[arg(long, value_enum, default_value = "swin-base384")]
    pub model: BenchModel,
    /// Batch size.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Untimed runs before measuring.
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Timed runs.
    #[arg(long, default_value_t = 5)]
    pub reps: usize,
    /// Compute backend.
    #[arg(long, default_value = "ndarray")]
    pub backend: BackendKind,
    /// Also write the result as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// `--model data`: a Karpathy-format folder (`dataset_*.json`); the built-in shapes world
    /// (generated under `data/shapes` when missing) by default.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// `--model data`: the transform.
    #[arg(long, value_enum, default_value = "resize")]
    pub transform: BenchTransform,
    /// `--model data`: output image side.
    #[arg(long, default_value_t = 384)]
    pub image_size: usize,
}

/// Timing statistics in milliseconds.
#[derive(Debug, Clone)]
pub struct Timing {
    /// Every timed run, sorted.
    pub runs_ms: Vec<f64>,
}

impl Timing {
    /// Median run.
    pub fn median(&self) -> f64 {
        let n = self.runs_ms.len();
        if n % 2 == 1 {
            self.runs_ms[n / 2]
        } else {
            (self.runs_ms[n / 2 - 1] + self.runs_ms[n / 2]) / 2.0
        }
    }
}

/// Runs the benchmark and prints (and optionally writes) the result.
pub fn run(args: BenchArgs) -> Result<()> {
    anyhow::ensure!(
        args.reps > 0 && args.batch > 0,
        "--reps and --batch must be positive"
    );
    let timing = if args.model == BenchModel::Data {
        data_pipeline(&args)?
    } else {
        run_on(args.backend, BenchJob(args.clone()))?
    };
    let median = timing.median();
    let (min, max) = (timing.runs_ms[0], *timing.runs_ms.last().unwrap_or(&median));
    let name = match args.model {
        BenchModel::Data => format!("Data ({:?} to {} px)", args.transform, args.image_size),
        model => format!("{model:?}"),
    };
    let backend = match args.model {
        BenchModel::Data => format!("cpu, {} threads", rayon::current_num_threads()),
        _ => args.backend.to_string(),
    };
    println!("| model | backend | batch | median ms | min ms | max ms | items/s |");
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| {name} | {backend} | {} | {median:.1} | {min:.1} | {max:.1} | {:.2} |",
        args.batch,
        args.batch as f64 * 1000.0 / median
    );
    if let Some(path) = &args.json {
        let json = serde_json::json!({
            "model": name, "backend": backend, "batch": args.batch, "warmup": args.warmup, "reps": args.reps,
            "median_ms": median, "min_ms": min, "max_ms": max, "runs_ms": timing.runs_ms,
        });
        std::fs::write(path, format!("{json:#}\n"))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

struct BenchJob(BenchArgs);

impl BackendJob for BenchJob {
    type Output = Timing;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Timing {
        let args = self.0;
        match args.model {
            BenchModel::SwinBase384 | BenchModel::SwinTiny224 => {
                let config = if args.model == BenchModel::SwinBase384 {
                    SwinConfig::swin_base_384()
                } else {
                    SwinConfig::swin_tiny_224()
                };
                let model = SwinModel::<B>::new(&config, &device).valid();
                let size = config.image_size;
                let pixels = Tensor::<B::InnerBackend, 4>::random(
                    [args.batch, 3, size, size],
                    Distribution::Normal(0.0, 1.0),
                    &device,
                );
                time_runs(&args, &device, || {
                    model.forward(pixels.clone()).pooler_output
                })
            }
            BenchModel::FiberBase384Fused | BenchModel::FiberBase384Dual => {
                let config = FiberConfig::fiber_base_384();
                let model = FiberBackbone::<B>::new(&config, false, &device)
                    .expect("the FIBER-Base preset is valid")
                    .valid();
                let size = config.swin.image_size;
                let pixels = Tensor::<B::InnerBackend, 4>::random(
                    [args.batch, 3, size, size],
                    Distribution::Normal(0.0, 1.0),
                    &device,
                );
                let ids = Tensor::<B::InnerBackend, 2, Int>::random(
                    [args.batch, 40],
                    Distribution::Uniform(3.0, 50000.0),
                    &device,
                );
                let mask = Tensor::<B::InnerBackend, 2, Int>::ones([args.batch, 40], &device);
                let fused = args.model == BenchModel::FiberBase384Fused;
                time_runs(&args, &device, || {
                    let out = if fused {
                        model.forward_fused(pixels.clone(), ids.clone(), mask.clone())
                    } else {
                        model.forward_dual(pixels.clone(), ids.clone(), mask.clone())
                    };
                    out.text.sum() + out.image.tokens.sum()
                })
            }
            BenchModel::Data => unreachable!("the data pipeline runs without a backend"),
            BenchModel::RobertaBase => {
                let config = RobertaConfig::roberta_base();
                let model = RobertaModel::<B>::new(&config, true, &device).valid();
                let ids = Tensor::<B::InnerBackend, 2, Int>::random(
                    [args.batch, 40],
                    Distribution::Uniform(3.0, 50000.0),
                    &device,
                );
                let mask = Tensor::<B::InnerBackend, 2, Int>::ones([args.batch, 40], &device);
                time_runs(&args, &device, || {
                    model
                        .forward(ids.clone(), mask.clone(), false)
                        .last_hidden_state
                })
            }
        }
    }
}

/// Times `forward` (synchronising the device, and reading one value back so lazy backends
/// must finish the work).
fn time_runs<B: Backend, const D: usize>(
    args: &BenchArgs,
    device: &B::Device,
    forward: impl Fn() -> Tensor<B, D>,
) -> Timing {
    let once = || {
        let start = Instant::now();
        let out = forward();
        let _ = out.sum().into_scalar();
        let _ = B::sync(device);
        start.elapsed().as_secs_f64() * 1000.0
    };
    for _ in 0..args.warmup {
        once();
    }
    let mut runs_ms: Vec<f64> = (0..args.reps).map(|_| once()).collect();
    runs_ms.sort_by(f64::total_cmp);
    Timing { runs_ms }
}

/// Times batches of `--batch` images through the prefetching loader (decode, transform,
/// normalise, tokenise) on all cores; each timed run is one batch.
fn data_pipeline(args: &BenchArgs) -> Result<Timing> {
    use fiber_data::loader::{ImageTransform, Loader, LoaderConfig, LoaderPosition};
    use fiber_data::randaugment::RandAugment;
    let dir = match &args.data {
        Some(dir) => dir.clone(),
        None => {
            let dir = PathBuf::from("data/shapes");
            fiber_data::shapes::write_shapes_world(
                &fiber_data::shapes::ShapesWorldConfig::new(),
                &dir,
            )?;
            dir
        }
    };
    let file = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("dataset_") && n.ends_with(".json"))
        })
        .with_context(|| format!("no dataset_*.json in {}", dir.display()))?;
    let mut problems = fiber_data::Problems::default();
    let data = fiber_data::read_karpathy(&file, &dir, &mut problems)?;
    let paths: Vec<PathBuf> = data.images.iter().map(|i| i.path.clone()).collect();
    anyhow::ensure!(
        paths.len() >= args.batch,
        "{} has fewer images than one batch",
        dir.display()
    );
    let transform = match args.transform {
        BenchTransform::Resize => ImageTransform::Resize {
            size: args.image_size,
        },
        BenchTransform::Augment => ImageTransform::Augment {
            size: args.image_size,
            randaugment: Some(RandAugment::default()),
        },
    };
    let config = LoaderConfig {
        prefetch: 4,
        ..LoaderConfig::new(args.batch, 0)
    };
    let mut loader = Loader::spawn(
        paths.len(),
        config,
        LoaderPosition::default(),
        move |i, rng| transform.load(&paths[i], rng),
        |samples, _| Ok(samples.len()),
    )?;
    for _ in 0..args.warmup {
        loader.next_batch()?;
    }
    let mut runs_ms = Vec::with_capacity(args.reps);
    for _ in 0..args.reps {
        let start = Instant::now();
        loader.next_batch()?;
        runs_ms.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    runs_ms.sort_by(f64::total_cmp);
    Ok(Timing { runs_ms })
}
