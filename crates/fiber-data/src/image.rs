//! Image decoding and preprocessing (docs/model.md §1.1, §5.4).
//!
//! This lives in fiber-data, not fiber-swin: the backbone takes normalised pixel tensors and
//! needs no image codec, while resizing belongs with the augmentations and batching of the
//! data pipeline — and the detection variant must transform boxes together with the pixels,
//! which only the data side knows about.
//!
//! Every image is decoded to RGB in f32 (grayscale is replicated, alpha dropped, 16-bit kept at
//! full precision), resized with PIL's bicubic resampling (the filter the original torchvision
//! pipeline calls: cubic convolution with a = −0.5, support widened by the scale factor when
//! shrinking) and normalised. Like PIL, 8-bit images are rounded to 8-bit levels and clamped
//! after each of the two resampling passes (what the original pipeline fed the model); other
//! images are resampled in floating point without rounding.

use std::path::Path;

use burn::prelude::*;
use burn::tensor::TensorData;
use image::{DynamicImage, ImageReader};

use crate::error::DataError;

/// Per-channel normalisation `(x·scale − mean) / std`, channels in output order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Normalization {
    /// Multiplier applied to the [0, 1] pixel first (1 or 255).
    pub scale: f32,
    /// Means, in output channel order.
    pub mean: [f32; 3],
    /// Standard deviations, in output channel order.
    pub std: [f32; 3],
    /// Whether the output channels are BGR (the detector) instead of RGB.
    pub bgr: bool,
}

impl Normalization {
    /// The coarse stage: RGB in [0, 1], ImageNet mean and std.
    pub const IMAGENET: Self = Self {
        scale: 1.0,
        mean: [0.485, 0.456, 0.406],
        std: [0.229, 0.224, 0.225],
        bgr: false,
    };
    /// The fine-grained detector: BGR in [0, 255], the same statistics in BGR order.
    pub const DETECTION_BGR255: Self = Self {
        scale: 255.0,
        mean: [103.530, 116.280, 123.675],
        std: [57.375, 57.120, 58.395],
        bgr: true,
    };
}

/// An image as three channel planes: `[3, height, width]` row-major f32. Decoded images hold
/// RGB in [0, 1]; normalised ones the values of a [`Normalization`].
#[derive(Debug, Clone, PartialEq)]
pub struct PixelImage {
    /// Values, channel-major.
    pub values: Vec<f32>,
    /// Height in pixels.
    pub height: usize,
    /// Width in pixels.
    pub width: usize,
    /// Whether the values are 8-bit levels (`k/255`), which resizing keeps as PIL does.
    pub eight_bit: bool,
}

impl PixelImage {
    /// A `height × width` image of one RGB colour (not treated as 8-bit).
    pub fn filled(height: usize, width: usize, rgb: [f32; 3]) -> Self {
        let values = rgb
            .iter()
            .flat_map(|&v| std::iter::repeat_n(v, height * width))
            .collect();
        Self {
            values,
            height,
            width,
            eight_bit: false,
        }
    }

    /// Channel `c` as a row-major plane.
    pub fn plane(&self, c: usize) -> &[f32] {
        &self.values[c * self.height * self.width..(c + 1) * self.height * self.width]
    }
}

/// Decodes a JPEG, PNG or WebP file (format from its content) to RGB in [0, 1]; a JPEG cut
/// off before its end is an error (the JPEG stream checked for its end-of-image marker).
pub fn load_rgb(path: impl AsRef<Path>) -> Result<PixelImage, DataError> {
    let path = path.as_ref();
    let io = |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    };
    let decode = |message: String| DataError::Decode {
        path: path.to_path_buf(),
        message,
    };
    let bytes = std::fs::read(path).map_err(io)?;
    if crate::jpeg::is_jpeg(&bytes) {
        if let Some(message) = crate::jpeg::truncation(&bytes) {
            return Err(decode(message));
        }
    }
    let image: DynamicImage = ImageReader::new(std::io::Cursor::new(&bytes))
        .with_guessed_format()
        .map_err(io)?
        .decode()
        .map_err(|e| decode(e.to_string()))?;
    if image.width() == 0 || image.height() == 0 {
        return Err(decode("the image is empty".into()));
    }
    let eight_bit = matches!(
        image,
        DynamicImage::ImageLuma8(_)
            | DynamicImage::ImageLumaA8(_)
            | DynamicImage::ImageRgb8(_)
            | DynamicImage::ImageRgba8(_)
    );
    let rgb = image.to_rgb32f();
    let (w, h) = (rgb.width() as usize, rgb.height() as usize);
    let mut values = vec![0.0f32; 3 * h * w];
    for (x, y, pixel) in rgb.enumerate_pixels() {
        for c in 0..3 {
            values[(c * h + y as usize) * w + x as usize] = pixel.0[c];
        }
    }
    Ok(PixelImage {
        values,
        height: h,
        width: w,
        eight_bit,
    })
}

/// PIL's bicubic kernel (a = −0.5).
fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// For each output index, the first input index and the normalised weights of the inputs it
/// reads (PIL's `precompute_coeffs`).
fn resample_coefficients(in_len: usize, out_len: usize) -> Vec<(usize, Vec<f64>)> {
    let scale = in_len as f64 / out_len as f64;
    let filter_scale = scale.max(1.0);
    let support = 2.0 * filter_scale;
    (0..out_len)
        .map(|i| {
            let center = (i as f64 + 0.5) * scale;
            let start = ((center - support + 0.5) as i64).max(0) as usize;
            let end = ((center + support + 0.5) as i64).min(in_len as i64) as usize;
            let mut weights: Vec<f64> = (start..end)
                .map(|x| bicubic((x as f64 - center + 0.5) / filter_scale))
                .collect();
            let total: f64 = weights.iter().sum();
            if total != 0.0 {
                weights.iter_mut().for_each(|w| *w /= total);
            }
            (start, weights)
        })
        .collect()
}

/// Resizes to exactly `height × width` with PIL's bicubic resampling: a horizontal pass, then a
/// vertical one; for 8-bit images each pass ends by rounding to 8-bit levels and clamping to
/// [0, 1], as PIL does for `uint8` images.
pub fn resize(image: &PixelImage, height: usize, width: usize) -> Result<PixelImage, DataError> {
    if height == 0 || width == 0 {
        return Err(DataError::Invalid(format!(
            "cannot resize to {height}×{width}"
        )));
    }
    let (h, w) = (image.height, image.width);
    let columns = resample_coefficients(w, width);
    let rows = resample_coefficients(h, height);
    let mut values = Vec::with_capacity(3 * height * width);
    let level = |v: f64| -> f32 {
        if image.eight_bit {
            ((v * 255.0).round().clamp(0.0, 255.0) / 255.0) as f32
        } else {
            v as f32
        }
    };
    let mut horizontal = vec![0.0f32; h * width];
    for c in 0..3 {
        let plane = image.plane(c);
        for y in 0..h {
            let src = &plane[y * w..(y + 1) * w];
            for (x, (start, weights)) in columns.iter().enumerate() {
                horizontal[y * width + x] = level(
                    weights
                        .iter()
                        .zip(&src[*start..])
                        .map(|(wt, v)| wt * *v as f64)
                        .sum::<f64>(),
                );
            }
        }
        for (start, weights) in &rows {
            for x in 0..width {
                let v: f64 = weights
                    .iter()
                    .enumerate()
                    .map(|(k, wt)| wt * horizontal[(start + k) * width + x] as f64)
                    .sum();
                values.push(level(v));
            }
        }
    }
    Ok(PixelImage {
        values,
        height,
        width,
        eight_bit: image.eight_bit,
    })
}

/// Normalises an RGB image in [0, 1]: `(x·scale − mean) / std` per output channel.
pub fn normalize(image: &PixelImage, norm: &Normalization) -> PixelImage {
    let area = image.height * image.width;
    let mut values = Vec::with_capacity(3 * area);
    for c in 0..3 {
        let source = image.plane(if norm.bgr { 2 - c } else { c });
        values.extend(
            source
                .iter()
                .map(|v| (v * norm.scale - norm.mean[c]) / norm.std[c]),
        );
    }
    debug_assert_eq!(values.len(), 3 * area);
    PixelImage {
        values,
        height: image.height,
        width: image.width,
        eight_bit: false,
    }
}

/// Coarse-stage preprocessing: square bicubic resize to `size` (aspect ratio not kept), RGB,
/// ImageNet normalisation.
pub fn preprocess_square(image: &PixelImage, size: usize) -> Result<PixelImage, DataError> {
    Ok(normalize(
        &resize(image, size, size)?,
        &Normalization::IMAGENET,
    ))
}

/// The files at `paths` decoded and preprocessed as the coarse stage does
/// ([`preprocess_square`] to `size`, in parallel) → `[paths.len(), 3, size, size]`; the
/// first file that cannot be read or decoded is the error.
pub fn load_square_batch<B: Backend, P: AsRef<Path> + Sync>(
    paths: &[P],
    size: usize,
    device: &B::Device,
) -> Result<Tensor<B, 4>, DataError> {
    use rayon::prelude::*;
    if paths.is_empty() {
        return Err(DataError::Invalid("no images to load".into()));
    }
    let images = paths
        .par_iter()
        .map(|path| preprocess_square(&load_rgb(path)?, size))
        .collect::<Result<Vec<_>, _>>()?;
    to_tensor(&images, device)
}

/// Output size `(height, width)` of the detection resize: the shorter side becomes `shorter`,
/// unless the longer side would exceed `max_longer`, in which case the shorter side is reduced
/// so that it does not (maskrcnn-benchmark's rule, including its rounding).
pub fn detection_size(
    height: usize,
    width: usize,
    shorter: usize,
    max_longer: usize,
) -> (usize, usize) {
    let (min_side, max_side) = (height.min(width) as f64, height.max(width) as f64);
    let mut size = shorter as f64;
    if max_side / min_side * size > max_longer as f64 {
        size = (max_longer as f64 * min_side / max_side).round();
    }
    let size = size as usize;
    if (width <= height && width == size) || (height <= width && height == size) {
        return (height, width);
    }
    if width < height {
        ((size as f64 * height as f64 / width as f64) as usize, size)
    } else {
        (size, (size as f64 * width as f64 / height as f64) as usize)
    }
}

/// Detection preprocessing: aspect-preserving resize (shorter side `shorter`, longer side at
/// most `max_longer`), BGR 0–255 normalisation.
pub fn preprocess_detection(
    image: &PixelImage,
    shorter: usize,
    max_longer: usize,
) -> Result<PixelImage, DataError> {
    let (h, w) = detection_size(image.height, image.width, shorter, max_longer);
    Ok(normalize(
        &resize(image, h, w)?,
        &Normalization::DETECTION_BGR255,
    ))
}

/// Stacks images into `[batch, 3, H, W]`, zero-padding each at the bottom/right to the largest
/// height and width rounded up to a multiple of `divisor` (32 for the detector, 1 for none).
/// Returns the values and `(H, W)`.
pub fn pad_batch(
    images: &[PixelImage],
    divisor: usize,
) -> Result<(Vec<f32>, (usize, usize)), DataError> {
    if images.is_empty() || divisor == 0 {
        return Err(DataError::Invalid(
            "pad_batch needs at least one image and a positive divisor".into(),
        ));
    }
    let h = images
        .iter()
        .map(|i| i.height)
        .max()
        .unwrap_or(0)
        .div_ceil(divisor)
        * divisor;
    let w = images
        .iter()
        .map(|i| i.width)
        .max()
        .unwrap_or(0)
        .div_ceil(divisor)
        * divisor;
    let mut out = vec![0.0f32; images.len() * 3 * h * w];
    for (b, image) in images.iter().enumerate() {
        for c in 0..3 {
            for y in 0..image.height {
                let src = &image.values[(c * image.height + y) * image.width..][..image.width];
                let dst = ((b * 3 + c) * h + y) * w;
                out[dst..dst + image.width].copy_from_slice(src);
            }
        }
    }
    Ok((out, (h, w)))
}

/// A batch of equally sized images as a `[batch, 3, H, W]` tensor.
pub fn to_tensor<B: Backend>(
    images: &[PixelImage],
    device: &B::Device,
) -> Result<Tensor<B, 4>, DataError> {
    let (values, (h, w)) = pad_batch(images, 1)?;
    if images.iter().any(|i| i.height != h || i.width != w) {
        return Err(DataError::Invalid(
            "to_tensor needs images of one size; use pad_batch for mixed sizes".into(),
        ));
    }
    Ok(Tensor::from_data(
        TensorData::new(values, [images.len(), 3, h, w]),
        device,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GrayImage, ImageBuffer, Luma, Rgb, Rgba, RgbaImage};

    fn pixel(img: &PixelImage, y: usize, x: usize) -> [f32; 3] {
        [0, 1, 2].map(|c| img.plane(c)[y * img.width + x])
    }

    fn temp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("fiber-image-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    #[test]
    fn grayscale_rgba_and_16_bit_files_decode_to_rgb() {
        let gray = temp("gray.png");
        GrayImage::from_pixel(3, 2, Luma([51u8]))
            .save(&gray)
            .unwrap();
        let img = load_rgb(&gray).unwrap();
        assert!(pixel(&img, 1, 1).iter().all(|v| (v - 0.2).abs() < 1e-6));

        let rgba = temp("rgba.png");
        RgbaImage::from_pixel(2, 2, Rgba([255u8, 0, 102, 7]))
            .save(&rgba)
            .unwrap();
        let px = pixel(&load_rgb(&rgba).unwrap(), 0, 0);
        assert!(
            px.iter()
                .zip([1.0, 0.0, 0.4])
                .all(|(a, b)| (a - b).abs() < 1e-6),
            "{px:?}"
        );

        let deep = temp("deep.png");
        ImageBuffer::<Rgb<u16>, Vec<u16>>::from_pixel(2, 2, Rgb([65535u16, 32768, 1]))
            .save(&deep)
            .unwrap();
        let px = pixel(&load_rgb(&deep).unwrap(), 0, 0);
        assert!(
            (px[1] - 32768.0 / 65535.0).abs() < 1e-6,
            "16-bit precision is kept: {px:?}"
        );

        let jpeg = temp("x.jpg");
        image::RgbImage::from_pixel(8, 8, Rgb([200u8, 100, 50]))
            .save(&jpeg)
            .unwrap();
        let px = pixel(&load_rgb(&jpeg).unwrap(), 4, 4);
        assert!((px[0] - 200.0 / 255.0).abs() < 0.02, "{px:?}");
    }

    #[test]
    fn corrupt_and_missing_files_are_errors_naming_the_file() {
        let bad = temp("bad.png");
        std::fs::write(&bad, b"\x89PNG\r\n\x1a\nthis is not really a png").unwrap();
        let err = load_rgb(&bad).unwrap_err().to_string();
        assert!(
            err.contains("bad.png") && err.contains("cannot decode"),
            "{err}"
        );
        let err = load_rgb(temp("missing.jpg")).unwrap_err().to_string();
        assert!(err.contains("missing.jpg"), "{err}");
    }

    #[test]
    fn square_preprocessing_resizes_and_normalises_with_imagenet_statistics() {
        let img = PixelImage::filled(17, 30, [0.485, 0.456 + 0.224, 0.406 - 0.225]);
        let out = preprocess_square(&img, 12).unwrap();
        assert_eq!((out.height, out.width, out.values.len()), (12, 12, 3 * 144));
        for (c, expected) in [0.0f32, 1.0, -1.0].iter().enumerate() {
            assert!(
                out.values[c * 144..(c + 1) * 144]
                    .iter()
                    .all(|v| (v - expected).abs() < 1e-4),
                "channel {c}"
            );
        }
    }

    #[test]
    fn detection_sizes_follow_the_shorter_side_and_longer_side_cap() {
        assert_eq!(detection_size(480, 640, 800, 1333), (800, 1066));
        // round(1333·500/2000) = 333, then int(333·2000/500) = 1332, as maskrcnn-benchmark computes
        assert_eq!(detection_size(500, 2000, 800, 1333), (333, 1332));
        assert_eq!(detection_size(800, 600, 800, 1333), (1066, 800));
        assert_eq!(detection_size(800, 1000, 800, 1333), (800, 1000));
        let img = PixelImage::filled(48, 64, [1.0, 0.0, 0.0]);
        let out = preprocess_detection(&img, 24, 1333).unwrap();
        assert_eq!((out.height, out.width), (24, 32));
        // BGR order, 0–255 statistics: blue channel first
        assert!((out.values[0] - (0.0 - 103.530) / 57.375).abs() < 1e-4);
        assert!((out.values[2 * 24 * 32] - (255.0 - 123.675) / 58.395).abs() < 1e-3);
    }

    #[test]
    fn batches_are_padded_with_zeros_to_a_multiple_of_32() {
        let a = PixelImage::filled(40, 50, [1.0; 3]);
        let b = PixelImage::filled(33, 20, [2.0; 3]);
        let (values, (h, w)) = pad_batch(&[a, b], 32).unwrap();
        assert_eq!((h, w), (64, 64));
        assert_eq!(values.len(), 2 * 3 * 64 * 64);
        assert_eq!(values[39 * 64 + 49], 1.0);
        assert_eq!(values[40 * 64 + 49], 0.0);
        let second = 3 * 64 * 64;
        assert_eq!(values[second + 32 * 64 + 19], 2.0);
        assert_eq!(values[second + 32 * 64 + 20], 0.0);
    }
}

#[cfg(test)]
mod pil_parity {
    use super::*;
    use fiber_core::TensorStore;

    fn fixture(name: &str) -> std::path::PathBuf {
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../fixtures/image")
            .join(name)
    }

    /// The resize against PIL's BICUBIC (what torchvision's Resize calls), when shrinking
    /// (widened filter support) and when enlarging: an 8-bit PNG against PIL's uint8 result
    /// (PIL rounds in fixed point, so one grey level of difference is allowed), and the same
    /// pixels as a float image against PIL's float ("F") mode.
    #[test]
    fn bicubic_resize_matches_pil() {
        let image = load_rgb(fixture("photo.png")).unwrap();
        assert!(image.eight_bit);
        let float_image = PixelImage {
            eight_bit: false,
            ..image.clone()
        };
        let expected =
            TensorStore::read_safetensors(fixture("expected_resize.safetensors")).unwrap();
        for (name, h, w) in [("down", 12, 16), ("up", 50, 60)] {
            let reference = |kind: &str| {
                expected
                    .get(&format!("{name}_{kind}"))
                    .unwrap()
                    .as_f32()
                    .unwrap()
                    .to_vec()
            };
            let uint8 = fiber_core::compare::max_abs_diff(
                &resize(&image, h, w).unwrap().values,
                &reference("uint8"),
            );
            let float = fiber_core::compare::max_abs_diff(
                &resize(&float_image, h, w).unwrap().values,
                &reference("float"),
            );
            println!(
                "{name}: max abs difference to PIL uint8 {uint8:.2e}, to PIL float {float:.2e}"
            );
            assert!(uint8 <= 1.0 / 255.0 + 1e-6, "{name}: {uint8}");
            assert!(float <= 1e-5, "{name}: {float}");
        }
    }
}
