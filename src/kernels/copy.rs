//! Copies (`shaders/copy.wgsl`): permute and transpose of any axes up to rank 4, broadcast
//! (expand), plain copies, and along one axis of any rank: slice, concat and split, and
//! the backward of slice (the gradient placed into zeros).
//!
//! Slice and concat need no rank limit: around one axis any tensor is `[outer, n, inner]`
//! (see [`split_at_axis`]), a rank-3 view the rank-4 strided kernel covers.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::gpu::{Access, Copy, Dispatch, KernelSpec, ShaderSource};
use crate::kernels::reduce::split_at_axis;
use crate::kernels::{
    broadcast_shapes, broadcast_strides, check_rank, chosen_spans, columns_per_invocation,
    contiguous_strides, pad_to_rank4, span_grid, SPAN,
};
use crate::tensor::{resolve_axis, Indices, Tensor};

/// The copy module, `shaders/copy.wgsl`: strided copies, broadcasts and the slice backward.
pub static SHADER: ShaderSource = ShaderSource {
    size_constants: &[SPAN],
    ..ShaderSource::new("copy", include_str!("../../shaders/copy.wgsl"))
};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    in_offset: u32,
    out_offset: u32,
    position_stride: u32,
    pad: u32,
    shape: [u32; 4],
    in_strides: [u32; 4],
    out_strides: [u32; 4],
    window_start: [u32; 4],
    window_end: [u32; 4],
}

impl Params {
    /// The parameters of copying `region`, moved by `position_stride` elements per unit
    /// of the position (`positioned_copy` only; 0 otherwise).
    fn of_region(region: &CopyRegion, position_stride: u32) -> Params {
        Params {
            in_offset: region.in_offset,
            out_offset: region.out_offset,
            position_stride,
            pad: 0,
            shape: region.shape,
            in_strides: region.in_strides,
            out_strides: region.out_strides,
            window_start: [0; 4],
            window_end: [0; 4],
        }
    }
}

/// One strided copy over an iteration shape of rank ≤ 4 (padded on the left with 1s):
/// for every coordinate c of `shape`, y[out_offset + Σ c·out_strides] = x[in_offset + Σ c·in_strides].
/// All in elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyRegion {
    /// The iteration shape, padded on the left with 1s to rank 4.
    pub shape: [u32; 4],
    /// The element of `x` that coordinate 0 reads.
    pub in_offset: u32,
    /// How far `x`'s element moves per step of each axis of `shape` (0 repeats it: a broadcast).
    pub in_strides: [u32; 4],
    /// The element of `y` that coordinate 0 writes.
    pub out_offset: u32,
    /// How far `y`'s element moves per step of each axis of `shape`.
    pub out_strides: [u32; 4],
}

impl CopyRegion {
    /// Rows (the outer three axes of `shape`) and row length (its innermost axis).
    fn rows(&self) -> (usize, usize) {
        let [a, b, c, row_len] = self.shape.map(|d| d as usize);
        (a * b * c, row_len)
    }

    /// The same copy with the axes of size 1 dropped, and neighbouring axes merged where
    /// both x and y step through them as through one (the outer stride is the inner size
    /// times the inner stride), so that the innermost axis, which invocations walk in
    /// spans, is as long as it can be: a slice of the last axis of [4096, 768] becomes
    /// 4096 rows of 256, and a plain copy one row.
    pub fn simplified(&self) -> CopyRegion {
        // (size, in stride, out stride), outermost first.
        let mut axes: Vec<(u32, u32, u32)> = Vec::with_capacity(4);
        for axis in 0..4 {
            let size = self.shape[axis];
            let (in_stride, out_stride) = (self.in_strides[axis], self.out_strides[axis]);
            if size == 1 {
                continue;
            }
            let steps_as_one =
                |outer: u32, inner: u32| u64::from(outer) == u64::from(size) * u64::from(inner);
            match axes.last_mut() {
                Some(last)
                    if steps_as_one(last.1, in_stride) && steps_as_one(last.2, out_stride) =>
                {
                    *last = (last.0 * size, in_stride, out_stride);
                }
                _ => axes.push((size, in_stride, out_stride)),
            }
        }
        let mut simplified = CopyRegion {
            shape: [1; 4],
            in_strides: [0; 4],
            out_strides: [0; 4],
            ..*self
        };
        let offset = 4 - axes.len();
        for (i, (size, in_stride, out_stride)) in axes.into_iter().enumerate() {
            simplified.shape[offset + i] = size;
            simplified.in_strides[offset + i] = in_stride;
            simplified.out_strides[offset + i] = out_stride;
        }
        simplified
    }

    /// Copies `x[.., start..end, ..]` (along `axis` of `shape`) into a contiguous output.
    pub fn slice(shape: &[usize], axis: usize, start: usize, end: usize) -> CopyRegion {
        let (outer, n, inner) = split_at_axis(shape, axis);
        let len = end - start;
        CopyRegion {
            shape: [1, outer as u32, len as u32, inner as u32],
            in_offset: (start * inner) as u32,
            in_strides: [0, (n * inner) as u32, inner as u32, 1],
            out_offset: 0,
            out_strides: [0, (len * inner) as u32, inner as u32, 1],
        }
    }

    /// Copies a contiguous part of shape `part` into the output, whose `axis` has `total`
    /// entries, starting at entry `offset` of that axis: one input of a concat.
    pub fn into_axis(part: &[usize], axis: usize, offset: usize, total: usize) -> CopyRegion {
        let (outer, n, inner) = split_at_axis(part, axis);
        CopyRegion {
            shape: [1, outer as u32, n as u32, inner as u32],
            in_offset: 0,
            in_strides: [0, (n * inner) as u32, inner as u32, 1],
            out_offset: (offset * inner) as u32,
            out_strides: [0, (total * inner) as u32, inner as u32, 1],
        }
    }
}

fn copy_spec(entry: &'static str, span: u32) -> KernelSpec {
    KernelSpec {
        source: &SHADER,
        entry,
        bindings: &[Access::Read, Access::ReadWrite, Access::Uniform],
        constants: vec![("SPAN", f64::from(span))],
    }
}

fn positioned_copy_spec(span: u32) -> KernelSpec {
    KernelSpec {
        source: &SHADER,
        entry: "positioned_copy",
        bindings: &[
            Access::Read,
            Access::ReadWrite,
            Access::Read,
            Access::Uniform,
        ],
        constants: vec![("SPAN", f64::from(span))],
    }
}

/// Every kernel variant the copies build, with the spans [`columns_per_invocation`] picks
/// (a caller may name any other: `SPAN` is a size constant).
pub fn kernel_specs() -> Vec<KernelSpec> {
    ["strided_copy", "padded_copy"]
        .into_iter()
        .flat_map(|entry| chosen_spans().map(move |span| copy_spec(entry, span)))
        .chain(chosen_spans().map(positioned_copy_spec))
        .collect()
}

/// Records the copy `region` from `x` into `y` (simplified first, see
/// [`CopyRegion::simplified`]). The caller makes sure the region lies within both buffers.
/// `span`: elements of a row per invocation, or `None` for what [`columns_per_invocation`]
/// picks on this adapter.
pub fn region_copy_dispatch(
    x: &Tensor,
    y: &Tensor,
    region: &CopyRegion,
    span: Option<u32>,
) -> Result<Dispatch> {
    let gpu = x.gpu();
    let region = region.simplified();
    let (rows, row_len) = region.rows();
    let span = span.unwrap_or_else(|| columns_per_invocation(gpu, rows, row_len));
    let params = Params::of_region(&region, 0);
    gpu.dispatch(
        &copy_spec("strided_copy", span),
        &[x.buffer(), y.buffer()],
        &params,
        span_grid(gpu, rows, row_len, span),
    )
}

/// Records y\[c\] = x[Σ c·in_strides] for every coordinate c of y (strides padded to rank 4),
/// with the span [`columns_per_invocation`] picks.
pub fn strided_copy_dispatch(x: &Tensor, y: &Tensor, in_strides: [u32; 4]) -> Result<Dispatch> {
    let shape = pad_to_rank4(y.shape(), 1);
    let out_strides = pad_to_rank4(&contiguous_strides(y.shape()), 0);
    let region = CopyRegion {
        shape,
        in_offset: 0,
        in_strides,
        out_offset: 0,
        out_strides,
    };
    region_copy_dispatch(x, y, &region, None)
}

/// Records the backward of a slice along `axis` starting at `start`: `dx` (the input's
/// shape) receives `dy` at the slice and zeros elsewhere, every element written once.
/// `span`: elements of a row per invocation, or `None` for what [`columns_per_invocation`]
/// picks on this adapter.
pub fn slice_backward_dispatch(
    dy: &Tensor,
    dx: &Tensor,
    axis: usize,
    start: usize,
    span: Option<u32>,
) -> Result<Dispatch> {
    let gpu = dy.gpu();
    let (outer, n, inner) = split_at_axis(dx.shape(), axis);
    let len = dy.shape()[axis];
    let end = start + len;
    // dx as [outer, n, inner] with the window on n; as [outer, n] rows when inner is 1,
    // so that invocations walk the sliced axis in spans.
    let (shape, window_start, window_end, in_strides) = if inner == 1 {
        (
            [1, 1, outer, n],
            [0, 0, 0, start],
            [1, 1, outer, end],
            [0, 0, len, 1],
        )
    } else {
        (
            [1, outer, n, inner],
            [0, 0, start, 0],
            [1, outer, end, inner],
            [0, len * inner, inner, 1],
        )
    };
    let to_u32 = |v: [usize; 4]| v.map(|x| x as u32);
    let params = Params {
        in_offset: 0,
        out_offset: 0,
        position_stride: 0,
        pad: 0,
        shape: to_u32(shape),
        in_strides: to_u32(in_strides),
        out_strides: [0; 4],
        window_start: to_u32(window_start),
        window_end: to_u32(window_end),
    };
    let (rows, row_len) = (shape[0] * shape[1] * shape[2], shape[3]);
    let span = span.unwrap_or_else(|| columns_per_invocation(gpu, rows, row_len));
    gpu.dispatch(
        &copy_spec("padded_copy", span),
        &[dy.buffer(), dx.buffer()],
        &params,
        span_grid(gpu, rows, row_len, span),
    )
}

/// Checks that `update` fits into `cache` along `axis`: the same rank, the same sizes on
/// every other axis, and no more entries on that one. Returns the cache's entries along it.
pub fn check_write_at(cache: &[usize], update: &[usize], axis: usize) -> Result<usize> {
    let fits = cache.len() == update.len()
        && axis < cache.len()
        && update[axis] <= cache[axis]
        && (0..cache.len()).all(|i| i == axis || cache[i] == update[i]);
    if fits {
        Ok(cache[axis])
    } else {
        Err(Error::ShapeMismatch {
            op: "write_at",
            lhs: cache.to_vec(),
            rhs: update.to_vec(),
            expected: format!(
                "the update must have the cache's sizes on every axis but {axis}, and no \
                 more entries than the cache on that one"
            ),
        })
    }
}

/// Records the write of `update` into `cache` at entries p..p + m of `axis`, p being
/// `position[0]` and m the update's entries along that axis (its other axes are the
/// cache's): a decoder's step writing its keys and values into its cache. The GPU reads the
/// position, so one recorded dispatch serves every step; the caller keeps p + m within the
/// axis (a graph checks every fed position).
pub fn write_at_dispatch(
    update: &Tensor,
    position: &Indices,
    cache: &Tensor,
    axis: usize,
) -> Result<Dispatch> {
    let gpu = cache.gpu();
    let total = check_write_at(cache.shape(), update.shape(), axis)?;
    if position.numel() != 1 {
        return Err(Error::invalid(
            "write_at",
            format!(
                "the position must be one index, got shape {:?}",
                position.shape()
            ),
        ));
    }
    let region = CopyRegion::into_axis(update.shape(), axis, 0, total).simplified();
    let (_, _, inner) = split_at_axis(cache.shape(), axis);
    let (rows, row_len) = region.rows();
    let span = columns_per_invocation(gpu, rows, row_len);
    let params = Params::of_region(&region, inner as u32);
    gpu.dispatch(
        &positioned_copy_spec(span),
        &[update.buffer(), cache.buffer(), position.buffer()],
        &params,
        span_grid(gpu, rows, row_len, span),
    )
}

/// CPU reference of [`write_at_dispatch`]: `cache` (of `shape`) with entries
/// position..position + m of `axis` replaced by `update`.
pub fn write_at_cpu(
    cache: &[f32],
    shape: &[usize],
    update: &[f32],
    axis: usize,
    position: usize,
) -> Vec<f32> {
    let (outer, n, inner) = split_at_axis(shape, axis);
    let m = update.len() / (outer * inner).max(1);
    let mut out = cache.to_vec();
    for o in 0..outer {
        for j in 0..m {
            let to = (o * n + position + j) * inner;
            let from = (o * m + j) * inner;
            out[to..to + inner].copy_from_slice(&update[from..from + inner]);
        }
    }
    out
}

/// Checks that `perm` is a permutation of 0..rank.
fn check_permutation(shape: &[usize], perm: &[usize]) -> Result<()> {
    let mut seen = vec![false; shape.len()];
    let valid = perm.len() == shape.len()
        && perm
            .iter()
            .all(|&p| p < shape.len() && !std::mem::replace(&mut seen[p], true));
    if valid {
        Ok(())
    } else {
        Err(Error::invalid(
            "permute",
            format!(
                "{perm:?} is not a permutation of the {} axes of shape {shape:?}",
                shape.len()
            ),
        ))
    }
}

/// Resolves the bounds of a slice along `axis` of `shape` like Python's (negative counts
/// from the end), but refuses bounds outside the axis or a start after the end instead of
/// clamping them: such a slice is almost always a bug.
pub fn resolve_slice(
    op: &'static str,
    shape: &[usize],
    axis: isize,
    start: isize,
    end: isize,
) -> Result<(usize, usize, usize)> {
    let axis = resolve_axis(op, axis, shape.len())?;
    let n = shape[axis];
    let resolve = |what: &str, bound: isize| {
        let resolved = if bound < 0 { bound + n as isize } else { bound };
        if resolved < 0 || resolved as usize > n {
            return Err(Error::invalid(
                op,
                format!(
                    "{what} {bound} is out of range for axis {axis} of size {n} (shape {shape:?})"
                ),
            ));
        }
        Ok(resolved as usize)
    };
    let (first, last) = (resolve("start", start)?, resolve("end", end)?);
    if first > last {
        return Err(Error::invalid(
            op,
            format!(
                "start {start} comes after end {end} on axis {axis} of size {n} (shape {shape:?})"
            ),
        ));
    }
    Ok((axis, first, last))
}

/// CPU reference of [`Tensor::permute`]: out axis i is input axis perm\[i\].
pub fn permute_cpu(x: &[f32], shape: &[usize], perm: &[usize]) -> Vec<f32> {
    let strides = contiguous_strides(shape);
    let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    let n: usize = shape.iter().product();
    (0..n)
        .map(|i| {
            let mut rest = i;
            let mut source = 0;
            for axis in (0..out_shape.len()).rev() {
                source += (rest % out_shape[axis]) * strides[perm[axis]];
                rest /= out_shape[axis];
            }
            x[source]
        })
        .collect()
}

/// CPU reference of [`Tensor::slice`] (bounds already resolved), for f32 or f64 data.
pub fn slice_cpu<T: std::marker::Copy>(
    x: &[T],
    shape: &[usize],
    axis: usize,
    start: usize,
    end: usize,
) -> Vec<T> {
    let (outer, n, inner) = split_at_axis(shape, axis);
    (0..outer)
        .flat_map(|o| {
            x[(o * n + start) * inner..(o * n + end) * inner]
                .iter()
                .copied()
        })
        .collect()
}

/// CPU reference of [`Tensor::concat`]: `parts` are (data, shape) pairs that agree on every
/// axis but `axis`.
pub fn concat_cpu<T: std::marker::Copy>(parts: &[(&[T], &[usize])], axis: usize) -> Vec<T> {
    let outer: usize = parts[0].1[..axis].iter().product();
    let mut out = Vec::new();
    for o in 0..outer {
        for (data, shape) in parts {
            let (_, n, inner) = split_at_axis(shape, axis);
            out.extend_from_slice(&data[o * n * inner..(o + 1) * n * inner]);
        }
    }
    out
}

impl Tensor {
    /// Reorders the axes: axis i of the result is axis `perm[i]` of `self` (rank ≤ 4).
    pub fn permute(&self, perm: &[usize]) -> Result<Tensor> {
        check_rank("permute", self.shape())?;
        check_permutation(self.shape(), perm)?;
        let strides = contiguous_strides(self.shape());
        let out_shape: Vec<usize> = perm.iter().map(|&p| self.shape()[p]).collect();
        let permuted: Vec<usize> = perm.iter().map(|&p| strides[p]).collect();
        let y = Tensor::uninit(self.gpu(), &out_shape)?;
        if y.numel() > 0 {
            let dispatch = strided_copy_dispatch(self, &y, pad_to_rank4(&permuted, 0))?;
            self.gpu().submit(&[], &[dispatch])?;
        }
        Ok(y)
    }

    /// Swaps two axes (negative axes count from the end).
    pub fn transpose(&self, axis0: isize, axis1: isize) -> Result<Tensor> {
        let a = resolve_axis("transpose", axis0, self.rank())?;
        let b = resolve_axis("transpose", axis1, self.rank())?;
        let mut perm: Vec<usize> = (0..self.rank()).collect();
        perm.swap(a, b);
        self.permute(&perm)
    }

    /// Repeats the tensor along its size-1 axes to `shape` (numpy broadcasting, rank ≤ 4).
    pub fn broadcast_to(&self, shape: &[usize]) -> Result<Tensor> {
        let out = broadcast_shapes("broadcast_to", self.shape(), shape)?;
        if out != shape {
            return Err(Error::ShapeMismatch {
                op: "broadcast_to",
                lhs: self.shape().to_vec(),
                rhs: shape.to_vec(),
                expected: "the target must be the broadcast shape".into(),
            });
        }
        let y = Tensor::uninit(self.gpu(), shape)?;
        if y.numel() > 0 {
            let dispatch = strided_copy_dispatch(self, &y, broadcast_strides(self.shape(), shape))?;
            self.gpu().submit(&[], &[dispatch])?;
        }
        Ok(y)
    }

    /// A copy with its own buffer (a buffer-to-buffer copy on the GPU).
    pub fn copy(&self) -> Result<Tensor> {
        let y = Tensor::uninit(self.gpu(), self.shape())?;
        if y.numel() > 0 {
            let copy = Copy {
                source: Arc::clone(self.buffer()),
                destination: Arc::clone(y.buffer()),
                bytes: self.byte_len(),
            };
            self.gpu().submit(&[copy], &[])?;
        }
        Ok(y)
    }

    /// `self[.., start..end, ..]` along `axis` (any rank). Negative axis and bounds count
    /// from the end, as in Python; bounds outside the axis, or a start after the end, are
    /// errors rather than clamped. `start == end` gives an empty axis.
    pub fn slice(&self, axis: isize, start: isize, end: isize) -> Result<Tensor> {
        let (axis, start, end) = resolve_slice("slice", self.shape(), axis, start, end)?;
        let mut out_shape = self.shape().to_vec();
        out_shape[axis] = end - start;
        let y = Tensor::uninit(self.gpu(), &out_shape)?;
        if y.numel() > 0 {
            let region = CopyRegion::slice(self.shape(), axis, start, end);
            let dispatch = region_copy_dispatch(self, &y, &region, None)?;
            self.gpu().submit(&[], &[dispatch])?;
        }
        Ok(y)
    }

    /// The backward of [`Tensor::slice`]: `self` is the gradient of the slice, the result
    /// the gradient of the input of shape `input_shape`: `self` at the slice, zero elsewhere.
    /// Takes the same axis and bounds as the forward call.
    pub fn slice_backward(
        &self,
        input_shape: &[usize],
        axis: isize,
        start: isize,
        end: isize,
    ) -> Result<Tensor> {
        let (axis, start, end) = resolve_slice("slice_backward", input_shape, axis, start, end)?;
        let mut sliced = input_shape.to_vec();
        sliced[axis] = end - start;
        if self.shape() != sliced {
            return Err(Error::ShapeMismatch {
                op: "slice_backward",
                lhs: self.shape().to_vec(),
                rhs: sliced,
                expected: format!(
                    "the gradient must have the shape of the slice {start}..{end} of axis {axis} of {input_shape:?}"
                ),
            });
        }
        let dx = Tensor::uninit(self.gpu(), input_shape)?;
        if dx.numel() > 0 {
            let dispatch = slice_backward_dispatch(self, &dx, axis, start, None)?;
            self.gpu().submit(&[], &[dispatch])?;
        }
        Ok(dx)
    }

    /// Joins `parts` along `axis` (any rank; negative counts from the end). They must agree
    /// on every other axis. One dispatch per non-empty part, submitted together.
    pub fn concat(parts: &[&Tensor], axis: isize) -> Result<Tensor> {
        let Some(first) = parts.first() else {
            return Err(Error::invalid("concat", "needs at least one tensor"));
        };
        let axis = resolve_axis("concat", axis, first.rank())?;
        for (i, part) in parts.iter().enumerate().skip(1) {
            first.same_device("concat", part)?;
            let agree = part.rank() == first.rank()
                && (0..first.rank()).all(|a| a == axis || part.shape()[a] == first.shape()[a]);
            if !agree {
                return Err(Error::ShapeMismatch {
                    op: "concat",
                    lhs: first.shape().to_vec(),
                    rhs: part.shape().to_vec(),
                    expected: format!(
                        "part {i} must have the rank of part 0 and its size on every axis but {axis}"
                    ),
                });
            }
        }
        let total: usize = parts.iter().map(|part| part.shape()[axis]).sum();
        let mut out_shape = first.shape().to_vec();
        out_shape[axis] = total;
        let y = Tensor::uninit(first.gpu(), &out_shape)?;
        let mut dispatches = Vec::with_capacity(parts.len());
        let mut offset = 0;
        for part in parts {
            if part.numel() > 0 {
                let region = CopyRegion::into_axis(part.shape(), axis, offset, total);
                dispatches.push(region_copy_dispatch(part, &y, &region, None)?);
            }
            offset += part.shape()[axis];
        }
        if !dispatches.is_empty() {
            first.gpu().submit(&[], &dispatches)?;
        }
        Ok(y)
    }

    /// Cuts `self` along `axis` into consecutive parts of `sizes` entries, which must add up
    /// to the axis. This is the backward of [`Tensor::concat`]: the gradient of each part is
    /// its slice of the output's gradient. One submission for all parts.
    pub fn split(&self, axis: isize, sizes: &[usize]) -> Result<Vec<Tensor>> {
        let axis = resolve_axis("split", axis, self.rank())?;
        let n = self.shape()[axis];
        if sizes.iter().sum::<usize>() != n {
            return Err(Error::invalid(
                "split",
                format!(
                    "sizes {sizes:?} add up to {}, but axis {axis} of shape {:?} has {n} entries",
                    sizes.iter().sum::<usize>(),
                    self.shape()
                ),
            ));
        }
        let mut parts = Vec::with_capacity(sizes.len());
        let mut dispatches = Vec::with_capacity(sizes.len());
        let mut start = 0;
        for &size in sizes {
            let mut shape = self.shape().to_vec();
            shape[axis] = size;
            let part = Tensor::uninit(self.gpu(), &shape)?;
            if part.numel() > 0 {
                let region = CopyRegion::slice(self.shape(), axis, start, start + size);
                dispatches.push(region_copy_dispatch(self, &part, &region, None)?);
            }
            parts.push(part);
            start += size;
        }
        if !dispatches.is_empty() {
            self.gpu().submit(&[], &dispatches)?;
        }
        Ok(parts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simplifying_drops_unit_axes_and_merges_axes_stepped_as_one() {
        // A slice of the last axis of [4096, 768]: 4096 rows of 256.
        let slice = CopyRegion::slice(&[4096, 768], 1, 256, 512).simplified();
        assert_eq!(slice.shape, [1, 1, 4096, 256]);
        assert_eq!(slice.in_strides, [0, 0, 768, 1]);
        assert_eq!(slice.out_strides, [0, 0, 256, 1]);
        assert_eq!(slice.in_offset, 256);
        // A slice of the first axis is one contiguous run.
        let rows = CopyRegion::slice(&[10, 3, 5], 0, 2, 7).simplified();
        assert_eq!(rows.shape, [1, 1, 1, 75]);
        assert_eq!((rows.in_offset, rows.in_strides[3]), (30, 1));
        // A transpose merges nothing.
        let transpose = CopyRegion {
            shape: [1, 1, 3, 5],
            in_offset: 0,
            in_strides: [0, 0, 1, 3],
            out_offset: 0,
            out_strides: [0, 0, 5, 1],
        };
        assert_eq!(transpose.simplified(), transpose);
        // A broadcast over two axes merges them (x steps 0 through both).
        let broadcast = CopyRegion {
            shape: [2, 3, 4, 1],
            in_offset: 0,
            in_strides: [1, 0, 0, 0],
            out_offset: 0,
            out_strides: [12, 4, 1, 1],
        };
        let merged = broadcast.simplified();
        assert_eq!(merged.shape, [1, 1, 2, 12]);
        assert_eq!(merged.in_strides, [0, 0, 1, 0]);
        assert_eq!(merged.out_strides, [0, 0, 12, 1]);
    }
}
