// Elementwise maps: unary functions, binary arithmetic with numpy broadcasting, and the
// activation derivatives that backward passes need.
//
// OP is an override constant, so every op is its own pipeline and the `switch` below
// folds away at pipeline creation.
// One invocation per output element; the flat index spans the 2-D grid
// (x + y·num_workgroups.x) so that more than 65535 workgroups fit. On CPU adapters, tensors
// of a multiple of 4 elements (without broadcasting, for binary ops) take the `*_vec4`
// entry points instead: one invocation per 4 elements, read and written as vec4, since
// lavapipe loads and stores each lane's floats one by one with a cost per access besides
// the one per float.

override OP: u32 = 0u;

const WORKGROUP: u32 = 256u;

fn flat_index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.y * nwg.x + wid.x) * WORKGROUP + lid;
}

// tanh without overflow: exp(-2|x|) stays in (0, 1].
fn stable_tanh(x: f32) -> f32 {
    let t = exp(-2.0 * abs(x));
    return sign(x) * (1.0 - t) / (1.0 + t);
}

// Logistic sigmoid, exp never overflows: it only sees -|x|.
fn stable_sigmoid(x: f32) -> f32 {
    let e = exp(-abs(x));
    return select(e / (1.0 + e), 1.0 / (1.0 + e), x >= 0.0);
}

// ---------------------------------------------------------------- unary: y = f(x)

struct UnaryParams {
    len: u32,
    alpha: f32,   // the factor of `scale`
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read> unary_x: array<f32>;
@group(0) @binding(1) var<storage, read_write> unary_y: array<f32>;
@group(0) @binding(2) var<uniform> unary_params: UnaryParams;

fn apply_unary(x: f32, alpha: f32) -> f32 {
    switch OP {
        case 0u: { return stable_tanh(x); }
        case 1u: { return max(x, 0.0); }
        case 2u: { return stable_sigmoid(x); }
        case 3u: { return exp(x); }
        case 4u: { return log(x); }
        case 5u: { return -x; }
        default: { return alpha * x; }
    }
}

@compute @workgroup_size(256)
fn unary(@builtin(workgroup_id) wid: vec3<u32>,
         @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wid, nwg, lid);
    if i >= unary_params.len {
        return;
    }
    unary_y[i] = apply_unary(unary_x[i], unary_params.alpha);
}

@group(0) @binding(0) var<storage, read> unary_x4: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> unary_y4: array<vec4<f32>>;

@compute @workgroup_size(256)
fn unary_vec4(@builtin(workgroup_id) wid: vec3<u32>,
              @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wid, nwg, lid);
    if i >= unary_params.len / 4u {
        return;
    }
    let x = unary_x4[i];
    let alpha = unary_params.alpha;
    unary_y4[i] = vec4<f32>(apply_unary(x.x, alpha), apply_unary(x.y, alpha),
                            apply_unary(x.z, alpha), apply_unary(x.w, alpha));
}

// ---------------------------------------------------------------- binary: out = a ∘ b
//
// The output shape is padded on the left to rank 4. Each input has a stride per output
// axis, 0 along the axes it is broadcast over (numpy rules), so row, column and scalar
// broadcasting are all the same code.

struct BinaryParams {
    len: u32,
    broadcast: u32,   // 0: both inputs have the output's shape, index them directly
    _pad0: u32,
    _pad1: u32,
    out_shape: vec4<u32>,
    a_strides: vec4<u32>,
    b_strides: vec4<u32>,
}

@group(0) @binding(0) var<storage, read> binary_a: array<f32>;
@group(0) @binding(1) var<storage, read> binary_b: array<f32>;
@group(0) @binding(2) var<storage, read_write> binary_out: array<f32>;
@group(0) @binding(3) var<uniform> binary_params: BinaryParams;

fn apply_binary(a: f32, b: f32) -> f32 {
    switch OP {
        case 0u: { return a + b; }
        case 1u: { return a - b; }
        case 2u: { return a * b; }
        case 3u: { return a / b; }
        // Derivatives, with a the forward value and b the incoming gradient:
        case 4u: { return b * (1.0 - a * a); }          // tanh', a = tanh(x)
        case 5u: { return select(0.0, b, a > 0.0); }    // relu', a = x or relu(x)
        default: { return b * a * (1.0 - a); }          // sigmoid', a = sigmoid(x)
    }
}

@compute @workgroup_size(256)
fn binary(@builtin(workgroup_id) wid: vec3<u32>,
          @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wid, nwg, lid);
    let p = binary_params;
    if i >= p.len {
        return;
    }
    var ia = i;
    var ib = i;
    if p.broadcast != 0u {
        // Coordinates of i in the output, innermost axis first.
        var rest = i;
        ia = 0u;
        ib = 0u;
        for (var axis = 3; axis >= 0; axis--) {
            let coord = rest % p.out_shape[axis];
            rest = rest / p.out_shape[axis];
            ia += coord * p.a_strides[axis];
            ib += coord * p.b_strides[axis];
        }
    }
    binary_out[i] = apply_binary(binary_a[ia], binary_b[ib]);
}

@group(0) @binding(0) var<storage, read> binary_a4: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> binary_b4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> binary_out4: array<vec4<f32>>;

// Both inputs of the output's shape (no broadcasting).
@compute @workgroup_size(256)
fn binary_vec4(@builtin(workgroup_id) wid: vec3<u32>,
               @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wid, nwg, lid);
    if i >= binary_params.len / 4u {
        return;
    }
    let a = binary_a4[i];
    let b = binary_b4[i];
    binary_out4[i] = vec4<f32>(apply_binary(a.x, b.x), apply_binary(a.y, b.y),
                               apply_binary(a.z, b.z), apply_binary(a.w, b.w));
}
