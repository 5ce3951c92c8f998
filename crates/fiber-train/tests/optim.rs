//! The optimiser against hand computation of HuggingFace's AdamW, its parameter groups, clipping,
//! accumulation and an exact restore of its state.

use burn::backend::{Autodiff, NdArray};
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::optim::GradientsParams;
use burn::prelude::*;
use fiber_core::norm::LayerNorm;
use fiber_core::weights::{visit_layer_norm, visit_linear, WeightVisitor};
use fiber_train::model_io::VisitWeights;
use fiber_train::optim::{
    linear_schedule, AdamW, AdamWConfig, GradientCollector, KeyedGradients, ParamGroups,
};
use fiber_train::step::{read_step_scalars, StepAccumulator, StepLoss};

type Ad = Autodiff<NdArray>;
type Inner = NdArray;

#[derive(Module, Debug)]
struct Tiny<B: Backend> {
    cross_modal_text_transform: Linear<B>,
    norm: LayerNorm<B>,
}

impl<B: Backend> Tiny<B> {
    fn new(device: &B::Device) -> Self {
        let mut linear = LinearConfig::new(3, 2).init(device);
        linear.weight = burn::module::Param::from_tensor(Tensor::from_floats(
            [[0.1, -0.2], [0.3, 0.4], [-0.5, 0.6]],
            device,
        ));
        linear.bias = Some(burn::module::Param::from_tensor(Tensor::from_floats(
            [0.05, -0.05],
            device,
        )));
        Self {
            cross_modal_text_transform: linear,
            norm: fiber_core::init::layer_norm(2, 1e-5, device),
        }
    }

    fn visit_weights<V: WeightVisitor<B>>(&mut self, v: &mut V) {
        visit_linear(
            v,
            "cross_modal_text_transform",
            &mut self.cross_modal_text_transform,
        );
        visit_layer_norm(v, "norm", &mut self.norm);
    }

    fn loss(&self, x: Tensor<B, 2>) -> Tensor<B, 1> {
        self.norm
            .forward(self.cross_modal_text_transform.forward(x))
            .powf_scalar(2.0)
            .mul_scalar(0.5)
            .sum()
            + self.cross_modal_text_transform.weight.val().sum()
    }
}

fn gradients(model: &mut Tiny<Ad>, x: [[f32; 3]; 2]) -> KeyedGradients<Inner> {
    let device = Default::default();
    let loss = model.loss(Tensor::from_floats(x, &device));
    let mut grads = GradientsParams::from_grads(loss.backward(), model);
    let mut collector = GradientCollector::new(&mut grads);
    model.visit_weights(&mut collector);
    collector.finish()
}

fn values<const D: usize>(t: Tensor<Ad, D>) -> Vec<f32> {
    t.into_data().to_vec::<f32>().unwrap()
}

#[test]
fn one_step_matches_huggingface_adamw_by_hand() {
    let mut model = Tiny::<Ad>::new(&Default::default());
    let before = values(model.cross_modal_text_transform.weight.val());
    let bias_before = values(
        model
            .cross_modal_text_transform
            .bias
            .as_ref()
            .unwrap()
            .val(),
    );
    let grads = gradients(&mut model, [[1.0, 2.0, 3.0], [-1.0, 0.5, 0.0]]);
    let keys: Vec<&str> = grads.keys().collect();
    assert_eq!(
        keys,
        vec![
            "cross_modal_text_transform.bias",
            "cross_modal_text_transform.weight",
            "norm.bias",
            "norm.weight"
        ]
    );
    // The gradient of the weight, read through the module for the hand computation.
    let device = Default::default();
    let reference = Tiny::<Ad>::new(&device);
    let loss = reference.loss(Tensor::from_floats(
        [[1.0, 2.0, 3.0], [-1.0, 0.5, 0.0]],
        &device,
    ));
    let g = loss.backward();
    let gw: Vec<f32> = reference
        .cross_modal_text_transform
        .weight
        .val()
        .grad(&g)
        .unwrap()
        .into_data()
        .to_vec()
        .unwrap();
    let gb: Vec<f32> = reference
        .cross_modal_text_transform
        .bias
        .as_ref()
        .unwrap()
        .val()
        .grad(&g)
        .unwrap()
        .into_data()
        .to_vec()
        .unwrap();

    let config = AdamWConfig::new();
    let mut optimizer = AdamW::<Inner>::new(config.clone(), ParamGroups::fiber(5.0));
    let mut update = optimizer.begin_step(1e-3, grads).unwrap();
    model.visit_weights(&mut update);
    let info = update.finish().unwrap();
    assert_eq!(info.updated, 4);
    // HF AdamW, step 1: m = (1-β1) g, v = (1-β2) g², step = lr·sqrt(1-β2)/(1-β1), p -= step·m/(sqrt v + ε),
    // then p -= lr·wd·p for decayed parameters. `cross_modal` gets lr × 5; `bias` no decay.
    let hand = |p: f32, g: f32, decay: bool| -> f32 {
        let (b1, b2, eps, lr) = (0.9f64, 0.98f64, 1e-8f64, 5e-3f64);
        let (m, v) = ((1.0 - b1) * g as f64, (1.0 - b2) * (g as f64).powi(2));
        let step = lr * (1.0 - b2).sqrt() / (1.0 - b1);
        let mut p = p as f64 - step * m / (v.sqrt() + eps);
        if decay {
            p -= lr * 0.01 * p;
        }
        p as f32
    };
    let after = values(model.cross_modal_text_transform.weight.val());
    for i in 0..6 {
        assert!(
            (after[i] - hand(before[i], gw[i], true)).abs() < 1e-6,
            "weight {i}: {} vs {}",
            after[i],
            hand(before[i], gw[i], true)
        );
    }
    let bias_after = values(
        model
            .cross_modal_text_transform
            .bias
            .as_ref()
            .unwrap()
            .val(),
    );
    for i in 0..2 {
        assert!((bias_after[i] - hand(bias_before[i], gb[i], false)).abs() < 1e-6);
    }
}

#[test]
fn groups_follow_the_original_rules() {
    let groups = ParamGroups::fiber(50.0);
    assert!(!groups.decays("text_transformer.encoder.layer.3.attention.output.LayerNorm.weight"));
    assert!(!groups.decays("vit_model.layers.2.blocks.5.attn.relative_position_bias_table"));
    assert!(!groups.decays("vit_model.layers.0.blocks.0.norm1.weight"));
    assert!(groups.decays("temp") && groups.decays("vit_model.layers.2.blocks.5.alpha_i2t"));
    assert_eq!(groups.multiplier("vqa_classifier.0.weight"), 50.0);
    assert_eq!(
        groups.multiplier("cross_modal_image_pooler.dense.weight"),
        5.0
    );
    assert_eq!(
        groups.multiplier("text_transformer.encoder.layer.8.crossattention_t2i.self.query.weight"),
        5.0
    );
    assert_eq!(
        groups.multiplier("vit_model.layers.2.blocks.5.attn.qkv.weight"),
        1.0
    );
    assert_eq!(groups.multiplier("temp"), 1.0);
}

#[test]
fn clipping_accumulation_and_a_restored_state_give_identical_updates() {
    let device = Default::default();
    let x1 = [[1.0, 2.0, 3.0], [-1.0, 0.5, 0.0]];
    let x2 = [[0.5, -2.0, 1.0], [2.0, 0.0, -1.0]];
    let config = AdamWConfig::new().with_max_grad_norm(Some(0.5));

    // Accumulating two micro-batches and halving equals the mean of their gradients.
    let mut model = Tiny::<Ad>::new(&device);
    let mut acc = gradients(&mut model, x1);
    acc.accumulate(gradients(&mut model, x2));
    acc.scale(0.5);
    let norm = acc.global_norm();
    assert!(norm > 0.5, "the test needs clipping to act: {norm}");

    let mut a = AdamW::<Inner>::new(config.clone(), ParamGroups::fiber(5.0));
    let mut update = a.begin_step(1e-2, acc).unwrap();
    model.visit_weights(&mut update);
    let info = update.finish().unwrap();
    assert!((info.clip_factor * info.grad_norm - 0.5).abs() < 1e-5);

    // Save, restore into a fresh optimiser, and take the same second step with both.
    let state = a.state();
    let mut b = AdamW::<Inner>::new(config, ParamGroups::fiber(5.0));
    b.load_state(&state, &device).unwrap();
    assert_eq!(b.steps(), 1);
    let mut twin = Tiny::<Ad>::new(&device);
    twin = twin.load_record(model.clone().into_record());
    for (optimizer, m) in [(&mut a, &mut model), (&mut b, &mut twin)] {
        let g = gradients(m, x2);
        let mut update = optimizer.begin_step(1e-2, g).unwrap();
        m.visit_weights(&mut update);
        update.finish().unwrap();
    }
    assert_eq!(
        values(model.cross_modal_text_transform.weight.val()),
        values(twin.cross_modal_text_transform.weight.val())
    );
    assert_eq!(
        values(model.norm.gamma.val()),
        values(twin.norm.gamma.val())
    );
}

#[test]
fn non_finite_gradients_stop_the_step() {
    let mut model = Tiny::<Ad>::new(&Default::default());
    let grads = gradients(&mut model, [[f32::NAN, 0.0, 0.0], [0.0, 0.0, 0.0]]);
    let mut optimizer = AdamW::<Inner>::new(AdamWConfig::new(), ParamGroups::fiber(5.0));
    let err = optimizer
        .begin_step(1e-3, grads)
        .err()
        .expect("NaN gradients are refused");
    assert!(err.to_string().contains("non-finite"), "{err}");
    assert_eq!(optimizer.steps(), 0);
}

#[test]
fn the_schedule_warms_up_then_decays_linearly() {
    let lr = |s| linear_schedule(s, 100, 10, 1.0);
    assert_eq!(lr(0), 0.0);
    assert!((lr(5) - 0.5).abs() < 1e-12);
    assert!((lr(10) - 1.0).abs() < 1e-12);
    assert!((lr(55) - 0.5).abs() < 1e-12);
    assert_eq!(lr(100), 0.0);
}

/// `steps` updates of `model` at base rate `lr` with `optimizer`, always on the same input.
fn train(model: &mut Tiny<Ad>, optimizer: &mut AdamW<Inner>, lr: f64, steps: usize) {
    for _ in 0..steps {
        let grads = gradients(model, [[1.0, 2.0, 3.0], [-1.0, 0.5, 0.0]]);
        let mut update = optimizer.begin_step(lr, grads).unwrap();
        model.visit_weights(&mut update);
        update.finish().unwrap();
    }
}

#[test]
fn master_weights_keep_updates_that_the_parameter_type_rounds_away() {
    use burn::tensor::{DType, FloatDType};
    // Where the parameters are in the backend's full precision there are no master weights.
    assert_eq!(
        AdamW::<Inner>::new(AdamWConfig::new(), ParamGroups::fiber(5.0)).master_weights(),
        None
    );
    // The same mechanism that keeps f32 masters for f16/bf16 parameters, one level up: f64
    // masters for f32 parameters. The LayerNorm weight starts at 1, where an f32 ulp is
    // 1.2e-7; Adam moves it by about lr = 2e-8 per step, which rounds back to 1 every time.
    let lr = 2e-8;
    let steps = 20;
    let mut plain = Tiny::<Ad>::new(&Default::default());
    let mut plain_optimizer = AdamW::<Inner>::new(AdamWConfig::new(), ParamGroups::fiber(5.0));
    train(&mut plain, &mut plain_optimizer, lr, steps);
    assert!(values(plain.norm.gamma.val()).iter().all(|&g| g == 1.0));

    let mut mixed = Tiny::<Ad>::new(&Default::default());
    let mut optimizer = AdamW::<Inner>::new(AdamWConfig::new(), ParamGroups::fiber(5.0))
        .with_master_weights(Some(FloatDType::F64));
    train(&mut mixed, &mut optimizer, lr, steps);
    // The parameters stay in their own type; the masters have accumulated 20 steps.
    assert_eq!(mixed.norm.gamma.val().dtype(), DType::F32);
    let gamma = values(mixed.norm.gamma.val());
    for g in &gamma {
        let moved = (1.0 - *g as f64).abs();
        assert!(
            moved > 2e-7 && moved < 6e-7,
            "moved {moved} after {steps} steps of about {lr}"
        );
    }
    // Elsewhere the result is the plain optimiser's up to f32 rounding.
    let a = values(mixed.cross_modal_text_transform.weight.val());
    let b = values(plain.cross_modal_text_transform.weight.val());
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() < 1e-6, "{x} vs {y}");
    }
    // A parameter changed outside the optimiser (as the temperature clamp does) wins over its
    // master, which would otherwise write its own value back.
    let id = mixed.norm.gamma.id;
    let clamped = Tensor::<Ad, 1>::from_floats([0.5, 0.5], &Default::default());
    mixed.norm.gamma = burn::module::Param::initialized(id, clamped.require_grad());
    train(&mut mixed, &mut optimizer, lr, 1);
    for g in values(mixed.norm.gamma.val()) {
        assert!((g - 0.5).abs() < 1e-6, "{g}");
    }
    // The masters are part of the saved state and come back with it.
    let state = optimizer.state();
    assert!(state.names().any(|n| n == "master.norm.weight"));
    let mut restored = AdamW::<Inner>::new(AdamWConfig::new(), ParamGroups::fiber(5.0))
        .with_master_weights(Some(FloatDType::F64));
    restored.load_state(&state, &Default::default()).unwrap();
    let again = restored.state();
    for name in [
        "master.norm.weight",
        "master.cross_modal_text_transform.weight",
    ] {
        assert_eq!(
            again.get(name).unwrap().as_f32(),
            state.get(name).unwrap().as_f32(),
            "{name}"
        );
    }
}

/// One step of `model` with `optimizer` on the toy loss times `loss_factor`, scaled as the
/// optimiser asks.
fn scaled_step(
    model: &mut Tiny<Ad>,
    optimizer: &mut AdamW<Inner>,
    loss_factor: f64,
) -> fiber_train::optim::StepInfo {
    let device = Default::default();
    let loss = model
        .loss(Tensor::from_floats(
            [[1.0, 2.0, 3.0], [-1.0, 0.5, 0.0]],
            &device,
        ))
        .mul_scalar(loss_factor);
    let mut grads = GradientsParams::from_grads(optimizer.scale_loss(loss).backward(), model);
    let mut collector = GradientCollector::new(&mut grads);
    model.visit_weights(&mut collector);
    let mut update = optimizer.begin_step(1e-3, collector.finish()).unwrap();
    model.visit_weights(&mut update);
    update.finish().unwrap()
}

#[test]
fn loss_scaling_unscales_the_gradients_and_skips_steps_that_overflow() {
    // f32 parameters have no loss scaling unless asked for.
    let fresh = AdamW::<Inner>::new(AdamWConfig::new(), ParamGroups::fiber(5.0));
    assert_eq!(fresh.loss_scale(), None);
    let mut plain = Tiny::<Ad>::new(&Default::default());
    let mut plain_optimizer = AdamW::<Inner>::new(AdamWConfig::new(), ParamGroups::fiber(5.0));
    let plain_info = scaled_step(&mut plain, &mut plain_optimizer, 1.0);

    // A scale of 1024: the same update and gradient norm.
    let mut scaled = Tiny::<Ad>::new(&Default::default());
    let mut optimizer = AdamW::<Inner>::new(AdamWConfig::new(), ParamGroups::fiber(5.0))
        .with_loss_scaling(Some(1024.0));
    let info = scaled_step(&mut scaled, &mut optimizer, 1.0);
    assert!(!info.skipped);
    assert!((info.grad_norm - plain_info.grad_norm).abs() < 1e-4 * plain_info.grad_norm);
    let a = values(scaled.cross_modal_text_transform.weight.val());
    let b = values(plain.cross_modal_text_transform.weight.val());
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() < 1e-6, "{x} vs {y}");
    }

    // A scale of 1e38 on a loss ten times larger overflows f32 (the weight-sum term alone
    // back-propagates 1e39 to every weight): the step is skipped, nothing moves, the scale
    // halves and the optimiser's step count (its bias correction) stays.
    let mut overflowing = Tiny::<Ad>::new(&Default::default());
    let before = values(overflowing.cross_modal_text_transform.weight.val());
    let mut optimizer = AdamW::<Inner>::new(AdamWConfig::new(), ParamGroups::fiber(5.0))
        .with_loss_scaling(Some(1e38));
    let info = scaled_step(&mut overflowing, &mut optimizer, 10.0);
    assert!(info.skipped && info.updated == 0);
    assert_eq!(
        values(overflowing.cross_modal_text_transform.weight.val()),
        before
    );
    assert_eq!(optimizer.loss_scale(), Some(5e37));
    assert_eq!(optimizer.steps(), 0);
    // The scale is part of the saved state.
    let state = optimizer.state();
    let mut restored = AdamW::<Inner>::new(AdamWConfig::new(), ParamGroups::fiber(5.0))
        .with_loss_scaling(Some(1.0));
    restored.load_state(&state, &Default::default()).unwrap();
    assert_eq!(restored.loss_scale(), Some(5e37f32 as f64));
}

#[test]
fn the_step_scalars_come_back_together_and_match_separate_reads() {
    let device = Default::default();
    let mut model = Tiny::<Ad>::new(&device);
    let grads = gradients(&mut model, [[1.0, 2.0, 3.0], [-1.0, 0.5, 0.0]]);
    let expected_norm = grads.global_norm();
    let optimizer = AdamW::<Inner>::new(AdamWConfig::new(), ParamGroups::fiber(5.0));
    let prepared = optimizer.prepare(grads);
    let loss = Tensor::<Inner, 1>::from_floats([2.5], &device);
    let parts = [
        ("itc", Tensor::<Inner, 1>::from_floats([1.5], &device)),
        ("mlm", Tensor::<Inner, 1>::from_floats([1.0], &device)),
    ];
    let scalars = read_step_scalars(loss, &parts, &prepared).unwrap();
    assert_eq!(scalars.loss, 2.5);
    assert_eq!(scalars.parts, vec![("itc", 1.5), ("mlm", 1.0)]);
    assert!(expected_norm > 0.1);
    assert!((scalars.grad_norm - expected_norm).abs() < 1e-6 * expected_norm);

    // A non-finite loss comes back as such; the update is then the caller's to refuse.
    let nan = Tensor::<Inner, 1>::from_floats([f32::NAN], &device);
    assert!(read_step_scalars(nan, &[], &prepared)
        .unwrap()
        .loss
        .is_nan());
}

impl<B: Backend> VisitWeights<B> for Tiny<B> {
    fn visit_weights_with<V: WeightVisitor<B>>(&mut self, v: &mut V) {
        self.visit_weights(v);
    }
}

#[test]
fn accumulated_micro_batches_average_their_losses_parts_and_gradients() {
    let device = Default::default();
    let inputs = [
        [[1.0, 2.0, -1.0], [0.5, -0.3, 2.0]],
        [[-2.0, 0.1, 0.7], [1.5, 1.0, -0.4]],
    ];
    let optimizer = AdamW::<Inner>::new(AdamWConfig::new(), ParamGroups::fiber(5.0));
    let mut model = Tiny::<Ad>::new(&device);
    let mut accumulator = StepAccumulator::<Ad>::default();
    let mut losses = Vec::new();
    for x in inputs {
        let loss = model.loss(Tensor::from_floats(x, &device));
        losses.push(loss.clone().into_scalar() as f64);
        let part = loss.clone().inner().mul_scalar(2.0);
        accumulator.add(
            &mut model,
            &optimizer,
            StepLoss {
                loss,
                parts: vec![("double", part)],
            },
        );
    }
    let (scalars, _) = accumulator.prepare(&optimizer).read().unwrap();
    let mean = (losses[0] + losses[1]) / 2.0;
    assert!(
        (scalars.loss - mean).abs() < 1e-5,
        "{} vs {mean}",
        scalars.loss
    );
    assert_eq!(scalars.parts.len(), 1);
    assert!(
        (scalars.parts[0].1 - 2.0 * mean).abs() < 1e-5,
        "{:?}",
        scalars.parts
    );
    // The norm is that of the mean gradient, not of the sum.
    let mut by_hand = gradients(&mut model, inputs[0]);
    by_hand.accumulate(gradients(&mut model, inputs[1]));
    by_hand.scale(0.5);
    let expected = by_hand.global_norm();
    assert!(
        (scalars.grad_norm - expected).abs() < 1e-5 * expected,
        "{} vs {expected}",
        scalars.grad_norm
    );
}
