//! An exponential moving average of a model's weights (the original's `ModelEma`, decay 0.999
//! in the fine-grained stage, docs/model.md §5.5): updated after every optimiser step, used for
//! evaluation and saved with each checkpoint.

use std::collections::BTreeMap;

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use fiber_core::weights::{Layout, WeightVisitor};

/// The averaged weights by checkpoint key, flattened, on the inner (non-autodiff) backend.
pub struct WeightAverage<B: Backend> {
    /// `ema ← decay · ema + (1 − decay) · weight` after each step.
    pub decay: f64,
    weights: BTreeMap<String, Tensor<B, 1>>,
}

impl<B: Backend> WeightAverage<B> {
    /// An average that starts at the weights it first visits (run the model's `visit_weights`
    /// with [`WeightAverage::update`]'s visitor, or call [`WeightAverage::update`]).
    pub fn new(decay: f64) -> Self {
        Self {
            decay,
            weights: BTreeMap::new(),
        }
    }

    /// Whether no weight has been averaged yet.
    pub fn is_empty(&self) -> bool {
        self.weights.is_empty()
    }

    /// Forgets the average: the next update starts it at the model's weights (after loading
    /// an averaged copy into the model to continue from it).
    pub fn restart(&mut self) {
        self.weights.clear();
    }
}

/// Visitor that folds each visited weight into the average (or starts it there).
pub struct AverageUpdate<'a, B: Backend> {
    average: &'a mut WeightAverage<B>,
}

impl<B: Backend> WeightAverage<B> {
    /// The visitor of one update (run the model's `visit_weights` with it).
    pub fn update(&mut self) -> AverageUpdate<'_, B> {
        AverageUpdate { average: self }
    }

    /// The visitor that replaces each visited weight of a (cloned) model by its average.
    pub fn apply(&self) -> AverageApply<'_, B> {
        AverageApply { average: self }
    }
}

impl<A: AutodiffBackend> WeightVisitor<A> for AverageUpdate<'_, A::InnerBackend> {
    fn visit<const D: usize>(
        &mut self,
        key: &str,
        param: &mut Param<Tensor<A, D>>,
        _layout: Layout,
    ) {
        let value = param.val().inner().flatten::<1>(0, D - 1);
        let decay = self.average.decay;
        let averaged = match self.average.weights.remove(key) {
            Some(previous) => previous.mul_scalar(decay) + value.mul_scalar(1.0 - decay),
            None => value,
        };
        self.average.weights.insert(key.to_string(), averaged);
    }
}

/// Visitor that writes the average into the parameters it visits (those without one are left).
pub struct AverageApply<'a, B: Backend> {
    average: &'a WeightAverage<B>,
}

impl<A: AutodiffBackend> WeightVisitor<A> for AverageApply<'_, A::InnerBackend> {
    fn visit<const D: usize>(
        &mut self,
        key: &str,
        param: &mut Param<Tensor<A, D>>,
        _layout: Layout,
    ) {
        if let Some(average) = self.average.weights.get(key) {
            let shape = param.val().shape();
            let require_grad = param.val().is_require_grad();
            let tensor = Tensor::<A, D>::from_inner(average.clone().reshape(shape))
                .set_require_grad(require_grad);
            *param = Param::initialized(param.id, tensor);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};
    use burn::nn::{Linear, LinearConfig};
    use fiber_core::weights::visit_linear;

    type A = Autodiff<NdArray<f32>>;

    fn set(linear: &mut Linear<A>, value: f32) {
        let weight = linear.weight.val().ones_like().mul_scalar(value);
        linear.weight = Param::from_tensor(weight);
    }

    #[test]
    fn the_average_starts_at_the_weights_and_follows_them_at_its_decay() {
        let device = Default::default();
        let mut model = LinearConfig::new(2, 3).with_bias(false).init::<A>(&device);
        let mut average = WeightAverage::new(0.9);
        set(&mut model, 1.0);
        visit_linear(&mut average.update(), "dense", &mut model);
        set(&mut model, 2.0);
        visit_linear(&mut average.update(), "dense", &mut model);
        let mut copy = model.clone();
        visit_linear(&mut average.apply(), "dense", &mut copy);
        let values = copy.weight.val().into_data().into_vec::<f32>().unwrap();
        assert!(values.iter().all(|v| (v - 1.1).abs() < 1e-6), "{values:?}");
        assert_eq!(copy.weight.val().dims(), [2, 3]);
        // The model itself is untouched.
        let own = model.weight.val().into_data().into_vec::<f32>().unwrap();
        assert!(own.iter().all(|v| *v == 2.0));
    }
}
