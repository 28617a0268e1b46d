// General matrix multiply, batched:
//     out[b] = alpha · op(A[b]) · op(B[b]) + beta · C[b] + bias, then max(·, 0) if RELU,
//     or kept only where relu_output[b] > 0 if RELU_GRAD
// op(A) is M×K (A stored M×K, or K×M when TRANS_A), op(B) is K×N (B stored K×N, or N×K
// when TRANS_B). C is read through strides, so it may be broadcast over rows, columns or
// batches; bias is a row vector of N. The output is contiguous [batch, M, N].
// The workgroup's z coordinate is the batch. A, B and the output start `a_offset`,
// `b_offset` and `out_offset` elements into their buffers, so that a product can read one
// slice of a larger tensor (a time step of a recurrence) and write into another.
//
// Four entry points of one contract:
// - `matmul_blocked`: no workgroup memory, no barriers. Each invocation keeps a 4×4 block
//   of C in registers. Its 4 columns are 8 apart, so the 8 invocations along x (which a
//   CPU driver such as lavapipe runs as the 8 lanes of one SIMD register) read 8
//   neighbouring B values at once. Any layout; for CPU adapters.
// - `matmul_blocked_vec4`: the same with B read as vec4 and 8×8 outputs per invocation,
//   when B is not transposed and N is a multiple of 4: about twice as fast on lavapipe.
// - `matmul_nt_vec4`: for B transposed (a backward's dX = dY·Wᵀ, attention's Q·Kᵀ) and A
//   not, K a multiple of 4: rows of A and of B are both contiguous along K, so each is read
//   as vec4 and every output is a dot product of vec4 sums.
// - `matmul_tiled`: 64×64 output tiles per 16×16 workgroup, staged through workgroup
//   memory 16 values of K at a time, each invocation a 4×4 block. For real GPUs.

override TRANS_A: bool = false;
override TRANS_B: bool = false;
override HAS_C: bool = false;
override HAS_BIAS: bool = false;
// Fusions a graph makes instead of writing the product and reading it back: a ReLU
// applied to each result as it is stored (`relu(x·W + b)`), or the gradient through a
// ReLU whose output is `relu_output` (shaped and offset as the output): each result kept
// where that output is positive, zero elsewhere (`relu'(h) ⊙ (dz·Wᵀ)`).
override RELU: bool = false;
override RELU_GRAD: bool = false;

struct Params {
    m: u32,
    n: u32,
    k: u32,
    a_offset: u32,
    a_batch_stride: u32,   // 0 when A is shared by every batch
    b_batch_stride: u32,
    c_batch_stride: u32,
    c_row_stride: u32,     // 0 when C is broadcast over rows
    c_col_stride: u32,     // 0 when C is broadcast over columns
    alpha: f32,
    beta: f32,
    b_offset: u32,         // a multiple of 4 for `matmul_blocked_vec4`
    out_offset: u32,       // a multiple of 4 for `matmul_blocked_vec4`
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read> c: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
@group(0) @binding(5) var<storage, read> relu_output: array<f32>;
@group(0) @binding(6) var<uniform> params: Params;

// Where the batch's A and B start in their buffers.
fn a_start(batch: u32) -> u32 {
    return params.a_offset + batch * params.a_batch_stride;
}

fn b_start(batch: u32) -> u32 {
    return params.b_offset + batch * params.b_batch_stride;
}

// op(A)[row, kk] of the batch whose A starts at `base`.
fn load_a(base: u32, row: u32, kk: u32) -> f32 {
    if TRANS_A {
        return a[base + kk * params.m + row];
    }
    return a[base + row * params.k + kk];
}

// op(B)[kk, col] of the batch whose B starts at `base`.
fn load_b(base: u32, kk: u32, col: u32) -> f32 {
    if TRANS_B {
        return b[base + col * params.k + kk];
    }
    return b[base + kk * params.n + col];
}

// The epilogue shared by every variant: scale, add beta·C and bias, the fused ReLU or its
// gradient, store if in range.
fn store(batch: u32, row: u32, col: u32, acc: f32) {
    let p = params;
    if row >= p.m || col >= p.n {
        return;
    }
    var v = p.alpha * acc;
    if HAS_C {
        v += p.beta * c[batch * p.c_batch_stride + row * p.c_row_stride + col * p.c_col_stride];
    }
    if HAS_BIAS {
        v += bias[col];
    }
    let at = p.out_offset + (batch * p.m + row) * p.n + col;
    if RELU {
        v = max(v, 0.0);
    }
    if RELU_GRAD {
        v = select(0.0, v, relu_output[at] > 0.0);
    }
    out[at] = v;
}

fn store_row(batch: u32, row: u32, cols: vec4<u32>, acc: vec4<f32>) {
    store(batch, row, cols.x, acc.x);
    store(batch, row, cols.y, acc.y);
    store(batch, row, cols.z, acc.z);
    store(batch, row, cols.w, acc.w);
}

// ---------------------------------------------------------------- register-blocked

const BLOCKED_TILE: u32 = 32u;   // 8 invocations × 4 outputs along each axis

@compute @workgroup_size(8, 8)
fn matmul_blocked(@builtin(workgroup_id) wid: vec3<u32>,
                  @builtin(local_invocation_id) lid: vec3<u32>) {
    let p = params;
    let batch = wid.z;
    let a_base = a_start(batch);
    let b_base = b_start(batch);
    let row0 = wid.y * BLOCKED_TILE + lid.y * 4u;
    let col0 = wid.x * BLOCKED_TILE + lid.x;
    // Out-of-range rows and columns load clamped (valid) addresses; `store` drops them.
    let rows = min(vec4<u32>(row0) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(p.m - 1u));
    let cols_out = vec4<u32>(col0) + vec4<u32>(0u, 8u, 16u, 24u);
    let cols = min(cols_out, vec4<u32>(p.n - 1u));

    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var kk = 0u; kk < p.k; kk++) {
        let bv = vec4<f32>(load_b(b_base, kk, cols.x), load_b(b_base, kk, cols.y),
                           load_b(b_base, kk, cols.z), load_b(b_base, kk, cols.w));
        acc0 = fma(vec4<f32>(load_a(a_base, rows.x, kk)), bv, acc0);
        acc1 = fma(vec4<f32>(load_a(a_base, rows.y, kk)), bv, acc1);
        acc2 = fma(vec4<f32>(load_a(a_base, rows.z, kk)), bv, acc2);
        acc3 = fma(vec4<f32>(load_a(a_base, rows.w, kk)), bv, acc3);
    }
    store_row(batch, row0, cols_out, acc0);
    store_row(batch, row0 + 1u, cols_out, acc1);
    store_row(batch, row0 + 2u, cols_out, acc2);
    store_row(batch, row0 + 3u, cols_out, acc3);
}

// ---------------------------------------------------------------- register-blocked, vec4 B

// The same idea with B read four columns at a time, for B not transposed and N a multiple
// of 4. On lavapipe a per-lane vec4 load costs little more than a scalar one, and this is
// about twice as fast as the scalar kernel above. A workgroup of 16 invocations covers 8
// rows (the same for all of them, so each A value is one uniform load) by 128 columns
// (8 per invocation: two vec4).

@group(0) @binding(1) var<storage, read> b4: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> out4: array<vec4<f32>>;

const VEC4_ROWS: u32 = 8u;
const VEC4_COLS: u32 = 128u;

// The bias of columns col..col + 4 (zeros without one).
fn column_bias4(col: u32) -> vec4<f32> {
    if HAS_BIAS {
        let last = params.n - 1u;
        return vec4<f32>(bias[min(col, last)], bias[min(col + 1u, last)],
                         bias[min(col + 2u, last)], bias[min(col + 3u, last)]);
    }
    return vec4<f32>(0.0);
}

// `store` for four columns.
fn store4(batch: u32, row: u32, col: u32, acc: vec4<f32>) {
    let p = params;
    if row >= p.m || col >= p.n {
        return;
    }
    var v = p.alpha * acc + column_bias4(col);
    if HAS_C {
        let at = batch * p.c_batch_stride + row * p.c_row_stride + col * p.c_col_stride;
        v += p.beta * vec4<f32>(c[at], c[at + p.c_col_stride], c[at + 2u * p.c_col_stride],
                                c[at + 3u * p.c_col_stride]);
    }
    let at = p.out_offset + (batch * p.m + row) * p.n + col;
    if RELU {
        v = max(v, vec4<f32>(0.0));
    }
    if RELU_GRAD {
        let h = vec4<f32>(relu_output[at], relu_output[at + 1u], relu_output[at + 2u],
                          relu_output[at + 3u]);
        v = select(vec4<f32>(0.0), v, h > vec4<f32>(0.0));
    }
    out4[at / 4u] = v;
}

@compute @workgroup_size(16)
fn matmul_blocked_vec4(@builtin(workgroup_id) wid: vec3<u32>,
                       @builtin(local_invocation_id) lid: vec3<u32>) {
    let p = params;
    let batch = wid.z;
    let a_base = a_start(batch);
    let b_base4 = b_start(batch) / 4u;
    let n4 = p.n / 4u;
    let row0 = wid.y * VEC4_ROWS;
    let last = p.m - 1u;
    let col = wid.x * VEC4_COLS + lid.x * 8u;
    // Out-of-range columns read a clamped (valid) vec4; `store4` drops them.
    let c4 = min(col / 4u, n4 - 1u);
    let c4_hi = min(col / 4u + 1u, n4 - 1u);

    var lo0 = vec4<f32>(0.0); var hi0 = vec4<f32>(0.0);
    var lo1 = vec4<f32>(0.0); var hi1 = vec4<f32>(0.0);
    var lo2 = vec4<f32>(0.0); var hi2 = vec4<f32>(0.0);
    var lo3 = vec4<f32>(0.0); var hi3 = vec4<f32>(0.0);
    var lo4 = vec4<f32>(0.0); var hi4 = vec4<f32>(0.0);
    var lo5 = vec4<f32>(0.0); var hi5 = vec4<f32>(0.0);
    var lo6 = vec4<f32>(0.0); var hi6 = vec4<f32>(0.0);
    var lo7 = vec4<f32>(0.0); var hi7 = vec4<f32>(0.0);
    for (var kk = 0u; kk < p.k; kk++) {
        let b_lo = b4[b_base4 + kk * n4 + c4];
        let b_hi = b4[b_base4 + kk * n4 + c4_hi];
        var av = vec4<f32>(load_a(a_base, min(row0, last), kk));
        lo0 = fma(av, b_lo, lo0); hi0 = fma(av, b_hi, hi0);
        av = vec4<f32>(load_a(a_base, min(row0 + 1u, last), kk));
        lo1 = fma(av, b_lo, lo1); hi1 = fma(av, b_hi, hi1);
        av = vec4<f32>(load_a(a_base, min(row0 + 2u, last), kk));
        lo2 = fma(av, b_lo, lo2); hi2 = fma(av, b_hi, hi2);
        av = vec4<f32>(load_a(a_base, min(row0 + 3u, last), kk));
        lo3 = fma(av, b_lo, lo3); hi3 = fma(av, b_hi, hi3);
        av = vec4<f32>(load_a(a_base, min(row0 + 4u, last), kk));
        lo4 = fma(av, b_lo, lo4); hi4 = fma(av, b_hi, hi4);
        av = vec4<f32>(load_a(a_base, min(row0 + 5u, last), kk));
        lo5 = fma(av, b_lo, lo5); hi5 = fma(av, b_hi, hi5);
        av = vec4<f32>(load_a(a_base, min(row0 + 6u, last), kk));
        lo6 = fma(av, b_lo, lo6); hi6 = fma(av, b_hi, hi6);
        av = vec4<f32>(load_a(a_base, min(row0 + 7u, last), kk));
        lo7 = fma(av, b_lo, lo7); hi7 = fma(av, b_hi, hi7);
    }
    store4(batch, row0, col, lo0); store4(batch, row0, col + 4u, hi0);
    store4(batch, row0 + 1u, col, lo1); store4(batch, row0 + 1u, col + 4u, hi1);
    store4(batch, row0 + 2u, col, lo2); store4(batch, row0 + 2u, col + 4u, hi2);
    store4(batch, row0 + 3u, col, lo3); store4(batch, row0 + 3u, col + 4u, hi3);
    store4(batch, row0 + 4u, col, lo4); store4(batch, row0 + 4u, col + 4u, hi4);
    store4(batch, row0 + 5u, col, lo5); store4(batch, row0 + 5u, col + 4u, hi5);
    store4(batch, row0 + 6u, col, lo6); store4(batch, row0 + 6u, col + 4u, hi6);
    store4(batch, row0 + 7u, col, lo7); store4(batch, row0 + 7u, col + 4u, hi7);
}

// ---------------------------------------------------------------- A·Bᵀ, vec4 along K

// A workgroup of 16 invocations covers 8 rows (uniform: each A vec4 is one broadcast load)
// by 16 columns, one column (one row of B) per invocation. The scalar blocked kernel reads
// a transposed B with a stride of K between lanes, one float at a time; here each lane
// streams its own row of B four floats at a time.

@group(0) @binding(0) var<storage, read> a4: array<vec4<f32>>;

const NT_ROWS: u32 = 8u;
const NT_COLS: u32 = 16u;

@compute @workgroup_size(16)
fn matmul_nt_vec4(@builtin(workgroup_id) wid: vec3<u32>,
                  @builtin(local_invocation_id) lid: vec3<u32>) {
    let p = params;
    let batch = wid.z;
    let k4 = p.k / 4u;
    let a_base4 = a_start(batch) / 4u;
    let col = wid.x * NT_COLS + lid.x;
    let b_row4 = b_start(batch) / 4u + min(col, p.n - 1u) * k4;
    let row0 = wid.y * NT_ROWS;
    let last = p.m - 1u;
    // Out-of-range rows read a clamped (valid) row; `store` drops them.
    var rows: array<u32, 8>;
    for (var r = 0u; r < NT_ROWS; r++) {
        rows[r] = a_base4 + min(row0 + r, last) * k4;
    }
    var acc0 = vec4<f32>(0.0); var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0); var acc3 = vec4<f32>(0.0);
    var acc4 = vec4<f32>(0.0); var acc5 = vec4<f32>(0.0);
    var acc6 = vec4<f32>(0.0); var acc7 = vec4<f32>(0.0);
    for (var kk = 0u; kk < k4; kk++) {
        let bv = b4[b_row4 + kk];
        acc0 = fma(a4[rows[0] + kk], bv, acc0);
        acc1 = fma(a4[rows[1] + kk], bv, acc1);
        acc2 = fma(a4[rows[2] + kk], bv, acc2);
        acc3 = fma(a4[rows[3] + kk], bv, acc3);
        acc4 = fma(a4[rows[4] + kk], bv, acc4);
        acc5 = fma(a4[rows[5] + kk], bv, acc5);
        acc6 = fma(a4[rows[6] + kk], bv, acc6);
        acc7 = fma(a4[rows[7] + kk], bv, acc7);
    }
    let ones = vec4<f32>(1.0);
    store(batch, row0, col, dot(acc0, ones));
    store(batch, row0 + 1u, col, dot(acc1, ones));
    store(batch, row0 + 2u, col, dot(acc2, ones));
    store(batch, row0 + 3u, col, dot(acc3, ones));
    store(batch, row0 + 4u, col, dot(acc4, ones));
    store(batch, row0 + 5u, col, dot(acc5, ones));
    store(batch, row0 + 6u, col, dot(acc6, ones));
    store(batch, row0 + 7u, col, dot(acc7, ones));
}

// ---------------------------------------------------------------- shared-memory tiled

const TILE: u32 = 64u;      // output tile edge per workgroup
const TILE_K: u32 = 16u;    // K values staged per step

var<workgroup> a_tile: array<f32, 1024>;   // [TILE_K][TILE]: a_tile[kk * TILE + row]
var<workgroup> b_tile: array<f32, 1024>;   // [TILE_K][TILE]: b_tile[kk * TILE + col]

@compute @workgroup_size(16, 16)
fn matmul_tiled(@builtin(workgroup_id) wid: vec3<u32>,
                @builtin(local_invocation_id) lid: vec3<u32>,
                @builtin(local_invocation_index) li: u32) {
    let p = params;
    let batch = wid.z;
    let a_base = a_start(batch);
    let b_base = b_start(batch);
    let tile_row = wid.y * TILE;
    let tile_col = wid.x * TILE;

    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var k0 = 0u; k0 < p.k; k0 += TILE_K) {
        // Stage a 64×16 slice of op(A) and a 16×64 slice of op(B): 4 values per invocation,
        // neighbouring invocations reading neighbouring addresses of the stored layout.
        for (var t = 0u; t < 4u; t++) {
            let e = li + t * 256u;
            var row: u32;
            var kk: u32;
            if TRANS_A {
                row = e % TILE;
                kk = e / TILE;
            } else {
                kk = e % TILE_K;
                row = e / TILE_K;
            }
            let in_range = tile_row + row < p.m && k0 + kk < p.k;
            let a_value = load_a(a_base, min(tile_row + row, p.m - 1u), min(k0 + kk, p.k - 1u));
            a_tile[kk * TILE + row] = select(0.0, a_value, in_range);

            var col: u32;
            if TRANS_B {
                kk = e % TILE_K;
                col = e / TILE_K;
            } else {
                col = e % TILE;
                kk = e / TILE;
            }
            let b_in_range = tile_col + col < p.n && k0 + kk < p.k;
            let b_value = load_b(b_base, min(k0 + kk, p.k - 1u), min(tile_col + col, p.n - 1u));
            b_tile[kk * TILE + col] = select(0.0, b_value, b_in_range);
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TILE_K; kk++) {
            let bv = vec4<f32>(b_tile[kk * TILE + lid.x], b_tile[kk * TILE + lid.x + 16u],
                               b_tile[kk * TILE + lid.x + 32u], b_tile[kk * TILE + lid.x + 48u]);
            acc0 = fma(vec4<f32>(a_tile[kk * TILE + lid.y]), bv, acc0);
            acc1 = fma(vec4<f32>(a_tile[kk * TILE + lid.y + 16u]), bv, acc1);
            acc2 = fma(vec4<f32>(a_tile[kk * TILE + lid.y + 32u]), bv, acc2);
            acc3 = fma(vec4<f32>(a_tile[kk * TILE + lid.y + 48u]), bv, acc3);
        }
        workgroupBarrier();
    }
    let cols = vec4<u32>(tile_col + lid.x) + vec4<u32>(0u, 16u, 32u, 48u);
    store_row(batch, tile_row + lid.y, cols, acc0);
    store_row(batch, tile_row + lid.y + 16u, cols, acc1);
    store_row(batch, tile_row + lid.y + 32u, cols, acc2);
    store_row(batch, tile_row + lid.y + 48u, cols, acc3);
}

// ---------------------------------------------------------------- shared-memory tiled, vec4

// For real GPUs on large products whose rows are whole vec4s (N and K multiples of 4, M too
// when A is transposed; offsets and batch strides multiples of 4): 128×128 output tiles per
// 16×16 workgroup, each invocation an 8×8 block (two 4-row by two 4-column quads, 64 apart so
// that neighbouring invocations read neighbouring workgroup words). Every global load is a
// vec4; op(A) and op(B) are staged 8 values of K at a time as vec4 quads of 4 rows (4
// columns), so that one K step of an invocation is 4 vec4 reads of workgroup memory for 64
// multiply-adds, against 8 scalar reads for 16 in `matmul_tiled`.

const WIDE_TILE: u32 = 128u;
const WIDE_TILE_K: u32 = 8u;
const WIDE_QUADS: u32 = 32u;   // WIDE_TILE / 4

// [WIDE_TILE_K][WIDE_QUADS]: quad q of step kk holds rows (columns) 4q..4q + 4 of the tile.
var<workgroup> a_quads: array<vec4<f32>, 256>;
var<workgroup> b_quads: array<vec4<f32>, 256>;

// The 4 values of `v` along K into steps kk..kk + 4 of row (column) `i` of a quad array.
fn scatter_a_along_k(kk: u32, i: u32, v: vec4<f32>) {
    let at = kk * WIDE_QUADS + i / 4u;
    let lane = i % 4u;
    a_quads[at][lane] = v.x;
    a_quads[at + WIDE_QUADS][lane] = v.y;
    a_quads[at + 2u * WIDE_QUADS][lane] = v.z;
    a_quads[at + 3u * WIDE_QUADS][lane] = v.w;
}

fn scatter_b_along_k(kk: u32, i: u32, v: vec4<f32>) {
    let at = kk * WIDE_QUADS + i / 4u;
    let lane = i % 4u;
    b_quads[at][lane] = v.x;
    b_quads[at + WIDE_QUADS][lane] = v.y;
    b_quads[at + 2u * WIDE_QUADS][lane] = v.z;
    b_quads[at + 3u * WIDE_QUADS][lane] = v.w;
}

// Stages op(A)[tile_row.., k0..k0 + 8] and op(B)[k0..k0 + 8, tile_col..]: one vec4 of each
// per invocation, zeros outside the matrices.
fn stage_wide(a_base: u32, b_base: u32, tile_row: u32, tile_col: u32, k0: u32, li: u32) {
    let p = params;
    let zero = vec4<f32>(0.0);
    if TRANS_A {
        // A stored [K, M]: a vec4 is 4 rows of one step.
        let kk = li / WIDE_QUADS;
        let row = tile_row + 4u * (li % WIDE_QUADS);
        let k = k0 + kk;
        let v = a4[(a_base + min(k, p.k - 1u) * p.m + min(row, p.m - 4u)) / 4u];
        a_quads[li] = select(zero, v, row < p.m && k < p.k);
    } else {
        // A stored [M, K]: a vec4 is 4 steps of one row.
        let r = li / 2u;
        let kk = 4u * (li % 2u);
        let row = tile_row + r;
        let k = k0 + kk;
        let v = a4[(a_base + min(row, p.m - 1u) * p.k + min(k, p.k - 4u)) / 4u];
        scatter_a_along_k(kk, r, select(zero, v, row < p.m && k < p.k));
    }
    if TRANS_B {
        // B stored [N, K]: a vec4 is 4 steps of one column.
        let c = li / 2u;
        let kk = 4u * (li % 2u);
        let col = tile_col + c;
        let k = k0 + kk;
        let v = b4[(b_base + min(col, p.n - 1u) * p.k + min(k, p.k - 4u)) / 4u];
        scatter_b_along_k(kk, c, select(zero, v, col < p.n && k < p.k));
    } else {
        // B stored [K, N]: a vec4 is 4 columns of one step.
        let kk = li / WIDE_QUADS;
        let col = tile_col + 4u * (li % WIDE_QUADS);
        let k = k0 + kk;
        let v = b4[(b_base + min(k, p.k - 1u) * p.n + min(col, p.n - 4u)) / 4u];
        b_quads[li] = select(zero, v, col < p.n && k < p.k);
    }
}

@compute @workgroup_size(16, 16)
fn matmul_tiled_vec4(@builtin(workgroup_id) wid: vec3<u32>,
                     @builtin(local_invocation_id) lid: vec3<u32>,
                     @builtin(local_invocation_index) li: u32) {
    let p = params;
    let batch = wid.z;
    let a_base = a_start(batch);
    let b_base = b_start(batch);
    let tile_row = wid.y * WIDE_TILE;
    let tile_col = wid.x * WIDE_TILE;

    // Row i of the block (0..4 in the low quad, 4..8 in the high one) by its low and high
    // 4 columns.
    var lo0 = vec4<f32>(0.0); var hi0 = vec4<f32>(0.0);
    var lo1 = vec4<f32>(0.0); var hi1 = vec4<f32>(0.0);
    var lo2 = vec4<f32>(0.0); var hi2 = vec4<f32>(0.0);
    var lo3 = vec4<f32>(0.0); var hi3 = vec4<f32>(0.0);
    var lo4 = vec4<f32>(0.0); var hi4 = vec4<f32>(0.0);
    var lo5 = vec4<f32>(0.0); var hi5 = vec4<f32>(0.0);
    var lo6 = vec4<f32>(0.0); var hi6 = vec4<f32>(0.0);
    var lo7 = vec4<f32>(0.0); var hi7 = vec4<f32>(0.0);
    for (var k0 = 0u; k0 < p.k; k0 += WIDE_TILE_K) {
        stage_wide(a_base, b_base, tile_row, tile_col, k0, li);
        workgroupBarrier();
        for (var kk = 0u; kk < WIDE_TILE_K; kk++) {
            let a_lo = a_quads[kk * WIDE_QUADS + lid.y];
            let a_hi = a_quads[kk * WIDE_QUADS + lid.y + 16u];
            let b_lo = b_quads[kk * WIDE_QUADS + lid.x];
            let b_hi = b_quads[kk * WIDE_QUADS + lid.x + 16u];
            lo0 = fma(vec4<f32>(a_lo.x), b_lo, lo0); hi0 = fma(vec4<f32>(a_lo.x), b_hi, hi0);
            lo1 = fma(vec4<f32>(a_lo.y), b_lo, lo1); hi1 = fma(vec4<f32>(a_lo.y), b_hi, hi1);
            lo2 = fma(vec4<f32>(a_lo.z), b_lo, lo2); hi2 = fma(vec4<f32>(a_lo.z), b_hi, hi2);
            lo3 = fma(vec4<f32>(a_lo.w), b_lo, lo3); hi3 = fma(vec4<f32>(a_lo.w), b_hi, hi3);
            lo4 = fma(vec4<f32>(a_hi.x), b_lo, lo4); hi4 = fma(vec4<f32>(a_hi.x), b_hi, hi4);
            lo5 = fma(vec4<f32>(a_hi.y), b_lo, lo5); hi5 = fma(vec4<f32>(a_hi.y), b_hi, hi5);
            lo6 = fma(vec4<f32>(a_hi.z), b_lo, lo6); hi6 = fma(vec4<f32>(a_hi.z), b_hi, hi6);
            lo7 = fma(vec4<f32>(a_hi.w), b_lo, lo7); hi7 = fma(vec4<f32>(a_hi.w), b_hi, hi7);
        }
        workgroupBarrier();
    }
    let row_lo = tile_row + 4u * lid.y;
    let row_hi = row_lo + 64u;
    let col_lo = tile_col + 4u * lid.x;
    let col_hi = col_lo + 64u;
    store4(batch, row_lo, col_lo, lo0); store4(batch, row_lo, col_hi, hi0);
    store4(batch, row_lo + 1u, col_lo, lo1); store4(batch, row_lo + 1u, col_hi, hi1);
    store4(batch, row_lo + 2u, col_lo, lo2); store4(batch, row_lo + 2u, col_hi, hi2);
    store4(batch, row_lo + 3u, col_lo, lo3); store4(batch, row_lo + 3u, col_hi, hi3);
    store4(batch, row_hi, col_lo, lo4); store4(batch, row_hi, col_hi, hi4);
    store4(batch, row_hi + 1u, col_lo, lo5); store4(batch, row_hi + 1u, col_hi, hi5);
    store4(batch, row_hi + 2u, col_lo, lo6); store4(batch, row_hi + 2u, col_hi, hi6);
    store4(batch, row_hi + 3u, col_lo, lo7); store4(batch, row_hi + 3u, col_hi, hi7);
}
