//! What an optimizer does: the update rule with its hyperparameters, the learning rate and
//! its schedule, and gradient clipping.

use crate::error::{Error, Result};
use crate::optim::Schedule;

/// An update rule and its hyperparameters. Each behaves as the PyTorch optimizer it names,
/// with that optimizer's names for its state tensors.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rule {
    /// θ ← θ − α·g (`torch.optim.SGD`). No state.
    Sgd,
    /// v ← μ·v + g; θ ← θ − α·v, or θ ← θ − α·(g + μ·v) with Nesterov
    /// (`torch.optim.SGD` with momentum, no dampening). State: `momentum_buffer` (v).
    Momentum {
        /// The momentum μ, in `[0, 1)`: the fraction of the previous velocity kept.
        momentum: f32,
        /// Whether to step along g + μ·v (Nesterov's look-ahead) instead of v.
        nesterov: bool,
    },
    /// m ← β1·m + (1 − β1)·g; v ← β2·v + (1 − β2)·g²; θ ← θ − α·m̂/(√v̂ + ε) with
    /// m̂ = m/(1 − β1ᵗ), v̂ = v/(1 − β2ᵗ) (`torch.optim.Adam`). State: `exp_avg` (m),
    /// `exp_avg_sq` (v).
    Adam {
        /// β1, in `[0, 1)`: how slowly the mean of the gradients m forgets (0.9 is usual).
        beta1: f32,
        /// β2, in `[0, 1)`: how slowly the mean of the squared gradients v forgets (0.999).
        beta2: f32,
        /// ε ≥ 0, added to √v̂ so that a parameter with tiny gradients takes no huge step.
        eps: f32,
    },
    /// Adam after the decoupled weight decay θ ← θ − α·λ·θ (`torch.optim.AdamW`).
    AdamW {
        /// β1, as for [`Rule::Adam`].
        beta1: f32,
        /// β2, as for [`Rule::Adam`].
        beta2: f32,
        /// ε, as for [`Rule::Adam`].
        eps: f32,
        /// The decay λ ≥ 0: each step shrinks every parameter by the fraction α·λ,
        /// independently of its gradient.
        weight_decay: f32,
    },
}

impl Rule {
    /// Adam with PyTorch's defaults: β1 = 0.9, β2 = 0.999, ε = 1e-8.
    pub const fn adam() -> Rule {
        Rule::Adam {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }

    /// AdamW with PyTorch's default betas and ε, and decay λ = `weight_decay`.
    pub const fn adamw(weight_decay: f32) -> Rule {
        Rule::AdamW {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
        }
    }

    /// The names of the state tensors the rule keeps per parameter, in the order the
    /// update kernel binds them.
    pub fn state_names(&self) -> &'static [&'static str] {
        match self {
            Rule::Sgd => &[],
            Rule::Momentum { .. } => &["momentum_buffer"],
            Rule::Adam { .. } | Rule::AdamW { .. } => &["exp_avg", "exp_avg_sq"],
        }
    }

    /// (β1, β2) of the Adam family.
    pub(crate) fn betas(&self) -> Option<(f32, f32)> {
        match *self {
            Rule::Adam { beta1, beta2, .. } | Rule::AdamW { beta1, beta2, .. } => {
                Some((beta1, beta2))
            }
            Rule::Sgd | Rule::Momentum { .. } => None,
        }
    }

    /// λ of the decoupled weight decay (0 for every rule but AdamW).
    pub(crate) fn weight_decay(&self) -> f32 {
        match *self {
            Rule::AdamW { weight_decay, .. } => weight_decay,
            _ => 0.0,
        }
    }

    /// Fails unless every hyperparameter is in its range (as PyTorch checks them, with
    /// momentum also below 1, where it stops being an average).
    pub fn validate(&self) -> Result<()> {
        match *self {
            Rule::Sgd => Ok(()),
            Rule::Momentum { momentum, nesterov } => {
                unit_interval("momentum", momentum)?;
                if nesterov && momentum == 0.0 {
                    return Err(Error::invalid(
                        OP,
                        "Nesterov momentum needs momentum > 0, got 0",
                    ));
                }
                Ok(())
            }
            Rule::Adam { beta1, beta2, eps } => adam_hyperparameters(beta1, beta2, eps),
            Rule::AdamW {
                beta1,
                beta2,
                eps,
                weight_decay,
            } => {
                adam_hyperparameters(beta1, beta2, eps)?;
                non_negative("weight_decay", weight_decay)
            }
        }
    }
}

const OP: &str = "Optimizer";

fn adam_hyperparameters(beta1: f32, beta2: f32, eps: f32) -> Result<()> {
    unit_interval("beta1", beta1)?;
    unit_interval("beta2", beta2)?;
    non_negative("eps", eps)
}

/// Fails unless `value` is in [0, 1).
fn unit_interval(name: &str, value: f32) -> Result<()> {
    if (0.0..1.0).contains(&value) {
        Ok(())
    } else {
        Err(Error::invalid(
            OP,
            format!("{name} = {value} must be in [0, 1)"),
        ))
    }
}

/// Fails unless `value` is finite and ≥ 0.
fn non_negative(name: &str, value: f32) -> Result<()> {
    if value >= 0.0 && value.is_finite() {
        Ok(())
    } else {
        Err(Error::invalid(
            OP,
            format!("{name} = {value} must be finite and ≥ 0"),
        ))
    }
}

/// Everything an [`crate::optim::Optimizer`] needs besides its parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OptimizerConfig {
    /// The update rule and its hyperparameters.
    pub rule: Rule,
    /// The base learning rate α, which the schedule scales at each step.
    pub lr: f32,
    /// How the learning rate changes from step to step.
    pub schedule: Schedule,
    /// Clip the gradients to this global L2 norm before the update; `None`: no clipping.
    pub max_grad_norm: Option<f32>,
}

impl OptimizerConfig {
    /// `rule` at the constant learning rate `lr`, without clipping.
    pub fn new(rule: Rule, lr: f32) -> OptimizerConfig {
        OptimizerConfig {
            rule,
            lr,
            schedule: Schedule::Constant,
            max_grad_norm: None,
        }
    }

    /// The same with the learning rate following `schedule`.
    pub fn with_schedule(self, schedule: Schedule) -> OptimizerConfig {
        OptimizerConfig { schedule, ..self }
    }

    /// The same with the gradients clipped to the global norm `max_norm`.
    pub fn with_max_grad_norm(self, max_norm: f32) -> OptimizerConfig {
        OptimizerConfig {
            max_grad_norm: Some(max_norm),
            ..self
        }
    }

    /// The learning rate at step `step` (≥ 1): the base rate times the schedule's factor.
    pub fn learning_rate(&self, step: u64) -> f64 {
        f64::from(self.lr) * self.schedule.factor(step)
    }

    /// Fails, naming the value, unless the rule, the rate, the schedule and the clipping
    /// norm are all valid.
    pub fn validate(&self) -> Result<()> {
        self.rule.validate()?;
        non_negative("learning rate lr", self.lr)?;
        self.schedule.validate()?;
        if let Some(max_norm) = self.max_grad_norm {
            if !(max_norm > 0.0 && max_norm.is_finite()) {
                return Err(Error::invalid(
                    OP,
                    format!("max_grad_norm = {max_norm} must be finite and > 0"),
                ));
            }
        }
        Ok(())
    }
}
