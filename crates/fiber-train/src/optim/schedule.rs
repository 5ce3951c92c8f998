//! The learning-rate schedules: HuggingFace's linear warm-up and decay (the coarse stage and
//! its fine-tuning tasks) and the detector's warm-up followed by steps (docs/model.md §5.5).

use burn::config::Config;

/// Learning rate of step `step` (from 0) of `total`: linear warm-up over `warmup` steps, then
/// linear decay to 0 at `total` (docs/model.md §3.5; HuggingFace's `get_linear_schedule_with_warmup`,
/// whose first step has learning rate 0 when there is a warm-up).
pub fn linear_schedule(step: u64, total: u64, warmup: u64, base_lr: f64) -> f64 {
    if step < warmup {
        base_lr * step as f64 / warmup.max(1) as f64
    } else {
        base_lr * (total.saturating_sub(step) as f64 / total.saturating_sub(warmup).max(1) as f64)
    }
}

/// How a stage's learning rate (and weight decay) change over its steps.
#[derive(Config, Debug, PartialEq)]
pub struct LrSchedule {
    /// Fractions of the steps at which the rate is multiplied by `gamma` (0.67 and 0.89 in
    /// FIBER's fine-grained stage); empty: linear decay to 0 after the warm-up (HuggingFace's).
    #[config(default = "Vec::new()")]
    pub milestones: Vec<f64>,
    /// The factor of each milestone (0.1).
    #[config(default = 0.1)]
    pub gamma: f64,
    /// With milestones, the warm-up rises linearly from this fraction of the rate (0.001 in
    /// the original's `WarmupMultiStepLR`).
    #[config(default = 0.001)]
    pub warmup_start_factor: f64,
    /// With milestones, the weight decay is multiplied by `gamma` once training passes this
    /// fraction of each milestone (0.667, the original's `WEIGHT_DECAY_SCHEDULE_RATIO`; none:
    /// constant weight decay).
    #[config(default = "None")]
    pub weight_decay_ratio: Option<f64>,
}

impl LrSchedule {
    /// The milestone steps of a stage of `total` steps.
    fn milestone_steps(&self, total: u64) -> impl Iterator<Item = f64> + '_ {
        self.milestones.iter().map(move |m| m * total as f64)
    }

    /// Learning rate of step `step` (from 0) of `total` with `warmup` warm-up steps. With
    /// milestones: `base_lr · w · gamma^(milestones passed)`, where `w` rises linearly from
    /// `warmup_start_factor` at step 0 to 1 at `warmup` (the original's `WarmupMultiStepLR`).
    pub fn lr(&self, step: u64, total: u64, warmup: u64, base_lr: f64) -> f64 {
        if self.milestones.is_empty() {
            return linear_schedule(step, total, warmup, base_lr);
        }
        let warm = if step < warmup {
            let alpha = step as f64 / warmup as f64;
            self.warmup_start_factor * (1.0 - alpha) + alpha
        } else {
            1.0
        };
        let passed = self
            .milestone_steps(total)
            .filter(|&m| step as f64 >= m)
            .count();
        base_lr * warm * self.gamma.powi(passed as i32)
    }

    /// The weight-decay factor of step `step` of `total`: `gamma` to the number of milestones
    /// `m` with `step ≥ weight_decay_ratio · m` (1 without a weight-decay schedule).
    pub fn weight_decay_factor(&self, step: u64, total: u64) -> f64 {
        let Some(ratio) = self.weight_decay_ratio else {
            return 1.0;
        };
        let passed = self
            .milestone_steps(total)
            .filter(|&m| step as f64 >= m * ratio)
            .count();
        self.gamma.powi(passed as i32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_step_schedule_warms_up_from_its_start_factor_and_drops_at_the_milestones() {
        let schedule = LrSchedule::new()
            .with_milestones(vec![0.67, 0.89])
            .with_weight_decay_ratio(Some(0.667));
        let lr = |step| schedule.lr(step, 100, 10, 1.0);
        assert!((lr(0) - 0.001).abs() < 1e-12);
        assert!((lr(5) - (0.001 * 0.5 + 0.5)).abs() < 1e-12);
        assert_eq!(lr(10), 1.0);
        assert_eq!(lr(66), 1.0);
        assert!((lr(67) - 0.1).abs() < 1e-12);
        assert!((lr(89) - 0.01).abs() < 1e-12);
        let wd = |step| schedule.weight_decay_factor(step, 100);
        assert_eq!(wd(44), 1.0);
        assert!((wd(45) - 0.1).abs() < 1e-12, "0.667 × 67 = 44.7");
        assert!((wd(60) - 0.01).abs() < 1e-12, "0.667 × 89 = 59.4");
        assert_eq!(LrSchedule::new().weight_decay_factor(99, 100), 1.0);
        // Without milestones it is the linear schedule.
        assert_eq!(LrSchedule::new().lr(50, 100, 0, 1.0), 0.5);
    }
}
