//! The heads' checkpoint-key rules: how an original coarse checkpoint (or a converted
//! `model.safetensors`) is read into a [`FiberModel`]. The backbone's rules (skips, position
//! tables, fusion modules) are `fiber_fusion::weights`'; here the whole-model ones: a
//! `module.` prefix (data-parallel checkpoints) is dropped and a scalar `temp` becomes `[1]`.

use burn::prelude::*;
use fiber_core::{LoadReport, StoredTensor, TensorStore};
use fiber_fusion::weights::is_head_key;
use fiber_fusion::FusionError;

use crate::model::FiberModel;

/// `store` with the whole-model key rules applied: no `module.` prefix, `temp` of shape `[1]`.
pub(crate) fn normalize_keys(mut store: TensorStore) -> TensorStore {
    store.rename_prefix("module.", "");
    if let Some(temp) = store.get("temp").filter(|t| t.shape.is_empty()).cloned() {
        store.insert(
            "temp",
            StoredTensor {
                shape: vec![1],
                values: temp.values,
            },
        );
    }
    store
}

impl<B: Backend> FiberModel<B> {
    /// Loads an original coarse checkpoint's (or a converted) store: backbone and heads.
    /// `rank_output` is skipped (the ITM score is row 1 of `itm_score`, docs/model.md §4.3).
    pub fn load_store(&mut self, store: TensorStore) -> Result<LoadReport, FusionError> {
        self.load_store_with(store, false)
    }

    /// As [`Self::load_store`]; with `new_heads`, head keys absent from the store (a backbone-only
    /// or fine-tuned checkpoint) keep their fresh initialisation instead of being an error.
    pub fn load_store_with(
        &mut self,
        store: TensorStore,
        new_heads: bool,
    ) -> Result<LoadReport, FusionError> {
        let mut loader = self.backbone.fiber_loader(normalize_keys(store));
        if new_heads {
            loader = loader.allow_missing(is_head_key);
        }
        self.visit_weights(&mut loader);
        Ok(loader.finish()?)
    }
}
