//! The detector's checkpoints (docs/model.md §6.4): original fine-grained `.pth` files
//! (`torch.save` of a dict holding the weights under `model`, usually prefixed `module.` by
//! distributed training, and an EMA copy under `model_ema` in runs that keep one) and the
//! project's converted folders (`config.json` + `model.safetensors` in the same key layout).

use std::path::Path;

use burn::prelude::*;
use fiber_core::weights::{
    assign_stored, checkpoint_shape, Layout, LoadReport, WeightLoader, WeightVisitor,
};
use fiber_core::{TensorStore, WeightError};
use fiber_fusion::FusionError;

use super::config::DetectorConfig;
use super::model::GroundingDetector;

/// Which copy of the weights an original fine-grained checkpoint is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightCopy {
    /// The trained weights (`model`).
    Model,
    /// The exponential moving average (`model_ema`).
    Ema,
}

impl WeightCopy {
    /// The checkpoint dict key holding this copy.
    pub fn key(self) -> &'static str {
        match self {
            WeightCopy::Model => "model",
            WeightCopy::Ema => "model_ema",
        }
    }
}

/// Whether `key` is a buffer the original stores and this model recomputes.
fn is_recomputed_buffer(key: &str) -> bool {
    key.ends_with(".relative_position_index")
        || key.ends_with(".attn_mask")
        || key.ends_with("embeddings.position_ids")
        || key.starts_with("rpn.anchor_generator.cell_anchors.")
}

/// Reads the weights of a detector checkpoint: a PyTorch file's `copy`, or a
/// `.safetensors` file; the `module.` prefix is removed.
pub fn read_detector_store(path: &Path, copy: WeightCopy) -> Result<TensorStore, WeightError> {
    let mut store = match path.extension().and_then(|e| e.to_str()) {
        Some("safetensors") => TensorStore::read_safetensors(path)?,
        _ => TensorStore::read_pytorch(path, Some(copy.key()))?,
    };
    store.rename_prefix("module.", "");
    Ok(store)
}

impl<B: Backend> GroundingDetector<B> {
    /// Loads a store in the original fine-grained layout. Buffers the original stores
    /// (relative-position indices, position ids, cell anchors) are skipped with their reason;
    /// any other key the model does not have, a missing key or a shape that differs is an error
    /// listing every such key with both shapes.
    pub fn load_store(&mut self, store: TensorStore) -> Result<LoadReport, FusionError> {
        let mut store = store;
        store.rename_prefix("module.", "");
        let mut loader = WeightLoader::new(store).skip_unused(
            "buffer, recomputed from the window size, the text length or the strides",
            is_recomputed_buffer,
        );
        self.visit_weights(&mut loader);
        Ok(loader.finish()?)
    }
}

/// A detector checkpoint with the configuration it is built with.
#[derive(Debug, Clone)]
pub struct DetectorCheckpoint {
    /// The model's sizes.
    pub config: DetectorConfig,
    /// The weights in the original fine-grained layout, `module.` removed.
    pub store: TensorStore,
    /// What was assumed because the file does not say it (`None` when a configuration was read).
    pub assumed: Option<String>,
}

impl DetectorCheckpoint {
    /// Reads an original fine-grained checkpoint file (`.pth`/`.pt`, its `copy`) or a converted
    /// folder (`config.json` + `model.safetensors`). A checkpoint file does not hold the
    /// attention-head counts and other sizes; `config` names a detector `config.json`, and
    /// without one FIBER-Base's sizes are assumed (and said so in [`Self::assumed`]).
    pub fn read(path: &Path, config: Option<&Path>, copy: WeightCopy) -> Result<Self, FusionError> {
        let (weights, folder_config) = if path.is_dir() {
            (
                path.join("model.safetensors"),
                Some(path.join("config.json")),
            )
        } else {
            (path.to_path_buf(), None)
        };
        let store = read_detector_store(&weights, copy)?;
        let (config, assumed) = match config.map(Path::to_path_buf).or(folder_config) {
            Some(file) => (DetectorConfig::load_json(&file)?, None),
            None => (
                DetectorConfig::fiber_base(),
                Some(format!(
                    "{} carries no configuration: FIBER-Base's detector sizes are assumed (Swin-B, RoBERTa-base, 6 fused pairs, 256 channels, 6 DyConv blocks); pass --config FILE for another model",
                    path.display()
                )),
            ),
        };
        Ok(Self {
            config,
            store,
            assumed,
        })
    }

    /// Builds the detector and loads the weights; when the sizes were assumed, a mismatch says
    /// to pass the configuration.
    pub fn detector<B: Backend>(
        &self,
        device: &B::Device,
    ) -> Result<(GroundingDetector<B>, LoadReport), FusionError> {
        let mut model = GroundingDetector::new(&self.config, device)?;
        match model.load_store(self.store.clone()) {
            Ok(report) => Ok((model, report)),
            Err(e) if self.assumed.is_some() => Err(FusionError::InvalidConfig(format!(
                "the checkpoint does not have FIBER-Base's detector sizes, which were assumed without --config: {e}"
            ))),
            Err(e) => Err(e),
        }
    }

    /// Whether a store holds a fine-grained (detector) checkpoint rather than a coarse one.
    pub fn is_detector_store(store: &TensorStore) -> bool {
        store
            .names()
            .any(|k| k.trim_start_matches("module.").starts_with("rpn.head."))
    }
}

/// What [`GroundingDetector::init_from_coarse`] did, key by key.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CoarseTransfer {
    /// Detector keys filled, each with the coarse key it came from.
    pub transferred: Vec<(String, String)>,
    /// Detector keys whose best-matching coarse key has another shape: `(key, coarse key,
    /// detector shape, coarse shape)`; they keep their fresh initialisation.
    pub shape_mismatch: Vec<(String, String, Vec<usize>, Vec<usize>)>,
    /// Detector keys no coarse key matches (stage norms, FPN, head): fresh.
    pub fresh: Vec<String>,
    /// Coarse keys that filled no detector key (heads, queues, unused modules).
    pub unused: Vec<String>,
}

/// Fills each visited parameter from the longest stored key that is a suffix of its key.
struct SuffixLoader {
    keys: Vec<String>,
    store: TensorStore,
    used: std::collections::BTreeSet<String>,
    transfer: CoarseTransfer,
}

impl<B: Backend> WeightVisitor<B> for SuffixLoader {
    fn visit<const D: usize>(
        &mut self,
        key: &str,
        param: &mut burn::module::Param<Tensor<B, D>>,
        layout: Layout,
    ) {
        let Some(source) = self
            .keys
            .iter()
            .filter(|k| key.ends_with(k.as_str()))
            .max_by_key(|k| k.len())
            .cloned()
        else {
            self.transfer.fresh.push(key.to_string());
            return;
        };
        let stored = self
            .store
            .get(&source)
            .expect("the key came from the store");
        let burn_shape = param.lazy_shape().to_vec();
        let expected = checkpoint_shape(&burn_shape, layout);
        let values = match stored.as_f32() {
            Some(values) if stored.shape == expected => values,
            _ => {
                self.transfer.shape_mismatch.push((
                    key.to_string(),
                    source,
                    expected,
                    stored.shape.clone(),
                ));
                return;
            }
        };
        assign_stored(param, values, layout);
        self.used.insert(source.clone());
        self.transfer.transferred.push((key.to_string(), source));
    }
}

impl<B: Backend> GroundingDetector<B> {
    /// Initialises the detector from a coarse checkpoint's weights (FIBER layout: `vit_model.*`,
    /// `text_transformer.*`, heads) by the original's rule (docs/model.md §6.4): the prefixes
    /// `module.`, `vit_model.` and `text_transformer.` are removed, and every detector key takes
    /// the longest coarse key that is a suffix of it, unless the shapes differ. The Swin blocks,
    /// patch embedding and merging, RoBERTa and the fusion modules transfer; the stage norms, the
    /// FPN and the head keep their fresh initialisation.
    pub fn init_from_coarse(&mut self, coarse: TensorStore) -> CoarseTransfer {
        let mut store = TensorStore::new();
        for (key, tensor) in coarse.into_iter_sorted() {
            let key = key.trim_start_matches("module.");
            let key = key
                .strip_prefix("vit_model.")
                .or_else(|| key.strip_prefix("text_transformer."))
                .unwrap_or(key);
            store.insert(key.to_string(), tensor);
        }
        let keys: Vec<String> = store.names().map(str::to_string).collect();
        let mut loader = SuffixLoader {
            keys,
            store,
            used: Default::default(),
            transfer: CoarseTransfer::default(),
        };
        self.visit_weights(&mut loader);
        let SuffixLoader {
            keys,
            used,
            mut transfer,
            ..
        } = loader;
        transfer.unused = keys.into_iter().filter(|k| !used.contains(k)).collect();
        transfer
    }
}
