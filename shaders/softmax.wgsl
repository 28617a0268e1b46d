// Softmax and log-softmax along one axis, their gradients, and the fused
// softmax-cross-entropy loss with its gradient.
//
// Layout: the tensor is viewed as [outer, n, inner] around the softmax axis. A "row" is the
// n elements x[o, 0..n, i], at stride `inner`; the last axis is inner == 1.
//
// Numerical stability: every row is shifted by its maximum m before exp, so exp sees values
// ≤ 0 and never overflows; logits of ±1e4 give exact, finite results. A fully masked row
// (every element -inf) has no finite maximum: it is shifted by 0 instead, its Σexp is 0,
// and it gives softmax 0 and log-softmax -inf, never NaN.
//
// Three variants of each row kernel:
// - `*_strided`: one invocation per row, looping over it. When inner > 1 neighbouring
//   invocations read neighbouring addresses. On CPU-like adapters this is the fast form:
//   no barriers, and the row stays in cache between its passes.
// - `*_vec4`: the same for the last axis with rows a multiple of 4 long, read and written
//   four elements at a time, the forward passes folding max and Σexp in one pass (online
//   softmax). For CPU adapters: lavapipe loads each lane's elements one by one, with a
//   cost per load and per element, and vec4 accesses halve the first; fewer passes save
//   whole loads.
// - `*_rows`: one workgroup per row (inner == 1 only): each invocation folds a strided
//   slice of the row, then one tree in workgroup memory combines the slices. The forward
//   tree carries (max, Σexp) pairs together, so it costs one tree, not two.
//
// LOG (override): 0 softmax, 1 log-softmax. WEIGHTED (override): whether the cross-entropy
// has class weights.

override LOG: u32 = 0u;
override WEIGHTED: u32 = 0u;

const WORKGROUP: u32 = 256u;

// -inf. WGSL refuses a constant expression whose value is not finite, so its bits are read
// through a `let`, which makes the bitcast a runtime expression.
fn neg_inf() -> f32 {
    let bits = 0xff800000u;
    return bitcast<f32>(bits);
}

// The shift of a row whose maximum is m: m itself, or 0 for a fully masked row (m = -inf),
// where x - m would be -inf - -inf = NaN.
fn shift_of(m: f32) -> f32 {
    return select(m, 0.0, m == neg_inf());
}

// softmax or log-softmax of x, given its row's shift and Σexp(x - shift).
fn normalize(x: f32, shift: f32, sum: f32) -> f32 {
    if LOG == 1u {
        return select(x - shift - log(sum), neg_inf(), sum == 0.0);
    }
    return select(exp(x - shift) / sum, 0.0, sum == 0.0);
}

// A partial Σexp(x - old_shift) re-expressed as Σexp(x - new_shift), for new ≥ old. An
// empty partial stays 0 (exp(old_shift - new_shift) may be NaN for it).
fn rescale(sum: f32, old_shift: f32, new_shift: f32) -> f32 {
    return select(sum * exp(old_shift - new_shift), 0.0, sum == 0.0);
}

// value / divisor, or 0 when the divisor is 0.
fn divide_or_zero(value: f32, divisor: f32) -> f32 {
    return select(0.0, value / divisor, divisor > 0.0);
}

// ------------------------------------------------------------ workgroup trees (`*_rows`)

var<workgroup> tree_max: array<f32, WORKGROUP>;
var<workgroup> tree_sum: array<f32, WORKGROUP>;

// Combines every invocation's (max, Σexp relative to shift_of(max)) into the row's.
// Called from uniform control flow by the whole workgroup.
fn workgroup_max_and_sum(lid: u32, m: f32, sum: f32) -> vec2<f32> {
    tree_max[lid] = m;
    tree_sum[lid] = sum;
    workgroupBarrier();
    for (var stride = WORKGROUP / 2u; stride > 0u; stride /= 2u) {
        if lid < stride {
            let m0 = tree_max[lid];
            let m1 = tree_max[lid + stride];
            let merged = max(m0, m1);
            let shift = shift_of(merged);
            tree_sum[lid] = rescale(tree_sum[lid], shift_of(m0), shift)
                + rescale(tree_sum[lid + stride], shift_of(m1), shift);
            tree_max[lid] = merged;
        }
        workgroupBarrier();
    }
    let total = vec2<f32>(tree_max[0], tree_sum[0]);
    // Every invocation has read the result before anyone reuses the tree.
    workgroupBarrier();
    return total;
}

// The sum of every invocation's `value`, in a fixed order (deterministic).
fn workgroup_sum(lid: u32, value: f32) -> f32 {
    tree_sum[lid] = value;
    workgroupBarrier();
    for (var stride = WORKGROUP / 2u; stride > 0u; stride /= 2u) {
        if lid < stride {
            tree_sum[lid] += tree_sum[lid + stride];
        }
        workgroupBarrier();
    }
    let total = tree_sum[0];
    workgroupBarrier();
    return total;
}

// ------------------------------------------------------------------ forward: y = softmax(x)

struct RowParams {
    outer: u32,
    n: u32,
    inner: u32,
    _pad: u32,
}

@group(0) @binding(0) var<storage, read> forward_x: array<f32>;
@group(0) @binding(1) var<storage, read_write> forward_y: array<f32>;
@group(0) @binding(2) var<uniform> forward_params: RowParams;

@compute @workgroup_size(256)
fn softmax_strided(@builtin(workgroup_id) wid: vec3<u32>,
                   @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let p = forward_params;
    let index = (wid.y * nwg.x + wid.x) * WORKGROUP + lid;
    if index >= p.outer * p.inner {
        return;
    }
    let base = (index / p.inner) * p.n * p.inner + index % p.inner;
    let end = base + p.n * p.inner;
    var m = neg_inf();
    for (var at = base; at < end; at += p.inner) {
        m = max(m, forward_x[at]);
    }
    let shift = shift_of(m);
    var sum = 0.0;
    for (var at = base; at < end; at += p.inner) {
        sum += exp(forward_x[at] - shift);
    }
    for (var at = base; at < end; at += p.inner) {
        forward_y[at] = normalize(forward_x[at], shift, sum);
    }
}

@compute @workgroup_size(256)
fn softmax_rows(@builtin(workgroup_id) wid: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let p = forward_params;
    let row = wid.y * nwg.x + wid.x;
    // Every invocation must reach the barriers, so no early return.
    let live = row < p.outer;
    let base = row * p.n;
    var m = neg_inf();
    var sum = 0.0;
    if live {
        for (var j = lid; j < p.n; j += WORKGROUP) {
            m = max(m, forward_x[base + j]);
        }
        let shift = shift_of(m);
        for (var j = lid; j < p.n; j += WORKGROUP) {
            sum += exp(forward_x[base + j] - shift);
        }
    }
    let row_stats = workgroup_max_and_sum(lid, m, sum);
    if live {
        let shift = shift_of(row_stats.x);
        for (var j = lid; j < p.n; j += WORKGROUP) {
            forward_y[base + j] = normalize(forward_x[base + j], shift, row_stats.y);
        }
    }
}

// ------------------------------------------------ one invocation per row, vec4 (`*_vec4`)

const VEC4_WORKGROUP: u32 = 64u;   // small, so that a few hundred rows still split evenly

// A running (max, Σexp) of four interleaved parts of a row, merged at the end.
struct Running4 {
    m: vec4<f32>,
    sum: vec4<f32>,
}

fn running4_start() -> Running4 {
    return Running4(vec4<f32>(neg_inf()), vec4<f32>(0.0));
}

// Folds four more elements in: the sums move to the new maxima (the online softmax).
fn running4_add(r: Running4, x: vec4<f32>) -> Running4 {
    let m = max(r.m, x);
    let shift = vec4<f32>(shift_of(m.x), shift_of(m.y), shift_of(m.z), shift_of(m.w));
    let old_shift = vec4<f32>(shift_of(r.m.x), shift_of(r.m.y), shift_of(r.m.z),
                              shift_of(r.m.w));
    let kept = select(r.sum * exp(old_shift - shift), vec4<f32>(0.0), r.sum == vec4<f32>(0.0));
    return Running4(m, kept + exp(x - shift));
}

// The row's (max, Σexp relative to shift_of(max)).
fn running4_total(r: Running4) -> vec2<f32> {
    let m = max(max(r.m.x, r.m.y), max(r.m.z, r.m.w));
    let shift = shift_of(m);
    let sum = rescale(r.sum.x, shift_of(r.m.x), shift) + rescale(r.sum.y, shift_of(r.m.y), shift)
        + rescale(r.sum.z, shift_of(r.m.z), shift) + rescale(r.sum.w, shift_of(r.m.w), shift);
    return vec2<f32>(m, sum);
}

fn normalize4(x: vec4<f32>, shift: f32, sum: f32) -> vec4<f32> {
    return vec4<f32>(normalize(x.x, shift, sum), normalize(x.y, shift, sum),
                     normalize(x.z, shift, sum), normalize(x.w, shift, sum));
}

@group(0) @binding(0) var<storage, read> forward_x4: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> forward_y4: array<vec4<f32>>;

@compute @workgroup_size(64)
fn softmax_vec4(@builtin(workgroup_id) wid: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let p = forward_params;
    let row = (wid.y * nwg.x + wid.x) * VEC4_WORKGROUP + lid;
    if row >= p.outer {
        return;
    }
    let n4 = p.n / 4u;
    let base = row * n4;
    var running = running4_start();
    for (var j = 0u; j < n4; j++) {
        running = running4_add(running, forward_x4[base + j]);
    }
    let total = running4_total(running);
    let shift = shift_of(total.x);
    for (var j = 0u; j < n4; j++) {
        forward_y4[base + j] = normalize4(forward_x4[base + j], shift, total.y);
    }
}

// --------------------------------------------------------------- backward: dx from y and dy
//
// softmax:     dx = y ⊙ (dy − Σ dy⊙y)
// log-softmax: dx = dy − exp(y)·Σ dy

@group(0) @binding(0) var<storage, read> backward_y: array<f32>;
@group(0) @binding(1) var<storage, read> backward_dy: array<f32>;
@group(0) @binding(2) var<storage, read_write> backward_dx: array<f32>;
@group(0) @binding(3) var<uniform> backward_params: RowParams;

// The row reduction's term for element `at`.
fn backward_term(at: u32) -> f32 {
    if LOG == 1u {
        return backward_dy[at];
    }
    return backward_dy[at] * backward_y[at];
}

fn backward_value(at: u32, total: f32) -> f32 {
    if LOG == 1u {
        return backward_dy[at] - exp(backward_y[at]) * total;
    }
    return backward_y[at] * (backward_dy[at] - total);
}

@compute @workgroup_size(256)
fn softmax_backward_strided(@builtin(workgroup_id) wid: vec3<u32>,
                            @builtin(num_workgroups) nwg: vec3<u32>,
                            @builtin(local_invocation_index) lid: u32) {
    let p = backward_params;
    let index = (wid.y * nwg.x + wid.x) * WORKGROUP + lid;
    if index >= p.outer * p.inner {
        return;
    }
    let base = (index / p.inner) * p.n * p.inner + index % p.inner;
    let end = base + p.n * p.inner;
    var total = 0.0;
    for (var at = base; at < end; at += p.inner) {
        total += backward_term(at);
    }
    for (var at = base; at < end; at += p.inner) {
        backward_dx[at] = backward_value(at, total);
    }
}

@compute @workgroup_size(256)
fn softmax_backward_rows(@builtin(workgroup_id) wid: vec3<u32>,
                         @builtin(num_workgroups) nwg: vec3<u32>,
                         @builtin(local_invocation_index) lid: u32) {
    let p = backward_params;
    let row = wid.y * nwg.x + wid.x;
    let live = row < p.outer;
    let base = row * p.n;
    var partial = 0.0;
    if live {
        for (var j = lid; j < p.n; j += WORKGROUP) {
            partial += backward_term(base + j);
        }
    }
    let total = workgroup_sum(lid, partial);
    if live {
        for (var j = lid; j < p.n; j += WORKGROUP) {
            backward_dx[base + j] = backward_value(base + j, total);
        }
    }
}

@group(0) @binding(0) var<storage, read> backward_y4: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> backward_dy4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> backward_dx4: array<vec4<f32>>;

@compute @workgroup_size(64)
fn softmax_backward_vec4(@builtin(workgroup_id) wid: vec3<u32>,
                         @builtin(num_workgroups) nwg: vec3<u32>,
                         @builtin(local_invocation_index) lid: u32) {
    let p = backward_params;
    let row = (wid.y * nwg.x + wid.x) * VEC4_WORKGROUP + lid;
    if row >= p.outer {
        return;
    }
    let n4 = p.n / 4u;
    let base = row * n4;
    var total4 = vec4<f32>(0.0);
    for (var j = 0u; j < n4; j++) {
        if LOG == 1u {
            total4 += backward_dy4[base + j];
        } else {
            total4 += backward_dy4[base + j] * backward_y4[base + j];
        }
    }
    let total = (total4.x + total4.y) + (total4.z + total4.w);
    for (var j = 0u; j < n4; j++) {
        let y = backward_y4[base + j];
        let dy = backward_dy4[base + j];
        if LOG == 1u {
            backward_dx4[base + j] = dy - exp(y) * total;
        } else {
            backward_dx4[base + j] = y * (dy - total);
        }
    }
}

// --------------------------------------------------------------------- softmax-cross-entropy
//
// Logits [N, C, D] (D = product of the axes after the class axis, 1 for [N, C]); row
// r = n·D + d holds the C logits x[n, 0..C, d] at stride D, and its target is targets[r].
// For each row not ignored, with w = weights[t] (1 without weights):
//   loss_r = w·(logsumexp(x_r) − x_r[t])
//   grad_r = w·(softmax(x_r) − onehot(t)) / divisor
// where divisor[0] is what the reduced loss divides by (the count or Σw of the counted
// rows for a mean, 1 otherwise), written by the host or by `cross_entropy_weight_sum`.
// An ignored row gets loss 0 and gradient 0; a divisor of 0 (all rows ignored) scales by
// 0 instead of dividing by it, so an all-padding batch gives loss 0 and zero gradient.

struct CrossEntropyParams {
    rows: u32,      // N·D
    classes: u32,   // C
    inner: u32,     // D
    ignore: u32,    // the target value of rows to skip
}

@group(0) @binding(0) var<storage, read> ce_logits: array<f32>;
@group(0) @binding(1) var<storage, read> ce_targets: array<u32>;
@group(0) @binding(2) var<storage, read> ce_weights: array<f32>;
@group(0) @binding(3) var<storage, read> ce_divisor: array<f32>;
@group(0) @binding(4) var<storage, read_write> ce_row_loss: array<f32>;
@group(0) @binding(5) var<storage, read_write> ce_grad: array<f32>;
@group(0) @binding(6) var<uniform> ce_params: CrossEntropyParams;

fn class_weight(label: u32) -> f32 {
    if WEIGHTED == 1u {
        return ce_weights[label];
    }
    return 1.0;
}

// Where row r's logits start: x[n, 0, d].
fn ce_row_base(r: u32) -> u32 {
    let p = ce_params;
    return (r / p.inner) * p.classes * p.inner + r % p.inner;
}

@compute @workgroup_size(256)
fn cross_entropy_strided(@builtin(workgroup_id) wid: vec3<u32>,
                         @builtin(num_workgroups) nwg: vec3<u32>,
                         @builtin(local_invocation_index) lid: u32) {
    let p = ce_params;
    let r = (wid.y * nwg.x + wid.x) * WORKGROUP + lid;
    if r >= p.rows {
        return;
    }
    let base = ce_row_base(r);
    let end = base + p.classes * p.inner;
    let label = ce_targets[r];
    if label == p.ignore {
        ce_row_loss[r] = 0.0;
        for (var at = base; at < end; at += p.inner) {
            ce_grad[at] = 0.0;
        }
        return;
    }
    var m = neg_inf();
    for (var at = base; at < end; at += p.inner) {
        m = max(m, ce_logits[at]);
    }
    let shift = shift_of(m);
    var sum = 0.0;
    for (var at = base; at < end; at += p.inner) {
        sum += exp(ce_logits[at] - shift);
    }
    let w = class_weight(label);
    let label_at = base + label * p.inner;
    // (shift − x_t) + log Σ: no cancellation between two large numbers.
    ce_row_loss[r] = w * ((shift - ce_logits[label_at]) + log(sum));
    // grad = (w / divisor)·(exp(x − shift) / Σ − onehot)
    let hit = divide_or_zero(w, ce_divisor[0]);
    let scale = hit / sum;
    for (var at = base; at < end; at += p.inner) {
        ce_grad[at] = scale * exp(ce_logits[at] - shift) - select(0.0, hit, at == label_at);
    }
}

@compute @workgroup_size(256)
fn cross_entropy_rows(@builtin(workgroup_id) wid: vec3<u32>,
                      @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    let p = ce_params;
    let r = wid.y * nwg.x + wid.x;
    let live = r < p.rows;
    var label = p.ignore;
    if live {
        label = ce_targets[r];
    }
    let counted = label != p.ignore;
    let base = r * p.classes;
    var m = neg_inf();
    var sum = 0.0;
    if counted {
        for (var j = lid; j < p.classes; j += WORKGROUP) {
            m = max(m, ce_logits[base + j]);
        }
        let shift = shift_of(m);
        for (var j = lid; j < p.classes; j += WORKGROUP) {
            sum += exp(ce_logits[base + j] - shift);
        }
    }
    let row_stats = workgroup_max_and_sum(lid, m, sum);
    if !live {
        return;
    }
    if !counted {
        if lid == 0u {
            ce_row_loss[r] = 0.0;
        }
        for (var j = lid; j < p.classes; j += WORKGROUP) {
            ce_grad[base + j] = 0.0;
        }
        return;
    }
    let shift = shift_of(row_stats.x);
    let w = class_weight(label);
    if lid == 0u {
        ce_row_loss[r] = w * ((shift - ce_logits[base + label]) + log(row_stats.y));
    }
    let hit = divide_or_zero(w, ce_divisor[0]);
    let scale = hit / row_stats.y;
    for (var j = lid; j < p.classes; j += WORKGROUP) {
        ce_grad[base + j] = scale * exp(ce_logits[base + j] - shift) - select(0.0, hit, j == label);
    }
}

@group(0) @binding(0) var<storage, read> ce_logits4: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> ce_grad4: array<vec4<f32>>;

@compute @workgroup_size(64)
fn cross_entropy_vec4(@builtin(workgroup_id) wid: vec3<u32>,
                      @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    let p = ce_params;
    let r = (wid.y * nwg.x + wid.x) * VEC4_WORKGROUP + lid;
    if r >= p.rows {
        return;
    }
    let c4 = p.classes / 4u;
    let base = r * c4;
    let label = ce_targets[r];
    if label == p.ignore {
        ce_row_loss[r] = 0.0;
        for (var j = 0u; j < c4; j++) {
            ce_grad4[base + j] = vec4<f32>(0.0);
        }
        return;
    }
    var running = running4_start();
    for (var j = 0u; j < c4; j++) {
        running = running4_add(running, ce_logits4[base + j]);
    }
    let total = running4_total(running);
    let shift = shift_of(total.x);
    let w = class_weight(label);
    let label_logit = ce_logits4[base + label / 4u][label % 4u];
    ce_row_loss[r] = w * ((shift - label_logit) + log(total.y));
    let hit = divide_or_zero(w, ce_divisor[0]);
    let scale = hit / total.y;
    let lanes = vec4<u32>(0u, 1u, 2u, 3u);
    for (var j = 0u; j < c4; j++) {
        let onehot = select(vec4<f32>(0.0), vec4<f32>(hit), lanes + 4u * j == vec4<u32>(label));
        ce_grad4[base + j] = scale * exp(ce_logits4[base + j] - shift) - onehot;
    }
}

// The divisor of a weighted mean: Σ weights[t] over the rows not ignored. One workgroup.

@group(0) @binding(0) var<storage, read> weight_sum_targets: array<u32>;
@group(0) @binding(1) var<storage, read> weight_sum_weights: array<f32>;
@group(0) @binding(2) var<storage, read_write> weight_sum_divisor: array<f32>;
@group(0) @binding(3) var<uniform> weight_sum_params: CrossEntropyParams;

@compute @workgroup_size(256)
fn cross_entropy_weight_sum(@builtin(local_invocation_index) lid: u32) {
    let p = weight_sum_params;
    var partial = 0.0;
    for (var r = lid; r < p.rows; r += WORKGROUP) {
        let label = weight_sum_targets[r];
        if label != p.ignore {
            partial += weight_sum_weights[label];
        }
    }
    let total = workgroup_sum(lid, partial);
    if lid == 0u {
        weight_sum_divisor[0] = total;
    }
}

// The reduced loss: Σ row losses / divisor (0 when the divisor is 0). One workgroup, a
// fixed summation order, so the same input gives the same bits.

@group(0) @binding(0) var<storage, read> total_row_loss: array<f32>;
@group(0) @binding(1) var<storage, read> total_divisor: array<f32>;
@group(0) @binding(2) var<storage, read_write> total_loss: array<f32>;
@group(0) @binding(3) var<uniform> total_params: CrossEntropyParams;

@compute @workgroup_size(256)
fn cross_entropy_total(@builtin(local_invocation_index) lid: u32) {
    let p = total_params;
    var partial = 0.0;
    for (var r = lid; r < p.rows; r += WORKGROUP) {
        partial += total_row_loss[r];
    }
    let total = workgroup_sum(lid, partial);
    if lid == 0u {
        total_loss[0] = divide_or_zero(total, total_divisor[0]);
    }
}
