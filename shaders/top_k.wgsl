// The k largest entries of each row of x [rows, cols], best first: their values and their
// column indices. Among equal values the lower index comes first, so the choice is a total
// order and does not depend on how the work is split. k ≤ MAX_K.
//
// One workgroup per row. Each invocation scans a strided slice of the row and keeps its own
// k best in registers (an insertion into a sorted list). Then k rounds pick the row's best:
// in each round every invocation offers the head of its list, a tree in workgroup memory
// finds the best offer, and the invocation that made it moves on to its next entry. The row
// is read once; the rounds cost k trees of log2(256) steps.

const WORKGROUP: u32 = 256u;
const MAX_K: u32 = 16u;
// No entry: after every real one.
const NONE: u32 = 0xffffffffu;

struct Params {
    rows: u32,
    cols: u32,
    k: u32,
    _pad: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> values: array<f32>;
@group(0) @binding(2) var<storage, read_write> indices: array<u32>;
@group(0) @binding(3) var<uniform> params: Params;

var<workgroup> offer_value: array<f32, WORKGROUP>;
var<workgroup> offer_index: array<u32, WORKGROUP>;
var<workgroup> offer_lane: array<u32, WORKGROUP>;

// Whether entry (a_value, a_index) comes before (b_value, b_index): the larger value, then
// the lower index; NONE comes after everything.
fn before(a_value: f32, a_index: u32, b_value: f32, b_index: u32) -> bool {
    if a_index == NONE {
        return false;
    }
    if b_index == NONE {
        return true;
    }
    return a_value > b_value || (a_value == b_value && a_index < b_index);
}

@compute @workgroup_size(256)
fn top_k(@builtin(workgroup_id) wid: vec3<u32>,
         @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let p = params;
    let row = wid.y * nwg.x + wid.x;
    if row >= p.rows {
        return;
    }
    let k = min(p.k, MAX_K);
    var kept_value: array<f32, MAX_K>;
    var kept_index: array<u32, MAX_K>;
    for (var j = 0u; j < MAX_K; j++) {
        kept_value[j] = 0.0;
        kept_index[j] = NONE;
    }
    let base = row * p.cols;
    for (var c = lid; c < p.cols; c += WORKGROUP) {
        let v = x[base + c];
        if !before(v, c, kept_value[k - 1u], kept_index[k - 1u]) {
            continue;
        }
        var j = k - 1u;
        while j > 0u && before(v, c, kept_value[j - 1u], kept_index[j - 1u]) {
            kept_value[j] = kept_value[j - 1u];
            kept_index[j] = kept_index[j - 1u];
            j -= 1u;
        }
        kept_value[j] = v;
        kept_index[j] = c;
    }
    var head = 0u;
    for (var round = 0u; round < k; round++) {
        if head < k {
            offer_value[lid] = kept_value[head];
            offer_index[lid] = kept_index[head];
        } else {
            offer_value[lid] = 0.0;
            offer_index[lid] = NONE;
        }
        offer_lane[lid] = lid;
        workgroupBarrier();
        for (var stride = WORKGROUP / 2u; stride > 0u; stride /= 2u) {
            if lid < stride {
                let other = lid + stride;
                if before(offer_value[other], offer_index[other], offer_value[lid], offer_index[lid]) {
                    offer_value[lid] = offer_value[other];
                    offer_index[lid] = offer_index[other];
                    offer_lane[lid] = offer_lane[other];
                }
            }
            workgroupBarrier();
        }
        if lid == 0u {
            values[row * k + round] = offer_value[0];
            indices[row * k + round] = offer_index[0];
        }
        let winner = offer_lane[0];
        // Every invocation has read the winner before the next round's offers overwrite it.
        workgroupBarrier();
        if lid == winner {
            head += 1u;
        }
    }
}
