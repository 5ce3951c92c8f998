//! The learning-rate schedule.

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
