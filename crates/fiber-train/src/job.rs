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
use fiber_heads::{ClassifierHead, DecodeConfig, FiberModel};
use fiber_roberta::RobertaTokenizer;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::Serialize;

use crate::config::{RunConfig, StageConfig};
use crate::error::TrainError;
use crate::eval::{
    evaluate_captions, evaluate_mlm, evaluate_retrieval, evaluate_vqa, CaptionReport, MlmReport,
    RetrievalReport, VqaReport,
};
use crate::log::{loss_svg, MetricsLog};
use crate::stage::{load_model, StageRunner};
use crate::tasks::{vqa_samples, CaptionTask, ImageTextSamples, PretrainTask, VqaModel, VqaTask};

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

/// The held-out images of the evaluation, loaded once.
fn load_images(paths: &[PathBuf], size: usize) -> Result<Vec<PixelImage>, TrainError> {
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
    let captions = read_karpathy(&karpathy, data_dir, &mut problems)?;
    let vqa_split = |split: &str, problems: &mut Problems| -> Result<Vec<VqaRecord>, TrainError> {
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
    let vqa_train = vqa_split("train", &mut problems)?;
    let vqa_test = vqa_split("test", &mut problems)?;
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
    let train = captions.split(Split::Train);
    let test = captions.split(Split::Test);
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
    let model = FiberModel::<B>::new(&fiber_config, true, device)?;
    let parameters = model.num_params();
    println!(
        "model: {parameters} parameters; tokenizer: {} tokens; {} training captions",
        tokenizer.vocab_size(),
        train.captions.len()
    );
    let mut pretrain_task = PretrainTask::<B>::new(
        caption_samples(&train),
        resize.clone(),
        TextCollate {
            masker: Some(masker.clone()),
            ..plain_text.clone()
        },
        loader_config(&config.pretrain, config.seed, options.strict),
        config.queue_size,
        config.seed,
        device.clone(),
    );
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
        samples: vqa_train_samples,
        targets,
        answers: vocab.len(),
        transform: resize.clone(),
        text: plain_text.clone(),
        loader: loader_config(&config.vqa, config.seed, options.strict),
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
        samples: caption_samples(&train),
        transform: resize.clone(),
        text: plain_text.clone(),
        loader: loader_config(&config.caption, config.seed, options.strict),
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
    let eval = &config.eval;
    let inner = device;
    let n = eval.retrieval_candidates.min(test.images.len());
    let first_caption: HashMap<usize, &str> = test
        .captions
        .iter()
        .rev()
        .map(|c| (c.image, c.text.as_str()))
        .collect();
    let eval_paths: Vec<PathBuf> = test
        .images
        .iter()
        .take(n.max(eval.caption_images))
        .map(|i| i.path.clone())
        .collect();
    let eval_images = load_images(&eval_paths, image_size)?;
    let texts: Vec<String> = (0..n)
        .map(|i| {
            first_caption
                .get(&i)
                .copied()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    let pretrained_eval = pretrained.valid();
    let retrieval = evaluate_retrieval(
        &pretrained_eval,
        &eval_images[..n],
        &texts,
        &tokenizer,
        max_len,
        eval.itm_rerank_k,
        inner,
    )?;
    let most_frequent = most_frequent_token(&train, &tokenizer, max_len)?;
    let mlm = evaluate_mlm(
        &pretrained_eval,
        &eval_images[..n],
        &texts,
        most_frequent,
        &masker,
        &tokenizer,
        max_len,
        config.seed ^ 0x3A5C,
        inner,
    )?;
    let vqa_images = load_images(
        &vqa_test.iter().map(|r| r.image.clone()).collect::<Vec<_>>(),
        image_size,
    )?;
    let majority = vocab.answers.first().cloned().unwrap_or_default();
    let vqa = evaluate_vqa(
        &vqa_model.valid(),
        &vqa_test,
        &vqa_images,
        &vocab,
        &majority,
        &tokenizer,
        max_len,
        64,
        inner,
    )?;
    let special = tokenizer.special();
    let decode = DecodeConfig {
        beam_size: eval.beam_size,
        max_len: eval.max_caption_len,
        length_normalized: true,
        bos: special.bos as i64,
        eos: special.eos as i64,
        pad: special.pad as i64,
        mask: special.mask as i64,
    };
    let k = eval.caption_images.min(eval_images.len());
    let references: Vec<Vec<String>> = (0..k)
        .map(|i| {
            test.captions
                .iter()
                .filter(|c| c.image == i)
                .map(|c| c.text.clone())
                .collect()
        })
        .collect();
    let captioning = evaluate_captions(
        &caption_model.valid(),
        &eval_images[..k],
        &references,
        &tokenizer,
        &decode,
        inner,
    )?;
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

/// Loads a finished stage's weights into `model` (used by `--init`).
pub fn init_from<B: Backend, M: crate::stage::VisitWeights<B>>(
    model: &mut M,
    path: &Path,
) -> Result<(), TrainError> {
    let store = fiber_core::TensorStore::read_any(path)?;
    load_model(model, store)
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
