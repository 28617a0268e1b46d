//! The reductions' rules (`kernels::reduce`): `Reduce` over one axis, and `SumTo`, the sum
//! down to a shape that undoes a broadcast.

use crate::error::{Error, Result};
use crate::kernels::elementwise::Binary;
use crate::kernels::reduce::{reduce_dispatch, split_at_axis, Reduce, ReduceVariant};
use crate::kernels::{broadcast_shapes, check_rank};
use crate::tensor::{numel, Tensor};

use super::super::{mismatch, DType, Graph, Var};
use super::{check_inputs, f32_output, NodeGradient, Op, Operand, Recorded, Shaped};

// The builders: the public `Graph` calls that add this family's ops.
impl Graph {
    /// Sum, max or mean over `axis` (negative counts from the end).
    pub fn reduce(&mut self, x: Var, op: Reduce, axis: isize, keep_dim: bool) -> Result<Var> {
        self.check("reduce", x)?;
        let axis = crate::tensor::resolve_axis("reduce", axis, self.shape(x).len())?;
        self.push_one(Op::Reduce { op, axis, keep_dim }, &[x])
    }

    /// The sum over `axis` (negative counts from the end); `keep_dim` keeps it as size 1.
    pub fn sum(&mut self, x: Var, axis: isize, keep_dim: bool) -> Result<Var> {
        self.reduce(x, Reduce::Sum, axis, keep_dim)
    }

    /// The mean over `axis` (negative counts from the end); `keep_dim` keeps it as size 1.
    pub fn mean(&mut self, x: Var, axis: isize, keep_dim: bool) -> Result<Var> {
        self.reduce(x, Reduce::Mean, axis, keep_dim)
    }

    /// The sum of every element of `x`: a single value of shape `[]`.
    pub fn sum_all(&mut self, x: Var) -> Result<Var> {
        self.check("sum_all", x)?;
        let flat = self.flatten(x)?;
        self.sum(flat, 0, false)
    }

    /// The mean of every element of `x`: a single value of shape `[]`.
    pub fn mean_all(&mut self, x: Var) -> Result<Var> {
        self.check("mean_all", x)?;
        let flat = self.flatten(x)?;
        self.mean(flat, 0, false)
    }

    /// The position of the largest value along `axis` (negative counts from the end; the
    /// first of equal ones, as PyTorch's `argmax(dim)`): u32 values of `x`'s shape without
    /// `axis`, which [`crate::graph::Plan::read_indices`] reads. A position has no
    /// gradient.
    pub fn argmax(&mut self, x: Var, axis: isize) -> Result<Var> {
        self.check("argmax", x)?;
        let shape = self.shape(x).to_vec();
        let axis = crate::tensor::resolve_axis("argmax", axis, shape.len())?;
        // Moved to the last axis, the rows are what max-over-time reads: [rows, 1, n].
        let (moved, _) = self.move_axis_to_end(x, axis)?;
        let kept: Vec<usize> = (0..shape.len())
            .filter(|&i| i != axis)
            .map(|i| shape[i])
            .collect();
        let rows = kept.iter().product::<usize>();
        let windows = self.reshape(moved, &[rows, 1, shape[axis]])?;
        let (_, positions) = self.max_over_time_with_positions(windows)?;
        self.reshape(positions, &kept)
    }

    /// Sums `x` down to `shape`, the inverse of broadcasting it from `shape`.
    pub fn sum_to(&mut self, x: Var, shape: &[usize]) -> Result<Var> {
        self.check("sum_to", x)?;
        if self.shape(x) == shape {
            return Ok(x);
        }
        // Only axes of size 1 differ (`[1]` to `[]`, a broadcast of a rank-0 value):
        // nothing to sum, the same values renamed.
        if numel(shape)? == numel(self.shape(x))? {
            infer_sum_to("sum_to", shape, &[(self.shape(x), self.dtype(x))])?;
            return self.reshape(x, shape);
        }
        self.push_one(
            Op::SumTo {
                shape: shape.to_vec(),
            },
            &[x],
        )
    }
}

pub(super) fn infer_reduce(
    op: &'static str,
    reduce: Reduce,
    axis: usize,
    keep_dim: bool,
    inputs: &[(&[usize], DType)],
) -> Result<Vec<Shaped>> {
    check_inputs(op, inputs, &[DType::F32])?;
    let x = inputs[0].0;
    if reduce == Reduce::Mean && x[axis] == 0 {
        return Err(Error::ZeroSized {
            op,
            shape: x.to_vec(),
            why: "the mean over an empty axis is undefined",
        });
    }
    let mut shape = x.to_vec();
    if keep_dim {
        shape[axis] = 1;
    } else {
        shape.remove(axis);
    }
    f32_output(shape)
}

/// dy spread back over the reduced axis (and divided by its length for a mean); for a
/// max, to where the maximum was taken, shared equally among ties (as PyTorch's `amax`).
pub(super) fn backward_reduce(
    g: &mut Graph,
    node: NodeGradient,
    reduce: Reduce,
    axis: usize,
) -> Result<Vec<Option<Var>>> {
    let x_shape = g.shape(node.inputs[0]).to_vec();
    let mut kept = x_shape.clone();
    kept[axis] = 1;
    let dy_kept = g.reshape(node.dy, &kept)?;
    let spread = g.broadcast_to(dy_kept, &x_shape)?;
    Ok(vec![Some(match reduce {
        Reduce::Sum => spread,
        Reduce::Mean => g.scale(spread, 1.0 / x_shape[axis] as f32)?,
        Reduce::Max => {
            let y_kept = g.reshape(node.outputs[0], &kept)?;
            let y_spread = g.broadcast_to(y_kept, &x_shape)?;
            let hits = g.zip(node.inputs[0], y_spread, Binary::Equal)?;
            let ties = g.sum(hits, axis as isize, true)?;
            let share = g.div(dy_kept, ties)?;
            let share = g.broadcast_to(share, &x_shape)?;
            g.mul(hits, share)?
        }
    })])
}

pub(super) fn record_reduce(
    reduce: Reduce,
    axis: usize,
    inputs: &[Operand],
    outputs: &[Operand],
) -> Result<Recorded> {
    let (x, y) = (inputs[0].f32(), outputs[0].f32());
    let (_, n, inner) = split_at_axis(x.shape(), axis);
    Ok(reduce_dispatch(x, y, axis, reduce, ReduceVariant::choose(inner, n))?.into())
}

pub(super) fn infer_sum_to(
    op: &'static str,
    shape: &[usize],
    inputs: &[(&[usize], DType)],
) -> Result<Vec<Shaped>> {
    check_inputs(op, inputs, &[DType::F32])?;
    let x = inputs[0].0;
    if shape.len() > x.len() || broadcast_shapes(op, shape, x)? != x {
        return Err(mismatch(
            op,
            x,
            shape,
            "the target must broadcast to the value's shape".into(),
        ));
    }
    check_rank(op, x)?;
    f32_output(shape.to_vec())
}

/// dy broadcast back to the value's shape.
pub(super) fn backward_sum_to(g: &mut Graph, node: NodeGradient) -> Result<Vec<Option<Var>>> {
    let x_shape = g.shape(node.inputs[0]).to_vec();
    Ok(vec![Some(g.broadcast_to(node.dy, &x_shape)?)])
}

/// Sums x down to `shape`: one reduction per broadcast axis, each keeping its axis, the last
/// one writing into y (seen with the kept axes).
pub(super) fn record_sum_to(
    shape: &[usize],
    inputs: &[Operand],
    outputs: &[Operand],
) -> Result<Recorded> {
    let (x, y) = (inputs[0].f32(), outputs[0].f32());
    let rank = x.rank();
    let lead = rank - shape.len();
    let axes: Vec<usize> = (0..rank)
        .filter(|&i| x.shape()[i] != 1 && (i < lead || shape[i - lead] == 1))
        .collect();
    let mut recorded = Recorded::default();
    let mut current = x.clone();
    for (step, &axis) in axes.iter().enumerate() {
        let mut kept = current.shape().to_vec();
        kept[axis] = 1;
        let target = if step + 1 == axes.len() {
            y.reshape(&kept)?
        } else {
            let scratch = Tensor::uninit(x.gpu(), &kept)?;
            recorded.scratch.push(scratch.clone());
            scratch
        };
        let (_, n, inner) = split_at_axis(current.shape(), axis);
        recorded.dispatches.push(reduce_dispatch(
            &current,
            &target,
            axis,
            Reduce::Sum,
            ReduceVariant::choose(inner, n),
        )?);
        current = target;
    }
    Ok(recorded)
}
