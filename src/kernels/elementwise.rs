//! Elementwise maps (`shaders/elementwise.wgsl`): unary functions, binary arithmetic with
//! numpy broadcasting, and the activation derivatives.

use crate::error::{Error, Result};
use crate::gpu::{Access, Dispatch, KernelSpec, ShaderSource};
use crate::kernels::{broadcast_shapes, broadcast_strides, pad_to_rank4, WORKGROUP_1D};
use crate::tensor::Tensor;

/// The elementwise module, `shaders/elementwise.wgsl`: every [`Unary`] and [`Binary`] map.
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
}

impl Unary {
    /// The shader's `OP` code and `alpha`.
    fn code(self) -> (u32, f32) {
        match self {
            Unary::Tanh => (0, 0.0),
            Unary::Relu => (1, 0.0),
            Unary::Sigmoid => (2, 0.0),
            Unary::Exp => (3, 0.0),
            Unary::Log => (4, 0.0),
            Unary::Neg => (5, 0.0),
            Unary::Scale(alpha) => (6, alpha),
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
        }
    }
}

/// out = a ∘ b, broadcasting a and b against each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
}

impl Binary {
    /// Every binary op, in the order of the shader's `OP` codes.
    pub const ALL: [Binary; 7] = [
        Binary::Add,
        Binary::Sub,
        Binary::Mul,
        Binary::Div,
        Binary::TanhGrad,
        Binary::ReluGrad,
        Binary::SigmoidGrad,
    ];

    fn code(self) -> u32 {
        self as u32
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
        }
    }

    /// Whether the op broadcasts; the derivatives need both operands of one shape.
    fn broadcasts(self) -> bool {
        matches!(self, Binary::Add | Binary::Sub | Binary::Mul | Binary::Div)
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
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct UnaryParams {
    len: u32,
    alpha: f32,
    pad: [u32; 2],
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct BinaryParams {
    len: u32,
    broadcast: u32,
    pad: [u32; 2],
    out_shape: [u32; 4],
    a_strides: [u32; 4],
    b_strides: [u32; 4],
}

/// Records y = op(x) into `y` (both of `len` elements).
pub fn unary_dispatch(x: &Tensor, y: &Tensor, op: Unary) -> Result<Dispatch> {
    let gpu = x.gpu();
    let (code, alpha) = op.code();
    let len = x.numel() as u32;
    let params = UnaryParams {
        len,
        alpha,
        pad: [0; 2],
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

/// Records out = a ∘ b into `out`, whose shape is the broadcast of theirs.
pub fn binary_dispatch(a: &Tensor, b: &Tensor, out: &Tensor, op: Binary) -> Result<Dispatch> {
    let gpu = a.gpu();
    let len = out.numel() as u32;
    let direct = a.shape() == out.shape() && b.shape() == out.shape();
    let params = BinaryParams {
        len,
        broadcast: u32::from(!direct),
        pad: [0; 2],
        out_shape: pad_to_rank4(out.shape(), 1),
        a_strides: broadcast_strides(a.shape(), out.shape()),
        b_strides: broadcast_strides(b.shape(), out.shape()),
    };
    let vec4 = direct && gpu.is_cpu_like() && len.is_multiple_of(4);
    gpu.dispatch(
        &binary_spec(op, vec4),
        &[a.buffer(), b.buffer(), out.buffer()],
        &params,
        gpu.grid((if vec4 { len / 4 } else { len }).div_ceil(WORKGROUP_1D)),
    )
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

fn binary_spec(op: Binary, vec4: bool) -> KernelSpec {
    KernelSpec {
        source: &SHADER,
        entry: if vec4 { "binary_vec4" } else { "binary" },
        bindings: &[
            Access::Read,
            Access::Read,
            Access::ReadWrite,
            Access::Uniform,
        ],
        constants: vec![("OP", f64::from(op.code()))],
    }
}

/// Every kernel variant [`unary_dispatch`] and [`binary_dispatch`] can build.
pub fn kernel_specs() -> Vec<KernelSpec> {
    // A scale's α is a parameter, not a constant: any one stands for all.
    let unary = [
        Unary::Tanh,
        Unary::Relu,
        Unary::Sigmoid,
        Unary::Exp,
        Unary::Log,
        Unary::Neg,
        Unary::Scale(1.0),
    ];
    let mut specs = Vec::new();
    for vec4 in [false, true] {
        specs.extend(unary.iter().map(|op| unary_spec(op.code().0, vec4)));
        specs.extend(Binary::ALL.iter().map(|&op| binary_spec(op, vec4)));
    }
    specs
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
    /// y = op(x) elementwise.
    pub fn map(&self, op: Unary) -> Result<Tensor> {
        let y = Tensor::uninit(self.gpu(), self.shape())?;
        if self.numel() > 0 {
            let dispatch = unary_dispatch(self, &y, op)?;
            self.gpu().submit(&[], &[dispatch])?;
        }
        Ok(y)
    }

    /// out = self ∘ other elementwise, broadcasting as numpy does (ranks up to 4).
    pub fn zip(&self, other: &Tensor, op: Binary) -> Result<Tensor> {
        self.same_device(op.name(), other)?;
        let out_shape = if op.broadcasts() {
            broadcast_shapes(op.name(), self.shape(), other.shape())?
        } else if self.shape() == other.shape() {
            self.shape().to_vec()
        } else {
            return Err(Error::ShapeMismatch {
                op: op.name(),
                lhs: self.shape().to_vec(),
                rhs: other.shape().to_vec(),
                expected: "the forward value and the gradient must have the same shape".into(),
            });
        };
        let out = Tensor::uninit(self.gpu(), &out_shape)?;
        if out.numel() > 0 {
            let dispatch = binary_dispatch(self, other, &out, op)?;
            self.gpu().submit(&[], &[dispatch])?;
        }
        Ok(out)
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
}
