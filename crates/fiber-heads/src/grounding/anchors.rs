//! Anchors (docs/model.md §5.2): one square anchor per location and level, of side
//! `multiple × stride`, in maskrcnn-benchmark's "+1" pixel convention: the anchor of the cell
//! at the origin is `(−(m−1)/2·s, −(m−1)/2·s, (m+1)/2·s − 1, (m+1)/2·s − 1)` (for m = 8:
//! `(−3.5s, −3.5s, 4.5s − 1, 4.5s − 1)`), shifted by `(x·s, y·s)`.

/// The anchor of the cell at the origin for `stride` and side `multiple × stride`:
/// `(x0, y0, x1, y1)`.
pub fn cell_anchor(stride: usize, multiple: usize) -> [f32; 4] {
    let s = stride as f64;
    let centre = (s - 1.0) / 2.0;
    let half = (multiple as f64 * s - 1.0) / 2.0;
    let (lo, hi) = ((centre - half) as f32, (centre + half) as f32);
    [lo, lo, hi, hi]
}

/// Anchors of one level of `height × width` locations, row-major over (y, x): `[H·W][4]`.
pub fn level_anchors(height: usize, width: usize, stride: usize, multiple: usize) -> Vec<[f32; 4]> {
    let [x0, y0, x1, y1] = cell_anchor(stride, multiple);
    let mut anchors = Vec::with_capacity(height * width);
    for y in 0..height {
        for x in 0..width {
            let (dx, dy) = ((x * stride) as f32, (y * stride) as f32);
            anchors.push([x0 + dx, y0 + dy, x1 + dx, y1 + dy]);
        }
    }
    anchors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cell_anchors_follow_the_plus_one_convention() {
        assert_eq!(cell_anchor(8, 8), [-28.0, -28.0, 35.0, 35.0]);
        assert_eq!(cell_anchor(128, 8), [-448.0, -448.0, 575.0, 575.0]);
        // width with the +1 convention is exactly 8 × stride
        let [x0, _, x1, _] = cell_anchor(16, 8);
        assert_eq!(x1 - x0 + 1.0, 128.0);
    }

    #[test]
    fn level_anchors_are_row_major_shifts_of_the_cell_anchor() {
        let a = level_anchors(2, 3, 8, 8);
        assert_eq!(a.len(), 6);
        assert_eq!(a[1], [-20.0, -28.0, 43.0, 35.0]);
        assert_eq!(a[3], [-28.0, -20.0, 35.0, 43.0]);
    }
}
