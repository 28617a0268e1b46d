//! The rules of the ops that move values without computing (`kernels::copy`):
//! `BroadcastTo`, `Reshape` (no copy: an alias), `Permute`, `Slice` and its gradient
//! `SliceGrad`, `Concat`, `WriteAt` (a write in place: an alias that records a copy).

use crate::error::{Error, Result};
use crate::kernels::copy::{
    check_write_at, region_copy_dispatch, slice_backward_dispatch, strided_copy_dispatch,
    write_at_dispatch, CopyRegion,
};
use crate::kernels::{
    broadcast_shapes, broadcast_strides, check_rank, contiguous_strides, pad_to_rank4,
};
use crate::tensor::numel;

use super::super::{mismatch, DType, Graph, IndexBound, Source, Var};
use super::{check_inputs, f32_output, NodeGradient, Op, Operand, Recorded, Shaped};

// The builders: the public `Graph` calls that add this family's ops.
impl Graph {
    /// Repeats `x` along its size-1 axes to `shape` (numpy broadcasting).
    pub fn broadcast_to(&mut self, x: Var, shape: &[usize]) -> Result<Var> {
        self.check("broadcast_to", x)?;
        if self.shape(x) == shape {
            return Ok(x);
        }
        self.push_one(
            Op::BroadcastTo {
                shape: shape.to_vec(),
            },
            &[x],
        )
    }

    /// `x` with `axis` moved to the end (the others keep their order), for the kernels that
    /// work along the last axis; also the permutation used, which
    /// [`Graph::move_axis_back`] undoes. `x` itself when `axis` is already last.
    pub(crate) fn move_axis_to_end(&mut self, x: Var, axis: usize) -> Result<(Var, Vec<usize>)> {
        let rank = self.shape(x).len();
        let mut perm: Vec<usize> = (0..rank).filter(|&i| i != axis).collect();
        perm.push(axis);
        if axis + 1 == rank {
            return Ok((x, perm));
        }
        Ok((self.permute(x, &perm)?, perm))
    }

    /// Undoes [`Graph::move_axis_to_end`]'s permutation `perm` on `y`.
    pub(crate) fn move_axis_back(&mut self, y: Var, perm: &[usize]) -> Result<Var> {
        if perm
            .iter()
            .enumerate()
            .all(|(position, &axis)| position == axis)
        {
            return Ok(y);
        }
        let mut back = vec![0; perm.len()];
        for (position, &from) in perm.iter().enumerate() {
            back[from] = position;
        }
        self.permute(y, &back)
    }

    /// All of `x`'s elements in one axis, `[numel]` (no copy).
    pub(crate) fn flatten(&mut self, x: Var) -> Result<Var> {
        let count = self.shape(x).iter().product::<usize>();
        self.reshape(x, &[count])
    }

    /// The same values with another shape of as many elements (no copy).
    pub fn reshape(&mut self, x: Var, shape: &[usize]) -> Result<Var> {
        self.check("reshape", x)?;
        if self.shape(x) == shape {
            return Ok(x);
        }
        self.push_one(
            Op::Reshape {
                shape: shape.to_vec(),
            },
            &[x],
        )
    }

    /// Reorders the axes: axis i of the result is axis `perm[i]` of `x`.
    pub fn permute(&mut self, x: Var, perm: &[usize]) -> Result<Var> {
        self.push_one(
            Op::Permute {
                perm: perm.to_vec(),
            },
            &[x],
        )
    }

    /// Swaps the last two axes.
    pub fn transpose(&mut self, x: Var) -> Result<Var> {
        self.check("transpose", x)?;
        let rank = self.shape(x).len();
        if rank < 2 {
            return Err(Error::invalid(
                "transpose",
                format!("needs 2 axes, the value has shape {:?}", self.shape(x)),
            ));
        }
        let mut perm: Vec<usize> = (0..rank).collect();
        perm.swap(rank - 2, rank - 1);
        self.permute(x, &perm)
    }

    /// Entries `start..end` of `axis` (negative values count from the end, as in Python).
    pub fn slice(&mut self, x: Var, axis: isize, start: isize, end: isize) -> Result<Var> {
        self.check("slice", x)?;
        let (axis, start, end) =
            crate::kernels::copy::resolve_slice("slice", self.shape(x), axis, start, end)?;
        if start == 0 && end == self.shape(x)[axis] {
            return Ok(x);
        }
        self.push_one(Op::Slice { axis, start, end }, &[x])
    }

    /// The values one after another along `axis` (negative counts from the end).
    pub fn concat(&mut self, parts: &[Var], axis: isize) -> Result<Var> {
        self.check_each("concat", parts)?;
        let Some(&first) = parts.first() else {
            return Err(Error::invalid("concat", "needs at least one value"));
        };
        let axis = crate::tensor::resolve_axis("concat", axis, self.shape(first).len())?;
        self.push_one(Op::Concat { axis }, parts)
    }

    /// `cache` with entries p..p + m of `axis` replaced by `update` (m entries along that
    /// axis, the cache's sizes on the others), p being the u32 `position` \[1\] fed at each
    /// run (checked: p + m stays within the axis). A decoder's key/value cache: bound to a
    /// tensor ([`Graph::compile_with`]), the cache keeps its contents between runs, and each
    /// step writes its own position.
    ///
    /// The write happens in place, in the cache's storage, so the cache must be an input (or
    /// another `write_at`'s result), and after this call only the result may be used: the
    /// builders refuse the cache and its reshapes. Nodes added before read the cache as it
    /// was. Like any value, the result is computed only if something needs it (an op, an
    /// output, a binding): a write nobody reads is left out of the plan. No gradient.
    pub fn write_at(&mut self, cache: Var, update: Var, axis: isize, position: Var) -> Result<Var> {
        self.check_each("write_at", &[cache, update, position])?;
        let mut storage = cache;
        while let Some(node) = self
            .nodes
            .iter()
            .find(|node| node.op.is_alias() && node.outputs[0] == storage)
        {
            storage = node.inputs[0];
        }
        if !matches!(self.values[storage.index].source, Source::Input { .. }) {
            return Err(Error::invalid(
                "write_at",
                format!(
                    "value {} (shape {:?}) is computed: a write in place needs a cache that is \
                     an input, or another write_at's result",
                    cache.index,
                    self.shape(cache)
                ),
            ));
        }
        let axis = crate::tensor::resolve_axis("write_at", axis, self.shape(cache).len())?;
        let total = check_write_at(self.shape(cache), self.shape(update), axis)?;
        let entries = self.shape(update)[axis];
        let out = self.push_one(Op::WriteAt { axis }, &[cache, update, position])?;
        let room = (total - entries + 1) as u32;
        let bound = match self.values[position.index].index_bound {
            Some(earlier) => earlier.bound.min(room),
            None => room,
        };
        self.values[position.index].index_bound = Some(IndexBound {
            bound,
            ignore: None,
        });
        // The old contents are gone: the cache, and every reshape of it, refused from now on.
        self.overwritten.insert(cache.index);
        for node in &self.nodes {
            if matches!(node.op, Op::Reshape { .. })
                && self.overwritten.contains(&node.inputs[0].index)
            {
                self.overwritten.insert(node.outputs[0].index);
            }
        }
        Ok(out)
    }
}

pub(super) fn infer_broadcast_to(
    op: &'static str,
    shape: &[usize],
    inputs: &[(&[usize], DType)],
) -> Result<Vec<Shaped>> {
    check_inputs(op, inputs, &[DType::F32])?;
    let x = inputs[0].0;
    if broadcast_shapes(op, x, shape)? != shape {
        return Err(mismatch(
            op,
            x,
            shape,
            "the value must broadcast to the target".into(),
        ));
    }
    f32_output(shape.to_vec())
}

pub(super) fn infer_write_at(
    op: &'static str,
    axis: usize,
    inputs: &[(&[usize], DType)],
) -> Result<Vec<Shaped>> {
    check_inputs(op, inputs, &[DType::F32, DType::F32, DType::U32])?;
    let (cache, update, position) = (inputs[0].0, inputs[1].0, inputs[2].0);
    check_write_at(cache, update, axis)?;
    if numel(position)? != 1 {
        return Err(Error::invalid(
            op,
            format!("the position must be one index, got shape {position:?}"),
        ));
    }
    f32_output(cache.to_vec())
}

/// The output is the cache's own storage (an alias), so only the update is copied.
pub(super) fn record_write_at(
    axis: usize,
    inputs: &[Operand],
    outputs: &[Operand],
) -> Result<Recorded> {
    let (update, position, cache) = (inputs[1].f32(), inputs[2].u32(), outputs[0].f32());
    Ok(write_at_dispatch(update, position, cache, axis)?.into())
}

/// dy summed back down to the value's shape.
pub(super) fn backward_broadcast_to(g: &mut Graph, node: NodeGradient) -> Result<Vec<Option<Var>>> {
    let x_shape = g.shape(node.inputs[0]).to_vec();
    Ok(vec![Some(g.sum_to(node.dy, &x_shape)?)])
}

pub(super) fn record_broadcast_to(inputs: &[Operand], outputs: &[Operand]) -> Result<Recorded> {
    let (x, y) = (inputs[0].f32(), outputs[0].f32());
    let strides = broadcast_strides(x.shape(), y.shape());
    Ok(strided_copy_dispatch(x, y, strides)?.into())
}

pub(super) fn infer_reshape(
    op: &'static str,
    shape: &[usize],
    inputs: &[(&[usize], DType)],
) -> Result<Vec<Shaped>> {
    // f32 values and u32 ones (ids, argmax positions) alike: a reshape only renames.
    let dtype = inputs.first().map_or(DType::F32, |&(_, dtype)| dtype);
    check_inputs(op, inputs, &[dtype])?;
    let x = inputs[0].0;
    if numel(shape)? != numel(x)? {
        return Err(mismatch(
            op,
            x,
            shape,
            "both shapes must hold as many elements".into(),
        ));
    }
    Ok(vec![(shape.to_vec(), dtype)])
}

pub(super) fn backward_reshape(g: &mut Graph, node: NodeGradient) -> Result<Vec<Option<Var>>> {
    let x_shape = g.shape(node.inputs[0]).to_vec();
    Ok(vec![Some(g.reshape(node.dy, &x_shape)?)])
}

pub(super) fn infer_permute(
    op: &'static str,
    perm: &[usize],
    inputs: &[(&[usize], DType)],
) -> Result<Vec<Shaped>> {
    check_inputs(op, inputs, &[DType::F32])?;
    let x = inputs[0].0;
    check_rank(op, x)?;
    let mut seen = vec![false; x.len()];
    let valid = perm.len() == x.len()
        && perm
            .iter()
            .all(|&p| p < x.len() && !std::mem::replace(&mut seen[p], true));
    if !valid {
        return Err(Error::invalid(
            op,
            format!("{perm:?} is not a permutation of the axes of shape {x:?}"),
        ));
    }
    f32_output(perm.iter().map(|&p| x[p]).collect())
}

/// dy permuted back by the inverse permutation.
pub(super) fn backward_permute(
    g: &mut Graph,
    node: NodeGradient,
    perm: &[usize],
) -> Result<Vec<Option<Var>>> {
    let mut inverse = vec![0; perm.len()];
    for (i, &p) in perm.iter().enumerate() {
        inverse[p] = i;
    }
    Ok(vec![Some(g.permute(node.dy, &inverse)?)])
}

pub(super) fn record_permute(
    perm: &[usize],
    inputs: &[Operand],
    outputs: &[Operand],
) -> Result<Recorded> {
    let (x, y) = (inputs[0].f32(), outputs[0].f32());
    let strides = contiguous_strides(x.shape());
    let permuted: Vec<usize> = perm.iter().map(|&p| strides[p]).collect();
    Ok(strided_copy_dispatch(x, y, pad_to_rank4(&permuted, 0))?.into())
}

pub(super) fn infer_slice(
    op: &'static str,
    axis: usize,
    start: usize,
    end: usize,
    inputs: &[(&[usize], DType)],
) -> Result<Vec<Shaped>> {
    check_inputs(op, inputs, &[DType::F32])?;
    let x = inputs[0].0;
    if axis >= x.len() || start > end || end > x[axis] {
        return Err(Error::invalid(
            op,
            format!("{start}..{end} of axis {axis} is outside shape {x:?}"),
        ));
    }
    let mut shape = x.to_vec();
    shape[axis] = end - start;
    f32_output(shape)
}

/// dy placed back at the slice's offset in zeros (`SliceGrad`).
pub(super) fn backward_slice(
    g: &mut Graph,
    node: NodeGradient,
    axis: usize,
    start: usize,
) -> Result<Vec<Option<Var>>> {
    let len = g.shape(node.inputs[0])[axis];
    let grad = Op::SliceGrad { axis, start, len };
    Ok(vec![Some(g.push_one(grad, &[node.dy])?)])
}

pub(super) fn record_slice(
    axis: usize,
    start: usize,
    end: usize,
    inputs: &[Operand],
    outputs: &[Operand],
) -> Result<Recorded> {
    let (x, y) = (inputs[0].f32(), outputs[0].f32());
    let region = CopyRegion::slice(x.shape(), axis, start, end);
    Ok(region_copy_dispatch(x, y, &region, None)?.into())
}

pub(super) fn infer_slice_grad(
    op: &'static str,
    axis: usize,
    start: usize,
    len: usize,
    inputs: &[(&[usize], DType)],
) -> Result<Vec<Shaped>> {
    check_inputs(op, inputs, &[DType::F32])?;
    let dy = inputs[0].0;
    let mut shape = dy.to_vec();
    shape[axis] = len;
    if start + dy[axis] > len {
        return Err(mismatch(
            op,
            dy,
            &shape,
            "the slice must lie within the input".into(),
        ));
    }
    f32_output(shape)
}

/// Linear: its gradient is the slice it placed.
pub(super) fn backward_slice_grad(
    g: &mut Graph,
    node: NodeGradient,
    axis: usize,
    start: usize,
) -> Result<Vec<Option<Var>>> {
    let len = g.shape(node.inputs[0])[axis];
    let (start, end) = (start as isize, (start + len) as isize);
    Ok(vec![Some(g.slice(node.dy, axis as isize, start, end)?)])
}

pub(super) fn record_slice_grad(
    axis: usize,
    start: usize,
    inputs: &[Operand],
    outputs: &[Operand],
) -> Result<Recorded> {
    let (dy, dx) = (inputs[0].f32(), outputs[0].f32());
    Ok(slice_backward_dispatch(dy, dx, axis, start, None)?.into())
}

pub(super) fn infer_concat(
    op: &'static str,
    axis: usize,
    inputs: &[(&[usize], DType)],
) -> Result<Vec<Shaped>> {
    check_inputs(op, inputs, &vec![DType::F32; inputs.len().max(1)])?;
    let x = inputs[0].0;
    let mut shape = x.to_vec();
    if axis >= x.len() {
        return Err(Error::invalid(
            op,
            format!("axis {axis} is outside shape {x:?}"),
        ));
    }
    shape[axis] = 0;
    for (part, _) in inputs {
        let agree = part.len() == x.len() && (0..x.len()).all(|a| a == axis || part[a] == x[a]);
        if !agree {
            return Err(mismatch(
                op,
                x,
                part,
                format!("every axis but the concatenated axis {axis} must agree"),
            ));
        }
        shape[axis] += part[axis];
    }
    f32_output(shape)
}

/// Each part's gradient is its slice of dy.
pub(super) fn backward_concat(
    g: &mut Graph,
    node: NodeGradient,
    axis: usize,
) -> Result<Vec<Option<Var>>> {
    let mut offset = 0;
    let mut grads = Vec::with_capacity(node.inputs.len());
    for &part in node.inputs {
        let len = g.shape(part)[axis];
        grads.push(Some(g.slice(
            node.dy,
            axis as isize,
            offset as isize,
            (offset + len) as isize,
        )?));
        offset += len;
    }
    Ok(grads)
}

/// One copy per non-empty part, into its place along the axis.
pub(super) fn record_concat(
    axis: usize,
    inputs: &[Operand],
    outputs: &[Operand],
) -> Result<Recorded> {
    let y = outputs[0].f32();
    let total = y.shape()[axis];
    let mut recorded = Recorded::default();
    let mut offset = 0;
    for part in inputs {
        let part = part.f32();
        if part.numel() > 0 {
            let region = CopyRegion::into_axis(part.shape(), axis, offset, total);
            recorded
                .dispatches
                .push(region_copy_dispatch(part, y, &region, None)?);
        }
        offset += part.shape()[axis];
    }
    Ok(recorded)
}
