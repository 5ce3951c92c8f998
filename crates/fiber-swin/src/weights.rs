//! Loading Swin weights (docs/model.md §6.2, §6.3): HuggingFace `SwinModel` files and the original
//! Microsoft/timm layout map onto the same modules.
//!
//! The model's keys are the original ones. A HuggingFace file is first renamed into that
//! layout (separate query/key/value concatenated into `qkv` in that order); then every
//! relative-position table whose window differs from the model's is resized bicubically
//! (docs/model.md §1.1), and recomputed buffers (`relative_position_index`, `attn_mask`) and the
//! classifier head are skipped.

use std::path::Path;

use burn::prelude::*;
use fiber_core::interpolate::bicubic_resize;
use fiber_core::{LoadReport, StoredTensor, TensorStore, WeightError, WeightLoader};

use crate::config::SwinConfig;
use crate::error::SwinError;
use crate::model::SwinModel;

/// Whether the store holds HuggingFace `SwinModel` keys (optionally under `swin.`).
pub fn is_hf_layout(store: &TensorStore) -> bool {
    store
        .names()
        .any(|k| k.contains("embeddings.patch_embeddings.projection"))
}

/// Renames one HuggingFace key (without `swin.`) into the original layout; `None` for keys
/// that are merged (query/key/value) or have no counterpart.
fn hf_key_to_original(key: &str) -> Option<String> {
    const BLOCK_RENAMES: [(&str, &str); 10] = [
        ("layernorm_before", "norm1"),
        ("layernorm_after", "norm2"),
        (
            "attention.self.relative_position_bias_table",
            "attn.relative_position_bias_table",
        ),
        (
            "attention.relative_position_bias.relative_position_bias_table",
            "attn.relative_position_bias_table",
        ),
        ("attention.output.dense", "attn.proj"),
        ("attention.o_proj", "attn.proj"),
        ("intermediate.dense", "mlp.fc1"),
        ("output.dense", "mlp.fc2"),
        ("mlp.fc1", "mlp.fc1"),
        ("mlp.fc2", "mlp.fc2"),
    ];
    if let Some(rest) = key.strip_prefix("embeddings.patch_embeddings.projection.") {
        return Some(format!("patch_embed.proj.{rest}"));
    }
    if let Some(rest) = key.strip_prefix("embeddings.norm.") {
        return Some(format!("patch_embed.norm.{rest}"));
    }
    if let Some(rest) = key.strip_prefix("layernorm.") {
        return Some(format!("norm.{rest}"));
    }
    let rest = key.strip_prefix("encoder.")?;
    // rest = layers.{s}.blocks.{b}.<module>.<param> or layers.{s}.downsample.<…>
    let parts: Vec<&str> = rest.splitn(5, '.').collect();
    if parts.len() == 5 && parts[2] == "blocks" {
        let (prefix, tail) = (format!("layers.{}.blocks.{}", parts[1], parts[3]), parts[4]);
        return BLOCK_RENAMES.iter().find_map(|(from, to)| {
            if tail == *from {
                return Some(format!("{prefix}.{to}"));
            }
            let param = tail.strip_prefix(from)?.strip_prefix('.')?;
            Some(format!("{prefix}.{to}.{param}"))
        });
    }
    Some(rest.to_string())
}

/// Converts a HuggingFace `SwinModel` store into the original layout.
pub fn hf_to_original(store: TensorStore) -> TensorStore {
    let mut store = store;
    store.rename_prefix("swin.", "");
    let mut out = TensorStore::new();
    let mut qkv_parts: std::collections::BTreeMap<String, [Option<StoredTensor>; 3]> =
        Default::default();
    for (key, tensor) in store.into_iter_sorted() {
        let qkv = [
            ("attention.self.query.", 0),
            ("attention.self.key.", 1),
            ("attention.self.value.", 2),
            ("attention.q_proj.", 0),
            ("attention.k_proj.", 1),
            ("attention.v_proj.", 2),
        ]
        .iter()
        .find_map(|(marker, slot)| key.find(marker).map(|at| (at, marker.len(), *slot)));
        if let Some((at, len, slot)) = qkv {
            let block = key[..at]
                .strip_prefix("encoder.")
                .unwrap_or(&key[..at])
                .to_string();
            let target = format!("{block}attn.qkv.{}", &key[at + len..]);
            qkv_parts.entry(target).or_default()[slot] = Some(tensor);
            continue;
        }
        match hf_key_to_original(&key) {
            Some(new_key) => out.insert(new_key, tensor),
            None => out.insert(key, tensor),
        }
    }
    for (target, parts) in qkv_parts {
        match parts {
            [Some(q), Some(k), Some(v)] if q.shape == k.shape && k.shape == v.shape => {
                let mut shape = q.shape.clone();
                shape[0] *= 3;
                let values: Vec<f32> = [q, k, v]
                    .iter()
                    .flat_map(|t| t.as_f32().unwrap_or(&[]).to_vec())
                    .collect();
                if values.len() == shape.iter().product::<usize>() {
                    out.insert(target, StoredTensor::f32(shape, values));
                }
            }
            // An incomplete or inconsistent triple is left out: `attn.qkv` is then reported missing.
            _ => {}
        }
    }
    out
}

/// Buffers every Swin checkpoint may carry that the model recomputes from its sizes.
pub fn is_swin_buffer(key: &str) -> bool {
    key.ends_with("relative_position_index") || key.ends_with("attn_mask")
}

/// Resizes every relative-position table of `store` (original layout) whose window differs
/// from the model's: `[(2g−1)², heads]` → `[(2W−1)², heads]`, bicubic per head (docs/model.md §1.1).
/// Returns the resized keys.
pub fn resize_position_tables<B: Backend>(
    store: &mut TensorStore,
    model: &SwinModel<B>,
    prefix: &str,
) -> Vec<String> {
    let mut resized = Vec::new();
    for (s, stage) in model.layers.iter().enumerate() {
        for (b, block) in stage.blocks.iter().enumerate() {
            let key = fiber_core::weights::join_key(
                prefix,
                &format!("layers.{s}.blocks.{b}.attn.relative_position_bias_table"),
            );
            let side = 2 * block.attn.table_window - 1;
            let Some(table) = store.get(&key) else {
                continue;
            };
            let (Some(values), &[rows, heads]) = (table.as_f32(), &table.shape[..]) else {
                continue;
            };
            let old_side = (rows as f64).sqrt().round() as usize;
            if rows == side * side || old_side * old_side != rows || heads != block.attn.num_heads {
                continue; // same size, or not a square table: left for the shape check to report
            }
            // [rows, heads] → [heads, old, old] → bicubic → [heads, side, side] → [side², heads]
            let per_head: Vec<f32> = (0..heads)
                .flat_map(|h| (0..rows).map(move |r| values[r * heads + h]))
                .collect();
            let scaled = bicubic_resize(&per_head, heads, (old_side, old_side), (side, side));
            let n = side * side;
            let back: Vec<f32> = (0..n)
                .flat_map(|r| (0..heads).map(move |h| (r, h)))
                .map(|(r, h)| scaled[h * n + r])
                .collect();
            store.insert(key.clone(), StoredTensor::f32(vec![n, heads], back));
            resized.push(key);
        }
    }
    resized
}

impl<B: Backend> SwinModel<B> {
    /// Loads every parameter from a store in either layout (HuggingFace or original), resizing
    /// relative-position tables to this model's windows; fails listing every missing,
    /// unexpected or mis-shaped key.
    pub fn load_store(&mut self, store: TensorStore) -> Result<LoadReport, WeightError> {
        let mut store = if is_hf_layout(&store) {
            hf_to_original(store)
        } else {
            store
        };
        resize_position_tables(&mut store, self, "");
        let mut loader = WeightLoader::new(store)
            .skip_unused("buffer, recomputed from the window size", is_swin_buffer)
            .skip_unused("image-classification head, not part of the backbone", |k| {
                k.starts_with("head.") || k.starts_with("classifier.")
            });
        self.visit_weights(&mut loader, "");
        loader.finish()
    }

    /// Builds the model of `dir/config.json` with the weights of `dir/model.safetensors`.
    pub fn from_pretrained(
        dir: impl AsRef<Path>,
        device: &B::Device,
    ) -> Result<(Self, SwinConfig), SwinError> {
        let dir = dir.as_ref();
        let config = SwinConfig::from_hf_json_file(dir.join("config.json"))?;
        let store = TensorStore::read_safetensors(dir.join("model.safetensors"))?;
        let mut model = Self::new(&config, device);
        model.load_store(store)?;
        Ok((model, config))
    }

    /// Builds a model for `config` from a weight file in either layout: `.safetensors`, or a
    /// PyTorch `.pth`/`.pt`/`.ckpt` (weights at the top level or under `model`/`state_dict`).
    pub fn from_file(
        config: &SwinConfig,
        path: impl AsRef<Path>,
        device: &B::Device,
    ) -> Result<(Self, LoadReport), SwinError> {
        let store = TensorStore::read_any(path)?;
        let mut model = Self::new(config, device);
        let report = model.load_store(store)?;
        Ok((model, report))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hf_keys_map_to_the_original_layout() {
        let cases = [
            (
                "embeddings.patch_embeddings.projection.weight",
                "patch_embed.proj.weight",
            ),
            ("embeddings.norm.bias", "patch_embed.norm.bias"),
            (
                "encoder.layers.1.blocks.0.layernorm_before.weight",
                "layers.1.blocks.0.norm1.weight",
            ),
            (
                "encoder.layers.1.blocks.0.attention.output.dense.bias",
                "layers.1.blocks.0.attn.proj.bias",
            ),
            (
                "encoder.layers.2.blocks.3.attention.self.relative_position_bias_table",
                "layers.2.blocks.3.attn.relative_position_bias_table",
            ),
            (
                "encoder.layers.0.blocks.1.intermediate.dense.weight",
                "layers.0.blocks.1.mlp.fc1.weight",
            ),
            (
                "encoder.layers.0.blocks.1.output.dense.weight",
                "layers.0.blocks.1.mlp.fc2.weight",
            ),
            (
                "encoder.layers.0.downsample.reduction.weight",
                "layers.0.downsample.reduction.weight",
            ),
            ("layernorm.weight", "norm.weight"),
        ];
        for (hf, original) in cases {
            assert_eq!(hf_key_to_original(hf).as_deref(), Some(original), "{hf}");
        }
    }

    #[test]
    fn query_key_value_are_concatenated_in_that_order() {
        let mut store = TensorStore::new();
        for (i, name) in ["query", "key", "value"].iter().enumerate() {
            store.insert(
                format!("swin.encoder.layers.0.blocks.0.attention.self.{name}.weight"),
                StoredTensor::f32(vec![1, 2], vec![i as f32; 2]),
            );
            store.insert(
                format!("swin.encoder.layers.0.blocks.0.attention.self.{name}.bias"),
                StoredTensor::f32(vec![1], vec![10.0 + i as f32]),
            );
        }
        store.insert(
            "swin.embeddings.patch_embeddings.projection.bias",
            StoredTensor::f32(vec![1], vec![0.0]),
        );
        let out = hf_to_original(store);
        let w = out.get("layers.0.blocks.0.attn.qkv.weight").unwrap();
        assert_eq!(w.shape, vec![3, 2]);
        assert_eq!(w.as_f32().unwrap(), &[0.0, 0.0, 1.0, 1.0, 2.0, 2.0]);
        assert_eq!(
            out.get("layers.0.blocks.0.attn.qkv.bias")
                .unwrap()
                .as_f32()
                .unwrap(),
            &[10.0, 11.0, 12.0]
        );
    }
}
