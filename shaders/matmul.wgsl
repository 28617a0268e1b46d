// General matrix multiply, batched:
//     out[b] = alpha · op(A[b]) · op(B[b]) + beta · C[b] + bias
// op(A) is M×K (A stored M×K, or K×M when TRANS_A), op(B) is K×N (B stored K×N, or N×K
// when TRANS_B). C is read through strides, so it may be broadcast over rows, columns or
// batches; bias is a row vector of N. The output is contiguous [batch, M, N].
// The workgroup's z coordinate is the batch.
//
// Two variants of one contract:
// - `matmul_blocked`: no workgroup memory, no barriers. Each invocation keeps a 4×4 block
//   of C in registers. Its 4 columns are 8 apart, so the 8 invocations along x (which a
//   CPU driver such as lavapipe runs as the 8 lanes of one SIMD register) read 8
//   neighbouring B values at once, while the A values they need are the same for all 8.
//   Fastest where barriers are expensive: CPU adapters.
// - `matmul_tiled`: 64×64 output tiles per 16×16 workgroup, staged through workgroup
//   memory 16 values of K at a time, each invocation a 4×4 block. For real GPUs.

override TRANS_A: bool = false;
override TRANS_B: bool = false;
override HAS_C: bool = false;
override HAS_BIAS: bool = false;

struct Params {
    m: u32,
    n: u32,
    k: u32,
    _pad0: u32,
    a_batch_stride: u32,   // 0 when A is shared by every batch
    b_batch_stride: u32,
    c_batch_stride: u32,
    c_row_stride: u32,     // 0 when C is broadcast over rows
    c_col_stride: u32,     // 0 when C is broadcast over columns
    alpha: f32,
    beta: f32,
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read> c: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
@group(0) @binding(5) var<uniform> params: Params;

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

// The epilogue shared by both variants: scale, add beta·C and bias, store if in range.
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
    out[(batch * p.m + row) * p.n + col] = v;
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
    let a_base = batch * p.a_batch_stride;
    let b_base = batch * p.b_batch_stride;
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
    let a_base = batch * p.a_batch_stride;
    let b_base = batch * p.b_batch_stride;
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
            a_tile[kk * TILE + row] = select(0.0, load_a(a_base, min(tile_row + row, p.m - 1u), min(k0 + kk, p.k - 1u)), in_range);

            var col: u32;
            if TRANS_B {
                kk = e % TILE_K;
                col = e / TILE_K;
            } else {
                col = e % TILE;
                kk = e / TILE;
            }
            let b_in_range = tile_col + col < p.n && k0 + kk < p.k;
            b_tile[kk * TILE + col] = select(0.0, load_b(b_base, min(k0 + kk, p.k - 1u), min(tile_col + col, p.n - 1u)), b_in_range);
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
