//! `Fiber` on a tiny model folder: features, matching, padding invariance, and the errors for
//! what a folder lacks.

use std::path::{Path, PathBuf};

use burn::backend::NdArray;
use burn::tensor::{Distribution, Tensor};
use fiber_core::WeightCollector;
use fiber_fusion::weights::write_config;
use fiber_fusion::FiberConfig;
use fiber_heads::{Fiber, FiberModel, HeadsError};

type B = NdArray;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

/// Writes a model folder of the tiny fused configuration with fresh weights, without the keys
/// starting with `drop` (none when empty).
fn model_folder(dir: &Path, drop: &str) {
    let mut config = FiberConfig::load_json(fixtures().join("fusion/tiny/config.json")).unwrap();
    let tokenizer = fixtures().join("hf-init/roberta/tokenizer.json");
    config.roberta.vocab_size = 330; // the tokenizer's
    let device = Default::default();
    let mut model = FiberModel::<B>::new(&config, false, &device).unwrap();
    let mut collector = WeightCollector::new();
    model.visit_weights(&mut collector);
    let mut store = collector.into_store();
    let dropped: Vec<String> = store
        .names()
        .filter(|k| !drop.is_empty() && k.starts_with(drop))
        .map(String::from)
        .collect();
    for key in dropped {
        store.remove(&key);
    }
    std::fs::create_dir_all(dir).unwrap();
    store
        .write_safetensors(dir.join("model.safetensors"))
        .unwrap();
    write_config(&config, &[], &dir.join("config.json")).unwrap();
    std::fs::copy(tokenizer, dir.join("tokenizer.json")).unwrap();
    std::fs::write(dir.join("inference.json"), r#"{"max_text_len": 16}"#).unwrap();
}

fn max_abs_diff(a: Tensor<B, 2>, b: Tensor<B, 2>) -> f32 {
    (a - b).abs().max().into_scalar()
}

#[test]
fn a_model_folder_serves_features_and_matching_and_refuses_what_it_lacks() {
    let tmp = tempfile::tempdir().unwrap();
    let device = Default::default();
    let full = tmp.path().join("full");
    model_folder(&full, "");
    let fiber = Fiber::<B>::load(&full, &device).unwrap();
    let s = fiber.image_size();
    let pixels = Tensor::<B, 4>::random([2, 3, s, s], Distribution::Normal(0.0, 1.0), &device);

    let images = fiber.image_features(pixels.clone()).unwrap();
    let [n, h] = images.dims();
    assert_eq!(n, 2);
    let norms = images.clone().powf_scalar(2.0).sum_dim(1).sqrt();
    assert!(max_abs_diff(norms, Tensor::ones([2, 1], &device)) < 1e-5);

    // A text's features do not depend on the longer texts it is batched with.
    let alone = fiber.text_features(&["a red circle"]).unwrap();
    let batched = fiber
        .text_features(&[
            "a red circle",
            "a large blue square on the left of a small green triangle",
        ])
        .unwrap();
    assert_eq!(batched.dims(), [2, h]);
    assert!(max_abs_diff(alone, batched.slice([0..1, 0..h])) < 1e-5);

    let scores = fiber
        .match_scores(pixels.clone(), &["a red circle", "a blue square"])
        .unwrap();
    assert_eq!(scores.len(), 2);
    assert!(scores.iter().all(|s| s.is_finite()));
    let one_text = fiber
        .match_scores(pixels.clone(), &["a red circle"])
        .unwrap_err();
    assert!(matches!(one_text, HeadsError::Invalid(_)), "{one_text}");
    let small = Tensor::<B, 4>::zeros([1, 3, s / 2, s / 2], &device);
    let wrong_size = fiber.image_features(small).unwrap_err().to_string();
    assert!(wrong_size.contains("images must be"), "{wrong_size}");
    let answer = fiber
        .answer(pixels.clone(), "what color?", 3)
        .unwrap_err()
        .to_string();
    assert!(answer.contains("VQA classifier"), "{answer}");

    // Without its ITM head the model still encodes, and says why it cannot match.
    let no_itm = tmp.path().join("no-itm");
    model_folder(&no_itm, "itm_score.");
    let fiber = Fiber::<B>::load(&no_itm, &device).unwrap();
    assert_eq!(fiber.image_features(pixels.clone()).unwrap().dims(), [2, h]);
    let error = fiber
        .match_scores(pixels, &["a", "b"])
        .unwrap_err()
        .to_string();
    assert!(error.contains("itm_score"), "{error}");

    // Settings asking for more text positions than the model has are refused.
    std::fs::write(no_itm.join("inference.json"), r#"{"max_text_len": 4096}"#).unwrap();
    let error = Fiber::<B>::load(&no_itm, &device).unwrap_err().to_string();
    assert!(error.contains("max_text_len 4096"), "{error}");

    // A folder without its tokenizer is refused by name.
    std::fs::remove_file(no_itm.join("tokenizer.json")).unwrap();
    let error = Fiber::<B>::load(&no_itm, &device).unwrap_err().to_string();
    assert!(error.contains("tokenizer.json"), "{error}");
}
