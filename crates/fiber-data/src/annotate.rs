//! Annotated copies of images: boxes outlined in a colour with a label written beside them (an
//! 8×8 bitmap font, enlarged), as the `detect` and `ground` commands write them.

use std::path::Path;

use font8x8::{UnicodeFonts, BASIC_FONTS};
use image::{imageops, Rgb, RgbImage};

use crate::error::DataError;
use crate::transforms::BoxXyxy;

/// Images whose shorter side is below this are enlarged first, so that labels stay legible.
pub const MIN_ANNOTATED_SIDE: u32 = 384;

/// One box to draw: `(x0, y0, x1, y1)` in the original image's pixels, its label and colour.
#[derive(Debug, Clone, PartialEq)]
pub struct BoxLabel {
    /// The box.
    pub bbox: BoxXyxy,
    /// Text written above the box (ASCII; other characters are drawn as `?`).
    pub label: String,
    /// Outline and label background colour.
    pub colour: [u8; 3],
}

/// A palette of distinct colours; `palette(i)` cycles through it.
pub fn palette(i: usize) -> [u8; 3] {
    const COLOURS: [[u8; 3]; 10] = [
        [230, 25, 75],
        [60, 180, 75],
        [0, 130, 200],
        [245, 130, 48],
        [145, 30, 180],
        [70, 240, 240],
        [240, 50, 230],
        [210, 245, 60],
        [0, 128, 128],
        [170, 110, 40],
    ];
    COLOURS[i % COLOURS.len()]
}

fn fill(image: &mut RgbImage, x0: i64, y0: i64, x1: i64, y1: i64, colour: [u8; 3]) {
    let (w, h) = (image.width() as i64, image.height() as i64);
    for y in y0.max(0)..y1.min(h) {
        for x in x0.max(0)..x1.min(w) {
            image.put_pixel(x as u32, y as u32, Rgb(colour));
        }
    }
}

/// Writes `text` with its top-left corner at `(x, y)`, each font pixel `scale` pixels wide.
fn write_text(image: &mut RgbImage, text: &str, x: i64, y: i64, scale: i64, colour: [u8; 3]) {
    for (i, c) in text.chars().enumerate() {
        let glyph = BASIC_FONTS
            .get(c)
            .or_else(|| BASIC_FONTS.get('?'))
            .unwrap_or([0; 8]);
        let left = x + i as i64 * 8 * scale;
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8 {
                if bits >> col & 1 == 1 {
                    let (px, py) = (left + col * scale, y + row as i64 * scale);
                    fill(image, px, py, px + scale, py + scale, colour);
                }
            }
        }
    }
}

/// A copy of `image` (enlarged to a shorter side of at least [`MIN_ANNOTATED_SIDE`]) with each
/// box outlined and its label written on a band of its colour above it (inside the box when
/// there is no room above; moved left where it would leave the image).
pub fn annotate(image: &RgbImage, boxes: &[BoxLabel]) -> RgbImage {
    let shorter = image.width().min(image.height()).max(1);
    let factor = (MIN_ANNOTATED_SIDE as f32 / shorter as f32).max(1.0);
    let mut out = if factor > 1.0 {
        imageops::resize(
            image,
            (image.width() as f32 * factor).round() as u32,
            (image.height() as f32 * factor).round() as u32,
            imageops::FilterType::Triangle,
        )
    } else {
        image.clone()
    };
    let thickness = (out.width().min(out.height()) as i64 / 200).max(2);
    let scale = thickness.max(2) / 2 + 1;
    for b in boxes {
        let [x0, y0, x1, y1] = b.bbox.map(|v| (v * factor).round() as i64);
        fill(&mut out, x0, y0, x1, y0 + thickness, b.colour);
        fill(&mut out, x0, y1 - thickness, x1, y1, b.colour);
        fill(&mut out, x0, y0, x0 + thickness, y1, b.colour);
        fill(&mut out, x1 - thickness, y0, x1, y1, b.colour);
        let height = 8 * scale + 2;
        let top = if y0 >= height { y0 - height } else { y0 };
        let width = b.label.chars().count() as i64 * 8 * scale + 2;
        // Labels that would run off the right edge are moved left (not past the left edge).
        let left = x0.min(out.width() as i64 - width).max(0);
        fill(&mut out, left, top, left + width, top + height, b.colour);
        let luminance =
            0.299 * b.colour[0] as f32 + 0.587 * b.colour[1] as f32 + 0.114 * b.colour[2] as f32;
        let ink = if luminance > 140.0 { [0; 3] } else { [255; 3] };
        write_text(&mut out, &b.label, left + 1, top + 1, scale, ink);
    }
    out
}

/// Reads `input`, annotates it with `boxes` and writes a PNG to `output` (its folder created).
pub fn write_annotated(input: &Path, boxes: &[BoxLabel], output: &Path) -> Result<(), DataError> {
    let image = image::open(input)
        .map_err(|e| DataError::Decode {
            path: input.to_path_buf(),
            message: e.to_string(),
        })?
        .to_rgb8();
    let annotated = annotate(&image, boxes);
    if let Some(parent) = output.parent() {
        std::fs::create_dir_all(parent).map_err(|source| DataError::Io {
            path: parent.to_path_buf(),
            source,
        })?;
    }
    annotated
        .save_with_format(output, image::ImageFormat::Png)
        .map_err(|e| DataError::Invalid(format!("{}: {e}", output.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxes_and_labels_are_drawn_in_their_colour_on_an_enlarged_copy() {
        let image = RgbImage::from_pixel(96, 64, Rgb([255, 255, 255]));
        let red = [230, 25, 75];
        let out = annotate(
            &image,
            &[BoxLabel {
                bbox: [10.0, 30.0, 50.0, 60.0],
                label: "red cup 0.91".into(),
                colour: red,
            }],
        );
        assert_eq!((out.width(), out.height()), (576, 384), "shorter side 384");
        // The outline's left edge, at 6× the box's coordinates.
        assert_eq!(out.get_pixel(61, 270).0, red);
        // Inside the box, away from the outline and the label, the image is untouched.
        assert_eq!(out.get_pixel(150, 300).0, [255, 255, 255]);
        // The label band above the box holds both its colour and the white ink of its text.
        let band: Vec<[u8; 3]> = (62..300).map(|x| out.get_pixel(x, 170).0).collect();
        assert!(band.contains(&red) && band.contains(&[255, 255, 255]));
        // A large image is not resized.
        let big = RgbImage::new(500, 400);
        assert_eq!(annotate(&big, &[]).dimensions(), (500, 400));
    }
}
