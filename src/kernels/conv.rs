//! Convolution and max pooling (`shaders/conv.wgsl`): the n-gram window of a text CNN
//! (a 1-D convolution over N×C×L), its 2-D generalisation (a sequence is an image of
//! height 1), the gradients of input, weight and bias, and max pooling over time with the
//! argmax positions its backward needs.
//!
//! The forward has two kernels of one contract ([`ConvVariant`]): a direct one, and im2col
//! followed by the batched matrix product of [`crate::kernels::matmul`]. The gradients are
//! direct kernels in which one invocation computes each gradient element (a tile of them,
//! in fact) by looping over everything that contributes to it, in a fixed order: no
//! atomics, the same bits on every run.

use crate::error::{Error, Result};
use crate::gpu::{Access, Dispatch, Gpu, KernelSpec, ShaderSource};
use crate::kernels::matmul::{
    gemm_dispatch, CLayout, Epilogue, GemmOperands, GemmShape, MatmulVariant,
};
use crate::kernels::WORKGROUP_1D;
use crate::tensor::{Indices, Tensor};

/// The convolution module, `shaders/conv.wgsl`: the direct forward, im2col, the three
/// gradients, and max pooling with its backward.
pub static SHADER: ShaderSource =
    ShaderSource::new("conv", include_str!("../../shaders/conv.wgsl"));

/// Invocations per workgroup of the direct kernels.
const GROUP: usize = 64;
/// Each invocation of a direct kernel computes a tile of CHANNELS channels × COLUMNS
/// consecutive columns (see `shaders/conv.wgsl`).
const CHANNELS: usize = 16;
const COLUMNS: usize = 8;

/// The largest padded extent (input plus pads) along an axis: the kernels compute
/// positions as i32.
const MAX_EXTENT: usize = i32::MAX as usize;

/// Stride and zero padding of a convolution over N×C×L.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv1d {
    /// How many input positions the window moves between two outputs (≥ 1).
    pub stride: usize,
    /// Zeros added before the first position.
    pub pad_left: usize,
    /// Zeros added after the last position.
    pub pad_right: usize,
}

impl Default for Conv1d {
    /// Stride 1, no padding.
    fn default() -> Self {
        Conv1d {
            stride: 1,
            pad_left: 0,
            pad_right: 0,
        }
    }
}

/// Strides and zero padding of a convolution over N×C×H×W.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2d {
    /// `[along H, along W]`.
    pub stride: [usize; 2],
    /// `[top, left, bottom, right]`: the begins of both axes, then their ends (ONNX's order).
    pub pads: [usize; 4],
}

impl Default for Conv2d {
    /// Stride 1, no padding.
    fn default() -> Self {
        Conv2d {
            stride: [1, 1],
            pads: [0; 4],
        }
    }
}

impl From<Conv1d> for Conv2d {
    /// A sequence as an image of height 1.
    fn from(options: Conv1d) -> Self {
        Conv2d {
            stride: [1, options.stride],
            pads: [0, options.pad_left, 0, options.pad_right],
        }
    }
}

/// Which kernels compute the forward.
///
/// The default is [`ConvVariant::Direct`]: on lavapipe (`cargo bench --bench conv`, a
/// busy 2-core machine) it ran the text-CNN windows about 2× as fast as im2col + gemm in
/// the quietest runs (1.2–2.4× in medians, one tie), and a 3×3 image convolution 2.5–4×
/// as fast. im2col writes and re-reads a column matrix k times larger than the input, and
/// when OH·OW is not a multiple of 4 gets only the scalar matmul kernel. No real GPU has
/// been measured; there im2col feeding the tiled matrix product may well win.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ConvVariant {
    /// One pass: each invocation a tile of 16 output channels × 8 output columns.
    #[default]
    Direct,
    /// Unfold the input into columns (C·KH·KW × OH·OW per batch item), then one batched
    /// matrix product with the weight.
    Im2colGemm,
}

impl ConvVariant {
    /// Every variant: those the kernel list compiles, and tests and benchmarks try.
    pub const ALL: [ConvVariant; 2] = [ConvVariant::Direct, ConvVariant::Im2colGemm];

    /// The variant's name in benchmark reports and tuning files.
    pub fn name(self) -> &'static str {
        match self {
            ConvVariant::Direct => "direct",
            ConvVariant::Im2colGemm => "im2col+gemm",
        }
    }
}

/// Every size of one convolution, checked: input N×C×H×W, weight O×C×KH×KW, output
/// N×O×OH×OW. A 1-D convolution has H = KH = OH = 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeometry {
    /// N, the number of images (or sequences).
    pub batch: usize,
    /// C, the input's channels (a text CNN's embedding width).
    pub in_channels: usize,
    /// H, the input's height (1 for a sequence).
    pub in_h: usize,
    /// W, the input's width (a sequence's length).
    pub in_w: usize,
    /// O, the number of filters: the output's channels.
    pub out_channels: usize,
    /// KH, the filters' height.
    pub kernel_h: usize,
    /// KW, the filters' width (a text CNN's n-gram size).
    pub kernel_w: usize,
    /// The stride along H.
    pub stride_h: usize,
    /// The stride along W.
    pub stride_w: usize,
    /// Zero rows added above the input.
    pub pad_top: usize,
    /// Zero columns added left of the input.
    pub pad_left: usize,
    /// Zero rows added below the input.
    pub pad_bottom: usize,
    /// Zero columns added right of the input.
    pub pad_right: usize,
    /// OH = (H + pad_top + pad_bottom − KH) / stride_h + 1.
    pub out_h: usize,
    /// OW = (W + pad_left + pad_right − KW) / stride_w + 1.
    pub out_w: usize,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct ConvParams {
    batch: u32,
    in_channels: u32,
    in_h: u32,
    in_w: u32,
    out_channels: u32,
    out_h: u32,
    out_w: u32,
    kernel_h: u32,
    kernel_w: u32,
    stride_h: u32,
    stride_w: u32,
    pad_top: u32,
    pad_left: u32,
    pad: [u32; 3],
}

impl ConvGeometry {
    /// Checks an input and a weight of rank 3 (N×C×L, O×C×k) or 4 (N×C×H×W, O×C×KH×KW)
    /// against `options` (for rank 3 only its W entries count: stride\[1\], pads\[1\], pads\[3\]).
    pub fn new(op: &'static str, x: &[usize], weight: &[usize], options: Conv2d) -> Result<Self> {
        let rank = x.len();
        let layout = if rank == 3 {
            "input N×C×L and weight O×C×k"
        } else {
            "input N×C×H×W and weight O×C×KH×KW"
        };
        if !(rank == 3 || rank == 4) || weight.len() != rank {
            return Err(Error::ShapeMismatch {
                op,
                lhs: x.to_vec(),
                rhs: weight.to_vec(),
                expected: format!("{op} takes an {layout}, of one rank (3 or 4)"),
            });
        }
        if x[1] != weight[1] {
            return Err(Error::ShapeMismatch {
                op,
                lhs: x.to_vec(),
                rhs: weight.to_vec(),
                expected: format!(
                    "the input has {} channels, the weight expects {} ({layout})",
                    x[1], weight[1]
                ),
            });
        }
        // Rank 3 is rank 4 with a height of 1.
        let (in_h, in_w, kernel_h, kernel_w) = if rank == 3 {
            (1, x[2], 1, weight[2])
        } else {
            (x[2], x[3], weight[2], weight[3])
        };
        let [stride_h, stride_w] = if rank == 3 {
            [1, options.stride[1]]
        } else {
            options.stride
        };
        let [pad_top, pad_left, pad_bottom, pad_right] = if rank == 3 {
            [0, options.pads[1], 0, options.pads[3]]
        } else {
            options.pads
        };
        let axes = [
            ("H", in_h, kernel_h, stride_h, pad_top, pad_bottom),
            ("W", in_w, kernel_w, stride_w, pad_left, pad_right),
        ];
        // A sequence has only the W axis to check (and calls it L); its H is 1 throughout.
        let checked = if rank == 3 { 1 } else { 0 };
        let mut out = [1; 2];
        for (axis, (name, size, kernel, stride, begin, end)) in
            axes.into_iter().enumerate().skip(checked)
        {
            let name = if rank == 3 { "L" } else { name };
            if stride == 0 {
                return Err(Error::invalid(
                    op,
                    format!("the stride along {name} is 0; it must be at least 1"),
                ));
            }
            if kernel == 0 {
                return Err(Error::ZeroSized {
                    op,
                    shape: weight.to_vec(),
                    why: "the kernel must have at least one tap along each axis",
                });
            }
            if size == 0 {
                return Err(Error::ZeroSized {
                    op,
                    shape: x.to_vec(),
                    why: "a convolution needs at least one input position along each axis",
                });
            }
            let padded = size
                .checked_add(begin)
                .and_then(|s| s.checked_add(end))
                .filter(|&p| p <= MAX_EXTENT && stride <= MAX_EXTENT)
                .ok_or_else(|| {
                    Error::invalid(
                        op,
                        format!(
                            "along {name}: size {size}, pads {begin}+{end}, stride {stride} \
                             exceed the kernels' 32-bit position arithmetic ({MAX_EXTENT})"
                        ),
                    )
                })?;
            if kernel > padded {
                return Err(Error::invalid(
                    op,
                    format!(
                        "the kernel is {kernel} wide along {name}, wider than the padded input \
                         ({size} + pads {begin} + {end} = {padded}); input {x:?}, weight {weight:?}"
                    ),
                ));
            }
            out[axis] = (padded - kernel) / stride + 1;
        }
        Ok(ConvGeometry {
            batch: x[0],
            in_channels: x[1],
            in_h,
            in_w,
            out_channels: weight[0],
            kernel_h,
            kernel_w,
            stride_h,
            stride_w,
            pad_top,
            pad_left,
            pad_bottom,
            pad_right,
            out_h: out[0],
            out_w: out[1],
        })
    }

    /// N×O×OH×OW.
    pub fn output_shape(&self) -> [usize; 4] {
        [self.batch, self.out_channels, self.out_h, self.out_w]
    }

    /// Weights per output channel: C·KH·KW.
    pub fn weight_row(&self) -> usize {
        self.in_channels * self.kernel_h * self.kernel_w
    }

    /// Multiply-adds of the forward (each backward does as many).
    pub fn multiply_adds(&self) -> usize {
        self.batch * self.out_channels * self.out_h * self.out_w * self.weight_row()
    }

    fn params(&self) -> ConvParams {
        ConvParams {
            batch: self.batch as u32,
            in_channels: self.in_channels as u32,
            in_h: self.in_h as u32,
            in_w: self.in_w as u32,
            out_channels: self.out_channels as u32,
            out_h: self.out_h as u32,
            out_w: self.out_w as u32,
            kernel_h: self.kernel_h as u32,
            kernel_w: self.kernel_w as u32,
            stride_h: self.stride_h as u32,
            stride_w: self.stride_w as u32,
            pad_top: self.pad_top as u32,
            pad_left: self.pad_left as u32,
            pad: [0; 3],
        }
    }
}

/// Workgroups of a direct kernel over `rows` rows of `columns` columns of `channels`
/// channels, each invocation taking a tile of CHANNELS channels × COLUMNS columns.
fn direct_groups(gpu: &Gpu, rows: usize, channels: usize, columns: usize) -> [u32; 3] {
    let tiles = rows * channels.div_ceil(CHANNELS) * columns.div_ceil(COLUMNS);
    gpu.grid(tiles.div_ceil(GROUP) as u32)
}

/// The bindings of a kernel reading one input and writing one output, then its params.
const ONE_INPUT: &[Access] = &[Access::Read, Access::ReadWrite, Access::Uniform];
/// The bindings of a kernel reading two inputs and writing one output, then its params.
const TWO_INPUTS: &[Access] = &[
    Access::Read,
    Access::Read,
    Access::ReadWrite,
    Access::Uniform,
];

/// The bindings of the pooling forward: x, then y and argmax written, then its params.
const MAX_POOL_BINDINGS: &[Access] = &[
    Access::Read,
    Access::ReadWrite,
    Access::ReadWrite,
    Access::Uniform,
];

fn conv_spec(entry: &'static str, bindings: &'static [Access]) -> KernelSpec {
    KernelSpec {
        source: &SHADER,
        entry,
        bindings,
        constants: Vec::new(),
    }
}

fn conv_forward_spec(has_bias: bool) -> KernelSpec {
    KernelSpec {
        constants: vec![("HAS_BIAS", f64::from(u8::from(has_bias)))],
        ..conv_spec(
            "conv_forward",
            &[
                Access::Read,
                Access::Read,
                Access::Read,
                Access::ReadWrite,
                Access::Uniform,
            ],
        )
    }
}

/// Every kernel variant the convolution and pooling launchers can build.
pub fn kernel_specs() -> Vec<KernelSpec> {
    vec![
        conv_forward_spec(false),
        conv_forward_spec(true),
        conv_spec("conv_im2col", ONE_INPUT),
        conv_spec("conv_input_grad", TWO_INPUTS),
        conv_spec("conv_weight_grad", TWO_INPUTS),
        conv_spec("conv_bias_grad", ONE_INPUT),
        conv_spec("max_pool", MAX_POOL_BINDINGS),
        conv_spec("max_pool_backward", TWO_INPUTS),
    ]
}

/// Records y = conv(x, weight) + bias with the direct kernel.
pub fn conv_forward_dispatch(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    y: &Tensor,
    geometry: &ConvGeometry,
) -> Result<Dispatch> {
    let gpu = x.gpu();
    let spec = conv_forward_spec(bias.is_some());
    let bias = bias.map(Tensor::buffer).unwrap_or(gpu.placeholder());
    gpu.dispatch(
        &spec,
        &[x.buffer(), weight.buffer(), bias, y.buffer()],
        &geometry.params(),
        direct_groups(
            gpu,
            geometry.batch * geometry.out_h,
            geometry.out_channels,
            geometry.out_w,
        ),
    )
}

/// Records the unfolding of x into `cols` (N × C·KH·KW × OH·OW).
pub fn conv_im2col_dispatch(
    x: &Tensor,
    cols: &Tensor,
    geometry: &ConvGeometry,
) -> Result<Dispatch> {
    let gpu = x.gpu();
    let spec = conv_spec("conv_im2col", ONE_INPUT);
    gpu.dispatch(
        &spec,
        &[x.buffer(), cols.buffer()],
        &geometry.params(),
        gpu.grid((cols.numel() as u32).div_ceil(WORKGROUP_1D)),
    )
}

/// Records the forward as im2col into `cols`, then y\[n\] = W · cols\[n\] + bias (as β·C with
/// C the bias seen as an O×1 column).
pub fn conv_im2col_gemm_dispatches(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    cols: &Tensor,
    y: &Tensor,
    geometry: &ConvGeometry,
) -> Result<[Dispatch; 2]> {
    let unfold = conv_im2col_dispatch(x, cols, geometry)?;
    // One weight matrix for every image of the batch.
    let (m, n, k) = (
        geometry.out_channels,
        geometry.out_h * geometry.out_w,
        geometry.weight_row(),
    );
    let shape = GemmShape {
        a_batch_stride: 0,
        ..GemmShape::contiguous(geometry.batch, (m, n, k), false, false)
    };
    let column = CLayout {
        batch_stride: 0,
        row_stride: 1,
        col_stride: 0,
    };
    let operands = GemmOperands {
        a: weight,
        b: cols,
        c: bias.map(|bias| (bias, column)),
        bias: None,
        out: y,
        epilogue: Epilogue::Plain,
    };
    let variant = MatmulVariant::choose(x.gpu(), &shape);
    let product = gemm_dispatch(&operands, &shape, 1.0, 1.0, variant)?;
    Ok([unfold, product])
}

/// Records dx = the gradient of the input, from dy and the weight.
pub fn conv_input_grad_dispatch(
    dy: &Tensor,
    weight: &Tensor,
    dx: &Tensor,
    geometry: &ConvGeometry,
) -> Result<Dispatch> {
    let gpu = dy.gpu();
    let spec = conv_spec("conv_input_grad", TWO_INPUTS);
    gpu.dispatch(
        &spec,
        &[dy.buffer(), weight.buffer(), dx.buffer()],
        &geometry.params(),
        direct_groups(
            gpu,
            geometry.batch * geometry.in_h,
            geometry.in_channels,
            geometry.in_w,
        ),
    )
}

/// Records dw = the gradient of the weight, from x and dy.
pub fn conv_weight_grad_dispatch(
    x: &Tensor,
    dy: &Tensor,
    dw: &Tensor,
    geometry: &ConvGeometry,
) -> Result<Dispatch> {
    let gpu = x.gpu();
    let spec = conv_spec("conv_weight_grad", TWO_INPUTS);
    gpu.dispatch(
        &spec,
        &[x.buffer(), dy.buffer(), dw.buffer()],
        &geometry.params(),
        direct_groups(gpu, 1, geometry.out_channels, geometry.weight_row()),
    )
}

/// Records db = the gradient of the bias: dy summed over batch items and positions.
pub fn conv_bias_grad_dispatch(
    dy: &Tensor,
    db: &Tensor,
    geometry: &ConvGeometry,
) -> Result<Dispatch> {
    let gpu = dy.gpu();
    let spec = conv_spec("conv_bias_grad", ONE_INPUT);
    gpu.dispatch(
        &spec,
        &[dy.buffer(), db.buffer()],
        &geometry.params(),
        gpu.grid(geometry.out_channels.div_ceil(GROUP) as u32),
    )
}

/// CPU reference of the convolution, in f64: x is N×C×H×W, the weight O×C×KH×KW (both
/// flat, row-major), the result N×O×OH×OW.
pub fn conv_cpu(x: &[f64], weight: &[f64], bias: Option<&[f64]>, g: &ConvGeometry) -> Vec<f64> {
    let mut y = Vec::with_capacity(g.output_shape().iter().product());
    for n in 0..g.batch {
        for o in 0..g.out_channels {
            for oh in 0..g.out_h {
                for ow in 0..g.out_w {
                    let mut acc = bias.map_or(0.0, |b| b[o]);
                    for c in 0..g.in_channels {
                        for kh in 0..g.kernel_h {
                            for kw in 0..g.kernel_w {
                                // Padding positions are before 0 or past the end.
                                let ih = (oh * g.stride_h + kh).checked_sub(g.pad_top);
                                let iw = (ow * g.stride_w + kw).checked_sub(g.pad_left);
                                let (Some(ih), Some(iw)) = (ih, iw) else {
                                    continue;
                                };
                                if ih >= g.in_h || iw >= g.in_w {
                                    continue;
                                }
                                let xv = x[((n * g.in_channels + c) * g.in_h + ih) * g.in_w + iw];
                                let wv = weight
                                    [((o * g.in_channels + c) * g.kernel_h + kh) * g.kernel_w + kw];
                                acc += wv * xv;
                            }
                        }
                    }
                    y.push(acc);
                }
            }
        }
    }
    y
}

/// The three gradients of a convolution. `bias` is `None` when it was not asked for.
#[derive(Debug, Clone)]
pub struct ConvGradients {
    /// dL/dinput, the input's shape.
    pub input: Tensor,
    /// dL/dweight, the weight's shape.
    pub weight: Tensor,
    /// dL/dbias, `[O]`; `None` when not asked for.
    pub bias: Option<Tensor>,
}

impl Tensor {
    /// The n-gram window of a text CNN: `self` is N×C×L (C the embedding width), `weight`
    /// O×C×k, `bias` O; the result is N×O×L_out with
    /// L_out = (L + pad_left + pad_right − k) / stride + 1.
    pub fn conv1d(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
        options: Conv1d,
    ) -> Result<Tensor> {
        self.convolve("conv1d", 3, weight, bias, options.into(), None)
    }

    /// The convolution over images: `self` is N×C×H×W, `weight` O×C×KH×KW, `bias` O.
    pub fn conv2d(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
        options: Conv2d,
    ) -> Result<Tensor> {
        self.convolve("conv2d", 4, weight, bias, options, None)
    }

    /// [`Tensor::conv1d`] or [`Tensor::conv2d`] (by the rank of `self`, 3 or 4) with the
    /// forward variant chosen by the caller instead of the default.
    pub fn conv_with(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
        options: Conv2d,
        variant: ConvVariant,
    ) -> Result<Tensor> {
        let rank = if self.rank() == 3 { 3 } else { 4 };
        self.convolve("conv", rank, weight, bias, options, Some(variant))
    }

    fn convolve(
        &self,
        op: &'static str,
        rank: usize,
        weight: &Tensor,
        bias: Option<&Tensor>,
        options: Conv2d,
        variant: Option<ConvVariant>,
    ) -> Result<Tensor> {
        self.same_device(op, weight)?;
        let geometry = conv_geometry(op, rank, self, weight, options)?;
        if let Some(bias) = bias {
            self.same_device(op, bias)?;
            check_bias(op, bias, weight)?;
        }
        let gpu = self.gpu();
        let y = Tensor::uninit(gpu, &geometry.output_shape())?;
        if y.numel() > 0 {
            match variant.unwrap_or_default() {
                ConvVariant::Direct => {
                    let dispatch = conv_forward_dispatch(self, weight, bias, &y, &geometry)?;
                    gpu.submit(&[], &[dispatch])?;
                }
                ConvVariant::Im2colGemm => {
                    let cols = Tensor::uninit(
                        gpu,
                        &[
                            geometry.batch,
                            geometry.weight_row(),
                            geometry.out_h * geometry.out_w,
                        ],
                    )?;
                    let dispatches =
                        conv_im2col_gemm_dispatches(self, weight, bias, &cols, &y, &geometry)?;
                    gpu.submit(&[], &dispatches)?;
                }
            }
        }
        y.reshape(&output_shape(rank, &geometry))
    }

    /// The gradients of [`Tensor::conv1d`]: `self` is its input x, `dy` the gradient of
    /// its output; the bias gradient is computed when `with_bias` is set.
    pub fn conv1d_backward(
        &self,
        weight: &Tensor,
        dy: &Tensor,
        options: Conv1d,
        with_bias: bool,
    ) -> Result<ConvGradients> {
        self.convolve_backward("conv1d_backward", 3, weight, dy, options.into(), with_bias)
    }

    /// The gradients of [`Tensor::conv2d`], likewise.
    pub fn conv2d_backward(
        &self,
        weight: &Tensor,
        dy: &Tensor,
        options: Conv2d,
        with_bias: bool,
    ) -> Result<ConvGradients> {
        self.convolve_backward("conv2d_backward", 4, weight, dy, options, with_bias)
    }

    fn convolve_backward(
        &self,
        op: &'static str,
        rank: usize,
        weight: &Tensor,
        dy: &Tensor,
        options: Conv2d,
        with_bias: bool,
    ) -> Result<ConvGradients> {
        self.same_device(op, weight)?;
        self.same_device(op, dy)?;
        let geometry = conv_geometry(op, rank, self, weight, options)?;
        let expected = output_shape(rank, &geometry);
        if dy.shape() != expected {
            return Err(Error::ShapeMismatch {
                op,
                lhs: dy.shape().to_vec(),
                rhs: expected,
                expected: format!(
                    "the output gradient must have the forward output's shape (input {:?}, \
                     weight {:?})",
                    self.shape(),
                    weight.shape()
                ),
            });
        }
        let gpu = self.gpu();
        let input = Tensor::uninit(gpu, self.shape())?;
        let weight_grad = Tensor::uninit(gpu, weight.shape())?;
        let bias = with_bias
            .then(|| Tensor::uninit(gpu, &[geometry.out_channels]))
            .transpose()?;
        // Each gradient gets its kernel even when dy is empty: it writes the zeros then.
        let mut dispatches = Vec::with_capacity(3);
        if input.numel() > 0 {
            dispatches.push(conv_input_grad_dispatch(dy, weight, &input, &geometry)?);
        }
        if weight_grad.numel() > 0 {
            dispatches.push(conv_weight_grad_dispatch(
                self,
                dy,
                &weight_grad,
                &geometry,
            )?);
        }
        if let Some(bias) = bias.as_ref().filter(|b| b.numel() > 0) {
            dispatches.push(conv_bias_grad_dispatch(dy, bias, &geometry)?);
        }
        gpu.submit(&[], &dispatches)?;
        Ok(ConvGradients {
            input,
            weight: weight_grad,
            bias,
        })
    }
}

/// The geometry of `x` and `weight` for an op that takes rank `rank` (3 or 4).
fn conv_geometry(
    op: &'static str,
    rank: usize,
    x: &Tensor,
    weight: &Tensor,
    options: Conv2d,
) -> Result<ConvGeometry> {
    if x.rank() != rank {
        let layout = if rank == 3 { "N×C×L" } else { "N×C×H×W" };
        return Err(Error::ShapeMismatch {
            op,
            lhs: x.shape().to_vec(),
            rhs: weight.shape().to_vec(),
            expected: format!("{op} takes an input of rank {rank} ({layout})"),
        });
    }
    ConvGeometry::new(op, x.shape(), weight.shape(), options)
}

/// The output shape as the caller sees it: N×O×L_out for rank 3.
pub(crate) fn output_shape(rank: usize, g: &ConvGeometry) -> Vec<usize> {
    if rank == 3 {
        vec![g.batch, g.out_channels, g.out_w]
    } else {
        g.output_shape().to_vec()
    }
}

fn check_bias(op: &'static str, bias: &Tensor, weight: &Tensor) -> Result<()> {
    if bias.shape() != [weight.shape()[0]] {
        return Err(Error::ShapeMismatch {
            op,
            lhs: bias.shape().to_vec(),
            rhs: weight.shape().to_vec(),
            expected: format!(
                "the bias must be a vector of {} values, one per output channel",
                weight.shape()[0]
            ),
        });
    }
    Ok(())
}

// ------------------------------------------------------------------------ max pooling

/// Window, stride and padding of a max pooling over the last axis of N×C×L. Padding never
/// wins (it counts as −∞), so it must be narrower than the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxPool1d {
    /// The window's length (≥ 1).
    pub kernel: usize,
    /// How far the window moves between two outputs (≥ 1).
    pub stride: usize,
    /// Positions added before the first, which never win (narrower than the window).
    pub pad_left: usize,
    /// Positions added after the last, which never win (narrower than the window).
    pub pad_right: usize,
}

impl MaxPool1d {
    /// A window of `kernel` positions, stride 1, no padding (ONNX's defaults).
    pub fn new(kernel: usize) -> Self {
        MaxPool1d {
            kernel,
            stride: 1,
            pad_left: 0,
            pad_right: 0,
        }
    }

    /// The number of windows over `len` positions, or an error naming the bad option.
    pub fn out_len(&self, op: &'static str, len: usize) -> Result<usize> {
        let MaxPool1d {
            kernel,
            stride,
            pad_left,
            pad_right,
        } = *self;
        if kernel == 0 || stride == 0 {
            return Err(Error::invalid(
                op,
                format!("kernel {kernel} and stride {stride} must both be at least 1"),
            ));
        }
        if pad_left >= kernel || pad_right >= kernel {
            return Err(Error::invalid(
                op,
                format!(
                    "pads {pad_left}+{pad_right} must be narrower than the kernel {kernel}, \
                     else a window could hold only padding"
                ),
            ));
        }
        let padded = len + pad_left + pad_right;
        if len == 0 || kernel > padded || padded > MAX_EXTENT || stride > MAX_EXTENT {
            return Err(Error::invalid(
                op,
                format!(
                    "a window of {kernel} does not fit {len} positions + pads \
                     {pad_left}+{pad_right} (or they pass {MAX_EXTENT})"
                ),
            ));
        }
        Ok((padded - kernel) / stride + 1)
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct PoolParams {
    rows: u32,
    in_len: u32,
    out_len: u32,
    kernel: u32,
    stride: u32,
    pad_left: u32,
    pad: [u32; 2],
}

fn pool_params(rows: usize, in_len: usize, out_len: usize, options: &MaxPool1d) -> PoolParams {
    PoolParams {
        rows: rows as u32,
        in_len: in_len as u32,
        out_len: out_len as u32,
        kernel: options.kernel as u32,
        stride: options.stride as u32,
        pad_left: options.pad_left as u32,
        pad: [0; 2],
    }
}

/// Records the pooling of `x` (rows of `in_len`) into `y` and `argmax` (rows of `out_len`).
pub fn max_pool_dispatch(
    x: &Tensor,
    y: &Tensor,
    argmax: &Indices,
    in_len: usize,
    options: &MaxPool1d,
) -> Result<Dispatch> {
    let gpu = x.gpu();
    let out_len = y.numel() / (x.numel() / in_len);
    let spec = conv_spec("max_pool", MAX_POOL_BINDINGS);
    gpu.dispatch(
        &spec,
        &[x.buffer(), y.buffer(), argmax.buffer()],
        &pool_params(x.numel() / in_len, in_len, out_len, options),
        gpu.grid((y.numel() as u32).div_ceil(WORKGROUP_1D)),
    )
}

/// Records dx (rows of `in_len`) from dy and argmax (rows of `out_len`).
pub fn max_pool_backward_dispatch(
    dy: &Tensor,
    argmax: &Indices,
    dx: &Tensor,
    in_len: usize,
    options: &MaxPool1d,
) -> Result<Dispatch> {
    let gpu = dy.gpu();
    let rows = dx.numel() / in_len;
    let spec = conv_spec("max_pool_backward", TWO_INPUTS);
    gpu.dispatch(
        &spec,
        &[dy.buffer(), argmax.buffer(), dx.buffer()],
        &pool_params(rows, in_len, dy.numel() / rows, options),
        gpu.grid(rows.div_ceil(GROUP) as u32),
    )
}

/// CPU reference of the pooling of `rows` rows of `len` values: the maxima and their
/// positions (the first maximum wins a tie; a NaN counts as the maximum).
pub fn max_pool1d_cpu(
    x: &[f64],
    rows: usize,
    len: usize,
    options: &MaxPool1d,
) -> Result<(Vec<f64>, Vec<u32>)> {
    let out_len = options.out_len("max_pool1d", len)?;
    let mut y = Vec::with_capacity(rows * out_len);
    let mut argmax = Vec::with_capacity(rows * out_len);
    for row in x.chunks(len).take(rows) {
        for t in 0..out_len {
            let start = t * options.stride;
            let first = start.saturating_sub(options.pad_left);
            let end = (start + options.kernel - options.pad_left).min(len);
            let mut best = first;
            for l in first + 1..end {
                if !row[best].is_nan() && (row[l] > row[best] || row[l].is_nan()) {
                    best = l;
                }
            }
            y.push(row[best]);
            argmax.push(best as u32);
        }
    }
    Ok((y, argmax))
}

impl Tensor {
    /// Max pooling along the last axis of N×C×L: N×C×L_out maxima with
    /// L_out = (L + pad_left + pad_right − kernel) / stride + 1, and the position in 0..L
    /// of each (the first maximum wins a tie; a NaN counts as the maximum, so it
    /// propagates).
    pub fn max_pool1d(&self, options: MaxPool1d) -> Result<(Tensor, Indices)> {
        self.pool("max_pool1d", options, None)
    }

    /// The maximum of each channel over time, N×C×L → N×C, with its position: the pooling
    /// of a text CNN (ties and NaN as in [`Tensor::max_pool1d`]).
    pub fn max_over_time(&self) -> Result<(Tensor, Indices)> {
        let op = "max_over_time";
        let &[n, c, len] = self.shape() else {
            return Err(Error::invalid(
                op,
                format!("the input must be N×C×L (rank 3), got {:?}", self.shape()),
            ));
        };
        if len == 0 {
            return Err(Error::ZeroSized {
                op,
                shape: self.shape().to_vec(),
                why: "the maximum over no time steps has no value and no position",
            });
        }
        self.pool(op, MaxPool1d::new(len), Some(&[n, c]))
    }

    /// Pools with `options`, giving the results `out_shape` (default N×C×L_out).
    fn pool(
        &self,
        op: &'static str,
        options: MaxPool1d,
        out_shape: Option<&[usize]>,
    ) -> Result<(Tensor, Indices)> {
        let [n, c, len] = *self.shape() else {
            return Err(Error::invalid(
                op,
                format!("the input must be N×C×L (rank 3), got {:?}", self.shape()),
            ));
        };
        let out_len = options.out_len(op, len)?;
        let shape = out_shape.map_or_else(|| vec![n, c, out_len], <[usize]>::to_vec);
        let gpu = self.gpu();
        let y = Tensor::uninit(gpu, &shape)?;
        let argmax = Indices::uninit(gpu, &shape)?;
        if y.numel() > 0 {
            let dispatch = max_pool_dispatch(self, &y, &argmax, len, &options)?;
            gpu.submit(&[], &[dispatch])?;
        }
        Ok((y, argmax))
    }

    /// The gradient of [`Tensor::max_pool1d`]: `self` is dy (N×C×L_out), `argmax` the
    /// positions the forward returned, `len` the input's L. dx (N×C×L) holds, at each
    /// position, the sum of dy over the windows whose maximum it was, and 0 elsewhere.
    pub fn max_pool1d_backward(
        &self,
        argmax: &Indices,
        len: usize,
        options: MaxPool1d,
    ) -> Result<Tensor> {
        let op = "max_pool1d_backward";
        let out_len = options.out_len(op, len)?;
        let [n, c, dy_len] = *self.shape() else {
            return Err(Error::invalid(
                op,
                format!("dy must be N×C×L_out (rank 3), got {:?}", self.shape()),
            ));
        };
        if dy_len != out_len {
            return Err(Error::ShapeMismatch {
                op,
                lhs: self.shape().to_vec(),
                rhs: vec![n, c, out_len],
                expected: format!("{len} positions pool to {out_len} with {options:?}"),
            });
        }
        self.unpool(op, argmax, &[n, c, len], &options)
    }

    /// The gradient of [`Tensor::max_over_time`]: `self` is dy (N×C), `argmax` the
    /// positions it returned, `len` the input's L; dx (N×C×L) is dy at the argmax and 0
    /// elsewhere.
    pub fn max_over_time_backward(&self, argmax: &Indices, len: usize) -> Result<Tensor> {
        let op = "max_over_time_backward";
        let [n, c] = *self.shape() else {
            return Err(Error::invalid(
                op,
                format!("dy must be N×C (rank 2), got {:?}", self.shape()),
            ));
        };
        if len == 0 {
            return Err(Error::ZeroSized {
                op,
                shape: vec![n, c, len],
                why: "the maximum over no time steps has no position",
            });
        }
        self.unpool(op, argmax, &[n, c, len], &MaxPool1d::new(len))
    }

    fn unpool(
        &self,
        op: &'static str,
        argmax: &Indices,
        dx_shape: &[usize],
        options: &MaxPool1d,
    ) -> Result<Tensor> {
        if !self.gpu().same_device(argmax.gpu()) {
            return Err(Error::DeviceMismatch { op });
        }
        if argmax.shape() != self.shape() {
            return Err(Error::ShapeMismatch {
                op,
                lhs: self.shape().to_vec(),
                rhs: argmax.shape().to_vec(),
                expected: "dy and argmax must have one shape (the forward's output)".into(),
            });
        }
        let dx = Tensor::uninit(self.gpu(), dx_shape)?;
        if dx.numel() > 0 {
            let dispatch = max_pool_backward_dispatch(self, argmax, &dx, dx_shape[2], options)?;
            self.gpu().submit(&[], &[dispatch])?;
        }
        Ok(dx)
    }
}
