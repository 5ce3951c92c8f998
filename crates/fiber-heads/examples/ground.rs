//! Phrase grounding on one image: each phrase of a caption with its best boxes, printed and
//! drawn on an annotated copy of the image (one colour per phrase).
//!
//! ```sh
//! cargo run --release -p fiber-heads --example ground -- DETECTOR_DIR IMAGE "a red cup on a wooden table" OUT.png [PHRASE ...]
//! ```
//!
//! Without phrases, the caption is split at prepositions and punctuation ("red cup", "wooden
//! table"). `DETECTOR_DIR` is a detector folder (`cargo xtask export --run runs/shapes --stage
//! fine --to DETECTOR_DIR`).

use fiber_data::annotate::{palette, write_annotated, BoxLabel};
use fiber_heads::grounding::Detector;

/// The backend (`burn::backend::Wgpu` or `burn::backend::Cuda` for a GPU).
type B = burn::backend::NdArray;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [detector_dir, image, caption, out, phrases @ ..] = args.as_slice() else {
        anyhow::bail!("usage: ground DETECTOR_DIR IMAGE CAPTION OUT.png [PHRASE ...]");
    };

    let device = Default::default();
    let detector = Detector::<B>::load(detector_dir, &device)?;
    let grounded = detector.ground(image, caption, phrases)?;

    println!("{caption}");
    let mut labels = Vec::new();
    for (i, phrase) in grounded.iter().enumerate() {
        println!("  \"{}\" (characters {:?})", phrase.phrase, phrase.span);
        for d in phrase.boxes.iter().take(3) {
            let [x0, y0, x1, y1] = d.bbox;
            println!("    {:.3}  [{x0:.1}, {y0:.1}, {x1:.1}, {y1:.1}]", d.score);
        }
        if let Some(best) = phrase.boxes.first() {
            labels.push(BoxLabel {
                bbox: best.bbox,
                label: format!("{} {:.2}", phrase.phrase, best.score),
                colour: palette(i),
            });
        }
    }
    write_annotated(image.as_ref(), &labels, out.as_ref())?;
    println!("each phrase's best box drawn on {out}");
    Ok(())
}
