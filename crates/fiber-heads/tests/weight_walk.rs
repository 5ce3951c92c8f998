//! The weight walk (`visit_weights`) is how every parameter is trained, saved and loaded: the
//! optimiser, gradient collection, checkpoints and conversion all go through it, so a parameter
//! it misses would silently neither train nor save. For every model: the walk reaches exactly
//! the module's parameters (element count equals `num_params()`) and names each once.

use std::collections::BTreeMap;

use burn::backend::NdArray;
use burn::module::{Module, Param};
use burn::prelude::*;
use fiber_core::weights::{Layout, WeightVisitor};
use fiber_fusion::FiberConfig;
use fiber_heads::{FiberModel, Nlvr2Model, VqaModel};
use fiber_roberta::RobertaConfig;
use fiber_swin::SwinConfig;

type B = NdArray<f32>;

/// Counts every visited parameter's elements by key, and the keys visited more than once.
#[derive(Default)]
struct Census {
    elements: BTreeMap<String, usize>,
    repeated: Vec<String>,
}

impl WeightVisitor<B> for Census {
    fn visit<const D: usize>(&mut self, key: &str, param: &mut Param<Tensor<B, D>>, _: Layout) {
        let n = param.val().shape().num_elements();
        if self.elements.insert(key.to_string(), n).is_some() {
            self.repeated.push(key.to_string());
        }
    }
}

impl Census {
    fn check(self, what: &str, num_params: usize) {
        assert!(
            self.repeated.is_empty(),
            "{what}: keys visited twice: {:?}",
            self.repeated
        );
        let visited: usize = self.elements.values().sum();
        assert_eq!(
            visited, num_params,
            "{what}: the walk visits {visited} of {num_params} parameters"
        );
    }
}

fn config() -> FiberConfig {
    let swin = SwinConfig::new(32, 16, vec![1, 1, 2], vec![2, 2, 4], 2).with_mlp_ratio(2.0);
    let roberta = RobertaConfig::new(40, 32, 3, 4, 48).with_max_position_embeddings(12);
    FiberConfig::new(swin, roberta).with_num_fuse_block(2)
}

#[test]
fn every_model_walks_each_parameter_exactly_once() {
    let device = Default::default();
    for caption_adapters in [false, true] {
        let mut model = FiberModel::<B>::new(&config(), caption_adapters, &device).unwrap();
        let mut census = Census::default();
        model.visit_weights(&mut census);
        let what = if caption_adapters {
            "the captioning model (FiberModel with adapters)"
        } else {
            "FiberModel"
        };
        census.check(what, model.num_params());
    }
    let fiber = || FiberModel::<B>::new(&config(), true, &device).unwrap();
    let mut vqa = VqaModel::new(fiber(), 7, 0.02, &device);
    let mut census = Census::default();
    vqa.visit_weights(&mut census);
    assert!(census.elements.contains_key("vqa_classifier.3.weight"));
    census.check("VqaModel", vqa.num_params());
    let mut nlvr2 = Nlvr2Model::new(fiber(), 0.02, &device);
    let mut census = Census::default();
    nlvr2.visit_weights(&mut census);
    assert!(census.elements.contains_key("nlvr2_classifier.0.weight"));
    census.check("Nlvr2Model", nlvr2.num_params());
}
