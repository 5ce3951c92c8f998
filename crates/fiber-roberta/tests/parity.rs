//! Numerical parity with HuggingFace transformers on small random models.
//! The fixtures are written by `scripts/make_fixtures.py`.

use std::path::PathBuf;

use burn::backend::NdArray;
use burn::prelude::*;
use burn::tensor::TensorData;
use fiber_core::TensorStore;
use fiber_roberta::{RobertaForMaskedLm, RobertaModel, RobertaTokenizer};

type B = NdArray<f32>;
const TOLERANCE: f32 = 1e-4;

fn fixture(parts: &[&str]) -> PathBuf {
    let mut p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures");
    for part in parts {
        p.push(part);
    }
    p
}

fn inputs(dir: &str) -> (Tensor<B, 2, Int>, Tensor<B, 2, Int>) {
    let store =
        TensorStore::read_safetensors(fixture(&["roberta", dir, "input.safetensors"])).unwrap();
    let get = |name: &str| {
        let t = store.get(name).unwrap();
        Tensor::<B, 2, Int>::from_data(
            TensorData::new(t.as_i64().unwrap().to_vec(), t.shape.clone()),
            &Default::default(),
        )
    };
    (get("input_ids"), get("attention_mask"))
}

fn assert_close<const D: usize>(name: &str, actual: Tensor<B, D>, expected: &TensorStore) -> f32 {
    let reference = expected.get(name).unwrap();
    assert_eq!(actual.dims().to_vec(), reference.shape, "{name} shape");
    let values: Vec<f32> = actual.into_data().into_vec().unwrap();
    let err = fiber_core::compare::max_abs_diff(&values, reference.as_f32().unwrap());
    println!("{name}: max abs error {err:.3e}");
    assert!(
        err <= TOLERANCE,
        "{name}: max abs error {err} > {TOLERANCE}"
    );
    err
}

#[test]
fn roberta_model_matches_transformers_on_a_padded_batch() {
    let device = Default::default();
    let (model, _) =
        RobertaModel::<B>::from_pretrained(fixture(&["roberta", "tiny"]), &device).unwrap();
    let expected =
        TensorStore::read_safetensors(fixture(&["roberta", "tiny", "expected.safetensors"]))
            .unwrap();
    let (ids, mask) = inputs("tiny");
    let out = model.forward(ids.clone(), mask.clone(), false);
    assert_close("last_hidden_state", out.last_hidden_state, &expected);
    assert_close("pooler_output", out.pooler_output.unwrap(), &expected);
    let causal = model.forward(ids, mask, true);
    assert_close(
        "causal_last_hidden_state",
        causal.last_hidden_state,
        &expected,
    );
}

#[test]
fn masked_lm_with_tied_decoder_matches_transformers() {
    let device = Default::default();
    let (model, _) =
        RobertaForMaskedLm::<B>::from_pretrained(fixture(&["roberta", "tiny-mlm"]), &device)
            .unwrap();
    let expected =
        TensorStore::read_safetensors(fixture(&["roberta", "tiny-mlm", "expected.safetensors"]))
            .unwrap();
    let (ids, mask) = inputs("tiny-mlm");
    let (hidden, logits) = model.forward(ids, mask);
    assert_close("last_hidden_state", hidden, &expected);
    assert_close("logits", logits, &expected);
}

/// Encodes the fixture's texts with the tokenizer found in `tokenizer/{form}` and compares
/// with the ids of the reference `tokenizers` library configured like roberta-base.
fn check_tokenizer_form(form: &str) {
    let dir = fixture(&["tokenizer", form]);
    let tokenizer = RobertaTokenizer::from_dir(&dir).unwrap();
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let texts: Vec<String> = serde_json::from_value(expected["texts"].clone()).unwrap();
    let max_len = expected["max_length"].as_u64().unwrap() as usize;
    let batch = tokenizer.encode_batch(&texts, max_len).unwrap();
    let flat = |key: &str| -> Vec<i64> {
        let rows: Vec<Vec<i64>> = serde_json::from_value(expected[key].clone()).unwrap();
        rows.concat()
    };
    assert_eq!(batch.input_ids, flat("input_ids"));
    assert_eq!(batch.attention_mask, flat("attention_mask"));
}

#[test]
fn vocab_and_merges_tokenizer_matches_the_reference_ids() {
    check_tokenizer_form("roberta-form");
}

#[test]
fn tokenizer_json_matches_the_reference_ids() {
    check_tokenizer_form("json-form");
}
