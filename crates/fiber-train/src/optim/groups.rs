//! Parameter groups by checkpoint key: which parameters are weight-decayed and how each one's
//! learning rate is scaled (docs/model.md §3.5).

use burn::config::Config;
use burn::module::Param;
use burn::prelude::*;
use fiber_core::weights::{Layout, WeightVisitor};

/// Which parameters decay and how their learning rate is scaled, by checkpoint key.
#[derive(Config, Debug, PartialEq)]
pub struct ParamGroups {
    /// A key containing any of these is not weight-decayed.
    pub no_decay: Vec<String>,
    /// `(substrings, multiplier)`: the first rule with a substring contained in the key sets its
    /// learning-rate multiplier (1 when none matches).
    pub lr_multipliers: Vec<(Vec<String>, f64)>,
    /// `(substrings, factor)`: every rule with a substring contained in the key multiplies its
    /// learning rate by `factor`, on top of [`ParamGroups::lr_multipliers`].
    #[config(default = "Vec::new()")]
    pub lr_factors: Vec<(Vec<String>, f64)>,
    /// A key starting with any of these is frozen: it gets no gradient and no update.
    #[config(default = "Vec::new()")]
    pub frozen: Vec<String>,
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

    /// The detector's groups (docs/model.md §5.5, the original's fine-grained optimiser): the
    /// base rate for the image side, FPN and head, ×`text_multiplier` for everything under
    /// `language_backbone` (RoBERTa with its image-to-text fusion), and for every key containing
    /// `bias` (relative-position bias tables and the head's `bias_lang` / `bias0` included)
    /// ×`bias_multiplier` on top and no weight decay. Keys starting with a `frozen` prefix are
    /// not trained.
    pub fn detector(text_multiplier: f64, bias_multiplier: f64, frozen: Vec<String>) -> Self {
        Self::new(
            vec!["bias".to_string()],
            vec![(vec!["language_backbone".to_string()], text_multiplier)],
        )
        .with_lr_factors(vec![(vec!["bias".to_string()], bias_multiplier)])
        .with_frozen(frozen)
    }

    /// Whether the parameter stored under `key` is frozen.
    pub fn is_frozen(&self, key: &str) -> bool {
        self.frozen.iter().any(|p| key.starts_with(p.as_str()))
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
            * self
                .lr_factors
                .iter()
                .filter(|(subs, _)| subs.iter().any(|s| key.contains(s.as_str())))
                .map(|(_, f)| *f)
                .product::<f64>()
    }
}

/// Marks the parameters of the frozen keys of `groups` as needing no gradient (run the
/// model's `visit_weights` with it), so that the backward pass does not compute theirs.
pub struct Freeze<'a> {
    /// The groups whose `frozen` prefixes apply.
    pub groups: &'a ParamGroups,
    /// Parameters frozen so far.
    pub frozen: usize,
    /// The keys and sizes of the parameters left trainable, in visiting order.
    pub trainable: Vec<(String, usize)>,
}

impl<B: Backend> WeightVisitor<B> for Freeze<'_> {
    fn visit<const D: usize>(
        &mut self,
        key: &str,
        param: &mut Param<Tensor<B, D>>,
        _layout: Layout,
    ) {
        if self.groups.is_frozen(key) {
            *param = param.clone().set_require_grad(false);
            self.frozen += 1;
        } else {
            self.trainable
                .push((key.to_string(), param.val().shape().num_elements()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ParamGroups;

    #[test]
    fn detector_groups_scale_the_text_side_and_biases_and_freeze_by_prefix() {
        let groups = ParamGroups::detector(
            0.1,
            2.0,
            vec!["fusion_backbone.backbone.body.layers.0.".into()],
        );
        let text = "fusion_backbone.language_backbone.body.model.encoder.layer.0.attention.self.query.weight";
        assert!((groups.multiplier(text) - 0.1).abs() < 1e-12);
        assert!((groups.multiplier(&text.replace("weight", "bias")) - 0.2).abs() < 1e-12);
        assert!(!groups.decays(&text.replace("weight", "bias")));
        assert!(groups.decays("fusion_backbone.backbone.body.norm1.weight"));
        assert_eq!(groups.multiplier("rpn.head.bias0"), 2.0);
        assert_eq!(groups.multiplier("rpn.head.bbox_pred.weight"), 1.0);
        assert!(groups.is_frozen("fusion_backbone.backbone.body.layers.0.blocks.0.mlp.fc1.weight"));
        assert!(!groups.is_frozen("fusion_backbone.backbone.body.layers.1.blocks.0.mlp.fc1.weight"));
    }
}
