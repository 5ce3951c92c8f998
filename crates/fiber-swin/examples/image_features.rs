//! Swin image features from a HuggingFace `SwinModel` folder (`config.json` +
//! `model.safetensors`, e.g. `microsoft/swin-base-patch4-window12-384`): the pooled feature
//! and each stage's feature map, for each image.
//!
//! ```sh
//! cargo run --release -p fiber-swin --example image_features -- MODEL_DIR IMAGE...
//! ```

use fiber_swin::SwinModel;

/// The backend (`burn::backend::Wgpu` or `burn::backend::Cuda` for a GPU).
type B = burn::backend::NdArray;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model_dir, images @ ..] = args.as_slice() else {
        anyhow::bail!("usage: image_features MODEL_DIR IMAGE...");
    };
    let device = Default::default();
    let (model, config) = SwinModel::<B>::from_pretrained(model_dir, &device)?;
    // Square resize to the configured size and ImageNet normalisation, as HuggingFace's
    // image processor does for Swin.
    let pixels = fiber_data::image::load_square_batch::<B, _>(images, config.image_size, &device)?;
    let output = model.forward(pixels);
    for (s, map) in output.stage_outputs.iter().enumerate() {
        let [n, tokens, channels] = map.tokens.dims();
        println!(
            "stage {s}: {n} × {}×{} tokens ({tokens}) × {channels} channels",
            map.height, map.width
        );
    }
    let pooled = output.pooler_output;
    let [_, width] = pooled.dims();
    for (i, image) in images.iter().enumerate() {
        let row = pooled
            .clone()
            .slice([i..i + 1, 0..width])
            .into_data()
            .to_vec::<f32>()?;
        let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        println!(
            "{image}: pooled [{width}], L2 norm {norm:.4}, first {:.4?}",
            &row[..4.min(width)]
        );
    }
    Ok(())
}
