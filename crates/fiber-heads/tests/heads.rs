//! The heads on a tiny FIBER: gradients reach every parameter that should get one, a tiny
//! model overfits one batch with each objective, beam search with one beam equals greedy
//! decoding, and weights round-trip through the original key names.

use burn::backend::{Autodiff, NdArray};
use burn::module::{AutodiffModule, Param};
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::{Distribution, TensorData};
use fiber_core::host::int_matrix;
use fiber_core::weights::{Layout, WeightVisitor};
use fiber_core::WeightCollector;
use fiber_fusion::FiberConfig;
use fiber_heads::{
    ClassifierHead, DecodeConfig, FeatureQueue, FetchedInputs, FiberModel, MlmMasker, PretrainBatch,
};
use fiber_roberta::RobertaConfig;
use fiber_swin::SwinConfig;
use rand::SeedableRng;

type A = Autodiff<NdArray<f32>>;
const BATCH: usize = 4;
const LEN: usize = 8;
const VOCAB: usize = 40;

/// The backend's random generator is global: tests that seed it run one at a time.
static SEEDED: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Seeds the backend and holds the lock for the rest of the test. The CPU backend's thread
/// pools are limited to one thread before any tensor operation runs, so that reductions add in
/// a fixed order and the training curves are the same on every machine and under any load.
fn seeded(device: &burn::tensor::Device<A>) -> std::sync::MutexGuard<'static, ()> {
    static SINGLE_THREADED: std::sync::Once = std::sync::Once::new();
    SINGLE_THREADED.call_once(|| {
        std::env::set_var("RAYON_NUM_THREADS", "1");
        std::env::set_var("MATMUL_NUM_THREADS", "1");
    });
    let guard = SEEDED.lock().unwrap_or_else(|e| e.into_inner());
    <A as burn::tensor::backend::Backend>::seed(device, 7);
    guard
}

fn config() -> FiberConfig {
    let swin = SwinConfig::new(32, 16, vec![1, 1, 2], vec![2, 2, 4], 2)
        .with_mlp_ratio(2.0)
        .with_drop_path_rate(0.0);
    let roberta = RobertaConfig::new(VOCAB, 32, 3, 4, 48)
        .with_max_position_embeddings(LEN + 2)
        .with_hidden_dropout_prob(0.0)
        .with_attention_probs_dropout_prob(0.0);
    FiberConfig::new(swin, roberta).with_num_fuse_block(2)
}

/// Four distinct images (a different colour each, plus noise) and four distinct texts
/// `<s> w w w … </s> <pad>…`.
fn data(device: &burn::tensor::Device<A>) -> (Tensor<A, 4>, Vec<i64>, Vec<i64>) {
    let colours: Vec<f32> = (0..BATCH)
        .flat_map(|b| {
            (0..3).map(move |c| {
                if (b + c) % 3 == 0 {
                    1.5
                } else {
                    -0.5 * b as f32
                }
            })
        })
        .collect();
    let colours = Tensor::<A, 4>::from_data(TensorData::new(colours, [BATCH, 3, 1, 1]), device);
    let pixels = Tensor::<A, 4>::random([BATCH, 3, 32, 32], Distribution::Normal(0.0, 0.5), device)
        + colours;
    let mut ids = Vec::new();
    let mut mask = Vec::new();
    for row in 0..BATCH {
        let real = 5 + row % 3;
        for i in 0..LEN {
            let id = if i == 0 {
                0
            } else if i + 1 == real {
                2
            } else if i < real {
                5 + ((row * 11 + i * 7) % (VOCAB - 5)) as i64
            } else {
                1
            };
            ids.push(id);
            mask.push((i < real) as i64);
        }
    }
    (pixels, ids, mask)
}

fn ints(values: &[i64], device: &burn::tensor::Device<A>) -> Tensor<A, 2, Int> {
    Tensor::from_data(
        TensorData::new(values.to_vec(), [values.len() / LEN, LEN]),
        device,
    )
}

fn masker() -> MlmMasker {
    MlmMasker {
        probability: 0.3,
        mask_id: 4,
        vocab_size: VOCAB,
        special_ids: vec![0, 1, 2, 3, 4],
    }
}

fn pretrain_batch(device: &burn::tensor::Device<A>) -> PretrainBatch<A> {
    let (pixels, ids, mask) = data(device);
    let masked = masker().mask(&ids, &mask, &mut rand::rngs::StdRng::seed_from_u64(1));
    PretrainBatch {
        pixels,
        input_ids: ints(&ids, device),
        attention_mask: ints(&mask, device),
        masked_ids: ints(&masked.input_ids, device),
        mlm_labels: int_matrix(&masked.labels, LEN, device),
        indices: (0..BATCH).collect(),
        uniform_negative_share: 0.0,
    }
}

/// Trains `model` on `loss_of` for `steps` AdamW steps; returns the first and last loss.
fn overfit<M: AutodiffModule<A>>(
    model: M,
    steps: usize,
    lr: f64,
    loss_of: impl FnMut(&M, usize) -> Tensor<A, 1>,
) -> (f32, f32, M) {
    overfit_with(model, steps, |_| lr, loss_of, |m| m)
}

/// [`overfit`] with the learning rate `lr_at(step)` and `before_step` applied to the model before
/// each step.
fn overfit_with<M: AutodiffModule<A>>(
    mut model: M,
    steps: usize,
    lr_at: impl Fn(usize) -> f64,
    mut loss_of: impl FnMut(&M, usize) -> Tensor<A, 1>,
    before_step: impl Fn(M) -> M,
) -> (f32, f32, M) {
    let mut optimizer = AdamWConfig::new()
        .with_beta_2(0.98)
        .with_epsilon(1e-8)
        .with_weight_decay(0.0)
        .init::<A, M>();
    let mut first = f32::NAN;
    let mut last = f32::NAN;
    for step in 0..steps {
        model = before_step(model);
        let loss = loss_of(&model, step);
        last = loss.clone().into_scalar();
        if step == 0 {
            first = last;
        }
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optimizer.step(lr_at(step), model, grads);
    }
    (first, last, model)
}

#[test]
fn every_parameter_but_the_unused_text_pooler_gets_a_gradient_from_the_coarse_step() {
    let device = Default::default();
    let _seeded = seeded(&device);
    let mut model = FiberModel::<A>::new(&config(), false, &device).unwrap();
    // open the gates so the fusion modules matter
    model.backbone.visit_fusion_weights(&mut SetGates(0.5), "");
    let batch = pretrain_batch(&device);
    let losses = model.pretrain_losses(&batch, &mut rand::rngs::StdRng::seed_from_u64(2));
    let grads = losses.total.backward();
    struct Check<'a> {
        grads: &'a <A as burn::tensor::backend::AutodiffBackend>::Gradients,
        without: Vec<String>,
        checked: usize,
    }
    impl WeightVisitor<A> for Check<'_> {
        fn visit<const D: usize>(&mut self, key: &str, param: &mut Param<Tensor<A, D>>, _: Layout) {
            self.checked += 1;
            let ok = param
                .val()
                .grad(self.grads)
                .map(|g| g.abs().max().into_scalar() > 0.0)
                .unwrap_or(false);
            if !ok {
                self.without.push(key.to_string());
            }
        }
    }
    let mut check = Check {
        grads: &grads,
        without: Vec::new(),
        checked: 0,
    };
    model.visit_weights(&mut check);
    assert!(check.checked > 100);
    assert_eq!(
        check.without,
        vec![
            "text_transformer.pooler.dense.weight",
            "text_transformer.pooler.dense.bias"
        ],
        "only the unused pooler gets no gradient"
    );
}

struct SetGates(f32);
impl WeightVisitor<A> for SetGates {
    fn visit<const D: usize>(&mut self, key: &str, param: &mut Param<Tensor<A, D>>, _: Layout) {
        if key.contains("alpha") {
            let value = param.val().zeros_like().add_scalar(self.0);
            *param = Param::initialized(param.id, value.detach().require_grad());
        }
    }
}

#[test]
fn a_tiny_model_overfits_one_batch_with_itc_itm_and_mlm() {
    let device = Default::default();
    let _seeded = seeded(&device);
    let batch = pretrain_batch(&device);
    let model = FiberModel::<A>::new(&config(), false, &device).unwrap();
    let rng = std::cell::RefCell::new(rand::rngs::StdRng::seed_from_u64(3));
    // Linear decay to zero, as in pre-training: at a constant 1e-3 Adam's late loss spikes decide
    // the final ITM loss, and where they fall depends on the CPU's rounding.
    let steps = 600;
    let (first, last, model) = overfit_with(
        model,
        steps,
        |step| 1e-3 * (1.0 - step as f64 / steps as f64),
        |m, _| m.pretrain_losses(&batch, &mut *rng.borrow_mut()).total,
        FiberModel::clamp_temperature,
    );
    // The ITM loss depends on the hard negatives drawn: average it over several draws.
    let draws = 20;
    let (mut itc, mut itm, mut mlm) = (0.0, 0.0, 0.0);
    for _ in 0..draws {
        let losses = model.pretrain_losses(&batch, &mut *rng.borrow_mut());
        itc += losses.itc.into_scalar() / draws as f32;
        itm += losses.itm.into_scalar() / draws as f32;
        mlm += losses.mlm.into_scalar() / draws as f32;
    }
    println!("coarse step: total {first:.3} -> {last:.3}; final (mean of {draws} draws) ITC {itc:.4}, ITM {itm:.4}, MLM {mlm:.4}");
    // chance levels: ITC ln 4 = 1.386, ITM ln 2 = 0.693, MLM ln 40 = 3.689
    assert!(itc < 0.05, "ITC {itc}");
    assert!(itm < 0.15, "ITM {itm}");
    assert!(mlm < 0.05, "MLM {mlm}");
}

#[test]
fn a_tiny_model_overfits_vqa_soft_scores() {
    let device = Default::default();
    let _seeded = seeded(&device);
    let (pixels, ids, mask) = data(&device);
    let (ids, mask) = (ints(&ids, &device), ints(&mask, &device));
    let answers = 6;
    let mut scores = vec![0.0f32; BATCH * answers];
    for row in 0..BATCH {
        scores[row * answers + row] = 1.0;
        scores[row * answers + (row + 2) % answers] = 0.3;
    }
    let targets = Tensor::<A, 2>::from_data(TensorData::new(scores, [BATCH, answers]), &device);
    let model = VqaModel {
        fiber: FiberModel::<A>::new(&config(), false, &device).unwrap(),
        head: ClassifierHead::<A>::vqa(64, answers, 0.02, &device),
    };
    let (first, last, _) = overfit(model, 150, 3e-3, |m, _| {
        let out = m
            .fiber
            .backbone
            .forward_fused(pixels.clone(), ids.clone(), mask.clone());
        m.head
            .vqa_loss(m.head.forward(m.fiber.cls_feats(&out)), targets.clone())
    });
    // The soft targets' own entropy bounds the loss from below: 6 × mean BCE at the optimum.
    let h = |t: f64| {
        if t <= 0.0 || t >= 1.0 {
            0.0
        } else {
            -(t * t.ln() + (1.0 - t) * (1.0 - t).ln())
        }
    };
    let floor = (BATCH as f64 * h(0.3)) / (BATCH * answers) as f64 * answers as f64;
    println!("VQA: {first:.3} -> {last:.3} (floor {floor:.3})");
    assert!((last as f64) < floor + 0.1, "VQA loss {last}");
}

#[derive(Module, Debug)]
struct VqaModel<B: Backend> {
    fiber: FiberModel<B>,
    head: ClassifierHead<B>,
}

fn decode_config(beam: usize) -> DecodeConfig {
    DecodeConfig {
        beam_size: beam,
        max_len: LEN,
        length_normalized: true,
        bos: 0,
        eos: 2,
        pad: 1,
        mask: 4,
    }
}

#[test]
fn a_tiny_captioner_overfits_and_greedy_decoding_reproduces_the_captions() {
    let device = Default::default();
    let _seeded = seeded(&device);
    let (pixels, ids_v, mask_v) = data(&device);
    let (ids, mask) = (ints(&ids_v, &device), ints(&mask_v, &device));
    let model = FiberModel::<A>::new(&config(), true, &device).unwrap();
    let (first, last, model) = overfit(model, 150, 3e-3, |m, _| {
        let image = m.backbone.caption_image(pixels.clone());
        let logits = m.caption_logits(&image, ids.clone(), mask.clone()).unwrap();
        m.caption_loss(logits, ids.clone(), mask.clone())
    });
    println!("captioning: {first:.3} -> {last:.4}");
    assert!(last < 0.05, "caption loss {last}");

    let model = model.valid();
    let pixels = pixels.inner();
    for row in 0..BATCH {
        let image = model
            .backbone
            .caption_image(pixels.clone().slice([row..row + 1]));
        let beam1 = model.generate_caption(&image, &decode_config(1)).unwrap();
        // an independent greedy decoder: argmax of the next-token logits until </s>
        let mut tokens = vec![0i64];
        for _ in 0..LEN {
            let len = tokens.len();
            let ids = Tensor::<NdArray, 2, Int>::from_data(
                TensorData::new(tokens.clone(), [1, len]),
                &Default::default(),
            );
            let logits = model
                .caption_logits(&image, ids, Tensor::ones([1, len], &Default::default()))
                .unwrap();
            let mut last: Vec<f32> = logits
                .slice([0..1, len - 1..len])
                .into_data()
                .into_vec()
                .unwrap();
            last[4] = f32::NEG_INFINITY;
            let next = (0..last.len())
                .max_by(|&a, &b| last[a].total_cmp(&last[b]))
                .unwrap() as i64;
            tokens.push(next);
            if next == 2 || next == 1 {
                break;
            }
        }
        println!("row {row}: beam1 {:?} greedy {:?}", beam1.tokens, tokens);
        assert_eq!(
            beam1.tokens,
            tokens[1..].to_vec(),
            "beam search with one beam equals greedy decoding"
        );
        let real = mask_v[row * LEN..(row + 1) * LEN].iter().sum::<i64>() as usize;
        assert_eq!(
            beam1.tokens,
            ids_v[row * LEN + 1..row * LEN + real].to_vec(),
            "the overfitted caption of image {row}"
        );
        let beam5 = model.generate_caption(&image, &decode_config(5)).unwrap();
        println!(
            "row {row}: beam5 {:?} (score {:.4}) beam1 score {:.4}",
            beam5.tokens, beam5.score, beam1.score
        );
        assert_eq!(beam5.tokens, beam1.tokens);
    }
}

#[test]
fn weights_round_trip_through_the_original_key_names() {
    let device = Default::default();
    let _seeded = seeded(&device);
    let mut model = FiberModel::<A>::new(&config(), false, &device).unwrap();
    let mut collector = WeightCollector::new();
    model.visit_weights(&mut collector);
    let mut store = collector.into_store();
    for key in [
        "cross_modal_text_transform.weight",
        "cross_modal_image_pooler_itc.dense.bias",
        "mlm_score.transform.LayerNorm.weight",
        "itm_score.fc.weight",
        "temp",
    ] {
        assert!(store.contains(key), "{key}");
    }
    // the original stores `temp` as a scalar
    let temp = store.remove("temp").unwrap();
    store.insert(
        "temp",
        fiber_core::StoredTensor {
            shape: vec![],
            values: temp.values,
        },
    );
    let mut fresh = FiberModel::<A>::new(&config(), false, &device).unwrap();
    let report = fresh.load_store(store).unwrap();
    assert!(report.skipped.is_empty() && report.initialised.is_empty());
    let (pixels, ids, mask) = data(&device);
    let a = model
        .backbone
        .forward_dual(pixels.clone(), ints(&ids, &device), ints(&mask, &device))
        .text;
    let b = fresh
        .backbone
        .forward_dual(pixels, ints(&ids, &device), ints(&mask, &device))
        .text;
    assert_eq!(a.into_data(), b.into_data());
    assert!((fresh.temperature.value().into_scalar() - 0.07).abs() < 1e-7);
}

#[test]
fn hard_negatives_from_the_queue_are_fetched_again_through_the_dataset() {
    let device = Default::default();
    let _seeded = seeded(&device);
    let model = FiberModel::<A>::new(&config(), false, &device).unwrap();
    let batch = pretrain_batch(&device);
    // A queue holding the features of four other samples (dataset indices 100..104), whose
    // inputs the "dataset" returns on request.
    let (pixels, ids, mask) = data(&device);
    let mut queue = FeatureQueue::new(16);
    let image = model.backbone.image_prefix(pixels.clone());
    let text = model
        .backbone
        .text_prefix(ints(&ids, &device), ints(&mask, &device));
    let (fi, ft) = model.itc_features(&image, &text);
    queue.push(fi, ft, &[100, 101, 102, 103]);
    let requested = std::cell::RefCell::new(Vec::new());
    let fetch = |indices: &[usize]| {
        requested.borrow_mut().extend_from_slice(indices);
        let rows: Vec<usize> = indices.iter().map(|i| i - 100).collect();
        let idx = Tensor::<A, 1, Int>::from_data(
            TensorData::new(
                rows.iter().map(|&r| r as i64).collect::<Vec<_>>(),
                [rows.len()],
            ),
            &device,
        );
        Ok::<_, String>((
            pixels.clone().select(0, idx.clone()),
            ints(&ids, &device).select(0, idx.clone()),
            ints(&mask, &device).select(0, idx),
        ))
    };
    let losses = model
        .pretrain_losses_with_queue(
            &batch,
            &queue,
            &fetch,
            &mut rand::rngs::StdRng::seed_from_u64(5),
        )
        .unwrap();
    // 4 in-batch + 4 queued candidates per row: the ITC logits cover both
    assert!(losses.itc.into_scalar().is_finite() && losses.itm.into_scalar().is_finite());
    let requested = requested.into_inner();
    assert!(
        requested.iter().all(|i| (100..104).contains(i)),
        "only queued samples are fetched: {requested:?}"
    );
    // With 8 candidates and 8 draws, some draw lands in the queue with this seed.
    assert!(!requested.is_empty());
    // A fetch that fails ends the step with its error.
    let failing = |_: &[usize]| Err::<FetchedInputs<A>, String>("image 100 is gone".into());
    let error = model
        .pretrain_losses_with_queue(
            &batch,
            &queue,
            &failing,
            &mut rand::rngs::StdRng::seed_from_u64(5),
        )
        .unwrap_err();
    assert_eq!(error, "image 100 is gone");
}

#[test]
fn nlvr2_runs_two_fused_forwards_into_its_head() {
    let device = Default::default();
    let _seeded = seeded(&device);
    let model = FiberModel::<A>::new(&config(), false, &device).unwrap();
    let (pixels, ids, mask) = data(&device);
    let feats = model.nlvr2_features(
        pixels.clone(),
        pixels.clone().flip([3]),
        ints(&ids, &device),
        ints(&mask, &device),
    );
    assert_eq!(feats.dims(), [BATCH, 4 * 32]);
    let head = ClassifierHead::<A>::nlvr2(64, 0.02, &device);
    let labels = Tensor::<A, 1, Int>::from_ints([0, 1, 1, 0], &device);
    let loss = head.nlvr2_loss(head.forward(feats), labels).into_scalar();
    assert!(
        (loss - 2f32.ln()).abs() < 0.1,
        "an untrained head is near chance: {loss}"
    );
}

#[test]
fn parameter_count_of_the_fiber_base_pretraining_model_matches_the_documented_count() {
    let device = Default::default();
    let _seeded = seeded(&device);
    let model =
        FiberModel::<NdArray>::new(&FiberConfig::fiber_base_384(), false, &Default::default())
            .unwrap();
    // docs/model.md §6.1: 281,897,191, which counts rank_output (1,537: a copy of itm_score row 1, not
    // kept) and the never-used cross-attention LayerNorms and unfused-layer gates (9,222).
    assert_eq!(model.num_params(), 281_897_191 - 1_537 - 9_222);
}
