//! The report of a run (`report.json`, or `<stage>/report.json` for one stage alone) and the
//! summary table printed at its end: every evaluated metric next to its chance or baseline
//! level.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::eval::{
    CaptionReport, DetectionReport, GroundingReport, MlmReport, Nlvr2Report, RetrievalReport,
    VqaReport,
};
use crate::stages::Stage;

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
    /// COCO box mAP of the detector on the held-out detection file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detection: Option<DetectionReport>,
    /// Phrase-grounding recall of the detector on the held-out captions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grounding: Option<GroundingReport>,
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
    pub stages: BTreeMap<String, StageSummary>,
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
            detection: None,
            grounding: None,
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

/// Where the job writes its report: `report.json` of the run, or of the stage run alone.
pub fn report_path(runs_dir: &Path, name: &str, stage: Option<Stage>) -> PathBuf {
    let run = runs_dir.join(name);
    match stage {
        None => run.join("report.json"),
        Some(stage) => run.join(stage.folder()).join("report.json"),
    }
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
        out.push_str(&format!(
            "| captioning | distinct captions / images | {:.3} | {:.3} (first references) |\n",
            c.distinct_fraction, c.reference_distinct_fraction
        ));
    }
    if let Some(m) = &report.mlm {
        out.push_str(&format!(
            "| MLM | accuracy | {:.3} | {:.3} (most frequent token) |\n",
            m.accuracy, m.most_frequent_token_baseline
        ));
    }
    if let Some(d) = &report.detection {
        out.push_str(&format!(
            "| detection | AP / AP50 | {:.3} / {:.3} | {:.3} / {:.3} (prior boxes) |\n",
            d.stats.ap, d.stats.ap50, d.baseline.ap, d.baseline.ap50
        ));
    }
    if let Some(g) = &report.grounding {
        out.push_str(&format!(
            "| grounding | R@1 / R@5 / R@10 | {:.3} / {:.3} / {:.3} | {:.3} / {:.3} / {:.3} (random boxes); {:.3} / {:.3} / {:.3} (any object) |\n",
            g.recall.r1, g.recall.r5, g.recall.r10, g.chance.r1, g.chance.r5, g.chance.r10,
            g.any_object.r1, g.any_object.r5, g.any_object.r10
        ));
    }
    out.push_str(&format!(
        "\n{} steps, {:.0} s (evaluation {:.0} s), {} skipped samples, backend {}\n",
        report.steps, report.seconds, report.eval_seconds, report.skipped_samples, report.backend
    ));
    out
}
