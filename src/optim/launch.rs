//! Launchers of `shaders/optim.wgsl`: each records one [`Dispatch`] and submits nothing.
//! The shader and its kernel variants are declared in [`crate::kernels::optim`], with the
//! other kernels'.

use crate::error::Result;
use crate::gpu::Dispatch;
use crate::kernels::optim::{global_norm_spec, sum_squares_spec, update_spec, UpdateKernel};
pub use crate::kernels::optim::{kernel_specs, SHADER};
use crate::kernels::{columns_per_invocation, WORKGROUP_1D};
use crate::optim::Rule;
use crate::tensor::Tensor;

/// The scalars of one step, which the host writes into a small storage buffer before each
/// submission (the `StepScalars` of the shader). Computed in f64, rounded once to f32.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct StepScalars {
    /// α_t, the scheduled learning rate.
    pub lr: f32,
    /// α_t / (1 − β1ᵗ): Adam's step size with the first bias correction folded in.
    pub adam_step_size: f32,
    /// 1 / √(1 − β2ᵗ): Adam's second bias correction, applied to √v.
    pub adam_inv_sqrt_bc2: f32,
    /// α_t·λ: AdamW's decoupled weight decay of this step.
    pub decay: f32,
}

impl StepScalars {
    /// The scalars of step `step` (≥ 1) at learning rate `lr`.
    pub fn new(rule: &Rule, lr: f64, step: u64) -> StepScalars {
        let (adam_step_size, adam_inv_sqrt_bc2) = match rule.betas() {
            Some((beta1, beta2)) => {
                let t = step as f64;
                let bias_correction1 = 1.0 - f64::from(beta1).powf(t);
                let bias_correction2 = 1.0 - f64::from(beta2).powf(t);
                (lr / bias_correction1, 1.0 / bias_correction2.sqrt())
            }
            None => (0.0, 0.0),
        };
        StepScalars {
            lr: lr as f32,
            adam_step_size: adam_step_size as f32,
            adam_inv_sqrt_bc2: adam_inv_sqrt_bc2 as f32,
            decay: (lr * f64::from(rule.weight_decay())) as f32,
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct UpdateParams {
    len: u32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    momentum: f32,
    nesterov: u32,
    pad: [u32; 2],
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct SumSquaresParams {
    len: u32,
    first: u32,
    count: u32,
    pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct GlobalNormParams {
    count: u32,
    max_norm: f32,
    pad: [u32; 2],
}

/// Records the update of `param` in place by `rule`, from `grad` (same shape) scaled by
/// `clip_scale[0]`, with the rule's `state` tensors (in the order of
/// [`Rule::state_names`], each of the parameter's shape) and this step's `scalars`
/// (a buffer holding one [`StepScalars`]).
pub fn update_dispatch(
    rule: &Rule,
    param: &Tensor,
    grad: &Tensor,
    state: &[Tensor],
    scalars: &Tensor,
    clip_scale: &Tensor,
) -> Result<Dispatch> {
    let gpu = param.gpu();
    let len = param.numel() as u32;
    let is_adam = matches!(rule, Rule::Adam { .. } | Rule::AdamW { .. });
    // Adam reads and writes four elements at a time on CPU-like adapters where it can.
    let vec4 = is_adam && gpu.is_cpu_like() && len.is_multiple_of(4);
    let units = if vec4 { len / 4 } else { len };
    // One element (or vec4) per invocation on GPUs; on CPU-like adapters, where each
    // invocation has a fixed cost, as many as leave enough invocations to keep every
    // thread busy.
    let elements_per_invocation = columns_per_invocation(gpu, 1, units as usize);
    let mut params = UpdateParams {
        len,
        beta1: 0.0,
        beta2: 0.0,
        eps: 0.0,
        momentum: 0.0,
        nesterov: 0,
        pad: [0; 2],
    };
    let kernel = match *rule {
        Rule::Sgd => UpdateKernel::Sgd,
        Rule::Momentum { momentum, nesterov } => {
            params.momentum = momentum;
            params.nesterov = u32::from(nesterov);
            UpdateKernel::Momentum
        }
        Rule::Adam { beta1, beta2, eps }
        | Rule::AdamW {
            beta1, beta2, eps, ..
        } => {
            params.beta1 = beta1;
            params.beta2 = beta2;
            params.eps = eps;
            if vec4 {
                UpdateKernel::AdamVec4
            } else {
                UpdateKernel::Adam
            }
        }
    };
    let spec = update_spec(kernel, elements_per_invocation);
    let mut buffers = vec![
        scalars.buffer(),
        clip_scale.buffer(),
        param.buffer(),
        grad.buffer(),
    ];
    buffers.extend(state.iter().map(Tensor::buffer));
    gpu.dispatch(
        &spec,
        &buffers,
        &params,
        gpu.grid(units.div_ceil(WORKGROUP_1D * elements_per_invocation)),
    )
}

/// Elements whose squares one slot of the partials adds up, until a tensor has
/// [`MAX_SLOTS_PER_TENSOR`] slots.
const ELEMENTS_PER_SLOT: usize = 64;

/// The most slots one gradient tensor takes: beyond about four million elements each slot
/// adds more of them, which keeps the single-workgroup fold of every slot short.
const MAX_SLOTS_PER_TENSOR: usize = 1 << 16;

/// How many partial sums of squares a gradient of `len` elements is folded into: a fixed
/// function of the size, so the order of every addition is fixed too.
pub fn sum_squares_slots(len: usize) -> usize {
    len.div_ceil(ELEMENTS_PER_SLOT).min(MAX_SLOTS_PER_TENSOR)
}

/// Records the sums of squares of `grad` into `partials[first .. first + slots]`, with
/// `slots` = [`sum_squares_slots`] of its size.
pub fn sum_squares_dispatch(grad: &Tensor, partials: &Tensor, first: usize) -> Result<Dispatch> {
    let gpu = grad.gpu();
    let count = sum_squares_slots(grad.numel()) as u32;
    let params = SumSquaresParams {
        len: grad.numel() as u32,
        first: first as u32,
        count,
        pad: 0,
    };
    gpu.dispatch(
        &sum_squares_spec(),
        &[grad.buffer(), partials.buffer()],
        &params,
        gpu.grid(count.div_ceil(WORKGROUP_1D)),
    )
}

/// Records the fold of the first `count` values of `partials` into `norm[0]` = √Σ and
/// `scale[0]` = min(1, max_norm / (norm + 1e-6)).
pub fn global_norm_dispatch(
    partials: &Tensor,
    count: usize,
    max_norm: f32,
    norm: &Tensor,
    scale: &Tensor,
) -> Result<Dispatch> {
    let params = GlobalNormParams {
        count: count as u32,
        max_norm,
        pad: [0; 2],
    };
    partials.gpu().dispatch(
        &global_norm_spec(),
        &[partials.buffer(), norm.buffer(), scale.buffer()],
        &params,
        [1, 1, 1],
    )
}
