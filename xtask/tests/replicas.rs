//! End-to-end data parallelism on the CPU: `train --devices 2` against one replica that
//! accumulates two micro-batches of the same samples, and a failing replica ending the run.

use std::path::{Path, PathBuf};
use std::process::Command;

use fiber_core::TensorStore;

/// A small coarse stage with an ITC queue: 48 training images, per-replica batch 4.
fn config(dir: &Path, accumulation: usize) -> PathBuf {
    let text = format!(
        r#"name = "small"
data_dir = "{data}"
queue_size = 16
[world]
train_images = 48
val_images = 8
test_images = 8
[pretrain]
steps = 5
batch_size = 4
accumulation = {accumulation}
checkpoint_every = 5
# At the tiny preset's 1e-3, Adam turns summation-order noise on near-zero gradients into
# whole steps (xtask/tests/train.rs); the comparison is of the algorithm, not of that noise.
lr = 1e-4
[fine]
steps = 3
batch_size = 2
checkpoint_every = 3
[eval]
retrieval_candidates = 8
itm_rerank_k = 4
"#,
        data = dir.join("world").display(),
    );
    let path = dir.join(format!("config-{accumulation}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn xtask(config: &Path, runs: &Path, extra: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_xtask"));
    command
        .args(["train", "--config", config.to_str().unwrap(), "--runs"])
        .arg(runs)
        .args(extra)
        .env("RAYON_NUM_THREADS", "1")
        .env("MATMUL_NUM_THREADS", "1");
    command
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

/// `(step, [loss, parts…])` of every logged step of `stage`.
fn losses(runs: &Path, stage: &str) -> Vec<(u64, Vec<f64>)> {
    let text = std::fs::read_to_string(runs.join("small/metrics.jsonl")).unwrap();
    text.lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .filter(|v| v["stage"] == stage)
        .map(|v| {
            let mut values = vec![v["loss"].as_f64().unwrap()];
            values.extend(
                v["parts"]
                    .as_object()
                    .unwrap()
                    .values()
                    .map(|x| x.as_f64().unwrap()),
            );
            (v["step"].as_u64().unwrap(), values)
        })
        .collect()
}

fn checkpoint(runs: &Path, stage: &str, step: u64, file: &str) -> TensorStore {
    let path = runs.join(format!("small/{stage}/checkpoints/step-{step:06}/{file}"));
    TensorStore::from_safetensors_bytes(&std::fs::read(&path).unwrap()).unwrap()
}

/// The largest absolute difference between the float tensors of two stores with equal keys.
fn largest_difference(a: &TensorStore, b: &TensorStore) -> f32 {
    let mut largest = 0f32;
    for key in a.names() {
        let (x, y) = (
            a.get(key).unwrap(),
            b.get(key).unwrap_or_else(|| panic!("{key} is missing")),
        );
        assert_eq!(x.shape, y.shape, "{key}");
        if let (Some(x), Some(y)) = (x.as_f32(), y.as_f32()) {
            for (p, q) in x.iter().zip(y) {
                largest = largest.max((p - q).abs());
            }
        }
    }
    largest
}

#[test]
fn two_replicas_train_as_one_replica_accumulating_their_two_micro_batches() {
    let tmp = tempfile::tempdir().unwrap();
    let (replicated, accumulated) = (tmp.path().join("replicated"), tmp.path().join("single"));
    let text = succeed(&mut xtask(
        &config(tmp.path(), 1),
        &replicated,
        &["--stage", "coarse", "--devices", "2"],
    ));
    assert!(
        text.contains("pretrain: 8 samples per step (4 per batch × 2 replica(s) × 1 accumulated)"),
        "{text}"
    );
    succeed(&mut xtask(
        &config(tmp.path(), 2),
        &accumulated,
        &["--stage", "coarse"],
    ));
    let (a, b) = (
        losses(&replicated, "pretrain"),
        losses(&accumulated, "pretrain"),
    );
    assert_eq!(a.len(), 5, "replica 0 alone logs each step once");
    assert_eq!(a.len(), b.len());
    for ((step, x), (_, y)) in a.iter().zip(&b) {
        for (p, q) in x.iter().zip(y) {
            assert!(
                (p - q).abs() <= 1e-5 * p.abs().max(1.0),
                "step {step}: {p} vs {q}"
            );
        }
    }
    let difference = largest_difference(
        &checkpoint(&replicated, "pretrain", 5, "model.safetensors"),
        &checkpoint(&accumulated, "pretrain", 5, "model.safetensors"),
    );
    println!("largest parameter difference after 5 steps: {difference:e}");
    assert!(difference <= 1e-5, "{difference}");
    // The queue holds the features of both replicas' micro-batches of the last two steps.
    let (qa, qb) = (
        checkpoint(&replicated, "pretrain", 5, "task.safetensors"),
        checkpoint(&accumulated, "pretrain", 5, "task.safetensors"),
    );
    let indices = qa.get("queue.indices").unwrap().as_i64().unwrap();
    assert_eq!(indices.len(), 16);
    assert_eq!(indices, qb.get("queue.indices").unwrap().as_i64().unwrap());
    assert!(largest_difference(&qa, &qb) <= 1e-5);
}

#[test]
fn the_fine_stage_runs_on_two_replicas_and_a_failing_replica_ends_the_run_with_its_error() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    let config = config(tmp.path(), 1);
    succeed(&mut xtask(&config, &runs, &["--stage", "coarse"]));
    succeed(&mut xtask(
        &config,
        &runs,
        &["--stage", "fine", "--devices", "2"],
    ));
    let fine = losses(&runs, "fine");
    assert_eq!(fine.len(), 3);
    assert!(fine.iter().all(|(_, v)| v.iter().all(|x| x.is_finite())));
    // A corrupt training image stops, in strict mode, the replica whose batch holds it; the
    // other one must not wait for it forever.
    let world = tmp.path().join("world");
    let mut images: Vec<PathBuf> = std::fs::read_dir(world.join("train"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
        .collect();
    images.sort();
    for path in images.iter().step_by(4) {
        std::fs::write(path, b"not a jpeg").unwrap();
    }
    let output = xtask(
        &config,
        &runs,
        &[
            "--stage",
            "coarse",
            "--devices",
            "2",
            "--strict",
            "--name",
            "broken",
        ],
    )
    .output()
    .unwrap();
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(text.contains("strict"), "{text}");
    assert!(text.contains("cannot decode image"), "{text}");
}
