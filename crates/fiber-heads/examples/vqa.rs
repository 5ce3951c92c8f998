//! Visual question answering: the most likely answers to a question about one image.
//!
//! ```sh
//! cargo run --release -p fiber-heads --example vqa -- MODEL_DIR IMAGE "what color is the circle?"
//! ```
//!
//! `MODEL_DIR` is a VQA model folder (`cargo xtask export --run runs/shapes --stage vqa --to
//! MODEL_DIR`).

use fiber_heads::Fiber;

/// The backend (`burn::backend::Wgpu` or `burn::backend::Cuda` for a GPU).
type B = burn::backend::NdArray;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model_dir, image, question] = args.as_slice() else {
        anyhow::bail!("usage: vqa MODEL_DIR IMAGE QUESTION");
    };
    let device = Default::default();
    let fiber = Fiber::<B>::load(model_dir, &device)?;
    let pixels =
        fiber_data::image::load_square_batch::<B, _>(&[image], fiber.image_size(), &device)?;
    println!("{question}");
    for (answer, probability) in fiber.answer(pixels, question, 5)? {
        println!("  {probability:.3}  {answer}");
    }
    Ok(())
}
