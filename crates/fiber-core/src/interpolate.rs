//! Bicubic resampling of 2-D grids, as PyTorch's `F.interpolate(mode="bicubic",
//! align_corners=False)` computes it (cubic convolution with A = −0.75, border replication).

const A: f64 = -0.75;

fn cubic_weights(t: f64) -> [f64; 4] {
    let near = |x: f64| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let far = |x: f64| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
    [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)]
}

/// Source index and the four (clamped index, weight) taps for output position `dst`.
fn taps(dst: usize, in_len: usize, out_len: usize) -> [(usize, f64); 4] {
    let scale = in_len as f64 / out_len as f64;
    let real = scale * (dst as f64 + 0.5) - 0.5;
    let base = real.floor();
    let w = cubic_weights(real - base);
    let at = |k: i64| (base as i64 + k).clamp(0, in_len as i64 - 1) as usize;
    [(at(-1), w[0]), (at(0), w[1]), (at(1), w[2]), (at(2), w[3])]
}

/// Resamples each of `channels` row-major `h × w` grids stored contiguously in `src`
/// (`[channels, h, w]`) to `nh × nw` → `[channels, nh, nw]`.
pub fn bicubic_resize(
    src: &[f32],
    channels: usize,
    (h, w): (usize, usize),
    (nh, nw): (usize, usize),
) -> Vec<f32> {
    assert_eq!(
        src.len(),
        channels * h * w,
        "bicubic_resize: {} values for {channels}×{h}×{w}",
        src.len()
    );
    let rows: Vec<_> = (0..nh).map(|y| taps(y, h, nh)).collect();
    let cols: Vec<_> = (0..nw).map(|x| taps(x, w, nw)).collect();
    let mut out = Vec::with_capacity(channels * nh * nw);
    for c in 0..channels {
        let grid = &src[c * h * w..(c + 1) * h * w];
        for row in &rows {
            for col in &cols {
                let mut acc = 0.0f64;
                for &(y, wy) in row {
                    for &(x, wx) in col {
                        acc += wy * wx * grid[y * w + x] as f64;
                    }
                }
                out.push(acc as f32);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_size_returns_the_input_and_constants_stay_constant() {
        let src: Vec<f32> = (0..12).map(|i| i as f32 * 0.5).collect();
        let same = bicubic_resize(&src, 1, (3, 4), (3, 4));
        for (a, b) in same.iter().zip(&src) {
            assert!((a - b).abs() < 1e-6);
        }
        let flat = bicubic_resize(&[2.0; 9], 1, (3, 3), (5, 5));
        assert!(flat.iter().all(|v| (v - 2.0).abs() < 1e-6));
    }
}
