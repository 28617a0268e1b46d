//! Elementwise maps (`shaders/elementwise.wgsl`): unary functions, binary arithmetic and
//! comparisons with numpy broadcasting, the activation derivatives, and `select` (PyTorch's
//! `where`).

use crate::error::{Error, Result};
use crate::gpu::{Access, Dispatch, KernelSpec, ShaderSource};
use crate::kernels::{
    broadcast_shape_any_rank, broadcast_shapes, broadcast_strides, check_rank, pad_to_rank4,
    plan_broadcast, WORKGROUP_1D,
};
use crate::tensor::Tensor;

/// The elementwise module, `shaders/elementwise.wgsl`: every [`Unary`] and [`Binary`] map,
/// and `select`.
pub static SHADER: ShaderSource = ShaderSource::new(
    "elementwise",
    include_str!("../../shaders/elementwise.wgsl"),
);

/// y = f(x), one element at a time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Unary {
    /// y = tanh(x), in `(-1, 1)`.
    Tanh,
    /// y = max(x, 0).
    Relu,
    /// y = 1/(1 + e^(−x)), in `(0, 1)`.
    Sigmoid,
    /// y = eˣ.
    Exp,
    /// y = ln x (NaN for x < 0, −∞ at 0).
    Log,
    /// y = −x.
    Neg,
    /// y = α·x
    Scale(f32),
    /// y = x·Φ(x) = ½·x·(1 + erf(x/√2)), with Φ the standard normal CDF: PyTorch's default
    /// `nn.GELU()` (the exact form, not the tanh approximation). WGSL has no erf: the shader
    /// takes Φ from an erfc of relative error about 1e-7 (Numerical Recipes' `erfcc`), so
    /// the lower tail (x ≪ 0, where y is tiny) keeps its relative precision; the CPU
    /// reference uses [`erfc`].
    Gelu,
    /// y = x·σ(x) = x/(1 + e^(−x)) (PyTorch's `nn.SiLU`, "swish"); no overflow for large
    /// |x|.
    Silu,
    /// y = √x (NaN for x < 0).
    Sqrt,
    /// y = |x|; its gradient is sign(x), 0 at 0 (as PyTorch's).
    Abs,
    /// y = xᵖ for a constant exponent p, as PyTorch's `x ** p`: any x for an integer p
    /// (computed by repeated multiplication, so x < 0 keeps the sign of an odd power;
    /// x⁰ = 1 even at 0 and NaN; 0ᵖ = ∞ for p < 0), NaN for x < 0 and a non-integer p.
    /// p must be finite ([`Unary::validate`]).
    Pow(f32),
    /// y = min(max(x, min), max) (NaN stays NaN), as `torch.clamp`; the gradient passes
    /// where min ≤ x ≤ max, bounds included. Needs min ≤ max, neither NaN
    /// ([`Unary::validate`]).
    Clamp {
        /// The lower bound.
        min: f32,
        /// The upper bound.
        max: f32,
    },
}

impl Unary {
    /// The shader's `OP` code, `alpha` and `beta`.
    fn code(self) -> (u32, f32, f32) {
        match self {
            Unary::Tanh => (0, 0.0, 0.0),
            Unary::Relu => (1, 0.0, 0.0),
            Unary::Sigmoid => (2, 0.0, 0.0),
            Unary::Exp => (3, 0.0, 0.0),
            Unary::Log => (4, 0.0, 0.0),
            Unary::Neg => (5, 0.0, 0.0),
            Unary::Scale(alpha) => (6, alpha, 0.0),
            Unary::Gelu => (7, 0.0, 0.0),
            Unary::Silu => (8, 0.0, 0.0),
            Unary::Sqrt => (9, 0.0, 0.0),
            Unary::Abs => (10, 0.0, 0.0),
            Unary::Pow(p) => (11, p, 0.0),
            Unary::Clamp { min, max } => (12, min, max),
        }
    }

    /// Checks the op's constants: [`Error::InvalidArgument`] for a [`Unary::Pow`] whose
    /// exponent is not finite, or a [`Unary::Clamp`] with a NaN bound or `min > max`,
    /// naming the values. Every launch ([`Tensor::map`], the graph's `map`) checks first.
    pub fn validate(self) -> Result<()> {
        match self {
            Unary::Pow(p) => check_exponent("pow", p),
            Unary::Clamp { min, max } => check_bounds("clamp", min, max),
            _ => Ok(()),
        }
    }

    /// The CPU reference, in f64.
    pub fn apply(self, x: f64) -> f64 {
        match self {
            Unary::Tanh => x.tanh(),
            Unary::Relu => x.max(0.0),
            Unary::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            Unary::Exp => x.exp(),
            Unary::Log => x.ln(),
            Unary::Neg => -x,
            Unary::Scale(alpha) => f64::from(alpha) * x,
            Unary::Gelu => x * normal_cdf(x),
            Unary::Silu => x * sigmoid(x),
            Unary::Sqrt => x.sqrt(),
            Unary::Abs => x.abs(),
            // C's pow, as Rust's powf: 1 for p = 0, NaN for x < 0 and a non-integer p.
            Unary::Pow(p) => x.powf(f64::from(p)),
            Unary::Clamp { min, max } if !x.is_nan() => x.max(f64::from(min)).min(f64::from(max)),
            Unary::Clamp { .. } => x,
        }
    }
}

fn check_exponent(op: &'static str, p: f32) -> Result<()> {
    if p.is_finite() {
        Ok(())
    } else {
        Err(Error::InvalidArgument {
            op,
            message: format!("the exponent must be finite, got {p}"),
        })
    }
}

fn check_bounds(op: &'static str, min: f32, max: f32) -> Result<()> {
    if min.is_nan() || max.is_nan() || min > max {
        Err(Error::InvalidArgument {
            op,
            message: format!("needs bounds min ≤ max, neither NaN; got min = {min}, max = {max}"),
        })
    } else {
        Ok(())
    }
}

/// The logistic sigmoid in f64, 1/(1 + e^(−x)) (no NaN: e^(−x) = ∞ gives 0).
fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Φ(x), the standard normal CDF, ½·erfc(−x/√2) in f64: relative precision in both tails.
pub fn normal_cdf(x: f64) -> f64 {
    0.5 * erfc(-x * std::f64::consts::FRAC_1_SQRT_2)
}

/// φ(x), the standard normal density e^(−x²/2)/√(2π), in f64.
pub fn normal_pdf(x: f64) -> f64 {
    const FRAC_1_SQRT_2PI: f64 = 0.398_942_280_401_432_7;
    FRAC_1_SQRT_2PI * (-0.5 * x * x).exp()
}

/// Below this |x|, erf sums its series; above, erfc takes its continued fraction.
const ERF_SERIES_LIMIT: f64 = 2.5;

/// The error function in f64, for the CPU references: relative error within a few f64 ULP
/// for |x| < 2.5 (a series of positive terms, no cancellation), and erf = ±(1 − erfc)
/// beyond (error ≲ 1e-16). Checked against mpmath in `tests/kernels.rs`.
pub fn erf(x: f64) -> f64 {
    if x.is_nan() {
        x
    } else if x.abs() < ERF_SERIES_LIMIT {
        erf_series(x)
    } else {
        (1.0 - erfc_continued_fraction(x.abs())).copysign(x)
    }
}

/// The complementary error function 1 − erf(x) in f64, with relative precision in the
/// upper tail (it underflows to 0 only past x ≈ 27): 1 − erf(x) for x < 2.5 (relative
/// error ≲ 3e-13, where erfc ≥ 4e-4), the continued fraction beyond, 2 − erfc(−x) for
/// x < 0.
pub fn erfc(x: f64) -> f64 {
    if x.is_nan() {
        x
    } else if x < 0.0 {
        2.0 - erfc(-x)
    } else if x < ERF_SERIES_LIMIT {
        1.0 - erf_series(x)
    } else {
        erfc_continued_fraction(x)
    }
}

/// erf(x) = (2/√π)·e^(−x²)·Σₙ 2ⁿ·x^(2n+1)/(1·3·…·(2n+1)) (Abramowitz–Stegun 7.1.6): every
/// term has the sign of x, so the sum loses nothing to cancellation.
fn erf_series(x: f64) -> f64 {
    let two_x2 = 2.0 * x * x;
    let (mut term, mut sum) = (x, x);
    let mut n = 0.0;
    while term.abs() > 1e-17 * sum.abs() {
        n += 1.0;
        term *= two_x2 / (2.0 * n + 1.0);
        sum += term;
    }
    std::f64::consts::FRAC_2_SQRT_PI * (-x * x).exp() * sum
}

/// erfc(x) = e^(−x²)/√π · 1/(x + ½/(x + 1/(x + (3/2)/(x + 2/(x + …))))) for x ≥ 2.5
/// (Abramowitz–Stegun 7.1.14), evaluated from the 200th level up: converged to f64
/// precision from x = 2.5 on.
fn erfc_continued_fraction(x: f64) -> f64 {
    let mut f = x;
    for k in (1..=200).rev() {
        f = x + 0.5 * f64::from(k) / f;
    }
    let frac_1_sqrt_pi = 0.5 * std::f64::consts::FRAC_2_SQRT_PI;
    (-x * x).exp() * frac_1_sqrt_pi / f
}

/// out = a ∘ b, broadcasting a and b against each other.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Binary {
    /// a + b.
    Add,
    /// a − b.
    Sub,
    /// a · b.
    Mul,
    /// a / b (IEEE: ±∞ or NaN where b is 0).
    Div,
    /// dy·(1 − y²) with a = y = tanh(x), b = dy: tanh' from the forward output.
    TanhGrad,
    /// dy where a > 0, else 0, with a = x or y = relu(x) (positive at the same places),
    /// b = dy.
    ReluGrad,
    /// dy·y·(1 − y) with a = y = sigmoid(x), b = dy.
    SigmoidGrad,
    /// dy·(Φ(x) + x·φ(x)) with a = x, b = dy: GELU's derivative, from its input (its
    /// output x·Φ(x) does not give x back).
    GeluGrad,
    /// dy·σ(x)·(1 + x·σ(−x)) with a = x, b = dy: SiLU's derivative, from its input.
    SiluGrad,
    /// dy/(2y) with a = y = √x, b = dy: √'s derivative from its output, as PyTorch's (∞ at
    /// x = 0).
    SqrtGrad,
    /// dy·sign(x) with a = x, b = dy; 0 at x = 0.
    AbsGrad,
    /// dy·p·x^(p−1) with a = x, b = dy (0 for p = 0, as PyTorch); p must be finite.
    PowGrad(f32),
    /// dy where min ≤ x ≤ max (bounds included, as `torch.clamp`'s backward), else 0, with
    /// a = x, b = dy; the bounds as [`Unary::Clamp`]'s.
    ClampGrad {
        /// The lower bound.
        min: f32,
        /// The upper bound.
        max: f32,
    },
    /// 1 where a = b, else 0 (broadcasting): a mask, such as of where a maximum was taken.
    /// No gradient flows through it.
    Equal,
    /// 1 where a > b, else 0 (broadcasting; 0 where either is NaN): a mask, for
    /// [`Tensor::select`]. No gradient flows through it.
    Greater,
    /// 1 where a < b, else 0 (broadcasting; 0 where either is NaN). No gradient flows
    /// through it.
    Less,
}

impl Binary {
    /// Every binary op, in the order of the shader's `OP` codes; the two with a parameter
    /// ([`Binary::PowGrad`], [`Binary::ClampGrad`]) with a stand-in one: the shader reads
    /// it from a uniform, so one kernel serves every value.
    pub const ALL: [Binary; 16] = [
        Binary::Add,
        Binary::Sub,
        Binary::Mul,
        Binary::Div,
        Binary::TanhGrad,
        Binary::ReluGrad,
        Binary::SigmoidGrad,
        Binary::GeluGrad,
        Binary::SiluGrad,
        Binary::SqrtGrad,
        Binary::AbsGrad,
        Binary::PowGrad(2.0),
        Binary::ClampGrad {
            min: -1.0,
            max: 1.0,
        },
        Binary::Equal,
        Binary::Greater,
        Binary::Less,
    ];

    /// The shader's `OP` code, `alpha` and `beta`.
    fn code(self) -> (u32, f32, f32) {
        match self {
            Binary::Add => (0, 0.0, 0.0),
            Binary::Sub => (1, 0.0, 0.0),
            Binary::Mul => (2, 0.0, 0.0),
            Binary::Div => (3, 0.0, 0.0),
            Binary::TanhGrad => (4, 0.0, 0.0),
            Binary::ReluGrad => (5, 0.0, 0.0),
            Binary::SigmoidGrad => (6, 0.0, 0.0),
            Binary::GeluGrad => (7, 0.0, 0.0),
            Binary::SiluGrad => (8, 0.0, 0.0),
            Binary::SqrtGrad => (9, 0.0, 0.0),
            Binary::AbsGrad => (10, 0.0, 0.0),
            Binary::PowGrad(p) => (11, p, 0.0),
            Binary::ClampGrad { min, max } => (12, min, max),
            Binary::Equal => (13, 0.0, 0.0),
            Binary::Greater => (14, 0.0, 0.0),
            Binary::Less => (15, 0.0, 0.0),
        }
    }

    /// Checks the op's constants as [`Unary::validate`] does: a finite exponent for
    /// [`Binary::PowGrad`], bounds min ≤ max, neither NaN, for [`Binary::ClampGrad`].
    pub fn validate(self) -> Result<()> {
        match self {
            Binary::PowGrad(p) => check_exponent("pow_grad", p),
            Binary::ClampGrad { min, max } => check_bounds("clamp_grad", min, max),
            _ => Ok(()),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Binary::Add => "add",
            Binary::Sub => "sub",
            Binary::Mul => "mul",
            Binary::Div => "div",
            Binary::TanhGrad => "tanh_grad",
            Binary::ReluGrad => "relu_grad",
            Binary::SigmoidGrad => "sigmoid_grad",
            Binary::GeluGrad => "gelu_grad",
            Binary::SiluGrad => "silu_grad",
            Binary::SqrtGrad => "sqrt_grad",
            Binary::AbsGrad => "abs_grad",
            Binary::PowGrad(_) => "pow_grad",
            Binary::ClampGrad { .. } => "clamp_grad",
            Binary::Equal => "equal",
            Binary::Greater => "greater",
            Binary::Less => "less",
        }
    }

    /// Whether the op broadcasts; the derivatives need both operands of one shape.
    pub fn broadcasts(self) -> bool {
        matches!(
            self,
            Binary::Add
                | Binary::Sub
                | Binary::Mul
                | Binary::Div
                | Binary::Equal
                | Binary::Greater
                | Binary::Less
        )
    }

    /// The CPU reference, in f64.
    pub fn apply(self, a: f64, b: f64) -> f64 {
        match self {
            Binary::Add => a + b,
            Binary::Sub => a - b,
            Binary::Mul => a * b,
            Binary::Div => a / b,
            Binary::TanhGrad => b * (1.0 - a * a),
            Binary::ReluGrad => {
                if a > 0.0 {
                    b
                } else {
                    0.0
                }
            }
            Binary::SigmoidGrad => b * a * (1.0 - a),
            Binary::GeluGrad => b * (normal_cdf(a) + a * normal_pdf(a)),
            Binary::SiluGrad => b * sigmoid(a) * (1.0 + a * sigmoid(-a)),
            Binary::SqrtGrad => b / (2.0 * a),
            Binary::AbsGrad => {
                if a > 0.0 {
                    b
                } else if a < 0.0 {
                    -b
                } else {
                    0.0
                }
            }
            // (a float pattern compares with ==: −0 matches too)
            Binary::PowGrad(0.0) => 0.0,
            Binary::PowGrad(p) => {
                let p = f64::from(p);
                b * p * a.powf(p - 1.0)
            }
            Binary::ClampGrad { min, max } => {
                if f64::from(min) <= a && a <= f64::from(max) {
                    b
                } else {
                    0.0
                }
            }
            Binary::Equal => f64::from(u8::from(a == b)),
            Binary::Greater => f64::from(u8::from(a > b)),
            Binary::Less => f64::from(u8::from(a < b)),
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct UnaryParams {
    len: u32,
    alpha: f32,
    beta: f32,
    pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct BinaryParams {
    len: u32,
    broadcast: u32,
    alpha: f32,
    beta: f32,
    out_shape: [u32; 4],
    a_strides: [u32; 4],
    b_strides: [u32; 4],
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct SelectParams {
    len: u32,
    broadcast: u32,
    pad: [u32; 2],
    out_shape: [u32; 4],
    condition_strides: [u32; 4],
    on_true_strides: [u32; 4],
    on_false_strides: [u32; 4],
}

/// Records out = select(condition, on_true, on_false) into `out`, whose shape is the
/// broadcast of the three (at most four axes).
pub fn select_dispatch(
    condition: &Tensor,
    on_true: &Tensor,
    on_false: &Tensor,
    out: &Tensor,
) -> Result<Dispatch> {
    let gpu = out.gpu();
    let shape = out.shape();
    let operands = [condition, on_true, on_false];
    let params = SelectParams {
        len: out.numel() as u32,
        broadcast: u32::from(operands.iter().any(|t| t.shape() != shape)),
        pad: [0; 2],
        out_shape: pad_to_rank4(shape, 1),
        condition_strides: broadcast_strides(condition.shape(), shape),
        on_true_strides: broadcast_strides(on_true.shape(), shape),
        on_false_strides: broadcast_strides(on_false.shape(), shape),
    };
    gpu.dispatch(
        &select_spec(),
        &[
            condition.buffer(),
            on_true.buffer(),
            on_false.buffer(),
            out.buffer(),
        ],
        &params,
        gpu.grid(params.len.div_ceil(WORKGROUP_1D)),
    )
}

fn select_spec() -> KernelSpec {
    KernelSpec {
        source: &SHADER,
        entry: "select_where",
        bindings: &[
            Access::Read,
            Access::Read,
            Access::Read,
            Access::ReadWrite,
            Access::Uniform,
        ],
        constants: vec![],
    }
}

/// The broadcast shape of `select`'s three operands, or an error naming them.
pub fn select_shape(
    op: &'static str,
    condition: &[usize],
    on_true: &[usize],
    on_false: &[usize],
) -> Result<Vec<usize>> {
    broadcast_shape_any_rank(condition, on_true)
        .and_then(|both| broadcast_shape_any_rank(&both, on_false))
        .map_err(|_| {
            Error::invalid(
                op,
                format!(
                    "condition {condition:?}, on_true {on_true:?} and on_false {on_false:?} do \
                     not broadcast together (numpy rules)"
                ),
            )
        })
}

/// CPU reference of [`Tensor::select`]: returns the output and its shape.
pub fn select_cpu(
    (condition, condition_shape): (&[f32], &[usize]),
    (on_true, on_true_shape): (&[f32], &[usize]),
    (on_false, on_false_shape): (&[f32], &[usize]),
) -> Result<(Vec<f32>, Vec<usize>)> {
    let out_shape = select_shape("select", condition_shape, on_true_shape, on_false_shape)?;
    check_rank("select", &out_shape)?;
    let dims = pad_to_rank4(&out_shape, 1);
    let strides = [condition_shape, on_true_shape, on_false_shape]
        .map(|shape| broadcast_strides(shape, &out_shape));
    let n: usize = out_shape.iter().product();
    let out = (0..n)
        .map(|i| {
            let mut at = [0usize; 3];
            let mut rest = i;
            for axis in (0..4).rev() {
                let coord = rest % dims[axis] as usize;
                rest /= dims[axis] as usize;
                for (at, strides) in at.iter_mut().zip(&strides) {
                    *at += coord * strides[axis] as usize;
                }
            }
            if condition[at[0]] != 0.0 {
                on_true[at[1]]
            } else {
                on_false[at[2]]
            }
        })
        .collect();
    Ok((out, out_shape))
}

/// Records y = op(x) into `y` (both of `len` elements); [`Unary::validate`]'s error for
/// bad constants.
pub fn unary_dispatch(x: &Tensor, y: &Tensor, op: Unary) -> Result<Dispatch> {
    op.validate()?;
    let gpu = x.gpu();
    let (code, alpha, beta) = op.code();
    let len = x.numel() as u32;
    let params = UnaryParams {
        len,
        alpha,
        beta,
        pad: 0,
    };
    let vec4 = gpu.is_cpu_like() && len.is_multiple_of(4);
    let invocations = if vec4 { len / 4 } else { len };
    gpu.dispatch(
        &unary_spec(code, vec4),
        &[x.buffer(), y.buffer()],
        &params,
        gpu.grid(invocations.div_ceil(WORKGROUP_1D)),
    )
}

/// Records out = a ∘ b into `out`, whose shape is the broadcast of theirs;
/// [`Binary::validate`]'s error for bad constants.
pub fn binary_dispatch(a: &Tensor, b: &Tensor, out: &Tensor, op: Binary) -> Result<Dispatch> {
    op.validate()?;
    let gpu = a.gpu();
    let len = out.numel() as u32;
    let direct = a.shape() == out.shape() && b.shape() == out.shape();
    let (_, alpha, beta) = op.code();
    let params = BinaryParams {
        len,
        broadcast: u32::from(!direct),
        alpha,
        beta,
        out_shape: pad_to_rank4(out.shape(), 1),
        a_strides: broadcast_strides(a.shape(), out.shape()),
        b_strides: broadcast_strides(b.shape(), out.shape()),
    };
    let by_scalar = a.shape() == out.shape() && b.numel() == 1;
    let layout = match (
        gpu.is_cpu_like() && len.is_multiple_of(4),
        direct,
        by_scalar,
    ) {
        (true, true, _) => BinaryLayout::Vec4,
        (true, false, true) => BinaryLayout::Vec4ByScalar,
        _ => BinaryLayout::Elements,
    };
    let invocations = match layout {
        BinaryLayout::Elements => len,
        BinaryLayout::Vec4 | BinaryLayout::Vec4ByScalar => len / 4,
    };
    gpu.dispatch(
        &binary_spec(op, layout),
        &[a.buffer(), b.buffer(), out.buffer()],
        &params,
        gpu.grid(invocations.div_ceil(WORKGROUP_1D)),
    )
}

/// How a binary kernel reads its operands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BinaryLayout {
    /// One element per invocation, each operand through its broadcast strides.
    Elements,
    /// Four elements per invocation, both operands of the output's shape (CPU adapters).
    Vec4,
    /// Four elements per invocation, the second operand one value (CPU adapters).
    Vec4ByScalar,
}

impl BinaryLayout {
    const ALL: [BinaryLayout; 3] = [
        BinaryLayout::Elements,
        BinaryLayout::Vec4,
        BinaryLayout::Vec4ByScalar,
    ];
}

/// The kernel of the unary op with this `OP` code, reading vec4s or floats.
fn unary_spec(code: u32, vec4: bool) -> KernelSpec {
    KernelSpec {
        source: &SHADER,
        entry: if vec4 { "unary_vec4" } else { "unary" },
        bindings: &[Access::Read, Access::ReadWrite, Access::Uniform],
        constants: vec![("OP", f64::from(code))],
    }
}

fn binary_spec(op: Binary, layout: BinaryLayout) -> KernelSpec {
    KernelSpec {
        source: &SHADER,
        entry: match layout {
            BinaryLayout::Elements => "binary",
            BinaryLayout::Vec4 => "binary_vec4",
            BinaryLayout::Vec4ByScalar => "binary_by_scalar_vec4",
        },
        bindings: &[
            Access::Read,
            Access::Read,
            Access::ReadWrite,
            Access::Uniform,
        ],
        constants: vec![("OP", f64::from(op.code().0))],
    }
}

/// Every kernel variant [`unary_dispatch`], [`binary_dispatch`] and [`select_dispatch`]
/// can build.
pub fn kernel_specs() -> Vec<KernelSpec> {
    // A scale's α, pow's exponent and clamp's bounds are parameters, not constants: any one
    // stands for all.
    let unary = [
        Unary::Tanh,
        Unary::Relu,
        Unary::Sigmoid,
        Unary::Exp,
        Unary::Log,
        Unary::Neg,
        Unary::Scale(1.0),
        Unary::Gelu,
        Unary::Silu,
        Unary::Sqrt,
        Unary::Abs,
        Unary::Pow(2.0),
        Unary::Clamp {
            min: -1.0,
            max: 1.0,
        },
    ];
    let mut specs = vec![select_spec()];
    for vec4 in [false, true] {
        specs.extend(unary.iter().map(|op| unary_spec(op.code().0, vec4)));
    }
    for layout in BinaryLayout::ALL {
        specs.extend(Binary::ALL.iter().map(|&op| binary_spec(op, layout)));
    }
    specs
}

/// Runs the elementwise kernel that `record` dispatches over `operands` broadcast together
/// (numpy rules; their shapes already checked to broadcast) and returns its output. Within
/// four axes the kernel broadcasts them itself; past four, it runs on free reshapes whose
/// neighbouring axes merge ([`crate::kernels::coalesce_broadcast`]) and the output is reshaped back, or
/// the shapes are refused, naming them, when they need more than four axes.
fn broadcasting(
    op: &'static str,
    operands: &[&Tensor],
    record: impl Fn(&[&Tensor], &Tensor) -> Result<Dispatch>,
) -> Result<Tensor> {
    let gpu = operands[0].gpu();
    let shapes: Vec<&[usize]> = operands.iter().map(|t| t.shape()).collect();
    let plan = plan_broadcast(op, &shapes)?;
    let (reshaped, kernel_shape) = match plan.coalesced {
        None => (
            operands.iter().map(|&t| t.clone()).collect(),
            plan.out.clone(),
        ),
        Some(coalesced) => (
            operands
                .iter()
                .zip(&coalesced.operands)
                .map(|(t, shape)| t.reshape(shape))
                .collect::<Result<Vec<_>>>()?,
            coalesced.out,
        ),
    };
    let out = Tensor::uninit(gpu, &kernel_shape)?;
    if out.numel() > 0 {
        let borrowed: Vec<&Tensor> = reshaped.iter().collect();
        let dispatch = record(&borrowed, &out)?;
        gpu.submit(&[], &[dispatch])?;
    }
    out.reshape(&plan.out)
}

/// CPU reference of [`Tensor::map`].
pub fn unary_cpu(x: &[f32], op: Unary) -> Vec<f32> {
    x.iter().map(|&v| op.apply(f64::from(v)) as f32).collect()
}

/// CPU reference of [`Tensor::zip`]: returns the output and its shape.
pub fn binary_cpu(
    a: &[f32],
    a_shape: &[usize],
    b: &[f32],
    b_shape: &[usize],
    op: Binary,
) -> Result<(Vec<f32>, Vec<usize>)> {
    let out_shape = broadcast_shapes(op.name(), a_shape, b_shape)?;
    let a_strides = broadcast_strides(a_shape, &out_shape);
    let b_strides = broadcast_strides(b_shape, &out_shape);
    let dims = pad_to_rank4(&out_shape, 1);
    let n: usize = out_shape.iter().product();
    let out = (0..n)
        .map(|i| {
            let (mut rest, mut ia, mut ib) = (i, 0usize, 0usize);
            for axis in (0..4).rev() {
                let coord = rest % dims[axis] as usize;
                rest /= dims[axis] as usize;
                ia += coord * a_strides[axis] as usize;
                ib += coord * b_strides[axis] as usize;
            }
            op.apply(f64::from(a[ia]), f64::from(b[ib])) as f32
        })
        .collect();
    Ok((out, out_shape))
}

impl Tensor {
    /// y = op(x) elementwise; [`Unary::validate`]'s error for bad constants.
    pub fn map(&self, op: Unary) -> Result<Tensor> {
        op.validate()?;
        let y = Tensor::uninit(self.gpu(), self.shape())?;
        if self.numel() > 0 {
            let dispatch = unary_dispatch(self, &y, op)?;
            self.gpu().submit(&[], &[dispatch])?;
        }
        Ok(y)
    }

    /// out = self ∘ other elementwise, broadcasting as numpy does (the derivative ops take
    /// two tensors of one shape). Past four axes the operands broadcast when their axes
    /// coalesce into four ([`crate::kernels::coalesce_broadcast`]); a pattern that needs five is refused,
    /// naming the shapes.
    pub fn zip(&self, other: &Tensor, op: Binary) -> Result<Tensor> {
        op.validate()?;
        self.same_device(op.name(), other)?;
        if !op.broadcasts() && self.shape() != other.shape() {
            return Err(Error::ShapeMismatch {
                op: op.name(),
                lhs: self.shape().to_vec(),
                rhs: other.shape().to_vec(),
                expected: "the forward value and the gradient must have the same shape".into(),
            });
        }
        broadcasting(op.name(), &[self, other], |operands, out| {
            binary_dispatch(operands[0], operands[1], out, op)
        })
    }

    /// Where `condition` is nonzero `on_true`, else `on_false`, elementwise, the three
    /// broadcast together (numpy rules; past four axes as [`Tensor::zip`]): PyTorch's
    /// `torch.where(condition, on_true, on_false)` and ONNX's Where, with the condition an
    /// f32 mask such as [`Binary::Greater`] gives (NaN counts as nonzero).
    pub fn select(condition: &Tensor, on_true: &Tensor, on_false: &Tensor) -> Result<Tensor> {
        const OP: &str = "select";
        condition.same_device(OP, on_true)?;
        condition.same_device(OP, on_false)?;
        select_shape(OP, condition.shape(), on_true.shape(), on_false.shape())?;
        broadcasting(OP, &[condition, on_true, on_false], |operands, out| {
            select_dispatch(operands[0], operands[1], operands[2], out)
        })
    }

    /// 1 where self > other, else 0, broadcasting: a mask for [`Tensor::select`].
    pub fn greater(&self, other: &Tensor) -> Result<Tensor> {
        self.zip(other, Binary::Greater)
    }

    /// 1 where self < other, else 0, broadcasting.
    pub fn less(&self, other: &Tensor) -> Result<Tensor> {
        self.zip(other, Binary::Less)
    }

    /// tanh(x), elementwise.
    pub fn tanh(&self) -> Result<Tensor> {
        self.map(Unary::Tanh)
    }

    /// max(x, 0), elementwise.
    pub fn relu(&self) -> Result<Tensor> {
        self.map(Unary::Relu)
    }

    /// 1/(1 + e^(−x)), elementwise.
    pub fn sigmoid(&self) -> Result<Tensor> {
        self.map(Unary::Sigmoid)
    }

    /// eˣ, elementwise.
    pub fn exp(&self) -> Result<Tensor> {
        self.map(Unary::Exp)
    }

    /// The natural logarithm, elementwise (NaN for negative values, −∞ at 0).
    pub fn log(&self) -> Result<Tensor> {
        self.map(Unary::Log)
    }

    /// −x, elementwise.
    pub fn neg(&self) -> Result<Tensor> {
        self.map(Unary::Neg)
    }

    /// α·x
    pub fn scale(&self, alpha: f32) -> Result<Tensor> {
        self.map(Unary::Scale(alpha))
    }

    /// GELU, x·Φ(x) elementwise (PyTorch's default `nn.GELU()`, the erf form; see
    /// [`Unary::Gelu`]).
    pub fn gelu(&self) -> Result<Tensor> {
        self.map(Unary::Gelu)
    }

    /// SiLU, x·σ(x) elementwise (PyTorch's `nn.SiLU`).
    pub fn silu(&self) -> Result<Tensor> {
        self.map(Unary::Silu)
    }

    /// √x, elementwise (NaN for negative values).
    pub fn sqrt(&self) -> Result<Tensor> {
        self.map(Unary::Sqrt)
    }

    /// |x|, elementwise.
    pub fn abs(&self) -> Result<Tensor> {
        self.map(Unary::Abs)
    }

    /// xᵖ elementwise for a constant p, as PyTorch's `x ** p` (negative x for an integer p,
    /// NaN for a non-integer one; see [`Unary::Pow`]); [`Error::InvalidArgument`] if p is
    /// not finite.
    pub fn pow(&self, p: f32) -> Result<Tensor> {
        self.map(Unary::Pow(p))
    }

    /// min(max(x, min), max) elementwise, as `torch.clamp`; [`Error::InvalidArgument`]
    /// naming the bounds if min > max or either is NaN.
    pub fn clamp(&self, min: f32, max: f32) -> Result<Tensor> {
        self.map(Unary::Clamp { min, max })
    }

    /// `self + other`, elementwise, broadcasting the two shapes as numpy does (a dimension of
    /// 1, or a missing leading one, stretches to the other's size; ranks up to 4); the result has
    /// the broadcast shape, and [`Error::ShapeMismatch`] says where the shapes cannot broadcast.
    pub fn add(&self, other: &Tensor) -> Result<Tensor> {
        self.zip(other, Binary::Add)
    }

    /// `self − other`, elementwise with broadcasting, as [`Tensor::add`].
    pub fn sub(&self, other: &Tensor) -> Result<Tensor> {
        self.zip(other, Binary::Sub)
    }

    /// `self · other`, elementwise with broadcasting, as [`Tensor::add`].
    pub fn mul(&self, other: &Tensor) -> Result<Tensor> {
        self.zip(other, Binary::Mul)
    }

    /// `self / other`, elementwise with broadcasting, as [`Tensor::add`].
    pub fn div(&self, other: &Tensor) -> Result<Tensor> {
        self.zip(other, Binary::Div)
    }

    /// The gradient through tanh, from its output: `self` is y = tanh(x), `grad` is dL/dy.
    pub fn tanh_backward(&self, grad: &Tensor) -> Result<Tensor> {
        self.zip(grad, Binary::TanhGrad)
    }

    /// The gradient through relu: `self` is its input x or its output, `grad` is dL/dy.
    pub fn relu_backward(&self, grad: &Tensor) -> Result<Tensor> {
        self.zip(grad, Binary::ReluGrad)
    }

    /// The gradient through sigmoid, from its output: `self` is y = sigmoid(x).
    pub fn sigmoid_backward(&self, grad: &Tensor) -> Result<Tensor> {
        self.zip(grad, Binary::SigmoidGrad)
    }

    /// The gradient through GELU, from its input: `self` is x, `grad` is dL/dy.
    pub fn gelu_backward(&self, grad: &Tensor) -> Result<Tensor> {
        self.zip(grad, Binary::GeluGrad)
    }

    /// The gradient through SiLU, from its input: `self` is x, `grad` is dL/dy.
    pub fn silu_backward(&self, grad: &Tensor) -> Result<Tensor> {
        self.zip(grad, Binary::SiluGrad)
    }

    /// The gradient through √, from its output: `self` is y = √x, `grad` is dL/dy.
    pub fn sqrt_backward(&self, grad: &Tensor) -> Result<Tensor> {
        self.zip(grad, Binary::SqrtGrad)
    }

    /// The gradient through |x|, from its input: `self` is x; 0 where x = 0.
    pub fn abs_backward(&self, grad: &Tensor) -> Result<Tensor> {
        self.zip(grad, Binary::AbsGrad)
    }

    /// The gradient through xᵖ, from its input: `self` is x, `grad` is dL/dy.
    pub fn pow_backward(&self, p: f32, grad: &Tensor) -> Result<Tensor> {
        self.zip(grad, Binary::PowGrad(p))
    }

    /// The gradient through clamp(x, min, max), from its input: `self` is x; `grad` passes
    /// where min ≤ x ≤ max.
    pub fn clamp_backward(&self, min: f32, max: f32, grad: &Tensor) -> Result<Tensor> {
        self.zip(grad, Binary::ClampGrad { min, max })
    }
}
