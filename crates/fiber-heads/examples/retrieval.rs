//! Image retrieval for a text query: every image of a folder ranked by the dual encoder's
//! cosine similarity, the best few re-ranked by the ITM matching score.
//!
//! ```sh
//! cargo run --release -p fiber-heads --example retrieval -- MODEL_DIR IMAGE_DIR "a red circle" [RERANK]
//! ```
//!
//! `MODEL_DIR` is a model folder (`cargo xtask export --run runs/shapes --to MODEL_DIR`).

use std::path::PathBuf;

use fiber_heads::retrieval::itc_scores;
use fiber_heads::Fiber;

/// The backend: `burn::backend::Wgpu` or `burn::backend::Cuda` run the same code on a GPU
/// (with burn's `wgpu` or `cuda` feature).
type B = burn::backend::NdArray;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model_dir, image_dir, query, rest @ ..] = args.as_slice() else {
        anyhow::bail!("usage: retrieval MODEL_DIR IMAGE_DIR QUERY [RERANK]");
    };
    let rerank: usize = rest.first().map_or(Ok(3), |k| k.parse())?;

    let device = Default::default();
    let fiber = Fiber::<B>::load(model_dir, &device)?;
    let mut paths: Vec<PathBuf> = std::fs::read_dir(image_dir)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    paths.retain(|p| {
        let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
        ["jpg", "jpeg", "png", "webp"].contains(&ext.to_lowercase().as_str())
    });
    paths.sort();
    let pixels = fiber_data::image::load_square_batch::<B, _>(&paths, fiber.image_size(), &device)?;

    // Dual encoder: one feature per image and per text, compared by cosine similarity.
    let images = fiber.image_features(pixels.clone())?;
    let text = fiber.text_features(&[query.as_str()])?;
    let scores = itc_scores(text, images).into_data().to_vec::<f32>()?;
    let mut ranked: Vec<usize> = (0..paths.len()).collect();
    ranked.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));

    // Fusion encoder: the ITM score of the best candidates, paired with the query.
    let top: Vec<usize> = ranked.iter().copied().take(rerank).collect();
    let candidates = pixels.select(0, burn::tensor::Tensor::from_ints(top.as_slice(), &device));
    let matches = fiber.match_scores(candidates, &vec![query.as_str(); top.len()])?;
    let mut reranked: Vec<(usize, f32)> = top.iter().copied().zip(matches).collect();
    reranked.sort_by(|a, b| b.1.total_cmp(&a.1));

    println!(
        "{} images ranked for {query:?} (cosine similarity):",
        paths.len()
    );
    for &i in &ranked {
        println!("  {:.4}  {}", scores[i], paths[i].display());
    }
    println!("the best {} re-ranked by the ITM score:", top.len());
    for (i, itm) in reranked {
        println!("  {itm:+.4}  {}", paths[i].display());
    }
    Ok(())
}
