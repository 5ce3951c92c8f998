//! A trained model's parameters by checkpoint key: the walk every model provides
//! ([`VisitWeights`]) and the weights as safetensors bytes in both directions.

use burn::prelude::*;
use fiber_core::weights::{WeightCollector, WeightLoader, WeightVisitor};
use fiber_core::TensorStore;

use crate::error::TrainError;

/// A model whose parameters can be walked under their checkpoint keys.
pub trait VisitWeights<B: Backend> {
    /// Visits every parameter.
    fn visit_weights_with<V: WeightVisitor<B>>(&mut self, v: &mut V);
}

/// Implements [`VisitWeights`] through the model's own `visit_weights`.
macro_rules! visit_weights_of {
    ($($model:ident),*) => {$(
        impl<B: Backend> VisitWeights<B> for fiber_heads::$model<B> {
            fn visit_weights_with<V: WeightVisitor<B>>(&mut self, v: &mut V) {
                self.visit_weights(v);
            }
        }
    )*};
}

visit_weights_of!(FiberModel, VqaModel, Nlvr2Model);

impl<B: Backend> VisitWeights<B> for fiber_heads::grounding::GroundingDetector<B> {
    fn visit_weights_with<V: WeightVisitor<B>>(&mut self, v: &mut V) {
        self.visit_weights(v);
    }
}

/// The model's weights as safetensors bytes.
pub fn model_bytes<B: Backend, M: VisitWeights<B> + Clone>(
    model: &M,
) -> Result<Vec<u8>, TrainError> {
    let mut collector = WeightCollector::new();
    model.clone().visit_weights_with(&mut collector);
    Ok(collector.into_store().to_safetensors_bytes()?)
}

/// Loads every parameter of `model` from `store` (all keys must match).
pub fn load_model<B: Backend, M: VisitWeights<B>>(
    model: &mut M,
    store: TensorStore,
) -> Result<(), TrainError> {
    let mut loader = WeightLoader::new(store);
    model.visit_weights_with(&mut loader);
    loader.finish()?;
    Ok(())
}
