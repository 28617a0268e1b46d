// Strided copy: out[coords] = x[Σ coords·strides] over an output of rank ≤ 4.
// With the input's strides permuted this is transpose/permute; with zero strides it is
// broadcast (expand); with the input's own strides it is a plain copy.

struct Params {
    len: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
    out_shape: vec4<u32>,
    in_strides: vec4<u32>,   // stride in x for one step along each output axis
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
    var source = 0u;
    for (var axis = 3; axis >= 0; axis--) {
        source += (rest % p.out_shape[axis]) * p.in_strides[axis];
        rest = rest / p.out_shape[axis];
    }
    y[i] = x[source];
}
