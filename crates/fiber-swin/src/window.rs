//! Window plumbing of Swin: partition, reverse, cyclic-shift masks and relative-position
//! indices (docs/model.md §1.1). The masks and indices depend only on sizes and are built on the host.
//!
//! The blocks rearrange tokens with the row maps [`shifted_window_rows`] and
//! [`window_token_rows`] (one gather each way). [`window_partition`], [`window_reverse`] and
//! [`roll_grid`] are the same rearrangements as tensor operations, as the original code
//! writes them: the definitions the row maps are tested against, kept public for users who
//! rearrange tensors themselves.

use burn::prelude::*;
use burn::tensor::TensorData;

use crate::padding::round_up;

/// `[batch, h, w, c]` → `[batch·(h/ws)·(w/ws), ws·ws, c]`; `h` and `w` must be multiples of `ws`.
pub fn window_partition<B: Backend>(x: Tensor<B, 4>, ws: usize) -> Tensor<B, 3> {
    let [b, h, w, c] = x.dims();
    x.reshape([b, h / ws, ws, w / ws, ws, c])
        .swap_dims(2, 3)
        .reshape([b * (h / ws) * (w / ws), ws * ws, c])
}

/// Inverse of [`window_partition`]: `[batch·nw, ws·ws, c]` → `[batch, h, w, c]`.
pub fn window_reverse<B: Backend>(
    windows: Tensor<B, 3>,
    ws: usize,
    h: usize,
    w: usize,
) -> Tensor<B, 4> {
    let [n, _, c] = windows.dims();
    let b = n / ((h / ws) * (w / ws));
    windows
        .reshape([b, h / ws, w / ws, ws, ws, c])
        .swap_dims(2, 3)
        .reshape([b, h, w, c])
}

/// Cyclic shift of a `[batch, h, w, c]` grid by `shift` along both spatial axes with PyTorch's
/// `torch.roll` convention: element `i` moves to `i + shift` (mod n). Burn 0.21's `roll` uses the
/// opposite sign, so the shift is spelled out with slices here.
pub fn roll_grid<B: Backend>(x: Tensor<B, 4>, shift: isize) -> Tensor<B, 4> {
    let mut x = x;
    for dim in [1, 2] {
        let n = x.dims()[dim] as isize;
        let split = (-shift).rem_euclid(n) as usize;
        if split != 0 {
            x = Tensor::cat(
                vec![x.clone().slice_dim(dim, split..), x.slice_dim(dim, ..split)],
                dim,
            );
        }
    }
    x
}

/// The source token of every window row: tokens `[batch, h·w]` of a row-major `h × w` grid,
/// zero-padded at the bottom/right to multiples of `ws` (`hp × wp`), cyclically shifted by
/// `−shift` ([`roll_grid`]) and cut into windows ([`window_partition`]) give
/// `[batch·(hp/ws)·(wp/ws), ws·ws]` rows; entry `r` is the token row (`b·h·w + y·w + x`) that
/// row `r` holds, `None` for padding. One gather with it does the pad, roll and partition.
pub fn shifted_window_rows(
    batch: usize,
    (h, w): (usize, usize),
    ws: usize,
    shift: usize,
) -> Vec<Option<usize>> {
    let (hp, wp) = (round_up(h, ws), round_up(w, ws));
    let mut rows = Vec::with_capacity(batch * hp * wp);
    for b in 0..batch {
        for wy in 0..hp / ws {
            for wx in 0..wp / ws {
                for r in 0..ws {
                    let y = (wy * ws + r + shift) % hp;
                    for s in 0..ws {
                        let x = (wx * ws + s + shift) % wp;
                        rows.push((y < h && x < w).then_some(b * h * w + y * w + x));
                    }
                }
            }
        }
    }
    rows
}

/// The inverse of [`shifted_window_rows`]: for every token `(b, y, x)` of the `h × w` grid, in
/// row-major order, the window row that holds it (windows reversed, shift undone, padding
/// cropped in one gather).
pub fn window_token_rows(
    batch: usize,
    (h, w): (usize, usize),
    ws: usize,
    shift: usize,
) -> Vec<Option<usize>> {
    let (hp, wp) = (round_up(h, ws), round_up(w, ws));
    let windows_per_row = wp / ws;
    let area = ws * ws;
    let mut rows = Vec::with_capacity(batch * h * w);
    for b in 0..batch {
        for y in 0..h {
            let i = (y + hp - shift % hp) % hp;
            for x in 0..w {
                let j = (x + wp - shift % wp) % wp;
                let window = (i / ws) * windows_per_row + j / ws;
                let pos = (i % ws) * ws + j % ws;
                rows.push(Some(b * hp * wp + window * area + pos));
            }
        }
    }
    rows
}

/// Value added to attention scores between tokens of different regions of a shifted window
/// (−100, as the original Swin and HuggingFace).
pub const SHIFT_MASK_VALUE: f32 = -100.0;

/// Additive mask of shifted-window attention for a padded map of `h × w` tokens:
/// `[num_windows, ws·ws, ws·ws]`, 0 within a region and [`SHIFT_MASK_VALUE`] across regions.
/// Regions per axis: `[0, n−ws)`, `[n−ws, n−shift)`, `[n−shift, n)`.
pub fn shifted_window_mask<B: Backend>(
    h: usize,
    w: usize,
    ws: usize,
    shift: usize,
    device: &B::Device,
) -> Tensor<B, 3> {
    let region = |i: usize, n: usize| (i >= n - ws) as usize + (i >= n - shift) as usize;
    let (nh, nw) = (h / ws, w / ws);
    let area = ws * ws;
    let mut labels = vec![0usize; nh * nw * area];
    for y in 0..h {
        for x in 0..w {
            let window = (y / ws) * nw + x / ws;
            let pos = (y % ws) * ws + x % ws;
            labels[window * area + pos] = region(y, h) * 3 + region(x, w);
        }
    }
    let mut mask = Vec::with_capacity(nh * nw * area * area);
    for window in labels.chunks(area) {
        for &a in window {
            for &b in window {
                mask.push(if a == b { 0.0 } else { SHIFT_MASK_VALUE });
            }
        }
    }
    Tensor::from_data(TensorData::new(mask, [nh * nw, area, area]), device)
}

/// Row indices into a relative-position table built for windows of side `table_window`, for
/// every (query, key) pair of a window of side `ws ≤ table_window`: `ws⁴` indices, row-major
/// over `[ws·ws, ws·ws]`. With `ws == table_window` this is Swin's `relative_position_index`.
pub fn relative_position_index(ws: usize, table_window: usize) -> Vec<i64> {
    let side = 2 * table_window - 1;
    let coords: Vec<(usize, usize)> = (0..ws * ws).map(|p| (p / ws, p % ws)).collect();
    let mut index = Vec::with_capacity(coords.len() * coords.len());
    for &(qy, qx) in &coords {
        for &(ky, kx) in &coords {
            let dy = qy + table_window - 1 - ky;
            let dx = qx + table_window - 1 - kx;
            index.push((dy * side + dx) as i64);
        }
    }
    index
}

#[cfg(test)]
mod tests {
    use super::*;
    type B = burn::backend::NdArray;

    #[test]
    fn partition_and_reverse_round_trip() {
        let device = Default::default();
        let x = Tensor::<B, 4>::random([2, 6, 4, 3], burn::tensor::Distribution::Default, &device);
        let windows = window_partition(x.clone(), 2);
        assert_eq!(windows.dims(), [2 * 3 * 2, 4, 3]);
        assert_eq!(window_reverse(windows, 2, 6, 4).into_data(), x.into_data());
    }

    #[test]
    fn partition_puts_a_windows_tokens_together_in_row_major_order() {
        let device = Default::default();
        // one channel whose value is y*10 + x
        let values: Vec<f32> = (0..4)
            .flat_map(|y| (0..4).map(move |x| (y * 10 + x) as f32))
            .collect();
        let x = Tensor::<B, 4>::from_data(TensorData::new(values, [1, 4, 4, 1]), &device);
        let w: Vec<f32> = window_partition(x, 2).into_data().into_vec().unwrap();
        assert_eq!(&w[..8], &[0.0, 1.0, 10.0, 11.0, 2.0, 3.0, 12.0, 13.0]);
    }

    #[test]
    fn roll_follows_the_pytorch_convention() {
        let values: Vec<f32> = (0..3)
            .flat_map(|y| (0..3).map(move |x| (y * 10 + x) as f32))
            .collect();
        let x =
            Tensor::<B, 4>::from_data(TensorData::new(values, [1, 3, 3, 1]), &Default::default());
        // torch.roll(x, shifts=(-1, -1), dims=(1, 2)): the element at (1, 1) moves to (0, 0).
        let up: Vec<f32> = roll_grid(x.clone(), -1).into_data().into_vec().unwrap();
        assert_eq!(up, vec![11.0, 12.0, 10.0, 21.0, 22.0, 20.0, 1.0, 2.0, 0.0]);
        assert_eq!(
            roll_grid(roll_grid(x.clone(), -1), 1).into_data(),
            x.into_data()
        );
    }

    /// The index maps against the tensor operations they replace: pad, roll, partition and
    /// back, on a grid that needs padding, with and without a shift.
    #[test]
    fn window_row_maps_equal_pad_roll_and_partition() {
        use crate::padding::pad_end;
        use fiber_core::kernels::gather_rows;
        let device = Default::default();
        let (b, h, w, c, ws) = (2, 5, 7, 3, 3);
        let x = Tensor::<B, 4>::random([b, h, w, c], burn::tensor::Distribution::Default, &device);
        let (hp, wp) = (6, 9);
        for shift in [0, 1] {
            let padded = pad_end(pad_end(x.clone(), 2, wp), 1, hp);
            let want = window_partition(roll_grid(padded, -(shift as isize)), ws);
            let tokens = x.clone().reshape([b * h * w, c]);
            let got = gather_rows(tokens, &shifted_window_rows(b, (h, w), ws, shift));
            assert_eq!(
                got.reshape(want.dims()).into_data(),
                want.clone().into_data()
            );
            let back = roll_grid(window_reverse(want.clone(), ws, hp, wp), shift as isize).slice([
                0..b,
                0..h,
                0..w,
                0..c,
            ]);
            let rows = want.reshape([b * hp * wp, c]);
            let got = gather_rows(rows, &window_token_rows(b, (h, w), ws, shift));
            assert_eq!(got.reshape([b, h, w, c]).into_data(), back.into_data());
        }
    }

    #[test]
    fn relative_index_matches_swin_for_a_full_window() {
        // Swin's index for a 2×2 window: (dy+1)·3 + (dx+1) for query q and key k.
        let index = relative_position_index(2, 2);
        assert_eq!(&index[..4], &[4, 3, 1, 0]);
        assert_eq!(&index[12..], &[8, 7, 5, 4]);
        // A 1×1 window inside a table for 2×2 windows uses the centre entry (offset 0).
        assert_eq!(relative_position_index(1, 2), vec![4]);
    }

    #[test]
    fn shifted_mask_separates_the_wrapped_regions() {
        let mask: Vec<f32> = shifted_window_mask::<B>(4, 4, 2, 1, &Default::default())
            .into_data()
            .into_vec()
            .unwrap();
        // the first window holds one region only: nothing is masked
        assert!(mask[..16].iter().all(|&m| m == 0.0));
        // the last window mixes four regions: each token sees only itself
        let last = &mask[48..];
        for q in 0..4 {
            for k in 0..4 {
                assert_eq!(last[q * 4 + k], if q == k { 0.0 } else { SHIFT_MASK_VALUE });
            }
        }
    }
}
