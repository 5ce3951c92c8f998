//! The grounding detector against a PyTorch reference written from docs/model.md §5
//! (`scripts/detector_fixtures.py`): every output at batch 2 (one caption padded) and batch 1,
//! the clean offset variant, the backbone with every gate at 0 against the uni-modal backbones,
//! the original checkpoint layout, the upsampling's gradient, and a gradient for every
//! parameter.

use std::path::PathBuf;

use burn::backend::{Autodiff, NdArray};
use burn::module::Param;
use burn::prelude::*;
use burn::tensor::{Distribution, TensorData};
use fiber_core::resample::resize_bilinear_aligned;
use fiber_core::weights::{GradientCensus, Layout, WeightVisitor};
use fiber_core::TensorStore;
use fiber_heads::grounding::weights::{read_detector_store, WeightCopy};
use fiber_heads::grounding::{DetectorConfig, DetectorOutput, GroundingDetector};

type B = NdArray<f32>;
type A = Autodiff<B>;
const TOLERANCE: f32 = 1e-4;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/detector/tiny")
}

fn store(name: &str) -> TensorStore {
    TensorStore::read_safetensors(dir().join(name)).unwrap()
}

fn float<BE: Backend, const D: usize>(store: &TensorStore, name: &str) -> Tensor<BE, D> {
    let t = store.get(name).unwrap_or_else(|| panic!("{name} missing"));
    Tensor::from_data(
        TensorData::new(t.as_f32().unwrap().to_vec(), t.shape.clone()),
        &Default::default(),
    )
}

fn int<BE: Backend>(store: &TensorStore, name: &str) -> Tensor<BE, 2, Int> {
    let t = store.get(name).unwrap();
    Tensor::from_data(
        TensorData::new(t.as_i64().unwrap().to_vec(), t.shape.clone()),
        &Default::default(),
    )
}

fn detector<BE: Backend>() -> GroundingDetector<BE> {
    let config = DetectorConfig::load_json(dir().join("config.json")).unwrap();
    let mut model = GroundingDetector::<BE>::new(&config, &Default::default()).unwrap();
    let weights =
        read_detector_store(&dir().join("fiber_detector_tiny.pth"), WeightCopy::Model).unwrap();
    model.load_store(weights).unwrap();
    model
}

fn run<BE: Backend>(model: &GroundingDetector<BE>, case: &str) -> DetectorOutput<BE> {
    let input = store(&format!("input_{case}.safetensors"));
    model.forward(
        float(&input, "pixel_values"),
        int(&input, "input_ids"),
        int(&input, "attention_mask"),
    )
}

fn error_of<const D: usize>(name: &str, actual: Tensor<B, D>, expected: &TensorStore) -> f32 {
    let reference = expected
        .get(name)
        .unwrap_or_else(|| panic!("{name} missing"));
    assert_eq!(actual.dims().to_vec(), reference.shape, "{name}");
    fiber_core::compare::max_abs_diff(
        &actual.into_data().into_vec::<f32>().unwrap(),
        reference.as_f32().unwrap(),
    )
}

/// Every output of `output` against the reference; returns the largest error per output kind.
fn compare_all(output: DetectorOutput<B>, expected: &TensorStore) -> Vec<(String, f32)> {
    let mut worst: Vec<(String, f32)> = Vec::new();
    let mut note = |kind: &str, err: f32| match worst.iter_mut().find(|(k, _)| k == kind) {
        Some((_, e)) => *e = e.max(err),
        None => worst.push((kind.to_string(), err)),
    };
    for l in 0..output.fpn.len() {
        note(
            "fpn",
            error_of(&format!("fpn.{l}"), output.fpn[l].clone(), expected),
        );
        note(
            "tower",
            error_of(&format!("tower.{l}"), output.tower[l].clone(), expected),
        );
        note(
            "bbox_reg",
            error_of(
                &format!("bbox_reg.{l}"),
                output.bbox_reg[l].clone(),
                expected,
            ),
        );
        note(
            "centerness",
            error_of(
                &format!("centerness.{l}"),
                output.centerness[l].clone(),
                expected,
            ),
        );
        note(
            "logits",
            error_of(&format!("logits.{l}"), output.logits[l].clone(), expected),
        );
        let anchors: Vec<f32> = output.anchors[l].iter().flatten().copied().collect();
        let n = output.anchors[l].len();
        let anchors =
            Tensor::<B, 2>::from_data(TensorData::new(anchors, [n, 4]), &Default::default());
        note(
            "anchors",
            error_of(&format!("anchors.{l}"), anchors, expected),
        );
    }
    note(
        "text_hidden",
        error_of("text_hidden", output.text_hidden, expected),
    );
    worst
}

fn assert_close(case: &str, worst: &[(String, f32)]) {
    for (kind, err) in worst {
        println!("{case} {kind}: max abs error {err:.3e}");
        assert!(*err <= TOLERANCE, "{case} {kind}: {err}");
    }
}

#[test]
fn every_output_matches_the_pytorch_reference_at_batch_two_and_one() {
    let model = detector::<B>();
    for case in ["batch2", "batch1"] {
        let output = run(&model, case);
        assert_eq!(output.fpn.len(), 5);
        let worst = compare_all(output, &store(&format!("expected_{case}.safetensors")));
        assert_close(case, &worst);
    }
}

#[test]
fn offsets_computed_per_level_match_the_clean_reference_and_differ_from_the_original() {
    let mut model = detector::<B>();
    let original = run(&model, "batch2");
    for block in &mut model.tower.blocks {
        block.reuse_level_offsets = false;
    }
    let clean = run(&model, "batch2");
    let expected = store("expected_batch2_clean_offsets.safetensors");
    for l in 0..5 {
        let err = error_of(&format!("tower.{l}"), clean.tower[l].clone(), &expected);
        println!("clean tower.{l}: max abs error {err:.3e}");
        assert!(err <= TOLERANCE, "clean tower.{l}: {err}");
    }
    // The finest level reads level 1's offsets in the original; the variants must differ there.
    let change: f32 = (original.tower[0].clone() - clean.tower[0].clone())
        .abs()
        .max()
        .into_scalar();
    assert!(change > 1e-2, "reusing offsets changed nothing ({change})");
}

/// Sets every fusion gate of the detector's backbone to `value`.
fn set_gates<BE: Backend>(model: &mut GroundingDetector<BE>, value: f32) {
    let device = Default::default();
    for m in &mut model.backbone.fused.i2t {
        m.alpha_i2t = Param::from_tensor(Tensor::full([1], value, &device));
    }
    for m in &mut model.backbone.fused.t2i {
        m.alpha_t2i = Param::from_tensor(Tensor::full([1], value, &device));
    }
}

#[test]
fn with_every_gate_at_zero_the_backbone_is_the_unimodal_swin_and_roberta() {
    let mut model = detector::<B>();
    set_gates(&mut model, 0.0);
    let input = store("input_batch2.safetensors");
    let features = model.backbone.forward(
        float(&input, "pixel_values"),
        int(&input, "input_ids"),
        int(&input, "attention_mask"),
    );
    let expected = store("expected_batch2_unimodal.safetensors");
    for (i, map) in features.maps.into_iter().enumerate() {
        let err = error_of(&format!("c.{i}"), map, &expected);
        assert!(err <= TOLERANCE, "C{}: {err}", i + 3);
    }
    let err = error_of("text_hidden", features.text, &expected);
    assert!(err <= TOLERANCE, "text: {err}");
}

#[test]
fn the_original_checkpoint_loads_with_only_its_buffers_skipped() {
    let config = DetectorConfig::load_json(dir().join("config.json")).unwrap();
    let mut model = GroundingDetector::<B>::new(&config, &Default::default()).unwrap();
    let weights =
        read_detector_store(&dir().join("fiber_detector_tiny.pth"), WeightCopy::Model).unwrap();
    let report = model.load_store(weights).unwrap();
    let mut skipped = report.skipped_keys();
    skipped.sort();
    let mut expected: Vec<String> =
        vec!["fusion_backbone.language_backbone.body.model.embeddings.position_ids".into()];
    for (s, depth) in [1usize, 1, 2, 1].iter().enumerate() {
        for b in 0..*depth {
            expected.push(format!(
                "fusion_backbone.backbone.body.layers.{s}.blocks.{b}.attn.relative_position_index"
            ));
        }
    }
    expected.extend((0..5).map(|l| format!("rpn.anchor_generator.cell_anchors.{l}")));
    expected.sort();
    assert_eq!(skipped, expected);
    assert!(report.initialised.is_empty(), "{:?}", report.initialised);
    // A key the model does not have, and a wrong shape, are named.
    let mut weights =
        read_detector_store(&dir().join("fiber_detector_tiny.pth"), WeightCopy::Model).unwrap();
    weights.insert(
        "rpn.head.extra.weight",
        fiber_core::StoredTensor::f32(vec![1], vec![0.0]),
    );
    weights.insert(
        "rpn.head.bias_lang",
        fiber_core::StoredTensor::f32(vec![3], vec![0.0; 3]),
    );
    let err = model.load_store(weights).unwrap_err().to_string();
    assert!(err.contains("rpn.head.extra.weight"), "{err}");
    assert!(
        err.contains("rpn.head.bias_lang") && err.contains("[16]") && err.contains("[3]"),
        "{err}"
    );
    // There is no EMA copy in this checkpoint: reading one says so.
    let err =
        read_detector_store(&dir().join("fiber_detector_tiny.pth"), WeightCopy::Ema).unwrap_err();
    assert!(err.to_string().contains("model_ema"), "{err}");
}

#[test]
fn bilinear_upsampling_and_its_gradient_match_pytorch() {
    let fixture = store("upsample.safetensors");
    let x = float::<A, 4>(&fixture, "x").require_grad();
    let y = resize_bilinear_aligned(x.clone(), (6, 9));
    let err = error_of("y", y.clone().inner(), &fixture);
    assert!(err <= TOLERANCE, "upsampling: {err}");
    let grads = (y * float::<A, 4>(&fixture, "weight")).sum().backward();
    let err = error_of("grad", x.grad(&grads).unwrap(), &fixture);
    assert!(err <= TOLERANCE, "gradient: {err}");
}

#[test]
fn every_parameter_but_the_unused_class_convolution_gets_a_gradient() {
    let mut model = detector::<A>();
    let output = run(&model, "batch2");
    let device = Default::default();
    let weigh = |t: Tensor<A, 4>| {
        let w = Tensor::<A, 4>::random(t.dims(), Distribution::Normal(0.0, 1.0), &device);
        (t * w).sum()
    };
    let mut loss = weigh(output.text_hidden.unsqueeze::<4>());
    for l in 0..output.fpn.len() {
        loss = loss
            + weigh(output.bbox_reg[l].clone())
            + weigh(output.centerness[l].clone())
            + weigh(output.logits[l].clone().unsqueeze::<4>());
    }
    let grads = loss.backward();
    let mut check = GradientCensus::<A>::new(&grads);
    model.visit_weights(&mut check);
    assert!(
        check.checked > 150,
        "only {} parameters visited",
        check.checked
    );
    let missing: Vec<&String> = check
        .without_gradient
        .iter()
        .filter(|k| !k.starts_with("rpn.head.cls_logits."))
        .collect();
    assert!(missing.is_empty(), "no gradient for {missing:?}");
}

/// Counts every visited parameter's elements and the keys visited twice.
#[derive(Default)]
struct Census {
    elements: usize,
    keys: std::collections::BTreeSet<String>,
    repeated: Vec<String>,
}

impl WeightVisitor<B> for Census {
    fn visit<const D: usize>(&mut self, key: &str, param: &mut Param<Tensor<B, D>>, _: Layout) {
        self.elements += param.lazy_shape().num_elements();
        if !self.keys.insert(key.to_string()) {
            self.repeated.push(key.to_string());
        }
    }
}

fn census(model: &mut GroundingDetector<B>) -> Census {
    let mut census = Census::default();
    model.visit_weights(&mut census);
    assert!(
        census.repeated.is_empty(),
        "visited twice: {:?}",
        census.repeated
    );
    census
}

#[test]
fn the_walk_reaches_every_parameter_but_the_unused_final_swin_norm() {
    let mut model = detector::<B>();
    let walked = census(&mut model).elements;
    // The Swin module keeps the coarse model's final LayerNorm, which the detector never runs
    // and its checkpoints do not hold (2 × 64 values in this configuration).
    assert_eq!(walked, model.num_params() - 2 * 64);
}

#[test]
fn fiber_base_detector_has_the_original_parameter_count() {
    let mut model =
        GroundingDetector::<B>::new(&DetectorConfig::fiber_base(), &Default::default()).unwrap();
    let walked = census(&mut model);
    // docs/model.md §6.1: 252,055,304 in the original module definitions.
    assert_eq!(walked.elements, 252_055_304);
    assert!(walked
        .keys
        .contains("rpn.head.dyhead_tower.5.DyConv.2.conv.weight"));
    assert!(walked
        .keys
        .contains("fusion_backbone.backbone.fpn.top_blocks.p7.bias"));
    assert!(walked
        .keys
        .contains("fusion_backbone.backbone.body.norm3.weight"));
}

#[test]
fn a_detector_starts_from_a_coarse_checkpoint_by_the_longest_suffix_rule() {
    use fiber_fusion::{FiberConfig, FusionVersion};
    let coarse_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/fusion/tiny");
    let mut backbone = FiberConfig::load_json(coarse_dir.join("config.json"))
        .unwrap()
        .with_fusion_version(FusionVersion::V2);
    backbone.swin.clamp_window = false;
    let config = DetectorConfig::new(backbone)
        .with_channels(8)
        .with_group_norm_groups(2)
        .with_num_dyhead_blocks(1);
    let mut model = GroundingDetector::<B>::new(&config, &Default::default()).unwrap();
    let coarse = TensorStore::read_pytorch(coarse_dir.join("fiber_tiny.ckpt"), None).unwrap();
    let qkv = coarse
        .get("vit_model.layers.1.blocks.1.attn.qkv.weight")
        .unwrap()
        .clone();
    let transfer = model.init_from_coarse(coarse);

    let from = |key: &str| {
        transfer
            .transferred
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, source)| source.as_str())
    };
    assert_eq!(
        from("fusion_backbone.backbone.body.layers.1.blocks.1.attn.qkv.weight"),
        Some("layers.1.blocks.1.attn.qkv.weight")
    );
    assert_eq!(
        from("fusion_backbone.language_backbone.body.model.encoder.layer.3.crossattention_t2i.self.key.weight"),
        Some("encoder.layer.3.crossattention_t2i.self.key.weight")
    );
    assert_eq!(
        from("fusion_backbone.backbone.body.layers.2.blocks.0.attn.alpha_i2t"),
        Some("layers.2.blocks.0.attn.alpha_i2t")
    );
    // The values arrive in Burn's layout (a Linear weight transposed back).
    let ours = model.backbone.fused.vit_model.layers[1].blocks[1]
        .attn
        .qkv
        .weight
        .val();
    let ours: Vec<f32> = ours.transpose().into_data().into_vec().unwrap();
    assert_eq!(ours, qkv.as_f32().unwrap());
    // Stage norms, FPN and head start fresh; the final coarse norm does not match `norm3`.
    for key in [
        "fusion_backbone.backbone.body.norm1.weight",
        "fusion_backbone.backbone.body.norm2.bias",
        "fusion_backbone.backbone.fpn.fpn_inner2.weight",
        "rpn.head.dyhead_tower.0.offset.weight",
        "rpn.head.bias0",
    ] {
        assert!(
            transfer.fresh.iter().any(|k| k == key),
            "{key} should be fresh"
        );
    }
    assert!(
        transfer.shape_mismatch.is_empty(),
        "{:?}",
        transfer.shape_mismatch
    );
    for key in [
        "norm.weight",
        "itm_score.fc.weight",
        "layers.1.blocks.1.attn.norm_i2t_i.weight",
        "image_queue",
    ] {
        assert!(
            transfer.unused.iter().any(|k| k == key),
            "{key} should be unused"
        );
    }
    // Everything of the backbone but the stage norms came from the checkpoint.
    let backbone_fresh: Vec<&String> = transfer
        .fresh
        .iter()
        .filter(|k| {
            k.starts_with("fusion_backbone.") && !k.contains(".fpn.") && !k.contains("body.norm")
        })
        .collect();
    assert!(backbone_fresh.is_empty(), "{backbone_fresh:?}");
}

#[test]
fn the_detection_losses_fall_when_the_detector_trains_on_them() {
    use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
    use fiber_heads::grounding::atss::{DetectionLossConfig, ImageTargets};
    use fiber_heads::grounding::loss::batch_losses;

    let losses_dir = dir().join("../loss");
    let input = TensorStore::read_safetensors(losses_dir.join("input_batch2.safetensors")).unwrap();
    let (boxes, valid, map) = (
        input.get("gt_boxes").unwrap(),
        input.get("gt_valid").unwrap(),
        input.get("positive_map").unwrap(),
    );
    let [batch, max_boxes, len] = [map.shape[0], map.shape[1], map.shape[2]];
    let images = ImageTargets::from_padded(
        boxes.as_f32().unwrap(),
        valid.as_i64().unwrap(),
        map.as_f32().unwrap(),
        batch,
        max_boxes,
        len,
    );
    let config = DetectionLossConfig::new();
    let coder = DetectorConfig::load_json(dir().join("config.json"))
        .unwrap()
        .box_coder;
    // Each loss alone (0: grounding, 1: GIoU, 2: centerness above its floor) and the total.
    // Without DropBlock the steps are deterministic.
    let mut no_drop = DetectorConfig::load_json(dir().join("config.json")).unwrap();
    no_drop.drop_block = false;
    for objective in 0..4 {
        let mut model = GroundingDetector::<A>::new(&no_drop, &Default::default()).unwrap();
        model
            .load_store(
                read_detector_store(&dir().join("fiber_detector_tiny.pth"), WeightCopy::Model)
                    .unwrap(),
            )
            .unwrap();
        let mut optimizer = AdamWConfig::new().with_weight_decay(0.0).init();
        let mut values = Vec::new();
        for _ in 0..25 {
            let mask = int::<A>(&input, "attention_mask");
            let output = model.forward(
                float(&input, "pixel_values"),
                int(&input, "input_ids"),
                mask.clone(),
            );
            let (targets, losses) = batch_losses(&output, mask, &images, &config, &coder).unwrap();
            // The centerness loss cannot fall below the mean entropy of its soft targets.
            let floor: f32 = targets
                .centerness_targets
                .iter()
                .map(|&t| -(t * t.ln() + (1.0 - t) * (1.0 - t).ln()))
                .sum::<f32>()
                / targets.local_normalisers().num_pos;
            let (loss, offset) = match objective {
                0 => (losses.grounding.clone(), 0.0),
                1 => (losses.giou.clone(), 0.0),
                2 => (losses.centerness.clone(), floor),
                _ => (losses.total(&config), 0.0),
            };
            values.push(loss.clone().into_scalar() - offset);
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optimizer.step(1e-3, model, grads);
        }
        println!("objective {objective}: {values:?}");
        assert!(values.iter().all(|v| v.is_finite()));
        let (first, last) = (values[0], values[values.len() - 1]);
        assert!(
            last < 0.9 * first,
            "objective {objective} went from {first} to {last}"
        );
    }
}

#[test]
fn postprocessing_gives_the_reference_detections() {
    use fiber_heads::grounding::postprocess::{postprocess, PostProcessConfig};
    let expected: serde_json::Value =
        fiber_core::json::read_json(&dir().join("../postprocess/expected_batch2.json")).unwrap();
    let classes: Vec<Vec<usize>> = serde_json::from_value(expected["classes"].clone()).unwrap();
    let sizes: Vec<(usize, usize)> =
        serde_json::from_value(expected["image_sizes"].clone()).unwrap();
    let c = &expected["config"];
    let config = PostProcessConfig::new()
        .with_score_threshold(c["score_threshold"].as_f64().unwrap())
        .with_pre_nms_top_n(c["pre_nms_top_n"].as_u64().unwrap() as usize)
        .with_nms_threshold(c["nms_threshold"].as_f64().unwrap())
        .with_detections_per_image(c["detections_per_image"].as_u64().unwrap() as usize);
    let model = detector::<B>();
    let coder = DetectorConfig::load_json(dir().join("config.json"))
        .unwrap()
        .box_coder;
    let output = run(&model, "batch2");
    let ours = postprocess(&output, &classes, &sizes, &config, &coder);
    for (i, image) in expected["detections"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        let theirs = image.as_array().unwrap();
        assert_eq!(ours[i].len(), theirs.len(), "image {i}");
        assert!(!theirs.is_empty());
        // The same set (the order of equal scores is not defined).
        let mut unmatched = ours[i].clone();
        for d in theirs {
            let class = d["class"].as_u64().unwrap() as usize;
            let score = d["score"].as_f64().unwrap() as f32;
            let bbox: Vec<f32> = serde_json::from_value(d["bbox"].clone()).unwrap();
            let at = unmatched
                .iter()
                .position(|o| {
                    o.class == class
                        && (o.score - score).abs() <= 1e-6
                        && o.bbox.iter().zip(&bbox).all(|(a, b)| (a - b).abs() <= 1e-3)
                })
                .unwrap_or_else(|| panic!("image {i}: no detection like {d}"));
            unmatched.remove(at);
        }
    }
}

/// Compares each visited parameter's gradient with the fixture's `grad.{key}` (original layout).
struct GradientParity<'a> {
    grads: &'a <A as burn::tensor::backend::AutodiffBackend>::Gradients,
    expected: &'a TensorStore,
    worst: Vec<(String, f32, f32)>,
    /// Parameters with a gradient here but none in the reference.
    missing: Vec<String>,
    /// Parameters with a reference gradient but none here.
    ungraded: Vec<String>,
}

impl WeightVisitor<A> for GradientParity<'_> {
    fn visit<const D: usize>(
        &mut self,
        key: &str,
        param: &mut Param<Tensor<A, D>>,
        layout: Layout,
    ) {
        let Some(expected) = self.expected.get(&format!("grad.{key}")) else {
            // The reference has no gradient for parameters the loss does not reach (the
            // unused class convolution); neither may ours.
            let ours = param.val().grad(self.grads);
            if ours.is_some_and(|g| g.abs().max().into_scalar().elem::<f32>() > 0.0) {
                self.missing.push(key.to_string());
            }
            return;
        };
        let expected = expected.as_f32().unwrap();
        let Some(grad) = param.val().grad(self.grads) else {
            // The reference has a gradient here and we have none.
            self.ungraded.push(key.to_string());
            return;
        };
        let grad = match layout {
            Layout::Same => grad.reshape([-1]),
            Layout::Transposed => grad.reshape([0, -1]).transpose().reshape([-1]),
        };
        let actual = grad.into_data().to_vec::<f32>().unwrap();
        assert_eq!(actual.len(), expected.len(), "{key}: gradient size");
        let scale = expected.iter().fold(0f32, |m, v| m.max(v.abs()));
        let err = actual
            .iter()
            .zip(expected)
            .fold(0f32, |m, (a, e)| m.max((a - e).abs()));
        self.worst.push((key.to_string(), err, scale));
    }
}

#[test]
fn the_training_losses_gradient_matches_pytorch_for_every_parameter() {
    use fiber_heads::grounding::atss::{DetectionLossConfig, ImageTargets};
    use fiber_heads::grounding::loss::batch_losses;

    let losses_dir = dir().join("../loss");
    let input = TensorStore::read_safetensors(losses_dir.join("input_batch2.safetensors")).unwrap();
    let expected =
        TensorStore::read_safetensors(losses_dir.join("gradients_batch2.safetensors")).unwrap();
    let mut config = DetectorConfig::load_json(dir().join("config.json")).unwrap();
    // The reference runs the tower without DropBlock's random squares.
    config.drop_block = false;
    let mut model = GroundingDetector::<A>::new(&config, &Default::default()).unwrap();
    let weights =
        read_detector_store(&dir().join("fiber_detector_tiny.pth"), WeightCopy::Model).unwrap();
    model.load_store(weights).unwrap();

    let mask = int::<A>(&input, "attention_mask");
    let output = model.forward(
        float(&input, "pixel_values"),
        int(&input, "input_ids"),
        mask.clone(),
    );
    let shape = &input.get("positive_map").unwrap().shape;
    let (batch, max_boxes, len) = (shape[0], shape[1], shape[2]);
    let images = ImageTargets::from_padded(
        input.get("gt_boxes").unwrap().as_f32().unwrap(),
        input.get("gt_valid").unwrap().as_i64().unwrap(),
        input.get("positive_map").unwrap().as_f32().unwrap(),
        batch,
        max_boxes,
        len,
    );
    let loss_config = DetectionLossConfig::new();
    let (_, losses) =
        batch_losses(&output, mask, &images, &loss_config, &config.box_coder).unwrap();
    let total = losses.total(&loss_config);
    let value: f32 = total.clone().into_scalar().elem();
    let want = expected.get("loss.total").unwrap().as_f32().unwrap()[0];
    assert!(
        (value - want).abs() <= TOLERANCE,
        "total loss {value} vs {want}"
    );

    let grads = total.backward();
    let mut parity = GradientParity {
        grads: &grads,
        expected: &expected,
        worst: Vec::new(),
        missing: Vec::new(),
        ungraded: Vec::new(),
    };
    model.visit_weights(&mut parity);
    assert!(
        parity.missing.is_empty(),
        "no reference gradient: {:?}",
        parity.missing
    );
    assert!(
        parity.ungraded.is_empty(),
        "no gradient of ours where the reference has one: {:?}",
        parity.ungraded
    );
    assert!(
        parity.worst.len() > 150,
        "only {} parameters",
        parity.worst.len()
    );
    parity.worst.sort_by(|a, b| b.1.total_cmp(&a.1));
    for (key, err, scale) in parity.worst.iter().take(12) {
        eprintln!("{key}: max abs error {err:.3e} (largest gradient {scale:.3e})");
    }
    let bad: Vec<_> = parity
        .worst
        .iter()
        .filter(|(_, err, _)| *err > TOLERANCE)
        .collect();
    assert!(bad.is_empty(), "gradients off: {bad:?}");
}
