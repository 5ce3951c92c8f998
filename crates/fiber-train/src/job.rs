//! The main job (`cargo xtask train`): generate (or reuse) the built-in shapes world, train a
//! tokenizer on its corpus, pre-train a small FIBER with ITC + ITM + MLM, fine-tune VQA and
//! captioning from the pre-trained weights, evaluate retrieval, VQA, captioning and MLM on the
//! held-out split, and write `runs/<name>/report.json`, `metrics.jsonl` and `loss.svg`; or one
//! stage alone (`--stage`).
//!
//! Every stage checkpoints into `runs/<name>/<stage>/checkpoints`; with `resume` each stage
//! continues from its latest checkpoint, and a finished stage is loaded instead of retrained.
//! What each stage reads, trains and evaluates is its task's (the crate's `tasks` module).

use std::time::{Duration, Instant};

use burn::tensor::backend::AutodiffBackend;
use fiber_data::layout::{GroundingSplits, VqaFolder};
use fiber_data::Problems;
use fiber_heads::FiberModel;

use crate::error::TrainError;
use crate::init::InitSource;
use crate::input::{CaptionSplits, StageData};
use crate::nodes::{fingerprint, NodeLink};
use crate::tasks::{
    run_alone, CaptionStage, DetectStage, FineStage, GroundStage, JobTask, Nlvr2Stage,
    PretrainStage, RetrievalItcStage, RetrievalItmStage, VqaStage,
};
use crate::workspace::{FromStart, Workspace};

pub use crate::report::{report_path, summary_table, Report, StageSummary};
pub use crate::saved::{evaluate_saved, EvalTask};
pub use crate::stages::Stage;
pub use crate::workspace::JobOptions;

/// Runs the main job, or one stage when `options.stage` is set, on backend `B`.
pub fn run_job<B: AutodiffBackend>(
    options: &JobOptions,
    device: &B::Device,
) -> Result<Report, TrainError> {
    let start = Instant::now();
    // Over several machines, node 0 prepares the run folder and the data before it answers the
    // other nodes, so they open the workspace only after it.
    let nodes = &options.nodes;
    let join = || {
        let identity = format!(
            "{}\nstage {:?}\nresume {}\nstrict {}\nbackend {}\nstop {:?}",
            options.config.to_toml(),
            options.stage.map(|s| s.name()),
            options.resume,
            options.strict,
            options.backend,
            options.stop_after,
        );
        NodeLink::join(
            nodes,
            options.devices.len(),
            fingerprint(identity.as_bytes()),
            Duration::from_secs(options.config.replicas.timeout_seconds),
        )
    };
    let early = if nodes.is_multi() && !nodes.writes() {
        Some(join()?)
    } else {
        None
    };
    let (mut ws, model, origin) = Workspace::open::<B>(options, device)?;
    ws.link = match early {
        Some(link) => Some(link),
        None if nodes.is_multi() => Some(join()?),
        None => None,
    };
    if let Some(link) = &ws.link {
        let json = ws.tokenizer.to_json()?;
        link.check_same("tokenizer", fingerprint(json.as_bytes()))?;
    }
    let parameters = model.num_params();
    println!(
        "model: {parameters} parameters from {origin}; tokenizer: {} tokens",
        ws.tokenizer.vocab_size(),
    );
    let mut report = Report::new(options.backend.clone(), parameters);
    match options.stage {
        None => {
            let model = FiberModel::from_start(model, Stage::Coarse)?;
            main_job(&mut ws, model, &mut report, start, device)?
        }
        Some(stage) => {
            report.eval_seconds = match stage {
                Stage::Coarse => run_alone::<B, PretrainStage>(&mut ws, model, &mut report, device),
                Stage::Vqa => run_alone::<B, VqaStage>(&mut ws, model, &mut report, device),
                Stage::Nlvr2 => run_alone::<B, Nlvr2Stage>(&mut ws, model, &mut report, device),
                Stage::RetrievalItc => {
                    run_alone::<B, RetrievalItcStage>(&mut ws, model, &mut report, device)
                }
                Stage::RetrievalItm => {
                    run_alone::<B, RetrievalItmStage>(&mut ws, model, &mut report, device)
                }
                Stage::Caption => run_alone::<B, CaptionStage>(&mut ws, model, &mut report, device),
                Stage::Fine => run_alone::<B, FineStage>(&mut ws, model, &mut report, device),
                Stage::Detect => run_alone::<B, DetectStage>(&mut ws, model, &mut report, device),
                Stage::Ground => run_alone::<B, GroundStage>(&mut ws, model, &mut report, device),
            }?;
            report.seconds = start.elapsed().as_secs_f64();
        }
    }
    let (stages, skipped) = ws.take_summaries();
    report.steps = stages.values().map(|s| s.steps).sum();
    report.skipped_samples = skipped;
    report.stage = options.stage.map(|s| s.name().to_string());
    report.init = options.init.as_ref().map(InitSource::describe);
    report.stages = stages;
    if !ws.writes() {
        println!(
            "node {} of {}: training done; node 0 evaluates and writes the report",
            nodes.rank, nodes.count
        );
        return Ok(report);
    }
    let path = report_path(&options.runs_dir, &ws.config.name, options.stage);
    let json = serde_json::to_string_pretty(&report).expect("the report serialises");
    fiber_core::store::write_atomically(&path, json.as_bytes())?;
    ws.write_loss_curves()?;
    Ok(report)
}

/// Pre-training, then VQA and captioning from the pre-trained model; then every evaluation.
fn main_job<B: AutodiffBackend>(
    ws: &mut Workspace<'_>,
    model: FiberModel<B>,
    report: &mut Report,
    start: Instant,
    device: &B::Device,
) -> Result<(), TrainError> {
    let source = ws.config.data_source();
    let mut problems = Problems::default();
    let captions = CaptionSplits::read(&source, &mut problems)?;
    let questions = <VqaFolder as StageData>::read(&source, &mut problems)?;
    let grounded = <GroundingSplits as StageData>::read(&source, &mut problems)?;
    ws.warn(&problems, CaptionSplits::READS)?;
    let pretrained = PretrainStage::train(ws, model, &captions, device)?;
    let vqa = VqaStage::train(ws, pretrained.clone(), &questions, device)?;
    let captioner = CaptionStage::train(ws, pretrained.clone(), &captions, device)?;
    let detector = FineStage::train(ws, pretrained.clone(), &grounded, device)?;
    let train_seconds = start.elapsed().as_secs_f64();
    if !ws.writes() {
        report.seconds = train_seconds;
        return Ok(());
    }
    let eval_start = Instant::now();
    PretrainStage::evaluate(ws, &pretrained, &captions, report, device)?;
    VqaStage::evaluate(ws, &vqa, &questions, report, device)?;
    CaptionStage::evaluate(ws, &captioner, &captions, report, device)?;
    FineStage::evaluate(ws, &detector, &grounded, report, device)?;
    report.eval_seconds = eval_start.elapsed().as_secs_f64();
    report.seconds = train_seconds + report.eval_seconds;
    Ok(())
}
