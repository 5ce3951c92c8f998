//! End-to-end: `cargo xtask bench` (the FIBER suite) on the tiny preset, and its refusals.

fn run(args: &[&str]) -> anyhow::Result<()> {
    let mut all = vec!["cargo xtask", "bench"];
    all.extend_from_slice(args);
    xtask::run(all)
}

#[test]
fn the_suite_times_every_measurement_and_writes_its_report() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let json_arg = json.to_str().unwrap();
    run(&[
        "--preset", "tiny", "--batch", "4", "--warmup", "1", "--reps", "3", "--json", json_arg,
    ])
    .unwrap();
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let ours = &report["fiber_rs"];
    assert_eq!(ours["preset"], "tiny");
    assert_eq!(
        (ours["batch"].as_u64(), ours["text_len"].as_u64()),
        (Some(4), Some(32))
    );
    assert_eq!(ours["precision"], "f32");
    assert!(ours["step_loss"].as_f64().unwrap().is_finite());
    assert!(ours["peak_memory_bytes"].as_u64().unwrap() > 10 << 20);
    assert!(ours["parameters"].as_u64().unwrap() > 500_000);
    let names: Vec<&str> = ours["measurements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "step",
            "step_forward",
            "fused_inference",
            "dual_image",
            "dual_text"
        ]
    );
    for m in ours["measurements"].as_array().unwrap() {
        let runs: Vec<f64> = serde_json::from_value(m["runs_ms"].clone()).unwrap();
        assert_eq!(runs.len(), 3, "{m}");
        assert!(
            runs.windows(2).all(|w| w[0] <= w[1]) && runs[0] > 0.0,
            "{m}"
        );
        let median = m["median_ms"].as_f64().unwrap();
        assert_eq!(median, runs[1]);
        let rate = m["per_second"].as_f64().unwrap();
        assert!((rate - 4000.0 / median).abs() < 1e-6 * rate, "{m}");
    }
    // A training step does more work than its own forward.
    let median = |i: usize| ours["measurements"][i]["median_ms"].as_f64().unwrap();
    assert!(
        median(0) > median(1),
        "step {} vs forward {}",
        median(0),
        median(1)
    );
    assert!(report.get("pytorch").is_none());
}

#[test]
fn bad_settings_are_refused_with_the_reason() {
    let err = |args: &[&str]| run(args).unwrap_err().to_string();
    let e = err(&["--precision", "bf16", "--reps", "1"]);
    assert!(
        e.contains("ndarray backend does not compute in bf16"),
        "{e}"
    );
    let e = err(&["--only", "step,backward"]);
    assert!(e.contains("unknown measurement `backward`"), "{e}");
    let e = err(&["--batch", "1"]);
    assert!(e.contains("at least 2 pairs"), "{e}");
    let e = err(&["--text-len", "100"]);
    assert!(e.contains("text length 100"), "{e}");
}

#[test]
fn the_fine_grained_training_step_is_timed_on_the_tiny_detector() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("detect.json");
    run(&[
        "--model",
        "fiber-detect-train",
        "--preset",
        "tiny",
        "--detect-size",
        "64x64",
        "--batch",
        "2",
        "--warmup",
        "1",
        "--reps",
        "2",
        "--json",
        json.to_str().unwrap(),
    ])
    .unwrap();
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["batch"], 2);
    assert_eq!(report["runs_ms"].as_array().unwrap().len(), 2);
    assert!(report["median_ms"].as_f64().unwrap() > 0.0);
    assert!(report["loss"].as_f64().unwrap().is_finite());
    assert!(report["parameters"].as_u64().unwrap() > 500_000);
    // The PyTorch reference has FIBER-Base's sizes only.
    let e = run(&[
        "--model",
        "fiber-detect-train",
        "--preset",
        "tiny",
        "--reference",
    ])
    .unwrap_err()
    .to_string();
    assert!(e.contains("--preset base"), "{e}");
}
