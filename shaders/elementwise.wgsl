// Elementwise maps: unary functions, binary arithmetic and comparisons with numpy
// broadcasting, the activation derivatives that backward passes need, and select
// (PyTorch's `where`).
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

// A quiet NaN, from the bits of a run-time x: a NaN (or ∞) that is a constant expression is
// a shader-creation error in WGSL. What x^p gives for x < 0 and a non-integer p, as in
// PyTorch.
fn nan_from(x: f32) -> f32 {
    return bitcast<f32>(bitcast<u32>(x) | 0x7fc00000u);
}

// Whether x is NaN, from its bits: `x != x` may be folded away by a compiler that assumes
// no NaN, and min/max of a NaN are undefined in SPIR-V.
fn is_nan(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u;
}

// e^(c − x²/2) for a small c (|c| ≲ 2), without the error of rounding x²/2: that argument
// reaches ~100 in the tail of Φ, where one rounding of it (~4e-6 absolute) would cost ~30
// ULP of the result, and exp(a) on most drivers is exp2 of a rounded a·log₂e, which costs
// as much again (lavapipe's exp measures 8 ULP at |a| = 13; GELU through exp2 of the exact
// but large −k·L below still measured 25 ULP at x ≈ −12.5, against 5 with ldexp).
// So x splits into xh, its top 8 significant bits, and x − xh: k = xh²/2 has at most 16
// bits, and k·L with L = 185/128 (8 bits, near log₂e) is exact; 2^(−k·L) = 2ⁿ·2^f with n
// its floor, applied exactly by ldexp; what is left, e^(c + f·ln 2 − (x−xh)(x+xh)/2
// − k·(1 − L·ln 2)), is one exp of an argument below ~4 in magnitude, where exp is good
// to ~2 ULP. 0 past |x| = 15 (e^(−112.5) is below f32's range), where k would overflow.
fn exp_minus_half_square(x: f32, c: f32) -> f32 {
    let xh = bitcast<f32>(bitcast<u32>(x) & 0xffff0000u);
    let k = 0.5 * xh * xh;
    let a = -k * 1.4453125;
    let n = floor(a);
    let rest = c + (a - n) * 0.69314718055994531 - 0.5 * (x - xh) * (x + xh)
        + k * 0.0018142844030459551;
    return select(ldexp(exp(rest), i32(n)), 0.0, abs(x) > 15.0);
}

// The standard normal CDF Φ(x) = ½·(1 + erf(x/√2)), as ½·erfc(|x|/√2) for the lower tail
// (and 1 − that above 0), so that Φ keeps its relative precision far into the lower tail,
// where 1 + erf(x/√2) would cancel to 0: GELU there is tiny but not 0 (Abramowitz–Stegun
// 7.1.26 for erf, abs. error 1.5e-7, would leave no correct digit of GELU below
// x ≈ −5.5, nor would PyTorch's f32 `1 + erf`). erfc is Numerical Recipes' `erfcc` (2nd ed.,
// §6.2; a Chebyshev fit of erfc(z)·e^(z²) in t = 1/(1 + z/2)), of relative error
// < 1.2e-7 for every z ≥ 0 in exact arithmetic (1.05e-7 measured against mpmath), with
// e^(−z²) = e^(−x²/2) from `exp_minus_half_square`. In f32 on lavapipe, GELU measures at
// most 5 ULP (6e-7) relative to the f64 reference over |x| ≤ 13, 2.5 for |x| ≤ 1
// (tests/kernels.rs, `gelu_keeps_relative_precision_in_the_tail`, prints it).
fn normal_cdf(x: f32) -> f32 {
    let a = abs(x);
    let t = 1.0 / (1.0 + 0.35355339059327376 * a);   // 1/(1 + z/2), z = |x|/√2
    let poly = -1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418
        + t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587
        + t * (-0.82215223 + t * 0.17087277))))))));
    let tail = 0.5 * t * exp_minus_half_square(a, poly);
    return select(1.0 - tail, tail, x < 0.0);
}

// The standard normal density φ(x) = e^(−x²/2)/√(2π).
fn normal_pdf(x: f32) -> f32 {
    return 0.39894228040143268 * exp_minus_half_square(x, 0.0);
}

// x^n for a whole n ≥ 0 (n ≤ 2²⁴: at most 25 steps), by repeated squaring: a few roundings
// for small n (none where the powers are exact), and no log, so negative x keep their sign
// for odd n.
fn pow_whole(x: f32, n: u32) -> f32 {
    var result = 1.0;
    var base = x;
    var k = n;
    loop {
        if (k & 1u) != 0u {
            result *= base;
        }
        k = k >> 1u;
        if k == 0u {
            break;
        }
        base *= base;
    }
    return result;
}

// x^p for a constant p, as PyTorch's `x ** p`: any x for an integer p (x^0 = 1 even at 0
// and NaN; 0^p = ∞ for p < 0), NaN for x < 0 and a non-integer p. Past 2²⁴ every f32 is an
// even integer, so there x^p = |x|^p.
fn pow_const(x: f32, p: f32) -> f32 {
    if p == 0.0 {
        return 1.0;
    }
    let whole = p == floor(p);
    if whole && abs(p) <= 16777216.0 {
        let power = pow_whole(x, u32(abs(p)));
        return select(power, 1.0 / power, p < 0.0);
    }
    if x < 0.0 && !whole {
        return nan_from(x);
    }
    let a = abs(x);
    if p == 0.5 {
        return sqrt(a);
    }
    if a == 0.0 {
        // +∞ from the bits of +0 (PyTorch gives +∞ for (−0)^p too).
        return select(bitcast<f32>(bitcast<u32>(a) | 0x7f800000u), 0.0, p > 0.0);
    }
    return exp2(p * log2(a));
}

// ---------------------------------------------------------------- unary: y = f(x)

struct UnaryParams {
    len: u32,
    alpha: f32,   // the factor of `scale`, the exponent of `pow`, the lower bound of `clamp`
    beta: f32,    // the upper bound of `clamp`
    _pad0: u32,
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
        case 6u: { return alpha * x; }
        case 7u: { return x * normal_cdf(x); }          // gelu, exact (erf) form
        case 8u: { return x * stable_sigmoid(x); }      // silu
        case 9u: { return sqrt(x); }
        case 10u: { return abs(x); }
        case 11u: { return pow_const(x, alpha); }
        // clamp to [alpha, beta]; NaN stays NaN, as in PyTorch
        default: { return select(min(max(x, alpha), unary_params.beta), x, is_nan(x)); }
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
// broadcasting are all the same code: an input's element is the dot product of the
// output coordinates with its strides.

// The coordinates of flat index i in a row-major tensor of `shape`.
fn coordinates(i: u32, shape: vec4<u32>) -> vec4<u32> {
    var coords: vec4<u32>;
    var rest = i;
    for (var axis = 3; axis >= 0; axis--) {
        coords[axis] = rest % shape[axis];
        rest = rest / shape[axis];
    }
    return coords;
}

struct BinaryParams {
    len: u32,
    broadcast: u32,   // 0: both inputs have the output's shape, index them directly
    alpha: f32,       // the exponent of `pow_grad`, the lower bound of `clamp_grad`
    beta: f32,        // the upper bound of `clamp_grad`
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
        case 6u: { return b * a * (1.0 - a); }          // sigmoid', a = sigmoid(x)
        // gelu', a = x: Φ(x) + x·φ(x)
        case 7u: { return b * (normal_cdf(a) + a * normal_pdf(a)); }
        // silu', a = x: σ(x)·(1 + x·σ(−x)), with σ(−x) = 1 − σ(x) without the cancellation
        case 8u: { return b * stable_sigmoid(a) * (1.0 + a * stable_sigmoid(-a)); }
        case 9u: { return b / (2.0 * a); }              // sqrt', a = sqrt(x)
        case 10u: { return b * sign(a); }               // abs', a = x (0 at 0)
        // pow', a = x: p·x^(p−1), 0 for p = 0 (as PyTorch)
        case 11u: {
            let p = binary_params.alpha;
            return select(b * p * pow_const(a, p - 1.0), 0.0, p == 0.0);
        }
        // clamp', a = x: dy where alpha ≤ x ≤ beta (bounds included, as PyTorch)
        case 12u: {
            let inside = a >= binary_params.alpha && a <= binary_params.beta;
            return select(0.0, b, inside);
        }
        // Masks: 1 where the comparison holds, else 0 (never where a or b is NaN).
        case 13u: { return select(0.0, 1.0, a == b); }
        case 14u: { return select(0.0, 1.0, a > b); }
        default: { return select(0.0, 1.0, a < b); }
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
        let coords = coordinates(i, p.out_shape);
        ia = dot(coords, p.a_strides);
        ib = dot(coords, p.b_strides);
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

// a of the output's shape, b a single value (a scale, as a mean's gradient has): on CPU
// adapters the broadcasting kernel's coordinates per element cost far more than the op.
@compute @workgroup_size(256)
fn binary_by_scalar_vec4(@builtin(workgroup_id) wid: vec3<u32>,
                         @builtin(num_workgroups) nwg: vec3<u32>,
                         @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wid, nwg, lid);
    if i >= binary_params.len / 4u {
        return;
    }
    let a = binary_a4[i];
    let b = binary_b[0];
    binary_out4[i] = vec4<f32>(apply_binary(a.x, b), apply_binary(a.y, b),
                               apply_binary(a.z, b), apply_binary(a.w, b));
}

// ---------------------------------------------------------------- select: out = c ? a : b
//
// PyTorch's `where(condition, a, b)`: a where the condition is nonzero, else b, the three
// broadcast against each other with strides as in the binary ops. Nonzero is read from the
// bits (any but the sign's set), so NaN counts as true even under a compiler that assumes
// no NaN, and −0 as false.

fn is_nonzero(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7fffffffu) != 0u;
}

struct SelectParams {
    len: u32,
    broadcast: u32,   // 0: every operand has the output's shape, index them directly
    _pad0: u32,
    _pad1: u32,
    out_shape: vec4<u32>,
    condition_strides: vec4<u32>,
    on_true_strides: vec4<u32>,
    on_false_strides: vec4<u32>,
}

@group(0) @binding(0) var<storage, read> select_condition: array<f32>;
@group(0) @binding(1) var<storage, read> select_on_true: array<f32>;
@group(0) @binding(2) var<storage, read> select_on_false: array<f32>;
@group(0) @binding(3) var<storage, read_write> select_out: array<f32>;
@group(0) @binding(4) var<uniform> select_params: SelectParams;

@compute @workgroup_size(256)
fn select_where(@builtin(workgroup_id) wid: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wid, nwg, lid);
    let p = select_params;
    if i >= p.len {
        return;
    }
    var ic = i;
    var ia = i;
    var ib = i;
    if p.broadcast != 0u {
        let coords = coordinates(i, p.out_shape);
        ic = dot(coords, p.condition_strides);
        ia = dot(coords, p.on_true_strides);
        ib = dot(coords, p.on_false_strides);
    }
    select_out[i] = select(select_on_false[ib], select_on_true[ia], is_nonzero(select_condition[ic]));
}
