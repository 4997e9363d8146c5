//! Learning-rate schedules as the reference trains with them (`--lr_scheduler_type
//! cosine --warmup_ratio 0.03` in the MedTrinity/LLaVA scripts): transformers'
//! `get_cosine_schedule_with_warmup` with half a cycle, warmup steps
//! `ceil(total * warmup_ratio)` as `TrainingArguments.get_warmup_steps` computes them.
//!
//! As with PyTorch's `LambdaLR`, optimiser step `k` (counted from 0) uses every group's
//! `peak_lr * factor(k)`: the first step of a warmup runs at learning rate 0.

use std::f64::consts::PI;

/// Linear warmup, then a cosine decay to 0 over the remaining steps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct CosineSchedule {
    pub warmup_steps: u64,
    pub total_steps: u64,
}

impl CosineSchedule {
    /// The schedule for `total_steps` optimiser steps with `ceil(total * warmup_ratio)`
    /// warmup steps.
    pub(crate) fn new(total_steps: u64, warmup_ratio: f64) -> Self {
        let warmup_steps = (total_steps as f64 * warmup_ratio).ceil() as u64;
        Self {
            warmup_steps,
            total_steps,
        }
    }

    /// The multiplier of the peak learning rates at optimiser step `step` (from 0).
    pub(crate) fn factor(&self, step: u64) -> f64 {
        if step < self.warmup_steps {
            return step as f64 / self.warmup_steps.max(1) as f64;
        }
        let decay_steps = self.total_steps.saturating_sub(self.warmup_steps).max(1);
        let progress = (step - self.warmup_steps) as f64 / decay_steps as f64;
        (0.5 * (1.0 + (PI * progress).cos())).max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values of transformers' `_get_cosine_schedule_with_warmup_lr_lambda` (num_cycles
    /// 0.5) with `math.ceil(total * 0.03)` warmup steps, computed in Python.
    #[test]
    fn factors_match_transformers() {
        let s = CosineSchedule::new(100, 0.03);
        assert_eq!(s.warmup_steps, 3);
        let expected = [
            (0, 0.0),
            (1, 0.3333333333333333),
            (2, 0.6666666666666666),
            (3, 1.0),
            (4, 0.9997377845227575),
            (50, 0.5242811110572242),
            (99, 0.00026221547724253336),
            (100, 0.0),
            (120, 0.10127859471863948),
        ];
        for (step, want) in expected {
            assert!(
                (s.factor(step) - want).abs() < 1e-15,
                "step {step}: {}",
                s.factor(step)
            );
        }
        // A short run still gets one warmup step (the ceiling), then the cosine.
        let short = CosineSchedule::new(7, 0.03);
        let got: Vec<f64> = (0..8).map(|k| short.factor(k)).collect();
        let want = [
            0.0,
            1.0,
            0.9330127018922194,
            0.75,
            0.5,
            0.2500000000000001,
            0.06698729810778065,
            0.0,
        ];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-15, "{got:?}");
        }
        // No warmup: full rate at once.
        assert_eq!(CosineSchedule::new(10, 0.0).factor(0), 1.0);
    }
}
