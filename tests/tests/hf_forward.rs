//! End-to-end: `cargo xtask hf-forward` on the committed fixtures reproduces the HuggingFace
//! outputs within 1e-4.

use std::path::PathBuf;

use fiber_core::TensorStore;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

/// Runs `hf-forward` on `fixtures/{family}/{dir}` with input `{input}.safetensors` and compares
/// every output with `{expected}.safetensors`.
fn run_and_compare(
    arch: &str,
    family: &str,
    dir: &str,
    (input, expected): (&str, &str),
    outputs: &[String],
) {
    let model_dir = fixtures().join(family).join(dir);
    let out = std::env::temp_dir().join(format!(
        "fiber-hf-forward-{dir}-{input}-{}.safetensors",
        std::process::id()
    ));
    xtask::run([
        "xtask",
        "hf-forward",
        "--arch",
        arch,
        "--model-dir",
        model_dir.to_str().unwrap(),
        "--input",
        model_dir
            .join(format!("{input}.safetensors"))
            .to_str()
            .unwrap(),
        "--output",
        out.to_str().unwrap(),
    ])
    .unwrap();
    let actual = TensorStore::read_safetensors(&out).unwrap();
    let expected =
        TensorStore::read_safetensors(model_dir.join(format!("{expected}.safetensors"))).unwrap();
    assert_eq!(
        actual.len(),
        outputs.len(),
        "exactly the documented outputs are written"
    );
    for name in outputs.iter().map(String::as_str) {
        let (a, e) = (actual.get(name).unwrap(), expected.get(name).unwrap());
        assert_eq!(a.shape, e.shape, "{name}");
        let err = fiber_core::compare::max_abs_diff(a.as_f32().unwrap(), e.as_f32().unwrap());
        println!("{arch} {name}: max abs error {err:.3e}");
        assert!(err <= 1e-4, "{name}: {err}");
    }
    std::fs::remove_file(out).unwrap();
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn roberta_outputs_match_transformers() {
    run_and_compare(
        "roberta",
        "roberta",
        "tiny",
        ("input", "expected"),
        &names(&["last_hidden_state", "pooler_output"]),
    );
}

#[test]
fn roberta_mlm_outputs_match_transformers() {
    run_and_compare(
        "roberta-mlm",
        "roberta",
        "tiny-mlm",
        ("input", "expected"),
        &names(&["last_hidden_state", "logits"]),
    );
}

#[test]
fn swin_outputs_match_transformers_on_square_and_padded_inputs() {
    let mut outputs = names(&["last_hidden_state", "pooler_output"]);
    for i in 0..4 {
        outputs.push(format!("hidden_states.{i}"));
        outputs.push(format!("reshaped_hidden_states.{i}"));
    }
    for case in ["square", "padded"] {
        run_and_compare(
            "swin",
            "swin",
            "tiny",
            (&format!("input_{case}"), &format!("expected_{case}")),
            &outputs,
        );
    }
}

#[test]
fn a_missing_model_folder_is_a_clear_error() {
    let dir = fixtures().join("roberta").join("tiny");
    let unused = std::env::temp_dir().join("fiber-unused.safetensors");
    let err = xtask::run([
        "xtask",
        "hf-forward",
        "--arch",
        "roberta",
        "--model-dir",
        "/nonexistent/model",
        "--input",
        dir.join("input.safetensors").to_str().unwrap(),
        "--output",
        unused.to_str().unwrap(),
    ])
    .unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("/nonexistent/model/config.json"), "{text}");
}
