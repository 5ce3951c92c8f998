//! Reading a dataset folder and iterating training batches: Karpathy or COCO captions as
//! image–text batches (decoded, resized and normalised on all cores, tokenised), or MDETR
//! grounding files as records with their boxes and phrases.
//!
//! ```sh
//! cargo run --release -p fiber-data --example batches -- karpathy|coco-captions DATA_DIR TOKENIZER_JSON [BATCHES]
//! cargo run --release -p fiber-data --example batches -- mdetr DATA_DIR
//! ```
//!
//! The built-in world (`cargo xtask data generate`) holds every format; a run folder holds a
//! tokenizer (`runs/shapes/tokenizer.json`).

use std::path::PathBuf;

use fiber_data::captions::{CaptionDataset, Split};
use fiber_data::layout::{
    read_coco_captions_source, read_karpathy_source, read_mdetr_source, DataSource,
};
use fiber_data::loader::{
    collate_image_text, ImageTransform, Loader, LoaderConfig, LoaderPosition, TextCollate,
};
use fiber_data::Problems;
use fiber_roberta::RobertaTokenizer;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: batches karpathy|coco-captions DATA_DIR TOKENIZER_JSON [BATCHES] | batches mdetr DATA_DIR";
    let [format, dir, rest @ ..] = args.as_slice() else {
        anyhow::bail!(usage);
    };
    let source = DataSource::folder(dir);
    let mut problems = Problems::default();
    let captions = match format.as_str() {
        "karpathy" => read_karpathy_source(&source, &mut problems)?.split(Split::Train),
        "coco-captions" => {
            let files = read_coco_captions_source(&source, &mut problems)?;
            files
                .into_iter()
                .next()
                .ok_or_else(|| anyhow::anyhow!("no COCO caption file"))?
        }
        "mdetr" => {
            let records = read_mdetr_source(&source, &mut problems)?;
            let boxes: usize = records.iter().map(|r| r.boxes.len()).sum();
            println!(
                "{} image–caption pairs, {boxes} boxes, {} problems",
                records.len(),
                problems.len()
            );
            for record in records.iter().take(3) {
                println!(
                    "  {:?}: {} phrases, {} boxes ({})",
                    record.caption,
                    record.phrase_count(),
                    record.boxes.len(),
                    record.path.display()
                );
            }
            return Ok(());
        }
        _ => anyhow::bail!(usage),
    };
    let [tokenizer, rest @ ..] = rest else {
        anyhow::bail!(usage);
    };
    let batches: usize = rest.first().map_or(Ok(2), |n| n.parse())?;
    println!(
        "{} training images, {} captions, {} problems",
        captions.images.len(),
        captions.captions.len(),
        problems.len()
    );
    iterate(captions, RobertaTokenizer::from_file(tokenizer)?, batches)
}

/// Iterates `batches` batches of 4 (image, caption) pairs, 224 px, 40 tokens.
fn iterate(
    data: CaptionDataset,
    tokenizer: RobertaTokenizer,
    batches: usize,
) -> anyhow::Result<()> {
    let pairs: Vec<(PathBuf, String)> = data
        .captions
        .iter()
        .map(|c| (data.images[c.image].path.clone(), c.text.clone()))
        .collect();
    let transform = ImageTransform::Resize { size: 224 };
    let text = TextCollate {
        tokenizer,
        max_len: 40,
        masker: None,
    };
    let mut loader = Loader::spawn(
        pairs.len(),
        LoaderConfig::new(4, 0),
        LoaderPosition::default(),
        move |index, rng| {
            let (path, caption) = &pairs[index];
            Ok((transform.load(path, rng)?, caption.clone()))
        },
        move |samples, rng| collate_image_text(samples, &text, rng),
    )?;
    for _ in 0..batches {
        let loaded = loader.next_batch()?;
        let batch = &loaded.batch;
        let image = &batch.images[0];
        println!(
            "batch {} of epoch {}: {} images of 3 × {} × {}, tokens [{}, {}], samples {:?}, {} skipped",
            loaded.position.batch,
            loaded.position.epoch,
            batch.images.len(),
            image.height,
            image.width,
            batch.tokens.batch,
            batch.tokens.len,
            batch.indices,
            loaded.skipped.len()
        );
    }
    Ok(())
}
