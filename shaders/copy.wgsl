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

struct Params {
    len: u32,                 // elements of `shape`
    in_offset: u32,
    out_offset: u32,
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

@compute @workgroup_size(256)
fn strided_copy(@builtin(workgroup_id) wid: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let p = params;
    let i = (wid.y * nwg.x + wid.x) * 256u + lid;
    if i >= p.len {
        return;
    }
    var rest = i;
    var source = p.in_offset;
    var destination = p.out_offset;
    for (var axis = 3; axis >= 0; axis--) {
        let coordinate = rest % p.shape[axis];
        source += coordinate * p.in_strides[axis];
        destination += coordinate * p.out_strides[axis];
        rest = rest / p.shape[axis];
    }
    y[destination] = x[source];
}

@compute @workgroup_size(256)
fn padded_copy(@builtin(workgroup_id) wid: vec3<u32>,
               @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let p = params;
    let i = (wid.y * nwg.x + wid.x) * 256u + lid;
    if i >= p.len {
        return;
    }
    var rest = i;
    var source = p.in_offset;
    var inside = true;
    for (var axis = 3; axis >= 0; axis--) {
        let coordinate = rest % p.shape[axis];
        inside = inside && coordinate >= p.window_start[axis] && coordinate < p.window_end[axis];
        // Wraps outside the window; the value is then not used.
        source += (coordinate - p.window_start[axis]) * p.in_strides[axis];
        rest = rest / p.shape[axis];
    }
    var value = 0.0;
    if inside {
        value = x[source];
    }
    y[i] = value;
}
