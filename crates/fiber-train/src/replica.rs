//! Data-parallel replicas on Burn's collective library (`burn-collective`): one replica per
//! device, each in its own thread, registered as a peer of the backend's local collective
//! server. Replicas average their gradients with all-reduce (in a few large flat buckets), sum
//! or average host scalars (the fine-grained losses' positive counts), and gather rows (the ITC
//! queue's features) as an all-reduce of zero-padded slices, since the library has no
//! all-gather.
//!
//! Every wait is bounded: a collective call runs on a helper thread and the replica waits for
//! it in short slices, giving up when another replica of the group has failed (its error is
//! named) or when the group's timeout passes, so a failed replica ends the whole run with an
//! error instead of a hang.

use std::sync::mpsc::{sync_channel, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use burn::config::Config;
use burn::prelude::*;
use burn::tensor::backend::DeviceId;
use burn::tensor::{TensorData, TensorPrimitive};
use burn_collective::{CollectiveConfig, CollectiveError, PeerId, ReduceOperation};
use fiber_data::loader::Shard;

use crate::error::TrainError;
use crate::nodes::NodeLink;

/// How replicas synchronise (the `[replicas]` section of the run configuration).
#[derive(Config, Debug, PartialEq)]
pub struct ReplicaConfig {
    /// The replicas' devices when `--devices` is not given: a count or a device list, as
    /// `--devices` takes them.
    #[config(default = "String::from(\"1\")")]
    pub devices: String,
    /// Gradients are all-reduced in flat buckets of at most this many values (0: one call per
    /// parameter tensor).
    #[config(default = 8388608)]
    pub bucket_elements: usize,
    /// Seconds a replica waits for the others at a synchronisation point before the run ends
    /// with an error.
    #[config(default = 600)]
    pub timeout_seconds: u64,
}

/// What the replicas of one stage share: their number, the first failure and the settings.
pub struct ReplicaGroup {
    count: usize,
    config: ReplicaConfig,
    failure: Mutex<Option<(usize, String)>>,
}

impl ReplicaGroup {
    /// A group of `count` replicas.
    pub fn new(count: usize, config: ReplicaConfig) -> Arc<Self> {
        Arc::new(Self {
            count,
            config,
            failure: Mutex::new(None),
        })
    }

    /// Records that replica `rank` failed with `message` (the first failure is kept).
    pub fn fail(&self, rank: usize, message: String) {
        let mut failure = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        failure.get_or_insert((rank, message));
    }

    /// Runs replica `rank`'s `job`, turning a panic into an error and recording any error as
    /// the group's failure, so that the other replicas stop waiting for this one.
    pub fn guard<R>(
        &self,
        rank: usize,
        job: impl FnOnce() -> Result<R, TrainError>,
    ) -> Result<R, TrainError> {
        let result =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).unwrap_or_else(|panic| {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "no message".into());
                Err(TrainError::Replica(format!(
                    "replica {rank} panicked: {message}"
                )))
            });
        if let Err(e) = &result {
            self.fail(rank, e.to_string());
        }
        result
    }

    fn failure(&self) -> Option<(usize, String)> {
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// One replica of a data-parallel group, as its training loop sees it; a lone replica (no
/// group, no other node) makes every collective operation the identity.
#[derive(Clone)]
pub struct Replica {
    /// This replica among all replicas of the run (node × replicas per node + local rank);
    /// replica 0 writes checkpoints, metrics and reports.
    pub rank: usize,
    /// This replica among its node's replicas.
    pub local_rank: usize,
    world: usize,
    bucket_elements: usize,
    group: Option<Arc<ReplicaGroup>>,
    link: Option<Arc<NodeLink>>,
}

impl Replica {
    /// The only replica of a single-device run.
    pub fn single() -> Self {
        Self {
            rank: 0,
            local_rank: 0,
            world: 1,
            bucket_elements: 0,
            group: None,
            link: None,
        }
    }

    /// Local replica `local_rank` of `group` (none for a node's only replica), on the node
    /// that `link` joins to the others (none for a run on one machine), synchronising as
    /// `config` says.
    pub fn of(
        config: &ReplicaConfig,
        group: Option<&Arc<ReplicaGroup>>,
        local_rank: usize,
        link: Option<&Arc<NodeLink>>,
    ) -> Self {
        let local = group.map_or(1, |g| g.count);
        let (node, nodes) = link.map_or((0, 1), |l| (l.spec().rank, l.spec().count));
        Self {
            rank: node * local + local_rank,
            local_rank,
            world: local * nodes,
            bucket_elements: config.bucket_elements,
            group: group.cloned(),
            link: link.cloned(),
        }
    }

    /// Number of replicas in the run, over every node.
    pub fn count(&self) -> usize {
        self.world
    }

    /// Whether this replica writes the run's files (replica 0 of node 0).
    pub fn is_main(&self) -> bool {
        self.rank == 0
    }

    /// Whether this replica is its node's first (it keeps the node's weight average and shows
    /// progress).
    pub fn is_node_main(&self) -> bool {
        self.local_rank == 0
    }

    /// Whether the run spans several nodes (processes).
    pub fn spans_nodes(&self) -> bool {
        self.link.is_some()
    }

    /// The loader shard of this replica.
    pub fn shard(&self) -> Shard {
        Shard {
            rank: self.rank,
            count: self.count(),
        }
    }

    fn peer(&self) -> PeerId {
        PeerId(self.local_rank as u32)
    }

    /// Another local replica's failure, when one has failed.
    fn other_failure(&self) -> Option<String> {
        let group = self.group.as_ref()?;
        group
            .failure()
            .filter(|(r, _)| *r != self.local_rank)
            .map(|(rank, message)| format!("replica {rank} of this node failed ({message})"))
    }

    /// Runs a blocking collective call on a helper thread and waits for it, bounded by the
    /// group's timeout and abandoned when another replica has failed.
    fn wait<T: Send + 'static>(
        &self,
        what: &str,
        call: impl FnOnce() -> Result<T, CollectiveError> + Send + 'static,
    ) -> Result<T, TrainError> {
        let group = self.group.as_ref().expect("collective calls need a group");
        let (sender, receiver) = sync_channel(1);
        std::thread::spawn(move || {
            let _ = sender.send(call());
        });
        let timeout = Duration::from_secs(group.config.timeout_seconds);
        let start = Instant::now();
        loop {
            match receiver.recv_timeout(Duration::from_millis(50)) {
                Ok(result) => {
                    return result.map_err(|e| {
                        TrainError::Replica(format!(
                            "replica {}: {what} failed in burn-collective: {e:?}",
                            self.rank
                        ))
                    })
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(TrainError::Replica(format!(
                        "replica {}: the collective call of {what} ended without an answer",
                        self.rank
                    )))
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
            if let Some(failure) = self.other_failure() {
                return Err(TrainError::Replica(format!(
                    "{failure}; replica {} stopped at {what}",
                    self.rank
                )));
            }
            if start.elapsed() >= timeout {
                return Err(TrainError::Replica(format!(
                    "replica {} waited {} s for the other replicas at {what} (the `[replicas]` timeout); one of them stopped or hangs",
                    self.rank, group.config.timeout_seconds
                )));
            }
        }
    }

    /// Registers this replica on `device` with the backend's collective server (every replica
    /// of the group must, before any other operation).
    pub fn register<B: Backend>(&self, device: &B::Device) -> Result<(), TrainError> {
        let Some(group) = &self.group else {
            return Ok(());
        };
        let (peer, device, count) = (self.peer(), device.clone(), group.count);
        self.wait("registration", move || {
            burn_collective::register::<B>(
                peer,
                device,
                CollectiveConfig::default().with_num_devices(count),
            )
        })
    }

    /// Leaves the collective (end of a stage).
    pub fn finish<B: Backend>(&self) -> Result<(), TrainError> {
        if self.group.is_none() {
            return Ok(());
        }
        let peer = self.peer();
        self.wait("the end of the stage", move || {
            burn_collective::finish_collective::<B>(peer)
        })
    }

    /// `tensor` summed (or averaged) over every replica of the run: over the node's replicas
    /// with burn-collective, then over the nodes. Between nodes each local replica carries only
    /// its share (the `local_rank`-th of `local` slices) of the node's sum, and the node's
    /// replicas then put the shares together with a second local sum of zero-padded slices
    /// (exact: every value but one is zero), so a node sends each value once, not once per
    /// replica.
    fn all_reduce<B: Backend>(
        &self,
        tensor: Tensor<B, 1>,
        op: ReduceOperation,
        what: &str,
    ) -> Result<Tensor<B, 1>, TrainError> {
        if tensor.dims()[0] == 0 {
            return Ok(tensor);
        }
        let device = tensor.device();
        let mut tensor = self.local_sum(tensor, what)?;
        if let Some(link) = &self.link {
            let n = tensor.dims()[0];
            let local = self.group.as_ref().map_or(1, |g| g.count);
            let share = n.div_ceil(local);
            let start = (self.local_rank * share).min(n);
            let end = (start + share).min(n);
            let mut values = if end > start {
                tensor
                    .slice(start..end)
                    .into_data()
                    .convert::<f32>()
                    .to_vec::<f32>()
                    .map_err(|e| {
                        TrainError::Replica(format!(
                            "reading {what} back for the other nodes: {e:?}"
                        ))
                    })?
            } else {
                Vec::new()
            };
            link.all_reduce_sum(self.local_rank, &mut values, what, &|| self.other_failure())?;
            let mut parts = Vec::new();
            if start > 0 {
                parts.push(Tensor::<B, 1>::zeros([start], &device));
            }
            if end > start {
                parts.push(Tensor::from_data(
                    TensorData::new(values, [end - start]),
                    &device,
                ));
            }
            if n > end {
                parts.push(Tensor::<B, 1>::zeros([n - end], &device));
            }
            tensor = self.local_sum(Tensor::cat(parts, 0), what)?;
        }
        Ok(match op {
            ReduceOperation::Sum => tensor,
            ReduceOperation::Mean => tensor.div_scalar(self.world as f32),
        })
    }

    /// `tensor` summed over this node's replicas with burn-collective (itself for a node's
    /// only replica).
    fn local_sum<B: Backend>(
        &self,
        tensor: Tensor<B, 1>,
        what: &str,
    ) -> Result<Tensor<B, 1>, TrainError> {
        if self.group.is_none() {
            return Ok(tensor);
        }
        let peer = self.peer();
        let primitive = tensor.into_primitive().tensor();
        let reduced = self.wait(what, move || {
            burn_collective::all_reduce::<B>(peer, primitive, ReduceOperation::Sum)
        })?;
        Ok(Tensor::from_primitive(TensorPrimitive::Float(reduced)))
    }

    /// Each tensor `[n_i]` averaged over the replicas (every replica passes the same shapes in
    /// the same order), in flat buckets of at most `bucket_elements` values.
    pub fn mean_flat<B: Backend>(
        &self,
        tensors: Vec<Tensor<B, 1>>,
    ) -> Result<Vec<Tensor<B, 1>>, TrainError> {
        if self.world == 1 {
            return Ok(tensors);
        }
        let limit = self.bucket_elements;
        let sizes: Vec<usize> = tensors.iter().map(|t| t.dims()[0]).collect();
        let mut out = Vec::with_capacity(tensors.len());
        let mut bucket: Vec<Tensor<B, 1>> = Vec::new();
        let mut filled = 0usize;
        let flush = |bucket: &mut Vec<Tensor<B, 1>>,
                     out: &mut Vec<Tensor<B, 1>>|
         -> Result<(), TrainError> {
            if bucket.is_empty() {
                return Ok(());
            }
            let lens: Vec<usize> = bucket.iter().map(|t| t.dims()[0]).collect();
            let flat = if bucket.len() == 1 {
                bucket.pop().expect("one tensor")
            } else {
                Tensor::cat(std::mem::take(bucket), 0)
            };
            let reduced =
                self.all_reduce(flat, ReduceOperation::Mean, "the gradient all-reduce")?;
            if lens.len() == 1 {
                out.push(reduced);
            } else {
                out.extend(reduced.split_with_sizes(lens, 0));
            }
            Ok(())
        };
        for (tensor, size) in tensors.into_iter().zip(sizes) {
            if !bucket.is_empty() && (limit == 0 || filled + size > limit) {
                flush(&mut bucket, &mut out)?;
                filled = 0;
            }
            filled += size;
            bucket.push(tensor);
        }
        flush(&mut bucket, &mut out)?;
        Ok(out)
    }

    /// Host values summed over the replicas, through the backend's float type (exact for
    /// integers up to 256 in bf16, 2048 in f16, 2^24 in f32).
    pub fn sum_host<B: Backend>(
        &self,
        values: &[f32],
        device: &B::Device,
    ) -> Result<Vec<f32>, TrainError> {
        if self.world == 1 {
            return Ok(values.to_vec());
        }
        let tensor =
            Tensor::<B, 1>::from_data(TensorData::new(values.to_vec(), [values.len()]), device);
        let summed = self.all_reduce(tensor, ReduceOperation::Sum, "a host-value all-reduce")?;
        summed
            .into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .map_err(|e| TrainError::Replica(format!("reading a reduced value back: {e:?}")))
    }

    /// Host values averaged over the replicas.
    pub fn mean_host<B: Backend>(
        &self,
        values: &[f32],
        device: &B::Device,
    ) -> Result<Vec<f32>, TrainError> {
        let n = self.count() as f32;
        Ok(self
            .sum_host::<B>(values, device)?
            .into_iter()
            .map(|v| v / n)
            .collect())
    }

    /// Every replica's rows gathered in rank order: `rows` `[n_r, d]` (n_r may differ between
    /// replicas, d may not) become `[Σ n_r, d]` on every replica; also returns each replica's
    /// row count. Built from all-reduce: each replica fills its own slice of a zero matrix.
    pub fn gather_rows<B: Backend>(
        &self,
        rows: Tensor<B, 2>,
    ) -> Result<(Tensor<B, 2>, Vec<usize>), TrainError> {
        let [n, d] = rows.dims();
        if self.world == 1 {
            return Ok((rows, vec![n]));
        }
        let device = rows.device();
        let counts: Vec<usize> = self
            .exchange::<B>(n as u64, 4, &device)?
            .into_iter()
            .map(|c| c as usize)
            .collect();
        let total: usize = counts.iter().sum();
        let before: usize = counts[..self.rank].iter().sum();
        let mut parts = Vec::new();
        if before > 0 {
            parts.push(Tensor::<B, 2>::zeros([before, d], &device));
        }
        parts.push(rows);
        if total - before - n > 0 {
            parts.push(Tensor::<B, 2>::zeros([total - before - n, d], &device));
        }
        let padded = Tensor::cat(parts, 0).reshape([total * d]);
        let gathered = self.all_reduce(padded, ReduceOperation::Sum, "the row gather")?;
        Ok((gathered.reshape([total, d]), counts))
    }

    /// Every replica's `value` (below 256^`bytes`), in rank order. Each replica fills only its
    /// own slots of a zero vector with one byte each, so every summed value is a single byte,
    /// exact in every float type down to bf16.
    fn exchange<B: Backend>(
        &self,
        value: u64,
        bytes: usize,
        device: &B::Device,
    ) -> Result<Vec<u64>, TrainError> {
        let mut slots = vec![0f32; self.count() * bytes];
        for (p, slot) in slots[self.rank * bytes..(self.rank + 1) * bytes]
            .iter_mut()
            .enumerate()
        {
            *slot = ((value >> (8 * (bytes - 1 - p))) & 0xFF) as f32;
        }
        Ok(self
            .sum_host::<B>(&slots, device)?
            .chunks(bytes)
            .map(|c| c.iter().fold(0u64, |v, b| (v << 8) | b.round() as u64))
            .collect())
    }

    /// Checks, on a run over several nodes, that every replica starts stage `stage` at the same
    /// step, and every node from the same weights (`weights`: a fingerprint of them, given by
    /// each node's first replica; its other replicas train copies of the same model); nodes that
    /// resumed from different checkpoints, or none, are an error naming each replica's step.
    pub fn agree_on_start<B: Backend>(
        &self,
        stage: &str,
        step: u64,
        weights: Option<u64>,
        device: &B::Device,
    ) -> Result<(), TrainError> {
        if self.link.is_none() {
            return Ok(());
        }
        let steps = self.exchange::<B>(step, 8, device)?;
        let local = self.group.as_ref().map_or(1, |g| g.count);
        let fingerprints: Vec<u64> = self
            .exchange::<B>(weights.unwrap_or(0), 8, device)?
            .into_iter()
            .step_by(local)
            .collect();
        if steps.iter().any(|&s| s != step) {
            let list: Vec<String> = steps
                .iter()
                .enumerate()
                .map(|(r, s)| format!("replica {r} at step {s}"))
                .collect();
            return Err(TrainError::Replica(format!(
                "the replicas start {stage} at different steps ({}): with --resume every node needs the run folder (a shared filesystem, or a copy of node 0's)",
                list.join(", ")
            )));
        }
        if fingerprints.iter().any(|&f| f != fingerprints[0]) {
            let differ: Vec<String> = fingerprints
                .iter()
                .enumerate()
                .filter(|(_, &f)| f != fingerprints[0])
                .map(|(node, _)| node.to_string())
                .collect();
            return Err(TrainError::Replica(format!(
                "the nodes start {stage} from different weights (node(s) {} differ from node 0): every node needs the same --init, data, tokenizer and precision",
                differ.join(", ")
            )));
        }
        Ok(())
    }
}

/// The devices of a run's replicas, as `--devices` gives them: a count (`2`: that many
/// replicas on the backend's devices 0, 1, … in turn; on the CPU backend, replicas sharing the
/// CPU) or
/// a list (`cuda:0,cuda:2`, `0,2`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceSpec {
    /// This many replicas, on devices 0 … n − 1.
    Count(usize),
    /// One replica on each of these device indices.
    Indices(Vec<u16>),
}

impl Default for DeviceSpec {
    fn default() -> Self {
        DeviceSpec::Count(1)
    }
}

impl DeviceSpec {
    /// Number of replicas.
    pub fn len(&self) -> usize {
        match self {
            DeviceSpec::Count(n) => *n,
            DeviceSpec::Indices(list) => list.len(),
        }
    }

    /// Whether there is no replica (never, once parsed).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The replicas' devices of the backend whose default device is `default`: each index
    /// as a device of the same kind. A count larger than the backend's devices places the
    /// replicas on them in turn (the CPU backend has one device, shared by all).
    pub fn devices<B: Backend>(&self, default: &B::Device) -> Vec<B::Device> {
        let kind = default.to_id().type_id;
        let available = B::device_count(kind).max(1) as u16;
        let indices: Vec<u16> = match self {
            DeviceSpec::Count(n) => (0..*n as u16).map(|i| i % available).collect(),
            DeviceSpec::Indices(list) => list.clone(),
        };
        indices
            .into_iter()
            .map(|index_id| {
                B::Device::from_id(DeviceId {
                    type_id: kind,
                    index_id,
                })
            })
            .collect()
    }
}

impl std::str::FromStr for DeviceSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Ok(n) = s.parse::<usize>() {
            return match n {
                0 => Err("--devices needs at least one device".into()),
                n => Ok(DeviceSpec::Count(n)),
            };
        }
        let indices = s
            .split(',')
            .map(|item| {
                let index = item.trim().rsplit(':').next().unwrap_or("");
                index.parse::<u16>().map_err(|_| {
                    format!("`{item}` in --devices is not a device index such as `cuda:1` or `1`")
                })
            })
            .collect::<Result<Vec<u16>, String>>()?;
        let mut unique = indices.clone();
        unique.sort_unstable();
        unique.dedup();
        if unique.len() != indices.len() {
            return Err(format!("--devices `{s}` names a device twice"));
        }
        Ok(DeviceSpec::Indices(indices))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_lists_and_counts_parse_and_bad_ones_are_refused() {
        assert_eq!("2".parse::<DeviceSpec>().unwrap(), DeviceSpec::Count(2));
        assert_eq!(
            "cuda:0,cuda:2".parse::<DeviceSpec>().unwrap(),
            DeviceSpec::Indices(vec![0, 2])
        );
        assert_eq!("1, 3".parse::<DeviceSpec>().unwrap().len(), 2);
        assert!("0".parse::<DeviceSpec>().is_err());
        assert!("cuda:x"
            .parse::<DeviceSpec>()
            .unwrap_err()
            .contains("cuda:x"));
        assert!("cuda:1,cuda:1".parse::<DeviceSpec>().is_err());
    }

    #[test]
    fn a_lone_replica_reduces_to_the_identity() {
        type B = burn::backend::NdArray<f32>;
        let device = Default::default();
        let replica = Replica::single();
        assert_eq!(replica.count(), 1);
        assert_eq!(replica.shard(), Shard::default());
        let t = Tensor::<B, 1>::from_floats([1.0, 2.0], &device);
        let out = replica.mean_flat(vec![t.clone()]).unwrap();
        assert_eq!(out[0].to_data(), t.to_data());
        assert_eq!(replica.mean_host::<B>(&[3.0], &device).unwrap(), vec![3.0]);
    }
}
