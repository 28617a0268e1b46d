// The matmul contract of `matmul.wgsl` (whose declarations this file is appended to, so that
// the adapters without subgroups never compile it) in a kernel for CPU adapters with
// subgroups of at least 8 lanes, such as lavapipe.
//
// The module lacks the `enable subgroups;` the WGSL specification requires: naga 30 refuses
// the directive (it enables subgroups from the device's features), so the launcher's
// `SUBGROUP_SHADER` puts it first only for other compilers, such as Tint.
//
// Why it is shaped this way (measured on lavapipe, Mesa 25, in its generated x86 code):
// - A load whose index differs between lanes is compiled as a loop over the 8 lanes, each
//   checking its mask and the buffer's bounds and then loading one float: about 7
//   instructions per float. Inside a loop every load counts as such, even when all lanes
//   read the same address (the loop counter is treated as varying), so the uniform A
//   loads of `matmul_blocked_vec4` cost 8 lane-loads each.
// - A subgroup broadcast from a constant lane is one register permute.
// So each lane loads a different part of the A tile with vec4 loads, and the value of
// each row is broadcast to all lanes from the lane that loaded it: every float of A is
// loaded once per workgroup instead of once per lane. Each lane keeps a 32-row × 4-column
// block of C (its own vec4 of B columns against all 32 rows), 32 × 4 × 2 flops per B vec4.
// Every accumulator is named (structs of vec4, no arrays): LLVM keeps an array indexed in a
// loop in memory, which was 20× slower.
//
// Any layout: where N and K are multiples of 4 (M too when A is transposed) and offsets and
// batch strides are multiples of 4, every row it reads starts on a vec4 and is read as vec4s
// (`ALIGNED`); elsewhere (a 10-class output layer, say) each vec4 is gathered from 4 clamped
// floats, zero past K. Where the output's rows are whole vec4s (N and its offset multiples
// of 4), `matmul_subgroup_vec4` stores each lane's 4 columns of a row as one vec4; elsewhere
// `matmul_subgroup` stores float by float (a lane's 4 columns may straddle two vec4s of the
// output). A and B are only ever read through their vec4 views, and each entry point
// writes through one view of the output: an entry point may not use two views of one
// binding. A transposed B costs nothing extra: each lane then loads its 4 columns as
// 4 vec4 along K and transposes them in registers, the same number of loads.

// Set by the launcher when the layout allows vec4 loads (see above). A pipeline constant,
// so the other path is compiled away.
override ALIGNED: bool = true;

// Element i of A or of B through the vec4 views (storage buffers are whole vec4s long).
fn a_at(i: u32) -> f32 {
    return a4[i / 4u][i % 4u];
}

fn b_at(i: u32) -> f32 {
    return b4[i / 4u][i % 4u];
}

// A[row, k..k + 4], A not transposed, `row_start` the index of A[row, 0]; zeros past K.
fn a_along_k(row_start: u32, k: u32) -> vec4<f32> {
    if ALIGNED {
        return a4[(row_start + k) / 4u];
    }
    return vec4<f32>(a_at_k(row_start, k), a_at_k(row_start, k + 1u),
                     a_at_k(row_start, k + 2u), a_at_k(row_start, k + 3u));
}

fn a_at_k(row_start: u32, k: u32) -> f32 {
    return select(0.0, a_at(row_start + min(k, params.k - 1u)), k < params.k);
}

// B[k..k + 4, col] of a transposed B, `col_start` the index of B[col, 0]; zeros past K.
fn b_along_k(col_start: u32, k: u32) -> vec4<f32> {
    if ALIGNED {
        return b4[(col_start + k) / 4u];
    }
    return vec4<f32>(b_at_k(col_start, k), b_at_k(col_start, k + 1u),
                     b_at_k(col_start, k + 2u), b_at_k(col_start, k + 3u));
}

fn b_at_k(col_start: u32, k: u32) -> f32 {
    return select(0.0, b_at(col_start + min(k, params.k - 1u)), k < params.k);
}

// op(A)[row..row + 4, k] of a transposed A (stored [K, M] from `base`); rows past M are
// clamped (their results are dropped), zeros past K.
fn a_across_rows(base: u32, k: u32, row: u32) -> vec4<f32> {
    let p = params;
    if ALIGNED {
        return a4[(base + k * p.m + min(row, p.m - 4u)) / 4u];
    }
    let at = base + min(k, p.k - 1u) * p.m;
    let last = p.m - 1u;
    let v = vec4<f32>(a_at(at + min(row, last)), a_at(at + min(row + 1u, last)),
                      a_at(at + min(row + 2u, last)), a_at(at + min(row + 3u, last)));
    return select(vec4<f32>(0.0), v, k < p.k);
}

// B[k, col..col + 4] of B not transposed (stored [K, N] from `base`); columns past N are
// clamped, zeros past K.
fn b_across_cols(base: u32, k: u32, col: u32) -> vec4<f32> {
    let p = params;
    if ALIGNED {
        return b4[(base + k * p.n + min(col, p.n - 4u)) / 4u];
    }
    let at = base + min(k, p.k - 1u) * p.n;
    let last = p.n - 1u;
    let v = vec4<f32>(b_at(at + min(col, last)), b_at(at + min(col + 1u, last)),
                      b_at(at + min(col + 2u, last)), b_at(at + min(col + 3u, last)));
    return select(vec4<f32>(0.0), v, k < p.k);
}

// This lane's 4 columns of 8 consecutive rows.
struct Rows8 {
    r0: vec4<f32>, r1: vec4<f32>, r2: vec4<f32>, r3: vec4<f32>,
    r4: vec4<f32>, r5: vec4<f32>, r6: vec4<f32>, r7: vec4<f32>,
}

// This lane's 4 columns of the workgroup's 32 rows.
struct Block32 {
    g0: Rows8, g1: Rows8, g2: Rows8, g3: Rows8,
}

// One K step of 8 rows: acc[r] += a[r] · b, with a[0..4] in `a_lo` and a[4..8] in `a_hi`.
fn fma_rows8(acc: Rows8, a_lo: vec4<f32>, a_hi: vec4<f32>, b: vec4<f32>) -> Rows8 {
    return Rows8(
        fma(vec4<f32>(a_lo.x), b, acc.r0), fma(vec4<f32>(a_lo.y), b, acc.r1),
        fma(vec4<f32>(a_lo.z), b, acc.r2), fma(vec4<f32>(a_lo.w), b, acc.r3),
        fma(vec4<f32>(a_hi.x), b, acc.r4), fma(vec4<f32>(a_hi.y), b, acc.r5),
        fma(vec4<f32>(a_hi.z), b, acc.r6), fma(vec4<f32>(a_hi.w), b, acc.r7),
    );
}

// One K step of all 32 rows, whose A values are `a[0..8]` (4 rows each).
fn fma_block(acc: Block32, a: array<vec4<f32>, 8>, b: vec4<f32>) -> Block32 {
    return Block32(
        fma_rows8(acc.g0, a[0], a[1], b), fma_rows8(acc.g1, a[2], a[3], b),
        fma_rows8(acc.g2, a[4], a[5], b), fma_rows8(acc.g3, a[6], a[7], b),
    );
}

// `x` of lanes 0-3 and of lanes 4-7, on every lane.
fn lanes_0_to_3(x: f32) -> vec4<f32> {
    return vec4<f32>(subgroupBroadcast(x, 0u), subgroupBroadcast(x, 1u),
                     subgroupBroadcast(x, 2u), subgroupBroadcast(x, 3u));
}

fn lanes_4_to_7(x: f32) -> vec4<f32> {
    return vec4<f32>(subgroupBroadcast(x, 4u), subgroupBroadcast(x, 5u),
                     subgroupBroadcast(x, 6u), subgroupBroadcast(x, 7u));
}

// A not transposed: lane l holds `a_rows[g]` = A[row0 + 8g + l, k..k+4]. The 32 row values
// of step k + j, 4 rows per vec4.
fn rows_at_step(a_rows: array<vec4<f32>, 4>, j: u32) -> array<vec4<f32>, 8> {
    return array<vec4<f32>, 8>(
        lanes_0_to_3(a_rows[0][j]), lanes_4_to_7(a_rows[0][j]),
        lanes_0_to_3(a_rows[1][j]), lanes_4_to_7(a_rows[1][j]),
        lanes_0_to_3(a_rows[2][j]), lanes_4_to_7(a_rows[2][j]),
        lanes_0_to_3(a_rows[3][j]), lanes_4_to_7(a_rows[3][j]),
    );
}

// A transposed: lane l holds A[row0 + 4l .. row0 + 4l + 4, k] of one step k; lane q's vec4
// is rows 4q..4q+4 of the 32.
fn rows_of_lanes(a_quad: vec4<f32>) -> array<vec4<f32>, 8> {
    return array<vec4<f32>, 8>(
        subgroupBroadcast(a_quad, 0u), subgroupBroadcast(a_quad, 1u),
        subgroupBroadcast(a_quad, 2u), subgroupBroadcast(a_quad, 3u),
        subgroupBroadcast(a_quad, 4u), subgroupBroadcast(a_quad, 5u),
        subgroupBroadcast(a_quad, 6u), subgroupBroadcast(a_quad, 7u),
    );
}

// The block's rows in order, for the epilogue to store in a loop: one copy of the store
// code instead of 32 inlined ones (with a strided C read in each, LLVM took 5.6 s to compile
// the kernel, 0.8 s this way). The array lives in memory, which costs 0-5% where K = 128
// and nothing measurable at larger K.
fn block_rows(acc: Block32) -> array<vec4<f32>, 32> {
    return array<vec4<f32>, 32>(
        acc.g0.r0, acc.g0.r1, acc.g0.r2, acc.g0.r3, acc.g0.r4, acc.g0.r5, acc.g0.r6, acc.g0.r7,
        acc.g1.r0, acc.g1.r1, acc.g1.r2, acc.g1.r3, acc.g1.r4, acc.g1.r5, acc.g1.r6, acc.g1.r7,
        acc.g2.r0, acc.g2.r1, acc.g2.r2, acc.g2.r3, acc.g2.r4, acc.g2.r5, acc.g2.r6, acc.g2.r7,
        acc.g3.r0, acc.g3.r1, acc.g3.r2, acc.g3.r3, acc.g3.r4, acc.g3.r5, acc.g3.r6, acc.g3.r7,
    );
}

const SUBGROUP_ROWS: u32 = 32u;
const SUBGROUP_COLS: u32 = 32u;   // 8 lanes × one vec4

// This lane's 4 columns (from `subgroup_col`) of the workgroup's 32 rows (from
// `subgroup_row`), summed over all of K.
fn subgroup_block(wid: vec3<u32>, lane: u32) -> Block32 {
    let p = params;
    let batch = wid.z;
    let a_base = a_start(batch);
    let b_base = b_start(batch);
    let row0 = subgroup_row(wid);
    let col = subgroup_col(wid, lane);
    // Out-of-range rows and columns load clamped (valid) addresses; the stores drop them.
    let last_row = p.m - 1u;
    let a_row_0 = a_base + min(row0 + lane, last_row) * p.k;
    let a_row_1 = a_base + min(row0 + 8u + lane, last_row) * p.k;
    let a_row_2 = a_base + min(row0 + 16u + lane, last_row) * p.k;
    let a_row_3 = a_base + min(row0 + 24u + lane, last_row) * p.k;
    let a_quad_row = row0 + 4u * lane;
    let last_col = p.n - 1u;
    let b_col_0 = b_base + min(col, last_col) * p.k;
    let b_col_1 = b_base + min(col + 1u, last_col) * p.k;
    let b_col_2 = b_base + min(col + 2u, last_col) * p.k;
    let b_col_3 = b_base + min(col + 3u, last_col) * p.k;

    let zero = Rows8(vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0),
                     vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0));
    var acc = Block32(zero, zero, zero, zero);
    for (var k = 0u; k < p.k; k += 4u) {
        // B[k + j, col..col + 4] as b0..b3.
        var b0: vec4<f32>;
        var b1: vec4<f32>;
        var b2: vec4<f32>;
        var b3: vec4<f32>;
        if TRANS_B {
            let c0 = b_along_k(b_col_0, k);
            let c1 = b_along_k(b_col_1, k);
            let c2 = b_along_k(b_col_2, k);
            let c3 = b_along_k(b_col_3, k);
            b0 = vec4<f32>(c0.x, c1.x, c2.x, c3.x);
            b1 = vec4<f32>(c0.y, c1.y, c2.y, c3.y);
            b2 = vec4<f32>(c0.z, c1.z, c2.z, c3.z);
            b3 = vec4<f32>(c0.w, c1.w, c2.w, c3.w);
        } else {
            b0 = b_across_cols(b_base, k, col);
            b1 = b_across_cols(b_base, k + 1u, col);
            b2 = b_across_cols(b_base, k + 2u, col);
            b3 = b_across_cols(b_base, k + 3u, col);
        }
        if TRANS_A {
            acc = fma_block(acc, rows_of_lanes(a_across_rows(a_base, k, a_quad_row)), b0);
            acc = fma_block(acc, rows_of_lanes(a_across_rows(a_base, k + 1u, a_quad_row)), b1);
            acc = fma_block(acc, rows_of_lanes(a_across_rows(a_base, k + 2u, a_quad_row)), b2);
            acc = fma_block(acc, rows_of_lanes(a_across_rows(a_base, k + 3u, a_quad_row)), b3);
        } else {
            let a_rows = array<vec4<f32>, 4>(a_along_k(a_row_0, k), a_along_k(a_row_1, k),
                                             a_along_k(a_row_2, k), a_along_k(a_row_3, k));
            acc = fma_block(acc, rows_at_step(a_rows, 0u), b0);
            acc = fma_block(acc, rows_at_step(a_rows, 1u), b1);
            acc = fma_block(acc, rows_at_step(a_rows, 2u), b2);
            acc = fma_block(acc, rows_at_step(a_rows, 3u), b3);
        }
    }
    return acc;
}

fn subgroup_row(wid: vec3<u32>) -> u32 {
    return wid.y * SUBGROUP_ROWS;
}

fn subgroup_col(wid: vec3<u32>, lane: u32) -> u32 {
    return wid.x * SUBGROUP_COLS + lane * 4u;
}

@compute @workgroup_size(8)
fn matmul_subgroup(@builtin(workgroup_id) wid: vec3<u32>,
                   @builtin(subgroup_invocation_id) lane: u32) {
    var rows = block_rows(subgroup_block(wid, lane));
    let row0 = subgroup_row(wid);
    let cols = vec4<u32>(subgroup_col(wid, lane)) + vec4<u32>(0u, 1u, 2u, 3u);
    for (var r = 0u; r < SUBGROUP_ROWS; r++) {
        store_row(wid.z, row0 + r, cols, rows[r]);
    }
}

// The same where the output's rows are whole vec4s: a store per row instead of four.
@compute @workgroup_size(8)
fn matmul_subgroup_vec4(@builtin(workgroup_id) wid: vec3<u32>,
                        @builtin(subgroup_invocation_id) lane: u32) {
    var rows = block_rows(subgroup_block(wid, lane));
    let row0 = subgroup_row(wid);
    let col = subgroup_col(wid, lane);
    for (var r = 0u; r < SUBGROUP_ROWS; r++) {
        store4(wid.z, row0 + r, col, rows[r]);
    }
}
