//! End-to-end: `cargo xtask fiber-forward --mode detect` and `cargo xtask convert` on the tiny
//! original-layout fine-grained checkpoint written by `scripts/detector_fixtures.py` reproduce
//! the PyTorch reference outputs, directly and from a converted folder.

use std::path::{Path, PathBuf};

use fiber_core::TensorStore;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/detector/tiny")
}

fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("fiber-e2e-detect-{name}-{}", std::process::id()))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Runs the detector on the batch-2 input and compares every output with the reference.
fn detect_and_compare(model: &Path, config: Option<&Path>) {
    let out = temp("out.safetensors");
    let input = dir().join("input_batch2.safetensors");
    let mut args = vec![
        "xtask",
        "fiber-forward",
        "--model",
        s(model),
        "--mode",
        "detect",
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
    let expected =
        TensorStore::read_safetensors(dir().join("expected_batch2.safetensors")).unwrap();
    let mut names: Vec<&str> = expected.names().collect();
    names.sort();
    assert_eq!(names.len(), 5 * 6 + 1);
    for name in names {
        let a = actual
            .get(name)
            .unwrap_or_else(|| panic!("{name} not written"));
        let e = expected.get(name).unwrap();
        assert_eq!(a.shape, e.shape, "{name}");
        let err = fiber_core::compare::max_abs_diff(a.as_f32().unwrap(), e.as_f32().unwrap());
        assert!(err <= 1e-4, "{name}: {err}");
    }
    std::fs::remove_file(out).unwrap();
}

#[test]
fn the_original_fine_grained_checkpoint_runs_with_its_config_and_after_conversion() {
    let ckpt = dir().join("fiber_detector_tiny.pth");
    let config = dir().join("config.json");
    detect_and_compare(&ckpt, Some(&config));

    let folder = temp("converted");
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
    assert!(store.contains("rpn.head.dyhead_tower.1.offset.weight"));
    assert!(
        !store.names().any(|k| k.starts_with("module.")
            || k.ends_with("relative_position_index")
            || k.contains("cell_anchors")),
        "prefixes and buffers are dropped"
    );
    detect_and_compare(&folder, None);
    std::fs::remove_dir_all(folder).unwrap();
}

#[test]
fn without_a_config_fiber_base_is_assumed_and_a_smaller_checkpoint_is_refused_by_name() {
    let out = temp("refused.safetensors");
    let err = xtask::run([
        "xtask",
        "fiber-forward",
        "--model",
        s(&dir().join("fiber_detector_tiny.pth")),
        "--mode",
        "detect",
        "--input",
        s(&dir().join("input_batch2.safetensors")),
        "--output",
        s(&out),
    ])
    .unwrap_err();
    let message = format!("{err:#}");
    assert!(message.contains("FIBER-Base"), "{message}");
    assert!(message.contains("rpn.head.bias_lang"), "{message}");
    assert!(!out.exists());
}
