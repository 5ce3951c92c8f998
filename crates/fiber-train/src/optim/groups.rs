//! Parameter groups by checkpoint key: which parameters are weight-decayed and how each one's
//! learning rate is scaled (docs/model.md §3.5).

use burn::config::Config;

/// Which parameters decay and how their learning rate is scaled, by checkpoint key.
#[derive(Config, Debug, PartialEq)]
pub struct ParamGroups {
    /// A key containing any of these is not weight-decayed.
    pub no_decay: Vec<String>,
    /// `(substrings, multiplier)`: the first rule with a substring contained in the key sets its
    /// learning-rate multiplier (1 when none matches).
    pub lr_multipliers: Vec<(Vec<String>, f64)>,
}

impl ParamGroups {
    /// Spec C.5: no decay for `bias`, `LayerNorm.`, `norm.`, `norm1.`, `norm2.` (which also catches
    /// every relative-position bias table); ×`head_multiplier` for the task heads
    /// (`mlm_score`, `itm_score`, `vqa_classifier`, `nlvr2_classifier`) and ×5 for anything
    /// `cross_modal`, `i2t` or `t2i`.
    pub fn fiber(head_multiplier: f64) -> Self {
        Self::fiber_with(head_multiplier, 5.0, 5.0, 1.0)
    }

    /// [`ParamGroups::fiber`] with other multipliers for the fusion modules (`i2t`, `t2i`, gates
    /// included; 5 in FIBER), the `cross_modal` projections and poolers (5 in FIBER) and
    /// the ITC temperature `temp` (1 in FIBER, which suits its base rate of 1e-5; much higher
    /// rates move the temperature faster than the features it scales).
    pub fn fiber_with(
        head_multiplier: f64,
        fusion_multiplier: f64,
        cross_modal_multiplier: f64,
        temperature_multiplier: f64,
    ) -> Self {
        let strings = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        Self::new(
            strings(&["bias", "LayerNorm.", "norm.", "norm1.", "norm2."]),
            vec![
                (strings(&["temp"]), temperature_multiplier),
                (
                    strings(&[
                        "mlm_score",
                        "itm_score",
                        "vqa_classifier",
                        "nlvr2_classifier",
                    ]),
                    head_multiplier,
                ),
                (strings(&["i2t", "t2i"]), fusion_multiplier),
                (strings(&["cross_modal"]), cross_modal_multiplier),
            ],
        )
    }

    /// Whether the parameter stored under `key` is weight-decayed.
    pub fn decays(&self, key: &str) -> bool {
        !self.no_decay.iter().any(|s| key.contains(s.as_str()))
    }

    /// The learning-rate multiplier of the parameter stored under `key`.
    pub fn multiplier(&self, key: &str) -> f64 {
        self.lr_multipliers
            .iter()
            .find(|(subs, _)| subs.iter().any(|s| key.contains(s.as_str())))
            .map(|(_, m)| *m)
            .unwrap_or(1.0)
    }
}
