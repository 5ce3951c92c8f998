//! Batches for training: a seeded order per epoch, samples decoded and transformed in parallel
//! (rayon) on a background thread that keeps `prefetch` batches ready, and the collate step
//! (tokenisation, padding, MLM masking). Every random choice is seeded from (seed, epoch,
//! sample or batch index), so a run resumed at a [`LoaderPosition`] sees exactly the batches an
//! uninterrupted run would have seen, whatever the thread count.
//!
//! A sample that cannot be loaded (missing or corrupt image) is skipped and reported with the
//! batch; with `strict` it stops the loader with an error instead.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use fiber_roberta::{EncodedBatch, RobertaTokenizer};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::DataError;
use crate::image::{load_rgb, normalize, resize, Normalization, PixelImage};
use crate::problem::{Problem, ProblemKind};
use crate::randaugment::RandAugment;
use crate::transforms::random_resized_crop_flip;
use fiber_roberta::masking::{MaskedBatch, MlmMasker};

/// How a loader batches a dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct LoaderConfig {
    /// Samples per batch.
    pub batch_size: usize,
    /// Seed of the order and of every per-sample random choice.
    pub seed: u64,
    /// Whether each epoch visits the samples in a fresh random order.
    pub shuffle: bool,
    /// Batches kept ready ahead of the consumer.
    pub prefetch: usize,
    /// Whether the last, smaller batch of an epoch is dropped.
    pub drop_last: bool,
    /// Whether an unloadable sample is an error instead of being skipped.
    pub strict: bool,
    /// Which of the stream's batches this loader produces (all of them by default; one
    /// replica's share in data-parallel training).
    pub shard: Shard,
}

/// One replica's share of a stream of batches: the stream is cut into global batches of
/// `count` consecutive batches, and replica `rank` takes the `rank`-th batch of each. So `count`
/// replicas see, step for step, the batches that one loader would give to `count` accumulated
/// micro-batches, with the same samples and random draws.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This replica, from 0.
    pub rank: usize,
    /// Replicas.
    pub count: usize,
}

impl Default for Shard {
    fn default() -> Self {
        Self { rank: 0, count: 1 }
    }
}

impl LoaderConfig {
    /// Shuffled batches of `batch_size`, two prefetched, last partial batch dropped, lenient.
    pub fn new(batch_size: usize, seed: u64) -> Self {
        Self {
            batch_size,
            seed,
            shuffle: true,
            prefetch: 2,
            drop_last: true,
            strict: false,
            shard: Shard::default(),
        }
    }

    /// Batches per epoch for a dataset of `len` samples.
    pub fn batches_per_epoch(&self, len: usize) -> usize {
        if self.drop_last {
            len / self.batch_size
        } else {
            len.div_ceil(self.batch_size)
        }
    }
}

/// Where a loader is in its stream of batches: the next batch is batch `batch` of epoch `epoch`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoaderPosition {
    /// Epoch, from 0.
    pub epoch: u64,
    /// Batch within the epoch, from 0.
    pub batch: usize,
}

impl LoaderPosition {
    /// The position `batches` batches further on, in epochs of `per_epoch` batches.
    pub fn advanced(self, batches: usize, per_epoch: usize) -> Self {
        let flat = self.batch.min(per_epoch) + batches;
        Self {
            epoch: self.epoch + (flat / per_epoch) as u64,
            batch: flat % per_epoch,
        }
    }
}

/// Mixes the parts of a random stream's identity into one seed (splitmix64 steps).
pub fn stream_seed(parts: &[u64]) -> u64 {
    let mut state = 0x243F_6A88_85A3_08D3u64;
    for &part in parts {
        state = state.wrapping_add(part).wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        state = z ^ (z >> 31);
    }
    state
}

/// The order in which epoch `epoch` visits `len` samples.
pub(crate) fn epoch_order(len: usize, seed: u64, epoch: u64, shuffle: bool) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    if shuffle {
        order.shuffle(&mut StdRng::seed_from_u64(stream_seed(&[
            seed, epoch, 0x0DE2,
        ])));
    }
    order
}

/// One collated batch with where it came from.
#[derive(Debug)]
pub struct Loaded<T> {
    /// The batch.
    pub batch: T,
    /// Its position in the stream.
    pub position: LoaderPosition,
    /// The position of the batch after it (what a checkpoint stores).
    pub next: LoaderPosition,
    /// Samples of this batch that were skipped, with why.
    pub skipped: Vec<Problem>,
}

/// A background producer of batches; dropping it stops the producer.
pub struct Loader<T> {
    receiver: Receiver<Result<Loaded<T>, DataError>>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

fn skipped_problem(error: &DataError) -> Problem {
    let (kind, file) = match error {
        DataError::Io { path, .. } => (ProblemKind::MissingImage, path.clone()),
        DataError::Decode { path, .. } => (ProblemKind::CorruptImage, path.clone()),
        _ => (ProblemKind::CorruptImage, Default::default()),
    };
    Problem {
        kind,
        file,
        location: "sample".into(),
        message: format!("{error}; sample skipped"),
    }
}

impl<T: Send + 'static> Loader<T> {
    /// Starts producing batches of a dataset of `len` samples from `start` on, endlessly (epoch
    /// after epoch). `load(index, rng)` reads and transforms one sample (run in parallel);
    /// `collate(samples, rng)` turns the loaded `(index, sample)` pairs into a batch.
    pub fn spawn<S, L, C>(
        len: usize,
        config: LoaderConfig,
        start: LoaderPosition,
        load: L,
        collate: C,
    ) -> Result<Self, DataError>
    where
        S: Send,
        L: Fn(usize, &mut StdRng) -> Result<S, DataError> + Send + Sync + 'static,
        C: Fn(Vec<(usize, S)>, &mut StdRng) -> Result<T, DataError> + Send + 'static,
    {
        let per_epoch = config.batches_per_epoch(len);
        if config.batch_size == 0 || per_epoch == 0 {
            return Err(DataError::Invalid(format!(
                "{len} samples make no batch of {}",
                config.batch_size
            )));
        }
        let (sender, receiver) = sync_channel(config.prefetch.max(1));
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let Shard { rank, count } = config.shard;
        if count == 0 || rank >= count {
            return Err(DataError::Invalid(format!(
                "replica {rank} of {count} is not a shard of the batches"
            )));
        }
        let handle = std::thread::spawn(move || {
            // This replica's first batch; after each one, skip the other replicas' batches.
            let mut position = start.advanced(rank, per_epoch);
            while !stopped.load(Ordering::Relaxed) {
                let order = epoch_order(len, config.seed, position.epoch, config.shuffle);
                let chunk = &order[position.batch * config.batch_size
                    ..((position.batch + 1) * config.batch_size).min(len)];
                let results: Vec<(usize, Result<S, DataError>)> = chunk
                    .par_iter()
                    .map(|&index| {
                        let mut rng = StdRng::seed_from_u64(stream_seed(&[
                            config.seed,
                            position.epoch,
                            index as u64,
                            0x5A,
                        ]));
                        (index, load(index, &mut rng))
                    })
                    .collect();
                let mut samples = Vec::with_capacity(results.len());
                let mut skipped = Vec::new();
                for (index, result) in results {
                    match result {
                        Ok(sample) => samples.push((index, sample)),
                        Err(error) if config.strict => {
                            let _ = sender.send(Err(DataError::Invalid(format!(
                                "sample {index}: {error} (strict mode)"
                            ))));
                            return;
                        }
                        Err(error) => skipped.push(skipped_problem(&error)),
                    }
                }
                let this = position;
                // Every replica reports the position after the whole global batch.
                let next = this.advanced(count - rank, per_epoch);
                position = this.advanced(count, per_epoch);
                let message = if samples.is_empty() {
                    Err(DataError::Invalid(format!(
                        "every sample of batch {} of epoch {} failed to load: {}",
                        this.batch,
                        this.epoch,
                        skipped.first().map(|p| p.message.as_str()).unwrap_or("")
                    )))
                } else {
                    let mut rng = StdRng::seed_from_u64(stream_seed(&[
                        config.seed,
                        this.epoch,
                        this.batch as u64,
                        0xC0,
                    ]));
                    collate(samples, &mut rng).map(|batch| Loaded {
                        batch,
                        position: this,
                        next,
                        skipped,
                    })
                };
                let failed = message.is_err();
                if sender.send(message).is_err() || failed {
                    return;
                }
            }
        });
        Ok(Self {
            receiver,
            stop,
            handle: Some(handle),
        })
    }

    /// The next batch (blocks until the producer has it).
    pub fn next_batch(&mut self) -> Result<Loaded<T>, DataError> {
        self.receiver
            .recv()
            .map_err(|_| DataError::Invalid("the data loader stopped".into()))?
    }
}

impl<T> Drop for Loader<T> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Unblock a producer waiting on a full channel, then wait for it.
        while self.receiver.try_recv().is_ok() {}
        if let Some(handle) = self.handle.take() {
            while !handle.is_finished() {
                while self.receiver.try_recv().is_ok() {}
                std::thread::yield_now();
            }
            let _ = handle.join();
        }
    }
}

/// How an image becomes model input (docs/model.md §1.1).
#[derive(Debug, Clone, PartialEq)]
pub enum ImageTransform {
    /// Coarse stage and evaluation: square bicubic resize.
    Resize {
        /// Output side.
        size: usize,
    },
    /// Fine-tuning: RandomResizedCrop (scale 0.5–1), horizontal flip p = 0.5, RandAugment.
    Augment {
        /// Output side.
        size: usize,
        /// The RandAugment policy (`None` to skip it).
        randaugment: Option<RandAugment>,
    },
}

impl ImageTransform {
    /// Reads `path` and applies the transform and ImageNet normalisation; `[3, size, size]`.
    pub fn load(&self, path: &Path, rng: &mut StdRng) -> Result<PixelImage, DataError> {
        let image = load_rgb(path)?;
        let transformed = match self {
            ImageTransform::Resize { size } => resize(&image, *size, *size)?,
            ImageTransform::Augment { size, randaugment } => {
                let cropped = random_resized_crop_flip(&image, *size, 0.5, rng)?;
                match randaugment {
                    Some(policy) => policy.apply(&cropped, rng),
                    None => cropped,
                }
            }
        };
        Ok(normalize(&transformed, &Normalization::IMAGENET))
    }
}

/// Tokenisation of a batch of texts and, optionally, MLM masking.
#[derive(Debug, Clone)]
pub struct TextCollate {
    /// The tokenizer.
    pub tokenizer: RobertaTokenizer,
    /// Every row is padded (and truncated) to this many tokens.
    pub max_len: usize,
    /// The masker, when the batch feeds MLM.
    pub masker: Option<MlmMasker>,
}

impl TextCollate {
    /// The MLM masker of docs/model.md §3.4 for this tokenizer.
    pub fn default_masker(tokenizer: &RobertaTokenizer) -> MlmMasker {
        let s = tokenizer.special();
        MlmMasker {
            probability: 0.15,
            mask_id: s.mask as i64,
            vocab_size: tokenizer.vocab_size(),
            special_ids: [s.bos, s.pad, s.eos, s.unk, s.mask]
                .map(|id| id as i64)
                .to_vec(),
        }
    }

    /// Tokenises `texts` and masks them when a masker is set.
    pub fn collate<S: AsRef<str>>(
        &self,
        texts: &[S],
        rng: &mut StdRng,
    ) -> Result<(EncodedBatch, Option<MaskedBatch>), DataError> {
        let tokens = self
            .tokenizer
            .encode_batch(texts, self.max_len)
            .map_err(|e| DataError::Invalid(e.to_string()))?;
        let masked = self
            .masker
            .as_ref()
            .map(|m| m.mask(&tokens.input_ids, &tokens.attention_mask, rng));
        Ok((tokens, masked))
    }
}

/// A batch of images with one text each.
#[derive(Debug, Clone)]
pub struct ImageTextBatch {
    /// Normalised images, all the same size.
    pub images: Vec<PixelImage>,
    /// Tokenised texts `[batch, max_len]`.
    pub tokens: EncodedBatch,
    /// MLM inputs and labels, when masking is on.
    pub masked: Option<MaskedBatch>,
    /// Dataset index of each row.
    pub indices: Vec<usize>,
}

/// Collates `(index, (image, text))` samples.
pub fn collate_image_text(
    samples: Vec<(usize, (PixelImage, String))>,
    text: &TextCollate,
    rng: &mut StdRng,
) -> Result<ImageTextBatch, DataError> {
    let indices = samples.iter().map(|(i, _)| *i).collect();
    let (images, texts): (Vec<PixelImage>, Vec<String>) =
        samples.into_iter().map(|(_, s)| s).unzip();
    let (tokens, masked) = text.collate(&texts, rng)?;
    Ok(ImageTextBatch {
        images,
        tokens,
        masked,
        indices,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numbers(
        config: LoaderConfig,
        start: LoaderPosition,
        fail: Option<usize>,
    ) -> Loader<Vec<(usize, u64)>> {
        Loader::spawn(
            10,
            config,
            start,
            move |index, rng| {
                if Some(index) == fail {
                    return Err(DataError::Decode {
                        path: "bad.jpg".into(),
                        message: "truncated".into(),
                    });
                }
                Ok(rand::Rng::random::<u64>(rng))
            },
            |samples, _| Ok(samples),
        )
        .unwrap()
    }

    #[test]
    fn epochs_visit_every_sample_once_in_a_seeded_order_and_resume_exactly() {
        let config = LoaderConfig::new(3, 7);
        let mut loader = numbers(config.clone(), LoaderPosition::default(), None);
        let mut stream = Vec::new();
        for _ in 0..9 {
            stream.push(loader.next_batch().unwrap());
        }
        let first_epoch: Vec<usize> = stream[..3]
            .iter()
            .flat_map(|b| b.batch.iter().map(|(i, _)| *i))
            .collect();
        let mut sorted = first_epoch.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(
            sorted.len(),
            9,
            "3 batches of 3 distinct samples, the tenth dropped"
        );
        assert_eq!(stream[3].position, LoaderPosition { epoch: 1, batch: 0 });
        assert_eq!(stream[2].next, LoaderPosition { epoch: 1, batch: 0 });
        assert_ne!(stream[0].batch, stream[3].batch, "a new order each epoch");
        // Resuming at batch 5's position reproduces batches 5.. exactly (indices and random draws).
        let mut resumed = numbers(config, stream[5].position, None);
        for expected in &stream[5..] {
            let got = resumed.next_batch().unwrap();
            assert_eq!(got.batch, expected.batch);
            assert_eq!(got.position, expected.position);
        }
    }

    #[test]
    fn shards_interleave_into_the_unsharded_stream_and_report_the_global_position() {
        // 10 samples in batches of 3: 3 batches per epoch, so global batches of 2 straddle epochs.
        let config = LoaderConfig::new(3, 11);
        let start = LoaderPosition { epoch: 0, batch: 1 };
        let mut whole = numbers(config.clone(), start, None);
        let mut shards: Vec<_> = (0..2)
            .map(|rank| {
                let shard = Shard { rank, count: 2 };
                numbers(
                    LoaderConfig {
                        shard,
                        ..config.clone()
                    },
                    start,
                    None,
                )
            })
            .collect();
        for _ in 0..4 {
            let first = whole.next_batch().unwrap();
            let second = whole.next_batch().unwrap();
            let a = shards[0].next_batch().unwrap();
            let b = shards[1].next_batch().unwrap();
            assert_eq!(a.batch, first.batch, "replica 0 takes the first batch");
            assert_eq!(b.batch, second.batch, "replica 1 takes the second");
            assert_eq!((a.position, b.position), (first.position, second.position));
            assert_eq!(
                a.next, second.next,
                "both report the position after the pair"
            );
            assert_eq!(b.next, second.next);
        }
        let bad = Shard { rank: 2, count: 2 };
        let refused = Loader::<Vec<(usize, u64)>>::spawn(
            10,
            LoaderConfig {
                shard: bad,
                ..config
            },
            start,
            |_, _| Ok(0u64),
            |s, _| Ok(s),
        );
        assert!(refused.is_err());
    }

    #[test]
    fn bad_samples_are_skipped_and_reported_or_fatal_in_strict_mode() {
        let config = LoaderConfig {
            shuffle: false,
            ..LoaderConfig::new(5, 1)
        };
        let mut loader = numbers(config.clone(), LoaderPosition::default(), Some(2));
        let batch = loader.next_batch().unwrap();
        assert_eq!(
            batch.batch.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            vec![0, 1, 3, 4]
        );
        assert_eq!(batch.skipped.len(), 1);
        assert_eq!(batch.skipped[0].kind, ProblemKind::CorruptImage);
        assert!(batch.skipped[0].message.contains("truncated"));
        let mut strict = numbers(
            LoaderConfig {
                strict: true,
                ..config
            },
            LoaderPosition::default(),
            Some(2),
        );
        let err = strict.next_batch().unwrap_err();
        assert!(err.to_string().contains("strict"), "{err}");
        assert!(
            strict.next_batch().is_err(),
            "the loader stops after a strict failure"
        );
    }
}
