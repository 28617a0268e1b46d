//! The kernel library: one module per WGSL file of `shaders/`, each with its launcher
//! (recording a [`crate::gpu::Dispatch`]), its CPU reference, and its eager calls on
//! [`crate::Tensor`].

pub mod attention;
pub mod conv;
pub mod copy;
pub mod elementwise;
pub mod gather;
pub mod layernorm;
pub mod matmul;
pub mod optim;
pub mod random;
pub mod recurrent;
pub mod reduce;
pub mod softmax;
pub mod top_k;

use crate::error::{Error, Result};
use crate::gpu::{Gpu, KernelSpec, ShaderSource, SizeConstant};

/// Every shader of the crate, for validation and for listing.
pub static SHADERS: &[&ShaderSource] = &[
    &conv::SHADER,
    &attention::SHADER,
    &copy::SHADER,
    &elementwise::SHADER,
    &layernorm::SHADER,
    &gather::SHADER,
    &matmul::SHADER,
    &matmul::SUBGROUP_SHADER,
    &optim::SHADER,
    &random::SHADER,
    &recurrent::SHADER,
    &reduce::SHADER,
    &softmax::SHADER,
    &top_k::SHADER,
];

/// Every kernel variant the launchers can build, on any adapter: each module's
/// `kernel_specs` in turn, size constants at the samples each takes (see
/// [`SizeConstant`]). `tests/cross_compile.rs` compiles every one for each backend.
pub fn every_kernel_spec() -> Vec<KernelSpec> {
    [
        attention::kernel_specs(),
        conv::kernel_specs(),
        copy::kernel_specs(),
        elementwise::kernel_specs(),
        gather::kernel_specs(),
        layernorm::kernel_specs(),
        matmul::kernel_specs(),
        optim::kernel_specs(),
        random::kernel_specs(),
        recurrent::kernel_specs(),
        reduce::kernel_specs(),
        softmax::kernel_specs(),
        top_k::kernel_specs(),
    ]
    .concat()
}

/// Shader families that compilers other than naga cannot take, and why: their variants are
/// listed by [`variants_for_other_compilers`] but marked excluded.
pub const EXCLUDED_FROM_OTHER_COMPILERS: &[(&str, &str)] = &[(
    "matmul_coop",
    "it enables wgpu_cooperative_matrix, an extension of wgpu's own that Tint does not know",
)];

/// Every variant of [`every_kernel_spec`] as a WGSL compiler other than naga (Tint, the
/// compiler of Chrome and Dawn) is to compile it: a JSON array of `{"family", "entry",
/// "constants": {NAME: value}, "wgsl", "excluded": null or why}`, where `wgsl` is the
/// module as the WGSL specification has it (with the `enable` directives naga refuses) and
/// `constants` the values of its `override`s. `tests/tint.rs` feeds it to
/// `scripts/tint-check.mjs`.
pub fn variants_for_other_compilers() -> serde_json::Value {
    let variants = every_kernel_spec()
        .iter()
        .map(|spec| {
            let constants: serde_json::Map<String, serde_json::Value> = spec
                .constants
                .iter()
                .map(|&(name, value)| (name.to_string(), serde_json::json!(value)))
                .collect();
            let excluded = EXCLUDED_FROM_OTHER_COMPILERS
                .iter()
                .find(|(family, _)| *family == spec.source.family)
                .map(|(_, why)| *why);
            serde_json::json!({
                "family": spec.source.family,
                "entry": spec.entry,
                "constants": constants,
                "wgsl": spec.source.standard_wgsl(),
                "excluded": excluded,
            })
        })
        .collect();
    serde_json::Value::Array(variants)
}

/// Invocations per workgroup of the one-element-per-invocation kernels.
pub const WORKGROUP_1D: u32 = 256;

/// The most elements of a row one invocation handles on a CPU-like adapter.
const MAX_SPAN: usize = 256;

/// Invocations a CPU-like adapter needs to keep every thread busy: spans grow only while
/// at least this many remain.
const MIN_INVOCATIONS: usize = 4096;

/// How many consecutive elements of a row one invocation handles (the `SPAN` override of
/// the gather and copy kernels), for `rows` rows of `row_len` elements.
///
/// 1 on GPUs, where neighbouring invocations then touch neighbouring addresses. On
/// CPU-like adapters (lavapipe) locating an element (integer divisions) costs more than
/// copying it and each invocation has a fixed cost, so a span is as long as leaves
/// `MIN_INVOCATIONS` invocations, up to a whole row or `MAX_SPAN` columns: a power of two,
/// so that few kernel variants get compiled.
pub fn columns_per_invocation(gpu: &Gpu, rows: usize, row_len: usize) -> u32 {
    if !gpu.is_cpu_like() {
        return 1;
    }
    let wanted = (rows * row_len / MIN_INVOCATIONS)
        .min(row_len.next_power_of_two())
        .clamp(1, MAX_SPAN);
    // The largest power of two not above `wanted`.
    1 << wanted.ilog2()
}

/// Every span [`columns_per_invocation`] picks: the powers of two up to `MAX_SPAN`.
pub fn chosen_spans() -> impl Iterator<Item = u32> {
    (0..=MAX_SPAN.ilog2()).map(|power| 1 << power)
}

/// The `SPAN` constant of the gather and copy kernels: the span [`columns_per_invocation`]
/// picks, or any span a caller names.
pub const SPAN: SizeConstant = SizeConstant {
    name: "SPAN",
    values: 1..=u32::MAX,
};

/// Workgroups for `rows` rows of `row_len` elements, `span` elements per invocation.
pub fn span_grid(gpu: &Gpu, rows: usize, row_len: usize, span: u32) -> [u32; 3] {
    let invocations = rows * row_len.div_ceil(span as usize);
    gpu.grid((invocations as u32).div_ceil(WORKGROUP_1D))
}

/// The highest rank the strided kernels (broadcasting, permute) handle.
pub const MAX_RANK: usize = 4;

/// Fails if `shape` has more axes than the strided kernels handle.
pub fn check_rank(op: &'static str, shape: &[usize]) -> Result<()> {
    if shape.len() > MAX_RANK {
        return Err(Error::invalid(
            op,
            format!(
                "shape {shape:?} has rank {}, at most {MAX_RANK} is supported",
                shape.len()
            ),
        ));
    }
    Ok(())
}

/// Shapes that broadcast together (numpy rules) at any rank, rewritten as shapes of at most
/// [`MAX_RANK`] axes with the same elements in the same order: axes of size 1 everywhere
/// are dropped, and neighbouring axes that each operand either has in full or broadcasts
/// alike merge into one. `Some` when that fits in [`MAX_RANK`] axes,
/// `None` when the shapes do not broadcast or need more axes (a pattern such as
/// `[2, 1, 3, 1, 2]` against `[1, 4, 3, 2, 1]`).
pub fn coalesce_broadcast(shapes: &[&[usize]]) -> Option<Coalesced> {
    let rank = shapes.iter().map(|s| s.len()).max().unwrap_or(0);
    let dim = |s: &[usize], i: usize| {
        if i < rank - s.len() {
            1
        } else {
            s[i - (rank - s.len())]
        }
    };
    // Per axis of the output: its size, and which operands have it in full.
    let mut axes: Vec<(usize, Vec<bool>)> = Vec::new();
    for i in 0..rank {
        let sizes: Vec<usize> = shapes.iter().map(|s| dim(s, i)).collect();
        let out = sizes.iter().copied().find(|&d| d != 1).unwrap_or(1);
        if sizes.iter().any(|&d| d != out && d != 1) {
            return None;
        }
        if out == 1 {
            continue;
        }
        let full: Vec<bool> = sizes.iter().map(|&d| d == out).collect();
        match axes.last_mut() {
            Some(last) if last.1 == full => last.0 *= out,
            _ => axes.push((out, full)),
        }
    }
    if axes.len() > MAX_RANK {
        return None;
    }
    let operands = (0..shapes.len())
        .map(|k| {
            axes.iter()
                .map(|(size, full)| if full[k] { *size } else { 1 })
                .collect()
        })
        .collect();
    Some(Coalesced {
        operands,
        out: axes.iter().map(|axis| axis.0).collect(),
    })
}

/// Operands' shapes rewritten by [`coalesce_broadcast`]: free reshapes of at most
/// [`MAX_RANK`] axes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coalesced {
    /// Each operand's shape, in the order given.
    pub operands: Vec<Vec<usize>>,
    /// The broadcast output's shape.
    pub out: Vec<usize>,
}

/// How elementwise operands broadcast: [`plan_broadcast`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BroadcastPlan {
    /// The output's shape (numpy rules, any rank).
    pub out: Vec<usize>,
    /// Past [`MAX_RANK`] axes, the shapes the kernel runs on instead.
    pub coalesced: Option<Coalesced>,
}

/// How elementwise operands of `shapes` broadcast (numpy rules) at any rank: the output's
/// shape, and, when some operand has more than [`MAX_RANK`] axes, the shapes of free
/// reshapes that the kernels take instead ([`coalesce_broadcast`]). An error names the
/// shapes when they do not broadcast, or need more than four axes.
pub fn plan_broadcast(op: &'static str, shapes: &[&[usize]]) -> Result<BroadcastPlan> {
    let out = shapes.iter().try_fold(Vec::new(), |out, shape| {
        broadcast_shape_any_rank(&out, shape).map_err(|axis| {
            Error::invalid(
                op,
                format!(
                    "{shapes:?} do not broadcast: axis {axis} differs and is not 1 (numpy rules)"
                ),
            )
        })
    })?;
    if shapes.iter().all(|s| s.len() <= MAX_RANK) {
        return Ok(BroadcastPlan {
            out,
            coalesced: None,
        });
    }
    match coalesce_broadcast(shapes) {
        Some(coalesced) => Ok(BroadcastPlan {
            out,
            coalesced: Some(coalesced),
        }),
        None => Err(Error::invalid(
            op,
            format!(
                "{shapes:?} broadcast over more than {MAX_RANK} axes that cannot merge \
                 (neighbouring axes merge when each operand has both or broadcasts both)"
            ),
        )),
    }
}

/// `shape` as four u32s, padded on the left with `fill` (1 for dimensions, 0 for strides).
pub fn pad_to_rank4(shape: &[usize], fill: u32) -> [u32; 4] {
    let mut out = [fill; 4];
    let offset = 4 - shape.len();
    for (i, &d) in shape.iter().enumerate() {
        out[offset + i] = d as u32;
    }
    out
}

/// Row-major strides of a contiguous tensor of `shape`, in elements.
pub fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1];
    }
    strides
}

/// The numpy broadcast of two shapes, or an error naming both.
pub fn broadcast_shapes(op: &'static str, a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    check_rank(op, a)?;
    check_rank(op, b)?;
    broadcast_shape_any_rank(a, b).map_err(|axis| Error::ShapeMismatch {
        op,
        lhs: a.to_vec(),
        rhs: b.to_vec(),
        expected: format!(
            "axis {axis} differs and neither is 1, so they do not broadcast (numpy rules)"
        ),
    })
}

/// The numpy broadcast of two shapes of any rank; `Err(axis)` for the first axis (of the
/// result) that differs where neither is 1.
pub fn broadcast_shape_any_rank(
    a: &[usize],
    b: &[usize],
) -> std::result::Result<Vec<usize>, usize> {
    let rank = a.len().max(b.len());
    let dim = |s: &[usize], i: usize| {
        if i < rank - s.len() {
            1
        } else {
            s[i - (rank - s.len())]
        }
    };
    (0..rank)
        .map(|i| match (dim(a, i), dim(b, i)) {
            (x, y) if x == y => Ok(x),
            (1, y) => Ok(y),
            (x, 1) => Ok(x),
            _ => Err(i),
        })
        .collect()
}

/// Strides (in elements, padded to rank 4) that read a contiguous tensor of `shape` at each
/// coordinate of the broadcast shape `out`: 0 along every axis it is broadcast over.
pub fn broadcast_strides(shape: &[usize], out: &[usize]) -> [u32; 4] {
    let own = contiguous_strides(shape);
    let mut strides = [0u32; 4];
    let offset = 4 - out.len();
    let lead = out.len() - shape.len();
    for (i, (&d, &s)) in shape.iter().zip(&own).enumerate() {
        if d != 1 {
            strides[offset + lead + i] = s as u32;
        }
    }
    strides
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every shader parses and validates with naga, the compiler wgpu itself uses.
    #[test]
    fn every_shader_validates_with_naga() {
        for shader in SHADERS {
            let module = naga::front::wgsl::parse_str(shader.wgsl).unwrap_or_else(|e| {
                panic!("{}.wgsl: {}", shader.family, e.emit_to_string(shader.wgsl))
            });
            naga::valid::Validator::new(
                naga::valid::ValidationFlags::all(),
                naga::valid::Capabilities::all(),
            )
            .validate(&module)
            .unwrap_or_else(|e| {
                panic!("{}.wgsl: {}", shader.family, e.emit_to_string(shader.wgsl))
            });
        }
    }

    #[test]
    fn broadcasting_follows_numpy() {
        assert_eq!(
            broadcast_shapes("t", &[3, 4, 5], &[5]).unwrap(),
            vec![3, 4, 5]
        );
        assert_eq!(broadcast_shapes("t", &[3, 1], &[1, 4]).unwrap(), vec![3, 4]);
        assert_eq!(broadcast_shapes("t", &[], &[2, 2]).unwrap(), vec![2, 2]);
        let err = broadcast_shapes("add", &[3, 4], &[5])
            .unwrap_err()
            .to_string();
        assert!(err.contains("[3, 4]") && err.contains("[5]"), "{err}");
        assert_eq!(broadcast_strides(&[5], &[3, 4, 5]), [0, 0, 0, 1]);
        assert_eq!(broadcast_strides(&[3, 1], &[3, 4]), [0, 0, 1, 0]);
        assert_eq!(contiguous_strides(&[2, 3, 4]), vec![12, 4, 1]);
    }
}
