//! Layer normalisation over the trailing axes (`shaders/layernorm.wgsl`), forward and
//! backward, as PyTorch's `layer_norm` and ONNX's `LayerNormalization` define it.
//!
//! The tensor is viewed as [rows, d], where d is the product of the normalised axes
//! `[axis, rank)`. Each row gets its own mean and biased variance; the forward returns them
//! (as mean and rstd = 1/√(var + eps)) beside y, since the backward needs them.

use crate::error::{Error, Result};
use crate::gpu::{Access, Dispatch, Gpu, KernelSpec, ShaderSource};
use crate::kernels::WORKGROUP_1D;
use crate::tensor::{resolve_axis, Tensor};

/// The layer norm module, `shaders/layernorm.wgsl`: forward, dx, and the partial sums of
/// dgain and dbias.
pub static SHADER: ShaderSource =
    ShaderSource::new("layernorm", include_str!("../../shaders/layernorm.wgsl"));

/// How the row kernels (the forward, and dx of the backward) split the work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LayerNormVariant {
    /// One invocation loops over a whole row; no barriers. For CPU-like adapters.
    RowPerInvocation,
    /// A workgroup of 256 invocations shares a row and sums in workgroup memory; reads are
    /// coalesced. For real GPUs.
    RowPerWorkgroup,
}

impl LayerNormVariant {
    /// Every variant: those the kernel list compiles, and tests and benchmarks try.
    pub const ALL: [LayerNormVariant; 2] = [
        LayerNormVariant::RowPerInvocation,
        LayerNormVariant::RowPerWorkgroup,
    ];

    /// The rule: a CPU adapter pays a coroutine switch per barrier and gains nothing from
    /// coalescing, so it loops per invocation (on lavapipe that was as fast or faster at
    /// every shape measured, down to 2 rows of 524288). A real GPU wants the coalesced
    /// reads of a workgroup per row once rows are longer than a few dozen floats.
    pub fn choose(gpu: &Gpu, d: usize) -> Self {
        if !gpu.is_cpu_like() && d >= 64 {
            LayerNormVariant::RowPerWorkgroup
        } else {
            LayerNormVariant::RowPerInvocation
        }
    }

    /// What gets one row, short enough for a bench table.
    pub fn name(self) -> &'static str {
        match self {
            LayerNormVariant::RowPerInvocation => "invocation",
            LayerNormVariant::RowPerWorkgroup => "workgroup",
        }
    }

    /// Workgroups that cover `rows` rows.
    fn workgroups(self, rows: usize) -> u32 {
        match self {
            LayerNormVariant::RowPerInvocation => (rows as u32).div_ceil(WORKGROUP_1D),
            LayerNormVariant::RowPerWorkgroup => rows as u32,
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    d: u32,
    eps: f32,
    rows_per_chunk: u32,
}

impl Params {
    fn new(rows: usize, d: usize) -> Params {
        Params {
            rows: rows as u32,
            d: d as u32,
            eps: 0.0,
            rows_per_chunk: 1,
        }
    }
}

/// The forward's outputs.
#[derive(Debug, Clone)]
pub struct LayerNormForward {
    /// The normalised input, scaled and shifted: the input's shape.
    pub y: Tensor,
    /// The mean of each row, shaped as the input with the normalised axes set to 1
    /// (ONNX's `Mean` output).
    pub mean: Tensor,
    /// 1/√(var + eps) of each row, shaped like `mean` (ONNX's `InvStdDev` output).
    pub rstd: Tensor,
}

/// The backward's outputs: the gradients of the loss with respect to the forward's inputs.
#[derive(Debug, Clone)]
pub struct LayerNormGrads {
    /// With respect to x: the input's shape.
    pub dx: Tensor,
    /// With respect to the gain, Σ_rows dy·x̂: the normalised axes' shape. Computed even
    /// when the forward had no gain (it is then the gradient of an implicit gain of ones).
    pub dgain: Tensor,
    /// With respect to the bias, Σ_rows dy: the normalised axes' shape.
    pub dbias: Tensor,
}

/// A layer norm's geometry: the input viewed as [rows, d] around `axis`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerNormShape {
    /// The first normalised axis (non-negative).
    pub axis: usize,
    /// The number of rows: the product of the axes before `axis`.
    pub rows: usize,
    /// The row length: the product of the normalised axes.
    pub d: usize,
    /// The normalised axes, `shape[axis..]`: the shape of gain, bias, dgain and dbias.
    pub normalized: Vec<usize>,
    /// The input's shape with the normalised axes set to 1: the shape of mean and rstd.
    pub stats: Vec<usize>,
}

impl LayerNormShape {
    /// Splits `shape` at `axis` (negative counts from the end).
    pub fn new(op: &'static str, shape: &[usize], axis: isize) -> Result<LayerNormShape> {
        let axis = resolve_axis(op, axis, shape.len())?;
        let rows = shape[..axis].iter().product();
        let d = shape[axis..].iter().product();
        if d == 0 && rows > 0 {
            return Err(Error::ZeroSized {
                op,
                shape: shape.to_vec(),
                why: "the normalised axes hold no elements, so each row's mean is 0/0",
            });
        }
        let stats = shape
            .iter()
            .enumerate()
            .map(|(i, &dim)| if i < axis { dim } else { 1 })
            .collect();
        Ok(LayerNormShape {
            axis,
            rows,
            d,
            normalized: shape[axis..].to_vec(),
            stats,
        })
    }

    /// Fails unless `tensor` (the op's `what`) has the shape `expected`.
    fn check(
        &self,
        op: &'static str,
        what: &str,
        tensor: &Tensor,
        expected: &[usize],
    ) -> Result<()> {
        if tensor.shape() == expected {
            return Ok(());
        }
        Err(Error::ShapeMismatch {
            op,
            lhs: tensor.shape().to_vec(),
            rhs: expected.to_vec(),
            expected: format!(
                "{what} must have the shape {expected:?} (normalising from axis {})",
                self.axis
            ),
        })
    }
}

/// Fails unless `eps` is positive and finite: then rstd is finite even for a constant row,
/// whose y is the bias rather than 0/0.
fn check_eps(op: &'static str, eps: f32) -> Result<()> {
    if eps > 0.0 && eps.is_finite() {
        Ok(())
    } else {
        Err(Error::invalid(
            op,
            format!("eps must be positive and finite, got {eps}"),
        ))
    }
}

fn flag(present: bool) -> f64 {
    f64::from(u8::from(present))
}

fn forward_spec(variant: LayerNormVariant, has_gain: bool, has_bias: bool) -> KernelSpec {
    KernelSpec {
        source: &SHADER,
        entry: match variant {
            LayerNormVariant::RowPerInvocation => "forward_row_per_invocation",
            LayerNormVariant::RowPerWorkgroup => "forward_row_per_workgroup",
        },
        bindings: &[
            Access::Read,
            Access::Read,
            Access::Read,
            Access::ReadWrite,
            Access::ReadWrite,
            Access::ReadWrite,
            Access::Uniform,
        ],
        constants: vec![("HAS_GAIN", flag(has_gain)), ("HAS_BIAS", flag(has_bias))],
    }
}

fn input_grad_spec(variant: LayerNormVariant, has_gain: bool) -> KernelSpec {
    KernelSpec {
        source: &SHADER,
        entry: match variant {
            LayerNormVariant::RowPerInvocation => "backward_row_per_invocation",
            LayerNormVariant::RowPerWorkgroup => "backward_row_per_workgroup",
        },
        bindings: &[
            Access::Read,
            Access::Read,
            Access::Read,
            Access::Read,
            Access::Read,
            Access::ReadWrite,
            Access::Uniform,
        ],
        constants: vec![("HAS_GAIN", flag(has_gain))],
    }
}

fn param_grads_partial_spec() -> KernelSpec {
    KernelSpec {
        source: &SHADER,
        entry: "param_grads_partial",
        bindings: &[
            Access::Read,
            Access::Read,
            Access::Read,
            Access::Read,
            Access::ReadWrite,
            Access::ReadWrite,
            Access::Uniform,
        ],
        constants: vec![],
    }
}

fn param_grads_fold_spec() -> KernelSpec {
    KernelSpec {
        source: &SHADER,
        entry: "param_grads_fold",
        bindings: &[
            Access::Read,
            Access::Read,
            Access::ReadWrite,
            Access::ReadWrite,
            Access::Uniform,
        ],
        constants: vec![],
    }
}

/// Every kernel variant the layer-norm launchers can build.
pub fn kernel_specs() -> Vec<KernelSpec> {
    let mut specs = Vec::new();
    for variant in LayerNormVariant::ALL {
        for has_gain in [false, true] {
            for has_bias in [false, true] {
                specs.push(forward_spec(variant, has_gain, has_bias));
            }
            specs.push(input_grad_spec(variant, has_gain));
        }
    }
    specs.extend([param_grads_partial_spec(), param_grads_fold_spec()]);
    specs
}

/// Records the forward of `x` (viewed as [rows, d]) into `out`.
pub fn layer_norm_dispatch(
    x: &Tensor,
    gain: Option<&Tensor>,
    bias: Option<&Tensor>,
    out: &LayerNormForward,
    shape: &LayerNormShape,
    eps: f32,
    variant: LayerNormVariant,
) -> Result<Dispatch> {
    let gpu = x.gpu();
    let params = Params {
        eps,
        ..Params::new(shape.rows, shape.d)
    };
    let spec = forward_spec(variant, gain.is_some(), bias.is_some());
    let placeholder = gpu.placeholder();
    gpu.dispatch(
        &spec,
        &[
            x.buffer(),
            gain.map_or(placeholder, Tensor::buffer),
            bias.map_or(placeholder, Tensor::buffer),
            out.y.buffer(),
            out.mean.buffer(),
            out.rstd.buffer(),
        ],
        &params,
        gpu.grid(variant.workgroups(shape.rows)),
    )
}

/// Records dx = rstd·(g − mean(g) − x̂·mean(g·x̂)), g = dy·gain, into `dx`.
#[allow(clippy::too_many_arguments)]
pub fn input_grad_dispatch(
    x: &Tensor,
    dy: &Tensor,
    gain: Option<&Tensor>,
    mean: &Tensor,
    rstd: &Tensor,
    dx: &Tensor,
    shape: &LayerNormShape,
    variant: LayerNormVariant,
) -> Result<Dispatch> {
    let gpu = x.gpu();
    let spec = input_grad_spec(variant, gain.is_some());
    gpu.dispatch(
        &spec,
        &[
            x.buffer(),
            dy.buffer(),
            gain.map_or(gpu.placeholder(), Tensor::buffer),
            mean.buffer(),
            rstd.buffer(),
            dx.buffer(),
        ],
        &Params::new(shape.rows, shape.d),
        gpu.grid(variant.workgroups(shape.rows)),
    )
}

/// Invocations the column sums of dgain and dbias aim for: enough to fill a GPU.
const PARAM_GRAD_INVOCATIONS: usize = 16384;
/// Fewest rows one invocation sums, so that the fold stays cheap beside the first stage.
const MIN_ROWS_PER_CHUNK: usize = 16;

/// How many rows each invocation of the first stage of dgain/dbias sums: the rows are cut
/// into `rows.div_ceil(rows_per_chunk)` chunks, one invocation per chunk and column.
pub fn rows_per_chunk(rows: usize, d: usize) -> usize {
    (rows * d)
        .div_ceil(PARAM_GRAD_INVOCATIONS)
        .max(MIN_ROWS_PER_CHUNK)
        .min(rows)
        .max(1)
}

/// Records the first stage of dgain = Σ dy·x̂ and dbias = Σ dy over the rows: the sums of
/// each chunk of `rows_per_chunk` rows into `dgain_partial` and `dbias_partial`
/// ([chunks, d]; with one chunk these are the gradients themselves).
#[allow(clippy::too_many_arguments)]
pub fn param_grads_partial_dispatch(
    x: &Tensor,
    dy: &Tensor,
    mean: &Tensor,
    rstd: &Tensor,
    dgain_partial: &Tensor,
    dbias_partial: &Tensor,
    shape: &LayerNormShape,
    rows_per_chunk: usize,
) -> Result<Dispatch> {
    let gpu = x.gpu();
    let chunks = shape.rows.div_ceil(rows_per_chunk);
    let params = Params {
        rows_per_chunk: rows_per_chunk as u32,
        ..Params::new(shape.rows, shape.d)
    };
    gpu.dispatch(
        &param_grads_partial_spec(),
        &[
            x.buffer(),
            dy.buffer(),
            mean.buffer(),
            rstd.buffer(),
            dgain_partial.buffer(),
            dbias_partial.buffer(),
        ],
        &params,
        gpu.grid(((chunks * shape.d) as u32).div_ceil(WORKGROUP_1D)),
    )
}

/// Records the second stage: each column's chunk sums added in chunk order.
pub fn param_grads_fold_dispatch(
    dgain_partial: &Tensor,
    dbias_partial: &Tensor,
    grads: &LayerNormGrads,
    shape: &LayerNormShape,
    rows_per_chunk: usize,
) -> Result<Dispatch> {
    let gpu = dgain_partial.gpu();
    let params = Params {
        rows_per_chunk: rows_per_chunk as u32,
        ..Params::new(shape.rows, shape.d)
    };
    gpu.dispatch(
        &param_grads_fold_spec(),
        &[
            dgain_partial.buffer(),
            dbias_partial.buffer(),
            grads.dgain.buffer(),
            grads.dbias.buffer(),
        ],
        &params,
        gpu.grid((shape.d as u32).div_ceil(WORKGROUP_1D)),
    )
}

/// Records the whole backward into `grads` (rows ≥ 1): dx per row, then dgain and dbias as
/// column sums in fixed order (chunks of rows, then the chunks in order when there are
/// several). Returns the dispatches and the scratch tensors they bind, which must outlive
/// their submission.
#[allow(clippy::too_many_arguments)]
pub fn layer_norm_backward_dispatches(
    x: &Tensor,
    dy: &Tensor,
    gain: Option<&Tensor>,
    mean: &Tensor,
    rstd: &Tensor,
    grads: &LayerNormGrads,
    shape: &LayerNormShape,
    variant: LayerNormVariant,
) -> Result<(Vec<Dispatch>, Vec<Tensor>)> {
    let gpu = x.gpu();
    let mut dispatches = vec![input_grad_dispatch(
        x, dy, gain, mean, rstd, &grads.dx, shape, variant,
    )?];
    let rows_per_chunk = rows_per_chunk(shape.rows, shape.d);
    let chunks = shape.rows.div_ceil(rows_per_chunk);
    // With one chunk the first stage writes the gradients directly.
    let partials = if chunks > 1 {
        Some((
            Tensor::uninit(gpu, &[chunks, shape.d])?,
            Tensor::uninit(gpu, &[chunks, shape.d])?,
        ))
    } else {
        None
    };
    let (dgain_partial, dbias_partial) = match &partials {
        Some((dgain, dbias)) => (dgain, dbias),
        None => (&grads.dgain, &grads.dbias),
    };
    dispatches.push(param_grads_partial_dispatch(
        x,
        dy,
        mean,
        rstd,
        dgain_partial,
        dbias_partial,
        shape,
        rows_per_chunk,
    )?);
    if let Some((dgain_partial, dbias_partial)) = &partials {
        dispatches.push(param_grads_fold_dispatch(
            dgain_partial,
            dbias_partial,
            grads,
            shape,
            rows_per_chunk,
        )?);
    }
    let scratch = partials.map(|(a, b)| vec![a, b]).unwrap_or_default();
    Ok((dispatches, scratch))
}

/// The CPU reference's forward outputs, in f64.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerNormCpu {
    /// The normalised output, `[rows, d]` flattened.
    pub y: Vec<f64>,
    /// Each row's mean, `[rows]`.
    pub mean: Vec<f64>,
    /// Each row's reciprocal standard deviation 1/√(var + eps), `[rows]`.
    pub rstd: Vec<f64>,
}

/// CPU reference of the forward over rows of `d` elements, in f64 (two-pass).
pub fn layer_norm_cpu(
    x: &[f64],
    gain: Option<&[f64]>,
    bias: Option<&[f64]>,
    d: usize,
    eps: f64,
) -> LayerNormCpu {
    let mut out = LayerNormCpu {
        y: Vec::with_capacity(x.len()),
        mean: Vec::new(),
        rstd: Vec::new(),
    };
    for row in x.chunks(d) {
        let mean = row.iter().sum::<f64>() / d as f64;
        let variance = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / d as f64;
        let rstd = 1.0 / (variance + eps).sqrt();
        for (col, v) in row.iter().enumerate() {
            let scale = gain.map_or(1.0, |g| g[col]);
            let shift = bias.map_or(0.0, |b| b[col]);
            out.y.push((v - mean) * rstd * scale + shift);
        }
        out.mean.push(mean);
        out.rstd.push(rstd);
    }
    out
}

/// CPU reference of the backward, in f64, from the closed form: returns (dx, dgain, dbias).
pub fn layer_norm_backward_cpu(
    x: &[f64],
    dy: &[f64],
    gain: Option<&[f64]>,
    d: usize,
    eps: f64,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let forward = layer_norm_cpu(x, None, None, d, eps);
    let mut dx = Vec::with_capacity(x.len());
    let mut dgain = vec![0.0; d];
    let mut dbias = vec![0.0; d];
    for (r, (x_hat, dy)) in forward.y.chunks(d).zip(dy.chunks(d)).enumerate() {
        let g: Vec<f64> = (0..d).map(|c| dy[c] * gain.map_or(1.0, |g| g[c])).collect();
        let mean_g = g.iter().sum::<f64>() / d as f64;
        let mean_g_x_hat = g.iter().zip(x_hat).map(|(g, h)| g * h).sum::<f64>() / d as f64;
        for c in 0..d {
            dx.push(forward.rstd[r] * (g[c] - mean_g - x_hat[c] * mean_g_x_hat));
            dgain[c] += dy[c] * x_hat[c];
            dbias[c] += dy[c];
        }
    }
    (dx, dgain, dbias)
}

impl Tensor {
    /// Layer normalisation over the axes `[axis, rank)` (negative `axis` counts from the
    /// end): y = (x − mean)·rstd·gain + bias per row, rstd = 1/√(var + eps) with the biased
    /// variance. `gain` and `bias`, when given, have the normalised axes' shape.
    pub fn layer_norm(
        &self,
        gain: Option<&Tensor>,
        bias: Option<&Tensor>,
        axis: isize,
        eps: f32,
    ) -> Result<LayerNormForward> {
        let shape = LayerNormShape::new("layer_norm", self.shape(), axis)?;
        let variant = LayerNormVariant::choose(self.gpu(), shape.d);
        self.layer_norm_with(gain, bias, axis, eps, variant)
    }

    /// [`Tensor::layer_norm`] with the kernel variant chosen by the caller (for tests and
    /// benches).
    pub fn layer_norm_with(
        &self,
        gain: Option<&Tensor>,
        bias: Option<&Tensor>,
        axis: isize,
        eps: f32,
        variant: LayerNormVariant,
    ) -> Result<LayerNormForward> {
        const OP: &str = "layer_norm";
        let shape = LayerNormShape::new(OP, self.shape(), axis)?;
        check_eps(OP, eps)?;
        for (what, tensor) in [("the gain", gain), ("the bias", bias)] {
            if let Some(tensor) = tensor {
                self.same_device(OP, tensor)?;
                shape.check(OP, what, tensor, &shape.normalized)?;
            }
        }
        let gpu = self.gpu();
        let out = LayerNormForward {
            y: Tensor::uninit(gpu, self.shape())?,
            mean: Tensor::uninit(gpu, &shape.stats)?,
            rstd: Tensor::uninit(gpu, &shape.stats)?,
        };
        if shape.rows > 0 {
            let dispatch = layer_norm_dispatch(self, gain, bias, &out, &shape, eps, variant)?;
            gpu.submit(&[], &[dispatch])?;
        }
        Ok(out)
    }

    /// The backward of [`Tensor::layer_norm`] on `self` = x, given dy (x's shape), the gain
    /// of the forward (if any), and the forward's `mean` and `rstd`.
    pub fn layer_norm_backward(
        &self,
        dy: &Tensor,
        gain: Option<&Tensor>,
        mean: &Tensor,
        rstd: &Tensor,
        axis: isize,
    ) -> Result<LayerNormGrads> {
        let shape = LayerNormShape::new("layer_norm_backward", self.shape(), axis)?;
        let variant = LayerNormVariant::choose(self.gpu(), shape.d);
        self.layer_norm_backward_with(dy, gain, mean, rstd, axis, variant)
    }

    /// [`Tensor::layer_norm_backward`] with the kernel variant chosen by the caller.
    pub fn layer_norm_backward_with(
        &self,
        dy: &Tensor,
        gain: Option<&Tensor>,
        mean: &Tensor,
        rstd: &Tensor,
        axis: isize,
        variant: LayerNormVariant,
    ) -> Result<LayerNormGrads> {
        const OP: &str = "layer_norm_backward";
        let shape = LayerNormShape::new(OP, self.shape(), axis)?;
        let checks = [
            ("dy", Some(dy), self.shape()),
            ("the gain", gain, &shape.normalized[..]),
            ("mean", Some(mean), &shape.stats[..]),
            ("rstd", Some(rstd), &shape.stats[..]),
        ];
        for (what, tensor, expected) in checks {
            if let Some(tensor) = tensor {
                self.same_device(OP, tensor)?;
                shape.check(OP, what, tensor, expected)?;
            }
        }
        let gpu = self.gpu();
        let grads = LayerNormGrads {
            dx: Tensor::uninit(gpu, self.shape())?,
            dgain: Tensor::uninit(gpu, &shape.normalized)?,
            dbias: Tensor::uninit(gpu, &shape.normalized)?,
        };
        if shape.rows == 0 {
            // No rows: nothing flows to x, and the column sums are empty sums.
            gpu.write(grads.dgain.buffer(), &vec![0.0f32; shape.d]);
            gpu.write(grads.dbias.buffer(), &vec![0.0f32; shape.d]);
            return Ok(grads);
        }
        let (dispatches, _scratch) =
            layer_norm_backward_dispatches(self, dy, gain, mean, rstd, &grads, &shape, variant)?;
        gpu.submit(&[], &dispatches)?;
        Ok(grads)
    }
}
