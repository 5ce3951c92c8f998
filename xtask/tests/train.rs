//! End-to-end: `cargo xtask train` on a small built-in world. A run killed with SIGKILL and
//! resumed logs exactly the losses of an uninterrupted run and reaches the same report; a
//! diverging run stops with a clear message and keeps its last good checkpoint; every stage runs
//! alone, from the run's pre-training, from `--init` or from HuggingFace folders.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A small run: 96 training images, checkpoints every 3 steps.
fn config(dir: &Path, checkpoint_every: u64, lr: f64, queue: usize) -> PathBuf {
    let text = format!(
        r#"name = "small"
data_dir = "{data}"
queue_size = {queue}
[world]
train_images = 96
val_images = 8
test_images = 16
[pretrain]
steps = 12
batch_size = 4
checkpoint_every = {checkpoint_every}
lr = {lr:e}
[vqa]
steps = 4
batch_size = 4
checkpoint_every = 2
[caption]
steps = 4
batch_size = 4
checkpoint_every = 2
[nlvr2]
steps = 3
batch_size = 4
[retrieval_itc]
steps = 3
batch_size = 4
[retrieval_itm]
steps = 3
batch_size = 4
[fine]
# At the tiny preset's 1e-3, Adam turns the coarse model's summation-order noise between
# processes (about 1e-6 relative) into whole steps on near-zero gradients, and the fine losses
# of two identical runs fall on one of two trajectories 1.3e-4 apart by step 5.
lr = 1e-4
steps = 6
batch_size = 4
checkpoint_every = 2
# FIBER's frozen keys (the tiny preset freezes none), to test that they stay.
frozen = ["fusion_backbone.backbone.body.patch_embed.", "fusion_backbone.backbone.body.layers.0."]
[detect]
steps = 3
batch_size = 4
checkpoint_every = 2
[ground]
steps = 3
batch_size = 4
checkpoint_every = 2
[detector]
eval_batch_size = 8
# The tiny preset runs no DyConv block and no DropBlock; the training tests keep both.
num_dyhead_blocks = 1
drop_block = true
# A detector trained for 6 steps scores every class below the default 0.05.
[detector.postprocess]
score_threshold = 0.0
[eval]
retrieval_candidates = 16
itm_rerank_k = 4
caption_images = 3
max_caption_len = 8
# One replica (the tiny preset trains on two): xtask/tests/replicas.rs tests replicas.
[replicas]
devices = "1"
"#,
        data = dir.join("world").display(),
    );
    let path = dir.join(format!("config-{checkpoint_every}-{queue}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn xtask(config: &Path, runs: &Path, extra: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_xtask"));
    command
        .args([
            "train",
            "--config",
            config.to_str().unwrap(),
            "--runs",
            runs.to_str().unwrap(),
        ])
        .args(extra);
    // One thread, so that only the autodiff's accumulation order varies between processes.
    command
        .env("RAYON_NUM_THREADS", "1")
        .env("MATMUL_NUM_THREADS", "1")
        // A run on one machine whatever the caller's environment says.
        .env_remove("FIBER_NODES")
        .env_remove("FIBER_NODE_RANK")
        .env_remove("FIBER_COORDINATOR");
    command
}

/// `(stage, step, [loss, parts…])` of every logged step.
fn losses(runs: &Path) -> Vec<(String, u64, Vec<f64>)> {
    let text = std::fs::read_to_string(runs.join("small/metrics.jsonl")).unwrap();
    text.lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let mut values = vec![v["loss"].as_f64().unwrap()];
            values.extend(
                v["parts"]
                    .as_object()
                    .unwrap()
                    .values()
                    .map(|x| x.as_f64().unwrap()),
            );
            (
                v["stage"].as_str().unwrap().to_string(),
                v["step"].as_u64().unwrap(),
                values,
            )
        })
        .collect()
}

/// The same steps with losses equal up to float summation order: Burn's autodiff adds the
/// gradient contributions of a tensor used several times in an order that varies between
/// processes, so two uninterrupted runs already differ at about 1e-7 relative.
fn assert_same_losses(a: &[(String, u64, Vec<f64>)], b: &[(String, u64, Vec<f64>)]) {
    assert_eq!(a.len(), b.len(), "the same steps were logged");
    for ((sa, ta, va), (sb, tb, vb)) in a.iter().zip(b) {
        assert_eq!((sa, ta), (sb, tb));
        for (x, y) in va.iter().zip(vb) {
            assert!(
                (x - y).abs() <= 1e-4 * x.abs().max(1.0),
                "{sa} step {ta}: {x} vs {y}"
            );
        }
    }
}

#[test]
fn a_run_killed_with_sigkill_resumes_with_identical_losses() {
    let tmp = tempfile::tempdir().unwrap();
    let config = config(tmp.path(), 3, 1e-3, 0);
    let (straight, killed) = (tmp.path().join("straight"), tmp.path().join("killed"));
    let status = xtask(&config, &straight, &[]).status().unwrap();
    assert!(status.success());

    let mut child = xtask(&config, &killed, &[])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let checkpoint = killed.join("small/pretrain/checkpoints/step-000006");
    let start = Instant::now();
    while !checkpoint.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "no checkpoint at step 6"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let before = losses(&killed);
    assert!(
        before.len() < losses(&straight).len(),
        "the run was killed before it finished"
    );
    let status = xtask(&config, &killed, &["--resume"]).status().unwrap();
    assert!(status.success());

    assert_same_losses(&losses(&killed), &losses(&straight));
    // The reports agree: same steps and samples, metrics within one decision flip of the
    // summation-order noise above (retrieval over 16 candidates moves in steps of 1/16).
    let report = |runs: &Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(runs.join("small/report.json")).unwrap())
            .unwrap()
    };
    let (a, b) = (report(&killed), report(&straight));
    assert_eq!(
        (&a["steps"], &a["skipped_samples"]),
        (&b["steps"], &b["skipped_samples"])
    );
    for path in [
        "/retrieval/itc/ir@1",
        "/retrieval/itc/tr@5",
        "/vqa/accuracy",
        "/mlm/accuracy",
        "/captioning/bleu4",
        "/detection/ap50",
        "/grounding/r@1",
    ] {
        let (x, y) = (
            a.pointer(path).unwrap().as_f64().unwrap(),
            b.pointer(path).unwrap().as_f64().unwrap(),
        );
        assert!((x - y).abs() <= 0.15, "{path}: {x} vs {y}");
    }
    let leftovers: Vec<_> = std::fs::read_dir(killed.join("small/pretrain/checkpoints"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .collect();
    assert!(leftovers.iter().all(
        |n| n.to_string_lossy().starts_with("step-") || n.to_string_lossy().contains("partial")
    ));
}

#[test]
fn a_diverging_run_stops_and_keeps_its_last_good_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    // A learning rate of 1e30 throws the weights to infinity after the first real update.
    let config = config(tmp.path(), 1, 1e30, 0);
    let runs = tmp.path().join("runs");
    let output = xtask(&config, &runs, &[]).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("non-finite"), "{stderr}");
    assert!(
        stderr.contains("the last good checkpoint is step"),
        "{stderr}"
    );
    assert!(!runs.join("small/report.json").exists());
}

#[test]
fn half_precision_where_the_backend_lacks_it_is_refused_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let config = config(tmp.path(), 3, 1e-3, 0);
    let runs = tmp.path().join("runs");
    let output = xtask(&config, &runs, &["--precision", "bf16"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("the ndarray backend does not compute in bf16; it supports f32"),
        "{stderr}"
    );
    assert!(!runs.exists(), "nothing is written");
}

fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// `cargo xtask eval --task TASK --run RUN`'s JSON.
fn eval_run(task: &str, run: &Path) -> serde_json::Value {
    let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["eval", "--task", task, "--run"])
        .arg(run)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Copies the directory tree `from` to `to`.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn succeed(command: &mut Command) -> String {
    let output = command.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{text}");
    text
}

#[test]
fn each_stage_runs_alone_from_the_runs_pretraining_or_from_init() {
    let tmp = tempfile::tempdir().unwrap();
    let config = config(tmp.path(), 2, 1e-3, 0);
    let runs = tmp.path().join("runs");
    let stage = |name: &str, extra: &[&str]| {
        let mut args = vec!["--stage", name];
        args.extend_from_slice(extra);
        succeed(&mut xtask(&config, &runs, &args))
    };
    // A fine-tuning stage needs a pre-trained model.
    let output = xtask(&config, &runs, &["--stage", "vqa"]).output().unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("run --stage coarse first"));
    let output = xtask(&config, &runs, &["--stage", "detect"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("run --stage fine first"));

    stage("coarse", &[]);
    let coarse = read_json(&runs.join("small/pretrain/report.json"));
    assert_eq!(coarse["stage"], "coarse");
    assert_eq!(coarse["steps"], 12);
    assert!(coarse["retrieval"]["itc"]["ir@1"].is_f64() && coarse["mlm"]["accuracy"].is_f64());
    assert!(coarse.get("vqa").is_none());

    let sections = [
        ("vqa", "/vqa/accuracy", 4),
        ("nlvr2", "/nlvr2/accuracy", 3),
        ("retrieval-itc", "/retrieval/itc/ir@1", 3),
        ("retrieval-itm", "/retrieval/itm/ir@1", 3),
        ("caption", "/captioning/cider", 4),
        ("fine", "/detection/ap50", 6),
        // From the coarse stage folder named: a detector is built on it.
        ("detect", "/detection/ap50", 3),
        ("ground", "/grounding/r@1", 3),
    ];
    let pretrain = runs.join("small/pretrain");
    for (name, metric, steps) in sections {
        // NLVR2 starts from the run's own pre-training, the others name it with --init.
        let init = ["--init", pretrain.to_str().unwrap()];
        let text = stage(name, if name == "nlvr2" { &[] } else { &init });
        let report = read_json(&runs.join(format!("small/{name}/report.json")));
        assert_eq!(report["stage"], name, "{text}");
        if name == "detect" || name == "ground" {
            assert!(text.contains("is a coarse model"), "{text}");
        }
        assert!(report.pointer(metric).unwrap().is_f64(), "{name}: {report}");
        assert_eq!(report["stages"][name]["steps"], steps, "{name}");
    }
    // The NLVR2 model evaluates again from the run folder.
    let eval = eval_run("nlvr2", &runs.join("small"));
    assert_eq!(
        eval["accuracy"],
        read_json(&runs.join("small/nlvr2/report.json"))["nlvr2"]["accuracy"]
    );

    // From HuggingFace RoBERTa and Swin folders: their sizes and tokenizer replace the preset's.
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures");
    let text = succeed(
        xtask(
            &config,
            &runs,
            &["--stage", "coarse", "--name", "hf", "--init"],
        )
        .arg(fixtures.join("hf-init/roberta"))
        .arg("--init")
        .arg(fixtures.join("swin/tiny")),
    );
    assert!(text.contains("from HuggingFace RoBERTa"), "{text}");
    let saved = std::fs::read_to_string(runs.join("hf/config.toml")).unwrap();
    assert!(
        saved.contains("hidden_size = 32") && saved.contains("image_size = 48"),
        "{saved}"
    );
    assert_eq!(
        read_json(&runs.join("hf/pretrain/report.json"))["steps"],
        12
    );
    // A FIBER checkpoint that does not determine its text head count is refused without a
    // configuration; converted with one, its vocabulary (smaller than the tokenizer's) is.
    let ckpt = fixtures.join("fusion/tiny/fiber_tiny.ckpt");
    let output = xtask(&config, &runs, &["--stage", "vqa", "--name", "f", "--init"])
        .arg(&ckpt)
        .arg("--tokenizer")
        .arg(fixtures.join("hf-init/roberta"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("roberta.num_attention_heads"), "{stderr}");
    let converted = tmp.path().join("converted");
    xtask::run([
        "xtask",
        "convert",
        "--from",
        ckpt.to_str().unwrap(),
        "--config",
        fixtures.join("fusion/tiny/config.json").to_str().unwrap(),
        "--to",
        converted.to_str().unwrap(),
    ])
    .unwrap();
    let output = xtask(&config, &runs, &["--stage", "vqa", "--name", "f", "--init"])
        .arg(&converted)
        .arg("--tokenizer")
        .arg(fixtures.join("hf-init/roberta"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("330 tokens") && stderr.contains("99 rows"),
        "{stderr}"
    );
}

#[test]
fn the_fine_stage_stopped_and_resumed_matches_a_straight_run_with_its_weight_average() {
    let tmp = tempfile::tempdir().unwrap();
    let config = config(tmp.path(), 2, 1e-3, 0);
    let (straight, stopped) = (tmp.path().join("straight"), tmp.path().join("stopped"));
    // Both start from one coarse model, so that the comparison is about the fine stage alone.
    succeed(&mut xtask(&config, &straight, &["--stage", "coarse"]));
    copy_dir(&straight, &stopped);
    let text = succeed(&mut xtask(&config, &straight, &["--stage", "fine"]));
    assert!(text.contains("transferred"), "{text}");
    let output = xtask(
        &config,
        &stopped,
        &["--stage", "fine", "--stop-after", "fine:3"],
    )
    .output()
    .unwrap();
    assert!(!output.status.success());
    succeed(&mut xtask(
        &config,
        &stopped,
        &["--stage", "fine", "--resume"],
    ));

    let fine = |runs: &Path| -> Vec<(String, u64, Vec<f64>)> {
        losses(runs)
            .into_iter()
            .filter(|(s, _, _)| s == "fine")
            .collect()
    };
    let (a, b) = (fine(&straight), fine(&stopped));
    assert_eq!(a.len(), 6);
    assert_same_losses(&a, &b);
    for (_, _, values) in &a {
        assert_eq!(values.len(), 4, "loss, grounding, giou, centerness");
    }
    // The averaged weights were saved, restored and carried on identically: within 1e-5 but
    // for tensors whose gradient is zero up to rounding (attention key biases), where Adam's
    // normalised step follows the summation-order noise between processes (up to the rate,
    // 1e-4).
    let ema = |runs: &Path| {
        let path = runs.join("small/fine/checkpoints/step-000006/ema.safetensors");
        fiber_core::TensorStore::read_safetensors(&path).unwrap()
    };
    let (ea, eb) = (ema(&straight), ema(&stopped));
    let (mut compared, mut tight) = (0, 0);
    for name in ea.names() {
        let (x, y) = (ea.get(name).unwrap(), eb.get(name).unwrap());
        let err = fiber_core::compare::max_abs_diff(x.as_f32().unwrap(), y.as_f32().unwrap());
        assert!(err <= 1e-3, "{name}: {err}");
        compared += 1;
        tight += usize::from(err <= 1e-5);
    }
    assert!(
        compared > 100 && tight * 10 >= compared * 9,
        "{tight} of {compared} within 1e-5"
    );
    // `export` writes the weight average as a detector folder that the detector reader loads.
    let exported = tmp.path().join("exported-fine");
    succeed(Command::new(env!("CARGO_BIN_EXE_xtask")).args([
        "export",
        "--run",
        straight.join("small").to_str().unwrap(),
        "--stage",
        "fine",
        "--to",
        exported.to_str().unwrap(),
    ]));
    let folder = fiber_heads::grounding::weights::DetectorCheckpoint::read(
        &exported,
        None,
        fiber_heads::grounding::weights::WeightCopy::Model,
    )
    .unwrap();
    assert!(
        folder.assumed.is_none(),
        "the folder carries its configuration"
    );
    assert_eq!(folder.store, ea, "the exported weights are the average");
    assert!(exported.join("tokenizer.json").is_file());
    // The average differs from the trained weights, and the report evaluates the average.
    let model = fiber_core::TensorStore::read_safetensors(
        straight.join("small/fine/checkpoints/step-000006/model.safetensors"),
    )
    .unwrap();
    let key = "rpn.head.bbox_pred.weight";
    let moved = fiber_core::compare::max_abs_diff(
        model.get(key).unwrap().as_f32().unwrap(),
        ea.get(key).unwrap().as_f32().unwrap(),
    );
    assert!(moved > 0.0, "the average lags the weights");
    // The frozen patch embedding did not move from the coarse model.
    let coarse = fiber_core::TensorStore::read_safetensors(
        straight.join("small/pretrain/checkpoints/step-000012/model.safetensors"),
    )
    .unwrap();
    let frozen = fiber_core::compare::max_abs_diff(
        coarse
            .get("vit_model.patch_embed.proj.weight")
            .unwrap()
            .as_f32()
            .unwrap(),
        model
            .get("fusion_backbone.backbone.body.patch_embed.proj.weight")
            .unwrap()
            .as_f32()
            .unwrap(),
    );
    assert_eq!(frozen, 0.0);
    let report = read_json(&straight.join("small/fine/report.json"));
    for key in [
        "ap", "ap50", "ap75", "aps", "apm", "apl", "ar1", "ar10", "ar100", "ars", "arm", "arl",
    ] {
        assert!(report["detection"][key].is_f64(), "{key}: {report}");
        assert!(
            report["detection"]["baseline"][key].is_f64(),
            "{key}: {report}"
        );
    }
    for key in ["r@1", "r@5", "r@10"] {
        let (r, chance) = (
            report["grounding"][key].as_f64().unwrap(),
            report["grounding"]["chance"][key].as_f64().unwrap(),
        );
        assert!((0.0..=1.0).contains(&r) && (0.0..=1.0).contains(&chance));
    }
    assert!(report["grounding"]["phrases"].as_u64().unwrap() > 0);
    // The detector evaluates again from the run folder (its weight average).
    let eval = eval_run("grounding", &straight.join("small"));
    assert_eq!(eval["r@1"], report["grounding"]["r@1"]);
    // `detect` and `ground` on one of the world's images write results and annotated PNGs.
    let image = tmp.path().join("world/test/COCO_test_000000000105.jpg");
    assert!(image.exists(), "{}", image.display());
    let run_dir = straight.join("small");
    let text = succeed(
        Command::new(env!("CARGO_BIN_EXE_xtask"))
            .args(["detect", "--threshold", "0", "--run"])
            .arg(&run_dir)
            .arg("--image")
            .arg(&image),
    );
    assert!(text.contains("detections"), "{text}");
    let results = read_json(&run_dir.join("detections/COCO_test_000000000105.json"));
    let results = results.as_array().unwrap();
    assert!(!results.is_empty() && results.len() <= 100);
    for r in results {
        assert!(r["category"].is_string() && r["bbox"].as_array().unwrap().len() == 4);
        assert!(r["score"].as_f64().unwrap() >= 0.0);
    }
    // The exported detector folder, loaded as a program using the library loads it, finds
    // the same boxes as the command on the run.
    let detector = fiber_heads::grounding::Detector::<burn::backend::NdArray>::load(
        &exported,
        &Default::default(),
    )
    .unwrap();
    let classes = detector
        .categories()
        .expect("the folder keeps its classes")
        .to_vec();
    let found = detector.detect(&[&image], &classes).unwrap().remove(0);
    assert_eq!(found.len(), results.len());
    for (d, r) in found.iter().zip(results) {
        assert_eq!(classes[d.class], r["category"].as_str().unwrap());
        let close = |a: f32, b: &serde_json::Value| (a as f64 - b.as_f64().unwrap()).abs() < 1e-4;
        let b = r["bbox"].as_array().unwrap();
        assert!(close(d.score, &r["score"]), "{d:?} {r}");
        assert!(
            close(d.bbox[0], &b[0]) && close(d.bbox[1], &b[1]),
            "{d:?} {r}"
        );
        assert!(close(d.bbox[2] - d.bbox[0], &b[2]), "{d:?} {r}");
        assert!(close(d.bbox[3] - d.bbox[1], &b[3]), "{d:?} {r}");
    }
    let png =
        fiber_data::image::load_rgb(run_dir.join("detections/COCO_test_000000000105.png")).unwrap();
    assert!(png.width >= 384, "enlarged for legible labels");
    let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["detect", "--classes", " . ", "--run"])
        .arg(&run_dir)
        .arg("--image")
        .arg(&image)
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("no class names"));
    let text = succeed(
        Command::new(env!("CARGO_BIN_EXE_xtask"))
            .args([
                "ground",
                "--caption",
                "a red circle and a blue square",
                "--run",
            ])
            .arg(&run_dir)
            .arg("--image")
            .arg(&image),
    );
    let grounded: serde_json::Value = serde_json::from_str(&text).unwrap();
    let phrases = grounded["phrases"].as_array().unwrap();
    assert_eq!(phrases.len(), 2, "{text}");
    assert_eq!(phrases[0]["phrase"], "red circle");
    assert_eq!(phrases[1]["phrase"], "blue square");
    assert!(phrases
        .iter()
        .all(|p| p["boxes"].as_array().unwrap().len() == 3));
    assert!(run_dir
        .join("groundings/COCO_test_000000000105.png")
        .exists());
    let library = detector
        .ground(&image, "a red circle and a blue square", &[] as &[&str])
        .unwrap();
    for (p, q) in library.iter().zip(phrases) {
        assert_eq!(p.phrase, q["phrase"].as_str().unwrap());
        let best = &q["boxes"][0];
        assert!((p.boxes[0].score as f64 - best["score"].as_f64().unwrap()).abs() < 1e-4);
    }

    // Downstream fine-tuning starts from the run's fine-grained detector (its weight average);
    // evaluation and the commands then use the fine-tuned detector of each task.
    for (stage, task, metric) in [
        ("detect", "detection", "ap50"),
        ("ground", "grounding", "r@1"),
    ] {
        let text = succeed(&mut xtask(&config, &straight, &["--stage", stage]));
        assert!(
            text.contains("the detector of") && text.contains("fine/checkpoints/step-000006"),
            "{text}"
        );
        let report = read_json(&run_dir.join(format!("{stage}/report.json")));
        assert_eq!(report["stages"][stage]["steps"], 3);
        let section = if task == "detection" {
            "detection"
        } else {
            "grounding"
        };
        let eval = eval_run(task, &run_dir);
        assert_eq!(eval["stage"], stage);
        assert_eq!(eval[metric], report[section][metric], "{eval}");
        let tuned = fiber_core::TensorStore::read_safetensors(
            run_dir.join(format!("{stage}/checkpoints/step-000003/ema.safetensors")),
        )
        .unwrap();
        let moved = fiber_core::compare::max_abs_diff(
            tuned.get(key).unwrap().as_f32().unwrap(),
            ea.get(key).unwrap().as_f32().unwrap(),
        );
        assert!(moved > 0.0, "{stage} trained the detector");
    }
    assert!(run_dir.join("detect/categories.json").exists());
    let resumed = read_json(&stopped.join("small/fine/report.json"));
    let (x, y) = (
        report["grounding"]["r@1"].as_f64().unwrap(),
        resumed["grounding"]["r@1"].as_f64().unwrap(),
    );
    assert!((x - y).abs() <= 0.1, "{x} vs {y}");
}
