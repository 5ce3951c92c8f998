//! What `cargo xtask bench` measures and how its results are recorded: the settings, the kinds
//! of measurement, their timings and the deterministic inputs.

use burn::config::Config;
use burn::prelude::*;
use burn::tensor::Distribution;
use fiber_fusion::FiberConfig;
use fiber_heads::PretrainBatch;
use serde::{Deserialize, Serialize};

use crate::config::ModelConfig;
use crate::error::TrainError;

/// What to measure: the model, the batch and the repetitions.
#[derive(Config, Debug, PartialEq)]
pub struct BenchConfig {
    /// The preset the model comes from (`tiny` or `base`), for the report.
    pub preset: String,
    /// The model.
    pub model: FiberConfig,
    /// Image–text pairs per batch.
    pub batch: usize,
    /// Tokens per text (`<s>` and `</s>` included).
    pub text_len: usize,
    /// Untimed runs before measuring each item.
    #[config(default = 1)]
    pub warmup: usize,
    /// Timed runs of each item.
    #[config(default = 5)]
    pub reps: usize,
    /// Which measurements to run (names of [`MeasurementKind`]); all when empty.
    #[config(default = "Vec::new()")]
    pub only: Vec<String>,
    /// Also time the step's phases (forward, backward, update), synchronising the device
    /// between them; the step's time then includes those waits.
    #[config(default = false)]
    pub phases: bool,
}

impl BenchConfig {
    /// A preset: `tiny` (the tiny training preset's model, batch 32, 32 tokens) or `base`
    /// (Swin-B/384 + RoBERTa-base with 6 fused pairs, batch 16, 40 tokens: docs/model.md §3.5).
    pub fn preset(name: &str) -> Result<Self, TrainError> {
        match name {
            "tiny" => {
                let model = ModelConfig::tiny();
                let text_len = model.max_text_len;
                Ok(Self::new("tiny".into(), model.fiber, 32, text_len))
            }
            "base" => Ok(Self::new(
                "base".into(),
                FiberConfig::fiber_base_384(),
                16,
                40,
            )),
            other => Err(TrainError::Setting(format!(
                "unknown bench preset `{other}`; expected tiny or base"
            ))),
        }
    }

    /// Checks sizes and names.
    pub fn validate(&self) -> Result<(), TrainError> {
        if self.batch < 2 || self.reps == 0 {
            return Err(TrainError::Setting(
                "the batch needs at least 2 pairs (hard negatives come from the batch) and --reps must be positive".into(),
            ));
        }
        let max = self.model.roberta.max_text_len();
        if self.text_len < 3 || self.text_len > max {
            return Err(TrainError::Setting(format!(
                "text length {} must be between 3 and the model's {max} positions",
                self.text_len
            )));
        }
        for name in &self.only {
            if MeasurementKind::from_name(name).is_none() {
                return Err(TrainError::Setting(format!(
                    "unknown measurement `{name}`; expected one of {}",
                    MeasurementKind::ALL.map(MeasurementKind::name).join(", ")
                )));
            }
        }
        self.model.validate()?;
        Ok(())
    }

    /// The measurements to run, in order.
    pub fn measurements(&self) -> Vec<MeasurementKind> {
        MeasurementKind::ALL
            .into_iter()
            .filter(|k| self.only.is_empty() || self.only.iter().any(|n| n == k.name()))
            .collect()
    }
}

/// One thing timed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MeasurementKind {
    /// The full coarse pre-training step: losses, backward, gradient norm, AdamW update.
    Step,
    /// The step's forward alone (the three losses, recording the autodiff graph).
    StepForward,
    /// Fused forward of image–text pairs and their ITM matching logit, without a graph.
    FusedInference,
    /// Dual-encoder image features (image-only path + ITC projection), without a graph.
    DualImage,
    /// Dual-encoder text features (text-only path + ITC projection), without a graph.
    DualText,
}

impl MeasurementKind {
    /// Every measurement.
    pub const ALL: [MeasurementKind; 5] = [
        MeasurementKind::Step,
        MeasurementKind::StepForward,
        MeasurementKind::FusedInference,
        MeasurementKind::DualImage,
        MeasurementKind::DualText,
    ];

    /// The key in reports (shared with `bench/reference.py`).
    pub fn name(self) -> &'static str {
        match self {
            MeasurementKind::Step => "step",
            MeasurementKind::StepForward => "step_forward",
            MeasurementKind::FusedInference => "fused_inference",
            MeasurementKind::DualImage => "dual_image",
            MeasurementKind::DualText => "dual_text",
        }
    }

    /// What one batch item is.
    pub fn unit(self) -> &'static str {
        match self {
            MeasurementKind::DualImage => "images",
            MeasurementKind::DualText => "texts",
            _ => "pairs",
        }
    }

    /// The kind named `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// Timings of one measurement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    /// [`MeasurementKind::name`].
    pub name: String,
    /// What the items are (`pairs`, `images`, `texts`).
    pub unit: String,
    /// Items per run (the batch).
    pub items: usize,
    /// Every timed run in milliseconds, sorted.
    pub runs_ms: Vec<f64>,
    /// Median run in milliseconds.
    pub median_ms: f64,
    /// Items per second at the median.
    pub per_second: f64,
    /// The training step's median phases (the step only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phases_ms: Option<StepPhases>,
    /// CPU utilisation over the timed runs: the process's CPU time (user and system, every
    /// thread) over their wall time, so 2.0 is two cores kept busy throughout. `None` where
    /// the platform does not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cores_busy: Option<f64>,
}

/// Median milliseconds of a training step's phases, the device synchronised between them
/// ([`BenchConfig::phases`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StepPhases {
    /// The three losses.
    pub forward: f64,
    /// Back-propagation, collecting the gradients and bringing them into the update's type.
    pub backward: f64,
    /// Reading back the losses and the gradient norm, and the AdamW update.
    pub optimizer: f64,
}

/// Median of `values` (sorted in place).
pub(crate) fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

impl Measurement {
    /// Sorts `runs_ms` and derives the median and rate.
    pub fn new(kind: MeasurementKind, items: usize, mut runs_ms: Vec<f64>) -> Self {
        runs_ms.sort_by(f64::total_cmp);
        let median_ms = median(runs_ms.clone());
        Self {
            name: kind.name().to_string(),
            unit: kind.unit().to_string(),
            items,
            median_ms,
            per_second: items as f64 * 1000.0 / median_ms,
            runs_ms,
            phases_ms: None,
            cores_busy: None,
        }
    }

    /// Fastest run.
    pub fn min_ms(&self) -> f64 {
        self.runs_ms[0]
    }

    /// Slowest run.
    pub fn max_ms(&self) -> f64 {
        self.runs_ms[self.runs_ms.len() - 1]
    }
}

/// The deterministic inputs of every measurement. Text row `r`, position `c` of `L`: id 0
/// (`<s>`) at `c = 0`, 2 (`</s>`) at `c = L − 1`, otherwise `3 + (131 r + 17 c) mod (V − 4)`;
/// every position is attended. MLM: interior positions with `(r + c) mod 7 = 0` become id
/// `V − 1` with the original id as label, all others are −100. Pixels are N(0, 1).
pub struct BenchInputs<B: Backend> {
    /// The pre-training batch (pixels, texts, MLM inputs).
    pub batch: PretrainBatch<B>,
}

impl<B: Backend> BenchInputs<B> {
    /// Inputs for `batch` pairs of `text_len` tokens over a vocabulary of `vocab`, images of
    /// side `image_size`.
    pub fn new(
        batch: usize,
        text_len: usize,
        vocab: usize,
        image_size: usize,
        device: &B::Device,
    ) -> Self {
        let mut ids = Vec::with_capacity(batch * text_len);
        let mut masked = Vec::with_capacity(batch * text_len);
        let mut labels = Vec::with_capacity(batch * text_len);
        for r in 0..batch {
            for c in 0..text_len {
                let id = if c == 0 {
                    0
                } else if c == text_len - 1 {
                    2
                } else {
                    3 + ((131 * r + 17 * c) % (vocab - 4)) as i64
                };
                ids.push(id);
                let interior = c > 0 && c < text_len - 1;
                if interior && (r + c) % 7 == 0 {
                    masked.push(vocab as i64 - 1);
                    labels.push(id);
                } else {
                    masked.push(id);
                    labels.push(-100);
                }
            }
        }
        let int = |values: Vec<i64>| fiber_core::host::int_matrix::<B>(&values, text_len, device);
        let pixels = Tensor::random(
            [batch, 3, image_size, image_size],
            Distribution::Normal(0.0, 1.0),
            device,
        );
        Self {
            batch: PretrainBatch {
                pixels,
                input_ids: int(ids),
                attention_mask: Tensor::ones([batch, text_len], device),
                masked_ids: int(masked),
                mlm_labels: int(labels),
                indices: (0..batch).collect(),
                uniform_negative_share: 0.0,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::benchmark::process_peak_memory;

    #[test]
    fn medians_and_rates_come_from_sorted_runs() {
        let m = Measurement::new(MeasurementKind::DualText, 8, vec![40.0, 10.0, 20.0, 30.0]);
        assert_eq!(m.runs_ms, vec![10.0, 20.0, 30.0, 40.0]);
        assert_eq!(m.median_ms, 25.0);
        assert!((m.per_second - 320.0).abs() < 1e-9);
        assert_eq!(
            (m.min_ms(), m.max_ms(), m.unit.as_str()),
            (10.0, 40.0, "texts")
        );
    }

    #[test]
    fn presets_and_bad_settings() {
        let base = BenchConfig::preset("base").unwrap();
        assert_eq!(
            (base.batch, base.text_len, base.model.num_fuse_block),
            (16, 40, 6)
        );
        assert_eq!(base.model.swin.image_size, 384);
        assert!(BenchConfig::preset("huge").is_err());
        let tiny = BenchConfig::preset("tiny").unwrap();
        tiny.validate().unwrap();
        let mut long = tiny.clone();
        long.text_len = 500;
        let e = long.validate().unwrap_err();
        assert!(e.to_string().contains("text length 500"), "{e}");
        let e = tiny
            .clone()
            .with_only(vec!["steps".into()])
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("unknown measurement `steps`"), "{e}");
        assert_eq!(
            tiny.with_only(vec!["dual_text".into(), "step".into()])
                .measurements(),
            vec![MeasurementKind::Step, MeasurementKind::DualText]
        );
    }

    #[test]
    fn inputs_follow_the_documented_rule() {
        type B = burn::backend::NdArray<f32>;
        let inputs = BenchInputs::<B>::new(3, 9, 100, 8, &Default::default());
        let ids = inputs.batch.input_ids.to_data().to_vec::<i64>().unwrap();
        let masked = inputs.batch.masked_ids.to_data().to_vec::<i64>().unwrap();
        let labels = inputs.batch.mlm_labels.to_data().to_vec::<i64>().unwrap();
        // row 1, position 4: 3 + (131 + 68) mod 96 = 10
        assert_eq!(ids[9 + 4], 10);
        assert_eq!((ids[9], ids[9 + 8]), (0, 2));
        // (1 + 6) mod 7 = 0: masked to V − 1 with its label
        assert_eq!((masked[9 + 6], labels[9 + 6]), (99, ids[9 + 6]));
        assert_eq!((masked[9 + 5], labels[9 + 5]), (ids[9 + 5], -100));
        // position 0 of row 0 is special: never masked
        assert_eq!(labels[0], -100);
        assert!(process_peak_memory().is_some_and(|b| b > 0));
    }
}
