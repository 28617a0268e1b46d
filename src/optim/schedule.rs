//! Learning-rate schedules: the factor the base learning rate is multiplied by at each step.
//!
//! Steps are numbered from 1, as Adam's bias corrections count them: step t is the t-th
//! update applied.

use crate::error::{Error, Result};

/// How the learning rate changes over training: α_t = α · factor(t).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Schedule {
    /// factor 1 at every step.
    Constant,
    /// factor γ^⌊(t − 1) / every⌋: steps 1..=every use the base rate, the next `every` steps
    /// γ times it, and so on (PyTorch's `StepLR`, whose epochs count from 0).
    StepDecay {
        /// The number of steps between two decays (≥ 1).
        every: u64,
        /// The factor γ each decay multiplies the rate by, in `(0, 1]`.
        gamma: f64,
    },
    /// `StepDecay` times a linear warm-up over the first `warmup` steps:
    /// factor min(1, t / warmup)·γ^⌊(t − 1) / every⌋ (no warm-up when `warmup` is 0).
    WarmupStepDecay {
        /// The number of warm-up steps (0: none).
        warmup: u64,
        /// The number of steps between two decays (≥ 1), counted from step 1.
        every: u64,
        /// The factor γ each decay multiplies the rate by, in `(0, 1]`.
        gamma: f64,
    },
    /// A linear warm-up over the first `warmup` steps (factor t / warmup, 1 at t = warmup),
    /// then half a cosine down to `final_fraction` at step `total`, which it keeps after:
    /// factor f + (1 − f)·½·(1 + cos(π·(t − warmup) / (total − warmup))).
    WarmupCosine {
        /// The number of warm-up steps (0: the cosine starts at once).
        warmup: u64,
        /// The step at which the cosine reaches its floor (> `warmup`).
        total: u64,
        /// The floor f, as a fraction of the base rate, in `[0, 1]`.
        final_fraction: f64,
    },
}

impl Schedule {
    /// The factor of the base learning rate at step `step` (≥ 1).
    pub fn factor(&self, step: u64) -> f64 {
        match *self {
            Schedule::Constant => 1.0,
            Schedule::StepDecay { every, gamma } => {
                let decays = step.saturating_sub(1) / every;
                gamma.powf(decays as f64)
            }
            Schedule::WarmupStepDecay {
                warmup,
                every,
                gamma,
            } => {
                let ramp = if step < warmup {
                    step as f64 / warmup as f64
                } else {
                    1.0
                };
                ramp * Schedule::StepDecay { every, gamma }.factor(step)
            }
            Schedule::WarmupCosine {
                warmup,
                total,
                final_fraction,
            } => {
                if step < warmup {
                    return step as f64 / warmup as f64;
                }
                let progress = ((step - warmup) as f64 / (total - warmup) as f64).min(1.0);
                let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
                final_fraction + (1.0 - final_fraction) * cosine
            }
        }
    }

    /// Fails unless the schedule's parameters describe one: a decay every ≥ 1 steps by a
    /// factor in (0, 1]; a cosine phase of at least one step ending at a fraction in [0, 1].
    pub fn validate(&self) -> Result<()> {
        const OP: &str = "Schedule";
        match *self {
            Schedule::Constant => Ok(()),
            Schedule::StepDecay { every, gamma }
            | Schedule::WarmupStepDecay { every, gamma, .. } => {
                if every == 0 {
                    return Err(Error::invalid(
                        OP,
                        "step decay every 0 steps: the interval must be at least 1",
                    ));
                }
                if !(gamma > 0.0 && gamma <= 1.0) {
                    return Err(Error::invalid(
                        OP,
                        format!("step decay factor gamma = {gamma} must be in (0, 1]"),
                    ));
                }
                Ok(())
            }
            Schedule::WarmupCosine {
                warmup,
                total,
                final_fraction,
            } => {
                if total <= warmup {
                    return Err(Error::invalid(
                        OP,
                        format!(
                            "cosine schedule with total = {total} steps and warmup = {warmup}: \
                             total must exceed warmup, leaving the cosine at least one step"
                        ),
                    ));
                }
                if !(0.0..=1.0).contains(&final_fraction) {
                    return Err(Error::invalid(
                        OP,
                        format!(
                            "cosine schedule final_fraction = {final_fraction} must be in [0, 1]"
                        ),
                    ));
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Schedule;

    #[test]
    fn warm_up_then_step_decay() {
        let schedule = Schedule::WarmupStepDecay {
            warmup: 4,
            every: 10,
            gamma: 0.5,
        };
        let factors: Vec<f64> = [1, 2, 4, 10, 11, 21].map(|t| schedule.factor(t)).to_vec();
        assert_eq!(factors, [0.25, 0.5, 1.0, 1.0, 0.5, 0.25]);
        let no_warmup = Schedule::WarmupStepDecay {
            warmup: 0,
            every: 10,
            gamma: 0.5,
        };
        let decay = Schedule::StepDecay {
            every: 10,
            gamma: 0.5,
        };
        for t in [1, 10, 11, 35] {
            assert_eq!(no_warmup.factor(t), decay.factor(t));
        }
        let bad = Schedule::WarmupStepDecay {
            warmup: 5,
            every: 0,
            gamma: 0.5,
        };
        assert!(bad.validate().unwrap_err().to_string().contains("every 0"));
    }
}
