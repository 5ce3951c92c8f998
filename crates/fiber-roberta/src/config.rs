//! Hyper-parameters of the RoBERTa encoder, read from a HuggingFace `config.json`.

use std::path::Path;

use burn::config::Config;
use fiber_core::Activation;
use serde::Deserialize;

use crate::error::RobertaError;
use fiber_core::json::{from_value, parse_json, read_json, read_over_defaults};

/// RoBERTa hyper-parameters; field names follow HuggingFace's `RobertaConfig`.
#[derive(Config, Debug, PartialEq)]
pub struct RobertaConfig {
    /// Vocabulary size (rows of the word-embedding table).
    pub vocab_size: usize,
    /// Width of every hidden state.
    pub hidden_size: usize,
    /// Number of transformer layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer; must divide `hidden_size`.
    pub num_attention_heads: usize,
    /// Width of the feed-forward inner layer.
    pub intermediate_size: usize,
    /// Feed-forward activation.
    #[config(default = "Activation::Gelu")]
    pub hidden_act: Activation,
    /// Dropout on embeddings and sub-layer outputs (training only).
    #[config(default = 0.1)]
    pub hidden_dropout_prob: f64,
    /// Dropout on attention probabilities (training only).
    #[config(default = 0.1)]
    pub attention_probs_dropout_prob: f64,
    /// Rows of the position-embedding table (514 for roberta-base: 512 + padding offset).
    #[config(default = 514)]
    pub max_position_embeddings: usize,
    /// Rows of the token-type table (1 for RoBERTa).
    #[config(default = 1)]
    pub type_vocab_size: usize,
    /// LayerNorm epsilon.
    #[config(default = 1e-5)]
    pub layer_norm_eps: f64,
    /// Id of `<pad>`; also the padding index of the position embeddings.
    #[config(default = 1)]
    pub pad_token_id: usize,
    /// Standard deviation of the normal initialisation of new weights.
    #[config(default = 0.02)]
    pub initializer_range: f64,
}

/// The sizes a HuggingFace `config.json` must give (every other field has a default).
#[derive(Deserialize)]
struct RequiredSizes {
    vocab_size: usize,
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    intermediate_size: usize,
}

/// HuggingFace's `layer_norm_eps` when a file omits it (its `BertConfig` default; roberta-base's
/// file states 1e-5, this crate's default, explicitly).
const HF_DEFAULT_LAYER_NORM_EPS: f64 = 1e-12;

impl RobertaConfig {
    /// roberta-base: 12 layers, width 768, 12 heads, FFN 3072, vocabulary 50265 (docs/model.md §1.2).
    pub fn roberta_base() -> Self {
        Self::new(50265, 768, 12, 12, 3072)
    }

    /// Parses a HuggingFace `config.json` (errors give file, line and column).
    pub fn from_hf_json_file(path: impl AsRef<Path>) -> Result<Self, RobertaError> {
        let path = path.as_ref();
        Self::from_hf(read_json(path)?, path)
    }

    /// Parses the text of a HuggingFace `config.json`.
    pub fn from_hf_json_str(text: &str) -> Result<Self, RobertaError> {
        Self::from_hf(parse_json(text, Path::new(""))?, Path::new(""))
    }

    /// The configuration of a parsed HuggingFace file: the fields of this struct are read under
    /// their own names (the HuggingFace names); those the file omits take HuggingFace's defaults.
    fn from_hf(given: serde_json::Value, path: &Path) -> Result<Self, RobertaError> {
        let s: RequiredSizes = from_value(given.clone(), path)?;
        let defaults = Self::new(
            s.vocab_size,
            s.hidden_size,
            s.num_hidden_layers,
            s.num_attention_heads,
            s.intermediate_size,
        )
        .with_layer_norm_eps(HF_DEFAULT_LAYER_NORM_EPS);
        let config = read_over_defaults(&defaults, &given, path)?;
        config.validate()?;
        Ok(config)
    }

    /// Writes the configuration as a HuggingFace-compatible `config.json` text: every field under
    /// its name, and `model_type`.
    pub fn to_hf_json(&self) -> String {
        let mut value = serde_json::to_value(self).expect("a configuration serialises");
        value["model_type"] = "roberta".into();
        serde_json::to_string_pretty(&value).expect("a JSON value always serialises")
    }

    /// Checks the relations between fields that the model relies on.
    pub fn validate(&self) -> Result<(), RobertaError> {
        let bad = |m: String| Err(RobertaError::InvalidConfig(m));
        if self.num_attention_heads == 0 || self.hidden_size % self.num_attention_heads != 0 {
            return bad(format!(
                "hidden_size {} is not divisible by num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if self.pad_token_id >= self.vocab_size {
            return bad(format!(
                "pad_token_id {} is outside the vocabulary of {}",
                self.pad_token_id, self.vocab_size
            ));
        }
        if self.max_position_embeddings <= self.pad_token_id + 1 {
            return bad(format!(
                "max_position_embeddings {} leaves no position after the padding offset {}",
                self.max_position_embeddings,
                self.pad_token_id + 1
            ));
        }
        Ok(())
    }

    /// Longest text the position table can hold (positions start after `pad_token_id`).
    pub fn max_text_len(&self) -> usize {
        self.max_position_embeddings - self.pad_token_id - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_roberta_base_config_file() {
        let text = r#"{"architectures":["RobertaForMaskedLM"],"attention_probs_dropout_prob":0.1,"bos_token_id":0,
            "eos_token_id":2,"hidden_act":"gelu","hidden_dropout_prob":0.1,"hidden_size":768,"initializer_range":0.02,
            "intermediate_size":3072,"layer_norm_eps":1e-05,"max_position_embeddings":514,"model_type":"roberta",
            "num_attention_heads":12,"num_hidden_layers":12,"pad_token_id":1,"type_vocab_size":1,"vocab_size":50265}"#;
        let config = RobertaConfig::from_hf_json_str(text).unwrap();
        assert_eq!(config, RobertaConfig::roberta_base());
        assert_eq!(config.max_text_len(), 512);
        let again = RobertaConfig::from_hf_json_str(&config.to_hf_json()).unwrap();
        assert_eq!(again, config);
    }

    #[test]
    fn omitted_fields_take_huggingface_defaults_and_other_keys_are_ignored() {
        let text = r#"{"vocab_size": 100, "hidden_size": 32, "num_hidden_layers": 2,
            "num_attention_heads": 4, "intermediate_size": 64, "hidden_dropout_prob": 0.0,
            "architectures": ["RobertaModel"], "torch_dtype": "float32"}"#;
        let config = RobertaConfig::from_hf_json_str(text).unwrap();
        let expected = RobertaConfig::new(100, 32, 2, 4, 64)
            .with_hidden_dropout_prob(0.0)
            .with_layer_norm_eps(1e-12);
        assert_eq!(config, expected);
        let err = RobertaConfig::from_hf_json_str(
            r#"{"vocab_size": 100, "hidden_size": 32, "num_hidden_layers": 2,
            "num_attention_heads": 4, "intermediate_size": 64, "pad_token_id": "one"}"#,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("pad_token_id") || err.to_string().contains("invalid type"),
            "{err}"
        );
    }

    #[test]
    fn malformed_json_reports_line_and_column() {
        let err =
            RobertaConfig::from_hf_json_str("{\n  \"hidden_size\": 768,\n  oops\n}").unwrap_err();
        let RobertaError::Config(fiber_core::json::ConfigFileError::Parse { line, .. }) = err
        else {
            panic!("{err}")
        };
        assert_eq!(line, 3);
        let err = RobertaConfig::from_hf_json_str(r#"{"hidden_size": 768}"#).unwrap_err();
        assert!(err.to_string().contains("missing field"), "{err}");
    }

    #[test]
    fn inconsistent_sizes_are_rejected() {
        let config = RobertaConfig::new(100, 30, 1, 4, 64);
        assert!(config
            .validate()
            .unwrap_err()
            .to_string()
            .contains("not divisible"));
    }
}
