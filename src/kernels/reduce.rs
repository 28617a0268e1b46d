//! Reductions along one axis (`shaders/reduce.wgsl`): sum, max, mean.

use crate::error::{Error, Result};
use crate::gpu::{Access, Dispatch, KernelSpec, ShaderSource};
use crate::kernels::WORKGROUP_1D;
use crate::tensor::{resolve_axis, Tensor};

/// The reduction module, `shaders/reduce.wgsl`.
pub static SHADER: ShaderSource =
    ShaderSource::new("reduce", include_str!("../../shaders/reduce.wgsl"));

/// The reduction to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reduce {
    /// The sum of the values along the axis.
    Sum,
    /// The largest value along the axis.
    Max,
    /// The sum divided by the length of the axis.
    Mean,
}

impl Reduce {
    /// Every reduction, in the order of the shader's `OP` codes.
    pub const ALL: [Reduce; 3] = [Reduce::Sum, Reduce::Max, Reduce::Mean];

    fn code(self) -> u32 {
        self as u32
    }

    fn name(self) -> &'static str {
        match self {
            Reduce::Sum => "sum",
            Reduce::Max => "max",
            Reduce::Mean => "mean",
        }
    }
}

/// Which shader entry point reduces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduceVariant {
    /// One invocation per output element.
    Strided,
    /// One workgroup per output element, for long contiguous rows.
    Rows,
}

impl ReduceVariant {
    /// Every variant: those the kernel list compiles, and tests and benchmarks try.
    pub const ALL: [ReduceVariant; 2] = [ReduceVariant::Strided, ReduceVariant::Rows];

    /// Rows when the axis is innermost and long enough to keep a workgroup busy.
    pub fn choose(inner: usize, n: usize) -> Self {
        if inner == 1 && n >= 1024 {
            ReduceVariant::Rows
        } else {
            ReduceVariant::Strided
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    outer: u32,
    n: u32,
    inner: u32,
    pad: u32,
}

/// `shape` seen as [outer, n, inner] around `axis`.
pub fn split_at_axis(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    let outer = shape[..axis].iter().product();
    let inner = shape[axis + 1..].iter().product();
    (outer, shape[axis], inner)
}

/// Records the reduction of `x` over `axis` into `y` ([outer, inner] elements).
pub fn reduce_dispatch(
    x: &Tensor,
    y: &Tensor,
    axis: usize,
    op: Reduce,
    variant: ReduceVariant,
) -> Result<Dispatch> {
    let gpu = x.gpu();
    let (outer, n, inner) = split_at_axis(x.shape(), axis);
    let params = Params {
        outer: outer as u32,
        n: n as u32,
        inner: inner as u32,
        pad: 0,
    };
    let workgroups = match variant {
        ReduceVariant::Strided => ((outer * inner) as u32).div_ceil(WORKGROUP_1D),
        ReduceVariant::Rows => outer as u32,
    };
    gpu.dispatch(
        &reduce_spec(op, variant),
        &[x.buffer(), y.buffer()],
        &params,
        gpu.grid(workgroups),
    )
}

fn reduce_spec(op: Reduce, variant: ReduceVariant) -> KernelSpec {
    KernelSpec {
        source: &SHADER,
        entry: match variant {
            ReduceVariant::Strided => "reduce_strided",
            ReduceVariant::Rows => "reduce_rows",
        },
        bindings: &[Access::Read, Access::ReadWrite, Access::Uniform],
        constants: vec![("OP", f64::from(op.code()))],
    }
}

/// Every kernel variant [`reduce_dispatch`] can build.
pub fn kernel_specs() -> Vec<KernelSpec> {
    Reduce::ALL
        .into_iter()
        .flat_map(|op| ReduceVariant::ALL.map(|variant| reduce_spec(op, variant)))
        .collect()
}

/// CPU reference: reduces `x` of `shape` over `axis`, in f64.
pub fn reduce_cpu(x: &[f32], shape: &[usize], axis: usize, op: Reduce) -> Vec<f32> {
    let (outer, n, inner) = split_at_axis(shape, axis);
    let mut y = Vec::with_capacity(outer * inner);
    for o in 0..outer {
        for i in 0..inner {
            let values = (0..n).map(|j| f64::from(x[(o * n + j) * inner + i]));
            let v = match op {
                Reduce::Sum => values.sum(),
                Reduce::Max => values.fold(f64::NEG_INFINITY, f64::max),
                Reduce::Mean => values.sum::<f64>() / n as f64,
            };
            y.push(v as f32);
        }
    }
    y
}

impl Tensor {
    /// Reduces over `axis` (negative counts from the end); `keep_dim` keeps it with size 1.
    pub fn reduce(&self, op: Reduce, axis: isize, keep_dim: bool) -> Result<Tensor> {
        let axis = resolve_axis(op.name(), axis, self.rank())?;
        let (_, n, inner) = split_at_axis(self.shape(), axis);
        self.reduce_with(op, axis, keep_dim, ReduceVariant::choose(inner, n))
    }

    /// [`Tensor::reduce`] with the kernel variant chosen by the caller (for tests and benches).
    pub fn reduce_with(
        &self,
        op: Reduce,
        axis: usize,
        keep_dim: bool,
        variant: ReduceVariant,
    ) -> Result<Tensor> {
        if axis >= self.rank() {
            return Err(Error::invalid(
                op.name(),
                format!("axis {axis} is out of range for shape {:?}", self.shape()),
            ));
        }
        if op == Reduce::Mean && self.shape()[axis] == 0 {
            return Err(Error::ZeroSized {
                op: "mean",
                shape: self.shape().to_vec(),
                why: "the mean over an empty axis is undefined (0/0)",
            });
        }
        let mut out_shape = self.shape().to_vec();
        if keep_dim {
            out_shape[axis] = 1;
        } else {
            out_shape.remove(axis);
        }
        let y = Tensor::uninit(self.gpu(), &out_shape)?;
        if y.numel() > 0 {
            let dispatch = reduce_dispatch(self, &y, axis, op, variant)?;
            self.gpu().submit(&[], &[dispatch])?;
        }
        Ok(y)
    }

    /// Sum over `axis`.
    pub fn sum(&self, axis: isize, keep_dim: bool) -> Result<Tensor> {
        self.reduce(Reduce::Sum, axis, keep_dim)
    }

    /// Maximum over `axis` (−∞ over an empty axis, as in ONNX).
    pub fn max(&self, axis: isize, keep_dim: bool) -> Result<Tensor> {
        self.reduce(Reduce::Max, axis, keep_dim)
    }

    /// Mean over `axis`; an error over an empty axis.
    pub fn mean(&self, axis: isize, keep_dim: bool) -> Result<Tensor> {
        self.reduce(Reduce::Mean, axis, keep_dim)
    }
}
