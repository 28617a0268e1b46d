//! The elementwise rules (`kernels::elementwise`): `Unary`, `Binary` and `Select`.

use crate::error::Result;
use crate::kernels::elementwise::{
    binary_dispatch, select_dispatch, select_shape, unary_dispatch, Binary, Unary,
};
use crate::kernels::{broadcast_shapes, check_rank, plan_broadcast};

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
    /// [`crate::Error::InvalidArgument`] if p is not finite.
    pub fn pow(&mut self, x: Var, p: f32) -> Result<Var> {
        self.map(x, Unary::Pow(p))
    }

    /// min(max(x, min), max) elementwise, as `torch.clamp` (gradient 1 where
    /// min ≤ x ≤ max, else 0); [`crate::Error::InvalidArgument`]
    /// naming the bounds if min > max or either is NaN.
    pub fn clamp(&mut self, x: Var, min: f32, max: f32) -> Result<Var> {
        self.map(x, Unary::Clamp { min, max })
    }

    /// a ∘ b elementwise with numpy broadcasting (or a derivative op, same shapes);
    /// [`Binary::validate`]'s error for bad constants. Operands of more than four axes
    /// broadcast too when their axes coalesce into four ([`crate::kernels::coalesce_broadcast`]): the op
    /// then runs on free reshapes of them.
    pub fn zip(&mut self, a: Var, b: Var, op: Binary) -> Result<Var> {
        op.validate()?;
        self.push_broadcasting("zip", Op::Binary(op), &[a, b])
    }

    /// Where `condition` is nonzero `on_true`, else `on_false`, elementwise, the three
    /// broadcast together (numpy rules; past four axes as [`Graph::zip`]): PyTorch's
    /// `torch.where(condition, on_true, on_false)`, the condition an f32 mask such as
    /// [`Graph::greater`] gives. The gradient flows to `on_true` where the condition
    /// holds and to `on_false` elsewhere (summed down where they were broadcast); the
    /// condition gets none.
    pub fn select(&mut self, condition: Var, on_true: Var, on_false: Var) -> Result<Var> {
        self.push_broadcasting("select", Op::Select, &[condition, on_true, on_false])
    }

    /// 1 where a > b, else 0, broadcasting: a mask for [`Graph::select`] (no gradient).
    pub fn greater(&mut self, a: Var, b: Var) -> Result<Var> {
        self.zip(a, b, Binary::Greater)
    }

    /// 1 where a < b, else 0, broadcasting (no gradient).
    pub fn less(&mut self, a: Var, b: Var) -> Result<Var> {
        self.zip(a, b, Binary::Less)
    }

    /// 1 where a = b, else 0, broadcasting (no gradient).
    pub fn equal(&mut self, a: Var, b: Var) -> Result<Var> {
        self.zip(a, b, Binary::Equal)
    }

    /// Adds an elementwise `op` over `operands` that broadcast together. Within four axes
    /// the kernel broadcasts them itself; past four, their axes are coalesced
    /// ([`crate::kernels::coalesce_broadcast`]) and the op runs on free reshapes, or the shapes are refused
    /// naming them.
    fn push_broadcasting(&mut self, name: &'static str, op: Op, operands: &[Var]) -> Result<Var> {
        self.check_each(name, operands)?;
        let shapes: Vec<Vec<usize>> = operands.iter().map(|&v| self.shape(v).to_vec()).collect();
        let borrowed: Vec<&[usize]> = shapes.iter().map(Vec::as_slice).collect();
        let plan = plan_broadcast(name, &borrowed)?;
        let Some(coalesced) = plan.coalesced else {
            return self.push_one(op, operands);
        };
        let reshaped = operands
            .iter()
            .zip(&coalesced.operands)
            .map(|(&v, shape)| self.reshape(v, shape))
            .collect::<Result<Vec<_>>>()?;
        let y = self.push_one(op, &reshaped)?;
        self.reshape(y, &plan.out)
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
        _ if binary.broadcasts() => f32_output(broadcast_shapes(op, a, b)?),
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
        Binary::Equal | Binary::Greater | Binary::Less => return Ok(vec![None, None]),
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

pub(super) fn infer_select(op: &'static str, inputs: &[(&[usize], DType)]) -> Result<Vec<Shaped>> {
    check_inputs(op, inputs, &[DType::F32, DType::F32, DType::F32])?;
    let shape = select_shape(op, inputs[0].0, inputs[1].0, inputs[2].0)?;
    check_rank(op, &shape)?;
    f32_output(shape)
}

/// dy goes to `on_true` where the condition holds and to `on_false` elsewhere: two selects
/// of dy against 0, each summed down to its operand's shape.
pub(super) fn backward_select(g: &mut Graph, node: NodeGradient) -> Result<Vec<Option<Var>>> {
    let (condition, on_true, on_false, dy) =
        (node.inputs[0], node.inputs[1], node.inputs[2], node.dy);
    let on_true_shape = g.shape(on_true).to_vec();
    let on_false_shape = g.shape(on_false).to_vec();
    let zero = g.constant(vec![0.0], &[])?;
    let d_on_true = g.select(condition, dy, zero)?;
    let d_on_false = g.select(condition, zero, dy)?;
    Ok(vec![
        None,
        Some(g.sum_to(d_on_true, &on_true_shape)?),
        Some(g.sum_to(d_on_false, &on_false_shape)?),
    ])
}

pub(super) fn record_select(inputs: &[Operand], outputs: &[Operand]) -> Result<Recorded> {
    let [condition, on_true, on_false] = [0, 1, 2].map(|k| inputs[k].f32());
    Ok(select_dispatch(condition, on_true, on_false, outputs[0].f32())?.into())
}
