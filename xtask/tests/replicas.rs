//! End-to-end data parallelism on the CPU: `train --devices 2` against one replica that
//! accumulates two micro-batches of the same samples; two processes joined with `--nodes 2`
//! against one process with two replicas; resumption on two replicas; and a failing replica or
//! a killed node ending the run with an error and a checkpoint to resume from.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fiber_core::TensorStore;

/// A small coarse stage with an ITC queue: 48 training images, per-replica batch 4.
fn config(dir: &Path, accumulation: usize) -> PathBuf {
    config_with(dir, accumulation, 5, 5)
}

/// [`config`] with `steps` pre-training steps, a checkpoint every `every`.
fn config_with(dir: &Path, accumulation: usize, steps: u64, every: u64) -> PathBuf {
    let text = format!(
        r#"name = "small"
data_dir = "{data}"
queue_size = 16
[world]
train_images = 48
val_images = 8
test_images = 8
[pretrain]
steps = {steps}
batch_size = 4
accumulation = {accumulation}
checkpoint_every = {every}
keep_checkpoints = 100
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
[replicas]
# One replica unless a test passes --devices (the tiny preset trains on two).
devices = "1"
timeout_seconds = 120
"#,
        data = dir.join("world").display(),
    );
    let path = dir.join(format!("config-{accumulation}-{steps}-{every}.toml"));
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
        .env("MATMUL_NUM_THREADS", "1")
        .env_remove("FIBER_NODES")
        .env_remove("FIBER_NODE_RANK")
        .env_remove("FIBER_COORDINATOR");
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

/// Every logged loss and part of `a` within 1e-5 (relative) of `b`'s.
fn assert_same_losses(a: &[(u64, Vec<f64>)], b: &[(u64, Vec<f64>)]) {
    assert_eq!(a.len(), b.len());
    for ((step, x), (_, y)) in a.iter().zip(b) {
        for (p, q) in x.iter().zip(y) {
            assert!(
                (p - q).abs() <= 1e-5 * p.abs().max(1.0),
                "step {step}: {p} vs {q}"
            );
        }
    }
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
    assert_same_losses(&a, &b);
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

/// A free TCP port on this machine.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `train` as node `rank` of two, joined through 127.0.0.1:`port`, writing to `runs`.
fn node(config: &Path, runs: &Path, rank: usize, port: u16, extra: &[&str]) -> Command {
    let mut command = xtask(config, runs, extra);
    command.args([
        "--nodes",
        "2",
        "--node-rank",
        &rank.to_string(),
        "--coordinator",
        &format!("127.0.0.1:{port}"),
    ]);
    command
}

/// Waits for `child` at most `limit`, killing it and failing the test past that.
fn finish(mut child: Child, limit: Duration) -> (bool, String) {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let output = child.wait_with_output().unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            return (status.success(), text);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("the process did not end within {limit:?}: a hang");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn spawn(command: &mut Command) -> Child {
    command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Trains the coarse stage on two processes joined as two nodes of `per_node` replicas and on
/// one process with twice as many replicas, checks that they agree (losses, parameters within
/// 1e-5, the queue's indices) and that node 1 writes nothing; returns both nodes' output.
fn two_nodes_against_one_process(per_node: usize) -> (String, String) {
    let tmp = tempfile::tempdir().unwrap();
    let config = config(tmp.path(), 1);
    let (threads, node0, node1) = (
        tmp.path().join("threads"),
        tmp.path().join("node0"),
        tmp.path().join("node1"),
    );
    let (all, each) = ((2 * per_node).to_string(), per_node.to_string());
    succeed(&mut xtask(
        &config,
        &threads,
        &["--stage", "coarse", "--devices", &all],
    ));
    let port = free_port();
    let extra = ["--stage", "coarse", "--devices", &each];
    let first = spawn(&mut node(&config, &node0, 0, port, &extra));
    let second = spawn(&mut node(&config, &node1, 1, port, &extra));
    let (ok0, text0) = finish(first, Duration::from_secs(300));
    let (ok1, text1) = finish(second, Duration::from_secs(300));
    assert!(ok0 && ok1, "node 0:\n{text0}\nnode 1:\n{text1}");
    // Node 1 writes nothing: no run folder, checkpoint, metrics or report.
    assert!(!node1.join("small").exists());
    let (a, b) = (losses(&node0, "pretrain"), losses(&threads, "pretrain"));
    assert_eq!(a.len(), 5);
    assert_same_losses(&a, &b);
    let difference = largest_difference(
        &checkpoint(&node0, "pretrain", 5, "model.safetensors"),
        &checkpoint(&threads, "pretrain", 5, "model.safetensors"),
    );
    println!(
        "largest parameter difference, 2 nodes × {per_node} replica(s) against {all} threads: {difference:e}"
    );
    assert!(difference <= 1e-5, "{difference}");
    let queue = |runs: &Path| {
        checkpoint(runs, "pretrain", 5, "task.safetensors")
            .get("queue.indices")
            .unwrap()
            .as_i64()
            .unwrap()
            .to_vec()
    };
    assert_eq!(queue(&node0), queue(&threads));
    (text0, text1)
}

#[test]
fn two_processes_joined_as_two_nodes_train_as_one_process_with_two_replicas() {
    let (text0, text1) = two_nodes_against_one_process(1);
    assert!(
        text0.contains("8 samples per step (4 per batch × 1 replica(s) on each of 2 nodes"),
        "{text0}"
    );
    assert!(text1.contains("node 1 of 2: training done"), "{text1}");
}

#[test]
fn two_nodes_of_two_replicas_train_as_one_process_with_four() {
    // Between the nodes each replica carries half of its node's sum (the shares are put
    // together again on each node), so the four replicas must still agree.
    two_nodes_against_one_process(2);
}

#[test]
fn two_replicas_stopped_and_resumed_train_as_an_uninterrupted_run() {
    let tmp = tempfile::tempdir().unwrap();
    let config = config_with(tmp.path(), 1, 6, 2);
    let (straight, stopped) = (tmp.path().join("straight"), tmp.path().join("stopped"));
    let replicas = ["--stage", "coarse", "--devices", "2"];
    succeed(&mut xtask(&config, &straight, &replicas));
    let output = xtask(
        &config,
        &stopped,
        &[&replicas[..], &["--stop-after", "pretrain:4"]].concat(),
    )
    .output()
    .unwrap();
    assert!(!output.status.success(), "--stop-after ends the run early");
    succeed(&mut xtask(
        &config,
        &stopped,
        &[&replicas[..], &["--resume"]].concat(),
    ));
    let (a, b) = (losses(&stopped, "pretrain"), losses(&straight, "pretrain"));
    assert_eq!(
        a.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        (1..=6).collect::<Vec<_>>()
    );
    assert_same_losses(&a, &b);
    for file in [
        "model.safetensors",
        "optimizer.safetensors",
        "task.safetensors",
    ] {
        let difference = largest_difference(
            &checkpoint(&stopped, "pretrain", 6, file),
            &checkpoint(&straight, "pretrain", 6, file),
        );
        assert!(difference <= 1e-5, "{file}: {difference}");
    }
}

#[test]
fn a_killed_node_ends_the_run_with_an_error_and_its_last_checkpoint_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let config = config_with(tmp.path(), 1, 400, 2);
    let (node0, node1) = (tmp.path().join("node0"), tmp.path().join("node1"));
    let port = free_port();
    let first = spawn(&mut node(&config, &node0, 0, port, &["--stage", "coarse"]));
    let mut second = spawn(&mut node(&config, &node1, 1, port, &["--stage", "coarse"]));
    let checkpoints = node0.join("small/pretrain/checkpoints");
    let start = Instant::now();
    while !checkpoints.join("step-000004").exists() {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "no checkpoint at step 4"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    second.kill().unwrap(); // SIGKILL
    second.wait().unwrap();
    // Node 0 notices at its next synchronisation, long before the 120 s timeout.
    let killed = Instant::now();
    let (ok, text) = finish(first, Duration::from_secs(100));
    assert!(!ok, "{text}");
    assert!(text.contains("node 1"), "{text}");
    assert!(text.contains("stopped or failed"), "{text}");
    assert!(
        killed.elapsed() < Duration::from_secs(60),
        "{:?}",
        killed.elapsed()
    );
    let last = losses(&node0, "pretrain").last().unwrap().0;
    assert!(last < 400, "the run stopped early");
    // A node without the run folder cannot resume with the others: both say why.
    let port = free_port();
    let resume = ["--stage", "coarse", "--resume"];
    let first = spawn(&mut node(&config, &node0, 0, port, &resume));
    let second = spawn(&mut node(
        &config,
        &tmp.path().join("empty"),
        1,
        port,
        &resume,
    ));
    let (ok0, text0) = finish(first, Duration::from_secs(100));
    let (ok1, text1) = finish(second, Duration::from_secs(100));
    assert!(!ok0 && !ok1);
    for text in [&text0, &text1] {
        assert!(text.contains("different steps"), "{text}");
        assert!(text.contains("replica 1 at step 0"), "{text}");
    }
    // The last checkpoint resumes, here on one machine with two replicas, to the end.
    let saved: Vec<u64> = std::fs::read_dir(&checkpoints)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.strip_prefix("step-")?.parse().ok())
        .collect();
    let resumed_from = *saved.iter().max().unwrap();
    let config = config_with(tmp.path(), 1, resumed_from + 2, 2);
    succeed(&mut xtask(
        &config,
        &node0,
        &["--stage", "coarse", "--devices", "2", "--resume"],
    ));
    let steps: Vec<u64> = losses(&node0, "pretrain").iter().map(|(s, _)| *s).collect();
    assert_eq!(steps, (1..=resumed_from + 2).collect::<Vec<_>>());
}
