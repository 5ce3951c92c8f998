//! The stages of a run: their names on the command line, their folders in the run (also their
//! keys in `metrics.jsonl`) and their settings in the configuration. Every other module takes
//! these from here.

use crate::config::{RunConfig, StageConfig};

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
    /// Fine-grained pre-training of the grounding detector.
    Fine,
    /// Detection fine-tuning of a grounding detector (class-name prompts of the detection files).
    Detect,
    /// Phrase-grounding fine-tuning of a grounding detector (the MDETR captions).
    Ground,
}

impl Stage {
    /// Every stage, in the order of the names.
    pub const ALL: [Stage; 9] = [
        Stage::Coarse,
        Stage::Vqa,
        Stage::Nlvr2,
        Stage::RetrievalItc,
        Stage::RetrievalItm,
        Stage::Caption,
        Stage::Fine,
        Stage::Detect,
        Stage::Ground,
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
            Stage::Fine => "fine",
            Stage::Detect => "detect",
            Stage::Ground => "ground",
        }
    }

    /// The stage's folder in the run (also its key in `metrics.jsonl`).
    pub fn folder(self) -> &'static str {
        match self {
            Stage::Coarse => "pretrain",
            other => other.name(),
        }
    }

    /// Whether the stage fine-tunes a grounding detector (rather than a FIBER model).
    pub fn starts_from_detector(self) -> bool {
        matches!(self, Stage::Detect | Stage::Ground)
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

impl Stage {
    /// The stage's settings in `config`.
    pub fn config(self, config: &RunConfig) -> &StageConfig {
        match self {
            Stage::Coarse => &config.pretrain,
            Stage::Vqa => &config.vqa,
            Stage::Nlvr2 => &config.nlvr2,
            Stage::RetrievalItc => &config.retrieval_itc,
            Stage::RetrievalItm => &config.retrieval_itm,
            Stage::Caption => &config.caption,
            Stage::Fine => &config.fine,
            Stage::Detect => &config.detect,
            Stage::Ground => &config.ground,
        }
    }
}
