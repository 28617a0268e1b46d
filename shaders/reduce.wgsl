// Reductions along one axis. The tensor is viewed as [outer, n, inner] with the reduced
// axis in the middle; the output is [outer, inner].
//
// OP (override): 0 sum, 1 max, 2 mean. Over an empty axis sum gives 0 and max gives -inf,
// as ONNX does; mean over an empty axis is refused on the host.
//
// Two variants:
// - `reduce_strided`: one invocation per output, looping over the axis. Neighbouring
//   invocations read neighbouring addresses when inner > 1, and on CPU-like adapters the
//   loop is the fastest form.
// - `reduce_rows`: one workgroup per output when inner == 1 and the axis is long: each
//   invocation folds a strided slice of the row, then a tree in workgroup memory.

override OP: u32 = 0u;

const ROW_WORKGROUP: u32 = 256u;

struct Params {
    outer: u32,
    n: u32,
    inner: u32,
    _pad: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<uniform> params: Params;

// The reduction's identity: 0, or -inf for max. WGSL refuses a constant expression whose
// value is not finite, so -inf's bits are read through a `let`, which makes the bitcast a
// runtime expression.
fn identity() -> f32 {
    if OP == 1u {
        let negative_infinity_bits = 0xff800000u;
        return bitcast<f32>(negative_infinity_bits);
    }
    return 0.0;
}

fn combine(acc: f32, v: f32) -> f32 {
    if OP == 1u {
        return max(acc, v);
    }
    return acc + v;
}

fn finish(acc: f32, n: u32) -> f32 {
    if OP == 2u {
        return acc / f32(n);
    }
    return acc;
}

@compute @workgroup_size(256)
fn reduce_strided(@builtin(workgroup_id) wid: vec3<u32>,
                  @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let p = params;
    let index = (wid.y * nwg.x + wid.x) * 256u + lid;
    if index >= p.outer * p.inner {
        return;
    }
    let o = index / p.inner;
    let i = index % p.inner;
    var acc = identity();
    var at = o * p.n * p.inner + i;
    for (var j = 0u; j < p.n; j++) {
        acc = combine(acc, x[at]);
        at += p.inner;
    }
    y[index] = finish(acc, p.n);
}

var<workgroup> partial: array<f32, ROW_WORKGROUP>;

@compute @workgroup_size(256)
fn reduce_rows(@builtin(workgroup_id) wid: vec3<u32>,
               @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let p = params;
    let row = wid.y * nwg.x + wid.x;
    // Every invocation of the workgroup must reach the barriers, so no early return.
    let live = row < p.outer;
    var acc = identity();
    if live {
        let base = row * p.n;
        for (var j = lid; j < p.n; j += ROW_WORKGROUP) {
            acc = combine(acc, x[base + j]);
        }
    }
    partial[lid] = acc;
    workgroupBarrier();
    for (var stride = ROW_WORKGROUP / 2u; stride > 0u; stride /= 2u) {
        if lid < stride {
            partial[lid] = combine(partial[lid], partial[lid + stride]);
        }
        workgroupBarrier();
    }
    if live && lid == 0u {
        y[row] = finish(partial[0], p.n);
    }
}
