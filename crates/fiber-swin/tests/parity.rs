//! Numerical parity with HuggingFace `SwinModel` on a small random model, and loading of the
//! original checkpoint layout. Fixtures are written by `scripts/make_fixtures.py`.

use std::path::PathBuf;

use burn::backend::NdArray;
use burn::prelude::*;
use burn::tensor::TensorData;
use fiber_core::TensorStore;
use fiber_swin::{SwinConfig, SwinModel, SwinOutput};

type B = NdArray<f32>;
const TOLERANCE: f32 = 1e-4;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/swin/tiny")
}

fn pixels(case: &str) -> Tensor<B, 4> {
    let store =
        TensorStore::read_safetensors(dir().join(format!("input_{case}.safetensors"))).unwrap();
    let t = store.get("pixel_values").unwrap();
    Tensor::from_data(
        TensorData::new(t.as_f32().unwrap().to_vec(), t.shape.clone()),
        &Default::default(),
    )
}

fn check<const D: usize>(name: &str, actual: Tensor<B, D>, expected: &TensorStore) -> f32 {
    let reference = expected
        .get(name)
        .unwrap_or_else(|| panic!("fixture lacks {name}"));
    assert_eq!(actual.dims().to_vec(), reference.shape, "{name} shape");
    let values: Vec<f32> = actual.into_data().into_vec().unwrap();
    let err = fiber_core::compare::max_abs_diff(&values, reference.as_f32().unwrap());
    assert!(
        err <= TOLERANCE,
        "{name}: max abs error {err} > {TOLERANCE}"
    );
    err
}

/// Compares every output HuggingFace returns; returns the largest error.
fn check_all(out: SwinOutput<B>, case: &str) -> f32 {
    let expected =
        TensorStore::read_safetensors(dir().join(format!("expected_{case}.safetensors"))).unwrap();
    let mut worst = 0.0f32;
    assert_eq!(out.hidden_states.len(), 4);
    for (i, map) in out.hidden_states.iter().enumerate() {
        worst = worst.max(check(
            &format!("hidden_states.{i}"),
            map.tokens.clone(),
            &expected,
        ));
        worst = worst.max(check(
            &format!("reshaped_hidden_states.{i}"),
            map.nchw(),
            &expected,
        ));
    }
    worst = worst.max(check("last_hidden_state", out.last_hidden_state, &expected));
    worst = worst.max(check("pooler_output", out.pooler_output, &expected));
    println!("{case}: max abs error {worst:.3e}");
    worst
}

#[test]
fn square_input_matches_transformers_including_a_last_stage_in_one_window() {
    let (model, config) = SwinModel::<B>::from_pretrained(dir(), &Default::default()).unwrap();
    // At 48 px the last stage is 3×3 = one window: the shift is off there.
    assert_eq!(config.stage_resolution(2), config.window_size);
    check_all(model.forward(pixels("square")), "square");
}

#[test]
fn input_needing_padding_at_the_patch_embedding_and_before_merging_matches_transformers() {
    let (model, _) = SwinModel::<B>::from_pretrained(dir(), &Default::default()).unwrap();
    let out = model.forward(pixels("padded"));
    // 50×38 px → 13×10 patches → 7×5 → 4×3: odd maps at every merge.
    let grids: Vec<(usize, usize)> = out
        .hidden_states
        .iter()
        .map(|m| (m.height, m.width))
        .collect();
    assert_eq!(grids, vec![(13, 10), (7, 5), (4, 3), (4, 3)]);
    assert_eq!(
        out.stage_outputs
            .iter()
            .map(|m| (m.height, m.width))
            .collect::<Vec<_>>(),
        vec![(13, 10), (7, 5), (4, 3)]
    );
    check_all(out, "padded");
}

#[test]
fn original_layout_pth_loads_into_the_same_modules() {
    let config = SwinConfig::from_hf_json_file(dir().join("config.json")).unwrap();
    let (model, report) = SwinModel::<B>::from_file(
        &config,
        dir().join("original_layout.pth"),
        &Default::default(),
    )
    .unwrap();
    assert_eq!(
        report.skipped_keys(),
        vec![
            "head.weight",
            "layers.0.blocks.0.attn.relative_position_index"
        ]
    );
    check_all(model.forward(pixels("square")), "square");
}

#[test]
fn position_tables_are_resized_bicubically_like_pytorch() {
    let mut config = SwinConfig::from_hf_json_file(dir().join("config.json")).unwrap();
    config.window_size = 5;
    let store = TensorStore::read_safetensors(dir().join("model.safetensors")).unwrap();
    let mut model = SwinModel::<B>::new(&config, &Default::default());
    model.load_store(store).unwrap();
    let expected = TensorStore::read_safetensors(dir().join("table_window5.safetensors")).unwrap();
    let table = model.layers[0].blocks[0]
        .attn
        .relative_position_bias_table
        .val();
    let err = check("table", table, &expected);
    println!("resized table: max abs error {err:.3e}");
    // stage 2 is 3×3 at 48 px: its window is clamped to 3 and its table keeps 5×5 entries
    assert_eq!(
        model.layers[2].blocks[0]
            .attn
            .relative_position_bias_table
            .val()
            .dims(),
        [25, 4]
    );
}

#[test]
fn a_checkpoint_of_another_architecture_names_every_bad_key() {
    let mut config = SwinConfig::from_hf_json_file(dir().join("config.json")).unwrap();
    config.embed_dim = 16;
    let store = TensorStore::read_safetensors(dir().join("model.safetensors")).unwrap();
    let err = SwinModel::<B>::new(&config, &Default::default())
        .load_store(store)
        .unwrap_err()
        .to_string();
    assert!(err.contains("wrong shape: patch_embed.proj.weight expected [16, 3, 4, 4], checkpoint has [8, 3, 4, 4]"), "{err}");
    assert!(err.contains("layers.2.blocks.1.mlp.fc2.weight"), "{err}");
}
