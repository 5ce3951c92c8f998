//! Gradients by checkpoint key: taken out of Burn's gradients through the models'
//! `visit_weights`, accumulated over micro-batches and measured for clipping.

use std::collections::BTreeMap;

use burn::module::Param;
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use fiber_core::dtype::in_f32;
use fiber_core::weights::{Layout, WeightVisitor};

/// Gradients by checkpoint key, flattened, on the inner (non-autodiff) backend.
pub struct KeyedGradients<B: Backend> {
    pub(crate) grads: BTreeMap<String, Tensor<B, 1>>,
}

impl<B: Backend> KeyedGradients<B> {
    /// Adds another micro-batch's gradients (accumulation).
    pub fn accumulate(&mut self, other: KeyedGradients<B>) {
        for (key, g) in other.grads {
            let merged = match self.grads.remove(&key) {
                Some(mine) => mine + g,
                None => g,
            };
            self.grads.insert(key, merged);
        }
    }

    /// Multiplies every gradient by `factor` (e.g. 1 / micro-batches).
    pub fn scale(&mut self, factor: f64) {
        for g in self.grads.values_mut() {
            *g = g.clone().mul_scalar(factor);
        }
    }

    /// The squared global L2 norm of all gradients `[1]`, in f32 whatever the gradients' type,
    /// left on the device (`None` without gradients).
    pub fn squared_norm(&self) -> Option<Tensor<B, 1>> {
        self.grads
            .values()
            .map(|g| in_f32(g.clone().powf_scalar(2.0).sum()))
            .reduce(|a, b| a + b)
    }

    /// The global L2 norm of all gradients, read back.
    pub fn global_norm(&self) -> f64 {
        self.squared_norm()
            .map(|t| t.into_scalar().elem::<f64>().sqrt())
            .unwrap_or(0.0)
    }

    /// Number of parameters with a gradient.
    pub fn len(&self) -> usize {
        self.grads.len()
    }

    /// Whether no parameter has a gradient.
    pub fn is_empty(&self) -> bool {
        self.grads.is_empty()
    }

    /// The keys with a gradient.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.grads.keys().map(String::as_str)
    }
}

/// Takes each visited parameter's gradient out of a [`GradientsParams`], by checkpoint key:
/// run the model's `visit_weights` with it, then [`GradientCollector::finish`].
pub struct GradientCollector<'a, B: Backend> {
    grads: &'a mut GradientsParams,
    out: BTreeMap<String, Tensor<B, 1>>,
}

impl<'a, B: Backend> GradientCollector<'a, B> {
    /// Collects from `grads`.
    pub fn new(grads: &'a mut GradientsParams) -> Self {
        Self {
            grads,
            out: BTreeMap::new(),
        }
    }

    /// The collected gradients.
    pub fn finish(self) -> KeyedGradients<B> {
        KeyedGradients { grads: self.out }
    }
}

impl<A: AutodiffBackend> WeightVisitor<A> for GradientCollector<'_, A::InnerBackend> {
    fn visit<const D: usize>(
        &mut self,
        key: &str,
        param: &mut Param<Tensor<A, D>>,
        _layout: Layout,
    ) {
        if let Some(g) = self.grads.remove::<A::InnerBackend, D>(param.id) {
            self.out.insert(key.to_string(), g.flatten::<1>(0, D - 1));
        }
    }
}
