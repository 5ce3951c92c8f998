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

/// `cargo xtask fiber-forward --mode detect` on `model` (with `config` if given).
fn forward_detect(
    model: &str,
    config: Option<&str>,
    input: &str,
    output: &str,
) -> anyhow::Result<()> {
    let mut args = vec![
        "xtask",
        "fiber-forward",
        "--model",
        model,
        "--mode",
        "detect",
        "--input",
        input,
        "--output",
        output,
    ];
    if let Some(config) = config {
        args.extend(["--config", config]);
    }
    xtask::run(args)
}

/// Runs the detector on the batch-2 input and compares every output with the reference.
fn detect_and_compare(model: &Path, config: Option<&Path>) {
    let out = temp("out.safetensors");
    let input = dir().join("input_batch2.safetensors");
    forward_detect(s(model), config.map(s), s(&input), s(&out)).unwrap();
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
    let err = forward_detect(
        s(&dir().join("fiber_detector_tiny.pth")),
        None,
        s(&dir().join("input_batch2.safetensors")),
        s(&out),
    )
    .unwrap_err();
    let message = format!("{err:#}");
    assert!(message.contains("FIBER-Base"), "{message}");
    assert!(message.contains("rpn.head.bias_lang"), "{message}");
    assert!(!out.exists());
}

#[test]
fn a_detector_folder_starts_from_a_coarse_checkpoint_or_its_converted_folder() {
    let coarse_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/fusion/tiny");
    let ckpt = coarse_dir.join("fiber_tiny.ckpt");
    let converted = temp("coarse-converted");
    xtask::run([
        "xtask",
        "convert",
        "--from",
        s(&ckpt),
        "--config",
        s(&coarse_dir.join("config.json")),
        "--to",
        s(&converted),
    ])
    .unwrap();
    let mut folders = Vec::new();
    let coarse_config = coarse_dir.join("config.json");
    for (name, source, config) in [
        ("from-ckpt", &ckpt, Some(&coarse_config)),
        ("from-folder", &converted, None),
    ] {
        let folder = temp(name);
        let mut args = vec![
            "xtask",
            "convert",
            "--from",
            s(source),
            "--detector",
            "--to",
            s(&folder),
        ];
        if let Some(config) = config {
            args.extend(["--config", s(config)]);
        }
        xtask::run(args).unwrap();
        folders.push(folder);
    }
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(folders[0].join("transfer.json")).unwrap())
            .unwrap();
    assert_eq!(
        report["transferred"]["fusion_backbone.backbone.body.layers.1.blocks.1.attn.qkv.weight"],
        "layers.1.blocks.1.attn.qkv.weight"
    );
    let fresh: Vec<&str> = report["fresh"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    assert!(fresh.contains(&"rpn.head.bias0"));
    assert!(fresh.contains(&"fusion_backbone.backbone.body.norm1.weight"));
    assert!(report["shape_mismatch"].as_array().unwrap().is_empty());

    // Both routes transfer the same values.
    let stores: Vec<TensorStore> = folders
        .iter()
        .map(|f| TensorStore::read_safetensors(f.join("model.safetensors")).unwrap())
        .collect();
    let transferred = report["transferred"].as_object().unwrap();
    assert!(transferred.len() > 50, "{}", transferred.len());
    for key in transferred.keys() {
        assert_eq!(
            stores[0].get(key).unwrap().as_f32(),
            stores[1].get(key).unwrap().as_f32(),
            "{key}"
        );
    }

    // The folder is a detector the forward command runs (3 Swin stages: 2 backbone levels and
    // P6, P7 on strides 8…64 of the 32×32 input).
    let out = temp("from-coarse-out.safetensors");
    forward_detect(
        s(&folders[0]),
        None,
        s(&coarse_dir.join("input.safetensors")),
        s(&out),
    )
    .unwrap();
    let outputs = TensorStore::read_safetensors(&out).unwrap();
    assert_eq!(outputs.get("logits.0").unwrap().shape, vec![2, 16, 7]);
    assert_eq!(outputs.get("logits.3").unwrap().shape, vec![2, 1, 7]);
    assert!(outputs
        .get("bbox_reg.0")
        .unwrap()
        .as_f32()
        .unwrap()
        .iter()
        .all(|v| v.is_finite()));
    std::fs::remove_file(out).unwrap();
    for folder in folders.into_iter().chain([converted]) {
        std::fs::remove_dir_all(folder).unwrap();
    }
}

#[test]
fn the_forward_command_writes_the_losses_of_the_reference_for_ground_truth_inputs() {
    let losses = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/detector/loss");
    let ckpt = dir().join("fiber_detector_tiny.pth");
    let config = dir().join("config.json");
    // Two images with two boxes and one; a caption filling the token axis (the no-object
    // column counts); an image without boxes.
    for case in ["batch2", "batch1_full_caption", "batch2_negative"] {
        let out = temp(&format!("loss-{case}.safetensors"));
        let input = losses.join(format!("input_{case}.safetensors"));
        forward_detect(s(&ckpt), Some(s(&config)), s(&input), s(&out)).unwrap();
        let actual = TensorStore::read_safetensors(&out).unwrap();
        let expected =
            TensorStore::read_safetensors(losses.join(format!("expected_{case}.safetensors")))
                .unwrap();
        for name in ["num_pos", "loss.grounding", "loss.giou", "loss.centerness"] {
            let a = actual
                .get(name)
                .unwrap_or_else(|| panic!("{name} not written"));
            let e = expected.get(name).unwrap();
            assert_eq!(a.shape, vec![1], "{case} {name}");
            let (a, e) = (a.as_f32().unwrap()[0], e.as_f32().unwrap()[0]);
            println!(
                "{case} {name}: {a} (reference {e}, error {:.1e})",
                (a - e).abs()
            );
            assert!((a - e).abs() <= 1e-4, "{case} {name}: {a} vs {e}");
        }
        std::fs::remove_file(out).unwrap();
    }
}

#[test]
fn incomplete_or_misshaped_ground_truth_is_refused_by_name() {
    let losses = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/detector/loss");
    let mut inputs =
        TensorStore::read_safetensors(losses.join("input_batch2.safetensors")).unwrap();
    let run = |inputs: &TensorStore| {
        let input = temp("bad-gt-in.safetensors");
        inputs.write_safetensors(&input).unwrap();
        let out = temp("bad-gt-out.safetensors");
        let err = forward_detect(
            s(&dir().join("fiber_detector_tiny.pth")),
            Some(s(&dir().join("config.json"))),
            s(&input),
            s(&out),
        )
        .unwrap_err();
        assert!(!out.exists());
        std::fs::remove_file(input).unwrap();
        format!("{err:#}")
    };
    let map = inputs.remove("positive_map").unwrap();
    let message = run(&inputs);
    assert!(message.contains("positive_map"), "{message}");
    let [b, m, l] = [map.shape[0], map.shape[1], map.shape[2]];
    let short = map.as_f32().unwrap()[..b * m * (l - 1)].to_vec();
    inputs.insert(
        "positive_map",
        fiber_core::StoredTensor::f32(vec![b, m, l - 1], short),
    );
    let message = run(&inputs);
    assert!(message.contains("`positive_map` is [2, 2, 6]"), "{message}");
    inputs.insert("positive_map", map);
    let boxes = inputs.get("gt_boxes").unwrap();
    let mut values = boxes.as_f32().unwrap().to_vec();
    values[2] = values[0]; // x1 = x0 for the first box
    let shape = boxes.shape.clone();
    inputs.insert("gt_boxes", fiber_core::StoredTensor::f32(shape, values));
    let message = run(&inputs);
    assert!(
        message.contains("box 0") && message.contains("degenerate"),
        "{message}"
    );
}

#[test]
fn eval_scores_a_coco_results_file_and_otherwise_evaluates_a_run() {
    let coco = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/coco_eval");
    xtask::run([
        "xtask",
        "eval",
        "--task",
        "detection",
        "--gt",
        s(&coco.join("instances.json")),
        "--detections",
        s(&coco.join("detections.json")),
    ])
    .unwrap();
    // Without files it evaluates a run's detector; a folder that is not a run is named.
    let missing = temp("not-a-run");
    let err =
        xtask::run(["xtask", "eval", "--task", "detection", "--run", s(&missing)]).unwrap_err();
    assert!(format!("{err:#}").contains("config.toml"), "{err:#}");
    let err = xtask::run([
        "xtask",
        "eval",
        "--task",
        "grounding",
        "--gt",
        s(&coco.join("instances.json")),
        "--detections",
        s(&coco.join("detections.json")),
    ])
    .unwrap_err();
    assert!(
        format!("{err:#}").contains("belong to --task detection"),
        "{err:#}"
    );
}

#[test]
fn converting_the_ema_copy_of_a_checkpoint_without_one_says_so() {
    let folder = temp("no-ema");
    let err = xtask::run([
        "xtask",
        "convert",
        "--from",
        s(&dir().join("fiber_detector_tiny.pth")),
        "--config",
        s(&dir().join("config.json")),
        "--ema",
        "--to",
        s(&folder),
    ])
    .unwrap_err();
    let message = format!("{err:#}");
    assert!(message.contains("model_ema"), "{message}");
    assert!(!folder.exists());
}
