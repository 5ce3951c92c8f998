//! `cargo xtask convert` and `cargo xtask fiber-forward`: FIBER checkpoints.
//!
//! `convert` turns an original FIBER checkpoint (or HuggingFace RoBERTa + Swin weights, with
//! new fusion modules) into the project's format — `config.json` + `model.safetensors` with the
//! original key names — once, so users never need Python; an original fine-grained (detector)
//! checkpoint becomes a detector folder in the same way. `fiber-forward` runs the fused or dual
//! encoder, or the grounding detector, on inputs from a safetensors file; its interface is kept
//! stable for outside parity checks.

use std::path::PathBuf;

use anyhow::{Context, Result};
use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use clap::{Args, ValueEnum};
use fiber_core::backend::{run_on, BackendJob, BackendKind};
use fiber_core::{LoadReport, TensorStore, WeightCollector};
use fiber_fusion::weights::{is_head_key, rank_output_warning, write_config, AssumedSetting};
use fiber_fusion::{FiberBackbone, FiberCheckpoint, FiberConfig};
use fiber_heads::grounding::atss::{DetectionLossConfig, ImageTargets};
use fiber_heads::grounding::loss::batch_losses;
use fiber_heads::grounding::weights::{DetectorCheckpoint, WeightCopy};

use crate::hf_forward::{float_input, int_input, to_stored};

/// Arguments of `convert`.
#[derive(Args, Debug, Clone)]
pub struct ConvertArgs {
    /// An original FIBER checkpoint (`.ckpt`/`.pt`/`.pth`, tensors under `state_dict` or `model`).
    #[arg(long, conflicts_with_all = ["roberta", "swin"])]
    pub from: Option<PathBuf>,
    /// Instead of --from: a HuggingFace RoBERTa folder (config.json + model.safetensors)…
    #[arg(long, requires = "swin")]
    pub roberta: Option<PathBuf>,
    /// …and a Swin weight file (HuggingFace `model.safetensors` or original `.pth`); the fusion
    /// modules are new (docs/model.md §6.3).
    #[arg(long, requires = "roberta")]
    pub swin: Option<PathBuf>,
    /// Configuration file (the JSON format this command writes); required with --roberta/--swin,
    /// optional with --from (sizes are otherwise inferred from the tensor shapes). With
    /// --detector it describes the coarse checkpoint, and --detector-config the detector.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Add the captioning adapters (new, when the checkpoint has none).
    #[arg(long)]
    pub caption_adapters: bool,
    /// With a fine-grained checkpoint: convert its EMA weights (`model_ema`) instead of `model`.
    #[arg(long)]
    pub ema: bool,
    /// Write a grounding detector whose backbone starts from the coarse model given by --from
    /// (an original `.ckpt`, a converted folder, one of our runs, a stage or checkpoint folder
    /// of one) by the original's longest-suffix rule; the FPN and head are new
    /// (docs/model.md §6.4). `transfer.json` in the output lists what came from where.
    #[arg(long, requires = "from")]
    pub detector: bool,
    /// With --detector: the detector's configuration (a detector `config.json`); without it the
    /// coarse model's sizes with the detection defaults.
    #[arg(long, requires = "detector")]
    pub detector_config: Option<PathBuf>,
    /// With --detector: the tokenizer to copy into the folder (a RoBERTa folder or
    /// `tokenizer.json`), when the source carries none or another one is wanted.
    #[arg(long, requires = "detector")]
    pub tokenizer: Option<PathBuf>,
    /// Output folder.
    #[arg(long)]
    pub to: PathBuf,
}

/// `convert --detector`: a detector folder initialised from a coarse model.
fn convert_coarse_to_detector(from: &std::path::Path, args: &ConvertArgs) -> Result<()> {
    type B = burn::backend::NdArray<f32>;
    let source = fiber_train::init::InitSource::parse(&[from.to_path_buf()])?;
    let config = args
        .detector_config
        .as_ref()
        .map(fiber_heads::grounding::DetectorConfig::load_json)
        .transpose()?;
    let mut init = source.detector::<B>(
        config,
        args.tokenizer.as_deref(),
        args.config.as_deref(),
        &Default::default(),
    )?;
    println!("detector from {}", source.describe());
    for line in init.transfer.summary() {
        println!("{line}");
    }
    let written = init.model.save_folder(&init.config, &args.to)?;
    fiber_core::json::write_json_atomically(
        &init.transfer.to_json(),
        &args.to.join("transfer.json"),
    )?;
    match &init.tokenizer {
        Some(tokenizer) => tokenizer.save(args.to.join("tokenizer.json"))?,
        None => eprintln!(
            "note: {} carries no tokenizer and none was given (--tokenizer): the folder has none",
            from.display()
        ),
    }
    println!(
        "wrote the detector's {written} tensors to {}",
        args.to.display()
    );
    Ok(())
}

/// `--ema` as the copy of a fine-grained checkpoint to read.
fn weight_copy(ema: bool) -> WeightCopy {
    if ema {
        WeightCopy::Ema
    } else {
        WeightCopy::Model
    }
}

/// Converts an original fine-grained checkpoint into a detector folder.
fn convert_detector(ckpt: DetectorCheckpoint, args: &ConvertArgs) -> Result<()> {
    type B = burn::backend::NdArray<f32>;
    if let Some(note) = &ckpt.assumed {
        eprintln!("note: {note}");
    }
    let (mut model, report) = ckpt.detector::<B>(&Default::default())?;
    print_report(&report);
    let written = model.save_folder(&ckpt.config, &args.to)?;
    println!(
        "wrote the detector's {written} tensors to {}",
        args.to.display()
    );
    Ok(())
}

fn print_report(report: &LoadReport) {
    println!("loaded {} tensors", report.loaded.len());
    if !report.initialised.is_empty() {
        println!(
            "initialised {} new tensors (docs/model.md §6.3), e.g. {}",
            report.initialised.len(),
            report.initialised[0]
        );
    }
    let mut reasons: Vec<&str> = report.skipped.iter().map(|s| s.reason.as_str()).collect();
    reasons.sort();
    reasons.dedup();
    for reason in reasons {
        let keys: Vec<&str> = report
            .skipped
            .iter()
            .filter(|s| s.reason == reason)
            .map(|s| s.key.as_str())
            .collect();
        println!(
            "skipped {} ({reason}): {}{}",
            keys.len(),
            keys.iter().take(4).cloned().collect::<Vec<_>>().join(", "),
            if keys.len() > 4 { ", …" } else { "" }
        );
    }
}

/// Says which sizes were assumed rather than read from the checkpoint (standard error).
fn print_assumed(assumed: &[AssumedSetting]) {
    for setting in assumed {
        eprintln!("note: {setting}");
    }
}

/// Runs `convert`.
pub fn convert(args: ConvertArgs) -> Result<()> {
    type B = burn::backend::NdArray<f32>;
    let device = Default::default();
    if let (Some(from), true) = (&args.from, args.detector) {
        return convert_coarse_to_detector(from, &args);
    }
    if let Some(from) = &args.from {
        let detector = DetectorCheckpoint::read_if_detector(
            from,
            args.config.as_deref(),
            weight_copy(args.ema),
        )
        .with_context(|| format!("reading {}", from.display()))?;
        if let Some(ckpt) = detector {
            return convert_detector(ckpt, &args);
        }
    }
    let (mut model, config, assumed, report, heads) = if let Some(from) = &args.from {
        let ckpt = FiberCheckpoint::read(from, args.config.as_deref())
            .with_context(|| format!("reading {}", from.display()))?;
        print_assumed(&ckpt.assumed);
        if let Some(warning) = rank_output_warning(&ckpt.store) {
            eprintln!("warning: {warning}");
        }
        let caption =
            args.caption_adapters || fiber_fusion::weights::has_caption_adapters(&ckpt.store);
        let mut model = FiberBackbone::<B>::new(&ckpt.config, caption, &device)?;
        let report = model.load_fiber_store(ckpt.store.clone(), args.caption_adapters)?;
        let mut heads = TensorStore::new();
        for (key, tensor) in ckpt
            .store
            .into_iter_sorted()
            .filter(|(k, _)| is_head_key(k))
        {
            heads.insert(key, tensor);
        }
        (model, ckpt.config, ckpt.assumed, report, heads)
    } else {
        let (roberta_dir, swin_file) = match (&args.roberta, &args.swin) {
            (Some(r), Some(s)) => (r, s),
            _ => anyhow::bail!("give either --from CHECKPOINT, or --roberta DIR and --swin FILE"),
        };
        let config_path = args.config.as_ref().context(
            "--config is required with --roberta/--swin (e.g. the FIBER-Base configuration)",
        )?;
        let config = FiberConfig::load_json(config_path)?;
        let roberta = TensorStore::read_safetensors(roberta_dir.join("model.safetensors"))?;
        let swin = TensorStore::read_any(swin_file)?;
        let (model, report) = FiberBackbone::<B>::from_unimodal(
            &config,
            roberta,
            swin,
            args.caption_adapters,
            &device,
        )?;
        (model, config, Vec::new(), report, TensorStore::new())
    };
    print_report(&report);
    let mut collector = WeightCollector::new();
    model.visit_weights(&mut collector, "");
    let mut store = collector.into_store();
    for (key, tensor) in heads.into_iter_sorted() {
        store.insert(key, tensor);
    }
    std::fs::create_dir_all(&args.to).with_context(|| format!("creating {}", args.to.display()))?;
    store.write_safetensors(args.to.join("model.safetensors"))?;
    write_config(&config, &assumed, &args.to.join("config.json"))?;
    println!("wrote {} tensors to {}", store.len(), args.to.display());
    Ok(())
}

/// Which path of the backbone to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Fusion encoder (with the original quirks unless the config turns them off).
    Fused,
    /// Dual encoder: image-only (with the final Swin norm) and text-only.
    Dual,
    /// The grounding detector (an original fine-grained checkpoint or a converted detector
    /// folder): every level's FPN, tower, box, centerness, logit and anchor outputs; with
    /// `gt_boxes`, `gt_valid` and `positive_map` in the input also `loss.grounding`,
    /// `loss.giou`, `loss.centerness` and `num_pos`.
    Detect,
}

/// Arguments of `fiber-forward`.
#[derive(Args, Debug, Clone)]
pub struct FiberForwardArgs {
    /// An original checkpoint file or a converted folder.
    #[arg(long)]
    pub model: PathBuf,
    /// Configuration file (format written by `convert`) when the checkpoint carries none.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Fused or dual.
    #[arg(long, value_enum)]
    pub mode: Mode,
    /// Inputs: `pixel_values` f32 [batch, 3, H, W], `input_ids` and `attention_mask` int64 [batch, len].
    #[arg(long)]
    pub input: PathBuf,
    /// Outputs: `text_hidden` [batch, len, text_width] and `image_hidden` [batch, tokens, image_width].
    #[arg(long)]
    pub output: PathBuf,
    /// Compute backend.
    #[arg(long, default_value = "ndarray")]
    pub backend: BackendKind,
    /// With `--mode detect` and a fine-grained checkpoint file: run its EMA weights
    /// (`model_ema`) instead of `model`.
    #[arg(long)]
    pub ema: bool,
}

/// Runs `fiber-forward`.
pub fn forward(args: FiberForwardArgs) -> Result<()> {
    if args.mode == Mode::Detect {
        return forward_detector(args);
    }
    let ckpt = FiberCheckpoint::read(&args.model, args.config.as_deref())
        .with_context(|| format!("reading {}", args.model.display()))?;
    print_assumed(&ckpt.assumed);
    let inputs = TensorStore::read_safetensors(&args.input)
        .with_context(|| format!("reading inputs {}", args.input.display()))?;
    let output = args.output.clone();
    let store = run_on(
        args.backend,
        ForwardJob {
            ckpt,
            inputs,
            mode: args.mode,
        },
    )??;
    store
        .write_safetensors(&output)
        .with_context(|| format!("writing {}", output.display()))?;
    Ok(())
}

/// `fiber-forward --mode detect`.
fn forward_detector(args: FiberForwardArgs) -> Result<()> {
    let ckpt = DetectorCheckpoint::read(&args.model, args.config.as_deref(), weight_copy(args.ema))
        .with_context(|| format!("reading {}", args.model.display()))?;
    if let Some(note) = &ckpt.assumed {
        eprintln!("note: {note}");
    }
    let inputs = TensorStore::read_safetensors(&args.input)
        .with_context(|| format!("reading inputs {}", args.input.display()))?;
    let store = run_on(args.backend, DetectJob { ckpt, inputs })??;
    store
        .write_safetensors(&args.output)
        .with_context(|| format!("writing {}", args.output.display()))?;
    Ok(())
}

struct DetectJob {
    ckpt: DetectorCheckpoint,
    inputs: TensorStore,
}

impl BackendJob for DetectJob {
    type Output = Result<TensorStore>;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<TensorStore> {
        let (model, _) = self.ckpt.detector::<B::InnerBackend>(&device)?;
        let (pixels, ids, mask) = forward_inputs::<B::InnerBackend>(&self.inputs, &device)?;
        let [_, _, h, w] = pixels.dims();
        let multiple = self.ckpt.config.backbone.swin.patch_size
            << (self.ckpt.config.backbone.swin.num_stages() - 1);
        anyhow::ensure!(
            h % multiple == 0 && w % multiple == 0,
            "pixel_values is {h}×{w}; the detector takes sizes that are multiples of {multiple} (pad the batch, as the original does)"
        );
        let targets = ground_truth(&self.inputs, ids.dims())?;
        let output = model.forward(pixels, ids, mask.clone());
        let losses = match targets {
            Some(images) => {
                let config = DetectionLossConfig::new();
                let (_, losses) =
                    batch_losses(&output, mask, &images, &config, &self.ckpt.config.box_coder)?;
                Some(losses)
            }
            None => None,
        };
        let mut store = output.into_store();
        if let Some(losses) = losses {
            store.insert("loss.grounding", to_stored(losses.grounding));
            store.insert("loss.giou", to_stored(losses.giou));
            store.insert("loss.centerness", to_stored(losses.centerness));
            store.insert(
                "num_pos",
                fiber_core::StoredTensor::f32(vec![1], vec![losses.num_pos as f32]),
            );
        }
        Ok(store)
    }
}

/// The optional ground truth of `fiber-forward --mode detect`: `gt_boxes` f32 `[B, M, 4]`,
/// `gt_valid` i64 `[B, M]` and `positive_map` f32 `[B, M, L]`, all three or none.
fn ground_truth(
    inputs: &TensorStore,
    [batch, len]: [usize; 2],
) -> Result<Option<Vec<ImageTargets>>> {
    let names = ["gt_boxes", "gt_valid", "positive_map"];
    let present: Vec<&str> = names.into_iter().filter(|n| inputs.contains(n)).collect();
    if present.is_empty() {
        return Ok(None);
    }
    anyhow::ensure!(
        present.len() == 3,
        "the losses need gt_boxes, gt_valid and positive_map together; the input has only {}",
        present.join(", ")
    );
    let get = |n: &str| inputs.get(n).expect("checked above");
    let (boxes, valid, map) = (get("gt_boxes"), get("gt_valid"), get("positive_map"));
    let m = boxes.shape.get(1).copied().unwrap_or(0);
    for (name, tensor, shape) in [
        ("gt_boxes", boxes, vec![batch, m, 4]),
        ("gt_valid", valid, vec![batch, m]),
        ("positive_map", map, vec![batch, m, len]),
    ] {
        anyhow::ensure!(
            tensor.shape == shape,
            "`{name}` is {:?}; with {batch} images of {len} tokens and {m} boxes it must be {shape:?}",
            tensor.shape
        );
    }
    let floats = |n: &str, t: &fiber_core::StoredTensor| {
        t.as_f32()
            .map(<[f32]>::to_vec)
            .with_context(|| format!("`{n}` must be a float tensor"))
    };
    let valid = valid
        .as_i64()
        .context("`gt_valid` must be an integer tensor")?;
    Ok(Some(ImageTargets::from_padded(
        &floats("gt_boxes", boxes)?,
        valid,
        &floats("positive_map", map)?,
        batch,
        m,
        len,
    )))
}

/// `pixel_values`, `input_ids` and `attention_mask` from an input file, checked for agreeing
/// shapes.
#[allow(clippy::type_complexity)]
fn forward_inputs<B: burn::tensor::backend::Backend>(
    inputs: &TensorStore,
    device: &B::Device,
) -> Result<(
    burn::tensor::Tensor<B, 4>,
    burn::tensor::Tensor<B, 2, burn::tensor::Int>,
    burn::tensor::Tensor<B, 2, burn::tensor::Int>,
)> {
    let pixels = float_input::<B, 4>(inputs, "pixel_values", device)?;
    let ids = int_input::<B>(inputs, "input_ids", device)?;
    let mask = int_input::<B>(inputs, "attention_mask", device)?;
    anyhow::ensure!(
        ids.dims() == mask.dims(),
        "input_ids {:?} and attention_mask {:?} differ in shape",
        ids.dims(),
        mask.dims()
    );
    anyhow::ensure!(
        pixels.dims()[0] == ids.dims()[0],
        "pixel_values and input_ids differ in batch size"
    );
    Ok((pixels, ids, mask))
}

struct ForwardJob {
    ckpt: FiberCheckpoint,
    inputs: TensorStore,
    mode: Mode,
}

impl BackendJob for ForwardJob {
    type Output = Result<TensorStore>;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<TensorStore> {
        let (model, _) = self.ckpt.backbone::<B>(&device)?;
        let model = model.valid();
        let (pixels, ids, mask) = forward_inputs::<B::InnerBackend>(&self.inputs, &device)?;
        let out = match self.mode {
            Mode::Fused => model.forward_fused(pixels, ids, mask),
            Mode::Dual => model.forward_dual(pixels, ids, mask),
            Mode::Detect => unreachable!("the detector runs in forward_detector"),
        };
        let mut store = TensorStore::new();
        store.insert("text_hidden", to_stored(out.text));
        store.insert("image_hidden", to_stored(out.image.tokens));
        Ok(store)
    }
}
