//! The detector's checkpoints (docs/model.md §6.4): original fine-grained `.pth` files
//! (`torch.save` of a dict holding the weights under `model`, usually prefixed `module.` by
//! distributed training, and an EMA copy under `model_ema` in runs that keep one) and the
//! project's converted folders (`config.json` + `model.safetensors` in the same key layout).

use std::path::Path;

use burn::prelude::*;
use fiber_core::weights::{LoadReport, WeightLoader};
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
