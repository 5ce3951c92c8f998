//! The main job (`cargo xtask train`): generate (or reuse) the built-in shapes world, train a
//! tokenizer on its corpus, pre-train a small FIBER with ITC + ITM + MLM, fine-tune VQA and
//! captioning from the pre-trained weights, evaluate retrieval, VQA, captioning and MLM on the
//! held-out split, and write `runs/<name>/report.json`, `metrics.jsonl` and `loss.svg`.
//!
//! Every stage checkpoints into `runs/<name>/<stage>/checkpoints`; with `resume` each stage
//! continues from its latest checkpoint, and a finished stage is loaded instead of retrained.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use fiber_data::image::PixelImage;
use fiber_data::loader::{ImageTransform, LoaderConfig, TextCollate};
use fiber_data::nlvr2::{read_nlvr2, Nlvr2Record};
use fiber_data::shapes::write_shapes_world;
use fiber_data::vqa::{read_vqa, AnswerVocab, VqaRecord};
use fiber_data::{read_karpathy, CaptionDataset, Problems, Split};
use fiber_heads::{ClassifierHead, FiberModel};
use fiber_roberta::RobertaTokenizer;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::Serialize;

use crate::checkpoint::CheckpointDir;
use crate::config::{RunConfig, StageConfig};
use crate::error::TrainError;
use crate::eval::{
    decode_config, evaluate_captions, evaluate_mlm, evaluate_nlvr2, evaluate_retrieval,
    evaluate_vqa, CaptionReport, MlmReport, Nlvr2Report, RetrievalReport, VqaReport,
};
use crate::finetune_retrieval::{RetrievalObjective, RetrievalTask};
use crate::init::InitSource;
use crate::log::{loss_svg, MetricsLog};
use crate::nlvr2::{Nlvr2Model, Nlvr2Task, PairSamples};
use crate::stage::StageRunner;
use crate::tasks::{
    vqa_samples, CaptionTask, ImageTextInput, ImageTextSamples, PretrainTask, VqaModel, VqaTask,
};

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
}

/// Per-stage step counts and seconds.
#[derive(Debug, Clone, Serialize)]
pub struct StageSummary {
    /// Optimiser steps completed.
    pub steps: u64,
    /// Seconds this process spent training the stage.
    pub seconds: f64,
    /// Whether the stage's final checkpoint was reused.
    pub reused: bool,
}

/// `report.json` (the main job) or `<stage>/report.json` (one stage): the sections of the tasks
/// that were evaluated.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Retrieval on held-out images.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retrieval: Option<RetrievalReport>,
    /// VQA on held-out questions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vqa: Option<VqaReport>,
    /// Captioning of held-out images.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub captioning: Option<CaptionReport>,
    /// Masked-token prediction on held-out captions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mlm: Option<MlmReport>,
    /// NLVR2 on the held-out statements.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nlvr2: Option<Nlvr2Report>,
    /// The stage run alone (`None`: the main job).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    /// Where the model started (`--init`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init: Option<String>,
    /// Optimiser steps of all stages.
    pub steps: u64,
    /// Training and evaluation wall time of this process in seconds.
    pub seconds: f64,
    /// Evaluation wall time in seconds.
    pub eval_seconds: f64,
    /// Samples skipped because their image could not be loaded.
    pub skipped_samples: usize,
    /// Each stage.
    pub stages: std::collections::BTreeMap<String, StageSummary>,
    /// The backend that ran the job.
    pub backend: String,
    /// Parameters of the model.
    pub parameters: usize,
}

impl Report {
    /// An empty report of a run on `backend` with a model of `parameters`.
    pub fn new(backend: String, parameters: usize) -> Self {
        Self {
            retrieval: None,
            vqa: None,
            captioning: None,
            mlm: None,
            nlvr2: None,
            stage: None,
            init: None,
            steps: 0,
            seconds: 0.0,
            eval_seconds: 0.0,
            skipped_samples: 0,
            stages: Default::default(),
            backend,
            parameters,
        }
    }
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

/// Images read and preprocessed as evaluation and inference do (square resize to `size`,
/// ImageNet normalisation), in parallel.
pub fn load_images(paths: &[PathBuf], size: usize) -> Result<Vec<PixelImage>, TrainError> {
    use rayon::prelude::*;
    let transform = ImageTransform::Resize { size };
    paths
        .par_iter()
        .map(|p| {
            transform
                .load(p, &mut StdRng::seed_from_u64(0))
                .map_err(TrainError::from)
        })
        .collect()
}

fn loader_config(stage: &StageConfig, seed: u64, strict: bool) -> LoaderConfig {
    LoaderConfig {
        strict,
        ..LoaderConfig::new(stage.batch_size, seed)
    }
}

/// The tokenizer of the run: trained on the data's `corpus.txt` once, then reused.
fn tokenizer(
    run_dir: &Path,
    data_dir: &Path,
    vocab_size: usize,
) -> Result<RobertaTokenizer, TrainError> {
    let path = run_dir.join("tokenizer.json");
    if path.exists() {
        return Ok(RobertaTokenizer::from_file(&path)?);
    }
    let corpus_path = data_dir.join("corpus.txt");
    let corpus = std::fs::read_to_string(&corpus_path).map_err(io(&corpus_path))?;
    let tokenizer = RobertaTokenizer::train(corpus.lines(), vocab_size, 2)?;
    tokenizer.save(&path)?;
    Ok(tokenizer)
}

fn caption_samples(data: &CaptionDataset) -> ImageTextSamples {
    ImageTextSamples {
        images: Arc::new(
            data.captions
                .iter()
                .map(|c| data.images[c.image].path.clone())
                .collect(),
        ),
        texts: Arc::new(data.captions.iter().map(|c| c.text.clone()).collect()),
    }
}

/// A stage that `cargo xtask train --stage` runs on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Coarse-grained pre-training (ITC + ITM + MLM).
    Coarse,
    /// VQA fine-tuning.
    Vqa,
    /// NLVR2 fine-tuning.
    Nlvr2,
    /// ITC retrieval fine-tuning.
    RetrievalItc,
    /// ITM retrieval fine-tuning.
    RetrievalItm,
    /// Captioning fine-tuning (MLE).
    Caption,
}

impl Stage {
    /// Every stage, in the order of the names.
    pub const ALL: [Stage; 6] = [
        Stage::Coarse,
        Stage::Vqa,
        Stage::Nlvr2,
        Stage::RetrievalItc,
        Stage::RetrievalItm,
        Stage::Caption,
    ];

    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Coarse => "coarse",
            Stage::Vqa => "vqa",
            Stage::Nlvr2 => "nlvr2",
            Stage::RetrievalItc => "retrieval-itc",
            Stage::RetrievalItm => "retrieval-itm",
            Stage::Caption => "caption",
        }
    }

    /// The stage's folder in the run (also its key in `metrics.jsonl`).
    pub fn folder(self) -> &'static str {
        match self {
            Stage::Coarse => "pretrain",
            other => other.name(),
        }
    }
}

impl std::str::FromStr for Stage {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Stage::ALL
            .into_iter()
            .find(|stage| stage.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Stage::ALL.iter().map(|s| s.name()).collect();
                format!("unknown stage `{s}`; one of {}", names.join(", "))
            })
    }
}

/// The run being trained: its folder, configuration, tokenizer, metrics log and stage summaries.
struct Workspace<'a> {
    options: &'a JobOptions,
    config: RunConfig,
    run_dir: PathBuf,
    tokenizer: RobertaTokenizer,
    log: MetricsLog,
    stages: std::collections::BTreeMap<String, StageSummary>,
    skipped: usize,
}

impl Workspace<'_> {
    fn text(&self, masked: bool) -> TextCollate {
        TextCollate {
            tokenizer: self.tokenizer.clone(),
            max_len: self.config.model.max_text_len,
            masker: masked.then(|| TextCollate::default_masker(&self.tokenizer)),
        }
    }

    fn input(
        &self,
        samples: ImageTextSamples,
        stage: &StageConfig,
        masked: bool,
    ) -> ImageTextInput {
        ImageTextInput {
            samples,
            transform: ImageTransform::Resize {
                size: self.config.model.fiber.swin.image_size,
            },
            text: self.text(masked),
            loader: loader_config(stage, self.config.seed, self.options.strict),
        }
    }

    /// Runs one stage's training loop and records its summary.
    fn train<B: AutodiffBackend, T: crate::stage::StageTask<B>>(
        &mut self,
        stage: Stage,
        task: &mut T,
        model: T::Model,
        device: &B::Device,
    ) -> Result<T::Model, TrainError> {
        let name = stage.folder();
        let stage_config = self.stage_config(stage).clone();
        let outcome = stage_runner(self.options, &self.run_dir, name, &stage_config).run(
            task,
            model,
            &mut self.log,
            device,
        )?;
        self.skipped += outcome.skipped.len();
        self.stages.insert(
            name.to_string(),
            StageSummary {
                steps: outcome.steps,
                seconds: outcome.seconds,
                reused: outcome.reused,
            },
        );
        Ok(outcome.model)
    }

    fn stage_config(&self, stage: Stage) -> &StageConfig {
        let c = &self.config;
        match stage {
            Stage::Coarse => &c.pretrain,
            Stage::Vqa => &c.vqa,
            Stage::Nlvr2 => &c.nlvr2,
            Stage::RetrievalItc => &c.retrieval_itc,
            Stage::RetrievalItm => &c.retrieval_itm,
            Stage::Caption => &c.caption,
        }
    }

    fn pretrain<B: AutodiffBackend>(
        &mut self,
        model: FiberModel<B>,
        train: &CaptionDataset,
        device: &B::Device,
    ) -> Result<(FiberModel<B>, usize), TrainError> {
        let input = self.input(caption_samples(train), &self.config.pretrain, true);
        let mut task = PretrainTask::<B>::new(
            input,
            self.config.queue_size,
            self.config.seed,
            device.clone(),
        );
        task.loss_weights = self.config.loss_weights;
        let model = self.train(Stage::Coarse, &mut task, model, device)?;
        Ok((model, task.refetch_failures))
    }

    fn vqa<B: AutodiffBackend>(
        &mut self,
        fiber: FiberModel<B>,
        vqa_train: &[VqaRecord],
        device: &B::Device,
    ) -> Result<(VqaModel<B>, AnswerVocab), TrainError> {
        let vocab = AnswerVocab::build(
            vqa_train,
            fiber_data::vqa::DEFAULT_MIN_ANSWER_COUNT
                .min(vqa_train.len())
                .max(1),
        );
        let answers_json = serde_json::to_string_pretty(&vocab.answers).expect("answers serialise");
        fiber_core::store::write_atomically(
            &self.run_dir.join("answers.json"),
            answers_json.as_bytes(),
        )?;
        let (samples, targets) = vqa_samples(vqa_train, &vocab);
        B::seed(device, self.config.seed.wrapping_add(1));
        let model = VqaModel {
            vqa_classifier: ClassifierHead::vqa(
                2 * self.config.model.fiber.roberta.hidden_size,
                vocab.len(),
                device,
            ),
            fiber,
        };
        let mut task = VqaTask::<B> {
            input: self.input(samples, &self.config.vqa, false),
            targets,
            answers: vocab.len(),
            device: device.clone(),
        };
        Ok((self.train(Stage::Vqa, &mut task, model, device)?, vocab))
    }

    fn caption<B: AutodiffBackend>(
        &mut self,
        fiber: FiberModel<B>,
        train: &CaptionDataset,
        device: &B::Device,
    ) -> Result<FiberModel<B>, TrainError> {
        let mut task = CaptionTask::<B> {
            input: self.input(caption_samples(train), &self.config.caption, false),
            device: device.clone(),
        };
        self.train(Stage::Caption, &mut task, fiber, device)
    }

    fn nlvr2<B: AutodiffBackend>(
        &mut self,
        fiber: FiberModel<B>,
        train: &[Nlvr2Record],
        device: &B::Device,
    ) -> Result<Nlvr2Model<B>, TrainError> {
        B::seed(device, self.config.seed.wrapping_add(2));
        let model = Nlvr2Model::new(fiber, self.config.model.fiber.roberta.hidden_size, device);
        let mut task = Nlvr2Task::<B> {
            samples: PairSamples::from_records(train),
            transform: ImageTransform::Resize {
                size: self.config.model.fiber.swin.image_size,
            },
            text: self.text(false),
            loader: loader_config(&self.config.nlvr2, self.config.seed, self.options.strict),
            device: device.clone(),
        };
        self.train(Stage::Nlvr2, &mut task, model, device)
    }

    fn retrieval<B: AutodiffBackend>(
        &mut self,
        stage: Stage,
        fiber: FiberModel<B>,
        train: &CaptionDataset,
        device: &B::Device,
    ) -> Result<FiberModel<B>, TrainError> {
        let objective = if stage == Stage::RetrievalItc {
            RetrievalObjective::Itc
        } else {
            RetrievalObjective::Itm
        };
        let input = self.input(caption_samples(train), self.stage_config(stage), false);
        let mut task = RetrievalTask::<B>::new(
            input,
            objective,
            self.config.queue_size,
            self.config.seed,
            device.clone(),
        );
        self.train(stage, &mut task, fiber, device)
    }
}

/// Prepares the run folder, the data and the tokenizer, and the model to start from.
fn open_workspace<'a, B: AutodiffBackend>(
    options: &'a JobOptions,
    device: &B::Device,
) -> Result<(Workspace<'a>, FiberModel<B>, String), TrainError> {
    let mut config = options.config.clone();
    if config.data_dir.as_os_str().is_empty() {
        return Err(TrainError::Config(
            "no data folder: pass --data DIR (this preset has no built-in data)".into(),
        ));
    }
    let run_dir = options.runs_dir.join(&config.name);
    match options.stage {
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
    std::fs::create_dir_all(&run_dir).map_err(io(&run_dir))?;
    let data_dir = config.data_dir.clone();
    if !data_dir.exists() || data_dir.join("world.json").exists() {
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
    // Where the model starts: --init, else (for a fine-tuning stage) this run's pre-training.
    let init = match (&options.init, options.stage) {
        (Some(init), _) => Some(init.clone()),
        (None, None | Some(Stage::Coarse)) => None,
        (None, Some(stage)) => {
            if CheckpointDir::new(run_dir.join("pretrain").join("checkpoints"), 1)
                .latest()?
                .is_none()
            {
                return Err(TrainError::Config(format!(
                    "--stage {} fine-tunes a pre-trained model: pass --init (a run, a checkpoint, a FIBER checkpoint or HuggingFace folders), or run --stage coarse first ({} has no pre-training checkpoint)",
                    stage.name(),
                    run_dir.display()
                )));
            }
            Some(InitSource::Run {
                dir: run_dir.clone(),
                stage: "pretrain".into(),
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
                None => tokenizer(&run_dir, &data_dir, config.model.tokenizer_vocab_size)?,
            };
            config.model.fiber.roberta.vocab_size = tokenizer.vocab_size();
            B::seed(device, config.seed);
            let mut model = FiberModel::<B>::new(&config.model.fiber, true, device)?;
            if config.model.gate_init != 0.0 {
                model
                    .backbone
                    .visit_fusion_weights(&mut SetGates(config.model.gate_init), "");
            }
            (model, tokenizer, "a new model".to_string())
        }
    };
    tokenizer.save(run_dir.join("tokenizer.json"))?;
    std::fs::write(run_dir.join("config.toml"), config.to_toml()).map_err(io(&run_dir))?;
    let log = MetricsLog::open(&run_dir.join("metrics.jsonl"))?;
    Ok((
        Workspace {
            options,
            config,
            run_dir,
            tokenizer,
            log,
            stages: Default::default(),
            skipped: 0,
        },
        model,
        origin,
    ))
}

fn warn_problems(problems: &Problems, strict: bool, what: &str) -> Result<(), TrainError> {
    if strict && !problems.is_empty() {
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

/// Runs the main job, or one stage when `options.stage` is set, on backend `B`.
pub fn run_job<B: AutodiffBackend>(
    options: &JobOptions,
    device: &B::Device,
) -> Result<Report, TrainError> {
    let start = Instant::now();
    let (mut ws, model, origin) = open_workspace::<B>(options, device)?;
    let parameters = model.num_params();
    println!(
        "model: {parameters} parameters from {origin}; tokenizer: {} tokens",
        ws.tokenizer.vocab_size(),
    );
    let data_dir = ws.config.data_dir.clone();
    let mut problems = Problems::default();
    let mut report = Report::new(options.backend.clone(), parameters);
    let mut refetch_failures = 0;
    match options.stage {
        None => {
            let (train, test) = read_captions(&data_dir, &mut problems)?;
            let (vqa_train, vqa_test) = (
                read_vqa_training(&data_dir, &mut problems)?,
                read_vqa_split(&data_dir, "test", &mut problems)?,
            );
            warn_problems(&problems, options.strict, "the annotations")?;
            let (pretrained, failures) = ws.pretrain(model, &train, device)?;
            refetch_failures = failures;
            let (vqa_model, vocab) = ws.vqa(pretrained.clone(), &vqa_train, device)?;
            let caption_model = ws.caption(pretrained.clone(), &train, device)?;
            let train_seconds = start.elapsed().as_secs_f64();
            let eval_start = Instant::now();
            let data = EvalData::new(&ws.config, &ws.tokenizer, &train, &test, vqa_test, &vocab)?;
            let pretrained = pretrained.valid();
            report.retrieval = Some(data.retrieval(&pretrained, device)?);
            report.mlm = Some(data.mlm(&pretrained, device)?);
            report.vqa = Some(data.vqa(&vqa_model.valid(), device)?);
            report.captioning = Some(data.captioning(&caption_model.valid(), device)?);
            report.eval_seconds = eval_start.elapsed().as_secs_f64();
            report.seconds = train_seconds + report.eval_seconds;
        }
        Some(Stage::Nlvr2) => {
            let (train, test) = read_nlvr2_splits(&data_dir, &mut problems)?;
            warn_problems(&problems, options.strict, "the NLVR2 files")?;
            let model = ws.nlvr2(model, &train, device)?;
            let eval_start = Instant::now();
            let size = ws.config.model.fiber.swin.image_size;
            report.nlvr2 = Some(evaluate_nlvr2(
                &model.valid(),
                &test,
                size,
                &ws.tokenizer,
                ws.config.model.max_text_len,
                32,
                device,
            )?);
            report.eval_seconds = eval_start.elapsed().as_secs_f64();
        }
        Some(Stage::Vqa) => {
            let (vqa_train, vqa_test) = (
                read_vqa_training(&data_dir, &mut problems)?,
                read_vqa_split(&data_dir, "test", &mut problems)?,
            );
            warn_problems(&problems, options.strict, "the annotations")?;
            let (model, vocab) = ws.vqa(model, &vqa_train, device)?;
            let eval_start = Instant::now();
            let empty = CaptionDataset::default();
            let data = EvalData::new(&ws.config, &ws.tokenizer, &empty, &empty, vqa_test, &vocab)?;
            report.vqa = Some(data.vqa(&model.valid(), device)?);
            report.eval_seconds = eval_start.elapsed().as_secs_f64();
        }
        Some(stage) => {
            let (train, test) = read_captions(&data_dir, &mut problems)?;
            warn_problems(&problems, options.strict, "the annotations")?;
            let model = match stage {
                Stage::Coarse => {
                    let (model, failures) = ws.pretrain(model, &train, device)?;
                    refetch_failures = failures;
                    model
                }
                Stage::Caption => ws.caption(model, &train, device)?,
                _ => ws.retrieval(stage, model, &train, device)?,
            };
            let eval_start = Instant::now();
            let vocab = AnswerVocab::from_answers(Vec::new());
            let data = EvalData::new(&ws.config, &ws.tokenizer, &train, &test, Vec::new(), &vocab)?;
            let model = model.valid();
            if stage == Stage::Caption {
                report.captioning = Some(data.captioning(&model, device)?);
            } else {
                report.retrieval = Some(data.retrieval(&model, device)?);
            }
            if stage == Stage::Coarse {
                report.mlm = Some(data.mlm(&model, device)?);
            }
            report.eval_seconds = eval_start.elapsed().as_secs_f64();
        }
    }
    if options.stage.is_some() {
        report.seconds = start.elapsed().as_secs_f64();
    }
    report.steps = ws.stages.values().map(|s| s.steps).sum();
    report.skipped_samples = ws.skipped + refetch_failures;
    report.stage = options.stage.map(|s| s.name().to_string());
    report.init = options.init.as_ref().map(InitSource::describe);
    report.stages = std::mem::take(&mut ws.stages);
    let report_path = report_path(&options.runs_dir, &ws.config.name, options.stage);
    let json = serde_json::to_string_pretty(&report).expect("the report serialises");
    fiber_core::store::write_atomically(&report_path, json.as_bytes())?;
    let svg = loss_svg(&ws.log.records()?);
    fiber_core::store::write_atomically(&ws.run_dir.join("loss.svg"), svg.as_bytes())?;
    Ok(report)
}

/// Where [`run_job`] wrote its report.
pub fn report_path(runs_dir: &Path, name: &str, stage: Option<Stage>) -> PathBuf {
    let run = runs_dir.join(name);
    match stage {
        None => run.join("report.json"),
        Some(stage) => run.join(stage.folder()).join("report.json"),
    }
}

fn stage_runner<'a>(
    options: &JobOptions,
    run_dir: &Path,
    name: &'a str,
    stage: &'a StageConfig,
) -> StageRunner<'a> {
    StageRunner {
        name,
        dir: run_dir.join(name),
        config: stage,
        seed: options.config.seed,
        resume: options.resume,
        stop_after: options
            .stop_after
            .as_ref()
            .filter(|(s, _)| s == name)
            .map(|(_, n)| *n),
    }
}

/// The most frequent maskable token of the training captions (the MLM baseline's guess).
fn most_frequent_token(
    train: &CaptionDataset,
    tokenizer: &RobertaTokenizer,
    max_len: usize,
) -> Result<i64, TrainError> {
    let texts: Vec<&str> = train.captions.iter().map(|c| c.text.as_str()).collect();
    let tokens = tokenizer.encode_batch(&texts, max_len)?;
    let s = tokenizer.special();
    let special = [s.bos, s.eos, s.pad, s.unk, s.mask].map(|t| t as i64);
    let mut counts: HashMap<i64, usize> = HashMap::new();
    for (&id, &m) in tokens.input_ids.iter().zip(&tokens.attention_mask) {
        if m == 1 && !special.contains(&id) {
            *counts.entry(id).or_default() += 1;
        }
    }
    Ok(counts
        .into_iter()
        .max_by_key(|&(id, c)| (c, std::cmp::Reverse(id)))
        .map(|(id, _)| id)
        .unwrap_or(0))
}

/// The summary table printed at the end of the job: one row per evaluated metric.
pub fn summary_table(report: &Report) -> String {
    let mut out = String::new();
    out.push_str("| task | metric | value | chance / baseline |\n|---|---|---|---|\n");
    if let Some(r) = &report.retrieval {
        for (name, recalls) in [("retrieval ITC", &r.itc), ("retrieval ITM re-rank", &r.itm)] {
            out.push_str(&format!(
                "| {name} | text→image R@1 / R@5 | {:.3} / {:.3} | {:.3} / {:.3} |\n",
                recalls.ir1, recalls.ir5, r.chance[0], r.chance[1]
            ));
            out.push_str(&format!(
                "| {name} | image→text R@1 / R@5 | {:.3} / {:.3} | {:.3} / {:.3} |\n",
                recalls.tr1, recalls.tr5, r.chance[0], r.chance[1]
            ));
        }
    }
    if let Some(v) = &report.vqa {
        out.push_str(&format!(
            "| VQA | accuracy | {:.3} | {:.3} (always \"{}\") |\n",
            v.accuracy, v.majority_baseline, v.majority_answer
        ));
    }
    if let Some(n) = &report.nlvr2 {
        out.push_str(&format!(
            "| NLVR2 | accuracy | {:.3} | {:.3} (majority truth value) |\n",
            n.accuracy, n.majority_baseline
        ));
    }
    if let Some(c) = &report.captioning {
        out.push_str(&format!(
            "| captioning | BLEU-4 / CIDEr-D | {:.3} / {:.3} | — |\n",
            c.bleu4, c.cider
        ));
    }
    if let Some(m) = &report.mlm {
        out.push_str(&format!(
            "| MLM | accuracy | {:.3} | {:.3} (most frequent token) |\n",
            m.accuracy, m.most_frequent_token_baseline
        ));
    }
    out.push_str(&format!(
        "\n{} steps, {:.0} s (evaluation {:.0} s), {} skipped samples, backend {}\n",
        report.steps, report.seconds, report.eval_seconds, report.skipped_samples, report.backend
    ));
    out
}

/// The held-out data of the evaluation, read and preprocessed once.
pub struct EvalData<'a> {
    config: &'a RunConfig,
    tokenizer: &'a RobertaTokenizer,
    /// Test images (resized, normalised), the first `max(candidates, caption_images)`.
    images: Vec<PixelImage>,
    /// The first caption of each of the first `candidates` images.
    texts: Vec<String>,
    /// Every caption of each of the first `caption_images` images.
    references: Vec<Vec<String>>,
    most_frequent_token: i64,
    vqa: Vec<VqaRecord>,
    vqa_images: Vec<PixelImage>,
    vocab: &'a AnswerVocab,
    majority: String,
}

impl<'a> EvalData<'a> {
    /// Prepares the evaluation of `test` (captions), `vqa_test` (questions); `train` gives the
    /// baselines (most frequent token), `vocab` the answers (most frequent first).
    pub fn new(
        config: &'a RunConfig,
        tokenizer: &'a RobertaTokenizer,
        train: &CaptionDataset,
        test: &CaptionDataset,
        vqa_test: Vec<VqaRecord>,
        vocab: &'a AnswerVocab,
    ) -> Result<Self, TrainError> {
        let eval = &config.eval;
        let size = config.model.fiber.swin.image_size;
        let captions_of = |i: usize| {
            test.captions
                .iter()
                .filter(|c| c.image == i)
                .map(|c| c.text.clone())
                .collect::<Vec<_>>()
        };
        // Images without a usable caption cannot be retrieved or scored; they are left out.
        let captioned: Vec<usize> = (0..test.images.len())
            .filter(|&i| !captions_of(i).is_empty())
            .collect();
        let n = eval.retrieval_candidates.min(captioned.len());
        let k = eval.caption_images.min(captioned.len());
        let chosen = &captioned[..n.max(k)];
        let paths: Vec<PathBuf> = chosen
            .iter()
            .map(|&i| test.images[i].path.clone())
            .collect();
        let texts = chosen[..n]
            .iter()
            .map(|&i| captions_of(i).swap_remove(0))
            .collect();
        let references = chosen[..k].iter().map(|&i| captions_of(i)).collect();
        let vqa_images = load_images(
            &vqa_test.iter().map(|r| r.image.clone()).collect::<Vec<_>>(),
            size,
        )?;
        Ok(Self {
            config,
            tokenizer,
            images: load_images(&paths, size)?,
            texts,
            references,
            most_frequent_token: most_frequent_token(train, tokenizer, config.model.max_text_len)?,
            vqa: vqa_test,
            vqa_images,
            vocab,
            majority: vocab.answers.first().cloned().unwrap_or_default(),
        })
    }

    /// Retrieval with ITC and ITC + ITM re-ranking.
    pub fn retrieval<B: Backend>(
        &self,
        model: &FiberModel<B>,
        device: &B::Device,
    ) -> Result<RetrievalReport, TrainError> {
        let n = self.texts.len();
        evaluate_retrieval(
            model,
            &self.images[..n],
            &self.texts,
            self.tokenizer,
            self.config.model.max_text_len,
            self.config.eval.itm_rerank_k,
            device,
        )
    }

    /// Masked-token accuracy on the retrieval captions.
    pub fn mlm<B: Backend>(
        &self,
        model: &FiberModel<B>,
        device: &B::Device,
    ) -> Result<MlmReport, TrainError> {
        let n = self.texts.len();
        let masker = TextCollate::default_masker(self.tokenizer);
        evaluate_mlm(
            model,
            &self.images[..n],
            &self.texts,
            self.most_frequent_token,
            &masker,
            self.tokenizer,
            self.config.model.max_text_len,
            self.config.seed ^ 0x3A5C,
            device,
        )
    }

    /// VQA accuracy on the test questions.
    pub fn vqa<B: Backend>(
        &self,
        model: &VqaModel<B>,
        device: &B::Device,
    ) -> Result<VqaReport, TrainError> {
        evaluate_vqa(
            model,
            &self.vqa,
            &self.vqa_images,
            self.vocab,
            &self.majority,
            self.tokenizer,
            self.config.model.max_text_len,
            64,
            device,
        )
    }

    /// BLEU-4 and CIDEr-D of beam-search captions.
    pub fn captioning<B: Backend>(
        &self,
        model: &FiberModel<B>,
        device: &B::Device,
    ) -> Result<CaptionReport, TrainError> {
        let decode = decode_config(self.tokenizer, &self.config.eval);
        let k = self.references.len();
        evaluate_captions(
            model,
            &self.images[..k],
            &self.references,
            self.tokenizer,
            &decode,
            device,
        )
    }
}

/// The Karpathy captions of a data folder (`dataset_*.json`): training and test splits.
pub fn read_captions(
    data_dir: &Path,
    problems: &mut Problems,
) -> Result<(CaptionDataset, CaptionDataset), TrainError> {
    let karpathy = std::fs::read_dir(data_dir)
        .map_err(io(data_dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("dataset_") && n.ends_with(".json"))
        })
        .ok_or_else(|| {
            TrainError::Config(format!(
                "no dataset_*.json (Karpathy captions) in {}",
                data_dir.display()
            ))
        })?;
    let captions = read_karpathy(&karpathy, data_dir, problems)?;
    Ok((captions.split(Split::Train), captions.split(Split::Test)))
}

/// VQAv2 questions and answers of `split`: `v2_OpenEnded_mscoco_{split}_questions.json` and
/// `v2_mscoco_{split}_annotations.json`, images `{split}/COCO_{split}_{id:012}.jpg`.
pub fn read_vqa_split(
    data_dir: &Path,
    split: &str,
    problems: &mut Problems,
) -> Result<Vec<VqaRecord>, TrainError> {
    let questions = data_dir.join(format!("v2_OpenEnded_mscoco_{split}_questions.json"));
    let answers = data_dir.join(format!("v2_mscoco_{split}_annotations.json"));
    Ok(read_vqa(
        &questions,
        Some(&answers),
        &data_dir.join(split),
        &format!("COCO_{split}_"),
        problems,
    )?)
}

/// The VQA training questions: `train` plus the whole `val` split when it exists (spec D.1
/// trains on VQAv2 train + val).
pub fn read_vqa_training(
    data_dir: &Path,
    problems: &mut Problems,
) -> Result<Vec<VqaRecord>, TrainError> {
    let mut records = read_vqa_split(data_dir, "train", problems)?;
    if data_dir
        .join("v2_OpenEnded_mscoco_val_questions.json")
        .exists()
    {
        records.extend(read_vqa_split(data_dir, "val", problems)?);
    }
    Ok(records)
}

/// NLVR2 training statements and the held-out ones (`test1`, else `dev`), from `nlvr2/` under
/// the data folder or from the data folder itself.
pub fn read_nlvr2_splits(
    data_dir: &Path,
    problems: &mut Problems,
) -> Result<(Vec<Nlvr2Record>, Vec<Nlvr2Record>), TrainError> {
    let root = if data_dir.join("nlvr2").join("train.json").exists() {
        data_dir.join("nlvr2")
    } else {
        data_dir.to_path_buf()
    };
    let train_file = root.join("train.json");
    if !train_file.exists() {
        return Err(TrainError::Config(format!(
            "no NLVR2 train.json in {} or {}",
            data_dir.display(),
            data_dir.join("nlvr2").display()
        )));
    }
    let train = read_nlvr2(&train_file, &root, "train", problems)?;
    let held_out = ["test1", "dev"]
        .into_iter()
        .find(|split| root.join(format!("{split}.json")).exists())
        .ok_or_else(|| {
            TrainError::Config(format!(
                "no NLVR2 test1.json or dev.json in {}",
                root.display()
            ))
        })?;
    let test = read_nlvr2(
        &root.join(format!("{held_out}.json")),
        &root,
        held_out,
        problems,
    )?;
    Ok((train, test))
}

/// Which evaluation `cargo xtask eval` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvalTask {
    /// ITC and ITC + ITM retrieval (pre-trained model).
    Retrieval,
    /// VQA accuracy (VQA model).
    Vqa,
    /// BLEU-4 and CIDEr-D (captioning model).
    Caption,
    /// Masked-token accuracy (pre-trained model).
    Mlm,
    /// NLVR2 accuracy (NLVR2 model).
    Nlvr2,
}

/// Evaluates a saved run on its data's test split; the result as JSON. `stage` names the stage
/// folder whose model is evaluated for retrieval, MLM and captioning (default: `pretrain`, and
/// `caption` for captioning).
pub fn evaluate_saved<B: Backend>(
    run: &crate::run::RunFolder,
    data_dir: &Path,
    task: EvalTask,
    stage: Option<&str>,
    device: &B::Device,
) -> Result<serde_json::Value, TrainError> {
    let mut problems = Problems::default();
    if task == EvalTask::Nlvr2 {
        let (_, test) = read_nlvr2_splits(data_dir, &mut problems)?;
        let model = run.nlvr2_model::<B>(device)?;
        let report = evaluate_nlvr2(
            &model,
            &test,
            run.config.model.fiber.swin.image_size,
            &run.tokenizer,
            run.config.model.max_text_len,
            32,
            device,
        )?;
        return Ok(serde_json::to_value(report).expect("reports serialise"));
    }
    let (train, test) = read_captions(data_dir, &mut problems)?;
    let answers = run.dir.join("answers.json");
    let vocab = match std::fs::read_to_string(&answers) {
        Ok(text) => AnswerVocab::from_answers(
            serde_json::from_str(&text)
                .map_err(|e| TrainError::Checkpoint(format!("{}: {e}", answers.display())))?,
        ),
        Err(_) => AnswerVocab::from_answers(Vec::new()),
    };
    let vqa_records = if task == EvalTask::Vqa {
        read_vqa_split(data_dir, "test", &mut problems)?
    } else {
        Vec::new()
    };
    let data = EvalData::new(
        &run.config,
        &run.tokenizer,
        &train,
        &test,
        vqa_records,
        &vocab,
    )?;
    let json = |v: &dyn erased::Json| v.to_json();
    Ok(match task {
        EvalTask::Retrieval => json(&data.retrieval(
            &run.model::<B>(stage.unwrap_or("pretrain"), device)?,
            device,
        )?),
        EvalTask::Mlm => json(&data.mlm(
            &run.model::<B>(stage.unwrap_or("pretrain"), device)?,
            device,
        )?),
        EvalTask::Caption => {
            json(&data.captioning(&run.model::<B>(stage.unwrap_or("caption"), device)?, device)?)
        }
        EvalTask::Vqa => {
            let (model, _) = run.vqa_model::<B>(device)?;
            json(&data.vqa(&model, device)?)
        }
        EvalTask::Nlvr2 => unreachable!("evaluated above"),
    })
}

mod erased {
    /// Serialisation to a JSON value, usable behind `dyn`.
    pub trait Json {
        fn to_json(&self) -> serde_json::Value;
    }

    impl<T: serde::Serialize> Json for T {
        fn to_json(&self) -> serde_json::Value {
            serde_json::to_value(self).expect("reports serialise")
        }
    }
}

/// Sets every fusion gate (`alpha_*`) to one value.
struct SetGates(f64);

impl<B: Backend> fiber_core::weights::WeightVisitor<B> for SetGates {
    fn visit<const D: usize>(
        &mut self,
        key: &str,
        param: &mut burn::module::Param<Tensor<B, D>>,
        _layout: fiber_core::weights::Layout,
    ) {
        if key.ends_with("alpha_i2t") || key.ends_with("alpha_t2i") {
            let value = param.val().zeros_like().add_scalar(self.0);
            *param = burn::module::Param::initialized(param.id, value.detach().require_grad());
        }
    }
}
