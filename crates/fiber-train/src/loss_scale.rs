//! Dynamic loss scaling for f16 training (as PyTorch's `GradScaler`): the loss is multiplied by
//! a scale `S` before the backward pass so that small gradients stay above f16's smallest
//! subnormal (6e-8) instead of flushing to zero; the optimiser divides the gradients by `S` in
//! f32. A step whose gradients overflow is skipped and `S` halved; after
//! [`GROWTH_INTERVAL`] finite steps in a row `S` doubles, up to [`MAX_SCALE`].

/// The first scale: 2¹⁵. The backward pass of `loss · S` seeds the gradient with `S` in the
/// loss's own type, and 2¹⁶ is already past f16's largest finite value (65504).
pub const INIT_SCALE: f64 = 32768.0;
/// The largest scale (2¹⁵, for the same reason).
pub const MAX_SCALE: f64 = 32768.0;
/// Below this scale an overflow is not a matter of scale: the gradients themselves are not
/// finite, and training stops.
pub const MIN_SCALE: f64 = 1.0;
/// Finite steps in a row before the scale doubles.
pub const GROWTH_INTERVAL: u64 = 2000;

/// The current scale and how many finite steps in a row it has seen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DynamicLossScale {
    scale: f64,
    good_steps: u64,
}

impl DynamicLossScale {
    /// Starts at `scale` (normally [`INIT_SCALE`]).
    pub fn new(scale: f64) -> Self {
        Self {
            scale,
            good_steps: 0,
        }
    }

    /// A scale restored from a saved state.
    pub fn restored(scale: f64, good_steps: u64) -> Self {
        Self { scale, good_steps }
    }

    /// The factor the loss is multiplied by.
    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// Finite steps in a row at this scale.
    pub fn good_steps(&self) -> u64 {
        self.good_steps
    }

    /// Records a step whose unscaled gradients were finite: doubles the scale after
    /// [`GROWTH_INTERVAL`] of them, up to [`MAX_SCALE`].
    pub fn record_finite(&mut self) {
        self.good_steps += 1;
        if self.good_steps >= GROWTH_INTERVAL {
            self.scale = (self.scale * 2.0).min(MAX_SCALE);
            self.good_steps = 0;
        }
    }

    /// Records a step whose gradients overflowed (the step is skipped): halves the scale.
    /// Returns false when the scale would fall below [`MIN_SCALE`].
    pub fn record_overflow(&mut self) -> bool {
        self.good_steps = 0;
        if self.scale / 2.0 < MIN_SCALE {
            return false;
        }
        self.scale /= 2.0;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scale_halves_on_overflow_grows_after_an_interval_and_has_a_floor() {
        let mut s = DynamicLossScale::new(INIT_SCALE);
        assert!(s.record_overflow());
        assert_eq!(s.scale(), 16384.0);
        for _ in 0..GROWTH_INTERVAL - 1 {
            s.record_finite();
        }
        assert_eq!(s.scale(), 16384.0);
        s.record_finite();
        assert_eq!((s.scale(), s.good_steps()), (32768.0, 0));
        for _ in 0..GROWTH_INTERVAL {
            s.record_finite();
        }
        assert_eq!(s.scale(), MAX_SCALE, "never above the largest scale");
        let mut low = DynamicLossScale::new(2.0);
        assert!(low.record_overflow());
        assert_eq!(low.scale(), 1.0);
        assert!(!low.record_overflow(), "no scale below 1");
    }
}
