// Layer normalisation and its backward. The input is viewed as [rows, d]: every row is
// normalised on its own over its d elements (the trailing axes of the tensor).
//
//   forward:  mean = Σx / d,  var = Σ(x − mean)² / d (biased),  rstd = 1 / √(var + eps)
//             x̂ = (x − mean)·rstd,  y = x̂·gain + bias
//   backward: g = dy·gain,  dx = rstd·(g − mean(g) − x̂·mean(g·x̂))
//             dgain = Σ_rows dy·x̂,  dbias = Σ_rows dy
//
// Mean and variance use the corrected two-pass algorithm (Chan, Golub & LeVeque): pass 1
// gives a first mean m0 = Σx / d; pass 2 sums the deviations from it, s1 = Σ(x − m0) and
// s2 = Σ(x − m0)², and then mean = m0 + s1/d and var = s2/d − (s1/d)². The deviations are
// small even when the row sits far from zero (1e4 + noise), so nothing cancels the way
// E[x²] − E[x]² does in f32, and s1 repairs the rounding error of m0. The forward writes
// y from (x − m0) − s1/d, not from x − mean, for the same reason.
//
// HAS_GAIN / HAS_BIAS (override): whether gain and bias are bound; without them gain is 1
// and bias 0 (an unused placeholder buffer sits in their binding).
//
// Two variants of the row kernels:
// - `*_row_per_invocation`: one invocation loops over a whole row. No barriers: the fastest
//   form on CPU-like adapters (lavapipe), where a barrier costs a coroutine switch.
// - `*_row_per_workgroup`: the 256 invocations of a workgroup share a row, each taking a
//   strided slice (neighbours read neighbouring addresses), then sum in workgroup memory.
//   For discrete GPUs and for long rows.
//
// The gradients of gain and bias are column sums over the rows, done without atomics in a
// fixed order, so the result is deterministic: `param_grads_partial` gives each invocation
// one column of one chunk of `rows_per_chunk` rows; `param_grads_fold` then sums the chunks
// of each column in order. With a single chunk the partial sums are the result.

override HAS_GAIN: bool = false;
override HAS_BIAS: bool = false;

const WORKGROUP: u32 = 256u;

struct Params {
    rows: u32,
    d: u32,
    eps: f32,
    // Rows each invocation of `param_grads_partial` sums.
    rows_per_chunk: u32,
}

// ------------------------------------------------------------------------------ forward

@group(0) @binding(0) var<storage, read> fwd_x: array<f32>;
@group(0) @binding(1) var<storage, read> fwd_gain: array<f32>;
@group(0) @binding(2) var<storage, read> fwd_bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> fwd_y: array<f32>;
@group(0) @binding(4) var<storage, read_write> fwd_mean: array<f32>;
@group(0) @binding(5) var<storage, read_write> fwd_rstd: array<f32>;
@group(0) @binding(6) var<uniform> fwd_params: Params;

// What pass 2 leaves of a row: the shift to apply to (x − m0), and rstd.
struct RowStats {
    m0: f32,
    correction: f32,
    rstd: f32,
}

// Turns m0 and the sums of the deviations from it (s1, s2) into the row's statistics.
fn finish_stats(m0: f32, s1: f32, s2: f32) -> RowStats {
    let d = f32(fwd_params.d);
    let correction = s1 / d;
    // Rounding can leave s2/d a hair below correction²: a variance is never negative.
    let variance = max(s2 / d - correction * correction, 0.0);
    return RowStats(m0, correction, inverseSqrt(variance + fwd_params.eps));
}

// Saves the row's mean and rstd, which the backward needs.
fn write_stats(row: u32, stats: RowStats) {
    fwd_mean[row] = stats.m0 + stats.correction;
    fwd_rstd[row] = stats.rstd;
}

// y for element `col` of the row starting at `base`.
fn normalise(base: u32, col: u32, stats: RowStats) -> f32 {
    var value = ((fwd_x[base + col] - stats.m0) - stats.correction) * stats.rstd;
    if HAS_GAIN {
        value *= fwd_gain[col];
    }
    if HAS_BIAS {
        value += fwd_bias[col];
    }
    return value;
}

@compute @workgroup_size(256)
fn forward_row_per_invocation(@builtin(workgroup_id) wid: vec3<u32>,
                              @builtin(num_workgroups) nwg: vec3<u32>,
                              @builtin(local_invocation_index) lid: u32) {
    let p = fwd_params;
    let row = (wid.y * nwg.x + wid.x) * WORKGROUP + lid;
    if row >= p.rows {
        return;
    }
    let base = row * p.d;
    var sum = 0.0;
    for (var col = 0u; col < p.d; col++) {
        sum += fwd_x[base + col];
    }
    let m0 = sum / f32(p.d);
    var s1 = 0.0;
    var s2 = 0.0;
    for (var col = 0u; col < p.d; col++) {
        let deviation = fwd_x[base + col] - m0;
        s1 += deviation;
        s2 += deviation * deviation;
    }
    let stats = finish_stats(m0, s1, s2);
    write_stats(row, stats);
    for (var col = 0u; col < p.d; col++) {
        fwd_y[base + col] = normalise(base, col, stats);
    }
}

var<workgroup> partial: array<vec2<f32>, WORKGROUP>;

// The sum of `value` over the workgroup, returned to every invocation. Called in uniform
// control flow only (every invocation reaches the barriers).
fn workgroup_sum(lid: u32, value: vec2<f32>) -> vec2<f32> {
    partial[lid] = value;
    workgroupBarrier();
    for (var stride = WORKGROUP / 2u; stride > 0u; stride /= 2u) {
        if lid < stride {
            partial[lid] += partial[lid + stride];
        }
        workgroupBarrier();
    }
    let total = partial[0];
    // Nobody may overwrite partial[0] (in the next call) before everyone has read it.
    workgroupBarrier();
    return total;
}

@compute @workgroup_size(256)
fn forward_row_per_workgroup(@builtin(workgroup_id) wid: vec3<u32>,
                             @builtin(num_workgroups) nwg: vec3<u32>,
                             @builtin(local_invocation_index) lid: u32) {
    let p = fwd_params;
    // The row is the same for the whole workgroup, so this return keeps control uniform.
    let row = wid.y * nwg.x + wid.x;
    if row >= p.rows {
        return;
    }
    let base = row * p.d;
    var sum = 0.0;
    for (var col = lid; col < p.d; col += WORKGROUP) {
        sum += fwd_x[base + col];
    }
    let m0 = workgroup_sum(lid, vec2(sum, 0.0)).x / f32(p.d);
    var sums = vec2(0.0);
    for (var col = lid; col < p.d; col += WORKGROUP) {
        let deviation = fwd_x[base + col] - m0;
        sums += vec2(deviation, deviation * deviation);
    }
    let deviations = workgroup_sum(lid, sums);
    let stats = finish_stats(m0, deviations.x, deviations.y);
    if lid == 0u {
        write_stats(row, stats);
    }
    for (var col = lid; col < p.d; col += WORKGROUP) {
        fwd_y[base + col] = normalise(base, col, stats);
    }
}

// ----------------------------------------------------------------------------- backward

@group(0) @binding(0) var<storage, read> bwd_x: array<f32>;
@group(0) @binding(1) var<storage, read> bwd_dy: array<f32>;
@group(0) @binding(2) var<storage, read> bwd_gain: array<f32>;
@group(0) @binding(3) var<storage, read> bwd_mean: array<f32>;
@group(0) @binding(4) var<storage, read> bwd_rstd: array<f32>;
@group(0) @binding(5) var<storage, read_write> bwd_dx: array<f32>;
@group(0) @binding(6) var<uniform> bwd_params: Params;

// g = dy·gain for element `col` of the row starting at `base`.
fn scaled_grad(base: u32, col: u32) -> f32 {
    if HAS_GAIN {
        return bwd_dy[base + col] * bwd_gain[col];
    }
    return bwd_dy[base + col];
}

// dx of one element, from the row's mean(g) and mean(g·x̂) in `means`.
fn input_grad(base: u32, col: u32, mean: f32, rstd: f32, means: vec2<f32>) -> f32 {
    let normalised = (bwd_x[base + col] - mean) * rstd;
    return rstd * (scaled_grad(base, col) - means.x - normalised * means.y);
}

@compute @workgroup_size(256)
fn backward_row_per_invocation(@builtin(workgroup_id) wid: vec3<u32>,
                               @builtin(num_workgroups) nwg: vec3<u32>,
                               @builtin(local_invocation_index) lid: u32) {
    let p = bwd_params;
    let row = (wid.y * nwg.x + wid.x) * WORKGROUP + lid;
    if row >= p.rows {
        return;
    }
    let base = row * p.d;
    let mean = bwd_mean[row];
    let rstd = bwd_rstd[row];
    var sums = vec2(0.0);
    for (var col = 0u; col < p.d; col++) {
        let g = scaled_grad(base, col);
        sums += vec2(g, g * (bwd_x[base + col] - mean) * rstd);
    }
    let means = sums / f32(p.d);
    for (var col = 0u; col < p.d; col++) {
        bwd_dx[base + col] = input_grad(base, col, mean, rstd, means);
    }
}

@compute @workgroup_size(256)
fn backward_row_per_workgroup(@builtin(workgroup_id) wid: vec3<u32>,
                              @builtin(num_workgroups) nwg: vec3<u32>,
                              @builtin(local_invocation_index) lid: u32) {
    let p = bwd_params;
    let row = wid.y * nwg.x + wid.x;
    if row >= p.rows {
        return;
    }
    let base = row * p.d;
    let mean = bwd_mean[row];
    let rstd = bwd_rstd[row];
    var sums = vec2(0.0);
    for (var col = lid; col < p.d; col += WORKGROUP) {
        let g = scaled_grad(base, col);
        sums += vec2(g, g * (bwd_x[base + col] - mean) * rstd);
    }
    let means = workgroup_sum(lid, sums) / f32(p.d);
    for (var col = lid; col < p.d; col += WORKGROUP) {
        bwd_dx[base + col] = input_grad(base, col, mean, rstd, means);
    }
}

// ------------------------------------------------- gradients of gain and bias (columns)

@group(0) @binding(0) var<storage, read> pg_x: array<f32>;
@group(0) @binding(1) var<storage, read> pg_dy: array<f32>;
@group(0) @binding(2) var<storage, read> pg_mean: array<f32>;
@group(0) @binding(3) var<storage, read> pg_rstd: array<f32>;
@group(0) @binding(4) var<storage, read_write> pg_dgain: array<f32>;
@group(0) @binding(5) var<storage, read_write> pg_dbias: array<f32>;
@group(0) @binding(6) var<uniform> pg_params: Params;

// One invocation per (chunk, column): the sums of dy·x̂ and dy over the chunk's rows, into
// [chunks, d] partial buffers.
@compute @workgroup_size(256)
fn param_grads_partial(@builtin(workgroup_id) wid: vec3<u32>,
                       @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_index) lid: u32) {
    let p = pg_params;
    let chunks = (p.rows + p.rows_per_chunk - 1u) / p.rows_per_chunk;
    let index = (wid.y * nwg.x + wid.x) * WORKGROUP + lid;
    if index >= chunks * p.d {
        return;
    }
    let chunk = index / p.d;
    let col = index % p.d;
    let first = chunk * p.rows_per_chunk;
    let end = min(first + p.rows_per_chunk, p.rows);
    var dgain = 0.0;
    var dbias = 0.0;
    for (var row = first; row < end; row++) {
        let dy = pg_dy[row * p.d + col];
        dgain += dy * (pg_x[row * p.d + col] - pg_mean[row]) * pg_rstd[row];
        dbias += dy;
    }
    pg_dgain[index] = dgain;
    pg_dbias[index] = dbias;
}

@group(0) @binding(0) var<storage, read> fold_dgain_partial: array<f32>;
@group(0) @binding(1) var<storage, read> fold_dbias_partial: array<f32>;
@group(0) @binding(2) var<storage, read_write> fold_dgain: array<f32>;
@group(0) @binding(3) var<storage, read_write> fold_dbias: array<f32>;
@group(0) @binding(4) var<uniform> fold_params: Params;

// One invocation per column: sums the column's chunk partials in chunk order.
@compute @workgroup_size(256)
fn param_grads_fold(@builtin(workgroup_id) wid: vec3<u32>,
                    @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let p = fold_params;
    let col = (wid.y * nwg.x + wid.x) * WORKGROUP + lid;
    if col >= p.d {
        return;
    }
    let chunks = (p.rows + p.rows_per_chunk - 1u) / p.rows_per_chunk;
    var dgain = 0.0;
    var dbias = 0.0;
    for (var chunk = 0u; chunk < chunks; chunk++) {
        dgain += fold_dgain_partial[chunk * p.d + col];
        dbias += fold_dbias_partial[chunk * p.d + col];
    }
    fold_dgain[col] = dgain;
    fold_dbias[col] = dbias;
}
