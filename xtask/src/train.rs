//! `cargo xtask train`: the main job. With no arguments it trains and evaluates a tiny FIBER on
//! the built-in shapes world (generated under `data/shapes` when missing) on the CPU and writes
//! `runs/shapes/report.json`, `metrics.jsonl` and `loss.svg`. `--stage` runs one stage alone
//! (pre-training or one fine-tuning task) from `--init` or from the run's own pre-training.

use std::path::PathBuf;

use anyhow::{Context, Result};
use burn::tensor::backend::AutodiffBackend;
use clap::Args;
use fiber_train::config::RunConfig;
use fiber_train::init::InitSource;
use fiber_train::job::{report_path, run_job, summary_table, JobOptions, Report, Stage};
use fiber_train::nodes::NodeSpec;
use fiber_train::replica::DeviceSpec;
use fiber_train::{run_on_with, BackendJob, BackendKind, Checkpointing, Precision, TrainError};

/// Arguments of `train`.
#[derive(Args, Debug, Clone)]
pub struct TrainArgs {
    /// A TOML file with any hyper-parameters to change (`--print-config` shows them all).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The defaults the configuration file overrides: `tiny` (built-in data on a CPU) or `base`
    /// (the original FIBER-Base values); a file's own `preset` key takes precedence.
    #[arg(long, value_enum, default_value = "tiny")]
    pub preset: Preset,
    /// Run one stage alone: coarse, vqa, nlvr2, retrieval-itc, retrieval-itm, caption, fine,
    /// detect or ground. A fine-tuning stage starts from `--init`, or from this run's
    /// pre-training; `detect` and `ground` fine-tune a grounding detector, by default this
    /// run's fine-grained stage.
    #[arg(long)]
    pub stage: Option<Stage>,
    /// The model to start from: a run folder (`runs/<name>`, its pre-training; for `detect`
    /// and `ground` its fine-grained stage when it has one) or one of its
    /// stage folders, a checkpoint folder (`…/checkpoints/step-N`), a FIBER checkpoint (original
    /// file or converted folder), or twice, for a HuggingFace RoBERTa and a Swin folder.
    #[arg(long, num_args = 1)]
    pub init: Vec<PathBuf>,
    /// A tokenizer (`tokenizer.json` or a RoBERTa folder) to use instead of the init source's
    /// (needed with a FIBER checkpoint) or of one trained on the data.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Compute backend.
    #[arg(long, default_value = "ndarray")]
    pub backend: BackendKind,
    /// Float type of parameters, activations and gradients: f32, or half precision (f16 on
    /// wgpu; bf16 or f16 on cuda) with f32 master weights in the optimiser. Refused, with the
    /// reason, where the backend lacks it.
    #[arg(long, default_value = "f32")]
    pub precision: Precision,
    /// Recompute memory-bound activations in the backward pass instead of keeping them (Burn's
    /// balanced activation checkpointing): less memory, more time.
    #[arg(long)]
    pub checkpointing: bool,
    /// Where the data lies: `--data` overrides the configuration's `data_dir`,
    /// `--annotations` its `annotations`, `--images` its `images_dir`.
    #[command(flatten)]
    pub source: crate::data::SourceArgs,
    /// Name of the run (overrides the configuration's `name`).
    #[arg(long)]
    pub name: Option<String>,
    /// Folder that holds the runs.
    #[arg(long, default_value = "runs")]
    pub runs: PathBuf,
    /// Continue every stage from its latest checkpoint (a finished stage is reused).
    #[arg(long)]
    pub resume: bool,
    /// Fail on any unreadable record or image instead of skipping it.
    #[arg(long)]
    pub strict: bool,
    /// Data-parallel replicas: a count (`2`: devices 0 and 1 of the backend; on the CPU, two
    /// replicas sharing its cores) or a device list (`cuda:0,cuda:1`). Each stage's
    /// `batch_size` is per replica: a step sees batch × replicas × accumulation samples.
    /// Default: the configuration's `[replicas] devices` (2 in the tiny preset, 1 in base).
    #[arg(long)]
    pub devices: Option<DeviceSpec>,
    /// Machines in the run (torchrun's `--nnodes`): one process per machine, each with the same
    /// arguments but `--node-rank`; the replicas of all of them train as one data-parallel
    /// group, and node 0 alone writes the run's files.
    #[arg(long, env = "FIBER_NODES", default_value_t = 1)]
    pub nodes: usize,
    /// This machine's place among `--nodes`, from 0 (node 0 is the coordinator).
    #[arg(long, env = "FIBER_NODE_RANK", default_value_t = 0)]
    pub node_rank: usize,
    /// `HOST:PORT` where node 0 listens for the others (torchrun's `--master-addr` and
    /// `--master-port`); the same on every node.
    #[arg(long, env = "FIBER_COORDINATOR")]
    pub coordinator: Option<String>,
    /// Print the full configuration as TOML and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Stop after this many steps of a stage, e.g. `pretrain:10` (to test resumption).
    #[arg(long, hide = true)]
    pub stop_after: Option<String>,
}

/// Defaults of the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Preset {
    /// The tiny model on the built-in shapes world (CPU, minutes).
    Tiny,
    /// FIBER-Base with the original hyper-parameters (GPU, real datasets).
    Base,
}

struct TrainJob(JobOptions);

impl BackendJob for TrainJob {
    type Output = Result<Report, TrainError>;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        run_job::<B>(&self.0, &device)
    }
}

/// Runs `train`.
pub fn run(args: TrainArgs) -> Result<()> {
    let preset = match args.preset {
        Preset::Tiny => RunConfig::tiny(),
        Preset::Base => RunConfig::fiber_base(),
    };
    // A configuration file that names its own preset is read over that one.
    let mut config = match &args.config {
        Some(path) => RunConfig::from_toml_file_over(path, preset)?,
        None => preset,
    };
    if let Some(data) = &args.source.data {
        config.data_dir = data.clone();
    } else if !args.source.annotations.is_empty() {
        // Published files where they lie: no data folder (and no built-in world).
        config.data_dir = PathBuf::new();
    }
    if !args.source.annotations.is_empty() {
        config.annotations = args.source.annotations.clone();
    }
    if let Some(images) = &args.source.images {
        config.images_dir = Some(images.clone());
    }
    if let Some(name) = &args.name {
        config.name = name.clone();
    }
    if !config.annotations.is_empty() && args.stage.is_none() {
        anyhow::bail!(
            "--annotations names the files of one stage's format: give it with --stage (the main \
             job reads captions and questions from one --data folder)"
        );
    }
    if args.print_config {
        print!("{}", config.to_toml());
        return Ok(());
    }
    let devices = match &args.devices {
        Some(devices) => devices.clone(),
        None => config
            .replicas
            .devices
            .parse::<DeviceSpec>()
            .map_err(|e| anyhow::anyhow!("`[replicas] devices`: {e}"))?,
    };
    let nodes = NodeSpec {
        count: args.nodes,
        rank: args.node_rank,
        coordinator: args.coordinator.clone(),
    };
    nodes.validate().map_err(anyhow::Error::msg)?;
    let stop_after = match &args.stop_after {
        Some(spec) => {
            let (stage, steps) = spec
                .split_once(':')
                .context("--stop-after takes STAGE:STEPS")?;
            Some((
                stage.to_string(),
                steps.parse().context("--stop-after takes STAGE:STEPS")?,
            ))
        }
        None => None,
    };
    let options = JobOptions {
        config,
        runs_dir: args.runs.clone(),
        resume: args.resume,
        strict: args.strict,
        stop_after,
        backend: match args.precision {
            Precision::F32 => args.backend.to_string(),
            half => format!("{} {half}", args.backend),
        },
        stage: args.stage,
        init: if args.init.is_empty() {
            None
        } else {
            Some(InitSource::parse(&args.init)?)
        },
        tokenizer: args.tokenizer.clone(),
        devices,
        nodes: nodes.clone(),
    };
    let report = run_on_with(
        args.backend,
        args.precision,
        Checkpointing::when(args.checkpointing),
        TrainJob(options.clone()),
    )
    .map_err(anyhow::Error::msg)??;
    if nodes.writes() {
        println!("{}", summary_table(&report));
        println!(
            "report: {}",
            report_path(&args.runs, &options.config.name, args.stage).display()
        );
    }
    Ok(())
}
