//! Image captioning: a caption for each image, by beam search.
//!
//! ```sh
//! cargo run --release -p fiber-heads --example caption -- MODEL_DIR IMAGE...
//! ```
//!
//! `MODEL_DIR` is a captioning model folder (`cargo xtask export --run runs/shapes --stage
//! caption --to MODEL_DIR`).

use fiber_heads::Fiber;

/// The backend (`burn::backend::Wgpu` or `burn::backend::Cuda` for a GPU).
type B = burn::backend::NdArray;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model_dir, images @ ..] = args.as_slice() else {
        anyhow::bail!("usage: caption MODEL_DIR IMAGE...");
    };
    if images.is_empty() {
        anyhow::bail!("usage: caption MODEL_DIR IMAGE...");
    }
    let device = Default::default();
    let fiber = Fiber::<B>::load(model_dir, &device)?;
    let pixels = fiber_data::image::load_square_batch::<B, _>(images, fiber.image_size(), &device)?;
    for (image, caption) in images.iter().zip(fiber.caption(pixels)?) {
        println!("{image}: {caption}");
    }
    Ok(())
}
