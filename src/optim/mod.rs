//! Optimizers on the GPU: SGD, SGD with momentum, Adam and AdamW, gradient clipping by
//! global norm, and learning-rate schedules.
//!
//! An [`Optimizer`] records its dispatches once, when it is made, over the parameters and
//! gradients it was given; every step then reuses them. The only thing that changes from
//! step to step, the step's scalars (learning rate, bias corrections, decay), goes into a
//! small GPU buffer that [`Optimizer::prepare_step`] rewrites. So a compiled training step
//! appends [`Optimizer::dispatches`] to its own and, each step, calls `prepare_step(t)`
//! before submitting the whole list; eager code calls [`Optimizer::step`].
//!
//! The dispatches, in order: with clipping, one `sum_squares` per gradient and one
//! `global_norm` (the norm and the factor stay on the GPU); then one fused update per
//! parameter, which reads its gradient times that factor. The gradients themselves are not
//! rescaled. Every reduction has a fixed order and there are no atomics: the same inputs
//! give the same bits.
//!
//! ```no_run
//! use shadergrad::optim::{Optimizer, OptimizerConfig, Rule, Schedule};
//! use shadergrad::{Gpu, Tensor};
//!
//! let gpu = Gpu::default_adapter()?;
//! let weight = Tensor::from_slice(&gpu, &[0.5, -0.25, 1.0], &[3])?;
//! let grad = Tensor::from_slice(&gpu, &[0.1, 0.2, -0.3], &[3])?;
//! let config = OptimizerConfig::new(Rule::adamw(0.01), 1e-3)
//!     .with_schedule(Schedule::WarmupCosine { warmup: 100, total: 10_000, final_fraction: 0.1 })
//!     .with_max_grad_norm(1.0);
//! let mut optimizer = Optimizer::new(&gpu, config, &[(weight.clone(), grad.clone())])?;
//! optimizer.step()?; // `weight` now holds the updated values
//! println!("{:?} (gradient norm {:?})", weight.to_vec()?, optimizer.grad_norm()?);
//! # Ok::<(), shadergrad::Error>(())
//! ```

mod config;
pub mod launch;
mod schedule;

pub use config::{OptimizerConfig, Rule};
pub use launch::{StepScalars, SHADER};
pub use schedule::Schedule;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::gpu::{Copy, Dispatch, Gpu};
use crate::tensor::Tensor;

/// An optimizer over a fixed list of parameters, with its state on the GPU.
pub struct Optimizer {
    gpu: Gpu,
    config: OptimizerConfig,
    /// (parameter, gradient) pairs, updated in place and read.
    params: Vec<(Tensor, Tensor)>,
    /// What each parameter's state is keyed by: its name, or its index in `params`.
    names: Vec<String>,
    /// Per parameter, its state tensors in the order of [`Rule::state_names`].
    state: Vec<Vec<Tensor>>,
    /// One [`StepScalars`], rewritten by every `prepare_step`.
    scalars: Tensor,
    /// With clipping, √Σg² over every gradient, as a scalar tensor.
    grad_norm: Option<Tensor>,
    /// Buffers that only the dispatches use (clipping's factor and partial sums), held so
    /// that they stay out of the pool as long as the dispatches exist.
    workspace: Vec<Tensor>,
    dispatches: Vec<Dispatch>,
    /// The last step prepared (0 before the first).
    step: u64,
}

impl std::fmt::Debug for Optimizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Optimizer")
            .field("config", &self.config)
            .field("params", &self.params.len())
            .field("step", &self.step)
            .finish()
    }
}

impl Optimizer {
    /// An optimizer for `params`, pairs of (parameter, its gradient) of equal shapes. It
    /// keeps clones of the handles: the parameters' buffers are updated in place, so every
    /// clone of a parameter sees the new values, and each step reads whatever the
    /// gradients' buffers hold then. Its state starts at zero and its dispatches are
    /// recorded here, once.
    ///
    /// Fails on an invalid configuration (naming the value), an empty list, a gradient
    /// whose shape differs from its parameter's (naming both), tensors of another device,
    /// or a parameter whose buffer is also another parameter's or any gradient's.
    pub fn new(gpu: &Gpu, config: OptimizerConfig, params: &[(Tensor, Tensor)]) -> Result<Self> {
        const OP: &str = "Optimizer::new";
        config.validate()?;
        if params.is_empty() {
            return Err(Error::invalid(OP, "the list of parameters is empty"));
        }
        check_params(gpu, params)?;

        let state = params
            .iter()
            .map(|(param, _)| {
                config
                    .rule
                    .state_names()
                    .iter()
                    .map(|_| Tensor::zeros(gpu, param.shape()))
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<Vec<_>>>()?;
        let scalars = Tensor::zeros(gpu, &[size_of::<StepScalars>() / 4])?;
        // The factor the updates multiply the gradients by: clipping's, or 1 without it.
        let clip_scale = Tensor::full(gpu, &[], 1.0)?;
        let mut workspace = vec![clip_scale.clone()];

        let mut dispatches = Vec::new();
        let grad_norm = match config.max_grad_norm {
            Some(max_norm) => {
                let slots: Vec<usize> = params
                    .iter()
                    .map(|(_, grad)| launch::sum_squares_slots(grad.numel()))
                    .collect();
                let total: usize = slots.iter().sum();
                let partials = Tensor::zeros(gpu, &[total])?;
                let norm = Tensor::zeros(gpu, &[])?;
                let mut first = 0;
                for ((_, grad), count) in params.iter().zip(&slots) {
                    if *count > 0 {
                        dispatches.push(launch::sum_squares_dispatch(grad, &partials, first)?);
                    }
                    first += count;
                }
                dispatches.push(launch::global_norm_dispatch(
                    &partials,
                    total,
                    max_norm,
                    &norm,
                    &clip_scale,
                )?);
                workspace.push(partials);
                Some(norm)
            }
            None => None,
        };
        for ((param, grad), state) in params.iter().zip(&state) {
            if param.numel() > 0 {
                dispatches.push(launch::update_dispatch(
                    &config.rule,
                    param,
                    grad,
                    state,
                    &scalars,
                    &clip_scale,
                )?);
            }
        }

        Ok(Optimizer {
            gpu: gpu.clone(),
            config,
            params: params.to_vec(),
            names: (0..params.len()).map(|index| index.to_string()).collect(),
            state,
            scalars,
            grad_norm,
            workspace,
            dispatches,
            step: 0,
        })
    }

    /// Keys each parameter's state by `names` (one per pair, in order, each different)
    /// instead of its index, so that a checkpoint's state follows its parameter by name
    /// (`encoder.weight.exp_avg`) whatever order a later build makes the parameters in.
    /// [`crate::nn::Parameters::optimizer`] names them so.
    pub fn with_parameter_names<S: AsRef<str>>(mut self, names: &[S]) -> Result<Self> {
        const OP: &str = "Optimizer::with_parameter_names";
        if names.len() != self.params.len() {
            return Err(Error::invalid(
                OP,
                format!(
                    "{} names for {} parameters: expected one name per parameter",
                    names.len(),
                    self.params.len()
                ),
            ));
        }
        let mut seen = HashSet::new();
        for name in names.iter().map(AsRef::as_ref) {
            if name.is_empty() || !seen.insert(name) {
                return Err(Error::invalid(
                    OP,
                    format!("parameter name {name:?} is empty or given twice"),
                ));
            }
        }
        self.names = names.iter().map(|n| n.as_ref().to_string()).collect();
        Ok(self)
    }

    /// What each parameter's state is keyed by, in the order of [`Optimizer::params`]: the
    /// names given to [`Optimizer::with_parameter_names`], else the indices `"0"`, `"1"`, ….
    pub fn parameter_names(&self) -> &[String] {
        &self.names
    }

    /// The rule, learning rate, schedule and clipping this optimizer was built with.
    pub fn config(&self) -> &OptimizerConfig {
        &self.config
    }

    /// The (parameter, gradient) pairs, in the order given.
    pub fn params(&self) -> &[(Tensor, Tensor)] {
        &self.params
    }

    /// The dispatches of one step, recorded once: submit them after the gradients are
    /// computed and after [`Optimizer::prepare_step`]; the same list serves every step.
    pub fn dispatches(&self) -> &[Dispatch] {
        &self.dispatches
    }

    /// The last step prepared, which is the number of updates applied once its dispatches
    /// have run (0 before the first).
    pub fn current_step(&self) -> u64 {
        self.step
    }

    /// The learning rate at step `step`, as the update kernels receive it.
    pub fn learning_rate(&self, step: u64) -> f32 {
        self.config.learning_rate(step) as f32
    }

    /// Writes the scalars of step `step` (≥ 1: the update about to be applied is the
    /// `step`-th) into the buffer the dispatches read. Queued: it takes effect at the next
    /// submission, before its dispatches. Allocates nothing.
    pub fn prepare_step(&mut self, step: u64) -> Result<()> {
        if step == 0 {
            return Err(Error::invalid(
                "Optimizer::prepare_step",
                "step 0: steps count from 1 (Adam's bias corrections divide by 1 − βᵗ)",
            ));
        }
        let lr = self.config.learning_rate(step);
        let scalars = StepScalars::new(&self.config.rule, lr, step);
        self.gpu.write(self.scalars.buffer(), &[scalars]);
        self.step = step;
        Ok(())
    }

    /// Applies the step last prepared ([`Optimizer::prepare_step`]): submits the update's
    /// dispatches alone, for gradients that another submission left (summed across
    /// replicas by [`crate::parallel::GradientSum`], say).
    pub fn update(&self) -> Result<()> {
        if self.step == 0 {
            return Err(Error::invalid(
                "Optimizer::update",
                "no step prepared: call prepare_step first",
            ));
        }
        self.gpu.submit(&[], &self.dispatches)
    }

    /// One eager step: prepares the next step and submits the dispatches.
    pub fn step(&mut self) -> Result<()> {
        self.prepare_step(self.step + 1)?;
        self.gpu.submit(&[], &self.dispatches)
    }

    /// Bytes of GPU memory the optimizer holds besides the parameters and gradients: its
    /// state, the step's scalars and clipping's buffers.
    pub fn memory_bytes(&self) -> u64 {
        self.state
            .iter()
            .flatten()
            .chain(&self.workspace)
            .chain(self.grad_norm.iter())
            .chain([&self.scalars])
            .map(Tensor::byte_len)
            .sum()
    }

    /// The global gradient norm of the last step submitted, as a scalar tensor on the GPU
    /// (to read back along with the loss); `None` without clipping.
    pub fn grad_norm_tensor(&self) -> Option<&Tensor> {
        self.grad_norm.as_ref()
    }

    /// The global gradient norm of the last step submitted, read back (this waits for the
    /// GPU); `None` without clipping.
    pub fn grad_norm(&self) -> Result<Option<f32>> {
        match self.grad_norm_tensor() {
            Some(norm) => Ok(Some(norm.to_vec()?[0])),
            None => Ok(None),
        }
    }

    /// The state tensors by name, `"{parameter}.{state}"` with the parameter's name (see
    /// [`Optimizer::parameter_names`]; its index by default, as in a PyTorch optimizer's
    /// state dict) and the rule's name for the state (`decoder.weight.exp_avg`,
    /// `0.exp_avg_sq`, `3.momentum_buffer`). The handles share the optimizer's buffers.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let states = self.config.rule.state_names();
        self.state
            .iter()
            .zip(&self.names)
            .flat_map(|(tensors, parameter)| {
                states
                    .iter()
                    .zip(tensors)
                    .map(move |(state, tensor)| (format!("{parameter}.{state}"), tensor.clone()))
            })
            .collect()
    }

    /// Restores the state saved from [`Optimizer::state_tensors`] after `step` steps: copies
    /// each tensor into the optimizer's own buffer (which its dispatches bind), and makes
    /// `step` the last step taken, so the next eager step is `step + 1`.
    ///
    /// Every name must be given exactly once, with its parameter's shape; nothing is copied
    /// unless all are.
    pub fn load_state(&mut self, step: u64, state: &[(String, Tensor)]) -> Result<()> {
        const OP: &str = "Optimizer::load_state";
        let own = self.state_tensors();
        let expected: HashMap<&str, &Tensor> = own
            .iter()
            .map(|(name, tensor)| (name.as_str(), tensor))
            .collect();
        let mut seen = HashSet::new();
        let mut copies = Vec::new();
        for (name, given) in state {
            let Some(target) = expected.get(name.as_str()) else {
                let known: Vec<&str> = own.iter().map(|(name, _)| name.as_str()).collect();
                return Err(Error::invalid(
                    OP,
                    format!("unknown state tensor {name:?}; this optimizer has {known:?}"),
                ));
            };
            if !seen.insert(name.as_str()) {
                return Err(Error::invalid(
                    OP,
                    format!("state tensor {name:?} is given twice"),
                ));
            }
            target.same_device(OP, given)?;
            if given.shape() != target.shape() {
                return Err(Error::ShapeMismatch {
                    op: OP,
                    lhs: given.shape().to_vec(),
                    rhs: target.shape().to_vec(),
                    expected: format!("state tensor {name:?} must have its parameter's shape"),
                });
            }
            if given.numel() > 0 && !Arc::ptr_eq(given.buffer(), target.buffer()) {
                copies.push(Copy {
                    source: Arc::clone(given.buffer()),
                    destination: Arc::clone(target.buffer()),
                    bytes: given.byte_len(),
                });
            }
        }
        if let Some((missing, _)) = own.iter().find(|(name, _)| !seen.contains(name.as_str())) {
            return Err(Error::invalid(
                OP,
                format!("state tensor {missing:?} is missing"),
            ));
        }
        self.gpu.submit(&copies, &[])?;
        self.step = step;
        Ok(())
    }
}

/// Checks the (parameter, gradient) pairs of [`Optimizer::new`].
fn check_params(gpu: &Gpu, params: &[(Tensor, Tensor)]) -> Result<()> {
    const OP: &str = "Optimizer::new";
    for (index, (param, grad)) in params.iter().enumerate() {
        if !param.gpu().same_device(gpu) || !grad.gpu().same_device(gpu) {
            return Err(Error::DeviceMismatch { op: OP });
        }
        if param.shape() != grad.shape() {
            return Err(Error::ShapeMismatch {
                op: OP,
                lhs: param.shape().to_vec(),
                rhs: grad.shape().to_vec(),
                expected: format!("parameter {index} and its gradient must have the same shape"),
            });
        }
        // An update reads the gradients and rewrites the parameter: two parameters on one
        // buffer would be updated twice, and a parameter that is also a gradient would be
        // read and written by one dispatch. (Pairwise: a model has at most a few hundred
        // parameter tensors.)
        if let Some(earlier) = params[..index]
            .iter()
            .position(|(other, _)| Arc::ptr_eq(other.buffer(), param.buffer()))
        {
            return Err(Error::invalid(
                OP,
                format!("parameter {index} shares its buffer with parameter {earlier}"),
            ));
        }
        if params
            .iter()
            .any(|(_, grad)| Arc::ptr_eq(grad.buffer(), param.buffer()))
        {
            return Err(Error::invalid(
                OP,
                format!("parameter {index} shares its buffer with a gradient"),
            ));
        }
    }
    Ok(())
}
