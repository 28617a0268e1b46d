//! The rules of `Gather` and its gradient `GatherGrad`, a deterministic scatter-add
//! (`kernels::gather`).

use crate::error::Result;
use crate::kernels::gather::{
    gather_backward_dispatch, gather_dispatch, gather_shape, GroupedPositions,
};

use super::super::{mismatch, DType, Graph, IndexBound, Var};
use super::{check_inputs, f32_output, NodeGradient, Op, Operand, Recorded, Shaped};

// The builders: the public `Graph` calls that add this family's ops.
impl Graph {
    /// Looks up the rows of `table` [vocab, dim] for u32 `ids` of any shape: ids.shape +
    /// \[dim\] (the gather on axis 0). Fed ids are checked against the vocabulary before they
    /// reach the GPU.
    pub fn embedding(&mut self, table: Var, ids: Var) -> Result<Var> {
        self.check_each("embedding", &[table, ids])?;
        if self.shape(table).len() != 2 {
            return Err(mismatch(
                "embedding",
                self.shape(table),
                self.shape(ids),
                "the table must be [vocab, dim]".into(),
            ));
        }
        self.gather(table, 0, ids)
    }

    /// ONNX's Gather: the entries of `axis` of `x` (negative counts from the end) picked by
    /// u32 `indices` of any shape, giving x.shape[..axis] + indices.shape +
    /// x.shape[axis + 1..]. Fed indices are checked against the axis length before they
    /// reach the GPU. The gradient sums into each entry the gradients of the positions that
    /// picked it, in a fixed order (the same bits every run).
    pub fn gather(&mut self, x: Var, axis: isize, indices: Var) -> Result<Var> {
        self.check_each("gather", &[x, indices])?;
        let axis = crate::tensor::resolve_axis("gather", axis, self.shape(x).len())?;
        let out = self.push_one(Op::Gather { axis }, &[x, indices])?;
        let axis_len = self.shape(x)[axis] as u32;
        // Indices that serve several lookups must suit the shortest axis, and no gather
        // admits an ignore value.
        let bound = match self.values[indices.index].index_bound {
            Some(earlier) => earlier.bound.min(axis_len),
            None => axis_len,
        };
        self.values[indices.index].index_bound = Some(IndexBound {
            bound,
            ignore: None,
        });
        Ok(out)
    }
}

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
