//! The elementwise rules (`kernels::elementwise`): `Unary` and `Binary`.

use crate::error::{Error, Result};
use crate::kernels::elementwise::{binary_dispatch, unary_dispatch, Binary, Unary};
use crate::kernels::{broadcast_shape_any_rank, broadcast_shapes, coalesce_broadcast, MAX_RANK};

use super::super::{mismatch, DType, Graph, Var};
use super::{check_inputs, f32_output, no_gradient, NodeGradient, Op, Operand, Recorded, Shaped};

// The builders: the public `Graph` calls that add this family's ops.
impl Graph {
    /// y = f(x) elementwise; [`Unary::validate`]'s error for bad constants (a non-finite
    /// exponent, clamp bounds out of order).
    pub fn map(&mut self, x: Var, f: Unary) -> Result<Var> {
        f.validate()?;
        self.push_one(Op::Unary(f), &[x])
    }

    /// tanh(x) elementwise.
    pub fn tanh(&mut self, x: Var) -> Result<Var> {
        self.map(x, Unary::Tanh)
    }

    /// max(x, 0) elementwise.
    pub fn relu(&mut self, x: Var) -> Result<Var> {
        self.map(x, Unary::Relu)
    }

    /// 1/(1 + e^(−x)) elementwise.
    pub fn sigmoid(&mut self, x: Var) -> Result<Var> {
        self.map(x, Unary::Sigmoid)
    }

    /// α·x elementwise.
    pub fn scale(&mut self, x: Var, alpha: f32) -> Result<Var> {
        self.map(x, Unary::Scale(alpha))
    }

    /// GELU, x·Φ(x) elementwise (PyTorch's default `nn.GELU()`, the erf form).
    pub fn gelu(&mut self, x: Var) -> Result<Var> {
        self.map(x, Unary::Gelu)
    }

    /// SiLU, x·σ(x) elementwise.
    pub fn silu(&mut self, x: Var) -> Result<Var> {
        self.map(x, Unary::Silu)
    }

    /// √x elementwise.
    pub fn sqrt(&mut self, x: Var) -> Result<Var> {
        self.map(x, Unary::Sqrt)
    }

    /// |x| elementwise (gradient 0 at 0).
    pub fn abs(&mut self, x: Var) -> Result<Var> {
        self.map(x, Unary::Abs)
    }

    /// xᵖ elementwise for a constant p, as PyTorch's `x ** p` ([`Unary::Pow`]);
    /// [`Error::InvalidArgument`] if p is not finite.
    pub fn pow(&mut self, x: Var, p: f32) -> Result<Var> {
        self.map(x, Unary::Pow(p))
    }

    /// min(max(x, min), max) elementwise, as `torch.clamp` (gradient 1 where
    /// min ≤ x ≤ max, else 0); [`Error::InvalidArgument`]
    /// naming the bounds if min > max or either is NaN.
    pub fn clamp(&mut self, x: Var, min: f32, max: f32) -> Result<Var> {
        self.map(x, Unary::Clamp { min, max })
    }

    /// a ∘ b elementwise with numpy broadcasting (or a derivative op, same shapes);
    /// [`Binary::validate`]'s error for bad constants. Operands of more than four axes
    /// broadcast too when their axes coalesce into four ([`coalesce_broadcast`]): the op
    /// then runs on free reshapes of them.
    pub fn zip(&mut self, a: Var, b: Var, op: Binary) -> Result<Var> {
        op.validate()?;
        self.check_each("zip", &[a, b])?;
        let (a_shape, b_shape) = (self.shape(a).to_vec(), self.shape(b).to_vec());
        if a_shape.len().max(b_shape.len()) > MAX_RANK {
            let out_shape = broadcast_shape_any_rank(&a_shape, &b_shape).map_err(|axis| {
                mismatch(
                    "zip",
                    &a_shape,
                    &b_shape,
                    format!("axis {axis} differs and neither is 1, so they do not broadcast (numpy rules)"),
                )
            })?;
            let Some((a_rows, b_rows, _)) = coalesce_broadcast(&a_shape, &b_shape) else {
                return Err(Error::invalid(
                    "zip",
                    format!(
                        "{a_shape:?} and {b_shape:?} broadcast over more than {MAX_RANK} axes \
                         that cannot merge (neighbouring axes merge when each operand has \
                         both or broadcasts both)"
                    ),
                ));
            };
            let a = self.reshape(a, &a_rows)?;
            let b = self.reshape(b, &b_rows)?;
            let y = self.push_one(Op::Binary(op), &[a, b])?;
            return self.reshape(y, &out_shape);
        }
        self.push_one(Op::Binary(op), &[a, b])
    }

    /// a + b elementwise with numpy broadcasting; the result has the broadcast shape.
    pub fn add(&mut self, a: Var, b: Var) -> Result<Var> {
        self.zip(a, b, Binary::Add)
    }

    /// a − b elementwise with numpy broadcasting.
    pub fn sub(&mut self, a: Var, b: Var) -> Result<Var> {
        self.zip(a, b, Binary::Sub)
    }

    /// a · b elementwise with numpy broadcasting.
    pub fn mul(&mut self, a: Var, b: Var) -> Result<Var> {
        self.zip(a, b, Binary::Mul)
    }

    /// a / b elementwise with numpy broadcasting.
    pub fn div(&mut self, a: Var, b: Var) -> Result<Var> {
        self.zip(a, b, Binary::Div)
    }
}

pub(super) fn infer_unary(op: &'static str, inputs: &[(&[usize], DType)]) -> Result<Vec<Shaped>> {
    check_inputs(op, inputs, &[DType::F32])?;
    f32_output(inputs[0].0.to_vec())
}

pub(super) fn backward_unary(
    g: &mut Graph,
    node: NodeGradient,
    f: Unary,
) -> Result<Vec<Option<Var>>> {
    let (x, y, dy) = (node.inputs[0], node.outputs[0], node.dy);
    Ok(vec![Some(match f {
        Unary::Tanh => g.zip(y, dy, Binary::TanhGrad)?,
        // From the output (y > 0 exactly where x > 0), as a ReLU fused into a matmul must:
        // its input is never stored.
        Unary::Relu => g.zip(y, dy, Binary::ReluGrad)?,
        Unary::Sigmoid => g.zip(y, dy, Binary::SigmoidGrad)?,
        Unary::Exp => g.mul(dy, y)?,
        Unary::Log => g.div(dy, x)?,
        Unary::Neg => g.map(dy, Unary::Neg)?,
        Unary::Scale(alpha) => g.scale(dy, alpha)?,
        // From the input: neither x·Φ(x) nor x·σ(x) gives x back.
        Unary::Gelu => g.zip(x, dy, Binary::GeluGrad)?,
        Unary::Silu => g.zip(x, dy, Binary::SiluGrad)?,
        // From the output: 1/(2√x) is 1/(2y), no square root again.
        Unary::Sqrt => g.zip(y, dy, Binary::SqrtGrad)?,
        // From the input: |x| loses the sign the gradient needs.
        Unary::Abs => g.zip(x, dy, Binary::AbsGrad)?,
        // From the input: p·x^(p−1) as y·p/x would divide by 0 at x = 0.
        Unary::Pow(p) => g.zip(x, dy, Binary::PowGrad(p))?,
        // From the input: the output cannot tell x = max from x > max.
        Unary::Clamp { min, max } => g.zip(x, dy, Binary::ClampGrad { min, max })?,
    })])
}

pub(super) fn record_unary(f: Unary, inputs: &[Operand], outputs: &[Operand]) -> Result<Recorded> {
    Ok(unary_dispatch(inputs[0].f32(), outputs[0].f32(), f)?.into())
}

pub(super) fn infer_binary(
    op: &'static str,
    binary: Binary,
    inputs: &[(&[usize], DType)],
) -> Result<Vec<Shaped>> {
    check_inputs(op, inputs, &[DType::F32, DType::F32])?;
    let (a, b) = (inputs[0].0, inputs[1].0);
    match binary {
        Binary::Add | Binary::Sub | Binary::Mul | Binary::Div => {
            f32_output(broadcast_shapes(op, a, b)?)
        }
        _ if a == b => f32_output(a.to_vec()),
        _ => Err(mismatch(
            op,
            a,
            b,
            "a derivative takes two values of one shape".into(),
        )),
    }
}

/// The gradient of each operand, summed down to its shape where it was broadcast.
pub(super) fn backward_binary(
    g: &mut Graph,
    node: NodeGradient,
    binary: Binary,
) -> Result<Vec<Option<Var>>> {
    let (a, b, y, dy) = (node.inputs[0], node.inputs[1], node.outputs[0], node.dy);
    let a_shape = g.shape(a).to_vec();
    let b_shape = g.shape(b).to_vec();
    let (da, db) = match binary {
        Binary::Add => (dy, dy),
        Binary::Sub => (dy, g.map(dy, Unary::Neg)?),
        Binary::Mul => (g.mul(dy, b)?, g.mul(dy, a)?),
        Binary::Div => {
            // d(a/b)/db = −a/b² = −(a/b)/b
            let dy_y = g.mul(dy, y)?;
            let dy_y_b = g.div(dy_y, b)?;
            (g.div(dy, b)?, g.map(dy_y_b, Unary::Neg)?)
        }
        Binary::TanhGrad
        | Binary::ReluGrad
        | Binary::SigmoidGrad
        | Binary::GeluGrad
        | Binary::SiluGrad
        | Binary::SqrtGrad
        | Binary::AbsGrad
        | Binary::PowGrad(_)
        | Binary::ClampGrad { .. } => {
            return Err(no_gradient(
                "a derivative op (second derivatives are not supported)",
            ))
        }
        // A mask: piecewise constant, its gradient is 0 almost everywhere.
        Binary::Equal => return Ok(vec![None, None]),
    };
    Ok(vec![
        Some(g.sum_to(da, &a_shape)?),
        Some(g.sum_to(db, &b_shape)?),
    ])
}

pub(super) fn record_binary(
    binary: Binary,
    inputs: &[Operand],
    outputs: &[Operand],
) -> Result<Recorded> {
    let (a, b, y) = (inputs[0].f32(), inputs[1].f32(), outputs[0].f32());
    Ok(binary_dispatch(a, b, y, binary)?.into())
}
