//! Box coding (docs/model.md §5.2): a box relative to an anchor as weighted centre offsets and
//! log size ratios, in maskrcnn-benchmark's "+1" pixel convention (a box from x0 to x1 is
//! `x1 − x0 + 1` wide), with the size ratio clamped when decoding.

use burn::config::Config;
use burn::prelude::*;

/// How box deltas relate boxes to anchors.
#[derive(Config, Debug, PartialEq)]
pub struct BoxCoderConfig {
    /// Weights of the (x, y, w, h) deltas: `dx = wx·(cx − cx_a)/w_a`, `dw = ww·ln(w/w_a)`
    /// ((10, 10, 5, 5) in the original).
    #[config(default = "[10.0, 10.0, 5.0, 5.0]")]
    pub weights: [f32; 4],
    /// Largest log size ratio a decoded box may have, `ln(1000/16)`.
    #[config(default = 4.135_166_556_742_356)]
    pub max_log_ratio: f64,
}

/// Width, height and centre of a box in the "+1" convention.
fn size_and_centre(b: [f32; 4]) -> (f32, f32, f32, f32) {
    let w = b[2] - b[0] + 1.0;
    let h = b[3] - b[1] + 1.0;
    (w, h, b[0] + 0.5 * w, b[1] + 0.5 * h)
}

impl BoxCoderConfig {
    /// The deltas `(dx, dy, dw, dh)` that take `anchor` to `target` (both `(x0, y0, x1, y1)`).
    pub fn encode(&self, target: [f32; 4], anchor: [f32; 4]) -> [f32; 4] {
        let [wx, wy, ww, wh] = self.weights;
        let (aw, ah, ax, ay) = size_and_centre(anchor);
        let (tw, th, tx, ty) = size_and_centre(target);
        [
            wx * (tx - ax) / aw,
            wy * (ty - ay) / ah,
            ww * (tw / aw).ln(),
            wh * (th / ah).ln(),
        ]
    }

    /// The box `(x0, y0, x1, y1)` that `deltas` make of `anchor` (the size ratio clamped).
    pub fn decode(&self, deltas: [f32; 4], anchor: [f32; 4]) -> [f32; 4] {
        let [wx, wy, ww, wh] = self.weights;
        let clip = self.max_log_ratio as f32;
        let (aw, ah, ax, ay) = size_and_centre(anchor);
        let cx = deltas[0] / wx * aw + ax;
        let cy = deltas[1] / wy * ah + ay;
        let w = (deltas[2] / ww).min(clip).exp() * aw;
        let h = (deltas[3] / wh).min(clip).exp() * ah;
        [
            cx - 0.5 * w,
            cy - 0.5 * h,
            cx + 0.5 * w - 1.0,
            cy + 0.5 * h - 1.0,
        ]
    }

    /// [`Self::decode`] on tensors: deltas `[N, 4]` and anchors `[N, 4]` give boxes `[N, 4]`,
    /// differentiable in the deltas.
    pub fn decode_tensor<B: Backend>(
        &self,
        deltas: Tensor<B, 2>,
        anchors: Tensor<B, 2>,
    ) -> Tensor<B, 2> {
        let [wx, wy, ww, wh] = self.weights.map(f64::from);
        let column = |t: &Tensor<B, 2>, i: usize| t.clone().narrow(1, i, 1);
        let aw = column(&anchors, 2) - column(&anchors, 0) + 1.0;
        let ah = column(&anchors, 3) - column(&anchors, 1) + 1.0;
        let ax = column(&anchors, 0) + aw.clone() * 0.5;
        let ay = column(&anchors, 1) + ah.clone() * 0.5;
        let cx = column(&deltas, 0).div_scalar(wx) * aw.clone() + ax;
        let cy = column(&deltas, 1).div_scalar(wy) * ah.clone() + ay;
        let w = column(&deltas, 2)
            .div_scalar(ww)
            .clamp_max(self.max_log_ratio)
            .exp()
            * aw;
        let h = column(&deltas, 3)
            .div_scalar(wh)
            .clamp_max(self.max_log_ratio)
            .exp()
            * ah;
        let (half_w, half_h) = (w * 0.5, h * 0.5);
        Tensor::cat(
            vec![
                cx.clone() - half_w.clone(),
                cy.clone() - half_h.clone(),
                cx + half_w - 1.0,
                cy + half_h - 1.0,
            ],
            1,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding_undoes_encoding_and_clamps_the_size_ratio() {
        let coder = BoxCoderConfig::new();
        let anchor = [-28.0, -28.0, 35.0, 35.0];
        let target = [3.0, 10.5, 40.0, 22.0];
        let deltas = coder.encode(target, anchor);
        let back = coder.decode(deltas, anchor);
        for (a, b) in back.iter().zip(target) {
            assert!((a - b).abs() < 1e-4, "{back:?}");
        }
        // the anchor itself codes as zeros
        assert_eq!(coder.encode(anchor, anchor), [0.0; 4]);
        // a huge width delta is clamped at ln(1000/16): 64 px × 62.5 wide
        let wide = coder.decode([0.0, 0.0, 100.0, 0.0], anchor);
        assert!(
            (wide[2] - wide[0] + 1.0 - 64.0 * 62.5).abs() < 1e-2,
            "{wide:?}"
        );

        type B = burn::backend::NdArray<f32>;
        let device = Default::default();
        let d = Tensor::<B, 2>::from_floats([deltas, [0.0, 0.0, 100.0, 0.0]], &device);
        let a = Tensor::<B, 2>::from_floats([anchor, anchor], &device);
        let boxes: Vec<f32> = coder.decode_tensor(d, a).into_data().into_vec().unwrap();
        for (a, b) in boxes.iter().zip(back.iter().chain(wide.iter())) {
            assert!((a - b).abs() < 1e-3, "{boxes:?}");
        }
    }
}
