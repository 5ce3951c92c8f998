//! Loading HuggingFace RoBERTa checkpoints (docs/model.md §6.3).
//!
//! HuggingFace saves `RobertaModel` with bare keys (`embeddings.…`) and `RobertaForMaskedLM`
//! with `roberta.`-prefixed keys plus `lm_head.*`, usually without `lm_head.decoder.weight`,
//! which is tied to the word embeddings. Both layouts load into both models.

use std::path::Path;

use burn::prelude::*;
use fiber_core::{LoadReport, TensorStore, WeightError, WeightLoader};

use crate::config::RobertaConfig;
use crate::error::RobertaError;
use crate::mlm::RobertaForMaskedLm;
use crate::model::RobertaModel;

/// Keys every RoBERTa checkpoint may carry that no model reads (recomputed buffers).
fn is_buffer(key: &str) -> bool {
    key.ends_with("embeddings.position_ids")
}

/// The store with the `roberta.` prefix removed, keyed like [`RobertaModel::visit_weights`]
/// with an empty prefix. Masked-LM head keys (`lm_head.*`) are left as they are.
pub fn strip_roberta_prefix(mut store: TensorStore) -> TensorStore {
    store.rename_prefix("roberta.", "");
    store
}

/// A loader over a HuggingFace checkpoint for a bare [`RobertaModel`] (keys without prefix):
/// recomputed buffers and the masked-LM head are skipped, and so is the pooler when
/// `with_pooler` is false. Callers add `allow_missing` rules for new modules (fusion).
pub fn model_loader(store: TensorStore, with_pooler: bool) -> WeightLoader {
    WeightLoader::new(strip_roberta_prefix(store))
        .skip_unused("buffer, recomputed", is_buffer)
        .skip_unused("masked-LM head, not part of the encoder", |k| {
            k.starts_with("lm_head.")
        })
        .skip_unused("pooler, not part of this model", move |k| {
            !with_pooler && k.starts_with("pooler.")
        })
}

/// A loader over a HuggingFace checkpoint for [`RobertaForMaskedLm`]: encoder keys get the
/// `roberta.` prefix, a missing `lm_head.decoder.weight` is tied to the word embeddings and
/// `lm_head.decoder.bias` (a tied alias of `lm_head.bias`) is accepted in its place.
pub fn masked_lm_loader(store: TensorStore) -> WeightLoader {
    let mut store = strip_roberta_prefix(store);
    let encoder_keys: Vec<String> = store
        .names()
        .filter(|k| !k.starts_with("lm_head."))
        .map(String::from)
        .collect();
    for key in encoder_keys {
        if let Some(t) = store.remove(&key) {
            store.insert(format!("roberta.{key}"), t);
        }
    }
    if !store.contains("lm_head.decoder.weight") {
        if let Some(tied) = store
            .get("roberta.embeddings.word_embeddings.weight")
            .cloned()
        {
            store.insert("lm_head.decoder.weight", tied);
        }
    }
    if !store.contains("lm_head.bias") {
        if let Some(bias) = store.remove("lm_head.decoder.bias") {
            store.insert("lm_head.bias", bias);
        }
    }
    WeightLoader::new(store)
        .skip_unused("buffer, recomputed", is_buffer)
        .skip_unused("pooler, not part of the masked-LM model", |k| {
            k.starts_with("roberta.pooler.")
        })
        .skip_unused("tied alias of lm_head.bias", |k| {
            k == "lm_head.decoder.bias"
        })
}

fn read_dir_files(dir: &Path) -> Result<(RobertaConfig, TensorStore), RobertaError> {
    let config = RobertaConfig::from_hf_json_file(dir.join("config.json"))?;
    let store = TensorStore::read_safetensors(dir.join("model.safetensors"))?;
    Ok((config, store))
}

impl<B: Backend> RobertaModel<B> {
    /// Loads every parameter from a HuggingFace checkpoint store (either key layout); fails
    /// listing every missing, unexpected or mis-shaped key.
    pub fn load_hf(&mut self, store: TensorStore) -> Result<LoadReport, WeightError> {
        let mut loader = model_loader(store, self.pooler.is_some());
        self.visit_weights(&mut loader, "");
        loader.finish()
    }

    /// Builds the model described by `dir/config.json` with the weights of
    /// `dir/model.safetensors` (with pooler, as HuggingFace's `RobertaModel`).
    pub fn from_pretrained(
        dir: impl AsRef<Path>,
        device: &B::Device,
    ) -> Result<(Self, RobertaConfig), RobertaError> {
        let (config, store) = read_dir_files(dir.as_ref())?;
        let mut model = Self::new(&config, true, device);
        model.load_hf(store)?;
        Ok((model, config))
    }
}

impl<B: Backend> RobertaForMaskedLm<B> {
    /// Loads every parameter from a HuggingFace checkpoint store (tied decoder allowed).
    pub fn load_hf(&mut self, store: TensorStore) -> Result<LoadReport, WeightError> {
        let mut loader = masked_lm_loader(store);
        self.visit_weights(&mut loader, "");
        loader.finish()
    }

    /// Builds the model described by `dir/config.json` with the weights of `dir/model.safetensors`.
    pub fn from_pretrained(
        dir: impl AsRef<Path>,
        device: &B::Device,
    ) -> Result<(Self, RobertaConfig), RobertaError> {
        let (config, store) = read_dir_files(dir.as_ref())?;
        let mut model = Self::new(&config, device);
        model.load_hf(store)?;
        Ok((model, config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fiber_core::WeightCollector;
    type B = burn::backend::NdArray;

    fn tiny() -> RobertaConfig {
        RobertaConfig::new(30, 8, 2, 2, 12)
    }

    #[test]
    fn a_masked_lm_file_without_decoder_weight_ties_it_to_the_embeddings() {
        let device = Default::default();
        let mut source = RobertaForMaskedLm::<B>::new(&tiny(), &device);
        let mut collector = WeightCollector::new();
        source.visit_weights(&mut collector, "");
        let mut store = collector.into_store();
        store.remove("lm_head.decoder.weight");
        let mut model = RobertaForMaskedLm::<B>::new(&tiny(), &device);
        model.load_hf(store).unwrap();
        let decoder: Vec<f32> = model
            .lm_head
            .decoder
            .weight
            .val()
            .transpose()
            .into_data()
            .into_vec()
            .unwrap();
        let words: Vec<f32> = source
            .roberta
            .embeddings
            .word_embeddings
            .weight
            .val()
            .into_data()
            .into_vec()
            .unwrap();
        assert_eq!(decoder, words);
    }

    #[test]
    fn a_masked_lm_file_loads_into_the_plain_model_but_its_missing_pooler_is_reported() {
        let device = Default::default();
        let mut source = RobertaForMaskedLm::<B>::new(&tiny(), &device);
        let mut collector = WeightCollector::new();
        source.visit_weights(&mut collector, "");
        let store = collector.into_store();
        let mut without_pooler = RobertaModel::<B>::new(&tiny(), false, &device);
        let report = without_pooler.load_hf(store.clone()).unwrap();
        assert!(report.skipped_keys().contains(&"lm_head.bias"));
        let mut with_pooler = RobertaModel::<B>::new(&tiny(), true, &device);
        let err = with_pooler.load_hf(store).unwrap_err().to_string();
        assert!(
            err.contains("missing:     pooler.dense.weight expected [8, 8]"),
            "{err}"
        );
    }

    #[test]
    fn a_wrong_config_names_every_mis_shaped_key() {
        let device = Default::default();
        let mut source = RobertaModel::<B>::new(&tiny(), true, &device);
        let mut collector = WeightCollector::new();
        source.visit_weights(&mut collector, "");
        let mut other = RobertaModel::<B>::new(&RobertaConfig::new(30, 8, 2, 2, 16), true, &device);
        let WeightError::Keys(problems) = other.load_hf(collector.into_store()).unwrap_err() else {
            panic!()
        };
        // intermediate.dense.{weight,bias} and output.dense.weight in each of the two layers.
        assert_eq!(problems.mismatched.len(), 6);
        assert!(problems
            .mismatched
            .iter()
            .any(|m| m.key == "encoder.layer.1.output.dense.weight"
                && m.expected == vec![8, 16]
                && m.found == vec![8, 12]));
    }
}
