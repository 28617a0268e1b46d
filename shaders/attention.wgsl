// Attention: the masked, scaled row softmax that sits between the two batched products of
// scaled dot-product attention, and its backward.
//
// The products themselves run on the matmul kernels: S = Q·Kᵀ·scale before `masked_softmax`,
// O = P·V after it. The scores S are [rows, k_len] with rows = batch·heads·q_len, row
// r = (b·heads + h)·q_len + i for query i of head h of batch b.
//
// Which keys a query may see. Query i sits at key position pos = i + offset, where offset is
// params.offset, or valid_b − q_len with OFFSET_FROM_LENGTHS, valid_b = min(key_lengths[b],
// k_len) being the number of valid keys of batch b. Key j is masked when
// - KEY_LENGTHS and j ≥ key_lengths[b] (padding),
// - CAUSAL and j > pos,
// - params.left ≥ 0 and j < pos − left, or params.right ≥ 0 and j > pos + right (window),
// - MASK = 1 (additive) and mask[b, h, i, j] is −∞; otherwise that value is added,
// - MASK = 2 (boolean) and mask[b, h, i, j] is 0.
// The first four leave a contiguous range [lo, hi) of keys, so a row loops over that range
// only. A row where every key is masked gets P = 0 (never NaN).
//
// One invocation per row: on CPU-like adapters a row loop is the fastest form, and it needs
// no workgroup barrier. Infinities are recognised by their bits, not by float comparison,
// so that a compiler that assumes finite math cannot drop the test.

override MASK: u32 = 0u;                  // 0 none, 1 additive, 2 boolean
override KEY_LENGTHS: bool = false;
override CAUSAL: bool = false;
override OFFSET_FROM_LENGTHS: bool = false;  // only with KEY_LENGTHS
override SOFTCAP: bool = false;           // S ← c·tanh(S/c) before masking, c = params.softcap
override WRITE_LOGITS: bool = false;      // write the masked logits (−∞ where masked), not P

const NEG_INF_BITS: u32 = 0xff800000u;
// tanh(±15) is ±1 in f32; clamping keeps tanh's exp-based forms away from inf/inf.
const TANH_LIMIT: f32 = 15.0;

struct Params {
    batch: u32,
    heads: u32,
    q_len: u32,
    k_len: u32,
    mask_strides: vec4<u32>,   // mask element of (b, h, i, j): Σ index·stride, 0 where broadcast
    offset: i32,
    left: i32,                 // window reach to the left, −1 for none
    right: i32,                // window reach to the right, −1 for none
    softcap: f32,
    // Only `fused_attention` reads these.
    head_dim: u32,
    value_dim: u32,
    group: u32,                // query heads per key/value head
    scale: f32,
}

@group(0) @binding(0) var<storage, read> scores: array<f32>;
@group(0) @binding(1) var<storage, read> mask: array<f32>;
@group(0) @binding(2) var<storage, read> key_lengths: array<u32>;
@group(0) @binding(3) var<storage, read_write> probs: array<f32>;
@group(0) @binding(4) var<uniform> params: Params;

// The helpers take the parameters as `p`: `masked_softmax` binds them at 4, `fused_attention`
// at 7 (the uniform is always the last binding).

fn capped(p: Params, s: f32) -> f32 {
    if SOFTCAP {
        return p.softcap * tanh(clamp(s / p.softcap, -TANH_LIMIT, TANH_LIMIT));
    }
    return s;
}

// The keys [lo, hi) that padding, causality and the window leave to query i of batch b.
fn key_range(p: Params, b: u32, i: u32) -> vec2<i32> {
    var valid = i32(p.k_len);
    if KEY_LENGTHS {
        valid = i32(min(key_lengths[b], p.k_len));
    }
    var offset = p.offset;
    if OFFSET_FROM_LENGTHS {
        offset = valid - i32(p.q_len);
    }
    let pos = i32(i) + offset;
    var lo = 0;
    var hi = valid;
    if CAUSAL {
        hi = min(hi, pos + 1);
    }
    if p.left >= 0 {
        lo = max(lo, pos - p.left);
    }
    if p.right >= 0 {
        hi = min(hi, pos + p.right + 1);
    }
    return vec2<i32>(lo, max(hi, lo));
}

// The element of the mask tensor for key j, with `mask_base` the offset of (b, h, i, 0).
fn mask_at(p: Params, mask_base: u32, j: u32) -> f32 {
    return mask[mask_base + j * p.mask_strides.w];
}

// Whether the mask tensor masks key j (MASK ≠ 0 only).
fn masked_by_tensor(m: f32) -> bool {
    if MASK == 1u {
        return bitcast<u32>(m) == NEG_INF_BITS;
    }
    return m == 0.0;
}

// −∞: the logit written for a masked key and the log-sum-exp of a row without keys. WGSL
// refuses a constant expression whose value is not finite, so `bitcast<f32>(NEG_INF_BITS)`
// is an error (Tint reports it; naga lets it pass); read through a `let`, the bits make the
// bitcast a runtime expression, which may be −∞.
fn negative_infinity() -> f32 {
    let bits = NEG_INF_BITS;
    return bitcast<f32>(bits);
}

// The logit of a key the mask tensor leaves: capped score plus the additive mask.
fn logit(p: Params, s: f32, m: f32) -> f32 {
    if MASK == 1u {
        return capped(p, s) + m;
    }
    return capped(p, s);
}

@compute @workgroup_size(256)
fn masked_softmax(@builtin(workgroup_id) wid: vec3<u32>,
                  @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let p = params;
    let row = (wid.y * nwg.x + wid.x) * 256u + lid;
    if row >= p.batch * p.heads * p.q_len {
        return;
    }
    let i = row % p.q_len;
    let h = (row / p.q_len) % p.heads;
    let b = row / (p.q_len * p.heads);
    let range = key_range(p, b, i);
    let lo = u32(range.x);
    let hi = u32(range.y);
    let base = row * p.k_len;
    let mask_base = b * p.mask_strides.x + h * p.mask_strides.y + i * p.mask_strides.z;

    // Pass 1: the running maximum and the sum of exp(z − max), rescaled when the max grows.
    var any = false;
    var top = 0.0;
    var sum = 0.0;
    for (var j = lo; j < hi; j++) {
        var m = 0.0;
        if MASK != 0u {
            m = mask_at(p, mask_base, j);
            if masked_by_tensor(m) {
                continue;
            }
        }
        let z = logit(p, scores[base + j], m);
        if !any {
            any = true;
            top = z;
            sum = 1.0;
        } else if z > top {
            sum = sum * exp(top - z) + 1.0;
            top = z;
        } else {
            sum += exp(z - top);
        }
    }

    // Pass 2: every element of the row, 0 (or −∞ for logits) where masked. The sum is 0
    // only when no key is kept, and then inv_sum is never used.
    let inv_sum = 1.0 / sum;
    for (var j = 0u; j < p.k_len; j++) {
        var keep = j >= lo && j < hi;
        var m = 0.0;
        if keep && MASK != 0u {
            m = mask_at(p, mask_base, j);
            keep = !masked_by_tensor(m);
        }
        if WRITE_LOGITS {
            if keep {
                probs[base + j] = logit(p, scores[base + j], m);
            } else {
                probs[base + j] = negative_infinity();
            }
        } else if keep {
            probs[base + j] = exp(logit(p, scores[base + j], m) - top) * inv_sum;
        } else {
            probs[base + j] = 0.0;
        }
    }
}

// Fused forward: O = softmax(mask(Q·Kᵀ·scale))·V without the [rows, k_len] scores, and
// per row log_sum_exp = top + ln(sum), from which P = exp(z − lse) can be recomputed.
//
// A workgroup owns FUSED_ROWS consecutive queries of one (batch, head) and one chunk of up
// to VALUE_CHUNK output columns; each invocation owns one query. The workgroup streams
// over the union of its queries' key ranges (ranges move right with the query, so the
// first and last queries bound it), with an online softmax per query: the running max
// `top`, the running sum of exp(z − top) and the accumulator of exp(z − top)·v, both
// rescaled by exp(old top − new top) at every key (branch-free: 1 unless the max grew).
//
// Every index into K and V depends on the workgroup and the loop only, so the loop runs in
// step across the invocations; keys outside a query's own range or masked by the tensor
// get weight 0. The query row (its first CACHED_HEAD_DIM elements) and the accumulator
// live in private arrays of vec4 whose loops run to pipeline constants, so that the
// compiler can unroll them into registers (dynamic indices into private arrays are slow on
// CPU adapters). Same masks and row layout as `masked_softmax`; K and V are read at the
// group's key/value head (no repeated copies). A row without keys gets O = 0 and
// lse = −∞. The chunks of one row recompute its logits: wide values cost extra Q·K work.

const FUSED_ROWS: u32 = 64u;
const VALUE_CHUNK: u32 = 64u;
// The lowest finite f32, −(2 − 2⁻²³)·2¹²⁷ written exactly in hexadecimal: the running max
// before the first key, so that the first kept key's rescale exp(LOWEST − z) is 0 without
// an infinity. (The decimal −3.4028235e38 lies just beyond it, which WGSL refuses.)
const LOWEST: f32 = -0x1.fffffep+127f;

override CACHED_HEAD_DIM: u32 = 0u;   // min(D, VALUE_CHUNK)
override CHUNK_WIDTH: u32 = 0u;       // min(Dv, VALUE_CHUNK)

@group(0) @binding(0) var<storage, read> fused_query: array<f32>;
@group(0) @binding(3) var<storage, read_write> fused_output: array<f32>;
@group(0) @binding(4) var<storage, read> fused_keys: array<f32>;
@group(0) @binding(5) var<storage, read> fused_values: array<f32>;
@group(0) @binding(6) var<storage, read_write> fused_log_sum_exp: array<f32>;
@group(0) @binding(7) var<uniform> fused_params: Params;

// The rows, columns and head a workgroup of the fused kernels owns. Their grid enumerates
// (head, column chunk, row block), row blocks fastest, folded into x and y.
struct RowBlock {
    first_row: u32,
    first_column: u32,
    head: u32,     // b·heads + h, over `head_count` of them
    live: bool,    // false past the end of the grid (it is rounded up to whole workgroups)
}

fn row_block(wid: vec3<u32>, nwg: vec3<u32>, rows: u32, columns: u32,
             head_count: u32) -> RowBlock {
    let chunks = max((columns + VALUE_CHUNK - 1u) / VALUE_CHUNK, 1u);
    let blocks = (rows + FUSED_ROWS - 1u) / FUSED_ROWS;
    let index = wid.y * nwg.x + wid.x;
    return RowBlock((index % blocks) * FUSED_ROWS, ((index / blocks) % chunks) * VALUE_CHUNK,
                    index / (blocks * chunks), index < head_count * chunks * blocks);
}

// What an invocation of a fused kernel's block of query rows knows of its row: the batch,
// head and key/value head, the row i (the block's last for the invocations past it, which
// follow the loops and write nothing), the keys [lo, hi) it attends to and those any row
// of the block does (the keys the block walks in step).
struct QueryRow {
    b: u32,
    h: u32,
    kv: u32,           // b·Hkv + h / group, which is (b·H + h) / group as H = Hkv·group
    i: u32,
    owned: bool,
    row: u32,          // (b·H + h)·Lq + i
    lo: u32,
    hi: u32,
    union_lo: u32,
    union_hi: u32,
    mask_base: u32,
}

fn query_row(p: Params, block: RowBlock, lid: u32) -> QueryRow {
    let h = block.head % p.heads;
    let b = block.head / p.heads;
    let last_query = min(block.first_row + FUSED_ROWS, p.q_len) - 1u;
    let i = min(block.first_row + lid, last_query);
    let range = key_range(p, b, i);
    return QueryRow(b, h, block.head / p.group, i, block.first_row + lid <= last_query,
                    block.head * p.q_len + i, u32(range.x), u32(range.y),
                    u32(key_range(p, b, block.first_row).x), u32(key_range(p, b, last_query).y),
                    b * p.mask_strides.x + h * p.mask_strides.y + i * p.mask_strides.z);
}

// The element indices 4c..4c+3 of lane quad c of a cached row.
fn quad(c: u32) -> vec4<u32> {
    return vec4<u32>(4u * c) + vec4<u32>(0u, 1u, 2u, 3u);
}

// Quad c of the row starting at `base` of each operand, its elements past `last` clamped
// to it.
fn quad_at(base: u32, c: u32, last: u32) -> vec4<u32> {
    return vec4<u32>(base) + min(quad(c), vec4<u32>(last));
}

fn query_quad(base: u32, c: u32, last: u32) -> vec4<f32> {
    let at = quad_at(base, c, last);
    return vec4<f32>(fused_query[at.x], fused_query[at.y], fused_query[at.z], fused_query[at.w]);
}

fn key_quad(base: u32, c: u32, last: u32) -> vec4<f32> {
    let at = quad_at(base, c, last);
    return vec4<f32>(fused_keys[at.x], fused_keys[at.y], fused_keys[at.z], fused_keys[at.w]);
}

fn value_quad(base: u32, c: u32, last: u32) -> vec4<f32> {
    let at = quad_at(base, c, last);
    return vec4<f32>(fused_values[at.x], fused_values[at.y], fused_values[at.z],
                     fused_values[at.w]);
}

fn grad_output_quad(base: u32, c: u32, last: u32) -> vec4<f32> {
    let at = quad_at(base, c, last);
    return vec4<f32>(grad_output[at.x], grad_output[at.y], grad_output[at.z], grad_output[at.w]);
}

// Quad c of a row's first `count` elements: zeros past them.
fn first_elements(loaded: vec4<f32>, c: u32, count: u32) -> vec4<f32> {
    return select(vec4<f32>(0.0), loaded, quad(c) < vec4<u32>(count));
}

@compute @workgroup_size(64)
fn fused_attention(@builtin(workgroup_id) wid: vec3<u32>,
                   @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let p = fused_params;
    let block = row_block(wid, nwg, p.q_len, p.value_dim, p.batch * p.heads);
    if !block.live {
        return;
    }
    let first_column = block.first_column;
    let q = query_row(p, block, lid);
    // The last chunk may be narrower: its columns past `width` read the last column again
    // and are never written.
    let width = min(VALUE_CHUNK, p.value_dim - first_column);
    let query_base = q.row * p.head_dim;

    // Four elements per vec4 (fewer, wider private elements); elements past D are 0.
    let query_quads = (CACHED_HEAD_DIM + 3u) / 4u;
    let value_quads = (CHUNK_WIDTH + 3u) / 4u;
    let last_cached = max(CACHED_HEAD_DIM, 1u) - 1u;
    var query: array<vec4<f32>, VALUE_CHUNK / 4u>;
    for (var c = 0u; c < query_quads; c++) {
        query[c] = first_elements(query_quad(query_base, c, last_cached), c, CACHED_HEAD_DIM);
    }
    var accumulator: array<vec4<f32>, VALUE_CHUNK / 4u>;
    var any = false;
    var top = LOWEST;
    var sum = 0.0;
    for (var j = q.union_lo; j < q.union_hi; j++) {
        let key_base = (q.kv * p.k_len + j) * p.head_dim;
        var score = 0.0;
        for (var c = 0u; c < query_quads; c++) {
            let key = first_elements(key_quad(key_base, c, last_cached), c, CACHED_HEAD_DIM);
            score += dot(query[c], key);
        }
        for (var e = CACHED_HEAD_DIM; e < p.head_dim; e++) {
            score += fused_query[query_base + e] * fused_keys[key_base + e];
        }
        var keep = j >= q.lo && j < q.hi;
        var m = 0.0;
        if MASK != 0u && keep {
            m = mask_at(p, q.mask_base, j);
            keep = !masked_by_tensor(m);
        }
        let z = logit(p, score * p.scale, m);
        let new_top = select(top, max(top, z), keep);
        let rescale = exp(top - new_top);
        // min(·, 0): the logit of a key not kept may lie above the max.
        let weight = select(0.0, exp(min(z - new_top, 0.0)), keep);
        any = any || keep;
        top = new_top;
        sum = sum * rescale + weight;
        let value_base = (q.kv * p.k_len + j) * p.value_dim + first_column;
        for (var c = 0u; c < value_quads; c++) {
            let value = value_quad(value_base, c, width - 1u);
            accumulator[c] = accumulator[c] * rescale + weight * value;
        }
    }
    if !q.owned {
        return;
    }

    // sum ≥ 1 whenever a key was kept (the max's own term), so 1/sum is finite.
    let inv_sum = select(0.0, 1.0 / sum, any);
    let output_base = q.row * p.value_dim + first_column;
    for (var c = 0u; c < value_quads; c++) {
        let out = accumulator[c] * inv_sum;
        for (var t = 0u; t < 4u; t++) {
            if 4u * c + t < width {
                fused_output[output_base + 4u * c + t] = out[t];
            }
        }
    }
    if first_column == 0u {
        if any {
            fused_log_sum_exp[q.row] = top + log(sum);
        } else {
            fused_log_sum_exp[q.row] = negative_infinity();
        }
    }
}

// Backward of the softmax: dS = P ⊙ (dP − rowsum(dP ⊙ P)), times the softcap's derivative
// 1 − tanh²(S/c) with SOFTCAP. Masked keys have P = 0, so they get dS = 0, and so does a
// fully masked row. Same row layout as `masked_softmax`; S is read only with SOFTCAP.

struct BackwardParams {
    rows: u32,
    k_len: u32,
    softcap: f32,
    _pad: u32,
}

@group(0) @binding(0) var<storage, read> bw_probs: array<f32>;
@group(0) @binding(1) var<storage, read> bw_grad_probs: array<f32>;
@group(0) @binding(2) var<storage, read> bw_scores: array<f32>;
@group(0) @binding(3) var<storage, read_write> bw_grad_scores: array<f32>;
@group(0) @binding(4) var<uniform> bw_params: BackwardParams;

@compute @workgroup_size(256)
fn masked_softmax_backward(@builtin(workgroup_id) wid: vec3<u32>,
                           @builtin(num_workgroups) nwg: vec3<u32>,
                           @builtin(local_invocation_index) lid: u32) {
    let p = bw_params;
    let row = (wid.y * nwg.x + wid.x) * 256u + lid;
    if row >= p.rows {
        return;
    }
    let base = row * p.k_len;
    var dot = 0.0;
    for (var j = 0u; j < p.k_len; j++) {
        dot += bw_probs[base + j] * bw_grad_probs[base + j];
    }
    for (var j = 0u; j < p.k_len; j++) {
        var ds = bw_probs[base + j] * (bw_grad_probs[base + j] - dot);
        if SOFTCAP {
            let t = tanh(clamp(bw_scores[base + j] / p.softcap, -TANH_LIMIT, TANH_LIMIT));
            ds *= 1.0 - t * t;
        }
        bw_grad_scores[base + j] = ds;
    }
}

// Fused backward: dQ, dK and dV from Q, K, V, O, dO and the forward's log-sum-exp, without
// the [rows, k_len] probabilities. Per kept (i, j): z from Q·Kᵀ as in the forward,
// P = exp(z − lse_i), dP = dO_i·v_j, dS = P·(dP − Δ_i) with Δ_i = dO_i·O_i (times the
// softcap's 1 − tanh²), then dQ_i = scale·Σ_j dS·k_j, dK_j = scale·Σ_i dS·q_i and
// dV_j = Σ_i P·dO_i. No float atomics: `fused_attention_backward_queries` owns query rows
// (dQ, and writes Δ), then `fused_attention_backward_keys` owns key rows (dK, dV),
// iterating over the queries of every head of its key/value head's group, so each sum has
// one owner and a fixed order. Same workgroup shape as `fused_attention`: 64 rows of one
// head in step, one chunk of 64 result columns, the row's first 64 elements of its cached
// operands in private vec4 arrays whose loops run to pipeline constants. Masked pairs get
// P = dS = 0, so a row or key without kept pairs gets zero gradients.

override CACHED_VALUE_DIM: u32 = 0u;  // min(Dv, VALUE_CHUNK)

@group(0) @binding(3) var<storage, read_write> grad_query: array<f32>;
@group(0) @binding(3) var<storage, read_write> grad_key: array<f32>;
@group(0) @binding(6) var<storage, read> saved_log_sum_exp: array<f32>;
@group(0) @binding(7) var<storage, read> grad_output: array<f32>;
@group(0) @binding(8) var<storage, read> saved_output: array<f32>;
@group(0) @binding(8) var<storage, read_write> grad_value: array<f32>;
@group(0) @binding(9) var<storage, read_write> row_delta: array<f32>;
@group(0) @binding(9) var<storage, read> saved_delta: array<f32>;
@group(0) @binding(10) var<uniform> grad_params: Params;

// The softcap's derivative at the scaled score s: 1 − tanh²(s/c), 1 without a softcap.
fn capped_slope(p: Params, s: f32) -> f32 {
    if SOFTCAP {
        let t = tanh(clamp(s / p.softcap, -TANH_LIMIT, TANH_LIMIT));
        return 1.0 - t * t;
    }
    return 1.0;
}

@compute @workgroup_size(64)
fn fused_attention_backward_queries(@builtin(workgroup_id) wid: vec3<u32>,
                                    @builtin(num_workgroups) nwg: vec3<u32>,
                                    @builtin(local_invocation_index) lid: u32) {
    let p = grad_params;
    let block = row_block(wid, nwg, p.q_len, p.head_dim, p.batch * p.heads);
    if !block.live {
        return;
    }
    let first_column = block.first_column;
    let q = query_row(p, block, lid);
    // Columns of dQ this chunk writes (0 when D = 0); reads past them repeat the last.
    let width = min(VALUE_CHUNK, p.head_dim - first_column);
    let last_column = max(width, 1u) - 1u;
    let query_base = q.row * p.head_dim;
    let grad_base = q.row * p.value_dim;

    let query_quads = (CACHED_HEAD_DIM + 3u) / 4u;
    let value_quads = (CACHED_VALUE_DIM + 3u) / 4u;
    let last_cached = max(CACHED_HEAD_DIM, 1u) - 1u;
    let last_cached_value = max(CACHED_VALUE_DIM, 1u) - 1u;
    var query: array<vec4<f32>, VALUE_CHUNK / 4u>;
    for (var c = 0u; c < query_quads; c++) {
        query[c] = first_elements(query_quad(query_base, c, last_cached), c, CACHED_HEAD_DIM);
    }
    var grad: array<vec4<f32>, VALUE_CHUNK / 4u>;
    for (var c = 0u; c < value_quads; c++) {
        grad[c] = first_elements(grad_output_quad(grad_base, c, last_cached_value), c,
                                 CACHED_VALUE_DIM);
    }
    var delta = 0.0;
    for (var e = 0u; e < p.value_dim; e++) {
        delta += grad_output[grad_base + e] * saved_output[grad_base + e];
    }
    let log_sum_exp = saved_log_sum_exp[q.row];

    var accumulator: array<vec4<f32>, VALUE_CHUNK / 4u>;
    // The key's cached elements, which are the first chunk's columns of dQ.
    var key: array<vec4<f32>, VALUE_CHUNK / 4u>;
    for (var j = q.union_lo; j < q.union_hi; j++) {
        let key_base = (q.kv * p.k_len + j) * p.head_dim;
        var score = 0.0;
        for (var c = 0u; c < query_quads; c++) {
            key[c] = key_quad(key_base, c, last_cached);
            score += dot(query[c], key[c]);
        }
        for (var e = CACHED_HEAD_DIM; e < p.head_dim; e++) {
            score += fused_query[query_base + e] * fused_keys[key_base + e];
        }
        let value_base = (q.kv * p.k_len + j) * p.value_dim;
        var grad_prob = 0.0;
        for (var c = 0u; c < value_quads; c++) {
            grad_prob += dot(grad[c], value_quad(value_base, c, last_cached_value));
        }
        for (var e = CACHED_VALUE_DIM; e < p.value_dim; e++) {
            grad_prob += grad_output[grad_base + e] * fused_values[value_base + e];
        }
        var keep = j >= q.lo && j < q.hi;
        var m = 0.0;
        if MASK != 0u && keep {
            m = mask_at(p, q.mask_base, j);
            keep = !masked_by_tensor(m);
        }
        let scaled = score * p.scale;
        // A kept key's row has a finite log-sum-exp; the others' exp may overflow and is
        // discarded.
        let prob = select(0.0, exp(logit(p, scaled, m) - log_sum_exp), keep);
        let grad_score = prob * (grad_prob - delta) * capped_slope(p, scaled);
        if first_column == 0u {
            for (var c = 0u; c < query_quads; c++) {
                accumulator[c] += grad_score * key[c];
            }
        } else {
            let column_base = key_base + first_column;
            for (var c = 0u; c < query_quads; c++) {
                accumulator[c] += grad_score * key_quad(column_base, c, last_column);
            }
        }
    }
    if !q.owned {
        return;
    }
    let out_base = query_base + first_column;
    for (var c = 0u; c < query_quads; c++) {
        let out = accumulator[c] * p.scale;
        for (var t = 0u; t < 4u; t++) {
            if 4u * c + t < width {
                grad_query[out_base + 4u * c + t] = out[t];
            }
        }
    }
    if first_column == 0u {
        row_delta[q.row] = delta;
    }
}

// The queries [lo, hi) of batch b that may see some key of [first_key, last_key]: the
// inverse of `key_range` for causality and the window (padding and the mask tensor are
// left to the per-pair test).
fn query_range(p: Params, b: u32, first_key: u32, last_key: u32) -> vec2<i32> {
    var valid = i32(p.k_len);
    if KEY_LENGTHS {
        valid = i32(min(key_lengths[b], p.k_len));
    }
    var offset = p.offset;
    if OFFSET_FROM_LENGTHS {
        offset = valid - i32(p.q_len);
    }
    var lo = 0;
    var hi = i32(p.q_len);
    if i32(first_key) >= valid {
        hi = 0;
    }
    // Causal: j ≤ i + offset; right window: j ≤ i + offset + right; left window:
    // j ≥ i + offset − left.
    if CAUSAL {
        lo = max(lo, i32(first_key) - offset);
    }
    if p.right >= 0 {
        lo = max(lo, i32(first_key) - offset - p.right);
    }
    if p.left >= 0 {
        hi = min(hi, i32(last_key) - offset + p.left + 1);
    }
    return vec2<i32>(lo, max(hi, lo));
}

@compute @workgroup_size(64)
fn fused_attention_backward_keys(@builtin(workgroup_id) wid: vec3<u32>,
                                 @builtin(num_workgroups) nwg: vec3<u32>,
                                 @builtin(local_invocation_index) lid: u32) {
    let p = grad_params;
    let kv_heads = p.heads / p.group;
    let block = row_block(wid, nwg, p.k_len, max(p.head_dim, p.value_dim), p.batch * kv_heads);
    if !block.live {
        return;
    }
    let first_key = block.first_row;
    let first_column = block.first_column;
    let batch_kv = block.head;
    let b = batch_kv / kv_heads;
    let kv_head = batch_kv % kv_heads;
    // This chunk's columns of dK and of dV; either may be empty.
    let key_width = min(VALUE_CHUNK, max(p.head_dim, first_column) - first_column);
    let value_width = min(VALUE_CHUNK, max(p.value_dim, first_column) - first_column);
    let last_key_column = max(key_width, 1u) - 1u;
    let last_value_column = max(value_width, 1u) - 1u;
    let last_key = min(first_key + FUSED_ROWS, p.k_len) - 1u;
    let owns_key = first_key + lid <= last_key;
    let j = min(first_key + lid, last_key);
    let key_base = (batch_kv * p.k_len + j) * p.head_dim;
    let value_base = (batch_kv * p.k_len + j) * p.value_dim;
    let queries = query_range(p, b, first_key, last_key);

    let key_quads = (CACHED_HEAD_DIM + 3u) / 4u;
    let value_quads = (CACHED_VALUE_DIM + 3u) / 4u;
    let last_cached = max(CACHED_HEAD_DIM, 1u) - 1u;
    let last_cached_value = max(CACHED_VALUE_DIM, 1u) - 1u;
    var key: array<vec4<f32>, VALUE_CHUNK / 4u>;
    for (var c = 0u; c < key_quads; c++) {
        key[c] = first_elements(key_quad(key_base, c, last_cached), c, CACHED_HEAD_DIM);
    }
    var value: array<vec4<f32>, VALUE_CHUNK / 4u>;
    for (var c = 0u; c < value_quads; c++) {
        value[c] = first_elements(value_quad(value_base, c, last_cached_value), c,
                                  CACHED_VALUE_DIM);
    }

    var key_accumulator: array<vec4<f32>, VALUE_CHUNK / 4u>;
    var value_accumulator: array<vec4<f32>, VALUE_CHUNK / 4u>;
    // The query's and dO's cached elements, which are the first chunk's columns.
    var query: array<vec4<f32>, VALUE_CHUNK / 4u>;
    var grad: array<vec4<f32>, VALUE_CHUNK / 4u>;
    for (var g = 0u; g < p.group; g++) {
        let h = kv_head * p.group + g;
        let batch_head = b * p.heads + h;
        for (var i = u32(queries.x); i < u32(queries.y); i++) {
            let row = batch_head * p.q_len + i;
            let query_base = row * p.head_dim;
            let grad_base = row * p.value_dim;
            var score = 0.0;
            for (var c = 0u; c < key_quads; c++) {
                query[c] = query_quad(query_base, c, last_cached);
                score += dot(key[c], query[c]);
            }
            for (var e = CACHED_HEAD_DIM; e < p.head_dim; e++) {
                score += fused_query[query_base + e] * fused_keys[key_base + e];
            }
            var grad_prob = 0.0;
            for (var c = 0u; c < value_quads; c++) {
                grad[c] = grad_output_quad(grad_base, c, last_cached_value);
                grad_prob += dot(value[c], grad[c]);
            }
            for (var e = CACHED_VALUE_DIM; e < p.value_dim; e++) {
                grad_prob += grad_output[grad_base + e] * fused_values[value_base + e];
            }
            let range = key_range(p, b, i);
            var keep = i32(j) >= range.x && i32(j) < range.y;
            var m = 0.0;
            if MASK != 0u && keep {
                let mask_base = b * p.mask_strides.x + h * p.mask_strides.y
                    + i * p.mask_strides.z;
                m = mask_at(p, mask_base, j);
                keep = !masked_by_tensor(m);
            }
            let scaled = score * p.scale;
            let prob = select(0.0, exp(logit(p, scaled, m) - saved_log_sum_exp[row]), keep);
            let grad_score = prob * (grad_prob - saved_delta[row]) * capped_slope(p, scaled);
            if first_column == 0u {
                for (var c = 0u; c < key_quads; c++) {
                    key_accumulator[c] += grad_score * query[c];
                }
                for (var c = 0u; c < value_quads; c++) {
                    value_accumulator[c] += prob * grad[c];
                }
                continue;
            }
            if key_width > 0u {
                let column_base = query_base + first_column;
                for (var c = 0u; c < key_quads; c++) {
                    key_accumulator[c] += grad_score * query_quad(column_base, c, last_key_column);
                }
            }
            if value_width > 0u {
                let column_base = grad_base + first_column;
                for (var c = 0u; c < value_quads; c++) {
                    value_accumulator[c] += prob * grad_output_quad(column_base, c,
                                                                    last_value_column);
                }
            }
        }
    }
    if !owns_key {
        return;
    }
    let key_out = key_base + first_column;
    for (var c = 0u; c < key_quads; c++) {
        let out = key_accumulator[c] * p.scale;
        for (var t = 0u; t < 4u; t++) {
            if 4u * c + t < key_width {
                grad_key[key_out + 4u * c + t] = out[t];
            }
        }
    }
    let value_out = value_base + first_column;
    for (var c = 0u; c < value_quads; c++) {
        for (var t = 0u; t < 4u; t++) {
            if 4u * c + t < value_width {
                grad_value[value_out + 4u * c + t] = value_accumulator[c][t];
            }
        }
    }
}
