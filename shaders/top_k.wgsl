// The k largest entries of each row of x [rows, cols], best first: their values and their
// column indices. Among equal values the lower index comes first, so the choice is a total
// order and does not depend on how the work is split. k ≤ MAX_K.
//
// Two variants:
// - `top_k_rows`: one invocation per row, scanning it alone. Short rows (a small vocabulary)
//   need no more, and a workgroup per row would cost more in its fixed cost than the scan.
// - `top_k`: one workgroup per row, for long rows.
//
// `top_k`: each invocation scans a strided slice of the row and keeps its own
// k best in a sorted list (an insertion, rare once the list is full: most entries only meet
// the bar of its k-th). Then the invocations leave their lists in workgroup memory and the
// first one merges them into its own. One barrier in all: on CPU adapters a barrier is
// what costs, and a tree of rounds (k trees of log2(64) steps) was slower than the merge.

const WORKGROUP: u32 = 64u;
const MAX_K: u32 = 18u;
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

var<workgroup> listed_value: array<f32, 1152>; // WORKGROUP × MAX_K
var<workgroup> listed_index: array<u32, 1152>;

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

// The invocation's sorted list of its k best, and the k-th in plain variables: every
// entry is compared against that bar, and an indexed private array costs memory traffic on
// CPU adapters; only an entry that passes touches the list.
struct Kept {
    value: array<f32, MAX_K>,
    index: array<u32, MAX_K>,
    bar_value: f32,
    bar_index: u32,
}

fn nothing_kept() -> Kept {
    var kept: Kept;
    for (var j = 0u; j < MAX_K; j++) {
        kept.value[j] = 0.0;
        kept.index[j] = NONE;
    }
    kept.bar_value = 0.0;
    kept.bar_index = NONE;
    return kept;
}

// Row `row`'s k results, best first.
fn write_kept(kept: ptr<function, Kept>, row: u32, k: u32) {
    for (var j = 0u; j < k; j++) {
        values[row * k + j] = (*kept).value[j];
        indices[row * k + j] = (*kept).index[j];
    }
}

fn keep(kept: ptr<function, Kept>, k: u32, v: f32, c: u32) {
    if !before(v, c, (*kept).bar_value, (*kept).bar_index) {
        return;
    }
    var j = k - 1u;
    while j > 0u && before(v, c, (*kept).value[j - 1u], (*kept).index[j - 1u]) {
        (*kept).value[j] = (*kept).value[j - 1u];
        (*kept).index[j] = (*kept).index[j - 1u];
        j -= 1u;
    }
    (*kept).value[j] = v;
    (*kept).index[j] = c;
    (*kept).bar_value = (*kept).value[k - 1u];
    (*kept).bar_index = (*kept).index[k - 1u];
}

@compute @workgroup_size(64)
fn top_k(@builtin(workgroup_id) wid: vec3<u32>,
         @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let p = params;
    let row = wid.y * nwg.x + wid.x;
    if row >= p.rows {
        return;
    }
    let k = min(p.k, MAX_K);
    var kept = nothing_kept();
    let base = row * p.cols;
    for (var c = lid; c < p.cols; c += WORKGROUP) {
        keep(&kept, k, x[base + c], c);
    }
    for (var j = 0u; j < k; j++) {
        listed_value[lid * MAX_K + j] = kept.value[j];
        listed_index[lid * MAX_K + j] = kept.index[j];
    }
    workgroupBarrier();
    if lid == 0u {
        for (var lane = 1u; lane < WORKGROUP; lane++) {
            for (var j = 0u; j < k; j++) {
                let at = lane * MAX_K + j;
                if listed_index[at] == NONE {
                    break;
                }
                keep(&kept, k, listed_value[at], listed_index[at]);
            }
        }
        write_kept(&kept, row, k);
    }
}

@compute @workgroup_size(64)
fn top_k_rows(@builtin(workgroup_id) wid: vec3<u32>,
              @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let p = params;
    let row = (wid.y * nwg.x + wid.x) * WORKGROUP + lid;
    if row >= p.rows {
        return;
    }
    let k = min(p.k, MAX_K);
    var kept = nothing_kept();
    let base = row * p.cols;
    for (var c = 0u; c < p.cols; c++) {
        keep(&kept, k, x[base + c], c);
    }
    write_kept(&kept, row, k);
}
