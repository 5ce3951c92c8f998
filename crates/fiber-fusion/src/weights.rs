//! FIBER weights (docs/model.md §6.2–§6.3): the original coarse checkpoint layout (Lightning `.ckpt`,
//! tensors under `state_dict`), the project's converted folder (`config.json` +
//! `model.safetensors` with the same keys), and initialisation from HuggingFace RoBERTa plus
//! HuggingFace or original Swin weights with the fusion modules new.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use fiber_core::{LoadReport, StoredTensor, TensorStore, WeightLoader};
use fiber_roberta::RobertaConfig;
use fiber_swin::weights::{hf_to_original, is_hf_layout, is_swin_buffer, resize_position_tables};
use fiber_swin::SwinConfig;

use crate::backbone::FiberBackbone;
use crate::config::{FiberConfig, FusionVersion};
use crate::error::FusionError;

/// Top-level names of the original model's task heads (loaded by fiber-heads, not here).
pub const HEAD_PREFIXES: [&str; 10] = [
    "cross_modal_text_transform",
    "cross_modal_image_transform",
    "cross_modal_text_pooler",
    "cross_modal_image_pooler",
    "mlm_score.",
    "itm_score.",
    "rank_output.",
    "vqa_classifier.",
    "nlvr2_classifier.",
    "temp",
];

/// Buffers of the pre-training module: ITC/ITM queues and their pointers.
pub const QUEUE_BUFFERS: [&str; 7] = [
    "image_queue",
    "text_queue",
    "image_input_queue",
    "text_input_queue",
    "text_input_mask_queue",
    "queue_ptr",
    "queue_total",
];

/// Whether `key` belongs to a task head.
pub fn is_head_key(key: &str) -> bool {
    HEAD_PREFIXES.iter().any(|p| key.starts_with(p))
}

/// Whether a key is a fusion module of this backbone (new when starting from uni-modal weights).
fn is_fusion_key(key: &str) -> bool {
    key.contains("_i2t")
        || key.contains("crossattention_t2i.")
        || key.contains("alpha_t2i")
        || key.starts_with("cross_modal_att_layers.")
}

impl<B: Backend> FiberBackbone<B> {
    /// A loader over a store in the FIBER layout with every skip rule of the original
    /// checkpoint, each with its reason. Keys a model visits are loaded whatever the rules say
    /// (a model with heads loads the head keys this backbone alone would skip).
    pub fn fiber_loader(&self, store: TensorStore) -> WeightLoader {
        let fused_layers: Vec<usize> = self.pairs.iter().map(|p| p.layer).collect();
        let has_norm_i2t = self.i2t.iter().all(|m| m.norm_i2t_i.is_some());
        let has_adapters: Vec<usize> = self
            .pairs
            .iter()
            .zip(&self.caption_adapters)
            .filter(|(_, a)| a.is_some())
            .map(|(p, _)| p.layer)
            .collect();
        WeightLoader::new(store)
            .skip_unused("copy of row 1 of itm_score.fc; the ITM score is computed from itm_score (docs/model.md §4.3)", |k| k.starts_with("rank_output."))
            .skip_unused("ITC/ITM queue buffer, not a model weight", |k| QUEUE_BUFFERS.contains(&k))
            .skip_unused("buffer, recomputed from the window size", is_swin_buffer)
            .skip_unused("buffer, recomputed", |k| k.ends_with("embeddings.position_ids"))
            .skip_unused("task head, loaded with the heads", is_head_key)
            .skip_unused("cross-attention LayerNorm the original forward never uses (docs/model.md §2.4)", |k| k.contains("crossattention_t2i.output.LayerNorm"))
            .skip_unused("gate of an unfused text layer, never used (docs/model.md §2.4)", move |k| {
                k.strip_prefix("text_transformer.encoder.layer.")
                    .and_then(|rest| rest.strip_suffix(".alpha_t2i"))
                    .and_then(|i| i.parse::<usize>().ok())
                    .is_some_and(|i| !fused_layers.contains(&i))
            })
            .skip_unused("query LayerNorm of fusion v1; this backbone uses v2 (docs/model.md §2.3)", move |k| !has_norm_i2t && k.contains("norm_i2t_i"))
            .skip_unused("captioning adapter; this backbone has none", move |k| {
                k.strip_prefix("cross_modal_att_layers.")
                    .and_then(|rest| rest.split('.').next())
                    .and_then(|i| i.parse::<usize>().ok())
                    .is_some_and(|i| !has_adapters.contains(&i))
            })
    }

    /// Loads a store in the FIBER layout (an original coarse checkpoint's `state_dict`, or a
    /// converted `model.safetensors`). Relative-position tables are resized to this model's
    /// windows; queues, buffers, unused modules and task heads are skipped with their reason.
    /// With `allow_new_modules`, absent fusion modules keep their fresh initialisation.
    pub fn load_fiber_store(
        &mut self,
        store: TensorStore,
        allow_new_modules: bool,
    ) -> Result<LoadReport, FusionError> {
        let mut store = store;
        store.rename_prefix("module.", "");
        resize_position_tables(&mut store, &self.vit_model, "vit_model");
        let mut loader = self.fiber_loader(store);
        if allow_new_modules {
            loader = loader.allow_missing(is_fusion_key);
        }
        self.visit_weights(&mut loader, "");
        Ok(loader.finish()?)
    }

    /// Builds the backbone from uni-modal weights: a HuggingFace RoBERTa checkpoint store
    /// (`RobertaModel` or `RobertaForMaskedLM` layout) and a Swin store (HuggingFace or
    /// original layout). The fusion modules (and the unused text pooler when the RoBERTa file
    /// has none) start from the initialisation of docs/model.md §6.3.
    pub fn from_unimodal(
        config: &FiberConfig,
        roberta: TensorStore,
        swin: TensorStore,
        caption_adapters: bool,
        device: &B::Device,
    ) -> Result<(Self, LoadReport), FusionError> {
        let mut model = Self::new(config, caption_adapters, device)?;
        let mut roberta = fiber_roberta::weights::strip_roberta_prefix(roberta);
        roberta.rename_prefix("", "text_transformer.");
        let mut swin = if is_hf_layout(&swin) {
            hf_to_original(swin)
        } else {
            swin
        };
        swin.rename_prefix("", "vit_model.");
        let mut store = roberta;
        for (key, tensor) in swin.into_iter_sorted() {
            store.insert(key, tensor);
        }
        resize_position_tables(&mut store, &model.vit_model, "vit_model");
        let mut loader = model
            .fiber_loader(store)
            .allow_missing(is_fusion_key)
            .allow_missing(|k| k.starts_with("text_transformer.pooler."))
            .skip_unused(
                "masked-LM head of the RoBERTa file, not used by FIBER (docs/model.md §3.1)",
                |k| k.starts_with("text_transformer.lm_head."),
            )
            .skip_unused("image-classification head, not part of the backbone", |k| {
                k.starts_with("vit_model.head.") || k.starts_with("vit_model.classifier.")
            });
        model.visit_weights(&mut loader, "");
        let report = loader.finish()?;
        Ok((model, report))
    }
}

/// A size that the tensors of a checkpoint do not determine, and the value taken for it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AssumedSetting {
    /// The setting's key in the configuration file, e.g. `roberta.num_attention_heads`.
    pub key: String,
    /// The value taken.
    pub value: usize,
    /// Why this value.
    pub reason: String,
}

impl std::fmt::Display for AssumedSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "assumed {} = {} ({}); the checkpoint does not store it: a --config file that sets it overrides this",
            self.key, self.value, self.reason
        )
    }
}

/// A configuration inferred from tensor shapes, with the sizes that had to be assumed.
#[derive(Debug, Clone)]
pub struct InferredConfig {
    /// The configuration.
    pub config: FiberConfig,
    /// The sizes not determined by the tensors, with the values taken.
    pub assumed: Vec<AssumedSetting>,
}

/// Text widths with a standard head count (RoBERTa-base and -large: 64-wide heads).
const STANDARD_TEXT_HEADS: [(usize, usize); 2] = [(768, 12), (1024, 16)];

/// Infers the configuration from the tensor shapes of a FIBER-layout store.
///
/// Determined by the tensors: every width, depth and vocabulary size, the Swin head counts (the
/// relative-position tables), the window, the fusion version and the fused pairs; the image size
/// too when the store keeps the shifted-window `attn_mask` buffers. Not determined, and listed
/// in [`InferredConfig::assumed`]: the text head count, taken as 12 for width 768 and 16 for
/// width 1024 (any other width is an error asking for `--config`: a wrong count runs and gives
/// wrong outputs), and, without `attn_mask`, the image size, taken as `32 × window` (the
/// original code's `window = image_size / 32`).
pub fn infer_config(store: &TensorStore) -> Result<InferredConfig, FusionError> {
    let shape = |key: &str| -> Result<Vec<usize>, FusionError> {
        store.get(key).map(|t| t.shape.clone()).ok_or_else(|| {
            FusionError::InvalidConfig(format!(
                "cannot infer the configuration: the checkpoint has no `{key}`"
            ))
        })
    };
    let mut assumed = Vec::new();
    let patch = shape("vit_model.patch_embed.proj.weight")?; // [embed, channels, p, p]
    let mut depths = Vec::new();
    let mut heads = Vec::new();
    while store.contains(&format!(
        "vit_model.layers.{}.blocks.0.norm1.weight",
        depths.len()
    )) {
        let s = depths.len();
        let mut d = 0;
        while store.contains(&format!("vit_model.layers.{s}.blocks.{d}.norm1.weight")) {
            d += 1;
        }
        heads.push(
            shape(&format!(
                "vit_model.layers.{s}.blocks.0.attn.relative_position_bias_table"
            ))?[1],
        );
        depths.push(d);
    }
    if depths.is_empty() {
        return Err(FusionError::InvalidConfig(
            "cannot infer the configuration: no Swin blocks under vit_model.layers".into(),
        ));
    }
    let table_rows = shape("vit_model.layers.0.blocks.0.attn.relative_position_bias_table")?[0];
    let window = (((table_rows as f64).sqrt().round() as usize) + 1) / 2;
    let embed_dim = patch[0];
    let mlp_hidden = shape("vit_model.layers.0.blocks.0.mlp.fc1.weight")?[0];
    let image_size = match store.get("vit_model.layers.0.blocks.1.attn_mask") {
        // `[windows, w², w²]` on stage 0's grid of (image / patch)² tokens.
        Some(mask) if mask.shape.len() == 3 => {
            let per_side = (mask.shape[0] as f64).sqrt().round() as usize;
            per_side * window * patch[2]
        }
        _ => {
            assumed.push(AssumedSetting {
                key: "swin.image_size".into(),
                value: window * 32,
                reason: format!("32 × the window {window}, the original code's rule"),
            });
            window * 32
        }
    };
    let mut swin = SwinConfig::new(image_size, embed_dim, depths, heads, window)
        .with_patch_size(patch[2])
        .with_num_channels(patch[1])
        .with_mlp_ratio(mlp_hidden as f64 / embed_dim as f64);
    swin.qkv_bias = store.contains("vit_model.layers.0.blocks.0.attn.qkv.bias");

    let words = shape("text_transformer.embeddings.word_embeddings.weight")?;
    let mut layers = 0;
    while store.contains(&format!(
        "text_transformer.encoder.layer.{layers}.attention.self.query.weight"
    )) {
        layers += 1;
    }
    let intermediate = shape("text_transformer.encoder.layer.0.intermediate.dense.weight")?[0];
    let hidden = words[1];
    let Some(&(_, text_heads)) = STANDARD_TEXT_HEADS.iter().find(|(w, _)| *w == hidden) else {
        return Err(FusionError::InvalidConfig(format!(
            "the checkpoint does not store `roberta.num_attention_heads` and its text width {hidden} \
             has no standard head count (768 → 12, 1024 → 16); give a --config file that sets it \
             (the JSON `convert` writes, e.g. from `cargo xtask train --print-config`'s [model.fiber])"
        )));
    };
    assumed.push(AssumedSetting {
        key: "roberta.num_attention_heads".into(),
        value: text_heads,
        reason: format!("text width {hidden} in 64-wide heads, as RoBERTa"),
    });
    let roberta = RobertaConfig::new(words[0], hidden, layers, text_heads, intermediate)
        .with_max_position_embeddings(
            shape("text_transformer.embeddings.position_embeddings.weight")?[0],
        )
        .with_type_vocab_size(
            shape("text_transformer.embeddings.token_type_embeddings.weight")?[0],
        );

    let num_fuse_block = store
        .names()
        .filter(|k| k.ends_with("attn.alpha_i2t"))
        .count();
    let version = if store.names().any(|k| k.contains("norm_i2t_i")) {
        FusionVersion::V1
    } else {
        FusionVersion::V2
    };
    let config = FiberConfig::new(swin, roberta)
        .with_num_fuse_block(num_fuse_block)
        .with_fusion_version(version);
    config.validate()?;
    Ok(InferredConfig { config, assumed })
}

/// Writes `config` as a converted folder's `config.json`, with the settings that were assumed
/// rather than read or given listed under `"assumed"` (ignored when the file is read back as a
/// configuration; [`read_assumed`] reads them).
pub fn write_config(
    config: &FiberConfig,
    assumed: &[AssumedSetting],
    path: &Path,
) -> Result<(), FusionError> {
    let invalid = |e: serde_json::Error| FusionError::InvalidConfig(e.to_string());
    let mut value = serde_json::to_value(config).map_err(invalid)?;
    if !assumed.is_empty() {
        value["assumed"] = serde_json::to_value(assumed).map_err(invalid)?;
    }
    let text = serde_json::to_string_pretty(&value).map_err(invalid)?;
    fiber_core::store::write_atomically(path, text.as_bytes())?;
    Ok(())
}

/// The settings a `config.json` written by [`write_config`] marks as assumed (none for a file
/// without the list).
pub fn read_assumed(path: &Path) -> Result<Vec<AssumedSetting>, FusionError> {
    let value: serde_json::Value = fiber_core::json::read_json(path)?;
    match value.get("assumed") {
        Some(list) => Ok(fiber_core::json::from_value(list.clone(), path)?),
        None => Ok(Vec::new()),
    }
}

/// Whether the store holds captioning adapters (`cross_modal_att_layers.*`).
pub fn has_caption_adapters(store: &TensorStore) -> bool {
    store
        .names()
        .any(|k| k.starts_with("cross_modal_att_layers."))
}

/// docs/model.md §4.3: `rank_output` should equal row 1 of `itm_score.fc`; returns a warning naming the
/// largest difference when it does not (the original's parameter sharing can break on `.to()`).
pub fn rank_output_warning(store: &TensorStore) -> Option<String> {
    let itm = store.get("itm_score.fc.weight")?;
    let rank = store.get("rank_output.weight")?;
    let (itm_w, rank_w) = (itm.as_f32()?, rank.as_f32()?);
    let width = *itm.shape.get(1)?;
    if itm.shape.first() != Some(&2) || rank_w.len() != width {
        return Some(format!(
            "rank_output.weight {:?} does not fit itm_score.fc.weight {:?}",
            rank.shape, itm.shape
        ));
    }
    let mut diff = fiber_core::compare::max_abs_diff(&itm_w[width..], rank_w);
    if let (Some(ib), Some(rb)) = (
        store
            .get("itm_score.fc.bias")
            .and_then(StoredTensor::as_f32),
        store.get("rank_output.bias").and_then(StoredTensor::as_f32),
    ) {
        if ib.len() == 2 && rb.len() == 1 {
            diff = diff.max((ib[1] - rb[0]).abs());
        }
    }
    (diff > 0.0).then(|| format!("rank_output differs from row 1 of itm_score.fc by up to {diff:.3e}; the ITM score uses itm_score (docs/model.md §4.3)"))
}

/// A FIBER model on disk: an original checkpoint file or a converted folder.
#[derive(Debug, Clone)]
pub struct FiberCheckpoint {
    /// The configuration (from the folder, the explicit config file, or inferred).
    pub config: FiberConfig,
    /// Sizes the configuration assumes rather than reads (inferred, or marked so in the
    /// folder's `config.json`); empty with an explicit config file.
    pub assumed: Vec<AssumedSetting>,
    /// Every tensor of the checkpoint.
    pub store: TensorStore,
}

impl FiberCheckpoint {
    /// Reads `path`: a converted folder (`config.json` + `model.safetensors`), or an original
    /// `.ckpt`/`.pt`/`.pth` (tensors under `state_dict` or `model`) or `.safetensors` file.
    /// `config` overrides the folder's or the inferred configuration.
    pub fn read(path: impl AsRef<Path>, config: Option<&Path>) -> Result<Self, FusionError> {
        let path = path.as_ref();
        let (store, folder_config): (TensorStore, Option<PathBuf>) = if path.is_dir() {
            (
                TensorStore::read_safetensors(path.join("model.safetensors"))?,
                Some(path.join("config.json")),
            )
        } else {
            (TensorStore::read_any(path)?, None)
        };
        let mut store = store;
        store.rename_prefix("module.", "");
        let (config, assumed) = match (config, folder_config) {
            (Some(file), _) => (FiberConfig::load_json(file)?, Vec::new()),
            (None, Some(file)) => (FiberConfig::load_json(&file)?, read_assumed(&file)?),
            (None, None) => {
                let inferred = infer_config(&store)?;
                (inferred.config, inferred.assumed)
            }
        };
        Ok(Self {
            config,
            assumed,
            store,
        })
    }

    /// Builds the backbone and loads every tensor it needs (strict: nothing may be missing).
    pub fn backbone<B: Backend>(
        &self,
        device: &B::Device,
    ) -> Result<(FiberBackbone<B>, LoadReport), FusionError> {
        let mut model =
            FiberBackbone::new(&self.config, has_caption_adapters(&self.store), device)?;
        let report = model.load_fiber_store(self.store.clone(), false)?;
        Ok((model, report))
    }
}
