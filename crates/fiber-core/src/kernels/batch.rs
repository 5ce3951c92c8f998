//! Inference split across the batch on the CPU backend: consecutive shards of the batch run in
//! parallel, each on its own clone of the model (clones share the weights' buffers), so the
//! work Burn's ndarray backend leaves single-threaded (layout copies, concatenations,
//! embeddings, index gathers) runs on every core as well.

use std::ops::Range;

use burn::prelude::*;
use burn::tensor::TensorKind;
use rayon::prelude::*;

use super::cpu::is_ndarray;

/// A value with a leading batch dimension that can be cut into consecutive samples.
pub trait BatchShard: Sized + Send {
    /// Samples in the batch.
    fn batch_len(&self) -> usize;
    /// Samples `range` of the batch.
    fn narrow_batch(&self, range: Range<usize>) -> Self;
}

impl<B: Backend, const D: usize, K: TensorKind<B> + burn::tensor::BasicOps<B>> BatchShard
    for Tensor<B, D, K>
{
    fn batch_len(&self) -> usize {
        self.dims()[0]
    }

    fn narrow_batch(&self, range: Range<usize>) -> Self {
        self.clone().narrow(0, range.start, range.len())
    }
}

impl<X: BatchShard, Y: BatchShard> BatchShard for (X, Y) {
    fn batch_len(&self) -> usize {
        self.0.batch_len()
    }

    fn narrow_batch(&self, range: Range<usize>) -> Self {
        (
            self.0.narrow_batch(range.clone()),
            self.1.narrow_batch(range),
        )
    }
}

/// How many shards inference on a batch of `batch` samples is split into on backend `B`: one
/// per thread of the current rayon pool (at most one per sample) on the ndarray backend
/// without autodiff; 1 on every other backend and under autodiff. Called from a task already
/// on the pool, the shards become further tasks of it, which idle threads take up.
pub fn inference_shards<B: Backend>(batch: usize) -> usize {
    if !is_ndarray::<B>() {
        return 1;
    }
    batch.min(rayon::current_num_threads()).max(1)
}

/// The consecutive ranges `shards` near-equal parts of `0..batch` cover, larger ones first.
pub fn shard_ranges(batch: usize, shards: usize) -> Vec<Range<usize>> {
    let shards = shards.clamp(1, batch.max(1));
    let (base, extra) = (batch / shards, batch % shards);
    let mut start = 0;
    (0..shards)
        .map(|i| {
            let len = base + usize::from(i < extra);
            let range = start..start + len;
            start += len;
            range
        })
        .collect()
}

/// `run(model, input)` with the batch split into [`inference_shards`] consecutive shards that
/// run in parallel, each on its own clone of `model`; `join` puts the shards' results back
/// together in batch order. With one shard this is `run(model, input)` itself, so on GPU
/// backends and under autodiff nothing changes.
pub fn map_batch<B, M, I, T>(
    model: &M,
    input: I,
    run: impl Fn(&M, I) -> T + Sync,
    join: impl FnOnce(Vec<T>) -> T,
) -> T
where
    B: Backend,
    M: Clone + Send,
    I: BatchShard,
    T: Send,
{
    let shards = inference_shards::<B>(input.batch_len());
    if shards <= 1 {
        return run(model, input);
    }
    let jobs: Vec<(M, I)> = shard_ranges(input.batch_len(), shards)
        .into_iter()
        .map(|range| (model.clone(), input.narrow_batch(range)))
        .collect();
    drop(input);
    join(
        jobs.into_par_iter()
            .map(|(replica, shard)| run(&replica, shard))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;
    use burn_ndarray::NdArray;

    type Cpu = NdArray<f32>;

    #[test]
    fn shard_ranges_cover_the_batch_in_order() {
        assert_eq!(shard_ranges(5, 2), vec![0..3, 3..5]);
        assert_eq!(shard_ranges(6, 3), vec![0..2, 2..4, 4..6]);
        assert_eq!(shard_ranges(2, 4), vec![0..1, 1..2]);
        assert_eq!(shard_ranges(3, 1), vec![0..3]);
        assert_eq!(shard_ranges(0, 2), vec![0..0]);
    }

    #[test]
    fn sharded_inference_equals_the_whole_batch_in_one_shard_per_thread() {
        let device = Default::default();
        let weight = Tensor::<Cpu, 2>::random([4, 3], Distribution::Default, &device);
        let x = Tensor::<Cpu, 3>::random([5, 2, 4], Distribution::Default, &device);
        let run = |w: &Tensor<Cpu, 2>, x: Tensor<Cpu, 3>| {
            (
                x.matmul(w.clone().unsqueeze()),
                rayon::current_thread_index(),
            )
        };
        let whole = run(&weight, x.clone()).0;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        let (sharded, threads) = pool.install(|| {
            assert_eq!(inference_shards::<Cpu>(5), 3);
            assert_eq!(inference_shards::<Cpu>(2), 2);
            let mut threads = Vec::new();
            let out = map_batch::<Cpu, _, _, _>(
                &weight,
                x,
                |w, x| run(w, x),
                |parts| {
                    let (values, ids): (Vec<_>, Vec<_>) = parts.into_iter().unzip();
                    threads = ids;
                    (Tensor::cat(values, 0), None)
                },
            );
            (out.0, threads)
        });
        // Three shards, each run as a task of the pool.
        assert_eq!(threads.len(), 3);
        assert_eq!(
            sharded.into_data().to_vec::<f32>().unwrap(),
            whole.into_data().to_vec::<f32>().unwrap()
        );
    }

    #[test]
    fn autodiff_and_single_samples_are_not_split() {
        type Ad = burn::backend::Autodiff<Cpu>;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        pool.install(|| {
            assert_eq!(inference_shards::<Ad>(8), 1);
            assert_eq!(inference_shards::<Cpu>(1), 1);
        });
    }
}
