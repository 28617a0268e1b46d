//! Softmax and log-softmax along an axis, their gradients, and the fused
//! softmax-cross-entropy loss with its gradient (`shaders/softmax.wgsl`).
//!
//! Every row is shifted by its maximum before exp, so logits of any finite size give finite
//! results; a fully masked row (all −∞) gives softmax 0 and log-softmax −∞, never NaN.
//! The backward passes take the forward output y, not the input:
//! softmax dx = y ⊙ (dy − Σ dy⊙y), log-softmax dx = dy − exp(y)·Σ dy.

use crate::error::{Error, Result};
use crate::gpu::{Access, Dispatch, Gpu, KernelSpec, ShaderSource};
use crate::kernels::reduce::split_at_axis;
use crate::kernels::WORKGROUP_1D;
use crate::tensor::{ignore_bits, index_in_words, resolve_axis, Indices, Tensor};

/// The softmax module, `shaders/softmax.wgsl`: softmax, log-softmax, their backward and the
/// fused cross-entropy.
pub static SHADER: ShaderSource =
    ShaderSource::new("softmax", include_str!("../../shaders/softmax.wgsl"));

/// Softmax or its logarithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SoftmaxKind {
    /// yᵢ = e^(xᵢ − max x) / Σⱼ e^(xⱼ − max x): non-negative, summing to 1 along the axis.
    Softmax,
    /// yᵢ = xᵢ − max x − ln Σⱼ e^(xⱼ − max x), the logarithm of the softmax computed without
    /// forming it (so that tiny probabilities keep their precision).
    LogSoftmax,
}

impl SoftmaxKind {
    /// The shader's `LOG` constant.
    fn log(self) -> f64 {
        match self {
            SoftmaxKind::Softmax => 0.0,
            SoftmaxKind::LogSoftmax => 1.0,
        }
    }

    fn name(self) -> &'static str {
        match self {
            SoftmaxKind::Softmax => "softmax",
            SoftmaxKind::LogSoftmax => "log_softmax",
        }
    }

    fn backward_name(self) -> &'static str {
        match self {
            SoftmaxKind::Softmax => "softmax_backward",
            SoftmaxKind::LogSoftmax => "log_softmax_backward",
        }
    }
}

/// Fails unless `axis` is an axis of `shape`.
fn check_axis(op: &'static str, axis: usize, shape: &[usize]) -> Result<()> {
    if axis >= shape.len() {
        return Err(Error::invalid(
            op,
            format!("axis {axis} is out of range for shape {shape:?}"),
        ));
    }
    Ok(())
}

/// Which shader entry point walks the rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SoftmaxVariant {
    /// One invocation per row, looping over it; any axis.
    Strided,
    /// One workgroup per row with a tree reduction; the last axis only.
    Rows,
    /// One invocation per row read as vec4, max and Σexp in one pass: the last axis, rows a
    /// multiple of 4 long.
    Vec4,
}

impl SoftmaxVariant {
    /// Every variant: those the kernel list compiles, and tests and benchmarks try.
    pub const ALL: [SoftmaxVariant; 3] = [
        SoftmaxVariant::Strided,
        SoftmaxVariant::Rows,
        SoftmaxVariant::Vec4,
    ];

    /// The variant's name in benchmark reports and tuning files.
    pub fn name(self) -> &'static str {
        match self {
            SoftmaxVariant::Strided => "strided",
            SoftmaxVariant::Rows => "rows",
            SoftmaxVariant::Vec4 => "vec4",
        }
    }

    /// Whether the variant can walk rows of length `n` at stride `inner`.
    pub fn supports(self, inner: usize, n: usize) -> bool {
        match self {
            SoftmaxVariant::Strided => true,
            SoftmaxVariant::Rows => inner == 1,
            SoftmaxVariant::Vec4 => inner == 1 && n.is_multiple_of(4),
        }
    }

    /// The variant for rows of length `n` at stride `inner`. CPU-like adapters (lavapipe)
    /// take one invocation per row: their barriers are dear, and at 1024×1024 the strided
    /// kernel ran 2-4× faster than the workgroup one there (`cargo bench --bench softmax`).
    /// Their rows read as vec4 where the layout allows, about twice as fast again.
    /// Other GPUs take a workgroup per row once rows are long enough to keep one busy.
    pub fn choose(gpu: &Gpu, inner: usize, n: usize) -> Self {
        if gpu.is_cpu_like() {
            if SoftmaxVariant::Vec4.supports(inner, n) {
                SoftmaxVariant::Vec4
            } else {
                SoftmaxVariant::Strided
            }
        } else if inner == 1 && n >= 512 {
            SoftmaxVariant::Rows
        } else {
            SoftmaxVariant::Strided
        }
    }

    /// Fails if the variant cannot walk rows of length `n` at stride `inner`.
    fn check(self, op: &'static str, inner: usize, n: usize) -> Result<()> {
        if self.supports(inner, n) {
            return Ok(());
        }
        let needs = match self {
            SoftmaxVariant::Vec4 => "the last axis (stride 1) and rows a multiple of 4 long",
            _ => "the last axis (stride 1)",
        };
        Err(Error::invalid(
            op,
            format!(
                "the {} variant needs {needs}, not rows of {n} at stride {inner}",
                self.name()
            ),
        ))
    }

    /// The entry point of `kernel` in this variant.
    fn entry(self, kernel: RowKernel) -> &'static str {
        match (kernel, self) {
            (RowKernel::Forward, SoftmaxVariant::Strided) => "softmax_strided",
            (RowKernel::Forward, SoftmaxVariant::Rows) => "softmax_rows",
            (RowKernel::Backward, SoftmaxVariant::Strided) => "softmax_backward_strided",
            (RowKernel::Backward, SoftmaxVariant::Rows) => "softmax_backward_rows",
            (RowKernel::CrossEntropy, SoftmaxVariant::Strided) => "cross_entropy_strided",
            (RowKernel::CrossEntropy, SoftmaxVariant::Rows) => "cross_entropy_rows",
            (RowKernel::Forward, SoftmaxVariant::Vec4) => "softmax_vec4",
            (RowKernel::Backward, SoftmaxVariant::Vec4) => "softmax_backward_vec4",
            (RowKernel::CrossEntropy, SoftmaxVariant::Vec4) => "cross_entropy_vec4",
        }
    }

    /// The grid for `rows` rows: one invocation per row, or one workgroup per row.
    fn grid(self, gpu: &Gpu, rows: usize) -> [u32; 3] {
        gpu.grid(match self {
            SoftmaxVariant::Strided => (rows as u32).div_ceil(WORKGROUP_1D),
            SoftmaxVariant::Rows => rows as u32,
            SoftmaxVariant::Vec4 => (rows as u32).div_ceil(VEC4_WORKGROUP),
        })
    }
}

/// Invocations per workgroup of the `*_vec4` kernels (the shader's `VEC4_WORKGROUP`).
const VEC4_WORKGROUP: u32 = 64;

/// The row kernels of the shader, each with a strided, a rows and a vec4 entry point.
#[derive(Clone, Copy)]
enum RowKernel {
    Forward,
    Backward,
    CrossEntropy,
}

impl RowKernel {
    fn bindings(self) -> &'static [Access] {
        match self {
            RowKernel::Forward => &[Access::Read, Access::ReadWrite, Access::Uniform],
            RowKernel::Backward => &[
                Access::Read,
                Access::Read,
                Access::ReadWrite,
                Access::Uniform,
            ],
            RowKernel::CrossEntropy => &[
                Access::Read,
                Access::Read,
                Access::Read,
                Access::Read,
                Access::ReadWrite,
                Access::ReadWrite,
                Access::Uniform,
            ],
        }
    }
}

/// The kernel of `kernel` in `variant` with its one constant: `LOG` for the softmax and
/// its backward, `WEIGHTED` for the cross-entropy.
fn row_spec(
    kernel: RowKernel,
    variant: SoftmaxVariant,
    constant: (&'static str, f64),
) -> KernelSpec {
    KernelSpec {
        source: &SHADER,
        entry: variant.entry(kernel),
        bindings: kernel.bindings(),
        constants: vec![constant],
    }
}

/// The kernels that fold the cross-entropy's rows: `cross_entropy_weight_sum` and
/// `cross_entropy_total`.
fn fold_spec(entry: &'static str) -> KernelSpec {
    KernelSpec {
        source: &SHADER,
        entry,
        bindings: &[
            Access::Read,
            Access::Read,
            Access::ReadWrite,
            Access::Uniform,
        ],
        constants: Vec::new(),
    }
}

fn flag(yes: bool) -> f64 {
    f64::from(u8::from(yes))
}

/// Every kernel variant the softmax and cross-entropy launchers can build.
pub fn kernel_specs() -> Vec<KernelSpec> {
    let mut specs = Vec::new();
    for variant in SoftmaxVariant::ALL {
        for kind in [SoftmaxKind::Softmax, SoftmaxKind::LogSoftmax] {
            for kernel in [RowKernel::Forward, RowKernel::Backward] {
                specs.push(row_spec(kernel, variant, ("LOG", kind.log())));
            }
        }
        for weighted in [false, true] {
            specs.push(row_spec(
                RowKernel::CrossEntropy,
                variant,
                ("WEIGHTED", flag(weighted)),
            ));
        }
    }
    specs.extend(["cross_entropy_weight_sum", "cross_entropy_total"].map(fold_spec));
    specs
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct RowParams {
    outer: u32,
    n: u32,
    inner: u32,
    pad: u32,
}

impl RowParams {
    fn new(shape: &[usize], axis: usize) -> Self {
        let (outer, n, inner) = split_at_axis(shape, axis);
        RowParams {
            outer: outer as u32,
            n: n as u32,
            inner: inner as u32,
            pad: 0,
        }
    }

    /// How many rows (one per (outer, inner) pair).
    fn rows(&self) -> usize {
        self.outer as usize * self.inner as usize
    }
}

/// Records y = softmax(x) (or log-softmax) along `axis` into `y`, of x's shape.
pub fn softmax_dispatch(
    x: &Tensor,
    y: &Tensor,
    axis: usize,
    kind: SoftmaxKind,
    variant: SoftmaxVariant,
) -> Result<Dispatch> {
    let gpu = x.gpu();
    let params = RowParams::new(x.shape(), axis);
    variant.check(kind.name(), params.inner as usize, params.n as usize)?;
    let spec = row_spec(RowKernel::Forward, variant, ("LOG", kind.log()));
    gpu.dispatch(
        &spec,
        &[x.buffer(), y.buffer()],
        &params,
        variant.grid(gpu, params.rows()),
    )
}

/// Records dx from the forward output `y` and the gradient `dy` (all of one shape).
pub fn softmax_backward_dispatch(
    y: &Tensor,
    dy: &Tensor,
    dx: &Tensor,
    axis: usize,
    kind: SoftmaxKind,
    variant: SoftmaxVariant,
) -> Result<Dispatch> {
    let gpu = y.gpu();
    let params = RowParams::new(y.shape(), axis);
    variant.check(
        kind.backward_name(),
        params.inner as usize,
        params.n as usize,
    )?;
    let spec = row_spec(RowKernel::Backward, variant, ("LOG", kind.log()));
    gpu.dispatch(
        &spec,
        &[y.buffer(), dy.buffer(), dx.buffer()],
        &params,
        variant.grid(gpu, params.rows()),
    )
}

/// CPU reference of [`Tensor::softmax`] / [`Tensor::log_softmax`], in f64, with the
/// shader's conventions for fully masked rows.
pub fn softmax_cpu(x: &[f64], shape: &[usize], axis: usize, kind: SoftmaxKind) -> Vec<f64> {
    let (outer, n, inner) = split_at_axis(shape, axis);
    let mut y = vec![0.0; x.len()];
    for o in 0..outer {
        for i in 0..inner {
            let at = |j: usize| (o * n + j) * inner + i;
            let max = (0..n).map(|j| x[at(j)]).fold(f64::NEG_INFINITY, f64::max);
            let shift = if max == f64::NEG_INFINITY { 0.0 } else { max };
            let sum: f64 = (0..n).map(|j| (x[at(j)] - shift).exp()).sum();
            for j in 0..n {
                y[at(j)] = match (kind, sum == 0.0) {
                    (SoftmaxKind::Softmax, true) => 0.0,
                    (SoftmaxKind::Softmax, false) => (x[at(j)] - shift).exp() / sum,
                    (SoftmaxKind::LogSoftmax, true) => f64::NEG_INFINITY,
                    (SoftmaxKind::LogSoftmax, false) => x[at(j)] - shift - sum.ln(),
                };
            }
        }
    }
    y
}

/// CPU reference of [`Tensor::softmax_backward`] / [`Tensor::log_softmax_backward`].
pub fn softmax_backward_cpu(
    y: &[f64],
    dy: &[f64],
    shape: &[usize],
    axis: usize,
    kind: SoftmaxKind,
) -> Vec<f64> {
    let (outer, n, inner) = split_at_axis(shape, axis);
    let mut dx = vec![0.0; y.len()];
    for o in 0..outer {
        for i in 0..inner {
            let at = |j: usize| (o * n + j) * inner + i;
            match kind {
                SoftmaxKind::Softmax => {
                    let dot: f64 = (0..n).map(|j| dy[at(j)] * y[at(j)]).sum();
                    for j in 0..n {
                        dx[at(j)] = y[at(j)] * (dy[at(j)] - dot);
                    }
                }
                SoftmaxKind::LogSoftmax => {
                    let total: f64 = (0..n).map(|j| dy[at(j)]).sum();
                    for j in 0..n {
                        dx[at(j)] = dy[at(j)] - y[at(j)].exp() * total;
                    }
                }
            }
        }
    }
    dx
}

impl Tensor {
    /// Softmax along `axis` (negative counts from the end): exp(x − max) / Σ exp(x − max).
    pub fn softmax(&self, axis: isize) -> Result<Tensor> {
        self.normalize_rows(SoftmaxKind::Softmax, axis)
    }

    /// Log-softmax along `axis`: x − max − log Σ exp(x − max).
    pub fn log_softmax(&self, axis: isize) -> Result<Tensor> {
        self.normalize_rows(SoftmaxKind::LogSoftmax, axis)
    }

    fn normalize_rows(&self, kind: SoftmaxKind, axis: isize) -> Result<Tensor> {
        let axis = resolve_axis(kind.name(), axis, self.rank())?;
        let (_, n, inner) = split_at_axis(self.shape(), axis);
        self.softmax_with(kind, axis, SoftmaxVariant::choose(self.gpu(), inner, n))
    }

    /// [`Tensor::softmax`] or [`Tensor::log_softmax`] with the kernel variant chosen by the
    /// caller (for tests and benches).
    pub fn softmax_with(
        &self,
        kind: SoftmaxKind,
        axis: usize,
        variant: SoftmaxVariant,
    ) -> Result<Tensor> {
        check_axis(kind.name(), axis, self.shape())?;
        let y = Tensor::uninit(self.gpu(), self.shape())?;
        if y.numel() > 0 {
            let dispatch = softmax_dispatch(self, &y, axis, kind, variant)?;
            self.gpu().submit(&[], &[dispatch])?;
        }
        Ok(y)
    }

    /// The gradient through softmax, from its output: `self` is y = softmax(x) along
    /// `axis`, `dy` is dL/dy; returns dL/dx = y ⊙ (dy − Σ dy⊙y).
    pub fn softmax_backward(&self, dy: &Tensor, axis: isize) -> Result<Tensor> {
        self.normalize_rows_backward(SoftmaxKind::Softmax, dy, axis)
    }

    /// The gradient through log-softmax, from its output: `self` is y = log_softmax(x)
    /// along `axis`; returns dL/dx = dy − exp(y)·Σ dy.
    pub fn log_softmax_backward(&self, dy: &Tensor, axis: isize) -> Result<Tensor> {
        self.normalize_rows_backward(SoftmaxKind::LogSoftmax, dy, axis)
    }

    fn normalize_rows_backward(
        &self,
        kind: SoftmaxKind,
        dy: &Tensor,
        axis: isize,
    ) -> Result<Tensor> {
        let axis = resolve_axis(kind.backward_name(), axis, self.rank())?;
        let (_, n, inner) = split_at_axis(self.shape(), axis);
        let variant = SoftmaxVariant::choose(self.gpu(), inner, n);
        self.softmax_backward_with(kind, dy, axis, variant)
    }

    /// The backward passes with the kernel variant chosen by the caller.
    pub fn softmax_backward_with(
        &self,
        kind: SoftmaxKind,
        dy: &Tensor,
        axis: usize,
        variant: SoftmaxVariant,
    ) -> Result<Tensor> {
        let op = kind.backward_name();
        self.same_device(op, dy)?;
        check_axis(op, axis, self.shape())?;
        if self.shape() != dy.shape() {
            return Err(Error::ShapeMismatch {
                op,
                lhs: self.shape().to_vec(),
                rhs: dy.shape().to_vec(),
                expected: "the forward output y and its gradient dy must have the same shape"
                    .into(),
            });
        }
        let dx = Tensor::uninit(self.gpu(), self.shape())?;
        if dx.numel() > 0 {
            let dispatch = softmax_backward_dispatch(self, dy, &dx, axis, kind, variant)?;
            self.gpu().submit(&[], &[dispatch])?;
        }
        Ok(dx)
    }
}

// --------------------------------------------------------------------- softmax-cross-entropy

/// How the per-row losses of a cross-entropy combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossReduction {
    /// One loss per row, shape [N, d1, …] (0 for ignored rows).
    None,
    /// The sum of the row losses, a scalar.
    Sum,
    /// The sum divided by the number of rows not ignored, or with class weights by the sum
    /// of their weights; 0 when every row is ignored.
    Mean,
}

/// The output of [`SoftmaxCrossEntropy::run`].
#[derive(Debug, Clone)]
pub struct CrossEntropy {
    /// A scalar for [`LossReduction::Sum`] and [`LossReduction::Mean`], the row losses for
    /// [`LossReduction::None`].
    pub loss: Tensor,
    /// dloss/dlogits, of the logits' shape. With [`LossReduction::None`] it is the gradient
    /// of the sum of the row losses (each row's gradient scaled by dloss_r = 1).
    pub grad: Tensor,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct CrossEntropyParams {
    rows: u32,
    classes: u32,
    inner: u32,
    ignore: u32,
}

/// The tensors of one cross-entropy launch.
pub struct CrossEntropyOperands<'a> {
    /// [N, C, d1, …]
    pub logits: &'a Tensor,
    /// [N, d1, …], each a class below C or the ignore value.
    pub targets: &'a Indices,
    /// \[C\], or `None` for weight 1 everywhere.
    pub weights: Option<&'a Tensor>,
    /// \[1\]: what the reduced loss divides by (see `shaders/softmax.wgsl`).
    pub divisor: &'a Tensor,
    /// [N, d1, …] (written).
    pub row_loss: &'a Tensor,
    /// The logits' shape (written).
    pub grad: &'a Tensor,
}

impl CrossEntropyOperands<'_> {
    fn params(&self, ignore: u32) -> CrossEntropyParams {
        let (n, classes, inner) = split_at_axis(self.logits.shape(), 1);
        CrossEntropyParams {
            rows: (n * inner) as u32,
            classes: classes as u32,
            inner: inner as u32,
            ignore,
        }
    }
}

/// Records the per-row kernel: each row's loss and gradient row.
pub fn cross_entropy_dispatch(
    operands: &CrossEntropyOperands,
    ignore: u32,
    variant: SoftmaxVariant,
) -> Result<Dispatch> {
    let gpu = operands.logits.gpu();
    let params = operands.params(ignore);
    variant.check(
        "softmax_cross_entropy",
        params.inner as usize,
        params.classes as usize,
    )?;
    let spec = row_spec(
        RowKernel::CrossEntropy,
        variant,
        ("WEIGHTED", flag(operands.weights.is_some())),
    );
    let weights = operands
        .weights
        .map_or(gpu.placeholder(), |weights| weights.buffer());
    gpu.dispatch(
        &spec,
        &[
            operands.logits.buffer(),
            operands.targets.buffer(),
            weights,
            operands.divisor.buffer(),
            operands.row_loss.buffer(),
            operands.grad.buffer(),
        ],
        &params,
        variant.grid(gpu, params.rows as usize),
    )
}

/// Records divisor\[0\] = Σ weights\[t\] over the rows whose target t is not `ignore`.
pub fn cross_entropy_weight_sum_dispatch(
    operands: &CrossEntropyOperands,
    weights: &Tensor,
    ignore: u32,
) -> Result<Dispatch> {
    operands.logits.gpu().dispatch(
        &fold_spec("cross_entropy_weight_sum"),
        &[
            operands.targets.buffer(),
            weights.buffer(),
            operands.divisor.buffer(),
        ],
        &operands.params(ignore),
        [1, 1, 1],
    )
}

/// Records loss\[0\] = Σ row_loss / divisor\[0\] (0 when the divisor is 0).
pub fn cross_entropy_total_dispatch(
    operands: &CrossEntropyOperands,
    loss: &Tensor,
) -> Result<Dispatch> {
    operands.logits.gpu().dispatch(
        &fold_spec("cross_entropy_total"),
        &[
            operands.row_loss.buffer(),
            operands.divisor.buffer(),
            loss.buffer(),
        ],
        &operands.params(0),
        [1, 1, 1],
    )
}

/// A softmax-cross-entropy to run: `logits.softmax_cross_entropy(&targets)`, then options,
/// then [`SoftmaxCrossEntropy::run`].
///
/// Logits are [N, C] or [N, C, d1, d2, …] with the classes on axis 1 (as in ONNX and
/// PyTorch); targets are \[N\] or [N, d1, d2, …]. Every target must be a class below C or
/// the ignore index; this is checked on the host before dispatch (from the copy that
/// [`Indices::from_slice`] keeps, or by downloading the targets).
#[derive(Debug, Clone)]
pub struct SoftmaxCrossEntropy<'a> {
    logits: &'a Tensor,
    targets: &'a Indices,
    weights: Option<&'a Tensor>,
    ignore_index: Option<i64>,
    reduction: LossReduction,
    variant: Option<SoftmaxVariant>,
}

impl<'a> SoftmaxCrossEntropy<'a> {
    /// Class weights, shape \[C\]: row r's loss and gradient are scaled by weights\[target_r\].
    pub fn weights(mut self, weights: &'a Tensor) -> Self {
        self.weights = Some(weights);
        self
    }

    /// Rows whose target is `index` contribute nothing and get a zero gradient, as
    /// PyTorch's `ignore_index`. It may be a class (such as the padding token's id) or a
    /// negative value such as [`crate::PYTORCH_IGNORE_INDEX`] (-100), which targets made by
    /// [`Indices::from_i64`] hold where PyTorch's do: any u32 value or negative i32.
    pub fn ignore_index(mut self, index: i64) -> Self {
        self.ignore_index = Some(index);
        self
    }

    /// How row losses combine; [`LossReduction::Mean`] by default.
    pub fn reduction(mut self, reduction: LossReduction) -> Self {
        self.reduction = reduction;
        self
    }

    /// Forces a kernel variant (for tests and benches); otherwise
    /// [`SoftmaxVariant::choose`] picks one.
    pub fn variant(mut self, variant: SoftmaxVariant) -> Self {
        self.variant = Some(variant);
        self
    }

    /// Checks the operands, then computes the loss and its gradient in one submission.
    pub fn run(self) -> Result<CrossEntropy> {
        const OP: &str = "softmax_cross_entropy";
        let logits = self.logits;
        let gpu = logits.gpu();
        let shape = logits.shape();
        if shape.len() < 2 {
            return Err(Error::invalid(
                OP,
                format!(
                    "logits {shape:?} must be [N, C] or [N, C, d1, …], with the classes on axis 1"
                ),
            ));
        }
        let classes = shape[1];
        let row_shape: Vec<usize> = [&shape[..1], &shape[2..]].concat();
        if !gpu.same_device(self.targets.gpu())
            || self.weights.is_some_and(|w| !gpu.same_device(w.gpu()))
        {
            return Err(Error::DeviceMismatch { op: OP });
        }
        if self.targets.shape() != row_shape {
            return Err(Error::ShapeMismatch {
                op: OP,
                lhs: shape.to_vec(),
                rhs: self.targets.shape().to_vec(),
                expected: format!(
                    "targets must have the logits' shape without the class axis, {row_shape:?}"
                ),
            });
        }
        if classes == 0 {
            return Err(Error::ZeroSized {
                op: OP,
                shape: shape.to_vec(),
                why: "a distribution over no classes has no softmax",
            });
        }
        if let Some(weights) = self.weights {
            if weights.shape() != [classes] {
                return Err(Error::ShapeMismatch {
                    op: OP,
                    lhs: shape.to_vec(),
                    rhs: weights.shape().to_vec(),
                    expected: format!("class weights must be [C] = [{classes}]"),
                });
            }
        }
        let ignore = self
            .ignore_index
            .map(|index| ignore_bits(OP, index))
            .transpose()?;
        let targets = self.targets.host_values()?;
        let counted = count_targets(&targets, classes, self.ignore_index)?;

        // What the reduced loss divides by: known on the host, except the sum of the
        // weights of a weighted mean, which a first dispatch finds.
        let weight_sum = self
            .weights
            .filter(|_| self.reduction == LossReduction::Mean);
        let divisor = match (weight_sum, self.reduction) {
            (Some(_), _) => Tensor::uninit(gpu, &[1])?,
            (None, LossReduction::Mean) => Tensor::from_slice(gpu, &[counted as f32], &[1])?,
            (None, LossReduction::Sum | LossReduction::None) => {
                Tensor::from_slice(gpu, &[1.0], &[1])?
            }
        };
        let row_loss = Tensor::uninit(gpu, &row_shape)?;
        let grad = Tensor::uninit(gpu, shape)?;
        let operands = CrossEntropyOperands {
            logits,
            targets: self.targets,
            weights: self.weights,
            divisor: &divisor,
            row_loss: &row_loss,
            grad: &grad,
        };
        // With no ignore index every value is a class (checked above), so any non-class
        // value serves as the kernel's "ignore" and matches nothing.
        let ignore = ignore.unwrap_or(u32::MAX);
        let mut dispatches = Vec::with_capacity(3);
        if let Some(weights) = weight_sum {
            dispatches.push(cross_entropy_weight_sum_dispatch(
                &operands, weights, ignore,
            )?);
        }
        if row_loss.numel() > 0 {
            let (_, _, inner) = split_at_axis(shape, 1);
            let variant = self
                .variant
                .unwrap_or_else(|| SoftmaxVariant::choose(gpu, inner, classes));
            dispatches.push(cross_entropy_dispatch(&operands, ignore, variant)?);
        }
        let loss = match self.reduction {
            LossReduction::None => row_loss.clone(),
            LossReduction::Sum | LossReduction::Mean => {
                let loss = Tensor::uninit(gpu, &[])?;
                dispatches.push(cross_entropy_total_dispatch(&operands, &loss)?);
                loss
            }
        };
        gpu.submit(&[], &dispatches)?;
        Ok(CrossEntropy { loss, grad })
    }
}

/// How many targets are not `ignore_index`; an error naming the first that is neither a
/// class below `classes` nor the ignore index.
fn count_targets(targets: &[u32], classes: usize, ignore_index: Option<i64>) -> Result<usize> {
    let ignore_bits = ignore_index.map(|index| index as u32); // in range: checked by the caller
    let mut counted = 0;
    for (position, &target) in targets.iter().enumerate() {
        if Some(target) == ignore_bits {
            continue;
        }
        if target as usize >= classes {
            let ignore = match ignore_index {
                Some(index) => format!("the ignore index {index}"),
                None => "no ignore index is set".into(),
            };
            return Err(Error::invalid(
                "softmax_cross_entropy",
                format!(
                    "target {} at position {position} is not a class: there are {classes} \
                     classes (0..{classes}) and {ignore}",
                    index_in_words(target)
                ),
            ));
        }
        counted += 1;
    }
    Ok(counted)
}

/// CPU reference of [`SoftmaxCrossEntropy::run`] in f64: (loss, grad), the loss as one
/// value per row for [`LossReduction::None`], else a single value.
pub fn softmax_cross_entropy_cpu(
    logits: &[f64],
    shape: &[usize],
    targets: &[u32],
    weights: Option<&[f64]>,
    ignore_index: Option<u32>,
    reduction: LossReduction,
) -> (Vec<f64>, Vec<f64>) {
    let (n, classes, inner) = split_at_axis(shape, 1);
    let log_probs = softmax_cpu(logits, shape, 1, SoftmaxKind::LogSoftmax);
    let mut row_loss = vec![0.0; n * inner];
    let mut row_weight = vec![0.0; n * inner];
    for (r, &target) in targets.iter().enumerate() {
        if Some(target) != ignore_index {
            let w = weights.map_or(1.0, |w| w[target as usize]);
            let at = ((r / inner) * classes + target as usize) * inner + r % inner;
            row_loss[r] = -w * log_probs[at];
            row_weight[r] = w;
        }
    }
    let divisor = match reduction {
        LossReduction::Mean => row_weight.iter().sum(),
        LossReduction::Sum | LossReduction::None => 1.0,
    };
    let scale = if divisor > 0.0 { 1.0 / divisor } else { 0.0 };
    let mut grad = vec![0.0; logits.len()];
    for (r, &target) in targets.iter().enumerate() {
        for c in 0..classes {
            let at = ((r / inner) * classes + c) * inner + r % inner;
            let onehot = if c as u32 == target { 1.0 } else { 0.0 };
            grad[at] = scale * row_weight[r] * (log_probs[at].exp() - onehot);
        }
    }
    let loss = match reduction {
        LossReduction::None => row_loss,
        LossReduction::Sum | LossReduction::Mean => vec![scale * row_loss.iter().sum::<f64>()],
    };
    (loss, grad)
}

impl Tensor {
    /// The fused softmax-cross-entropy of these logits against `targets`: the (mean) loss
    /// and its gradient with respect to the logits, (softmax − onehot)/count, in one pass.
    pub fn softmax_cross_entropy<'a>(&'a self, targets: &'a Indices) -> SoftmaxCrossEntropy<'a> {
        SoftmaxCrossEntropy {
            logits: self,
            targets,
            weights: None,
            ignore_index: None,
            reduction: LossReduction::Mean,
            variant: None,
        }
    }
}
