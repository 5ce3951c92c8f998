//! Open-vocabulary detection on one image: boxes of the classes named in a prompt, printed
//! and drawn on an annotated copy of the image.
//!
//! ```sh
//! cargo run --release -p fiber-heads --example detect -- DETECTOR_DIR IMAGE "person. bicycle. dog" OUT.png [THRESHOLD]
//! ```
//!
//! `DETECTOR_DIR` is a detector folder (`cargo xtask export --run runs/shapes --stage fine --to
//! DETECTOR_DIR`); pass `-` as the classes to detect the ones it was trained on.

use fiber_data::annotate::{palette, write_annotated, BoxLabel};
use fiber_heads::grounding::phrases::parse_classes;
use fiber_heads::grounding::Detector;

/// The backend (`burn::backend::Wgpu` or `burn::backend::Cuda` for a GPU).
type B = burn::backend::NdArray;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [detector_dir, image, classes, out, rest @ ..] = args.as_slice() else {
        anyhow::bail!("usage: detect DETECTOR_DIR IMAGE CLASSES OUT.png [THRESHOLD]");
    };
    let threshold: f32 = rest.first().map_or(Ok(0.3), |t| t.parse())?;

    let device = Default::default();
    let detector = Detector::<B>::load(detector_dir, &device)?;
    let classes = match classes.as_str() {
        "-" => detector
            .categories()
            .ok_or_else(|| anyhow::anyhow!("the detector folder names no classes: pass them"))?
            .to_vec(),
        text => parse_classes(text),
    };
    let detections = detector.detect(&[image], &classes)?.remove(0);

    let mut labels = Vec::new();
    for d in detections.iter().filter(|d| d.score >= threshold) {
        let [x0, y0, x1, y1] = d.bbox;
        let name = &classes[d.class];
        println!(
            "{name:>12}  {:.3}  [{x0:.1}, {y0:.1}, {x1:.1}, {y1:.1}]",
            d.score
        );
        labels.push(BoxLabel {
            bbox: d.bbox,
            label: format!("{name} {:.2}", d.score),
            colour: palette(d.class),
        });
    }
    // The best box is drawn last, on top.
    labels.reverse();
    write_annotated(image.as_ref(), &labels, out.as_ref())?;
    println!(
        "{} of {} detections score at least {threshold}; drawn on {out}",
        labels.len(),
        detections.len()
    );
    Ok(())
}
