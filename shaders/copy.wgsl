// Strided copies over an iteration shape of rank ≤ 4 (`shape`, padded on the left with 1s).
//
// `strided_copy`: for every coordinate c of `shape`,
//     y[out_offset + Σ c·out_strides] = x[in_offset + Σ c·in_strides].
// With the input's strides permuted this is transpose/permute; with zero strides it is
// broadcast (expand); with the input's own strides and an offset it is a slice; writing
// each input at its offset into the output's strides it is a concat.
//
// `padded_copy`: the backward of a slice. It writes every element of y (contiguous over
// `shape`) once: inside the window [window_start, window_end) it copies
//     x[in_offset + Σ (c − window_start)·in_strides],
// outside it writes zero. One pass, so no separate zero fill is needed.
//
// `positioned_copy`: `strided_copy` into y at an offset the GPU reads: out_offset plus
// position[0]·position_stride. A decoder writes each step's keys and values into its cache
// this way, at the step's position, without the host recording a new dispatch per step.
//
// SPAN (override): how many consecutive elements of the innermost axis (a "row") one
// invocation handles. 1 suits GPUs; CPU-like adapters pay the integer divisions that
// locate an element, and the fixed cost of an invocation, once per span instead.

override SPAN: u32 = 1u;

struct Params {
    in_offset: u32,
    out_offset: u32,
    position_stride: u32,     // positioned_copy only
    _pad: u32,
    shape: vec4<u32>,
    in_strides: vec4<u32>,    // stride in x for one step along each axis of `shape`
    out_strides: vec4<u32>,   // stride in y likewise (strided_copy only)
    window_start: vec4<u32>,  // padded_copy only
    window_end: vec4<u32>,    // padded_copy only
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<uniform> params: Params;
// positioned_copy's bindings: the position sits where the others have their parameters.
@group(0) @binding(2) var<storage, read> position: array<u32>;
@group(0) @binding(3) var<uniform> positioned: Params;

// The span of invocation `i`: the row it lies in (the outer three coordinates, flattened)
// and its columns first..last; `valid` is false past the last span.
struct Span {
    row: u32,
    first: u32,
    last: u32,
    valid: bool,
}

fn locate(i: u32, shape: vec4<u32>) -> Span {
    let spans = (shape.w + SPAN - 1u) / SPAN;
    let row = i / spans;
    let first = (i - row * spans) * SPAN;
    let rows = shape.x * shape.y * shape.z;
    return Span(row, first, min(first + SPAN, shape.w), row < rows);
}

// The coordinates of row `row` on the outer three axes of `shape`.
fn row_coordinates(row: u32, shape: vec4<u32>) -> vec3<u32> {
    let rest = row / shape.z;
    return vec3<u32>(rest / shape.y, rest % shape.y, row % shape.z);
}

// Copies invocation `i`'s span: from x as `p` says, into y from `out_offset` (the region's
// own, or moved by a position).
fn copy_span(p: Params, i: u32, out_offset: u32) {
    let span = locate(i, p.shape);
    if !span.valid {
        return;
    }
    let row = row_coordinates(span.row, p.shape);
    let source = p.in_offset + dot(row, p.in_strides.xyz) + span.first * p.in_strides.w;
    let destination = out_offset + dot(row, p.out_strides.xyz) + span.first * p.out_strides.w;
    for (var c = 0u; c < span.last - span.first; c++) {
        y[destination + c * p.out_strides.w] = x[source + c * p.in_strides.w];
    }
}

@compute @workgroup_size(256)
fn strided_copy(@builtin(workgroup_id) wid: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    copy_span(params, (wid.y * nwg.x + wid.x) * 256u + lid, params.out_offset);
}

@compute @workgroup_size(256)
fn padded_copy(@builtin(workgroup_id) wid: vec3<u32>,
               @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let p = params;
    let span = locate((wid.y * nwg.x + wid.x) * 256u + lid, p.shape);
    if !span.valid {
        return;
    }
    let row = row_coordinates(span.row, p.shape);
    let row_inside = all(row >= p.window_start.xyz) && all(row < p.window_end.xyz);
    // Where the row starts in x (wrapped, and then unused, outside the window).
    let source = p.in_offset + dot(row - p.window_start.xyz, p.in_strides.xyz);
    let destination = span.row * p.shape.w;
    for (var c = span.first; c < span.last; c++) {
        var value = 0.0;
        if row_inside && c >= p.window_start.w && c < p.window_end.w {
            value = x[source + (c - p.window_start.w) * p.in_strides.w];
        }
        y[destination + c] = value;
    }
}

@compute @workgroup_size(256)
fn positioned_copy(@builtin(workgroup_id) wid: vec3<u32>,
                   @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let p = positioned;
    copy_span(p, (wid.y * nwg.x + wid.x) * 256u + lid, p.out_offset + position[0] * p.position_stride);
}
