//! The RandAugment subset of the fine-tuning transform (docs/model.md §1.1, ALBEF's `RandomAugment(2, 7)`):
//! two operations drawn with replacement from Identity, AutoContrast, Equalize, Brightness,
//! Sharpness, ShearX/Y, TranslateX/Y and Rotate, each applied with probability 0.5 at magnitude
//! 7 of 10. Operations work on 8-bit levels as the original does (results are rounded to
//! `k/255`); geometric ones use bilinear sampling and fill uncovered pixels with grey 128.

use rand::Rng;

use crate::image::PixelImage;

/// One RandAugment operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AugmentOp {
    /// No change.
    Identity,
    /// Per channel, stretch the darkest..brightest level to 0..255.
    AutoContrast,
    /// Per channel histogram equalisation (PIL's algorithm).
    Equalize,
    /// Multiply by a factor.
    Brightness,
    /// Blend with a 3×3 smoothed copy (factor > 1 sharpens).
    Sharpness,
    /// Horizontal shear.
    ShearX,
    /// Vertical shear.
    ShearY,
    /// Horizontal shift in pixels.
    TranslateX,
    /// Vertical shift in pixels.
    TranslateY,
    /// Rotation about the centre in degrees.
    Rotate,
}

/// The operations ALBEF's fine-tuning transform samples from.
pub const ALBEF_OPS: [AugmentOp; 10] = [
    AugmentOp::Identity,
    AugmentOp::AutoContrast,
    AugmentOp::Equalize,
    AugmentOp::Brightness,
    AugmentOp::Sharpness,
    AugmentOp::ShearX,
    AugmentOp::ShearY,
    AugmentOp::TranslateX,
    AugmentOp::TranslateY,
    AugmentOp::Rotate,
];

/// RandAugment settings.
#[derive(Debug, Clone, PartialEq)]
pub struct RandAugment {
    /// Operations per image (2).
    pub num_ops: usize,
    /// Magnitude on a 0..=10 scale (7).
    pub magnitude: f32,
    /// Probability that a drawn operation is applied (0.5).
    pub probability: f64,
}

impl Default for RandAugment {
    fn default() -> Self {
        Self {
            num_ops: 2,
            magnitude: 7.0,
            probability: 0.5,
        }
    }
}

const MAX_LEVEL: f32 = 10.0;

impl RandAugment {
    /// Applies `num_ops` operations drawn from [`ALBEF_OPS`] to `image` (RGB in [0, 1]).
    pub fn apply(&self, image: &PixelImage, rng: &mut impl Rng) -> PixelImage {
        let mut planes = to_levels(image);
        for _ in 0..self.num_ops {
            let op = ALBEF_OPS[rng.random_range(0..ALBEF_OPS.len())];
            let sign = if rng.random_bool(0.5) { 1.0 } else { -1.0 };
            if rng.random::<f64>() > self.probability {
                continue;
            }
            planes = apply_op(
                op,
                self.signed_magnitude(op, sign),
                &planes,
                image.height,
                image.width,
            );
        }
        from_levels(&planes, image.height, image.width)
    }

    /// The argument of `op` at this magnitude (random sign for the geometric operations).
    pub fn signed_magnitude(&self, op: AugmentOp, sign: f32) -> f32 {
        let level = self.magnitude / MAX_LEVEL;
        match op {
            AugmentOp::Brightness | AugmentOp::Sharpness => level * 1.8 + 0.1,
            AugmentOp::ShearX | AugmentOp::ShearY => sign * level * 0.3,
            AugmentOp::TranslateX | AugmentOp::TranslateY => sign * level * 10.0,
            AugmentOp::Rotate => sign * level * 30.0,
            AugmentOp::Identity | AugmentOp::AutoContrast | AugmentOp::Equalize => 0.0,
        }
    }
}

fn to_levels(image: &PixelImage) -> Vec<Vec<u8>> {
    (0..3)
        .map(|c| {
            image
                .plane(c)
                .iter()
                .map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8)
                .collect()
        })
        .collect()
}

fn from_levels(planes: &[Vec<u8>], height: usize, width: usize) -> PixelImage {
    let values = planes
        .iter()
        .flat_map(|p| p.iter().map(|&v| v as f32 / 255.0))
        .collect();
    PixelImage {
        values,
        height,
        width,
        eight_bit: true,
    }
}

/// Applies one operation with argument `arg` to channel planes of 8-bit levels.
pub(crate) fn apply_op(
    op: AugmentOp,
    arg: f32,
    planes: &[Vec<u8>],
    height: usize,
    width: usize,
) -> Vec<Vec<u8>> {
    let (h, w) = (height as f32, width as f32);
    match op {
        AugmentOp::Identity => planes.to_vec(),
        AugmentOp::AutoContrast => planes.iter().map(|p| autocontrast(p)).collect(),
        AugmentOp::Equalize => planes.iter().map(|p| equalize(p)).collect(),
        AugmentOp::Brightness => planes
            .iter()
            .map(|p| {
                p.iter()
                    .map(|&v| (v as f32 * arg).clamp(0.0, 255.0) as u8)
                    .collect()
            })
            .collect(),
        AugmentOp::Sharpness => planes
            .iter()
            .map(|p| sharpness(p, height, width, arg))
            .collect(),
        // Affine maps send output pixel (x, y) to the input position they read.
        AugmentOp::ShearX => affine(planes, height, width, [1.0, arg, 0.0, 0.0, 1.0, 0.0]),
        AugmentOp::ShearY => affine(planes, height, width, [1.0, 0.0, 0.0, arg, 1.0, 0.0]),
        AugmentOp::TranslateX => affine(planes, height, width, [1.0, 0.0, -arg, 0.0, 1.0, 0.0]),
        AugmentOp::TranslateY => affine(planes, height, width, [1.0, 0.0, 0.0, 0.0, 1.0, -arg]),
        AugmentOp::Rotate => {
            // cv2.getRotationMatrix2D((w/2, h/2), angle, 1) is the forward map; invert it.
            let (s, c) = arg.to_radians().sin_cos();
            let (cx, cy) = (w / 2.0, h / 2.0);
            affine(
                planes,
                height,
                width,
                [c, -s, cx - c * cx + s * cy, s, c, cy - s * cx - c * cy],
            )
        }
    }
}

/// cv2.warpAffine with the forward matrix `m` (dst = M·src), bilinear, border grey 128: the
/// output pixel at (x, y) reads the input at M⁻¹·(x, y).
fn affine(planes: &[Vec<u8>], height: usize, width: usize, m: [f32; 6]) -> Vec<Vec<u8>> {
    let det = m[0] * m[4] - m[1] * m[3];
    let inv = [
        m[4] / det,
        -m[1] / det,
        (m[1] * m[5] - m[4] * m[2]) / det,
        -m[3] / det,
        m[0] / det,
        (m[3] * m[2] - m[0] * m[5]) / det,
    ];
    planes
        .iter()
        .map(|plane| {
            let mut out = vec![0u8; height * width];
            for y in 0..height {
                for x in 0..width {
                    let sx = inv[0] * x as f32 + inv[1] * y as f32 + inv[2];
                    let sy = inv[3] * x as f32 + inv[4] * y as f32 + inv[5];
                    let (x0, y0) = (sx.floor(), sy.floor());
                    let (fx, fy) = (sx - x0, sy - y0);
                    let at = |xx: f32, yy: f32| -> f32 {
                        if xx < 0.0 || yy < 0.0 || xx >= width as f32 || yy >= height as f32 {
                            128.0
                        } else {
                            plane[yy as usize * width + xx as usize] as f32
                        }
                    };
                    let v = (1.0 - fy) * ((1.0 - fx) * at(x0, y0) + fx * at(x0 + 1.0, y0))
                        + fy * ((1.0 - fx) * at(x0, y0 + 1.0) + fx * at(x0 + 1.0, y0 + 1.0));
                    out[y * width + x] = v.round().clamp(0.0, 255.0) as u8;
                }
            }
            out
        })
        .collect()
}

fn autocontrast(plane: &[u8]) -> Vec<u8> {
    let (low, high) = plane
        .iter()
        .fold((255u8, 0u8), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    if high <= low {
        return plane.to_vec();
    }
    let scale = 255.0 / (high - low) as f32;
    plane
        .iter()
        .map(|&v| ((v - low) as f32 * scale).clamp(0.0, 255.0) as u8)
        .collect()
}

fn equalize(plane: &[u8]) -> Vec<u8> {
    let mut histogram = [0usize; 256];
    for &v in plane {
        histogram[v as usize] += 1;
    }
    let non_zero: Vec<usize> = histogram.iter().copied().filter(|&n| n > 0).collect();
    let step = non_zero[..non_zero.len().saturating_sub(1)]
        .iter()
        .sum::<usize>()
        / 255;
    if step == 0 {
        return plane.to_vec();
    }
    let mut table = [0u8; 256];
    let mut running = step / 2;
    for (level, entry) in table.iter_mut().enumerate() {
        *entry = (running / step).min(255) as u8;
        running += histogram[level];
    }
    plane.iter().map(|&v| table[v as usize]).collect()
}

fn sharpness(plane: &[u8], height: usize, width: usize, factor: f32) -> Vec<u8> {
    let mut out = plane.to_vec();
    for y in 1..height.saturating_sub(1) {
        for x in 1..width.saturating_sub(1) {
            let mut sum = 0.0;
            for dy in 0..3 {
                for dx in 0..3 {
                    let weight = if dy == 1 && dx == 1 { 5.0 } else { 1.0 };
                    sum += weight * plane[(y + dy - 1) * width + x + dx - 1] as f32;
                }
            }
            let smooth = (sum / 13.0).round();
            let v = plane[y * width + x] as f32;
            out[y * width + x] = (smooth + factor * (v - smooth)).clamp(0.0, 255.0) as u8;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn gradient(height: usize, width: usize) -> Vec<Vec<u8>> {
        (0..3)
            .map(|c| {
                (0..height * width)
                    .map(|i| ((i * 7 + c * 31) % 200 + 20) as u8)
                    .collect()
            })
            .collect()
    }

    #[test]
    fn translation_moves_pixels_and_fills_with_grey() {
        // As in the original, a positive offset moves the content left (up).
        let planes = gradient(6, 8);
        let out = apply_op(AugmentOp::TranslateX, 2.0, &planes, 6, 8);
        for y in 0..6 {
            assert_eq!(out[0][y * 8 + 7], 128, "uncovered column is grey");
            assert_eq!(out[0][y * 8 + 6], 128);
            for x in 0..6 {
                assert_eq!(out[0][y * 8 + x], planes[0][y * 8 + x + 2]);
            }
        }
        let down = apply_op(AugmentOp::TranslateY, -1.0, &planes, 6, 8);
        assert_eq!(&down[1][8..16], &planes[1][0..8]);
        assert!(down[1][0..8].iter().all(|&v| v == 128));
    }

    #[test]
    fn rotation_by_zero_and_neutral_factors_change_nothing() {
        let planes = gradient(5, 7);
        assert_eq!(apply_op(AugmentOp::Rotate, 0.0, &planes, 5, 7), planes);
        assert_eq!(apply_op(AugmentOp::Brightness, 1.0, &planes, 5, 7), planes);
        assert_eq!(apply_op(AugmentOp::Sharpness, 1.0, &planes, 5, 7), planes);
        assert_eq!(apply_op(AugmentOp::ShearX, 0.0, &planes, 5, 7), planes);
        // A half turn of an odd-sized image maps (x, y) to (w - 1 - x, h - 1 - y) about the
        // centre of the pixel grid only when the centre is w/2; check the centre pixel stays.
        let turned = apply_op(AugmentOp::Rotate, 180.0, &planes, 4, 4);
        assert_eq!(turned[0][0], 128, "the corner reads outside the image");
    }

    #[test]
    fn contrast_operations_stretch_and_flatten_histograms() {
        let plane = vec![100u8, 100, 150, 150, 120, 120];
        assert_eq!(autocontrast(&plane), vec![0, 0, 255, 255, 102, 102]);
        let equalized = equalize(&[10u8, 10, 10, 200]);
        assert_eq!(
            equalized,
            vec![10, 10, 10, 200],
            "step 0 (one level dominates) leaves the channel unchanged"
        );
        let spread: Vec<u8> = (0..512).map(|i| (i / 4) as u8).collect();
        let out = equalize(&spread);
        assert!(
            out[0] < 5 && out[511] > 250,
            "a narrow histogram is spread over the whole range"
        );
    }

    #[test]
    fn the_policy_is_seeded_and_keeps_the_size_and_range() {
        let image = PixelImage {
            values: gradient(9, 11)
                .concat()
                .iter()
                .map(|&v| v as f32 / 255.0)
                .collect(),
            height: 9,
            width: 11,
            eight_bit: true,
        };
        let policy = RandAugment::default();
        let mut changed = 0;
        for seed in 0..40 {
            let a = policy.apply(&image, &mut rand::rngs::StdRng::seed_from_u64(seed));
            let b = policy.apply(&image, &mut rand::rngs::StdRng::seed_from_u64(seed));
            assert_eq!(a, b);
            assert_eq!((a.height, a.width, a.values.len()), (9, 11, 297));
            assert!(a.values.iter().all(|v| (0.0..=1.0).contains(v)));
            changed += (a != image) as usize;
        }
        assert!(
            (10..40).contains(&changed),
            "each op applies with probability 0.5 and some are identities: {changed}"
        );
    }
}
