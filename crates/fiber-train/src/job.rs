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
use fiber_data::shapes::write_shapes_world;
use fiber_data::vqa::{read_vqa, AnswerVocab, VqaRecord};
use fiber_data::{read_karpathy, CaptionDataset, Problems, Split};
use fiber_heads::{ClassifierHead, FiberModel};
use fiber_roberta::RobertaTokenizer;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::Serialize;

use crate::config::{RunConfig, StageConfig};
use crate::error::TrainError;
use crate::eval::{
    decode_config, evaluate_captions, evaluate_mlm, evaluate_retrieval, evaluate_vqa,
    CaptionReport, MlmReport, RetrievalReport, VqaReport,
};
use crate::log::{loss_svg, MetricsLog};
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

/// `report.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Retrieval on held-out images.
    pub retrieval: RetrievalReport,
    /// VQA on held-out questions.
    pub vqa: VqaReport,
    /// Captioning of held-out images.
    pub captioning: CaptionReport,
    /// Masked-token prediction on held-out captions.
    pub mlm: MlmReport,
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

/// Runs the main job on backend `B`.
pub fn run_job<B: AutodiffBackend>(
    options: &JobOptions,
    device: &B::Device,
) -> Result<Report, TrainError> {
    let start = Instant::now();
    let config = &options.config;
    let run_dir = options.runs_dir.join(&config.name);
    if !options.resume && run_dir.exists() {
        println!(
            "starting {} over (use --resume to continue it)",
            run_dir.display()
        );
        std::fs::remove_dir_all(&run_dir).map_err(io(&run_dir))?;
    }
    std::fs::create_dir_all(&run_dir).map_err(io(&run_dir))?;
    std::fs::write(run_dir.join("config.toml"), config.to_toml()).map_err(io(&run_dir))?;
    let data_dir = &config.data_dir;
    if !data_dir.exists() || data_dir.join("world.json").exists() {
        let world = write_shapes_world(&config.world, data_dir)?;
        let verb = if world.reused { "reusing" } else { "generated" };
        println!(
            "{verb} the shapes world in {}: {} images, {} captions, {} questions",
            data_dir.display(),
            world.counts.images,
            world.counts.captions,
            world.counts.questions
        );
    }
    let tokenizer = tokenizer(&run_dir, data_dir, config.model.tokenizer_vocab_size)?;
    let max_len = config.model.max_text_len;
    let image_size = config.model.fiber.swin.image_size;
    let mut fiber_config = config.model.fiber.clone();
    fiber_config.roberta.vocab_size = tokenizer.vocab_size();

    // Data, through the real readers.
    let mut problems = Problems::default();
    let (train, test, vqa_train, vqa_test) = read_splits(data_dir, &mut problems)?;
    if options.strict && !problems.is_empty() {
        return Err(problems_error(&problems, "the annotations"));
    }
    for p in &problems.items {
        eprintln!(
            "warning: {} [{}]: {}",
            p.file.display(),
            p.location,
            p.message
        );
    }
    let resize = ImageTransform::Resize { size: image_size };
    let masker = TextCollate::default_masker(&tokenizer);
    let plain_text = TextCollate {
        tokenizer: tokenizer.clone(),
        max_len,
        masker: None,
    };

    let mut log = MetricsLog::open(&run_dir.join("metrics.jsonl"))?;
    let mut stages = std::collections::BTreeMap::new();
    let mut skipped = 0usize;
    let mut record = |name: &str, steps: u64, seconds: f64, reused: bool, skipped_here: usize| {
        skipped += skipped_here;
        stages.insert(
            name.to_string(),
            StageSummary {
                steps,
                seconds,
                reused,
            },
        );
    };

    // 1. Coarse pre-training.
    B::seed(device, config.seed);
    let mut model = FiberModel::<B>::new(&fiber_config, true, device)?;
    if config.model.gate_init != 0.0 {
        model
            .backbone
            .visit_fusion_weights(&mut SetGates(config.model.gate_init), "");
    }
    let parameters = model.num_params();
    println!(
        "model: {parameters} parameters; tokenizer: {} tokens; {} training captions",
        tokenizer.vocab_size(),
        train.captions.len()
    );
    let mut pretrain_task = PretrainTask::<B>::new(
        ImageTextInput {
            samples: caption_samples(&train),
            transform: resize.clone(),
            text: TextCollate {
                masker: Some(masker.clone()),
                ..plain_text.clone()
            },
            loader: loader_config(&config.pretrain, config.seed, options.strict),
        },
        config.queue_size,
        config.seed,
        device.clone(),
    );
    pretrain_task.loss_weights = config.loss_weights;
    let outcome = stage_runner(options, &run_dir, "pretrain", &config.pretrain).run(
        &mut pretrain_task,
        model,
        &mut log,
        device,
    )?;
    record(
        "pretrain",
        outcome.steps,
        outcome.seconds,
        outcome.reused,
        outcome.skipped.len(),
    );
    let pretrained = outcome.model;

    // 2. VQA fine-tuning from the pre-trained weights.
    let vocab = AnswerVocab::build(
        &vqa_train,
        fiber_data::vqa::DEFAULT_MIN_ANSWER_COUNT
            .min(vqa_train.len())
            .max(1),
    );
    let answers_json = serde_json::to_string_pretty(&vocab.answers).expect("answers serialise");
    fiber_core::store::write_atomically(&run_dir.join("answers.json"), answers_json.as_bytes())?;
    let (vqa_train_samples, targets) = vqa_samples(&vqa_train, &vocab);
    B::seed(device, config.seed.wrapping_add(1));
    let vqa_model = VqaModel {
        fiber: pretrained.clone(),
        vqa_classifier: ClassifierHead::vqa(
            2 * fiber_config.roberta.hidden_size,
            vocab.len(),
            device,
        ),
    };
    let mut vqa_task = VqaTask::<B> {
        input: ImageTextInput {
            samples: vqa_train_samples,
            transform: resize.clone(),
            text: plain_text.clone(),
            loader: loader_config(&config.vqa, config.seed, options.strict),
        },
        targets,
        answers: vocab.len(),
        device: device.clone(),
    };
    let outcome = stage_runner(options, &run_dir, "vqa", &config.vqa).run(
        &mut vqa_task,
        vqa_model,
        &mut log,
        device,
    )?;
    record(
        "vqa",
        outcome.steps,
        outcome.seconds,
        outcome.reused,
        outcome.skipped.len(),
    );
    let vqa_model = outcome.model;

    // 3. Captioning fine-tuning from the pre-trained weights.
    let mut caption_task = CaptionTask::<B> {
        input: ImageTextInput {
            samples: caption_samples(&train),
            transform: resize.clone(),
            text: plain_text.clone(),
            loader: loader_config(&config.caption, config.seed, options.strict),
        },
        device: device.clone(),
    };
    let outcome = stage_runner(options, &run_dir, "caption", &config.caption).run(
        &mut caption_task,
        pretrained.clone(),
        &mut log,
        device,
    )?;
    record(
        "caption",
        outcome.steps,
        outcome.seconds,
        outcome.reused,
        outcome.skipped.len(),
    );
    let caption_model = outcome.model;
    let train_seconds = start.elapsed().as_secs_f64();

    // 4. Evaluation on the test split (inner backend, no autodiff).
    let eval_start = Instant::now();
    let data = EvalData::new(config, &tokenizer, &train, &test, vqa_test, &vocab)?;
    let pretrained_eval = pretrained.valid();
    let retrieval = data.retrieval(&pretrained_eval, device)?;
    let mlm = data.mlm(&pretrained_eval, device)?;
    let vqa = data.vqa(&vqa_model.valid(), device)?;
    let captioning = data.captioning(&caption_model.valid(), device)?;
    let eval_seconds = eval_start.elapsed().as_secs_f64();

    let steps = stages.values().map(|s: &StageSummary| s.steps).sum();
    let report = Report {
        retrieval,
        vqa,
        captioning,
        mlm,
        steps,
        seconds: train_seconds + eval_seconds,
        eval_seconds,
        skipped_samples: skipped + pretrain_task.refetch_failures,
        stages,
        backend: options.backend.clone(),
        parameters,
    };
    let json = serde_json::to_string_pretty(&report).expect("the report serialises");
    fiber_core::store::write_atomically(&run_dir.join("report.json"), json.as_bytes())?;
    let svg = loss_svg(&log.records()?);
    fiber_core::store::write_atomically(&run_dir.join("loss.svg"), svg.as_bytes())?;
    Ok(report)
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

/// The summary table printed at the end of the job.
pub fn summary_table(report: &Report) -> String {
    let r = &report.retrieval;
    let mut out = String::new();
    out.push_str("| task | metric | value | chance / baseline |\n|---|---|---|---|\n");
    let chance = |k: usize| r.chance[k];
    for (name, recalls) in [("retrieval ITC", &r.itc), ("retrieval ITM re-rank", &r.itm)] {
        out.push_str(&format!(
            "| {name} | text→image R@1 / R@5 | {:.3} / {:.3} | {:.3} / {:.3} |\n",
            recalls.ir1,
            recalls.ir5,
            chance(0),
            chance(1)
        ));
        out.push_str(&format!(
            "| {name} | image→text R@1 / R@5 | {:.3} / {:.3} | {:.3} / {:.3} |\n",
            recalls.tr1,
            recalls.tr5,
            chance(0),
            chance(1)
        ));
    }
    out.push_str(&format!(
        "| VQA | accuracy | {:.3} | {:.3} (always \"{}\") |\n",
        report.vqa.accuracy, report.vqa.majority_baseline, report.vqa.majority_answer
    ));
    out.push_str(&format!(
        "| captioning | BLEU-4 / CIDEr-D | {:.3} / {:.3} | — |\n",
        report.captioning.bleu4, report.captioning.cider
    ));
    out.push_str(&format!(
        "| MLM | accuracy | {:.3} | {:.3} (most frequent token) |\n",
        report.mlm.accuracy, report.mlm.most_frequent_token_baseline
    ));
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

/// The training and test splits of a data folder as the job reads them: Karpathy captions and
/// VQAv2 `train` / `test` questions. Problems are returned for the caller to report.
pub fn read_splits(
    data_dir: &Path,
    problems: &mut Problems,
) -> Result<
    (
        CaptionDataset,
        CaptionDataset,
        Vec<VqaRecord>,
        Vec<VqaRecord>,
    ),
    TrainError,
> {
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
    let mut vqa_split = |split: &str| -> Result<Vec<VqaRecord>, TrainError> {
        let questions = data_dir.join(format!("v2_OpenEnded_mscoco_{split}_questions.json"));
        let answers = data_dir.join(format!("v2_mscoco_{split}_annotations.json"));
        Ok(read_vqa(
            &questions,
            Some(&answers),
            &data_dir.join(split),
            &format!("COCO_{split}_"),
            problems,
        )?)
    };
    let vqa_train = vqa_split("train")?;
    let vqa_test = vqa_split("test")?;
    Ok((
        captions.split(Split::Train),
        captions.split(Split::Test),
        vqa_train,
        vqa_test,
    ))
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
}

/// Evaluates a saved run on its data's test split; the result as JSON.
pub fn evaluate_saved<B: Backend>(
    run: &crate::run::RunFolder,
    data_dir: &Path,
    task: EvalTask,
    device: &B::Device,
) -> Result<serde_json::Value, TrainError> {
    let mut problems = Problems::default();
    let (train, test, _, vqa_test) = read_splits(data_dir, &mut problems)?;
    let answers = run.dir.join("answers.json");
    let vocab = match std::fs::read_to_string(&answers) {
        Ok(text) => AnswerVocab::from_answers(
            serde_json::from_str(&text)
                .map_err(|e| TrainError::Checkpoint(format!("{}: {e}", answers.display())))?,
        ),
        Err(_) => AnswerVocab::from_answers(Vec::new()),
    };
    let vqa_records = if task == EvalTask::Vqa {
        vqa_test
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
        EvalTask::Retrieval => json(&data.retrieval(&run.model::<B>("pretrain", device)?, device)?),
        EvalTask::Mlm => json(&data.mlm(&run.model::<B>("pretrain", device)?, device)?),
        EvalTask::Caption => json(&data.captioning(&run.model::<B>("caption", device)?, device)?),
        EvalTask::Vqa => {
            let (model, _) = run.vqa_model::<B>(device)?;
            json(&data.vqa(&model, device)?)
        }
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
