// Gather along one axis (ONNX Gather; the embedding lookup) and its backward, a
// deterministic scatter-add.
//
// The data is viewed as [outer, axis_len, inner] around the gathered axis and the indices
// are flattened to `count` ids, so the output is [outer, count, inner]:
//     y[o, k, c] = x[o, ids[k], c].
// The embedding lookup is the case outer = 1: rows of a [vocab, dim] table. The host has
// checked every id against axis_len before dispatch.
//
// Backward: dx[o, a, c] = Σ dy[o, k, c] over the positions k with ids[k] = a. No atomics:
// the host groups the positions by id (CSR, a counting sort) and packs them into one u32
// buffer, offsets first:
//     [offsets: axis_len + 1 | positions: count]
// where positions[offsets[a] .. offsets[a + 1]] are the positions of id a, increasing.
// One invocation per element of dx sums its id's positions in that fixed order, so every
// run gives the same bits; ids that never occur get zero.
//
// Both entry points share one binding layout: `values` is x (forward) or dy (backward),
// `index_data` the ids (forward) or the packed groups (backward), `out` is y or dx.

// SPAN (override): how many consecutive columns (entries of `inner`) one invocation
// handles. 1 suits GPUs (neighbouring invocations touch neighbouring addresses); larger
// spans suit CPU-like adapters, where the integer divisions that locate an element cost
// more than the copy itself and are paid once per span.

override SPAN: u32 = 1u;

struct Params {
    outer: u32,
    axis_len: u32,
    count: u32,
    inner: u32,
}

@group(0) @binding(0) var<storage, read> values: array<f32>;
@group(0) @binding(1) var<storage, read> index_data: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

@compute @workgroup_size(256)
fn gather(@builtin(workgroup_id) wid: vec3<u32>,
          @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let p = params;
    let i = (wid.y * nwg.x + wid.x) * 256u + lid;
    let spans = (p.inner + SPAN - 1u) / SPAN;
    if i >= p.outer * p.count * spans {
        return;
    }
    // Output row (o, k) and its columns first..last.
    let row = i / spans;
    let first = (i - row * spans) * SPAN;
    let last = min(first + SPAN, p.inner);
    let o = row / p.count;
    let k = row - o * p.count;
    let source = (o * p.axis_len + index_data[k]) * p.inner;
    let destination = row * p.inner;
    for (var c = first; c < last; c++) {
        out[destination + c] = values[source + c];
    }
}

@compute @workgroup_size(256)
fn gather_backward(@builtin(workgroup_id) wid: vec3<u32>,
                   @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let p = params;
    let i = (wid.y * nwg.x + wid.x) * 256u + lid;
    let spans = (p.inner + SPAN - 1u) / SPAN;
    if i >= p.outer * p.axis_len * spans {
        return;
    }
    // Gradient row (o, a) and its columns first..last.
    let row = i / spans;
    let first = (i - row * spans) * SPAN;
    let last = min(first + SPAN, p.inner);
    let o = row / p.axis_len;
    let a = row - o * p.axis_len;
    let begin = index_data[a];
    let end = index_data[a + 1u];
    let positions = p.axis_len + 1u;
    let dy_row = o * p.count;
    for (var c = first; c < last; c++) {
        var sum = 0.0;
        for (var j = begin; j < end; j++) {
            sum += values[(dy_row + index_data[positions + j]) * p.inner + c];
        }
        out[row * p.inner + c] = sum;
    }
}
