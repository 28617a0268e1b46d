//! The rules of `Gather` and its gradient `GatherGrad`, a deterministic scatter-add
//! (`kernels::gather`).

use crate::error::Result;
use crate::kernels::gather::{
    gather_backward_dispatch, gather_dispatch, gather_shape, GroupedPositions,
};

use super::super::{mismatch, DType, Graph, Var};
use super::{check_inputs, f32_output, NodeGradient, Op, Operand, Recorded, Shaped};

pub(super) fn infer_gather(
    op: &'static str,
    axis: usize,
    inputs: &[(&[usize], DType)],
) -> Result<Vec<Shaped>> {
    check_inputs(op, inputs, &[DType::F32, DType::U32])?;
    let (data, ids) = (inputs[0].0, inputs[1].0);
    if axis >= data.len() {
        return Err(mismatch(
            op,
            data,
            ids,
            format!("axis {axis} is outside the data's shape"),
        ));
    }
    f32_output(gather_shape(data, axis, ids))
}

/// `GatherGrad` of dy by the same ids; the ids have no gradient.
pub(super) fn backward_gather(
    g: &mut Graph,
    node: NodeGradient,
    axis: usize,
) -> Result<Vec<Option<Var>>> {
    let (data, ids) = (node.inputs[0], node.inputs[1]);
    let grad = Op::GatherGrad {
        axis,
        axis_len: g.shape(data)[axis],
    };
    Ok(vec![Some(g.push_one(grad, &[node.dy, ids])?), None])
}

pub(super) fn record_gather(
    axis: usize,
    inputs: &[Operand],
    outputs: &[Operand],
) -> Result<Recorded> {
    let (data, ids, y) = (inputs[0].f32(), inputs[1].u32(), outputs[0].f32());
    Ok(gather_dispatch(data, ids, y, axis, None)?.into())
}

pub(super) fn infer_gather_grad(
    op: &'static str,
    axis: usize,
    axis_len: usize,
    inputs: &[(&[usize], DType)],
) -> Result<Vec<Shaped>> {
    check_inputs(op, inputs, &[DType::F32, DType::U32])?;
    let (dy, ids) = (inputs[0].0, inputs[1].0);
    let gathered = axis..axis + ids.len();
    if dy.len() < gathered.end || dy[gathered.clone()] != *ids {
        return Err(mismatch(
            op,
            dy,
            ids,
            format!(
                "the gradient must be data.shape[..{axis}] + ids.shape + \
                 data.shape[{axis} + 1..]"
            ),
        ));
    }
    f32_output([&dy[..axis], &[axis_len], &dy[gathered.end..]].concat())
}

/// The scatter-add reads the positions grouped by id, which the plan regroups whenever the
/// ids (input 1) are fed.
pub(super) fn record_gather_grad(
    axis: usize,
    axis_len: usize,
    inputs: &[Operand],
    outputs: &[Operand],
) -> Result<Recorded> {
    let (dy, ids, dx) = (inputs[0].f32(), inputs[1].u32(), outputs[0].f32());
    let groups = GroupedPositions::with_capacity(dx.gpu(), ids.numel(), axis_len)?;
    if ids.numel() == 0 {
        // A run need not feed no ids, so group them now (every offset 0, so dx = 0): the
        // grouping's buffer is this op's alone, nothing overwrites it.
        groups.update(&[])?;
    }
    let dispatch = gather_backward_dispatch(dy, &groups, dx, axis, None)?;
    Ok(Recorded {
        dispatches: vec![dispatch],
        scratch: Vec::new(),
        groupings: vec![(1, groups)],
    })
}
