//! The run being trained (`runs/<name>`): its folder, configuration, tokenizer, metrics log
//! and where its model starts (a new model, `--init`, or the run's own pre-training), and the
//! services tasks train through (loaders, the stage loop, warnings, skipped samples).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::module::Module;
use burn::prelude::Backend;
use burn::tensor::backend::AutodiffBackend;
use fiber_data::loader::{ImageTransform, LoaderConfig, TextCollate};
use fiber_data::shapes::write_shapes_world;
use fiber_data::Problems;
use fiber_heads::grounding::GroundingDetector;
use fiber_heads::FiberModel;
use fiber_roberta::RobertaTokenizer;

use crate::checkpoint::CheckpointDir;
use crate::config::{RunConfig, StageConfig};
use crate::error::TrainError;
use crate::eval::Evaluator;
use crate::init::InitSource;
use crate::input::{ImageTextInput, ImageTextSamples};
use crate::log::{loss_svg, MetricsLog};
use crate::nodes::{NodeLink, NodeSpec};
use crate::replica::{DeviceSpec, ReplicaConfig};
use crate::report::StageSummary;
use crate::stage::{StageRunner, StageTask};
use crate::stages::Stage;

/// The model a stage starts from.
pub enum StartModel<B: Backend> {
    /// A FIBER model (the coarse stage, its fine-tuning stages and fine-grained pre-training).
    Fiber(FiberModel<B>),
    /// A grounding detector (the downstream detection and grounding stages).
    Detector(GroundingDetector<B>),
}

impl<B: Backend> StartModel<B> {
    /// Its parameter count.
    pub fn num_params(&self) -> usize {
        match self {
            Self::Fiber(model) => model.num_params(),
            Self::Detector(model) => model.num_params(),
        }
    }
}

/// A model a stage can start from.
pub trait FromStart<B: Backend>: Sized {
    /// The model of `start`, or an error when `stage` cannot start from that kind.
    fn from_start(start: StartModel<B>, stage: Stage) -> Result<Self, TrainError>;
}

impl<B: Backend> FromStart<B> for FiberModel<B> {
    fn from_start(start: StartModel<B>, stage: Stage) -> Result<Self, TrainError> {
        match start {
            StartModel::Fiber(model) => Ok(model),
            StartModel::Detector(_) => Err(TrainError::Setting(format!(
                "stage {} starts from a FIBER model, not a detector",
                stage.name()
            ))),
        }
    }
}

impl<B: Backend> FromStart<B> for GroundingDetector<B> {
    fn from_start(start: StartModel<B>, stage: Stage) -> Result<Self, TrainError> {
        match start {
            StartModel::Detector(model) => Ok(model),
            StartModel::Fiber(_) => Err(TrainError::Setting(format!(
                "stage {} starts from a grounding detector, not a FIBER model",
                stage.name()
            ))),
        }
    }
}

/// How the job runs.
#[derive(Debug, Clone)]
pub struct JobOptions {
    /// Every hyper-parameter.
    pub config: RunConfig,
    /// Folder holding `runs/<name>`.
    pub runs_dir: PathBuf,
    /// Continue each stage from its latest checkpoint.
    pub resume: bool,
    /// Treat any unloadable sample as an error.
    pub strict: bool,
    /// Stop after this many steps of one stage (for tests of resumption): `(stage, steps)`.
    pub stop_after: Option<(String, u64)>,
    /// Name of the backend, for the report.
    pub backend: String,
    /// Run this stage alone instead of the main job.
    pub stage: Option<Stage>,
    /// Start from this model instead of a new one (or, for a fine-tuning stage, instead of the
    /// run's own pre-training).
    pub init: Option<InitSource>,
    /// A tokenizer (`tokenizer.json` or a RoBERTa folder) instead of the one of the init source
    /// or one trained on the data.
    pub tokenizer: Option<PathBuf>,
    /// The devices of the data-parallel replicas every stage trains on (one by default).
    pub devices: DeviceSpec,
    /// This process's place in a run over several machines (one node by default).
    pub nodes: NodeSpec,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn problems_error(problems: &Problems, what: &str) -> TrainError {
    let first = problems
        .items
        .first()
        .map(|p| format!("{} [{}]: {}", p.file.display(), p.location, p.message))
        .unwrap_or_default();
    TrainError::Data(fiber_data::DataError::Invalid(format!(
        "{} problem(s) reading {what} (--strict); first: {first}",
        problems.len()
    )))
}

/// What a process does with the run folder's `tokenizer.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenizerFile {
    /// Reuse it, or train and save one (a run on one machine; node 0).
    ReuseOrSave,
    /// Reuse it (a node other than node 0 resuming: node 0's, on a shared filesystem).
    Reuse,
    /// Neither (a node other than node 0 starting over: the file may be an old run's).
    Ignore,
}

impl TokenizerFile {
    fn for_node(writes: bool, resume: bool) -> Self {
        match (writes, resume) {
            (true, _) => Self::ReuseOrSave,
            (false, true) => Self::Reuse,
            (false, false) => Self::Ignore,
        }
    }
}

/// The tokenizer of the run: trained on the data's `corpus.txt` once, then reused from the run
/// folder (`file` says whether it may be read and saved there).
fn tokenizer(
    run_dir: &Path,
    data_dir: &Path,
    vocab_size: usize,
    file: TokenizerFile,
) -> Result<RobertaTokenizer, TrainError> {
    let path = run_dir.join("tokenizer.json");
    if file != TokenizerFile::Ignore && path.exists() {
        return Ok(RobertaTokenizer::from_file(&path)?);
    }
    if data_dir.as_os_str().is_empty() {
        return Err(TrainError::Setting(
            "no data folder holds a corpus.txt to train a tokenizer on: pass --tokenizer (a RoBERTa \
             tokenizer.json, or vocab.json + merges.txt) or --init a model that carries one"
                .into(),
        ));
    }
    let corpus_path = data_dir.join("corpus.txt");
    let corpus = std::fs::read_to_string(&corpus_path).map_err(io(&corpus_path))?;
    let tokenizer = RobertaTokenizer::train(corpus.lines(), vocab_size, 2)?;
    if file == TokenizerFile::ReuseOrSave {
        tokenizer.save(&path)?;
    }
    Ok(tokenizer)
}

/// The run being trained: its folder, configuration, tokenizer, metrics log and stage summaries.
/// Tasks read their settings from it and train through it.
pub struct Workspace<'a> {
    /// How the job runs.
    pub options: &'a JobOptions,
    /// Every hyper-parameter (the model's sizes as loaded).
    pub config: RunConfig,
    /// `runs/<name>`.
    pub run_dir: PathBuf,
    /// The run's tokenizer.
    pub tokenizer: RobertaTokenizer,
    /// The metrics log (node 0 only).
    log: Option<MetricsLog>,
    /// The connections to the other nodes, in a run over several machines.
    pub link: Option<Arc<NodeLink>>,
    stages: BTreeMap<String, StageSummary>,
    skipped: usize,
}

impl Workspace<'_> {
    /// Tokenisation to the run's text length, with MLM masking when `masked`.
    pub fn text(&self, masked: bool) -> TextCollate {
        TextCollate {
            tokenizer: self.tokenizer.clone(),
            max_len: self.config.model.max_text_len,
            masker: masked.then(|| TextCollate::default_masker(&self.tokenizer)),
        }
    }

    /// The image transform of training and evaluation: square resize to the model's size.
    pub fn image_transform(&self) -> ImageTransform {
        ImageTransform::Resize {
            size: self.config.model.fiber.swin.image_size,
        }
    }

    /// The loader settings of `stage`: its batch size, the run's seed, `--strict`.
    pub fn loader_config(&self, stage: Stage) -> LoaderConfig {
        LoaderConfig {
            strict: self.options.strict,
            ..LoaderConfig::new(stage.config(&self.config).batch_size, self.config.seed)
        }
    }

    /// What `stage` loads: `samples`, resized, tokenised (masked when `masked`).
    pub fn input(&self, samples: ImageTextSamples, stage: Stage, masked: bool) -> ImageTextInput {
        ImageTextInput {
            samples,
            transform: self.image_transform(),
            text: self.text(masked),
            loader: self.loader_config(stage),
        }
    }

    /// The run's evaluation settings and tokenizer.
    pub fn evaluator(&self) -> Evaluator<'_> {
        Evaluator {
            config: &self.config,
            tokenizer: &self.tokenizer,
        }
    }

    /// Counts samples skipped outside the stage loop (e.g. queued negatives that could not be
    /// loaded again) in the report.
    pub fn add_skipped(&mut self, samples: usize) {
        self.skipped += samples;
    }

    /// Warns about each of `problems` (found reading `what`); with `--strict`, fails on them.
    pub fn warn(&self, problems: &Problems, what: &str) -> Result<(), TrainError> {
        if self.options.strict && !problems.is_empty() {
            return Err(problems_error(problems, what));
        }
        for p in &problems.items {
            eprintln!(
                "warning: {} [{}]: {}",
                p.file.display(),
                p.location,
                p.message
            );
        }
        Ok(())
    }

    /// The stages trained so far and the samples skipped, taken for the report.
    pub fn take_summaries(&mut self) -> (BTreeMap<String, StageSummary>, usize) {
        (std::mem::take(&mut self.stages), self.skipped)
    }

    /// Writes the loss curves of the metrics log (`loss.svg`).
    pub fn write_loss_curves(&self) -> Result<(), TrainError> {
        let Some(log) = &self.log else {
            return Ok(());
        };
        let svg = loss_svg(&log.records()?);
        fiber_core::store::write_atomically(&self.run_dir.join("loss.svg"), svg.as_bytes())?;
        Ok(())
    }

    /// Runs one stage's training loop and records its summary; returns the model to evaluate
    /// (the moving average of the weights when the stage keeps one).
    pub fn train<B: AutodiffBackend, T: StageTask<B>>(
        &mut self,
        stage: Stage,
        task: &mut T,
        model: T::Model,
        device: &B::Device,
    ) -> Result<T::Model, TrainError> {
        let name = stage.folder();
        let stage_config = stage.config(&self.config).clone();
        let devices = self.options.devices.devices::<B>(device);
        let replicas = self.config.replicas.clone();
        let link = self.link.clone();
        let outcome = StageRunner {
            link: link.as_ref(),
            ..self.stage_runner(name, &stage_config, &replicas)
        }
        .run(task, model, self.log.as_mut(), &devices)?;
        self.skipped += outcome.skipped.len();
        self.stages.insert(
            name.to_string(),
            StageSummary {
                steps: outcome.steps,
                seconds: outcome.seconds,
                reused: outcome.reused,
            },
        );
        Ok(outcome.into_evaluated())
    }

    fn stage_runner<'s>(
        &self,
        name: &'s str,
        stage: &'s StageConfig,
        replicas: &'s ReplicaConfig,
    ) -> StageRunner<'s> {
        let options = self.options;
        StageRunner {
            name,
            dir: self.run_dir.join(name),
            config: stage,
            seed: options.config.seed,
            resume: options.resume,
            stop_after: options
                .stop_after
                .as_ref()
                .filter(|(s, _)| s == name)
                .map(|(_, n)| *n),
            replicas,
            link: None,
        }
    }

    /// Whether this process writes the run's files: checkpoints, metrics, evaluations and the
    /// report (every run on one machine; node 0 of a run over several).
    pub fn writes(&self) -> bool {
        self.options.nodes.writes()
    }
}

impl<'a> Workspace<'a> {
    /// Prepares the run folder, the data and the tokenizer, and the model to start from (with a
    /// description of where it came from).
    pub fn open<B: AutodiffBackend>(
        options: &'a JobOptions,
        device: &B::Device,
    ) -> Result<(Self, StartModel<B>, String), TrainError> {
        let mut config = options.config.clone();
        if config.data_dir.as_os_str().is_empty() && config.annotations.is_empty() {
            return Err(TrainError::Setting(
                "no data: pass --data DIR, or --annotations FILE… with --images DIR (this preset has no built-in data)".into(),
            ));
        }
        let run_dir = options.runs_dir.join(&config.name);
        // The other nodes of a run over several machines read the run folder (node 0 has
        // prepared it before they open it) and write nothing.
        let writes = options.nodes.writes();
        match options.stage {
            _ if !writes => {}
            // The main job starts the whole run over; one stage starts only its own folder over.
            None if !options.resume && run_dir.exists() => {
                println!(
                    "starting {} over (use --resume to continue it)",
                    run_dir.display()
                );
                std::fs::remove_dir_all(&run_dir).map_err(io(&run_dir))?;
            }
            Some(stage) if !options.resume && run_dir.join(stage.folder()).exists() => {
                let dir = run_dir.join(stage.folder());
                println!(
                    "starting {} over (use --resume to continue it)",
                    dir.display()
                );
                std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
            }
            _ => {}
        }
        if writes {
            std::fs::create_dir_all(&run_dir).map_err(io(&run_dir))?;
        }
        let data_dir = config.data_dir.clone();
        let folder_given = !data_dir.as_os_str().is_empty();
        if folder_given && (!data_dir.exists() || data_dir.join("world.json").exists()) {
            let world = write_shapes_world(&config.world, &data_dir)?;
            let verb = if world.reused { "reusing" } else { "generated" };
            println!(
            "{verb} the shapes world in {}: {} images, {} captions, {} questions, {} statements",
            data_dir.display(),
            world.counts.images,
            world.counts.captions,
            world.counts.questions,
            world.counts.statements
        );
        }
        if let Some(stage) = options.stage.filter(|s| s.starts_from_detector()) {
            let (detector, tokenizer, origin) =
                downstream_start::<B>(options, stage, &run_dir, &mut config, device)?;
            return Self::finish_open(options, config, run_dir, tokenizer)
                .map(|ws| (ws, StartModel::Detector(detector), origin));
        }
        // Where the model starts: --init, else (for a fine-tuning stage) this run's pre-training.
        let init = match (&options.init, options.stage) {
            (Some(init), _) => Some(init.clone()),
            (None, None | Some(Stage::Coarse)) => None,
            (None, Some(stage)) => {
                if CheckpointDir::new(run_dir.join(Stage::Coarse.folder()).join("checkpoints"), 1)
                    .latest()?
                    .is_none()
                {
                    return Err(TrainError::NoPretraining {
                        stage: stage.name().to_string(),
                        run: run_dir,
                    });
                }
                Some(InitSource::Run {
                    dir: run_dir.clone(),
                    stage: Stage::Coarse.folder().into(),
                    named: false,
                })
            }
        };
        let (model, tokenizer, origin) = match init {
            Some(init) => {
                let loaded = init.load::<B>(
                    options.tokenizer.as_deref(),
                    config.model.fiber.num_fuse_block,
                    device,
                )?;
                for note in &loaded.notes {
                    println!("init: {note}");
                }
                if loaded.config != config.model.fiber {
                    println!("the model's configuration comes from {}", init.describe());
                }
                config.model.fiber = loaded.config;
                (loaded.model, loaded.tokenizer, init.describe())
            }
            None => {
                let tokenizer = match &options.tokenizer {
                    Some(path) => RobertaTokenizer::from_dir_or_file(path)?,
                    None => tokenizer(
                        &run_dir,
                        &data_dir,
                        config.model.tokenizer_vocab_size,
                        TokenizerFile::for_node(writes, options.resume),
                    )?,
                };
                config.model.fiber.roberta.vocab_size = tokenizer.vocab_size();
                B::seed(device, config.seed);
                let model = FiberModel::<B>::new(&config.model.fiber, true, device)?;
                (model, tokenizer, "a new model".to_string())
            }
        };
        Self::finish_open(options, config, run_dir, tokenizer)
            .map(|ws| (ws, StartModel::Fiber(model), origin))
    }

    /// Writes the run's tokenizer and configuration and opens its metrics log.
    fn finish_open(
        options: &'a JobOptions,
        config: RunConfig,
        run_dir: PathBuf,
        tokenizer: RobertaTokenizer,
    ) -> Result<Self, TrainError> {
        let log = if options.nodes.writes() {
            tokenizer.save(run_dir.join("tokenizer.json"))?;
            std::fs::write(run_dir.join("config.toml"), config.to_toml()).map_err(io(&run_dir))?;
            Some(MetricsLog::open(&run_dir.join("metrics.jsonl"))?)
        } else {
            None
        };
        Ok(Workspace {
            options,
            config,
            run_dir,
            tokenizer,
            log,
            link: None,
            stages: Default::default(),
            skipped: 0,
        })
    }
}

/// The detector a downstream stage starts from: `--init`, else the run's fine-grained stage.
/// The backbone's sizes and the detector's architecture come from the source; the stage's data
/// and post-processing settings stay the run's.
fn downstream_start<B: AutodiffBackend>(
    options: &JobOptions,
    stage: Stage,
    run_dir: &Path,
    config: &mut RunConfig,
    device: &B::Device,
) -> Result<(GroundingDetector<B>, RobertaTokenizer, String), TrainError> {
    let init = match &options.init {
        Some(init) => init.clone(),
        None => {
            let fine =
                CheckpointDir::new(run_dir.join(Stage::Fine.folder()).join("checkpoints"), 1);
            if fine.latest()?.is_none() {
                return Err(TrainError::NoFineStage {
                    stage: stage.name().to_string(),
                    run: run_dir.to_path_buf(),
                });
            }
            InitSource::fine_stage_of(run_dir)
        }
    };
    let start = init.downstream_detector::<B>(
        &config.detector,
        options.tokenizer.as_deref(),
        config.model.fiber.num_fuse_block,
        config.detector_init_seed(),
        device,
    )?;
    for note in &start.notes {
        println!("init: {note}");
    }
    if start.fiber != config.model.fiber {
        println!("the model's configuration comes from {}", init.describe());
    }
    config.model.fiber = start.fiber;
    if let Some(settings) = start.settings {
        config.detector.adopt_architecture(&settings);
    }
    Ok((start.model, start.tokenizer, init.describe()))
}
