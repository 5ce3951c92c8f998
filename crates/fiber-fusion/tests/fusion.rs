//! The fusion backbone against a PyTorch reference written from docs/model.md
//! (`scripts/make_fixtures.py`), its α = 0 equivalence with the uni-modal backbones, its
//! gradients, the original checkpoint layout and the dual path's independence from fusion.

use std::path::PathBuf;

use burn::backend::{Autodiff, NdArray};
use burn::module::Param;
use burn::prelude::*;
use burn::tensor::TensorData;
use fiber_core::weights::{GradientCensus, Layout, WeightVisitor};
use fiber_core::{TensorStore, WeightCollector};
use fiber_fusion::weights::rank_output_warning;
use fiber_fusion::{FiberBackbone, FiberCheckpoint, FiberConfig};

type B = NdArray<f32>;
const TOLERANCE: f32 = 1e-4;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/fusion/tiny")
}

fn checkpoint() -> FiberCheckpoint {
    FiberCheckpoint::read(
        dir().join("fiber_tiny.ckpt"),
        Some(&dir().join("config.json")),
    )
    .unwrap()
}

struct Inputs<BE: Backend> {
    pixels: Tensor<BE, 4>,
    ids: Tensor<BE, 2, Int>,
    mask: Tensor<BE, 2, Int>,
}

fn inputs<BE: Backend>() -> Inputs<BE> {
    let store = TensorStore::read_safetensors(dir().join("input.safetensors")).unwrap();
    let device = Default::default();
    let p = store.get("pixel_values").unwrap();
    let int = |name: &str| {
        let t = store.get(name).unwrap();
        Tensor::<BE, 2, Int>::from_data(
            TensorData::new(t.as_i64().unwrap().to_vec(), t.shape.clone()),
            &device,
        )
    };
    Inputs {
        pixels: Tensor::from_data(
            TensorData::new(p.as_f32().unwrap().to_vec(), p.shape.clone()),
            &device,
        ),
        ids: int("input_ids"),
        mask: int("attention_mask"),
    }
}

fn expected() -> TensorStore {
    TensorStore::read_safetensors(dir().join("expected.safetensors")).unwrap()
}

fn max_err<const D: usize>(actual: Tensor<B, D>, reference: &[f32]) -> f32 {
    fiber_core::compare::max_abs_diff(&actual.into_data().into_vec::<f32>().unwrap(), reference)
}

fn assert_matches<const D: usize>(name: &str, actual: Tensor<B, D>, expected: &TensorStore) {
    let reference = expected.get(name).unwrap();
    assert_eq!(actual.dims().to_vec(), reference.shape, "{name}");
    let err = max_err(actual, reference.as_f32().unwrap());
    println!("{name}: max abs error {err:.3e}");
    assert!(err <= TOLERANCE, "{name}: {err}");
}

fn model() -> FiberBackbone<B> {
    checkpoint().backbone::<B>(&Default::default()).unwrap().0
}

#[test]
fn one_fused_pair_and_the_whole_forward_match_the_pytorch_reference() {
    let model = model();
    let x = inputs::<B>();
    let expected = expected();
    let image = model.image_prefix(x.pixels.clone());
    let text = model.text_prefix(x.ids.clone(), x.mask.clone());
    assert_matches("prefix_image", image.map.tokens.clone(), &expected);
    assert_matches("prefix_text", text.hidden.clone(), &expected);
    let (pair_image, pair_text) = model.fused_pair(0, &image, &text, true);
    assert_matches("pair0_image", pair_image.map.tokens, &expected);
    assert_matches("pair0_text", pair_text, &expected);
    let fused = model.fused_suffix(&image, &text);
    assert_matches("fused_image", fused.image.tokens, &expected);
    assert_matches("fused_text", fused.text, &expected);
    let dual = model.forward_dual(x.pixels, x.ids, x.mask);
    assert_matches("dual_image", dual.image.tokens, &expected);
    assert_matches("dual_text", dual.text, &expected);
}

/// Replaces every parameter it visits by `f(old)`.
struct MapParams<F>(F);
impl<BE: Backend, F: FnMut(&str, Tensor<BE, 1>) -> Tensor<BE, 1>> WeightVisitor<BE>
    for MapParams<F>
{
    fn visit<const D: usize>(
        &mut self,
        key: &str,
        param: &mut Param<Tensor<BE, D>>,
        _layout: Layout,
    ) {
        let value = param.val();
        let shape = value.dims();
        let flat = (self.0)(key, value.reshape([shape.iter().product::<usize>()]));
        *param = Param::initialized(param.id, flat.reshape(shape));
    }
}

fn set_gates_to_zero(model: &mut FiberBackbone<B>) {
    model.visit_fusion_weights(
        &mut MapParams(|key: &str, t: Tensor<B, 1>| {
            if key.contains("alpha") {
                t.zeros_like()
            } else {
                t
            }
        }),
        "",
    );
}

#[test]
fn with_every_gate_at_zero_the_fused_forward_equals_the_unimodal_backbones() {
    let x = inputs::<B>();
    // Clean path: fused outputs equal the dual encoder's exactly (up to float noise).
    let mut clean = model();
    clean.original_fused_quirks = false;
    set_gates_to_zero(&mut clean);
    let fused = clean.forward_fused(x.pixels.clone(), x.ids.clone(), x.mask.clone());
    let dual = clean.forward_dual(x.pixels.clone(), x.ids.clone(), x.mask.clone());
    let image_err = max_err(
        fused.image.tokens,
        &dual.image.tokens.into_data().into_vec::<f32>().unwrap(),
    );
    let text_err = max_err(
        fused.text,
        &dual.text.clone().into_data().into_vec::<f32>().unwrap(),
    );
    println!("alpha = 0, clean path: image {image_err:.2e}, text {text_err:.2e}");
    assert!(image_err <= 1e-5 && text_err <= 1e-5);

    // Original quirks: the image lacks the final norm and the text the last output LayerNorm.
    let mut quirky = model();
    set_gates_to_zero(&mut quirky);
    let fused = quirky.forward_fused(x.pixels.clone(), x.ids.clone(), x.mask.clone());
    let normed_image = quirky.vit_model.norm.forward(fused.image.tokens);
    let last = quirky.text_transformer.encoder.layer.len() - 1;
    let normed_text = quirky.text_transformer.encoder.layer[last]
        .output_norm
        .forward(fused.text);
    let dual = quirky.forward_dual(x.pixels, x.ids, x.mask);
    assert!(
        max_err(
            normed_image,
            &dual.image.tokens.into_data().into_vec::<f32>().unwrap()
        ) <= 1e-5
    );
    assert!(
        max_err(
            normed_text,
            &dual.text.into_data().into_vec::<f32>().unwrap()
        ) <= 1e-5
    );
}

/// The fusion parameters of `model` without a nonzero gradient in `grads`, and how many were
/// checked.
fn fusion_parameters_without_gradient(
    model: &mut FiberBackbone<Autodiff<B>>,
    grads: &<Autodiff<B> as burn::tensor::backend::AutodiffBackend>::Gradients,
) -> (Vec<String>, usize) {
    let mut check = GradientCensus::<Autodiff<B>>::new(grads);
    model.visit_fusion_weights(&mut check, "");
    (check.without_gradient, check.checked)
}

#[test]
fn with_gates_open_outputs_change_and_every_fusion_parameter_gets_a_gradient() {
    type A = Autodiff<B>;
    let ckpt = checkpoint();
    let (mut model, _) = ckpt.backbone::<A>(&Default::default()).unwrap();
    let x = inputs::<A>();
    let fused = model.forward_fused(x.pixels.clone(), x.ids.clone(), x.mask.clone());
    let mut closed = ckpt.backbone::<A>(&Default::default()).unwrap().0;
    closed.visit_fusion_weights(
        &mut MapParams(|key: &str, t: Tensor<A, 1>| {
            if key.contains("alpha") {
                t.zeros_like()
            } else {
                t
            }
        }),
        "",
    );
    let gated_off = closed.forward_fused(x.pixels, x.ids, x.mask);
    let image_change = (fused.image.tokens.clone() - gated_off.image.tokens)
        .abs()
        .max()
        .into_scalar();
    let text_change = (fused.text.clone() - gated_off.text)
        .abs()
        .max()
        .into_scalar();
    assert!(
        image_change > 1e-2 && text_change > 1e-2,
        "open gates change both outputs ({image_change}, {text_change})"
    );
    let loss = fused.image.tokens.powf_scalar(2.0).mean() + fused.text.powf_scalar(2.0).mean();
    let grads = loss.backward();
    let (missing, checked) = fusion_parameters_without_gradient(&mut model, &grads);
    // 3 pairs × (i2t: 3 linears with bias, LayerNorm, gate = 9; t2i: 4 linears with bias, gate = 9)
    assert_eq!(checked, 3 * 18);
    assert!(
        missing.is_empty(),
        "fusion parameters without gradient: {missing:?}"
    );
}

#[test]
fn the_original_checkpoint_loads_and_every_skipped_key_is_reported_with_its_reason() {
    let ckpt = checkpoint();
    assert!(rank_output_warning(&ckpt.store)
        .unwrap()
        .contains("rank_output differs"));
    let (_, report) = ckpt.backbone::<B>(&Default::default()).unwrap();
    let mut skipped: Vec<(String, String)> = report
        .skipped
        .iter()
        .map(|s| (s.key.clone(), s.reason.clone()))
        .collect();
    skipped.sort();
    let reason = |key: &str| {
        skipped
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, r)| r.as_str())
            .unwrap_or("<not skipped>")
    };
    assert!(reason("image_queue").contains("queue"));
    assert!(reason("queue_ptr").contains("queue"));
    assert!(reason("vit_model.layers.0.blocks.1.attn_mask").contains("recomputed"));
    assert!(
        reason("vit_model.layers.0.blocks.0.attn.relative_position_index").contains("recomputed")
    );
    assert!(reason("text_transformer.embeddings.position_ids").contains("recomputed"));
    assert!(reason("itm_score.fc.weight").contains("task head"));
    assert!(reason("temp").contains("task head"));
    assert!(
        reason("text_transformer.encoder.layer.3.crossattention_t2i.output.LayerNorm.weight")
            .contains("never uses")
    );
    assert!(reason("text_transformer.encoder.layer.0.alpha_t2i").contains("unfused"));
    // exactly these: 3 queue buffers, 3 buffers, 5 head tensors, 6 unused LayerNorm tensors, 1 gate
    assert_eq!(skipped.len(), 3 + 3 + 5 + 6 + 1, "{skipped:#?}");
    assert!(report.initialised.is_empty());
}

#[test]
fn the_dual_path_never_reads_a_fusion_parameter() {
    let x = inputs::<B>();
    let mut model = model();
    model.visit_fusion_weights(
        &mut MapParams(|_: &str, t: Tensor<B, 1>| t.zeros_like().add_scalar(f32::NAN)),
        "",
    );
    let dual = model.forward_dual(x.pixels, x.ids, x.mask);
    let expected = expected();
    assert_matches("dual_image", dual.image.tokens, &expected);
    assert_matches("dual_text", dual.text, &expected);
}

#[test]
fn building_from_unimodal_weights_initialises_fusion_as_the_original() {
    let config = checkpoint().config;
    let device = Default::default();
    let mut source = FiberBackbone::<B>::new(&config, false, &device).unwrap();
    let (mut roberta, mut swin) = (WeightCollector::new(), WeightCollector::new());
    source
        .text_transformer
        .visit_weights(&mut roberta, "roberta");
    source.vit_model.visit_weights(&mut swin, "");
    let (mut model, report) = FiberBackbone::<B>::from_unimodal(
        &config,
        roberta.into_store(),
        swin.into_store(),
        false,
        &device,
    )
    .unwrap();
    assert_eq!(
        report.initialised.len(),
        3 * 18,
        "every fusion parameter is new: {:?}",
        report.initialised
    );
    let mut gates = Vec::new();
    model.visit_fusion_weights(
        &mut MapParams(|key: &str, t: Tensor<B, 1>| {
            if key.contains("alpha") {
                gates.push(t.clone().into_data().into_vec::<f32>().unwrap()[0]);
            }
            t
        }),
        "",
    );
    assert_eq!(gates, vec![0.0; 6]);
    // α = 0: the fused image path equals the backbone it came from (before the final norm).
    let x = inputs::<B>();
    let fused = model.forward_fused(x.pixels.clone(), x.ids, x.mask);
    let swin_only = source.vit_model.forward(x.pixels);
    let reference = swin_only
        .hidden_states
        .last()
        .unwrap()
        .tokens
        .clone()
        .into_data()
        .into_vec::<f32>()
        .unwrap();
    assert!(max_err(fused.image.tokens, &reference) <= 1e-5);
}

#[test]
fn parameter_count_of_fiber_base_matches_the_documented_count() {
    let model = FiberBackbone::<B>::new(&FiberConfig::fiber_base_384(), false, &Default::default())
        .unwrap();
    // docs/model.md §6.1: Swin 86,878,584 + i2t 12,607,494 + RoBERTa 124,645,632 + t2i 13,397,004; our
    // t2i omits the 6 never-used cross-attention LayerNorms (6 × 1536) and the 6 gates of
    // unfused layers.
    let documented_backbone = 86_878_584 + 12_607_494 + 124_645_632 + 13_397_004;
    let omitted = 6 * 1536 + 6;
    assert_eq!(model.num_params(), documented_backbone - omitted);
}

#[test]
fn inferred_sizes_that_the_tensors_do_not_determine_are_listed_or_refused() {
    use fiber_core::StoredTensor;
    use fiber_fusion::weights::{read_assumed, write_config};
    let mut store = TensorStore::read_any(dir().join("fiber_tiny.ckpt")).unwrap();
    store.rename_prefix("module.", "");
    // Text width 32 has no standard head count (the fixture has 4 heads of 8): refused.
    let err = fiber_fusion::infer_config(&store).unwrap_err().to_string();
    assert!(
        err.contains("roberta.num_attention_heads")
            && err.contains("32")
            && err.contains("--config"),
        "{err}"
    );
    // Width 768 is RoBERTa-base's: 12 heads, said so. The fixture keeps the `attn_mask`
    // buffers, so the image size (32) is read, not assumed.
    store.insert(
        "text_transformer.embeddings.word_embeddings.weight",
        StoredTensor::f32(vec![99, 768], vec![0.0; 99 * 768]),
    );
    let inferred = fiber_fusion::infer_config(&store).unwrap();
    assert_eq!(inferred.config.roberta.num_attention_heads, 12);
    assert_eq!(inferred.config.swin.image_size, 32);
    let keys: Vec<&str> = inferred.assumed.iter().map(|a| a.key.as_str()).collect();
    assert_eq!(keys, ["roberta.num_attention_heads"]);
    // Without the buffers the image size follows the original's 32 × window, said so.
    let masks: Vec<String> = store
        .names()
        .filter(|k| k.ends_with("attn_mask"))
        .map(String::from)
        .collect();
    for key in masks {
        store.remove(&key);
    }
    let inferred = fiber_fusion::infer_config(&store).unwrap();
    assert_eq!(inferred.config.swin.image_size, 64);
    assert!(inferred
        .assumed
        .iter()
        .any(|a| a.key == "swin.image_size" && a.value == 64));
    assert!(inferred.assumed[0].to_string().contains("--config"));
    // A converted folder's config.json marks them, and reading it back finds them.
    let path = std::env::temp_dir().join(format!("fiber-assumed-{}.json", std::process::id()));
    write_config(&inferred.config, &inferred.assumed, &path).unwrap();
    assert_eq!(read_assumed(&path).unwrap(), inferred.assumed);
    assert_eq!(FiberConfig::load_json(&path).unwrap(), inferred.config);
    std::fs::remove_file(path).unwrap();
}

#[test]
fn zero_output_projections_with_open_gates_start_unfused_and_train_from_the_first_step() {
    type A = Autodiff<B>;
    let mut config = FiberConfig::load_json(dir().join("config.json"))
        .unwrap()
        .with_gate_init(1.0)
        .with_zero_fusion_outputs(true);
    // No dropout: both paths are compared on the autodiff backend, where it is active.
    config.roberta.hidden_dropout_prob = 0.0;
    config.roberta.attention_probs_dropout_prob = 0.0;
    let device = Default::default();
    let mut model = FiberBackbone::<A>::new(&config, false, &device).unwrap();
    model.original_fused_quirks = false;
    let x = inputs::<A>();
    let fused = model.forward_fused(x.pixels.clone(), x.ids.clone(), x.mask.clone());
    let dual = model.forward_dual(x.pixels, x.ids, x.mask);
    let image_gap = (fused.image.tokens.clone() - dual.image.tokens)
        .abs()
        .max()
        .into_scalar();
    let text_gap = (fused.text.clone() - dual.text).abs().max().into_scalar();
    assert!(
        image_gap <= 1e-5 && text_gap <= 1e-5,
        "the fused path starts equal to the unfused one ({image_gap}, {text_gap})"
    );
    let loss = fused.image.tokens.powf_scalar(2.0).mean() + fused.text.powf_scalar(2.0).mean();
    let grads = loss.backward();
    let (missing, _) = fusion_parameters_without_gradient(&mut model, &grads);
    // The output projections are the ones that move first: every one has a gradient.
    let projections: Vec<&String> = missing
        .iter()
        .filter(|k| k.contains("proj_i2t") || k.contains("output.dense"))
        .collect();
    assert!(projections.is_empty(), "{projections:?}");
    // With gates at 0 (FIBER) they have none.
    let mut closed = FiberBackbone::<A>::new(
        &config
            .clone()
            .with_gate_init(0.0)
            .with_zero_fusion_outputs(false),
        false,
        &device,
    )
    .unwrap();
    let x = inputs::<A>();
    let fused = closed.forward_fused(x.pixels, x.ids, x.mask);
    let grads = (fused.image.tokens.powf_scalar(2.0).mean() + fused.text.powf_scalar(2.0).mean())
        .backward();
    let (missing, _) = fusion_parameters_without_gradient(&mut closed, &grads);
    assert!(
        missing.iter().any(|k| k.contains("proj_i2t")),
        "{missing:?}"
    );
}
