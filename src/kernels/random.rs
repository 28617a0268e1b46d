//! Dropout (`shaders/random.wgsl`) from a counter-based random generator: element i of a
//! dropout keeps its value, scaled by 1/(1 − p), unless the hash of (seed, stream, i) falls
//! below p·2³². The mask is never stored: the backward is the same dropout applied to the
//! gradient (same seed, same stream, same bits). [`random_bits`] is the CPU reference,
//! bit-exact.

use crate::error::{Error, Result};
use crate::gpu::{Access, Dispatch, KernelSpec, ShaderSource};
use crate::kernels::WORKGROUP_1D;
use crate::tensor::{Indices, Tensor};

/// The dropout module, `shaders/random.wgsl`.
pub static SHADER: ShaderSource =
    ShaderSource::new("random", include_str!("../../shaders/random.wgsl"));

/// Chris Wellons's lowbias32, as the shader's `mix`.
fn mix(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^= x >> 16;
    x
}

/// The random bits of element `index` of dropout `stream` under `seed`.
pub fn random_bits(seed: u32, stream: u32, index: u32) -> u32 {
    let key = mix(seed ^ mix(stream ^ 0x9e37_79b9));
    mix(mix(index) ^ key)
}

/// The drop probability as the shader's threshold, round(p·2³²), after checking that p is
/// in [0, 1).
pub fn drop_threshold(p: f32) -> Result<u32> {
    if !(0.0..1.0).contains(&p) {
        return Err(Error::invalid(
            "dropout",
            format!("the drop probability p = {p} must be in [0, 1)"),
        ));
    }
    // The largest f32 below 1 gives 2³² − 256: the clamp only guards the cast.
    Ok((f64::from(p) * 4_294_967_296.0)
        .round()
        .min(f64::from(u32::MAX)) as u32)
}

/// Which of `len` elements dropout `stream` keeps under `seed` with drop probability `p`.
pub fn keep_mask(seed: u32, stream: u32, len: usize, p: f32) -> Result<Vec<bool>> {
    let threshold = drop_threshold(p)?;
    Ok((0..len as u32)
        .map(|i| random_bits(seed, stream, i) >= threshold)
        .collect())
}

/// CPU reference of the dropout kernel: x·1/(1 − p) where kept, 0 where dropped.
pub fn dropout_cpu(x: &[f32], seed: u32, stream: u32, p: f32) -> Result<Vec<f32>> {
    let scale = keep_scale(p);
    Ok(keep_mask(seed, stream, x.len(), p)?
        .into_iter()
        .zip(x)
        .map(|(keep, &v)| if keep { v * scale } else { 0.0 })
        .collect())
}

fn keep_scale(p: f32) -> f32 {
    1.0 / (1.0 - p)
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct DropoutParams {
    len: u32,
    threshold: u32,
    scale: f32,
    stream: u32,
}

/// Records y = dropout(x) with the seed read from `seed` (one u32) when the dispatch runs.
pub fn dropout_dispatch(
    x: &Tensor,
    seed: &Indices,
    y: &Tensor,
    p: f32,
    stream: u32,
) -> Result<Dispatch> {
    if seed.numel() != 1 || x.shape() != y.shape() {
        return Err(Error::invalid(
            "dropout",
            format!(
                "needs one seed and x and y of one shape; got a seed of shape {:?}, x {:?}, \
                 y {:?}",
                seed.shape(),
                x.shape(),
                y.shape()
            ),
        ));
    }
    let gpu = x.gpu();
    let len = x.numel() as u32;
    let params = DropoutParams {
        len,
        threshold: drop_threshold(p)?,
        scale: keep_scale(p),
        stream,
    };
    gpu.dispatch(
        &dropout_spec(),
        &[x.buffer(), seed.buffer(), y.buffer()],
        &params,
        gpu.grid(len.div_ceil(WORKGROUP_1D)),
    )
}

fn dropout_spec() -> KernelSpec {
    KernelSpec {
        source: &SHADER,
        entry: "dropout",
        bindings: &[
            Access::Read,
            Access::Read,
            Access::ReadWrite,
            Access::Uniform,
        ],
        constants: Vec::new(),
    }
}

/// Every kernel variant [`dropout_dispatch`] can build: the one.
pub fn kernel_specs() -> Vec<KernelSpec> {
    vec![dropout_spec()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_threshold_spans_the_u32_range() {
        assert_eq!(drop_threshold(0.0).unwrap(), 0);
        assert_eq!(drop_threshold(0.5).unwrap(), 1 << 31);
        assert_eq!(drop_threshold(0.25).unwrap(), 1 << 30);
        for bad in [-0.1, 1.0, 1.5, f32::NAN] {
            let message = drop_threshold(bad).unwrap_err().to_string();
            assert!(message.contains(&format!("p = {bad}")), "{message}");
        }
    }
}
