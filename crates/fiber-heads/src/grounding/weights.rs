//! The detector's checkpoints (docs/model.md §6.4): original fine-grained `.pth` files
//! (`torch.save` of a dict holding the weights under `model`, usually prefixed `module.` by
//! distributed training, and an EMA copy under `model_ema` in runs that keep one) and the
//! project's converted folders (`config.json` + `model.safetensors` in the same key layout).

use std::path::Path;

use burn::prelude::*;
use fiber_core::weights::{
    assign_stored, checkpoint_shape, Layout, LoadReport, WeightCollector, WeightLoader,
    WeightVisitor,
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
        let store = read_detector_store(&Self::weights_file(path), copy)?;
        Self::with_store(path, store, config)
    }

    /// Like [`Self::read`] when `path` holds a detector (a fine-grained checkpoint file, whose
    /// weights are then read once, or a folder whose `config.json` has a `backbone` object);
    /// `None` for anything else, such as a coarse checkpoint, which its own reader then reads
    /// and reports on.
    pub fn read_if_detector(
        path: &Path,
        config: Option<&Path>,
        copy: WeightCopy,
    ) -> Result<Option<Self>, FusionError> {
        if path.is_dir() {
            let value: Option<serde_json::Value> =
                fiber_core::json::read_json(&path.join("config.json")).ok();
            return match value.and_then(|v| v.get("backbone").cloned()) {
                Some(_) => Self::read(path, config, copy).map(Some),
                None => Ok(None),
            };
        }
        match read_detector_store(path, copy) {
            Ok(store) if Self::is_detector_store(&store) => {
                Self::with_store(path, store, config).map(Some)
            }
            // A detector checkpoint without the EMA copy asked for: say so.
            Err(e)
                if copy == WeightCopy::Ema
                    && read_detector_store(path, WeightCopy::Model)
                        .is_ok_and(|store| Self::is_detector_store(&store)) =>
            {
                Err(e.into())
            }
            // No `model` entry (a coarse checkpoint keeps its tensors under `state_dict`), or
            // not a detector's keys.
            _ => Ok(None),
        }
    }

    /// The weights file of a checkpoint path (a folder's `model.safetensors`).
    fn weights_file(path: &Path) -> std::path::PathBuf {
        if path.is_dir() {
            path.join("model.safetensors")
        } else {
            path.to_path_buf()
        }
    }

    fn with_store(
        path: &Path,
        store: TensorStore,
        config: Option<&Path>,
    ) -> Result<Self, FusionError> {
        let folder_config = path.is_dir().then(|| path.join("config.json"));
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

impl CoarseTransfer {
    /// The whole transfer as JSON (`transferred` as detector key → coarse key, the others as
    /// lists), for the report a converted folder keeps.
    pub fn to_json(&self) -> serde_json::Value {
        let transferred: serde_json::Map<String, serde_json::Value> = self
            .transferred
            .iter()
            .map(|(key, source)| (key.clone(), source.clone().into()))
            .collect();
        let mismatch: Vec<serde_json::Value> = self
            .shape_mismatch
            .iter()
            .map(|(key, source, ours, theirs)| {
                serde_json::json!({"key": key, "coarse_key": source, "shape": ours, "coarse_shape": theirs})
            })
            .collect();
        serde_json::json!({
            "transferred": transferred,
            "shape_mismatch": mismatch,
            "fresh": self.fresh,
            "unused": self.unused,
        })
    }

    /// One line per outcome with counts and the first keys, for the log.
    pub fn summary(&self) -> Vec<String> {
        let first = |keys: &mut dyn Iterator<Item = &String>| {
            let keys: Vec<&String> = keys.collect();
            let shown: Vec<&str> = keys.iter().take(3).map(|k| k.as_str()).collect();
            format!(
                "{}{}",
                shown.join(", "),
                if keys.len() > 3 { ", …" } else { "" }
            )
        };
        let mut lines = vec![format!(
            "transferred {} tensors from the coarse model, e.g. {}",
            self.transferred.len(),
            first(&mut self.transferred.iter().map(|(k, _)| k))
        )];
        if !self.shape_mismatch.is_empty() {
            lines.push(format!(
                "kept {} tensors fresh because the coarse tensor has another shape: {}",
                self.shape_mismatch.len(),
                self.shape_mismatch
                    .iter()
                    .take(3)
                    .map(|(k, _, ours, theirs)| format!("{k} {ours:?} vs {theirs:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        lines.push(format!(
            "initialised {} tensors fresh (no coarse counterpart: stage norms, FPN, head), e.g. {}",
            self.fresh.len(),
            first(&mut self.fresh.iter())
        ));
        lines.push(format!(
            "left {} coarse tensors unused (heads, queues, the final norm), e.g. {}",
            self.unused.len(),
            first(&mut self.unused.iter())
        ));
        lines
    }
}

impl<B: Backend> GroundingDetector<B> {
    /// Writes a detector folder: `model.safetensors` in the original fine-grained key layout and
    /// `config.json`; returns the number of tensors written.
    pub fn save_folder(
        &mut self,
        config: &DetectorConfig,
        dir: &Path,
    ) -> Result<usize, FusionError> {
        let mut collector = WeightCollector::new();
        self.visit_weights(&mut collector);
        let store = collector.into_store();
        std::fs::create_dir_all(dir).map_err(|source| WeightError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        store.write_safetensors(dir.join("model.safetensors"))?;
        config.save_json(dir.join("config.json"))?;
        Ok(store.len())
    }
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
