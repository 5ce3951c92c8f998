//! `cargo xtask bench`: throughput of the coarse FIBER model on any compiled backend and
//! precision (the full pre-training step, its forward, fused pair scoring, dual-encoder
//! encoding; [`fiber_train::benchmark`]), optionally side by side with the PyTorch reference
//! `bench/reference.py` run on the same machine; and forward-pass timings of single backbones
//! and of the data pipeline (`--model`). Printed as tables and written as JSON. Weights are
//! random: speed does not depend on their values.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use burn::module::AutodiffModule;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Distribution;
use clap::{Args, ValueEnum};
use fiber_fusion::{FiberBackbone, FiberConfig};
use fiber_heads::grounding::{DetectorConfig, GroundingDetector};
use fiber_roberta::{RobertaConfig, RobertaModel};
use fiber_swin::{SwinConfig, SwinModel};
use fiber_train::benchmark::replicas::{run_scaling, ScalingRun};
use fiber_train::benchmark::{run_benchmark, BenchConfig, BenchOutcome, Measurement};
use fiber_train::config::RunConfig;
use fiber_train::replica::{DeviceSpec, ReplicaConfig};
use fiber_train::{
    check_backend, run_on, run_on_with, BackendJob, BackendKind, Checkpointing, Precision,
    TrainError,
};
use serde_json::{json, Value};

/// A single component to time instead of the FIBER suite.
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
    /// FIBER-Base's grounding detector (backbone, FPN, DyHead, outputs) in eval mode on one
    /// `--detect-size` image (padded up to multiples of 32, as the original pads) and a
    /// 256-token prompt (GLIP's query length).
    FiberDetectBase,
    /// The fine-grained training step (`--preset tiny|base`): detector forward on one
    /// `--detect-size` input per image with a full-length prompt, ATSS targets for fixed boxes,
    /// the three losses, backward and AdamW with the stage's groups and frozen keys;
    /// `--reference` (base) times `bench/detector.py --train` alongside.
    FiberDetectTrain,
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

/// Model presets of the FIBER suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchPreset {
    /// The tiny training preset's model; batch 32, 32 tokens.
    Tiny,
    /// Swin-B/384 + RoBERTa-base, 6 fused pairs; batch 16, 40 tokens.
    Base,
}

/// Arguments of `bench`.
#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// The FIBER suite's model preset (ignored with `--model`).
    #[arg(long, value_enum, default_value = "tiny")]
    pub preset: BenchPreset,
    /// Time one component instead of the FIBER suite.
    #[arg(long, value_enum)]
    pub model: Option<BenchModel>,
    /// Batch size (the suite's preset batch when absent; 1 for `--model`).
    #[arg(long)]
    pub batch: Option<usize>,
    /// Suite: tokens per text (the preset's when absent).
    #[arg(long)]
    pub text_len: Option<usize>,
    /// Suite: only these measurements (comma-separated: step, step_forward, fused_inference,
    /// dual_image, dual_text).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Suite: also time the training step's phases (forward, backward, update), synchronising
    /// the device between them (both frameworks); the step's time then includes those waits.
    #[arg(long)]
    pub phases: bool,
    /// Untimed runs before measuring.
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Timed runs.
    #[arg(long, default_value_t = 5)]
    pub reps: usize,
    /// Compute backend.
    #[arg(long, default_value = "ndarray")]
    pub backend: BackendKind,
    /// Suite: float precision (bf16 and f16 need a GPU backend).
    #[arg(long, default_value = "f32")]
    pub precision: Precision,
    /// Suite: recompute the outputs of memory-bound operations in the backward pass instead of
    /// keeping them (Burn's balanced activation checkpointing): less memory, more time.
    #[arg(long)]
    pub checkpointing: bool,
    /// Suite: also run `bench/reference.py` (PyTorch) with the same model, batch, inputs and
    /// precision on the same device, and print the ratios.
    #[arg(long)]
    pub reference: bool,
    /// The device's peak dense throughput in TFLOP/s at the chosen precision, to report the
    /// training step's model-FLOP utilisation (with `--reference`, which counts the FLOPs).
    #[arg(long)]
    pub peak_tflops: Option<f64>,
    /// Python interpreter for `--reference`.
    #[arg(long, default_value = "python3")]
    pub python: String,
    /// Extra arguments passed to `bench/reference.py` (e.g. `--attention sdpa`).
    #[arg(long, allow_hyphen_values = true)]
    pub reference_args: Option<String>,
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
    /// `--model fiber-detect-base`: the image's height and width, `HxW` (padded up to
    /// multiples of 32).
    #[arg(long, default_value = "800x1333", value_parser = parse_size)]
    pub detect_size: (usize, usize),
    /// Data-parallel scaling instead of the suite: the pre-training step's pairs/s on one
    /// replica and on these (a count or a list such as `cuda:0,cuda:1`, as `train --devices`),
    /// with gradients all-reduced in flat buckets and one tensor at a time; `--batch` is per
    /// replica.
    #[arg(long)]
    pub devices: Option<DeviceSpec>,
}

/// `HxW` → (H, W).
fn parse_size(text: &str) -> Result<(usize, usize), String> {
    let (h, w) = text
        .split_once(['x', '×'])
        .ok_or_else(|| format!("`{text}` is not HxW (e.g. 800x1333)"))?;
    let side = |s: &str| {
        s.trim()
            .parse::<usize>()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| format!("`{s}` in `{text}` is not a positive size"))
    };
    Ok((side(h)?, side(w)?))
}

/// `n` rounded up to a multiple of 32 (the detector's batch padding).
fn pad32(n: usize) -> usize {
    n.div_ceil(32) * 32
}

/// Tokens of the detector benchmark's prompt (GLIP pads every prompt to 256).
const DETECT_PROMPT_LEN: usize = 256;

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

/// Runs the FIBER suite (or one component with `--model`), prints the result and writes
/// the JSON.
pub fn run(args: BenchArgs) -> Result<()> {
    anyhow::ensure!(
        args.reps > 0 && args.batch != Some(0),
        "--reps and --batch must be positive"
    );
    if args.devices.is_some() {
        return run_scaling_bench(args);
    }
    match args.model {
        Some(BenchModel::FiberDetectTrain) => run_detector_step(args),
        Some(model) => run_component(args, model),
        None => run_suite(args),
    }
}

/// The suite's settings for `args`.
pub fn suite_config(args: &BenchArgs) -> Result<BenchConfig> {
    let preset = match args.preset {
        BenchPreset::Tiny => "tiny",
        BenchPreset::Base => "base",
    };
    let mut config = BenchConfig::preset(preset)?
        .with_warmup(args.warmup)
        .with_reps(args.reps)
        .with_only(args.only.clone())
        .with_phases(args.phases);
    if let Some(batch) = args.batch {
        config.batch = batch;
    }
    if let Some(len) = args.text_len {
        config.text_len = len;
    }
    config.validate()?;
    Ok(config)
}

/// The FIBER suite on `--backend` in `--precision`, then (with `--reference`) the PyTorch
/// reference on the same settings.
fn run_suite(args: BenchArgs) -> Result<()> {
    let config = suite_config(&args)?;
    // An unusable backend or precision is refused before the reference runs.
    check_backend(args.backend, args.precision).map_err(|e| anyhow::anyhow!(e))?;
    let checkpointing = Checkpointing::when(args.checkpointing);
    // The reference runs first, while this process holds no model: the two never compete for
    // memory.
    let reference = if args.reference {
        Some(run_reference(&args, &config)?)
    } else {
        None
    };
    let job = SuiteJob {
        config: config.clone(),
        backend: args.backend,
    };
    let outcome = run_on_with(args.backend, args.precision, checkpointing, job)
        .map_err(|e| anyhow::anyhow!(e))??;
    let ours = suite_json(&config, &args, &outcome);
    print_suite(&ours);
    let mut result = json!({ "fiber_rs": ours });
    if let Some(reference) = reference {
        print_comparison(&result["fiber_rs"], &reference);
        if let Some(utilisation) =
            step_utilisation(&result["fiber_rs"], &reference, args.peak_tflops)
        {
            result["step_flops"] = utilisation;
        }
        result["pytorch"] = reference;
    }
    if let Some(path) = &args.json {
        write_json(path, &result)?;
    }
    Ok(())
}

/// The suite's report as JSON: the settings, the device, every measurement and the memory.
fn suite_json(config: &BenchConfig, args: &BenchArgs, outcome: &BenchOutcome) -> Value {
    let threads = cpu_threads(args.backend);
    json!({
        "framework": format!("fiber-rs {} (burn 0.21)", env!("CARGO_PKG_VERSION")),
        "preset": config.preset, "backend": args.backend.name(), "precision": args.precision.name(),
        "checkpointing": args.checkpointing,
        "device": outcome.device, "threads": threads,
        "batch": config.batch, "text_len": config.text_len, "image_size": config.model.swin.image_size,
        "warmup": config.warmup, "reps": config.reps, "parameters": outcome.parameters,
        "model": config.model, "step_loss": outcome.step_loss,
        "peak_memory_bytes": outcome.peak_memory_bytes,
        "memory_measure": memory_measure(args.backend),
        "measurements": outcome.measurements,
    })
}

/// Threads a CPU backend computes with (`None` on a GPU).
fn cpu_threads(backend: BackendKind) -> Option<usize> {
    (backend == BackendKind::Ndarray).then(rayon::current_num_threads)
}

/// What the memory figure of `backend` measures.
fn memory_measure(backend: BackendKind) -> &'static str {
    match backend {
        BackendKind::Ndarray => "process peak resident memory (VmHWM)",
        _ => "device memory reserved by the allocator, largest value sampled after every run (and after the step's forward with --phases)",
    }
}

fn write_json(path: &Path, value: &Value) -> Result<()> {
    std::fs::write(path, format!("{value:#}\n"))
        .with_context(|| format!("writing {}", path.display()))
}

/// Prints one report (ours or the reference's) as a table.
fn print_suite(report: &Value) {
    println!(
        "{} | {} {} | preset {} | batch {} | text {} | image {} px | {} parameters{}{}",
        report["framework"].as_str().unwrap_or("?"),
        report["backend"].as_str().unwrap_or("?"),
        report["precision"].as_str().unwrap_or("?"),
        report["preset"].as_str().unwrap_or("?"),
        report["batch"],
        report["text_len"],
        report["image_size"],
        report["parameters"],
        report["threads"]
            .as_u64()
            .map(|t| format!(" | {t} threads"))
            .unwrap_or_default(),
        if report["checkpointing"] == true {
            " | activation checkpointing"
        } else {
            ""
        },
    );
    println!("| measurement | median ms | min ms | max ms | per second | cores busy |");
    println!("|---|---|---|---|---|---|");
    for m in measurements(report) {
        println!(
            "| {} | {:.1} | {:.1} | {:.1} | {:.2} {} | {} |",
            m.name,
            m.median_ms,
            m.min_ms(),
            m.max_ms(),
            m.per_second,
            m.unit,
            cores_busy(&m)
        );
    }
    for m in measurements(report) {
        if let Some(p) = m.phases_ms {
            println!(
                "{} phases: forward {:.1} ms, backward {:.1} ms, optimiser {:.1} ms",
                m.name, p.forward, p.backward, p.optimizer
            );
        }
    }
    if let Some(bytes) = report["peak_memory_bytes"].as_u64() {
        println!(
            "peak memory {:.2} GiB ({})",
            bytes as f64 / (1u64 << 30) as f64,
            report["memory_measure"].as_str().unwrap_or("?")
        );
    }
}

/// A measurement's CPU utilisation for the tables ("—" where not measured).
fn cores_busy(m: &Measurement) -> String {
    m.cores_busy
        .map_or_else(|| "—".to_string(), |c| format!("{c:.2}"))
}

fn measurements(report: &Value) -> Vec<Measurement> {
    serde_json::from_value(report["measurements"].clone()).unwrap_or_default()
}

/// Prints fiber-rs against the reference, measurement by measurement: the speed ratio is
/// fiber-rs items/s over PyTorch items/s (above 1: fiber-rs is faster).
fn print_comparison(ours: &Value, reference: &Value) {
    println!(
        "| measurement | fiber-rs ms | PyTorch ms | fiber-rs per s | PyTorch per s | speed ratio | cores busy (fiber-rs / PyTorch) |"
    );
    println!("|---|---|---|---|---|---|---|");
    let theirs = measurements(reference);
    for m in measurements(ours) {
        let Some(r) = theirs.iter().find(|r| r.name == m.name) else {
            continue;
        };
        println!(
            "| {} | {:.1} | {:.1} | {:.2} | {:.2} | {:.2}× | {} / {} |",
            m.name,
            m.median_ms,
            r.median_ms,
            m.per_second,
            r.per_second,
            m.per_second / r.per_second,
            cores_busy(&m),
            cores_busy(r)
        );
    }
    for r in theirs
        .iter()
        .filter(|r| r.name.starts_with("step_prefix_reuse"))
    {
        println!(
            "| {} (PyTorch only) | | {:.1} | | {:.2} | | — / {} |",
            r.name,
            r.median_ms,
            r.per_second,
            cores_busy(r)
        );
    }
}

/// The training step's FLOPs per pair (counted by the reference: the original step and the
/// step with prefix reuse, which is what fiber-rs computes), the throughput each framework
/// reaches in TFLOP/s and, given the device's peak, the model-FLOP utilisation. Printed and
/// returned as JSON; `None` when the reference counted no FLOPs.
fn step_utilisation(ours: &Value, reference: &Value, peak_tflops: Option<f64>) -> Option<Value> {
    let find = |report: &Value, name: &str| {
        report["measurements"]
            .as_array()?
            .iter()
            .find(|m| m["name"] == name)
            .cloned()
    };
    let original = find(reference, "step")?;
    let reuse = find(reference, "step_prefix_reuse")?;
    let ours = find(ours, "step")?;
    let gflop = |m: &Value| m["gflop_per_pair"].as_f64();
    let rate = |m: &Value| m["per_second"].as_f64();
    let (original_gflop, reuse_gflop) = (gflop(&original)?, gflop(&reuse)?);
    let rows = [
        ("fiber-rs step (prefix reuse)", reuse_gflop, rate(&ours)?),
        ("PyTorch step (original)", original_gflop, rate(&original)?),
        ("PyTorch step (prefix reuse)", reuse_gflop, rate(&reuse)?),
    ];
    let digits = |x: f64| if x < 10.0 { 3 } else { 1 };
    println!(
        "model FLOPs per pair: {original_gflop:.0$} GFLOP for the original step, {reuse_gflop:.1$} with prefix reuse",
        digits(original_gflop),
        digits(reuse_gflop)
    );
    let mut out = Vec::new();
    for (name, gflop, pairs_per_second) in rows {
        let tflops = gflop * pairs_per_second / 1000.0;
        let utilisation = peak_tflops.map(|peak| tflops / peak);
        println!(
            "{name}: {tflops:.3} TFLOP/s{}",
            utilisation
                .map(|u| format!(", model-FLOP utilisation {:.1} %", 100.0 * u))
                .unwrap_or_default()
        );
        out.push(json!({
            "name": name, "gflop_per_pair": gflop, "pairs_per_second": pairs_per_second,
            "tflops": tflops, "utilisation": utilisation,
        }));
    }
    Some(json!({ "peak_tflops": peak_tflops, "rows": out }))
}

/// Runs `bench/reference.py` on the suite's settings and returns its report.
fn run_reference(args: &BenchArgs, config: &BenchConfig) -> Result<Value> {
    let script = PathBuf::from("bench/reference.py");
    if !script.is_file() {
        bail!(
            "--reference needs {} (run from the repository root)",
            script.display()
        );
    }
    let dir = tempfile::tempdir().context("creating a temporary folder")?;
    let settings = dir.path().join("bench-config.json");
    let output = dir.path().join("reference.json");
    let device = match args.backend {
        BackendKind::Cuda => "cuda",
        BackendKind::Ndarray => "cpu",
        BackendKind::Wgpu => bail!("the PyTorch reference has no wgpu device; use cuda or ndarray"),
    };
    let threads = cpu_threads(args.backend);
    write_json(
        &settings,
        &json!({
            "preset": config.preset, "model": config.model, "batch": config.batch,
            "text_len": config.text_len, "warmup": config.warmup, "reps": config.reps,
            "only": config.only, "precision": args.precision.name(), "device": device,
            "checkpointing": args.checkpointing, "phases": config.phases,
            "threads": threads,
        }),
    )?;
    let mut command = Command::new(&args.python);
    command
        .arg(&script)
        .arg("--config")
        .arg(&settings)
        .arg("--json")
        .arg(&output);
    if let Some(extra) = &args.reference_args {
        command.args(extra.split_whitespace());
    }
    let status = command
        .status()
        .with_context(|| format!("starting {} {}", args.python, script.display()))?;
    if !status.success() {
        bail!("{} failed ({status})", script.display());
    }
    let text = std::fs::read_to_string(&output)
        .with_context(|| format!("reading {}", output.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", output.display()))
}

/// The scaling measurements as a backend job: one replica, then the replicas of `devices`
/// with bucketed and with per-tensor gradient all-reduce.
struct ScalingJob {
    config: BenchConfig,
    devices: DeviceSpec,
}

impl BackendJob for ScalingJob {
    type Output = Result<Vec<ScalingRun>>;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        let devices = self.devices.devices::<B>(&device);
        let buckets = ReplicaConfig::new().bucket_elements;
        Ok(vec![
            run_scaling::<B>(&self.config, &devices[..1], buckets)?,
            run_scaling::<B>(&self.config, &devices, buckets)?,
            run_scaling::<B>(&self.config, &devices, 0)?,
        ])
    }
}

/// `bench --devices N`: pairs/s of the pre-training step on 1 and N replicas, the scaling
/// efficiency (N replicas' pairs/s over N × one replica's), bucketed against per-tensor
/// all-reduce; printed and written to `--json`.
fn run_scaling_bench(args: BenchArgs) -> Result<()> {
    let config = suite_config(&args)?;
    let devices = args.devices.clone().expect("--devices is given");
    anyhow::ensure!(
        devices.len() > 1,
        "--devices needs at least two replicas to measure scaling"
    );
    check_backend(args.backend, args.precision).map_err(|e| anyhow::anyhow!(e))?;
    let job = ScalingJob {
        config: config.clone(),
        devices,
    };
    let runs = run_on_with(
        args.backend,
        args.precision,
        Checkpointing::when(args.checkpointing),
        job,
    )
    .map_err(|e| anyhow::anyhow!(e))??;
    let single = runs[0].pairs_per_second;
    println!(
        "pre-training step, {} preset, batch {} per replica, {} {}{}",
        config.preset,
        config.batch,
        args.backend.name(),
        args.precision.name(),
        cpu_threads(args.backend)
            .map(|n| format!(", {n} CPU threads shared by the replicas"))
            .unwrap_or_default()
    );
    println!("| replicas | gradient all-reduce | step (ms) | pairs/s | scaling efficiency |");
    println!("|---|---|---|---|---|");
    let mut rows = Vec::new();
    for run in &runs {
        let efficiency = run.pairs_per_second / (run.replicas as f64 * single);
        let reduce = match (run.replicas, run.bucket_elements) {
            (1, _) => "none".to_string(),
            (_, 0) => "one call per tensor".to_string(),
            (_, n) => format!("buckets of {n} values"),
        };
        println!(
            "| {} | {reduce} | {:.1} | {:.2} | {:.2} |",
            run.replicas, run.step_ms, run.pairs_per_second, efficiency
        );
        rows.push(json!({
            "replicas": run.replicas, "bucket_elements": run.bucket_elements,
            "step_ms": run.step_ms, "pairs_per_second": run.pairs_per_second,
            "scaling_efficiency": efficiency,
        }));
    }
    if let Some(path) = &args.json {
        write_json(
            path,
            &json!({
                "framework": format!("fiber-rs {} (burn 0.21)", env!("CARGO_PKG_VERSION")),
                "preset": config.preset, "backend": args.backend.name(),
                "precision": args.precision.name(), "threads": cpu_threads(args.backend),
                "batch_per_replica": config.batch, "text_len": config.text_len,
                "warmup": config.warmup, "reps": config.reps, "scaling": rows,
            }),
        )?;
    }
    Ok(())
}

/// The suite as a backend job.
struct SuiteJob {
    config: BenchConfig,
    backend: BackendKind,
}

impl BackendJob for SuiteJob {
    type Output = Result<BenchOutcome>;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<BenchOutcome> {
        let probe = memory_probe(self.backend);
        Ok(run_benchmark::<B>(&self.config, &device, &*probe)?)
    }
}

/// How memory is read on `backend`: the process's peak resident memory on the CPU, the
/// allocator's reserved bytes on CUDA and wgpu.
fn memory_probe(backend: BackendKind) -> Box<dyn Fn() -> Option<u64>> {
    match backend {
        BackendKind::Ndarray => Box::new(fiber_train::benchmark::process_peak_memory),
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => Box::new(|| {
            use cubecl::Runtime;
            let client = cubecl::cuda::CudaRuntime::client(&Default::default());
            client.memory_usage().ok().map(|u| u.bytes_reserved)
        }),
        #[cfg(feature = "wgpu")]
        BackendKind::Wgpu => Box::new(|| {
            use cubecl::Runtime;
            let client = cubecl::wgpu::WgpuRuntime::client(&Default::default());
            client.memory_usage().ok().map(|u| u.bytes_reserved)
        }),
        #[allow(unreachable_patterns)]
        _ => Box::new(|| None),
    }
}

/// One component (`--model`): forward-pass time of a backbone or the data pipeline.
fn run_component(args: BenchArgs, model: BenchModel) -> Result<()> {
    let batch = args.batch.unwrap_or(1);
    let timing = if model == BenchModel::Data {
        data_pipeline(&args, batch)?
    } else {
        run_on(
            args.backend,
            BenchJob {
                args: args.clone(),
                model,
                batch,
            },
        )?
    };
    let median = timing.median();
    let (min, max) = (timing.runs_ms[0], *timing.runs_ms.last().unwrap_or(&median));
    let name = match model {
        BenchModel::Data => format!("Data ({:?} to {} px)", args.transform, args.image_size),
        BenchModel::FiberDetectBase => {
            let (h, w) = args.detect_size;
            format!(
                "FiberDetectBase ({h}×{w} padded to {}×{})",
                pad32(h),
                pad32(w)
            )
        }
        model => format!("{model:?}"),
    };
    let backend = match model {
        BenchModel::Data => format!("cpu, {} threads", rayon::current_num_threads()),
        _ => args.backend.to_string(),
    };
    println!("| model | backend | batch | median ms | min ms | max ms | items/s |");
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| {name} | {backend} | {batch} | {median:.1} | {min:.1} | {max:.1} | {:.2} |",
        batch as f64 * 1000.0 / median
    );
    if let Some(path) = &args.json {
        write_json(
            path,
            &json!({
                "model": name, "backend": backend, "batch": batch, "warmup": args.warmup, "reps": args.reps,
                "median_ms": median, "min_ms": min, "max_ms": max, "runs_ms": timing.runs_ms,
            }),
        )?;
    }
    Ok(())
}

/// The fine-grained stage's detector, optimisation and prompt length of `--preset`.
fn detector_step_settings(
    preset: BenchPreset,
) -> (DetectorConfig, fiber_train::config::StageConfig, usize) {
    let run = match preset {
        BenchPreset::Tiny => RunConfig::tiny(),
        BenchPreset::Base => RunConfig::fiber_base(),
    };
    let mut detector = match preset {
        BenchPreset::Tiny => run.detector.detector_config(&run.model.fiber),
        BenchPreset::Base => DetectorConfig::fiber_base(),
    };
    // The reference has no DropBlock; its cost is a few element-wise operations.
    detector.drop_block = false;
    (detector, run.fine.clone(), run.detector.max_text_len)
}

struct DetectorStepJob {
    args: BenchArgs,
    batch: usize,
}

impl BackendJob for DetectorStepJob {
    type Output = Result<fiber_train::benchmark::detector::DetectorStepTiming, TrainError>;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        let (config, stage, len) = detector_step_settings(self.args.preset);
        let (h, w) = self.args.detect_size;
        fiber_train::benchmark::detector::detector_step_timing::<B>(
            &config,
            &stage,
            (pad32(h), pad32(w)),
            self.batch,
            self.args.text_len.unwrap_or(len),
            self.args.warmup,
            self.args.reps,
            &device,
        )
    }
}

/// `--model fiber-detect-train`: the fine-grained training step, with the PyTorch reference
/// first when asked (so that the two never hold a model at once).
fn run_detector_step(args: BenchArgs) -> Result<()> {
    let batch = args.batch.unwrap_or(1);
    let (h, w) = args.detect_size;
    let (ph, pw) = (pad32(h), pad32(w));
    let reference = if args.reference {
        anyhow::ensure!(
            args.preset == BenchPreset::Base,
            "the PyTorch reference of the fine-grained step has FIBER-Base's sizes: add --preset base"
        );
        let out =
            std::env::temp_dir().join(format!("fiber-detect-ref-{}.json", std::process::id()));
        let status = Command::new(&args.python)
            .arg("bench/detector.py")
            .arg("--train")
            .args(["--detect-size", &format!("{h}x{w}")])
            .args(["--batch", &batch.to_string()])
            .args(["--warmup", &args.warmup.to_string()])
            .args(["--reps", &args.reps.to_string()])
            .arg("--json")
            .arg(&out)
            .status()
            .with_context(|| format!("running {} bench/detector.py", args.python))?;
        anyhow::ensure!(status.success(), "bench/detector.py --train failed");
        let text = std::fs::read_to_string(&out)?;
        let _ = std::fs::remove_file(&out);
        Some(serde_json::from_str::<Value>(&text)?)
    } else {
        None
    };
    let timing = run_on(
        args.backend,
        DetectorStepJob {
            args: args.clone(),
            batch,
        },
    )??;
    let runs = Timing {
        runs_ms: timing.runs_ms.clone(),
    };
    let median = runs.median();
    let name = format!(
        "FiberDetectTrain {:?} ({h}×{w} padded to {ph}×{pw})",
        args.preset
    );
    println!(
        "{} parameters; last step's loss {:.4}",
        timing.parameters, timing.loss
    );
    println!("| model | backend | batch | median ms | min ms | max ms | items/s |");
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| {name} | {} | {batch} | {median:.1} | {:.1} | {:.1} | {:.3} |",
        args.backend,
        runs.runs_ms[0],
        runs.runs_ms[runs.runs_ms.len() - 1],
        batch as f64 * 1000.0 / median
    );
    let mut result = json!({
        "model": name, "backend": args.backend.to_string(), "batch": batch, "warmup": args.warmup,
        "reps": args.reps, "median_ms": median, "runs_ms": runs.runs_ms,
        "parameters": timing.parameters, "loss": timing.loss,
    });
    if let Some(reference) = reference {
        let theirs = reference["median_ms"].as_f64().unwrap_or(f64::NAN);
        println!(
            "| FiberDetectTrain (PyTorch {}) | torch cpu | {batch} | {theirs:.1} | {:.1} | {:.1} | {:.3} |",
            reference["torch"].as_str().unwrap_or("?"),
            reference["min_ms"].as_f64().unwrap_or(f64::NAN),
            reference["max_ms"].as_f64().unwrap_or(f64::NAN),
            batch as f64 * 1000.0 / theirs
        );
        println!("speed against PyTorch: {:.2}×", theirs / median);
        result["pytorch"] = reference;
    }
    if let Some(path) = &args.json {
        write_json(path, &result)?;
    }
    Ok(())
}

struct BenchJob {
    args: BenchArgs,
    model: BenchModel,
    batch: usize,
}

impl BackendJob for BenchJob {
    type Output = Timing;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Timing {
        let BenchJob { args, model, batch } = self;
        match model {
            BenchModel::SwinBase384 | BenchModel::SwinTiny224 => {
                let config = if model == BenchModel::SwinBase384 {
                    SwinConfig::swin_base_384()
                } else {
                    SwinConfig::swin_tiny_224()
                };
                let model = SwinModel::<B>::new(&config, &device).valid();
                let size = config.image_size;
                let pixels = Tensor::<B::InnerBackend, 4>::random(
                    [batch, 3, size, size],
                    Distribution::Normal(0.0, 1.0),
                    &device,
                );
                time_runs(&args, &device, || {
                    model.forward(pixels.clone()).pooler_output
                })
            }
            BenchModel::FiberBase384Fused | BenchModel::FiberBase384Dual => {
                let config = FiberConfig::fiber_base_384();
                let fused = model == BenchModel::FiberBase384Fused;
                let model = FiberBackbone::<B>::new(&config, false, &device)
                    .expect("the FIBER-Base preset is valid")
                    .valid();
                let size = config.swin.image_size;
                let pixels = Tensor::<B::InnerBackend, 4>::random(
                    [batch, 3, size, size],
                    Distribution::Normal(0.0, 1.0),
                    &device,
                );
                let ids = Tensor::<B::InnerBackend, 2, Int>::random(
                    [batch, 40],
                    Distribution::Uniform(3.0, 50000.0),
                    &device,
                );
                let mask = Tensor::<B::InnerBackend, 2, Int>::ones([batch, 40], &device);
                time_runs(&args, &device, || {
                    let out = if fused {
                        model.forward_fused(pixels.clone(), ids.clone(), mask.clone())
                    } else {
                        model.forward_dual(pixels.clone(), ids.clone(), mask.clone())
                    };
                    out.text.sum() + out.image.tokens.sum()
                })
            }
            BenchModel::FiberDetectBase => {
                let config = DetectorConfig::fiber_base();
                let model = GroundingDetector::<B>::new(&config, &device)
                    .expect("the FIBER-Base detector is valid")
                    .valid();
                let (h, w) = args.detect_size;
                let pixels = Tensor::<B::InnerBackend, 4>::random(
                    [batch, 3, pad32(h), pad32(w)],
                    Distribution::Normal(0.0, 1.0),
                    &device,
                );
                let ids = Tensor::<B::InnerBackend, 2, Int>::random(
                    [batch, DETECT_PROMPT_LEN],
                    Distribution::Uniform(3.0, 50000.0),
                    &device,
                );
                let mask =
                    Tensor::<B::InnerBackend, 2, Int>::ones([batch, DETECT_PROMPT_LEN], &device);
                time_runs(&args, &device, || {
                    let out = model.forward(pixels.clone(), ids.clone(), mask.clone());
                    out.logits
                        .into_iter()
                        .map(|l| l.sum())
                        .chain(out.bbox_reg.into_iter().map(|b| b.sum()))
                        .reduce(|a, b| a + b)
                        .expect("five levels")
                })
            }
            BenchModel::Data => unreachable!("the data pipeline runs without a backend"),
            BenchModel::FiberDetectTrain => unreachable!("timed by run_detector_step"),
            BenchModel::RobertaBase => {
                let config = RobertaConfig::roberta_base();
                let model = RobertaModel::<B>::new(&config, true, &device).valid();
                let ids = Tensor::<B::InnerBackend, 2, Int>::random(
                    [batch, 40],
                    Distribution::Uniform(3.0, 50000.0),
                    &device,
                );
                let mask = Tensor::<B::InnerBackend, 2, Int>::ones([batch, 40], &device);
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
fn data_pipeline(args: &BenchArgs, batch: usize) -> Result<Timing> {
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
        paths.len() >= batch,
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
        ..LoaderConfig::new(batch, 0)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utilisation_uses_each_algorithms_flops() {
        let ours = json!({ "measurements": [{ "name": "step", "per_second": 10.0 }] });
        let reference = json!({ "measurements": [
            { "name": "step", "per_second": 4.0, "gflop_per_pair": 1600.0 },
            { "name": "step_prefix_reuse", "per_second": 8.0, "gflop_per_pair": 800.0 },
        ]});
        let out = step_utilisation(&ours, &reference, Some(100.0)).unwrap();
        let rows = out["rows"].as_array().unwrap();
        // fiber-rs computes the prefix-reuse step: 10 pairs/s × 800 GFLOP = 8 TFLOP/s.
        assert_eq!(rows[0]["tflops"], 8.0);
        assert_eq!(rows[0]["utilisation"], 0.08);
        assert_eq!(rows[1]["tflops"], 6.4);
        assert_eq!(rows[2]["tflops"], 6.4);
        // Without counted FLOPs there is nothing to report.
        let uncounted = json!({ "measurements": [{ "name": "step", "per_second": 4.0 }] });
        assert!(step_utilisation(&ours, &uncounted, None).is_none());
    }
}
