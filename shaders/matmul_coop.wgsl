// The matmul contract of `matmul.wgsl` (appended below this file, whose `enable`s must come
// first) on an adapter's matrix units, through wgpu's experimental cooperative matrices:
// 16×16×16 products of f16 matrices accumulated in f32, the shape NVIDIA, AMD and Intel
// report. op(A) and op(B) are read as f32 like everywhere else and rounded to f16 while
// they are staged, so a result differs from an f32 product by the inputs' rounding: each
// product a·b is off by at most about 2⁻¹⁰·|a·b| (inputs must lie within f16's ±65504).
//
// A workgroup of 128 invocations, four subgroups of 32 lanes (the launcher runs it only on
// adapters whose subgroups are always 32 wide, such as NVIDIA's), owns a 64×64 output tile:
// each subgroup a 32×32 block of 2×2 matrices. (The cooperative operations must be reached by
// the whole workgroup alike, so a subgroup cannot skip or repeat blocks by its id.) The K axis
// is staged 32 values at a time into workgroup memory (f16, row-major) by all invocations;
// each subgroup multiplies its block's matrices from there. The accumulators go through
// workgroup memory to `store`, which applies α, β·C, the bias and the bounds of M and N.

enable f16;
enable wgpu_cooperative_matrix;

const COOP_TILE: u32 = 64u;
const COOP_TILE_K: u32 = 32u;
const COOP_INVOCATIONS: u32 = 128u;

var<workgroup> a_half: array<f16, 2048>;     // [COOP_TILE][COOP_TILE_K]
var<workgroup> b_half: array<f16, 2048>;     // [COOP_TILE_K][COOP_TILE]
var<workgroup> c_block: array<f32, 4096>;    // [COOP_TILE][COOP_TILE]

// Stages op(A)[tile_row.., k0..k0 + 32] and op(B)[k0..k0 + 32, tile_col..] as f16, zeros
// outside the matrices: 16 values of each per invocation.
fn stage_half(a_base: u32, b_base: u32, tile_row: u32, tile_col: u32, k0: u32, li: u32) {
    let p = params;
    for (var e = 0u; e < 16u; e++) {
        let i = li + e * COOP_INVOCATIONS;
        // A: consecutive invocations along K when A is stored [M, K], along M when [K, M],
        // so that neighbouring lanes read neighbouring addresses.
        var r: u32;
        var kk: u32;
        if TRANS_A {
            r = i % COOP_TILE;
            kk = i / COOP_TILE;
        } else {
            r = i / COOP_TILE_K;
            kk = i % COOP_TILE_K;
        }
        let row = tile_row + r;
        let k = k0 + kk;
        let a_value = load_a(a_base, min(row, p.m - 1u), min(k, p.k - 1u));
        a_half[r * COOP_TILE_K + kk] = f16(select(0.0, a_value, row < p.m && k < p.k));

        var c: u32;
        if TRANS_B {
            c = i / COOP_TILE_K;
            kk = i % COOP_TILE_K;
        } else {
            c = i % COOP_TILE;
            kk = i / COOP_TILE;
        }
        let col = tile_col + c;
        let kb = k0 + kk;
        let b_value = load_b(b_base, min(kb, p.k - 1u), min(col, p.n - 1u));
        b_half[kk * COOP_TILE + c] = f16(select(0.0, b_value, col < p.n && kb < p.k));
    }
}

@compute @workgroup_size(128)
fn matmul_coop(@builtin(workgroup_id) wid: vec3<u32>,
               @builtin(local_invocation_index) li: u32,
               @builtin(subgroup_id) subgroup: u32) {
    let p = params;
    let batch = wid.z;
    let a_base = a_start(batch);
    let b_base = b_start(batch);
    let tile_row = wid.y * COOP_TILE;
    let tile_col = wid.x * COOP_TILE;
    // This subgroup's 32×32 block.
    let block_row = (subgroup / 2u) * 32u;
    let block_col = (subgroup % 2u) * 32u;
    var acc00 = coop_mat16x16<f32, C>();
    var acc01 = coop_mat16x16<f32, C>();
    var acc10 = coop_mat16x16<f32, C>();
    var acc11 = coop_mat16x16<f32, C>();
    for (var k0 = 0u; k0 < p.k; k0 += COOP_TILE_K) {
        stage_half(a_base, b_base, tile_row, tile_col, k0, li);
        workgroupBarrier();
        for (var kk = 0u; kk < COOP_TILE_K; kk += 16u) {
            let a0 = coopLoadT<coop_mat16x16<f16, A>>(
                &a_half[block_row * COOP_TILE_K + kk], COOP_TILE_K);
            let a1 = coopLoadT<coop_mat16x16<f16, A>>(
                &a_half[(block_row + 16u) * COOP_TILE_K + kk], COOP_TILE_K);
            let b0 = coopLoadT<coop_mat16x16<f16, B>>(
                &b_half[kk * COOP_TILE + block_col], COOP_TILE);
            let b1 = coopLoadT<coop_mat16x16<f16, B>>(
                &b_half[kk * COOP_TILE + block_col + 16u], COOP_TILE);
            acc00 = coopMultiplyAdd(a0, b0, acc00);
            acc01 = coopMultiplyAdd(a0, b1, acc01);
            acc10 = coopMultiplyAdd(a1, b0, acc10);
            acc11 = coopMultiplyAdd(a1, b1, acc11);
        }
        workgroupBarrier();
    }
    let at = block_row * COOP_TILE + block_col;
    coopStoreT(acc00, &c_block[at], COOP_TILE);
    coopStoreT(acc01, &c_block[at + 16u], COOP_TILE);
    coopStoreT(acc10, &c_block[at + 16u * COOP_TILE], COOP_TILE);
    coopStoreT(acc11, &c_block[at + 16u * COOP_TILE + 16u], COOP_TILE);
    workgroupBarrier();
    for (var e = 0u; e < 32u; e++) {
        let i = li + e * COOP_INVOCATIONS;
        store(batch, tile_row + i / COOP_TILE, tile_col + i % COOP_TILE, c_block[i]);
    }
}
