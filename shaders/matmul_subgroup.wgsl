// The matmul contract of `matmul.wgsl` (whose declarations this file is appended to, so that
// the adapters without subgroups never compile it) in a kernel for CPU adapters with
// subgroups of at least 8 lanes, such as lavapipe.
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
// The layouts it needs (checked by the launcher): N and K multiples of 4, and M too when A
// is transposed; offsets and batch strides multiples of 4. A transposed B costs nothing
// extra: each lane then loads its 4 columns as 4 vec4 along K and transposes them in
// registers, the same number of loads.

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

fn store_rows8(batch: u32, row: u32, col: u32, acc: Rows8, bias4: vec4<f32>) {
    store4_biased(batch, row, col, acc.r0, bias4);
    store4_biased(batch, row + 1u, col, acc.r1, bias4);
    store4_biased(batch, row + 2u, col, acc.r2, bias4);
    store4_biased(batch, row + 3u, col, acc.r3, bias4);
    store4_biased(batch, row + 4u, col, acc.r4, bias4);
    store4_biased(batch, row + 5u, col, acc.r5, bias4);
    store4_biased(batch, row + 6u, col, acc.r6, bias4);
    store4_biased(batch, row + 7u, col, acc.r7, bias4);
}

const SUBGROUP_ROWS: u32 = 32u;
const SUBGROUP_COLS: u32 = 32u;   // 8 lanes × one vec4

@compute @workgroup_size(8)
fn matmul_subgroup(@builtin(workgroup_id) wid: vec3<u32>,
                   @builtin(subgroup_invocation_id) lane: u32) {
    let p = params;
    let batch = wid.z;
    let a_base4 = (p.a_offset + batch * p.a_batch_stride) / 4u;
    let b_base4 = (p.b_offset + batch * p.b_batch_stride) / 4u;
    let n4 = p.n / 4u;
    let k4 = p.k / 4u;
    let row0 = wid.y * SUBGROUP_ROWS;
    let col = wid.x * SUBGROUP_COLS + lane * 4u;
    // Out-of-range rows and columns load clamped (valid) addresses; `store4` drops them.
    let b_col4 = b_base4 + min(col / 4u, n4 - 1u);
    let last_col = p.n - 1u;
    let b_row4_0 = b_base4 + min(col, last_col) * k4;
    let b_row4_1 = b_base4 + min(col + 1u, last_col) * k4;
    let b_row4_2 = b_base4 + min(col + 2u, last_col) * k4;
    let b_row4_3 = b_base4 + min(col + 3u, last_col) * k4;
    let m4 = p.m / 4u;
    let last_row = p.m - 1u;
    let a_row4_0 = a_base4 + min(row0 + lane, last_row) * k4;
    let a_row4_1 = a_base4 + min(row0 + 8u + lane, last_row) * k4;
    let a_row4_2 = a_base4 + min(row0 + 16u + lane, last_row) * k4;
    let a_row4_3 = a_base4 + min(row0 + 24u + lane, last_row) * k4;
    let a_quad4 = a_base4 + min(row0 / 4u + lane, m4 - 1u);

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
            let kq = k / 4u;
            let c0 = b4[b_row4_0 + kq];
            let c1 = b4[b_row4_1 + kq];
            let c2 = b4[b_row4_2 + kq];
            let c3 = b4[b_row4_3 + kq];
            b0 = vec4<f32>(c0.x, c1.x, c2.x, c3.x);
            b1 = vec4<f32>(c0.y, c1.y, c2.y, c3.y);
            b2 = vec4<f32>(c0.z, c1.z, c2.z, c3.z);
            b3 = vec4<f32>(c0.w, c1.w, c2.w, c3.w);
        } else {
            b0 = b4[b_col4 + k * n4];
            b1 = b4[b_col4 + (k + 1u) * n4];
            b2 = b4[b_col4 + (k + 2u) * n4];
            b3 = b4[b_col4 + (k + 3u) * n4];
        }
        if TRANS_A {
            acc = fma_block(acc, rows_of_lanes(a4[a_quad4 + k * m4]), b0);
            acc = fma_block(acc, rows_of_lanes(a4[a_quad4 + (k + 1u) * m4]), b1);
            acc = fma_block(acc, rows_of_lanes(a4[a_quad4 + (k + 2u) * m4]), b2);
            acc = fma_block(acc, rows_of_lanes(a4[a_quad4 + (k + 3u) * m4]), b3);
        } else {
            let kq = k / 4u;
            let a_rows = array<vec4<f32>, 4>(a4[a_row4_0 + kq], a4[a_row4_1 + kq],
                                             a4[a_row4_2 + kq], a4[a_row4_3 + kq]);
            acc = fma_block(acc, rows_at_step(a_rows, 0u), b0);
            acc = fma_block(acc, rows_at_step(a_rows, 1u), b1);
            acc = fma_block(acc, rows_at_step(a_rows, 2u), b2);
            acc = fma_block(acc, rows_at_step(a_rows, 3u), b3);
        }
    }
    let bias4 = column_bias4(col);
    store_rows8(batch, row0, col, acc.g0, bias4);
    store_rows8(batch, row0 + 8u, col, acc.g1, bias4);
    store_rows8(batch, row0 + 16u, col, acc.g2, bias4);
    store_rows8(batch, row0 + 24u, col, acc.g3, bias4);
}
