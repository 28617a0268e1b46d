//! Gather along one axis (`shaders/gather.wgsl`), ONNX's Gather, with the embedding lookup
//! as its axis-0 case, and the backward of both: a deterministic scatter-add.
//!
//! Ids are checked on the host before any dispatch (an out-of-range id names itself, its
//! position and the axis size): those made by [`Indices::from_slice`] are at hand there, and
//! those a kernel wrote are read back first. The backward groups the positions by id on the host
//! ([`GroupedPositions`]) so that the GPU sums without atomics, in a fixed order.

use crate::error::{Error, Result};
use crate::gpu::{Access, Dispatch, Gpu, KernelSpec, ShaderSource};
use crate::kernels::reduce::split_at_axis;
use crate::kernels::{chosen_spans, columns_per_invocation, span_grid, SPAN};
use crate::tensor::{resolve_axis, Indices, Tensor};
use std::sync::Arc;

/// The gather module, `shaders/gather.wgsl`: the gather, the embedding lookup and their
/// scatter-add backward.
pub static SHADER: ShaderSource = ShaderSource {
    size_constants: &[SPAN],
    ..ShaderSource::new("gather", include_str!("../../shaders/gather.wgsl"))
};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    outer: u32,
    axis_len: u32,
    count: u32,
    inner: u32,
}

const BINDINGS: &[Access] = &[
    Access::Read,
    Access::Read,
    Access::ReadWrite,
    Access::Uniform,
];

/// The shape of `gather(data, indices, axis)`: data.shape[..axis] + indices.shape +
/// data.shape[axis + 1..].
pub fn gather_shape(data_shape: &[usize], axis: usize, indices_shape: &[usize]) -> Vec<usize> {
    [&data_shape[..axis], indices_shape, &data_shape[axis + 1..]].concat()
}

/// The positions of a list of ids grouped by id, in CSR form, packed in one u32 buffer on
/// the GPU: `axis_len + 1` offsets, then the `count` positions, so that the positions of
/// id a are `positions[offsets[a]..offsets[a + 1]]`, in increasing order.
///
/// Built on the host by a counting sort, O(count + axis_len). It depends only on the ids,
/// so one grouping serves every gradient gathered with the same ids.
#[derive(Debug, Clone)]
pub struct GroupedPositions {
    packed: Indices,
    axis_len: usize,
    count: usize,
}

impl GroupedPositions {
    /// Groups `ids` by id and uploads the result; an error names the first id that is not
    /// below `axis_len`.
    pub fn new(gpu: &Gpu, ids: &[u32], axis_len: usize) -> Result<GroupedPositions> {
        if let Some(position) = first_out_of_range(ids, axis_len) {
            return Err(Error::invalid(
                "GroupedPositions::new",
                format!(
                    "id {} at position {position} is out of range for an axis of size {axis_len}",
                    ids[position]
                ),
            ));
        }
        let packed = group_positions_by_id(ids, axis_len);
        Ok(GroupedPositions {
            packed: Indices::from_slice(gpu, &packed, &[packed.len()])?,
            axis_len,
            count: ids.len(),
        })
    }

    /// Room for the grouping of `count` ids over an axis of `axis_len`, filled later by
    /// [`GroupedPositions::update`]: a compiled plan makes it once and regroups each step's ids.
    pub fn with_capacity(gpu: &Gpu, count: usize, axis_len: usize) -> Result<GroupedPositions> {
        let len = axis_len + 1 + count;
        Ok(GroupedPositions {
            packed: Indices::uninit(gpu, &[len])?,
            axis_len,
            count,
        })
    }

    /// Regroups `ids` (as many as the grouping was made for) into the same GPU buffer.
    pub fn update(&self, ids: &[u32]) -> Result<()> {
        if ids.len() != self.count {
            return Err(Error::invalid(
                "GroupedPositions::update",
                format!(
                    "{} ids, the grouping was made for {}",
                    ids.len(),
                    self.count
                ),
            ));
        }
        if let Some(position) = first_out_of_range(ids, self.axis_len) {
            return Err(Error::invalid(
                "GroupedPositions::update",
                format!(
                    "id {} at position {position} is out of range for an axis of size {}",
                    ids[position], self.axis_len
                ),
            ));
        }
        let packed = group_positions_by_id(ids, self.axis_len);
        self.packed.gpu().write(self.packed.buffer(), &packed);
        Ok(())
    }

    /// The size of the gathered axis: ids run over `0..axis_len`.
    pub fn axis_len(&self) -> usize {
        self.axis_len
    }

    /// How many ids were grouped.
    pub fn count(&self) -> usize {
        self.count
    }
}

/// The position of the first id that is not below `axis_len`.
fn first_out_of_range(ids: &[u32], axis_len: usize) -> Option<usize> {
    ids.iter().position(|&id| id as usize >= axis_len)
}

/// The packed CSR of [`GroupedPositions`] on the host: `axis_len + 1` offsets, then the
/// positions of every id in increasing order (ids must be below `axis_len`).
fn group_positions_by_id(ids: &[u32], axis_len: usize) -> Vec<u32> {
    let mut packed = vec![0u32; axis_len + 1 + ids.len()];
    let (offsets, positions) = packed.split_at_mut(axis_len + 1);
    for &id in ids {
        offsets[id as usize + 1] += 1;
    }
    for a in 0..axis_len {
        offsets[a + 1] += offsets[a];
    }
    // Fill with a running cursor per id; visiting positions in order keeps them sorted.
    let mut cursor: Vec<u32> = offsets[..axis_len].to_vec();
    for (position, &id) in ids.iter().enumerate() {
        let slot = &mut cursor[id as usize];
        positions[*slot as usize] = position as u32;
        *slot += 1;
    }
    packed
}

/// The coordinates of flat position `flat` in `shape`.
fn unravel(mut flat: usize, shape: &[usize]) -> Vec<usize> {
    let mut index = vec![0; shape.len()];
    for (coordinate, &dim) in index.iter_mut().zip(shape).rev() {
        *coordinate = flat % dim;
        flat /= dim;
    }
    index
}

/// The values of `indices` on the host (see [`Indices::host_values`]), after checking that
/// every id is below `axis_len`; `range` describes the axis for the error message
/// ("axis 0 of size 5 (data shape [5, 4])").
fn checked_ids(
    op: &'static str,
    indices: &Indices,
    axis_len: usize,
    range: impl FnOnce() -> String,
) -> Result<Arc<[u32]>> {
    let ids = indices.host_values()?;
    if let Some(position) = first_out_of_range(&ids, axis_len) {
        return Err(Error::invalid(
            op,
            format!(
                "id {} at position {:?} of the indices (shape {:?}) is out of range for {}",
                ids[position],
                unravel(position, indices.shape()),
                indices.shape(),
                range()
            ),
        ));
    }
    Ok(ids)
}

fn same_device(op: &'static str, tensor: &Tensor, indices: &Indices) -> Result<()> {
    if tensor.gpu().same_device(indices.gpu()) {
        Ok(())
    } else {
        Err(Error::DeviceMismatch { op })
    }
}

fn spec(entry: &'static str, span: u32) -> KernelSpec {
    KernelSpec {
        source: &SHADER,
        entry,
        bindings: BINDINGS,
        constants: vec![("SPAN", f64::from(span))],
    }
}

/// Every kernel variant [`gather_dispatch`] and [`gather_backward_dispatch`] can build,
/// with the spans [`columns_per_invocation`] picks (a caller may name any other: `SPAN` is
/// a size constant).
pub fn kernel_specs() -> Vec<KernelSpec> {
    ["gather", "gather_backward"]
        .into_iter()
        .flat_map(|entry| chosen_spans().map(move |span| spec(entry, span)))
        .collect()
}

/// Records `y = gather(x, ids, axis)`; `y` has [`gather_shape`]. The ids must be checked.
/// `span`: columns per invocation, or `None` for what [`columns_per_invocation`] picks on
/// this adapter.
pub fn gather_dispatch(
    x: &Tensor,
    ids: &Indices,
    y: &Tensor,
    axis: usize,
    span: Option<u32>,
) -> Result<Dispatch> {
    let gpu = x.gpu();
    let (outer, axis_len, inner) = split_at_axis(x.shape(), axis);
    let span = span.unwrap_or_else(|| columns_per_invocation(gpu, outer * ids.numel(), inner));
    let params = Params {
        outer: outer as u32,
        axis_len: axis_len as u32,
        count: ids.numel() as u32,
        inner: inner as u32,
    };
    gpu.dispatch(
        &spec("gather", span),
        &[x.buffer(), ids.buffer(), y.buffer()],
        &params,
        span_grid(gpu, outer * ids.numel(), inner, span),
    )
}

/// Records the backward of gather along `axis`: `dx` (the data's shape) receives, for each
/// id, the sum of the slices of `dy` at its positions, in increasing position order.
/// `span`: columns per invocation, or `None` for what [`columns_per_invocation`] picks on
/// this adapter.
pub fn gather_backward_dispatch(
    dy: &Tensor,
    groups: &GroupedPositions,
    dx: &Tensor,
    axis: usize,
    span: Option<u32>,
) -> Result<Dispatch> {
    let gpu = dy.gpu();
    let (outer, axis_len, inner) = split_at_axis(dx.shape(), axis);
    let span = span.unwrap_or_else(|| columns_per_invocation(gpu, outer * axis_len, inner));
    debug_assert_eq!(axis_len, groups.axis_len);
    let params = Params {
        outer: outer as u32,
        axis_len: axis_len as u32,
        count: groups.count as u32,
        inner: inner as u32,
    };
    gpu.dispatch(
        &spec("gather_backward", span),
        &[dy.buffer(), groups.packed.buffer(), dx.buffer()],
        &params,
        span_grid(gpu, outer * axis_len, inner, span),
    )
}

/// CPU reference of [`Tensor::gather`] for f32 or f64 data (ids already checked).
pub fn gather_cpu<T: Copy>(x: &[T], shape: &[usize], axis: usize, ids: &[u32]) -> Vec<T> {
    let (outer, axis_len, inner) = split_at_axis(shape, axis);
    let mut y = Vec::with_capacity(outer * ids.len() * inner);
    for o in 0..outer {
        for &id in ids {
            let row = (o * axis_len + id as usize) * inner;
            y.extend_from_slice(&x[row..row + inner]);
        }
    }
    y
}

/// CPU reference of [`Tensor::gather_backward`], summed in f64.
pub fn gather_backward_cpu(dy: &[f32], data_shape: &[usize], axis: usize, ids: &[u32]) -> Vec<f32> {
    let (outer, axis_len, inner) = split_at_axis(data_shape, axis);
    let mut dx = vec![0.0f64; outer * axis_len * inner];
    for o in 0..outer {
        for (k, &id) in ids.iter().enumerate() {
            let from = (o * ids.len() + k) * inner;
            let to = (o * axis_len + id as usize) * inner;
            for c in 0..inner {
                dx[to + c] += f64::from(dy[from + c]);
            }
        }
    }
    dx.into_iter().map(|v| v as f32).collect()
}

impl Tensor {
    /// ONNX Gather: picks entries of `axis` (negative counts from the end) by `indices`.
    /// The result has shape `self.shape[..axis] + indices.shape + self.shape[axis + 1..]`;
    /// a rank-0 `indices` drops the axis. Any rank. Ids at or beyond the axis size are an
    /// error, found on the host before dispatch (the indices need their host copy).
    pub fn gather(&self, axis: isize, indices: &Indices) -> Result<Tensor> {
        let axis = resolve_axis("gather", axis, self.rank())?;
        same_device("gather", self, indices)?;
        let axis_len = self.shape()[axis];
        checked_ids("gather", indices, axis_len, || {
            format!(
                "axis {axis} of size {axis_len} (data shape {:?})",
                self.shape()
            )
        })?;
        self.gather_checked(axis, indices)
    }

    fn gather_checked(&self, axis: usize, indices: &Indices) -> Result<Tensor> {
        let y = Tensor::uninit(
            self.gpu(),
            &gather_shape(self.shape(), axis, indices.shape()),
        )?;
        if y.numel() > 0 {
            let dispatch = gather_dispatch(self, indices, &y, axis, None)?;
            self.gpu().submit(&[], &[dispatch])?;
        }
        Ok(y)
    }

    /// The backward of [`Tensor::gather`]: `self` is the gradient of the gathered output;
    /// the result, of `data_shape`, sums it into the entries each id picked (zero for
    /// entries no id picked). Deterministic: same input, same bits.
    pub fn gather_backward(
        &self,
        indices: &Indices,
        axis: isize,
        data_shape: &[usize],
    ) -> Result<Tensor> {
        let op = "gather_backward";
        let axis = resolve_axis(op, axis, data_shape.len())?;
        same_device(op, self, indices)?;
        let axis_len = data_shape[axis];
        let ids = checked_ids(op, indices, axis_len, || {
            format!("axis {axis} of size {axis_len} (data shape {data_shape:?})")
        })?;
        self.gather_backward_checked(op, &ids, indices.shape(), axis, data_shape)
    }

    /// The scatter-add of the backward once the ids are checked: the shape check, the
    /// grouping of positions by id, and the dispatch.
    fn gather_backward_checked(
        &self,
        op: &'static str,
        ids: &[u32],
        indices_shape: &[usize],
        axis: usize,
        data_shape: &[usize],
    ) -> Result<Tensor> {
        let expected = gather_shape(data_shape, axis, indices_shape);
        if self.shape() != expected {
            return Err(Error::ShapeMismatch {
                op,
                lhs: self.shape().to_vec(),
                rhs: expected,
                expected: format!(
                    "the gradient must have the gathered shape: data {data_shape:?} along axis {axis} by indices {indices_shape:?}"
                ),
            });
        }
        let dx = Tensor::uninit(self.gpu(), data_shape)?;
        if dx.numel() > 0 {
            let groups = GroupedPositions::new(self.gpu(), ids, data_shape[axis])?;
            let dispatch = gather_backward_dispatch(self, &groups, &dx, axis, None)?;
            self.gpu().submit(&[], &[dispatch])?;
        }
        Ok(dx)
    }

    /// The embedding lookup: `self` is a table [vocab, dim], the result has shape
    /// `ids.shape + [dim]`, row `table[id]` for each id. Ids at or beyond `vocab` are an
    /// error naming the id, its position and the table size (checked on the host).
    pub fn embedding(&self, ids: &Indices) -> Result<Tensor> {
        let &[vocab, dim] = self.shape() else {
            return Err(Error::invalid(
                "embedding",
                format!(
                    "the table must have rank 2 [vocab, dim], its shape is {:?}",
                    self.shape()
                ),
            ));
        };
        same_device("embedding", self, ids)?;
        checked_ids("embedding", ids, vocab, || {
            format!("a table of {vocab} rows (shape [{vocab}, {dim}])")
        })?;
        self.gather_checked(0, ids)
    }

    /// The backward of [`Tensor::embedding`]: `self` is the gradient of the looked-up rows,
    /// shape `ids.shape + [dim]`; the result is the gradient of the table [vocab, dim]: for
    /// each row, the sum of the gradients at its ids' positions (zero for unused rows).
    /// Deterministic: same input, same bits.
    pub fn embedding_backward(&self, ids: &Indices, vocab: usize) -> Result<Tensor> {
        let op = "embedding_backward";
        if self.rank() != ids.shape().len() + 1 {
            return Err(Error::ShapeMismatch {
                op,
                lhs: self.shape().to_vec(),
                rhs: ids.shape().to_vec(),
                expected: "the gradient must have shape ids.shape + [dim]".into(),
            });
        }
        let dim = self.shape()[self.rank() - 1];
        same_device(op, self, ids)?;
        let host_ids = checked_ids(op, ids, vocab, || {
            format!("a table of {vocab} rows (shape [{vocab}, {dim}])")
        })?;
        self.gather_backward_checked(op, &host_ids, ids.shape(), 0, &[vocab, dim])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grouping_is_a_stable_counting_sort() {
        let ids = [2, 0, 2, 3, 0, 2];
        let packed = group_positions_by_id(&ids, 5);
        let (offsets, positions) = packed.split_at(6);
        assert_eq!(offsets, [0, 2, 2, 5, 6, 6]);
        assert_eq!(positions, [1, 4, 0, 2, 5, 3]);
        assert_eq!(group_positions_by_id(&[], 3), vec![0, 0, 0, 0]);
        let gpu = Gpu::default_adapter().expect("a GPU adapter");
        let err = GroupedPositions::new(&gpu, &[0, 3, 2], 3)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("id 3 at position 1") && err.contains("size 3"),
            "{err}"
        );
    }

    #[test]
    fn gather_shape_follows_onnx() {
        assert_eq!(gather_shape(&[5, 4, 3], 1, &[2, 6]), vec![5, 2, 6, 3]);
        assert_eq!(gather_shape(&[5, 4], 0, &[]), vec![4]);
    }
}
