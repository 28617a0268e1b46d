//! The k largest entries of each row (`shaders/top_k.wgsl`): beam search's choice of each
//! hypothesis's next tokens, made on the GPU so that only k values and indices per row
//! come back.

use crate::error::{Error, Result};
use crate::gpu::{Access, Dispatch, Gpu, KernelSpec, ShaderSource};
use crate::tensor::{Indices, Tensor};

/// The top-k module, `shaders/top_k.wgsl`.
pub static SHADER: ShaderSource =
    ShaderSource::new("top_k", include_str!("../../shaders/top_k.wgsl"));

/// The largest k the kernel keeps (each invocation holds its own k best in registers):
/// beam search's widest beam, 16, plus the two tokens it never decodes (PAD and BOS).
pub const MAX_K: usize = 18;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    cols: u32,
    k: u32,
    pad: u32,
}

/// How the kernel spreads a row over invocations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopKVariant {
    /// One invocation per row (`top_k_rows`): for short rows, where a workgroup's fixed cost
    /// outweighs the scan.
    Rows,
    /// One workgroup of 64 per row (`top_k`), each invocation a strided slice, merged once.
    Workgroup,
}

impl TopKVariant {
    /// Both variants.
    pub const ALL: [TopKVariant; 2] = [TopKVariant::Rows, TopKVariant::Workgroup];

    /// The variant for rows of `cols` entries on `gpu`: on a CPU-like adapter always one
    /// invocation per row (the invocations are SIMD lanes, and a workgroup's barrier is what
    /// costs); on a GPU one invocation per row up to [`ROWS_VARIANT_MAX_COLS`], a workgroup
    /// past it.
    pub fn choose(gpu: &Gpu, cols: usize) -> TopKVariant {
        if gpu.is_cpu_like() || cols <= ROWS_VARIANT_MAX_COLS {
            TopKVariant::Rows
        } else {
            TopKVariant::Workgroup
        }
    }
}

/// The longest row one invocation scans alone on a GPU.
pub const ROWS_VARIANT_MAX_COLS: usize = 512;

/// Invocations per workgroup, both variants.
const WORKGROUP: u32 = 64;

fn top_k_spec(variant: TopKVariant) -> KernelSpec {
    KernelSpec {
        source: &SHADER,
        entry: match variant {
            TopKVariant::Rows => "top_k_rows",
            TopKVariant::Workgroup => "top_k",
        },
        bindings: &[
            Access::Read,
            Access::ReadWrite,
            Access::ReadWrite,
            Access::Uniform,
        ],
        constants: Vec::new(),
    }
}

/// Every kernel variant [`top_k_dispatch`] builds.
pub fn kernel_specs() -> Vec<KernelSpec> {
    TopKVariant::ALL.map(top_k_spec).to_vec()
}

/// Checks that the last axis of `shape` (`[…, cols]`) has at least `k` entries and that k is
/// between 1 and [`MAX_K`]; returns the rows and the columns.
pub fn check_top_k(shape: &[usize], k: usize) -> Result<(usize, usize)> {
    let Some((&cols, outer)) = shape.split_last() else {
        return Err(Error::invalid(
            "top_k",
            "needs at least one axis, got a scalar",
        ));
    };
    if k == 0 || k > MAX_K || k > cols {
        return Err(Error::invalid(
            "top_k",
            format!(
                "k {k} must be between 1 and {MAX_K}, and at most the last axis of shape \
                 {shape:?}"
            ),
        ));
    }
    Ok((outer.iter().product(), cols))
}

/// Records the `k` largest entries of each row of `x` (`[…, cols]`) into `values` (f32) and
/// `indices` (u32 column numbers), both `[…, k]`, best first, the lower index first among
/// equal values; `variant`, or the one [`TopKVariant::choose`] picks for the row length.
pub fn top_k_dispatch(
    x: &Tensor,
    values: &Tensor,
    indices: &Indices,
    k: usize,
    variant: Option<TopKVariant>,
) -> Result<Dispatch> {
    let gpu = x.gpu();
    let (rows, cols) = check_top_k(x.shape(), k)?;
    let params = Params {
        rows: rows as u32,
        cols: cols as u32,
        k: k as u32,
        pad: 0,
    };
    let variant = variant.unwrap_or_else(|| TopKVariant::choose(gpu, cols));
    let workgroups = match variant {
        TopKVariant::Rows => (rows as u32).div_ceil(WORKGROUP),
        TopKVariant::Workgroup => rows as u32,
    };
    gpu.dispatch(
        &top_k_spec(variant),
        &[x.buffer(), values.buffer(), indices.buffer()],
        &params,
        gpu.grid(workgroups),
    )
}

/// CPU reference of [`top_k_dispatch`]: each row's `k` largest (index, value) pairs, best
/// first, the lower index first among equal values.
pub fn top_k_cpu(x: &[f32], cols: usize, k: usize) -> Vec<Vec<(u32, f32)>> {
    x.chunks(cols.max(1))
        .map(|row| {
            let mut best: Vec<(u32, f32)> = Vec::with_capacity(k + 1);
            for (index, &value) in row.iter().enumerate() {
                // Sorted best first: insert after every entry at least as large.
                let at = best.partition_point(|&(_, kept)| kept >= value);
                if at < k {
                    best.insert(at, (index as u32, value));
                    best.truncate(k);
                }
            }
            best
        })
        .collect()
}
