// Optimizer updates, each changing one parameter tensor in place, and gradient clipping by
// the global norm of all gradients.
//
// The update kernels handle each element on its own (one invocation per element on GPUs,
// several on CPU-like adapters) and read, besides their uniform:
// - `scalars`: the scalars of the current step (learning rate, Adam's bias corrections,
//   AdamW's decay), written by the host before every submission. The uniform holds only
//   what never changes (length, β, ε, μ): it is made once, with the dispatch.
// - `clip_scale`: the factor clipping computed earlier in the same submission (1 when
//   clipping is off), folded into the gradient as it is read; the gradient itself is left
//   as it was.
//
// Clipping: `sum_squares` writes partial sums of g² of one gradient tensor into its own
// slots of a partials buffer, then `global_norm` folds every partial, in a fixed order,
// into the norm and the scale. No atomics: the same gradients give the same bits.

const WORKGROUP: u32 = 256u;

// Elements one invocation of an update kernel handles (the host picks 1 on GPUs). They
// are WORKGROUP apart, so that neighbouring invocations touch neighbouring addresses at
// each turn of the loop.
override ELEMENTS_PER_INVOCATION: u32 = 1u;

fn first_element(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.y * nwg.x + wid.x) * WORKGROUP * ELEMENTS_PER_INVOCATION + lid;
}

fn flat_index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.y * nwg.x + wid.x) * WORKGROUP + lid;
}

// ---------------------------------------------------------------- the update rules

// Written by the host every step (see `StepScalars` in src/optim/launch.rs).
struct StepScalars {
    lr: f32,                 // α_t, the scheduled learning rate
    adam_step_size: f32,     // α_t / (1 − β1ᵗ)
    adam_inv_sqrt_bc2: f32,  // 1 / √(1 − β2ᵗ)
    decay: f32,              // α_t·λ, AdamW's decoupled weight decay (0 otherwise)
}

struct UpdateParams {
    len: u32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    momentum: f32,   // μ
    nesterov: u32,   // 1: step along g + μ·v instead of v
    _pad0: u32,
    _pad1: u32,
}

// Bindings 0-3 are the same in every rule; the rule's state follows, the uniform is last.
@group(0) @binding(0) var<storage, read> scalars: StepScalars;
@group(0) @binding(1) var<storage, read> clip_scale: array<f32>;
@group(0) @binding(2) var<storage, read_write> param: array<f32>;
@group(0) @binding(3) var<storage, read> grad: array<f32>;

@group(0) @binding(4) var<uniform> sgd_params: UpdateParams;

// θ ← θ − α·g
fn sgd_element(i: u32) {
    let g = grad[i] * clip_scale[0];
    param[i] = param[i] - scalars.lr * g;
}

@compute @workgroup_size(256)
fn sgd(@builtin(workgroup_id) wid: vec3<u32>,
       @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_index) lid: u32) {
    let first = first_element(wid, nwg, lid);
    for (var k = 0u; k < ELEMENTS_PER_INVOCATION; k++) {
        let i = first + k * WORKGROUP;
        if i >= sgd_params.len {
            return;
        }
        sgd_element(i);
    }
}

@group(0) @binding(4) var<storage, read_write> velocity: array<f32>;
@group(0) @binding(5) var<uniform> momentum_params: UpdateParams;

// v ← μ·v + g; θ ← θ − α·v, or θ ← θ − α·(g + μ·v) with Nesterov (PyTorch's SGD with
// momentum and no dampening).
fn momentum_element(i: u32) {
    let p = momentum_params;
    let g = grad[i] * clip_scale[0];
    let v = p.momentum * velocity[i] + g;
    velocity[i] = v;
    let direction = select(v, g + p.momentum * v, p.nesterov != 0u);
    param[i] = param[i] - scalars.lr * direction;
}

@compute @workgroup_size(256)
fn momentum(@builtin(workgroup_id) wid: vec3<u32>,
            @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let first = first_element(wid, nwg, lid);
    for (var k = 0u; k < ELEMENTS_PER_INVOCATION; k++) {
        let i = first + k * WORKGROUP;
        if i >= momentum_params.len {
            return;
        }
        momentum_element(i);
    }
}

@group(0) @binding(4) var<storage, read_write> exp_avg: array<f32>;
@group(0) @binding(5) var<storage, read_write> exp_avg_sq: array<f32>;
@group(0) @binding(6) var<uniform> adam_params: UpdateParams;

// m ← β1·m + (1 − β1)·g;  v ← β2·v + (1 − β2)·g²;
// θ ← θ − α·λ·θ (AdamW only: `decay` is 0 for Adam, and θ − 0·θ is θ);
// θ ← θ − α/(1 − β1ᵗ) · m / (√v / √(1 − β2ᵗ) + ε), which is θ − α·m̂/(√v̂ + ε) arranged as
// PyTorch does, with the powers of β computed once per step on the host.
fn adam_element(i: u32) {
    let p = adam_params;
    let s = scalars;
    let g = grad[i] * clip_scale[0];
    let m = p.beta1 * exp_avg[i] + (1.0 - p.beta1) * g;
    let v = p.beta2 * exp_avg_sq[i] + (1.0 - p.beta2) * g * g;
    exp_avg[i] = m;
    exp_avg_sq[i] = v;
    var theta = param[i];
    theta = theta - s.decay * theta;
    param[i] = theta - s.adam_step_size * m / (sqrt(v) * s.adam_inv_sqrt_bc2 + p.eps);
}

@compute @workgroup_size(256)
fn adam(@builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let first = first_element(wid, nwg, lid);
    for (var k = 0u; k < ELEMENTS_PER_INVOCATION; k++) {
        let i = first + k * WORKGROUP;
        if i >= adam_params.len {
            return;
        }
        adam_element(i);
    }
}

// Adam four elements at a time, for tensors of a multiple of 4 elements on CPU adapters:
// lavapipe loads and stores each lane's floats one by one, with a cost per access besides
// the one per float, and the update does seven accesses per element.
@group(0) @binding(2) var<storage, read_write> param4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> grad4: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> exp_avg4: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> exp_avg_sq4: array<vec4<f32>>;

// `adam_element` on elements 4i..4i + 4.
fn adam_quad(i: u32) {
    let p = adam_params;
    let s = scalars;
    let g = grad4[i] * clip_scale[0];
    let m = p.beta1 * exp_avg4[i] + (1.0 - p.beta1) * g;
    let v = p.beta2 * exp_avg_sq4[i] + (1.0 - p.beta2) * g * g;
    exp_avg4[i] = m;
    exp_avg_sq4[i] = v;
    var theta = param4[i];
    theta = theta - s.decay * theta;
    param4[i] = theta - s.adam_step_size * m / (sqrt(v) * s.adam_inv_sqrt_bc2 + p.eps);
}

@compute @workgroup_size(256)
fn adam_vec4(@builtin(workgroup_id) wid: vec3<u32>,
             @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let first = first_element(wid, nwg, lid);
    for (var k = 0u; k < ELEMENTS_PER_INVOCATION; k++) {
        let i = first + k * WORKGROUP;
        if i >= adam_params.len / 4u {
            return;
        }
        adam_quad(i);
    }
}

// ---------------------------------------------------------------- clipping by global norm

struct SumSquaresParams {
    len: u32,     // elements of this gradient
    first: u32,   // its first slot in the partials buffer
    count: u32,   // its number of slots
    _pad: u32,
}

@group(0) @binding(0) var<storage, read> squared: array<f32>;
@group(0) @binding(1) var<storage, read_write> partials: array<f32>;
@group(0) @binding(2) var<uniform> sum_squares_params: SumSquaresParams;

// Slot j holds Σ g[j + k·count]² over k: neighbouring invocations read neighbouring
// elements, and each slot always adds the same elements in the same order.
@compute @workgroup_size(256)
fn sum_squares(@builtin(workgroup_id) wid: vec3<u32>,
               @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let j = flat_index(wid, nwg, lid);
    let p = sum_squares_params;
    if j >= p.count {
        return;
    }
    var acc = 0.0;
    for (var at = j; at < p.len; at += p.count) {
        let g = squared[at];
        acc += g * g;
    }
    partials[p.first + j] = acc;
}

struct GlobalNormParams {
    count: u32,      // slots of the partials buffer, over every gradient
    max_norm: f32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read> all_partials: array<f32>;
@group(0) @binding(1) var<storage, read_write> norm: array<f32>;
@group(0) @binding(2) var<storage, read_write> scale: array<f32>;
@group(0) @binding(3) var<uniform> global_norm_params: GlobalNormParams;

var<workgroup> folded: array<f32, WORKGROUP>;

// One workgroup: each invocation adds a strided set of partials, then a tree in workgroup
// memory adds those. norm = √Σg², scale = min(1, max_norm / (norm + 1e-6)) as PyTorch's
// clip_grad_norm_ computes it.
@compute @workgroup_size(256)
fn global_norm(@builtin(local_invocation_index) lid: u32) {
    let p = global_norm_params;
    var acc = 0.0;
    for (var j = lid; j < p.count; j += WORKGROUP) {
        acc += all_partials[j];
    }
    folded[lid] = acc;
    for (var width = WORKGROUP / 2u; width > 0u; width /= 2u) {
        workgroupBarrier();
        if lid < width {
            folded[lid] += folded[lid + width];
        }
    }
    if lid == 0u {
        let total = sqrt(folded[0]);
        norm[0] = total;
        scale[0] = min(1.0, p.max_norm / (total + 1e-6));
    }
}
