//! End-to-end: `cargo xtask hf-forward` on the committed fixtures reproduces the HuggingFace
//! outputs within 1e-4.

use std::path::PathBuf;

use fiber_core::TensorStore;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

fn run_and_compare(arch: &str, dir: &str, outputs: &[&str]) {
    let model_dir = fixtures().join("roberta").join(dir);
    let out = std::env::temp_dir().join(format!("fiber-hf-forward-{dir}-{}.safetensors", std::process::id()));
    xtask::run([
        "xtask",
        "hf-forward",
        "--arch",
        arch,
        "--model-dir",
        model_dir.to_str().unwrap(),
        "--input",
        model_dir.join("input.safetensors").to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ])
    .unwrap();
    let actual = TensorStore::read_safetensors(&out).unwrap();
    let expected = TensorStore::read_safetensors(model_dir.join("expected.safetensors")).unwrap();
    assert_eq!(actual.len(), outputs.len(), "exactly the documented outputs are written");
    for name in outputs {
        let (a, e) = (actual.get(name).unwrap(), expected.get(name).unwrap());
        assert_eq!(a.shape, e.shape, "{name}");
        let err = fiber_core::compare::max_abs_diff(a.as_f32().unwrap(), e.as_f32().unwrap());
        println!("{arch} {name}: max abs error {err:.3e}");
        assert!(err <= 1e-4, "{name}: {err}");
    }
    std::fs::remove_file(out).unwrap();
}

#[test]
fn roberta_outputs_match_transformers() {
    run_and_compare("roberta", "tiny", &["last_hidden_state", "pooler_output"]);
}

#[test]
fn roberta_mlm_outputs_match_transformers() {
    run_and_compare("roberta-mlm", "tiny-mlm", &["last_hidden_state", "logits"]);
}

#[test]
fn a_missing_model_folder_is_a_clear_error() {
    let dir = fixtures().join("roberta").join("tiny");
    let err = xtask::run([
        "xtask", "hf-forward", "--arch", "roberta", "--model-dir", "/nonexistent/model",
        "--input", dir.join("input.safetensors").to_str().unwrap(), "--output", "/tmp/unused.safetensors",
    ])
    .unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("/nonexistent/model/config.json"), "{text}");
}
