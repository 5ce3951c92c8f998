//! Moving weights between a [`TensorStore`] and Burn modules.
//!
//! Every model walks its parameters once, in [`WeightVisitor`] calls that name each parameter by
//! its checkpoint key. The same walk then serves two visitors: [`WeightLoader`] fills the
//! parameters from a store (checking every shape and collecting every problem before failing)
//! and [`WeightCollector`] writes them out again, so loading and saving can never disagree on a
//! name or a layout.

use std::collections::BTreeSet;

use burn::module::Param;
use burn::nn::{conv::Conv2d, Embedding, Linear};

use crate::norm::LayerNorm;
use burn::prelude::*;
use burn::tensor::TensorData;

use crate::error::{KeyProblems, ShapeMismatch, WeightError};
use crate::store::{StoredTensor, TensorStore};

/// How a Burn parameter is laid out relative to its checkpoint tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Same shape and order.
    Same,
    /// A 2-D matrix stored transposed: PyTorch `Linear` keeps `[out, in]`, Burn `[in, out]`.
    Transposed,
}

/// Receives every float parameter of a module together with its checkpoint key.
pub trait WeightVisitor<B: Backend> {
    /// Visits one parameter stored under `key`.
    fn visit<const D: usize>(&mut self, key: &str, param: &mut Param<Tensor<B, D>>, layout: Layout);
}

/// `prefix.name`, or `name` when the prefix is empty.
pub fn join_key(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// Visits a `Linear` as `{key}.weight` (`[out, in]`) and `{key}.bias` (`[out]`).
pub fn visit_linear<B: Backend, V: WeightVisitor<B>>(v: &mut V, key: &str, linear: &mut Linear<B>) {
    v.visit(
        &format!("{key}.weight"),
        &mut linear.weight,
        Layout::Transposed,
    );
    if let Some(bias) = &mut linear.bias {
        v.visit(&format!("{key}.bias"), bias, Layout::Same);
    }
}

/// Visits a `LayerNorm` as `{key}.weight` and `{key}.bias` (`[d]`).
pub fn visit_layer_norm<B: Backend, V: WeightVisitor<B>>(
    v: &mut V,
    key: &str,
    norm: &mut LayerNorm<B>,
) {
    v.visit(&format!("{key}.weight"), &mut norm.gamma, Layout::Same);
    if let Some(beta) = &mut norm.beta {
        v.visit(&format!("{key}.bias"), beta, Layout::Same);
    }
}

/// Visits an `Embedding` as `{key}.weight` (`[n, d]`).
pub fn visit_embedding<B: Backend, V: WeightVisitor<B>>(
    v: &mut V,
    key: &str,
    embedding: &mut Embedding<B>,
) {
    v.visit(
        &format!("{key}.weight"),
        &mut embedding.weight,
        Layout::Same,
    );
}

/// Visits a `Conv2d` as `{key}.weight` (`[out, in, kh, kw]`) and `{key}.bias` (`[out]`).
pub fn visit_conv2d<B: Backend, V: WeightVisitor<B>>(v: &mut V, key: &str, conv: &mut Conv2d<B>) {
    v.visit(&format!("{key}.weight"), &mut conv.weight, Layout::Same);
    if let Some(bias) = &mut conv.bias {
        v.visit(&format!("{key}.bias"), bias, Layout::Same);
    }
}

/// What a successful load did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Keys copied from the checkpoint into the model.
    pub loaded: Vec<String>,
    /// Keys absent from the checkpoint that were allowed to be missing; these parameters keep
    /// the initialisation they were built with.
    pub initialised: Vec<String>,
    /// Checkpoint keys deliberately skipped, each with the reason (buffers the model
    /// recomputes, modules of other tasks).
    pub skipped: Vec<SkippedKey>,
}

/// A checkpoint key that was not loaded on purpose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedKey {
    /// The key.
    pub key: String,
    /// Why it was skipped.
    pub reason: String,
}

impl LoadReport {
    /// The skipped keys alone.
    pub fn skipped_keys(&self) -> Vec<&str> {
        self.skipped.iter().map(|s| s.key.as_str()).collect()
    }
}

type KeyFilter = Box<dyn Fn(&str) -> bool>;

/// Fills module parameters from a [`TensorStore`], recording every problem.
///
/// Build it with the store, optionally say which missing keys are acceptable
/// ([`Self::allow_missing`]) and which unused keys to skip silently ([`Self::skip_unused`]), walk
/// the model with it, then call [`Self::finish`]: it fails with [`WeightError::Keys`] listing
/// every missing, unexpected and mis-shaped key at once.
pub struct WeightLoader {
    store: TensorStore,
    used: BTreeSet<String>,
    problems: KeyProblems,
    report: LoadReport,
    allow_missing: Vec<KeyFilter>,
    skip_unused: Vec<(String, KeyFilter)>,
}

impl WeightLoader {
    /// A loader reading from `store`.
    pub fn new(store: TensorStore) -> Self {
        Self {
            store,
            used: BTreeSet::new(),
            problems: KeyProblems::default(),
            report: LoadReport::default(),
            allow_missing: Vec::new(),
            skip_unused: Vec::new(),
        }
    }

    /// Accepts the absence of keys for which `filter` is true (new modules, e.g. fusion layers):
    /// their parameters keep the values they were initialised with.
    pub fn allow_missing(mut self, filter: impl Fn(&str) -> bool + 'static) -> Self {
        self.allow_missing.push(Box::new(filter));
        self
    }

    /// Skips checkpoint keys for which `filter` is true when they are not used by the model
    /// (buffers that are recomputed, heads of another task); they are listed in
    /// [`LoadReport::skipped`] with `reason`.
    pub fn skip_unused(mut self, reason: &str, filter: impl Fn(&str) -> bool + 'static) -> Self {
        self.skip_unused
            .push((reason.to_string(), Box::new(filter)));
        self
    }

    /// The store being read (for loaders that need to look at a key before walking).
    pub fn store(&self) -> &TensorStore {
        &self.store
    }

    /// Checks that nothing is left over and nothing went wrong.
    pub fn finish(mut self) -> Result<LoadReport, WeightError> {
        for name in self.store.names() {
            if self.used.contains(name) {
                continue;
            }
            if let Some((reason, _)) = self.skip_unused.iter().find(|(_, f)| f(name)) {
                self.report.skipped.push(SkippedKey {
                    key: name.to_string(),
                    reason: reason.clone(),
                });
            } else {
                let shape = self
                    .store
                    .get(name)
                    .map(|t| t.shape.clone())
                    .unwrap_or_default();
                self.problems.unexpected.push((name.to_string(), shape));
            }
        }
        if self.problems.is_empty() {
            Ok(self.report)
        } else {
            Err(WeightError::Keys(self.problems))
        }
    }
}

/// The checkpoint (PyTorch-order) shape of a Burn parameter.
pub fn checkpoint_shape(burn_shape: &[usize], layout: Layout) -> Vec<usize> {
    match layout {
        Layout::Same => burn_shape.to_vec(),
        Layout::Transposed => burn_shape.iter().rev().copied().collect(),
    }
}

/// Transposes a row-major `[rows, cols]` matrix.
pub(crate) fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; values.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = values[r * cols + c];
        }
    }
    out
}

impl<B: Backend> WeightVisitor<B> for WeightLoader {
    fn visit<const D: usize>(
        &mut self,
        key: &str,
        param: &mut Param<Tensor<B, D>>,
        layout: Layout,
    ) {
        let burn_shape = param.lazy_shape().to_vec();
        let expected = checkpoint_shape(&burn_shape, layout);
        let Some(stored) = self.store.get(key) else {
            if self.allow_missing.iter().any(|f| f(key)) {
                self.report.initialised.push(key.to_string());
            } else {
                self.problems.missing.push((key.to_string(), expected));
            }
            return;
        };
        self.used.insert(key.to_string());
        if stored.shape != expected {
            self.problems.mismatched.push(ShapeMismatch {
                key: key.to_string(),
                expected,
                found: stored.shape.clone(),
            });
            return;
        }
        let Some(values) = stored.as_f32() else {
            self.problems.wrong_dtype.push(key.to_string());
            return;
        };
        assign_stored(param, values, layout);
        self.report.loaded.push(key.to_string());
    }
}

/// Replaces `param`'s values with checkpoint-layout `values` (already checked to have the
/// checkpoint shape of `param` under `layout`), keeping the parameter's id and device.
pub fn assign_stored<B: Backend, const D: usize>(
    param: &mut Param<Tensor<B, D>>,
    values: &[f32],
    layout: Layout,
) {
    let burn_shape = param.lazy_shape().to_vec();
    let device = param.lazy_device();
    let tensor = match layout {
        Layout::Same => {
            Tensor::<B, D>::from_data(TensorData::new(values.to_vec(), burn_shape), &device)
        }
        // A linear weight with more outputs than inputs keeps the checkpoint's `[out, in]`
        // storage, seen as `[in, out]` (`crate::init::short_row_stride`).
        Layout::Transposed if D == 2 && burn_shape[1] > burn_shape[0] => {
            let stored: Vec<usize> = burn_shape.iter().rev().copied().collect();
            Tensor::<B, D>::from_data(TensorData::new(values.to_vec(), stored), &device)
                .swap_dims(0, 1)
        }
        Layout::Transposed => Tensor::<B, D>::from_data(
            TensorData::new(transpose(values, burn_shape[1], burn_shape[0]), burn_shape),
            &device,
        ),
    };
    *param = Param::initialized(param.id, tensor.require_grad());
}

/// Records, for every visited parameter, whether `grads` holds a gradient with a nonzero
/// entry for it: the keys without one, and how many were checked (a training step that leaves
/// a parameter without gradient never trains it).
pub struct GradientCensus<'a, B: burn::tensor::backend::AutodiffBackend> {
    grads: &'a B::Gradients,
    /// Keys whose gradient is absent or all zero.
    pub without_gradient: Vec<String>,
    /// Parameters visited.
    pub checked: usize,
}

impl<'a, B: burn::tensor::backend::AutodiffBackend> GradientCensus<'a, B> {
    /// A census over the gradients of one backward pass.
    pub fn new(grads: &'a B::Gradients) -> Self {
        Self {
            grads,
            without_gradient: Vec::new(),
            checked: 0,
        }
    }
}

impl<B: burn::tensor::backend::AutodiffBackend> WeightVisitor<B> for GradientCensus<'_, B> {
    fn visit<const D: usize>(&mut self, key: &str, param: &mut Param<Tensor<B, D>>, _: Layout) {
        self.checked += 1;
        let nonzero = param
            .val()
            .grad(self.grads)
            .map(|g| g.abs().max().into_scalar().elem::<f32>() > 0.0)
            .unwrap_or(false);
        if !nonzero {
            self.without_gradient.push(key.to_string());
        }
    }
}

/// Copies module parameters into a [`TensorStore`] under their checkpoint keys.
#[derive(Default)]
pub struct WeightCollector {
    store: TensorStore,
}

impl WeightCollector {
    /// An empty collector.
    pub fn new() -> Self {
        Self::default()
    }

    /// The collected tensors.
    pub fn into_store(self) -> TensorStore {
        self.store
    }
}

impl<B: Backend> WeightVisitor<B> for WeightCollector {
    fn visit<const D: usize>(
        &mut self,
        key: &str,
        param: &mut Param<Tensor<B, D>>,
        layout: Layout,
    ) {
        let tensor = param.val();
        let burn_shape = tensor.dims().to_vec();
        let values = crate::store::tensor_values(tensor);
        let values = match layout {
            Layout::Same => values,
            Layout::Transposed => transpose(&values, burn_shape[0], burn_shape[1]),
        };
        self.store.insert(
            key,
            StoredTensor::f32(checkpoint_shape(&burn_shape, layout), values),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;
    use burn::nn::LinearConfig;

    type B = NdArray;

    struct Tiny {
        dense: Linear<B>,
        norm: LayerNorm<B>,
    }

    impl Tiny {
        fn new() -> Self {
            let device = Default::default();
            Self {
                dense: LinearConfig::new(3, 2).init(&device),
                norm: crate::init::layer_norm(2, 1e-5, &device),
            }
        }
        fn visit<V: WeightVisitor<B>>(&mut self, v: &mut V) {
            visit_linear(v, "dense", &mut self.dense);
            visit_layer_norm(v, "norm", &mut self.norm);
        }
    }

    fn store_of(tiny: &mut Tiny) -> TensorStore {
        let mut c = WeightCollector::new();
        tiny.visit(&mut c);
        c.into_store()
    }

    #[test]
    fn linear_weights_are_stored_in_pytorch_order_and_load_back() {
        let mut a = Tiny::new();
        let store = store_of(&mut a);
        assert_eq!(store.get("dense.weight").unwrap().shape, vec![2, 3]);
        let burn_w: Vec<f32> = a.dense.weight.val().into_data().into_vec().unwrap();
        let torch_w = store.get("dense.weight").unwrap().as_f32().unwrap();
        // burn [in=3, out=2] element (i, o) equals torch [out, in] element (o, i).
        assert_eq!(burn_w[2 * 2 + 1], torch_w[3 + 2]);

        let mut b = Tiny::new();
        let mut loader = WeightLoader::new(store.clone());
        b.visit(&mut loader);
        let report = loader.finish().unwrap();
        assert_eq!(report.loaded.len(), 4);
        assert_eq!(store_of(&mut b), store);
    }

    #[test]
    fn wide_linear_weights_load_as_transposed_views_of_the_checkpoint() {
        let device = Default::default();
        let mut wide = LinearConfig::new(2, 3).init::<B>(&device);
        let mut collector = WeightCollector::new();
        visit_linear(&mut collector, "wide", &mut wide);
        let store = collector.into_store();
        let mut loaded = LinearConfig::new(2, 3).init::<B>(&device);
        let mut loader = WeightLoader::new(store.clone());
        visit_linear(&mut loader, "wide", &mut loaded);
        loader.finish().unwrap();
        let weight = loaded.weight.val();
        assert_eq!(weight.dims(), [2, 3]);
        assert_eq!(weight.clone().into_data(), wide.weight.val().into_data());
        let stored = crate::kernels::cpu::array(&weight).unwrap();
        assert_eq!(
            stored.strides(),
            &[1, 2],
            "the checkpoint's [out, in] storage is kept"
        );
        let mut again = WeightCollector::new();
        visit_linear(&mut again, "wide", &mut loaded);
        assert_eq!(again.into_store(), store);
    }

    #[test]
    fn every_problem_is_reported_at_once_with_both_shapes() {
        let mut a = Tiny::new();
        let mut store = store_of(&mut a);
        store.remove("norm.bias");
        store.insert("dense.weight", StoredTensor::f32(vec![3, 2], vec![0.0; 6]));
        store.insert("extra.weight", StoredTensor::f32(vec![5], vec![0.0; 5]));
        store.insert("norm.weight", StoredTensor::i64(vec![2], vec![1, 1]));
        let mut loader = WeightLoader::new(store);
        a.visit(&mut loader);
        let WeightError::Keys(p) = loader.finish().unwrap_err() else {
            panic!("expected a key error")
        };
        assert_eq!(p.missing, vec![("norm.bias".to_string(), vec![2])]);
        assert_eq!(p.unexpected, vec![("extra.weight".to_string(), vec![5])]);
        assert_eq!(
            p.mismatched,
            vec![ShapeMismatch {
                key: "dense.weight".into(),
                expected: vec![2, 3],
                found: vec![3, 2]
            }]
        );
        assert_eq!(p.wrong_dtype, vec!["norm.weight".to_string()]);
        let text = p.to_string();
        assert!(
            text.contains("dense.weight expected [2, 3], checkpoint has [3, 2]"),
            "{text}"
        );
    }

    #[test]
    fn allowed_missing_keys_keep_their_initialisation_and_skipped_keys_are_listed() {
        let mut a = Tiny::new();
        let mut store = store_of(&mut a);
        store.remove("norm.weight");
        store.remove("norm.bias");
        store.insert("buffer.position_ids", StoredTensor::i64(vec![1], vec![0]));
        let mut b = Tiny::new();
        let mut loader = WeightLoader::new(store)
            .allow_missing(|k| k.starts_with("norm."))
            .skip_unused("recomputed buffer", |k| k.ends_with("position_ids"));
        b.visit(&mut loader);
        let report = loader.finish().unwrap();
        assert_eq!(report.initialised, vec!["norm.weight", "norm.bias"]);
        assert_eq!(
            report.skipped,
            vec![SkippedKey {
                key: "buffer.position_ids".into(),
                reason: "recomputed buffer".into()
            }]
        );
        let gamma: Vec<f32> = b.norm.gamma.val().into_data().into_vec().unwrap();
        assert_eq!(gamma, vec![1.0, 1.0]);
    }
}
