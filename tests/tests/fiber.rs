//! End-to-end: `cargo xtask convert` and `cargo xtask fiber-forward` on the tiny original-layout
//! checkpoint written by `scripts/make_fixtures.py` reproduce the PyTorch reference outputs.

use std::path::{Path, PathBuf};

use fiber_core::TensorStore;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/fusion/tiny")
}

fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("fiber-e2e-{name}-{}", std::process::id()))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Runs `fiber-forward` on `model` in `mode` and compares with the reference outputs.
fn forward_and_compare(model: &Path, config: Option<&Path>, mode: &str) {
    let out = temp(&format!("{mode}.safetensors"));
    let input = dir().join("input.safetensors");
    let mut args = vec![
        "xtask",
        "fiber-forward",
        "--model",
        s(model),
        "--mode",
        mode,
        "--input",
        s(&input),
        "--output",
        s(&out),
    ];
    if let Some(config) = config {
        args.extend(["--config", s(config)]);
    }
    xtask::run(args).unwrap();
    let actual = TensorStore::read_safetensors(&out).unwrap();
    let expected = TensorStore::read_safetensors(dir().join("expected.safetensors")).unwrap();
    for (ours, theirs) in [
        ("image_hidden", format!("{mode}_image")),
        ("text_hidden", format!("{mode}_text")),
    ] {
        let (a, e) = (actual.get(ours).unwrap(), expected.get(&theirs).unwrap());
        assert_eq!(a.shape, e.shape, "{ours}");
        let err = fiber_core::compare::max_abs_diff(a.as_f32().unwrap(), e.as_f32().unwrap());
        println!("{mode} {ours}: max abs error {err:.3e}");
        assert!(err <= 1e-4, "{mode} {ours}: {err}");
    }
    std::fs::remove_file(out).unwrap();
}

#[test]
fn original_checkpoint_runs_directly_with_an_explicit_config() {
    let ckpt = dir().join("fiber_tiny.ckpt");
    let config = dir().join("config.json");
    forward_and_compare(&ckpt, Some(&config), "fused");
    forward_and_compare(&ckpt, Some(&config), "dual");
}

#[test]
fn converted_folder_runs_without_python_and_keeps_the_heads() {
    let folder = temp("converted");
    let ckpt = dir().join("fiber_tiny.ckpt");
    let config = dir().join("config.json");
    xtask::run([
        "xtask",
        "convert",
        "--from",
        s(&ckpt),
        "--config",
        s(&config),
        "--to",
        s(&folder),
    ])
    .unwrap();
    let store = TensorStore::read_safetensors(folder.join("model.safetensors")).unwrap();
    assert!(
        store.contains("itm_score.fc.weight"),
        "task heads are carried over for the heads crate"
    );
    assert!(!store.contains("image_queue"), "queues are dropped");
    assert!(
        !store
            .names()
            .any(|k| k.ends_with("attn_mask") || k.ends_with("relative_position_index")),
        "buffers are dropped"
    );
    forward_and_compare(&folder, None, "fused");
    forward_and_compare(&folder, None, "dual");
    std::fs::remove_dir_all(folder).unwrap();
}

#[test]
fn a_checkpoint_that_does_not_fit_the_config_names_the_keys() {
    let ckpt = dir().join("fiber_tiny.ckpt");
    let bad_config = temp("bad-config.json");
    let text = std::fs::read_to_string(dir().join("config.json"))
        .unwrap()
        .replace("\"intermediate_size\": 48", "\"intermediate_size\": 40");
    std::fs::write(&bad_config, text).unwrap();
    let out = temp("never.safetensors");
    let err = xtask::run([
        "xtask",
        "fiber-forward",
        "--model",
        s(&ckpt),
        "--config",
        s(&bad_config),
        "--mode",
        "dual",
        "--input",
        s(&dir().join("input.safetensors")),
        "--output",
        s(&out),
    ])
    .unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("text_transformer.encoder.layer.0.intermediate.dense.weight expected [40, 32], checkpoint has [48, 32]"), "{text}");
    std::fs::remove_file(bad_config).unwrap();
}

#[test]
fn a_checkpoint_without_its_text_head_count_is_refused_without_a_config() {
    // The fixture's text width 32 (4 heads of 8) does not tell the head count; guessing
    // width / 64 ran it with 1 head and wrong outputs.
    let out = temp("guessed.safetensors");
    for command in [
        vec!["xtask", "fiber-forward", "--mode", "fused"],
        vec!["xtask", "convert"],
    ] {
        let ckpt = dir().join("fiber_tiny.ckpt");
        let input = dir().join("input.safetensors");
        let mut args = command.clone();
        if command[1] == "convert" {
            args.extend(["--from", s(&ckpt), "--to", s(&out)]);
        } else {
            args.extend([
                "--model",
                s(&ckpt),
                "--input",
                s(&input),
                "--output",
                s(&out),
            ]);
        }
        let err = format!("{:#}", xtask::run(args).unwrap_err());
        assert!(
            err.contains("roberta.num_attention_heads") && err.contains("--config"),
            "{err}"
        );
        assert!(!out.exists(), "nothing is written");
    }
}
