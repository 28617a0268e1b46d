//! Copies (`shaders/copy.wgsl`): permute and transpose of any axes up to rank 4,
//! broadcast (expand), and plain copies.

use crate::error::{Error, Result};
use crate::gpu::{Access, Copy, Dispatch, KernelSpec, ShaderSource};
use crate::kernels::{
    broadcast_shapes, broadcast_strides, check_rank, contiguous_strides, pad_to_rank4, WORKGROUP_1D,
};
use crate::tensor::{resolve_axis, Tensor};

pub static SHADER: ShaderSource = ShaderSource {
    family: "copy",
    wgsl: include_str!("../../shaders/copy.wgsl"),
};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    len: u32,
    pad: [u32; 3],
    out_shape: [u32; 4],
    in_strides: [u32; 4],
}

/// Records y[c] = x[Σ c·in_strides] for every coordinate c of y (strides padded to rank 4).
pub fn strided_copy_dispatch(x: &Tensor, y: &Tensor, in_strides: [u32; 4]) -> Result<Dispatch> {
    let gpu = x.gpu();
    let len = y.numel() as u32;
    let params = Params {
        len,
        pad: [0; 3],
        out_shape: pad_to_rank4(y.shape(), 1),
        in_strides,
    };
    let spec = KernelSpec {
        source: &SHADER,
        entry: "strided_copy",
        bindings: &[Access::Read, Access::ReadWrite, Access::Uniform],
        constants: Vec::new(),
    };
    gpu.dispatch(
        &spec,
        &[x.buffer(), y.buffer()],
        &params,
        gpu.grid(len.div_ceil(WORKGROUP_1D)),
    )
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

/// CPU reference of [`Tensor::permute`]: out axis i is input axis perm[i].
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
                source: self.buffer().clone(),
                destination: y.buffer().clone(),
                bytes: self.byte_len(),
            };
            self.gpu().submit(&[copy], &[])?;
        }
        Ok(y)
    }
}
