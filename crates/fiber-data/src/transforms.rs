//! Geometric transforms (docs/model.md §1.1, §5.4): RandomResizedCrop and horizontal flip for fine-tuning, and
//! the detection resize that moves boxes together with the pixels. Boxes are `[x0, y0, x1, y1]`
//! in pixels of the image they belong to.

use rand::Rng;

use crate::error::DataError;
use crate::image::{detection_size, resize, PixelImage};

/// An axis-aligned box `[x0, y0, x1, y1]` in pixels.
pub type BoxXyxy = [f32; 4];

/// The `height × width` window of `image` whose top-left pixel is `(top, left)`.
pub fn crop(
    image: &PixelImage,
    top: usize,
    left: usize,
    height: usize,
    width: usize,
) -> Result<PixelImage, DataError> {
    if height == 0 || width == 0 || top + height > image.height || left + width > image.width {
        return Err(DataError::Invalid(format!(
            "crop {height}×{width} at ({top}, {left}) does not fit a {}×{} image",
            image.height, image.width
        )));
    }
    let mut values = Vec::with_capacity(3 * height * width);
    for c in 0..3 {
        let plane = image.plane(c);
        for y in top..top + height {
            values
                .extend_from_slice(&plane[y * image.width + left..y * image.width + left + width]);
        }
    }
    Ok(PixelImage {
        values,
        height,
        width,
        eight_bit: image.eight_bit,
    })
}

/// The image mirrored left to right.
pub fn hflip(image: &PixelImage) -> PixelImage {
    let mut values = Vec::with_capacity(image.values.len());
    for c in 0..3 {
        let plane = image.plane(c);
        for row in plane.chunks(image.width) {
            values.extend(row.iter().rev());
        }
    }
    PixelImage {
        values,
        ..image.clone()
    }
}

/// Boxes of an image of `width` pixels, mirrored left to right.
pub fn hflip_boxes(boxes: &[BoxXyxy], width: usize) -> Vec<BoxXyxy> {
    let w = width as f32;
    boxes
        .iter()
        .map(|b| [w - b[2], b[1], w - b[0], b[3]])
        .collect()
}

/// Boxes of a `from = (height, width)` image scaled to a `to` image.
pub fn resize_boxes(boxes: &[BoxXyxy], from: (usize, usize), to: (usize, usize)) -> Vec<BoxXyxy> {
    let sy = to.0 as f32 / from.0 as f32;
    let sx = to.1 as f32 / from.1 as f32;
    boxes
        .iter()
        .map(|b| [b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy])
        .collect()
}

/// torchvision's `RandomResizedCrop` window: a crop covering `scale` of the area with aspect
/// ratio in `ratio` (log-uniform), ten tries, then a centre crop with the ratio clamped.
/// Returns `(top, left, height, width)`.
pub fn random_resized_crop_window(
    height: usize,
    width: usize,
    scale: (f64, f64),
    ratio: (f64, f64),
    rng: &mut impl Rng,
) -> (usize, usize, usize, usize) {
    let area = (height * width) as f64;
    let (log_lo, log_hi) = (ratio.0.ln(), ratio.1.ln());
    for _ in 0..10 {
        let target = area * rng.random_range(scale.0..=scale.1);
        let aspect = rng.random_range(log_lo..=log_hi).exp();
        let w = (target * aspect).sqrt().round() as usize;
        let h = (target / aspect).sqrt().round() as usize;
        if w > 0 && h > 0 && w <= width && h <= height {
            let top = rng.random_range(0..=height - h);
            let left = rng.random_range(0..=width - w);
            return (top, left, h, w);
        }
    }
    let in_ratio = width as f64 / height as f64;
    let (h, w) = if in_ratio < ratio.0 {
        ((width as f64 / ratio.0).round() as usize, width)
    } else if in_ratio > ratio.1 {
        (height, (height as f64 * ratio.1).round() as usize)
    } else {
        (height, width)
    };
    ((height - h) / 2, (width - w) / 2, h, w)
}

/// Fine-tuning crop (docs/model.md §1.1): RandomResizedCrop with scale 0.5–1 and ratio 3/4–4/3, resized to
/// `size × size` with the bicubic filter, then a horizontal flip with probability `flip`.
pub fn random_resized_crop_flip(
    image: &PixelImage,
    size: usize,
    flip: f64,
    rng: &mut impl Rng,
) -> Result<PixelImage, DataError> {
    let (top, left, h, w) = random_resized_crop_window(
        image.height,
        image.width,
        (0.5, 1.0),
        (3.0 / 4.0, 4.0 / 3.0),
        rng,
    );
    let out = resize(&crop(image, top, left, h, w)?, size, size)?;
    Ok(if rng.random_bool(flip) {
        hflip(&out)
    } else {
        out
    })
}

/// Detection resize (docs/model.md §5.4): shorter side `shorter`, longer side at most `max_longer`; the
/// boxes are scaled with the image.
pub fn detection_resize(
    image: &PixelImage,
    boxes: &[BoxXyxy],
    shorter: usize,
    max_longer: usize,
) -> Result<(PixelImage, Vec<BoxXyxy>), DataError> {
    let (h, w) = detection_size(image.height, image.width, shorter, max_longer);
    let resized = resize(image, h, w)?;
    Ok((
        resized,
        resize_boxes(boxes, (image.height, image.width), (h, w)),
    ))
}

/// Why a box is unusable, or `None` when it lies inside a `height × width` image with a
/// positive area.
pub fn box_problem(b: &BoxXyxy, height: usize, width: usize) -> Option<String> {
    let (w, h) = (width as f32, height as f32);
    if b.iter().any(|v| !v.is_finite()) {
        return Some(format!("box {b:?} has a non-finite coordinate"));
    }
    if b[2] <= b[0] || b[3] <= b[1] {
        return Some(format!("box {b:?} has zero area"));
    }
    if b[0] < 0.0 || b[1] < 0.0 || b[2] > w || b[3] > h {
        return Some(format!("box {b:?} lies outside the {width}×{height} image"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    /// A `height × width` image whose red channel is 1 inside `b` and 0 elsewhere.
    fn image_with_box(height: usize, width: usize, b: [usize; 4]) -> PixelImage {
        let mut image = PixelImage::filled(height, width, [0.0, 0.0, 0.0]);
        for y in b[1]..b[3] {
            for x in b[0]..b[2] {
                image.values[y * width + x] = 1.0;
            }
        }
        image
    }

    #[test]
    fn flipping_mirrors_pixels_and_boxes_and_twice_is_the_identity() {
        let image = image_with_box(4, 6, [0, 1, 2, 3]);
        let flipped = hflip(&image);
        assert_eq!(flipped.values[6 + 5], 1.0, "pixel (1, 0) moved to (1, 5)");
        assert_eq!(flipped.values[6], 0.0);
        assert_eq!(hflip(&flipped), image);
        assert_eq!(
            hflip_boxes(&[[0.0, 1.0, 2.0, 3.0]], 6),
            vec![[4.0, 1.0, 6.0, 3.0]]
        );
    }

    #[test]
    fn random_resized_crops_have_the_requested_size_are_seeded_and_stay_in_the_image() {
        let image = image_with_box(30, 40, [0, 0, 40, 30]);
        let mut a = rand::rngs::StdRng::seed_from_u64(1);
        let mut b = rand::rngs::StdRng::seed_from_u64(1);
        for _ in 0..50 {
            let (top, left, h, w) =
                random_resized_crop_window(30, 40, (0.5, 1.0), (0.75, 4.0 / 3.0), &mut a);
            assert!(top + h <= 30 && left + w <= 40);
            let area = (h * w) as f64 / 1200.0;
            assert!((0.45..=1.0).contains(&area), "area fraction {area}");
            assert_eq!(
                (top, left, h, w),
                random_resized_crop_window(30, 40, (0.5, 1.0), (0.75, 4.0 / 3.0), &mut b)
            );
        }
        let out = random_resized_crop_flip(&image, 16, 0.5, &mut a).unwrap();
        assert_eq!((out.height, out.width), (16, 16));
        assert!(
            out.plane(0).iter().all(|&v| (v - 1.0).abs() < 1e-6),
            "a crop of a uniform image is uniform"
        );
    }

    #[test]
    fn the_detection_resize_moves_boxes_with_the_pixels() {
        let image = image_with_box(60, 80, [20, 10, 60, 40]);
        let (resized, boxes) =
            detection_resize(&image, &[[20.0, 10.0, 60.0, 40.0]], 30, 1333).unwrap();
        assert_eq!((resized.height, resized.width), (30, 40));
        assert_eq!(boxes, vec![[10.0, 5.0, 30.0, 20.0]]);
        let red = |y: usize, x: usize| resized.values[y * resized.width + x];
        assert!(red(12, 20) > 0.9, "inside the moved box");
        assert!(
            red(2, 2) < 0.1 && red(25, 35) < 0.1,
            "outside the moved box"
        );
    }

    #[test]
    fn boxes_outside_the_image_or_without_area_are_rejected_with_a_reason() {
        assert_eq!(box_problem(&[1.0, 1.0, 5.0, 5.0], 10, 10), None);
        assert!(box_problem(&[1.0, 1.0, 1.0, 5.0], 10, 10)
            .unwrap()
            .contains("zero area"));
        assert!(box_problem(&[1.0, 1.0, 11.0, 5.0], 10, 10)
            .unwrap()
            .contains("outside"));
        assert!(box_problem(&[f32::NAN, 1.0, 2.0, 5.0], 10, 10)
            .unwrap()
            .contains("non-finite"));
        assert!(crop(&PixelImage::filled(4, 4, [0.0; 3]), 2, 2, 3, 3).is_err());
    }
}
