//! Evaluation and inference on a trained run folder: `eval` (test split of the run's data),
//! `retrieve`, `vqa` and `caption` (a user's own images), on any compiled backend.

use std::path::PathBuf;

use anyhow::Result;
use burn::tensor::backend::AutodiffBackend;
use clap::{Args, ValueEnum};
use fiber_heads::grounding::phrases::parse_classes;
use fiber_train::detect::{detect_objects, ground_caption, run_classes};
use fiber_train::infer::{answer_question, caption_images, retrieve_images};
use fiber_train::job::{evaluate_saved, EvalTask};
use fiber_train::run::RunFolder;
use fiber_train::stages::Stage;
use fiber_train::{run_on, BackendJob, BackendKind, TrainError};

/// Tasks of `eval`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Task {
    /// Recall@1/5/10 with ITC and with ITC top-k + ITM re-ranking.
    Retrieval,
    /// VQA accuracy (official formula).
    Vqa,
    /// BLEU-4 and CIDEr-D of beam-search captions.
    Caption,
    /// Masked-token accuracy.
    Mlm,
    /// NLVR2 accuracy.
    Nlvr2,
    /// COCO box mAP: the 12 COCOeval statistics of `--detections` against `--gt`, or of the
    /// run's fine-grained detector on its held-out detection file.
    Detection,
    /// Phrase-grounding Recall@1/5/10 (MDETR protocol) of the run's detector.
    Grounding,
    /// Referring-expression top-1 accuracy of the run's detector (MDETR-format RefCOCO/+/g).
    Refexp,
}

/// Arguments of `eval`.
#[derive(Args, Debug, Clone)]
pub struct EvalArgs {
    /// What to evaluate.
    #[arg(long, value_enum)]
    pub task: Task,
    /// The run folder (`runs/<name>`), holding the checkpoints, tokenizer and configuration.
    #[arg(long, alias = "checkpoint", default_value = "runs/shapes")]
    pub run: PathBuf,
    /// Where the held-out data lies (default: where the run's configuration read it).
    #[command(flatten)]
    pub source: crate::data::SourceArgs,
    /// The stage whose model is evaluated, for retrieval, MLM and captioning (default: `pretrain`
    /// for retrieval and MLM, `caption` for captioning), e.g. `retrieval-itc`.
    #[arg(long)]
    pub stage: Option<String>,
    /// Compute backend.
    #[arg(long, default_value = "ndarray")]
    pub backend: BackendKind,
    /// With `--task detection`: a COCO instances file (ground truth)…
    #[arg(long, requires = "detections")]
    pub gt: Option<PathBuf>,
    /// …and a COCO results file (`[{image_id, category_id, bbox: [x, y, w, h], score}]`).
    #[arg(long, requires = "gt")]
    pub detections: Option<PathBuf>,
}

/// Arguments shared by the inference commands.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// The run folder (`runs/<name>`).
    #[arg(long, default_value = "runs/shapes")]
    pub run: PathBuf,
    /// Compute backend.
    #[arg(long, default_value = "ndarray")]
    pub backend: BackendKind,
}

/// Arguments of `retrieve`.
#[derive(Args, Debug, Clone)]
pub struct RetrieveArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// The candidate images.
    #[arg(long, num_args = 1.., required = true)]
    pub images: Vec<PathBuf>,
    /// The query texts (each gets its own ranking).
    #[arg(long, num_args = 1.., required = true)]
    pub text: Vec<String>,
    /// Re-rank this many ITC candidates with the ITM score.
    #[arg(long, default_value_t = 10)]
    pub rerank: usize,
}

/// Arguments of `vqa`.
#[derive(Args, Debug, Clone)]
pub struct VqaArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// The image.
    #[arg(long)]
    pub image: PathBuf,
    /// The question.
    #[arg(long)]
    pub question: String,
    /// How many answers to list.
    #[arg(long, default_value_t = 3)]
    pub top: usize,
}

/// Arguments of `caption`.
#[derive(Args, Debug, Clone)]
pub struct CaptionArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// The images to caption.
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
}

/// Arguments of `detect`.
#[derive(Args, Debug, Clone)]
pub struct DetectArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// The images.
    #[arg(long, num_args = 1.., required = true)]
    pub image: Vec<PathBuf>,
    /// The class names, separated by full stops (default: those the run's detector was
    /// trained on).
    #[arg(long)]
    pub classes: Option<String>,
    /// Keep detections scoring at least this.
    #[arg(long, default_value_t = 0.3)]
    pub threshold: f32,
    /// Where `<image>.json` (COCO results) and `<image>.png` (annotated) go (default:
    /// `<run>/detections`).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Arguments of `ground`.
#[derive(Args, Debug, Clone)]
pub struct GroundArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// The image.
    #[arg(long)]
    pub image: PathBuf,
    /// The caption.
    #[arg(long)]
    pub caption: String,
    /// A phrase of the caption to ground (repeatable; default: the caption's phrases, split
    /// at prepositions, conjunctions and punctuation).
    #[arg(long)]
    pub phrase: Vec<String>,
    /// Boxes listed per phrase.
    #[arg(long, default_value_t = 3)]
    pub top: usize,
    /// Where `<image>.json` and `<image>.png` go (default: `<run>/groundings`).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// What an inference command asks for.
#[derive(Clone)]
enum Request {
    Eval(EvalArgs),
    Retrieve(RetrieveArgs),
    Vqa(VqaArgs),
    Caption(CaptionArgs),
    Detect(DetectArgs),
    Ground(GroundArgs),
}

struct InferJob(Request);

impl BackendJob for InferJob {
    type Output = Result<String, TrainError>;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        type I<B> = <B as AutodiffBackend>::InnerBackend;
        match self.0 {
            Request::Eval(args) => {
                let run = RunFolder::open(&args.run)?;
                let data = match args.source.given() {
                    true => args.source.source(),
                    false => run.config.data_source(),
                };
                let task = match args.task {
                    Task::Retrieval => EvalTask::Retrieval,
                    Task::Vqa => EvalTask::Vqa,
                    Task::Caption => EvalTask::Caption,
                    Task::Detection => EvalTask::Detection,
                    Task::Grounding => EvalTask::Grounding,
                    Task::Refexp => EvalTask::Refexp,
                    Task::Mlm => EvalTask::Mlm,
                    Task::Nlvr2 => EvalTask::Nlvr2,
                };
                let report =
                    evaluate_saved::<I<B>>(&run, &data, task, args.stage.as_deref(), &device)?;
                Ok(serde_json::to_string_pretty(&report).expect("reports serialise"))
            }
            Request::Retrieve(args) => {
                let run = RunFolder::open(&args.run.run)?;
                let model = run.model::<I<B>>(Stage::Coarse.folder(), &device)?;
                let images = run.load_images(&args.images)?;
                let ranked =
                    retrieve_images(&run, &model, &images, &args.text, args.rerank, &device)?;
                let mut out = String::new();
                for (text, ranking) in args.text.iter().zip(ranked) {
                    out.push_str(&format!("{text}\n"));
                    for (rank, (i, itc, itm)) in ranking.iter().enumerate() {
                        let itm = itm.map(|s| format!("  ITM {s:+.3}")).unwrap_or_default();
                        out.push_str(&format!(
                            "  {:>2}. {}  ITC {itc:+.3}{itm}\n",
                            rank + 1,
                            args.images[*i].display()
                        ));
                    }
                }
                Ok(out)
            }
            Request::Detect(args) => {
                let run = RunFolder::open(&args.run.run)?;
                let (model, _) = run.detector_for::<I<B>>(Stage::Detect, &device)?;
                let classes = match &args.classes {
                    Some(text) => parse_classes(text),
                    None => run_classes(&run)?.ok_or_else(|| {
                        TrainError::Setting(
                            "the run kept no class names: pass --classes \"person. bicycle. dog\""
                                .into(),
                        )
                    })?,
                };
                let out = args
                    .out
                    .clone()
                    .unwrap_or_else(|| run.dir.join("detections"));
                let written = detect_objects(
                    &run,
                    &model,
                    &args.image,
                    &classes,
                    args.threshold,
                    &out,
                    &device,
                )?;
                let mut text = String::new();
                for w in &written {
                    text.push_str(&format!(
                        "{}: {} detections → {}, {}\n",
                        w.image.display(),
                        w.detections.len(),
                        w.json.display(),
                        w.png.display()
                    ));
                    for d in &w.detections {
                        text.push_str(&format!(
                            "  {} {:.3} {}\n",
                            d["category"].as_str().unwrap_or(""),
                            d["score"].as_f64().unwrap_or(0.0),
                            d["bbox"]
                        ));
                    }
                }
                Ok(text.trim_end().to_string())
            }
            Request::Ground(args) => {
                let run = RunFolder::open(&args.run.run)?;
                let (model, _) = run.detector_for::<I<B>>(Stage::Ground, &device)?;
                let out = args
                    .out
                    .clone()
                    .unwrap_or_else(|| run.dir.join("groundings"));
                let written = ground_caption(
                    &run,
                    &model,
                    &args.image,
                    &args.caption,
                    &args.phrase,
                    args.top,
                    &out,
                    &device,
                )?;
                Ok(serde_json::to_string_pretty(&written).expect("the output serialises"))
            }
            Request::Vqa(args) => {
                let run = RunFolder::open(&args.run.run)?;
                let (model, vocab) = run.vqa_model::<I<B>>(&device)?;
                let image = run.load_images(std::slice::from_ref(&args.image))?;
                let answers = answer_question(
                    &run,
                    &model,
                    &vocab,
                    &image[0],
                    &args.question,
                    args.top,
                    &device,
                )?;
                Ok(answers
                    .iter()
                    .map(|(a, p)| format!("{a}\t{p:.3}"))
                    .collect::<Vec<_>>()
                    .join("\n"))
            }
            Request::Caption(args) => {
                let run = RunFolder::open(&args.run.run)?;
                let model = run.model::<I<B>>(Stage::Caption.folder(), &device)?;
                let images = run.load_images(&args.images)?;
                let captions = caption_images(&run, &model, &images, &device)?;
                Ok(args
                    .images
                    .iter()
                    .zip(captions)
                    .map(|(p, c)| format!("{}\t{c}", p.display()))
                    .collect::<Vec<_>>()
                    .join("\n"))
            }
        }
    }
}

fn run_request(backend: BackendKind, request: Request) -> Result<()> {
    let out = run_on(backend, InferJob(request))??;
    println!("{out}");
    Ok(())
}

/// Runs `eval`.
pub fn eval(args: EvalArgs) -> Result<()> {
    if let (Some(gt), Some(detections)) = (&args.gt, &args.detections) {
        anyhow::ensure!(
            args.task == Task::Detection,
            "--gt and --detections belong to --task detection"
        );
        let stats = fiber_train::eval::detection::CocoBoxStats::evaluate_files(gt, detections)?;
        println!("{}", serde_json::to_string_pretty(&stats)?);
        return Ok(());
    }
    run_request(args.backend, Request::Eval(args))
}

/// Runs `retrieve`.
pub fn retrieve(args: RetrieveArgs) -> Result<()> {
    run_request(args.run.backend, Request::Retrieve(args))
}

/// Runs `detect`.
pub fn detect(args: DetectArgs) -> Result<()> {
    run_request(args.run.backend, Request::Detect(args))
}

/// Runs `ground`.
pub fn ground(args: GroundArgs) -> Result<()> {
    run_request(args.run.backend, Request::Ground(args))
}

/// Runs `vqa`.
pub fn vqa(args: VqaArgs) -> Result<()> {
    run_request(args.run.backend, Request::Vqa(args))
}

/// Runs `caption`.
pub fn caption(args: CaptionArgs) -> Result<()> {
    run_request(args.run.backend, Request::Caption(args))
}
