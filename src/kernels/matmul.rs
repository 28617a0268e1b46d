//! Matrix multiply (`shaders/matmul.wgsl`): out = α·op(A)·op(B) + β·C + bias, batched,
//! with either operand transposed, in several variants, a rule that picks one, and an
//! autotuner that times them.

use std::collections::HashSet;

use crate::error::{Error, Result};
use crate::gpu::{Access, Dispatch, Gpu, KernelSpec, ShaderSource};
use crate::kernels::broadcast_shapes;
use crate::tensor::Tensor;

/// The matrix product module, `shaders/matmul.wgsl`: every variant but the subgroup and
/// cooperative-matrix ones, which need features some adapters lack.
pub static SHADER: ShaderSource =
    ShaderSource::new("matmul", include_str!("../../shaders/matmul.wgsl"));

/// `matmul.wgsl` with the subgroup kernel appended: a module of its own, since a module
/// that uses subgroup operations does not compile on an adapter without them. The WGSL
/// specification (and so Tint) wants `enable subgroups;` first, which naga 30 refuses:
/// [`ShaderSource::standard_wgsl`] adds it for compilers other than naga.
pub static SUBGROUP_SHADER: ShaderSource = ShaderSource {
    extensions_naga_refuses: &["subgroups"],
    ..ShaderSource::new(
        "matmul_subgroup",
        concat!(
            include_str!("../../shaders/matmul.wgsl"),
            include_str!("../../shaders/matmul_subgroup.wgsl")
        ),
    )
};

/// `matmul.wgsl` under the cooperative-matrix kernel, whose `enable` directives must open
/// the module: compiled only on adapters with matrix units. One of them,
/// `wgpu_cooperative_matrix`, is wgpu's own: no other WGSL compiler takes this module.
pub static COOP_SHADER: ShaderSource = ShaderSource::new(
    "matmul_coop",
    concat!(
        include_str!("../../shaders/matmul_coop.wgsl"),
        include_str!("../../shaders/matmul.wgsl")
    ),
);

/// The shader entry points of one contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MatmulVariant {
    /// 4×4 outputs per invocation in registers, no workgroup memory: any layout, for CPU
    /// adapters.
    Blocked,
    /// 8×8 outputs per invocation with B read as vec4: B not transposed, N a multiple of 4.
    BlockedVec4,
    /// 8 outputs per invocation, A and B both read as vec4 along K: A not transposed, B
    /// transposed, K a multiple of 4 (dX = dY·Wᵀ of a backward, Q·Kᵀ of attention).
    NtVec4,
    /// 32×32 outputs per workgroup of 8 lanes, the A tile loaded once per workgroup and
    /// shared by subgroup broadcasts: for CPU adapters with subgroups of at least 8 lanes
    /// (lavapipe), 2-3× faster there than `BlockedVec4`. Any layout: rows are read as vec4
    /// where N and K (and M when A is transposed) are multiples of 4, gathered float by
    /// float elsewhere.
    Subgroup,
    /// 64×64 tiles staged through workgroup memory: for real GPUs.
    Tiled,
    /// 128×128 tiles, 8×8 outputs per invocation, every load a vec4: for real GPUs on
    /// large products whose rows are whole vec4s (N and K multiples of 4, M too when A is
    /// transposed, offsets and batch strides too).
    TiledVec4,
    /// 64×64 tiles computed by the adapter's matrix units as 16×16×16 products of f16
    /// matrices accumulated in f32 (`shaders/matmul_coop.wgsl`): op(A) and op(B) are rounded
    /// to f16 on the way, so each product a·b may be off by 2⁻¹⁰·|a·b|. Any layout; only on
    /// adapters with such units, and never picked by the rule or the autotuner (its results
    /// are not f32 products): name it with `.variant(..)`.
    CoopF16,
}

impl MatmulVariant {
    /// Every variant, [`MatmulVariant::CoopF16`] included: the kernel lists compile those the
    /// adapter can run, and tests and benchmarks try them.
    pub const ALL: [MatmulVariant; 7] = [
        MatmulVariant::Blocked,
        MatmulVariant::BlockedVec4,
        MatmulVariant::NtVec4,
        MatmulVariant::Subgroup,
        MatmulVariant::Tiled,
        MatmulVariant::TiledVec4,
        MatmulVariant::CoopF16,
    ];

    /// The rule: on a CPU adapter with subgroups of 8 lanes the subgroup kernel, which
    /// measured fastest there on every shape tried, from the MLP's 784-wide layers and its
    /// 10-column output layer to attention's 7×16 products (the A·Bᵀ kernel beat it by a
    /// quarter on 7×7 scores: the autotuner finds such exceptions). Barriers cost a CPU
    /// adapter more than workgroup memory saves, so one without subgroups gets a blocked
    /// kernel; so does a product too small to fill one 64×64 tile. Real GPUs get a tiled
    /// kernel: the vec4 one with its 128×128 tiles where the rows are whole vec4s and there
    /// are enough tiles to keep a large GPU busy (512×512 outputs: 16 tiles per batch; a
    /// guess until measured on one), else the 64×64 one. The vec4 blocked kernel needs the
    /// layout it supports and at least 128 columns: its workgroup spans 128, and on narrower
    /// products (attention's N = 32, say) most of its invocations idle, where the scalar
    /// kernel measured 2-3× faster. A
    /// transposed B with K a multiple of 4 goes to the A·Bᵀ kernel when the scalar
    /// kernel's 32×32 tile would be mostly idle (attention scores of short sequences: 4×
    /// faster there on lavapipe); on larger products its lanes' scattered vec4 loads make
    /// it 2-3× slower than the scalar kernel, so those stay scalar (or are transposed first
    /// by the graph, see its matmul backward).
    pub fn rule(gpu: &Gpu, shape: &GemmShape) -> Self {
        if gpu.is_cpu_like() && MatmulVariant::Subgroup.supports(gpu, shape) {
            return MatmulVariant::Subgroup;
        }
        let blocked_tile_use = (shape.m * shape.n) as f64
            / (shape.m.div_ceil(32) * shape.n.div_ceil(32) * 32 * 32) as f64;
        if gpu.is_cpu_like() || shape.m * shape.n < 64 * 64 {
            if blocked_tile_use < 0.25 && MatmulVariant::NtVec4.supports(gpu, shape) {
                MatmulVariant::NtVec4
            } else if shape.n >= 128 && MatmulVariant::BlockedVec4.supports(gpu, shape) {
                MatmulVariant::BlockedVec4
            } else {
                MatmulVariant::Blocked
            }
        } else if shape.batch * shape.m * shape.n >= 512 * 512
            && MatmulVariant::TiledVec4.supports(gpu, shape)
        {
            MatmulVariant::TiledVec4
        } else {
            MatmulVariant::Tiled
        }
    }

    /// The variant to run `shape` with. With autotuning on (the default, see
    /// `gpu::tuning`), the fastest variant measured on this adapter for the shape's class
    /// (dimensions rounded up to powers of two, the layout and alignment), timed on first
    /// use on a product of at most 256 per dimension on a CPU adapter (about 0.1 s on
    /// lavapipe, plus compiling each variant's pipeline the first time the driver meets it:
    /// about 0.5 s for the subgroup kernel, then in Mesa's shader cache) or 2048 on a GPU,
    /// and remembered on disk; otherwise, or if the measurement fails,
    /// [`MatmulVariant::rule`].
    pub fn choose(gpu: &Gpu, shape: &GemmShape) -> Self {
        if !gpu.autotune() || shape.m == 0 || shape.n == 0 || shape.batch == 0 {
            return MatmulVariant::rule(gpu, shape);
        }
        let key = shape_class(shape);
        let remembered = gpu
            .tuned(&key)
            .and_then(|name| MatmulVariant::from_name(&name))
            .filter(|variant| variant.is_f32() && variant.supports(gpu, shape));
        if let Some(variant) = remembered {
            log::debug!("matmul {key}: {} (remembered)", variant.name());
            return variant;
        }
        match fastest_variant(gpu, shape) {
            Ok(variant) => {
                log::info!("matmul {key}: autotuned to {}", variant.name());
                // Failing to save only means tuning again in the next process.
                if let Err(error) = gpu.remember_tuned(&key, variant.name()) {
                    log::warn!("the tuning file was not written: {error}");
                }
                variant
            }
            Err(error) => {
                let variant = MatmulVariant::rule(gpu, shape);
                log::warn!(
                    "matmul {key}: autotuning failed ({error}); the rule's {}",
                    variant.name()
                );
                variant
            }
        }
    }

    /// The variant of a [`MatmulVariant::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        MatmulVariant::ALL.into_iter().find(|v| v.name() == name)
    }

    /// Whether this variant can compute a product of this layout on this adapter.
    pub fn supports(self, gpu: &Gpu, shape: &GemmShape) -> bool {
        self.available(gpu) && self.supports_layout(shape)
    }

    /// Whether this variant computes f32 products (all but the f16 cooperative-matrix one):
    /// the only ones the rule and the autotuner choose from.
    pub fn is_f32(self) -> bool {
        self != MatmulVariant::CoopF16
    }

    /// Whether the variant stages tiles through workgroup memory between barriers.
    fn uses_workgroup_memory(self) -> bool {
        matches!(
            self,
            MatmulVariant::Tiled | MatmulVariant::TiledVec4 | MatmulVariant::CoopF16
        )
    }

    /// Whether this adapter can run the variant at all: the subgroup kernel needs subgroup
    /// operations and subgroups of at least 8 lanes (its 8 invocations in one subgroup), the
    /// cooperative-matrix one matrix units, subgroups of exactly 32 lanes (its four
    /// subgroups each own a quarter of the tile) and 24 KiB of workgroup memory.
    pub fn available(self, gpu: &Gpu) -> bool {
        match self {
            MatmulVariant::CoopF16 => {
                gpu.has_f16_matrix_units()
                    && gpu.info().subgroup_min_size == 32
                    && gpu.info().subgroup_max_size == 32
                    && gpu.limits().max_compute_workgroup_storage_size >= 24 * 1024
            }
            MatmulVariant::Subgroup => {
                gpu.features().contains(wgpu::Features::SUBGROUP)
                    && gpu.info().subgroup_min_size >= 8
            }
            _ => true,
        }
    }

    fn supports_layout(self, shape: &GemmShape) -> bool {
        match self {
            MatmulVariant::BlockedVec4 => {
                !shape.trans_b
                    && shape.n.is_multiple_of(4)
                    && shape.b_offset.is_multiple_of(4)
                    && shape.out_offset.is_multiple_of(4)
            }
            MatmulVariant::NtVec4 => {
                !shape.trans_a
                    && shape.trans_b
                    && shape.k.is_multiple_of(4)
                    && shape.a_offset.is_multiple_of(4)
                    && shape.b_offset.is_multiple_of(4)
                    && shape.a_batch_stride.is_multiple_of(4)
                    && shape.b_batch_stride.is_multiple_of(4)
            }
            MatmulVariant::TiledVec4 => vec4_aligned(shape),
            MatmulVariant::Subgroup
            | MatmulVariant::Blocked
            | MatmulVariant::Tiled
            | MatmulVariant::CoopF16 => true,
        }
    }

    /// The layouts a variant needs, for errors.
    fn contract(self) -> &'static str {
        match self {
            MatmulVariant::BlockedVec4 => {
                "B not transposed, N a multiple of 4 and the offsets of B and the output \
                 each a multiple of 4"
            }
            MatmulVariant::NtVec4 => {
                "A not transposed, B transposed, K a multiple of 4 and the offsets and batch \
                 strides of A and B multiples of 4"
            }
            MatmulVariant::Subgroup => "an adapter with subgroups of at least 8 lanes",
            MatmulVariant::CoopF16 => {
                "an adapter with 16×16×16 f16 cooperative matrices (wgpu's \
                 EXPERIMENTAL_COOPERATIVE_MATRIX), subgroups of 32 lanes and 24 KiB of \
                 workgroup memory"
            }
            MatmulVariant::TiledVec4 => {
                "N and K multiples of 4 (and M when A is transposed), and the offsets and \
                 batch strides multiples of 4"
            }
            MatmulVariant::Blocked | MatmulVariant::Tiled => "nothing",
        }
    }

    /// The variant's name in benchmark reports, tuning files and errors.
    pub fn name(self) -> &'static str {
        match self {
            MatmulVariant::Blocked => "blocked",
            MatmulVariant::BlockedVec4 => "blocked-vec4",
            MatmulVariant::NtVec4 => "nt-vec4",
            MatmulVariant::Subgroup => "subgroup",
            MatmulVariant::Tiled => "tiled",
            MatmulVariant::TiledVec4 => "tiled-vec4",
            MatmulVariant::CoopF16 => "coop-f16",
        }
    }

    /// The entry point for `shape`: the subgroup kernel has one that stores vec4s where the
    /// output's rows are whole vec4s (whatever A and B are).
    fn entry(self, shape: &GemmShape) -> &'static str {
        let output_in_vec4s = shape.n.is_multiple_of(4) && shape.out_offset.is_multiple_of(4);
        match self {
            MatmulVariant::Blocked => "matmul_blocked",
            MatmulVariant::BlockedVec4 => "matmul_blocked_vec4",
            MatmulVariant::NtVec4 => "matmul_nt_vec4",
            MatmulVariant::Subgroup if output_in_vec4s => "matmul_subgroup_vec4",
            MatmulVariant::Subgroup => "matmul_subgroup",
            MatmulVariant::Tiled => "matmul_tiled",
            MatmulVariant::TiledVec4 => "matmul_tiled_vec4",
            MatmulVariant::CoopF16 => "matmul_coop",
        }
    }

    /// Output (rows, columns) one workgroup covers.
    fn tile(self) -> (u32, u32) {
        match self {
            MatmulVariant::Blocked => (32, 32),
            MatmulVariant::BlockedVec4 => (8, 128),
            MatmulVariant::NtVec4 => (8, 16),
            MatmulVariant::Subgroup => (32, 32),
            MatmulVariant::Tiled => (64, 64),
            MatmulVariant::TiledVec4 => (128, 128),
            MatmulVariant::CoopF16 => (64, 64),
        }
    }
}

/// A hash of the shaders the autotuner chooses between: part of every class key, so that
/// choices made for other versions of the kernels are never applied to these.
fn tuned_shaders_hash() -> u64 {
    static HASH: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *HASH.get_or_init(|| {
        let sources = [SHADER.wgsl, SUBGROUP_SHADER.wgsl].concat();
        crate::hash::fnv1a64(sources.as_bytes())
    })
}

/// The autotuner's class of a product: the tuned shaders' version, each size rounded up to
/// a power of two (batches up to 64), the transposes, and the alignments the vec4 and
/// subgroup variants need.
fn shape_class(shape: &GemmShape) -> String {
    let round = |x: usize, cap: usize| x.max(1).next_power_of_two().min(cap);
    let flag = |b: bool| u8::from(b);
    format!(
        "matmul@{:016x} b{} m{} n{} k{} ta{} tb{} m4{} n4{} k4{} aligned{}",
        tuned_shaders_hash(),
        round(shape.batch, 64),
        round(shape.m, 4096),
        round(shape.n, 4096),
        round(shape.k, 4096),
        flag(shape.trans_a),
        flag(shape.trans_b),
        // M's alignment matters only to the vec4 kernels' transposed A.
        flag(shape.trans_a && shape.m.is_multiple_of(4)),
        flag(shape.n.is_multiple_of(4)),
        flag(shape.k.is_multiple_of(4)),
        flag(
            [
                shape.a_offset,
                shape.b_offset,
                shape.out_offset,
                shape.a_batch_stride,
                shape.b_batch_stride
            ]
            .iter()
            .all(|o| o.is_multiple_of(4))
        ),
    )
}

/// Times every variant that supports `shape` on a product of its layout with each size at
/// most 256 on a CPU adapter, 2048 on a GPU (where a 256² product is too small to tell the
/// large-tile kernels' worth, and a 2048² one takes about a millisecond), and 8 batches:
/// one warm-up (which compiles the pipeline) and the best of three runs each. Another
/// variant displaces the rule's pick only when it is at least 10% faster, so that noise (a
/// shared machine, a busy CPU adapter) does not flip well-founded rules. A CPU adapter does
/// not time the workgroup-memory kernels: their barriers made them 2-5× slower than the
/// blocked and subgroup kernels on every shape measured there, and compiling them was most
/// of a first tuning's time (lavapipe with a cold shader cache: 3.9 s for a class).
fn fastest_variant(gpu: &Gpu, shape: &GemmShape) -> Result<MatmulVariant> {
    let cap = if gpu.is_cpu_like() { 256 } else { 2048 };
    let (m, n, k) = (shape.m.min(cap), shape.n.min(cap), shape.k.min(cap));
    let trial = GemmShape {
        batch: shape.batch.min(8),
        m,
        n,
        k,
        a_batch_stride: if shape.a_batch_stride == 0 { 0 } else { m * k },
        b_batch_stride: if shape.b_batch_stride == 0 { 0 } else { k * n },
        a_offset: 0,
        b_offset: 0,
        out_offset: 0,
        ..*shape
    };
    let a = Tensor::zeros(gpu, &[trial.batch.max(1) * trial.m * trial.k.max(1)])?;
    let b = Tensor::zeros(gpu, &[trial.batch.max(1) * trial.k.max(1) * trial.n])?;
    let out = Tensor::zeros(gpu, &[trial.batch * trial.m * trial.n])?;
    let rule = MatmulVariant::rule(gpu, shape);
    let mut timings: Vec<(f64, MatmulVariant)> = Vec::new();
    for variant in MatmulVariant::ALL
        .into_iter()
        .filter(|v| v.is_f32() && v.supports(gpu, shape) && v.supports(gpu, &trial))
        .filter(|v| !(gpu.is_cpu_like() && v.uses_workgroup_memory()))
    {
        let operands = GemmOperands {
            a: &a,
            b: &b,
            c: None,
            bias: None,
            out: &out,
            epilogue: Epilogue::Plain,
        };
        let dispatch = gemm_dispatch(&operands, &trial, 1.0, 0.0, variant)?;
        let dispatches = std::slice::from_ref(&dispatch);
        gpu.submit_timed(dispatches)?;
        let mut seconds = f64::INFINITY;
        for _ in 0..3 {
            seconds = seconds.min(gpu.submit_timed(dispatches)?.seconds);
        }
        timings.push((seconds, variant));
    }
    let rule_time = timings
        .iter()
        .find(|(_, v)| *v == rule)
        .map_or(f64::INFINITY, |(t, _)| *t);
    let fastest = timings
        .iter()
        .copied()
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .ok_or_else(|| Error::invalid("matmul", format!("no variant supports {shape:?}")))?;
    Ok(if fastest.0 < 0.9 * rule_time {
        fastest.1
    } else {
        rule
    })
}

/// The sizes and layout of one batched product; strides and offsets in elements.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GemmShape {
    /// The number of products (1 for a single one).
    pub batch: usize,
    /// M: the rows of op(A) and of the output.
    pub m: usize,
    /// N: the columns of op(B) and of the output.
    pub n: usize,
    /// K: the columns of op(A) and rows of op(B), summed over.
    pub k: usize,
    /// Whether A is stored transposed, `[k, m]`, so that op(A) = Aᵀ.
    pub trans_a: bool,
    /// Whether B is stored transposed, `[n, k]`, so that op(B) = Bᵀ.
    pub trans_b: bool,
    /// 0 when every batch uses the same A.
    pub a_batch_stride: usize,
    /// The elements between two batches' B; 0 when every batch uses the same B.
    pub b_batch_stride: usize,
    /// Where A, B and the output start in their tensors: 0 for whole tensors, more for a
    /// slice of a larger one (a time step of a recurrence, say).
    pub a_offset: usize,
    /// Where B starts in its tensor.
    pub b_offset: usize,
    /// Where the output starts in its tensor.
    pub out_offset: usize,
}

impl GemmShape {
    /// `batch` products of op(A) [m, k] by op(B) [k, n], each operand contiguous per batch
    /// (batch strides 0 for a single product, where they are never used and must not spoil
    /// the vec4 kernels' alignment), whole tensors without offsets. Other layouts change
    /// fields with struct update syntax: a shared operand's batch stride 0, a slice's offset.
    pub fn contiguous(
        batch: usize,
        (m, n, k): (usize, usize, usize),
        trans_a: bool,
        trans_b: bool,
    ) -> Self {
        let per_batch = |elements: usize| if batch > 1 { elements } else { 0 };
        GemmShape {
            batch,
            m,
            n,
            k,
            trans_a,
            trans_b,
            a_batch_stride: per_batch(m * k),
            b_batch_stride: per_batch(k * n),
            a_offset: 0,
            b_offset: 0,
            out_offset: 0,
        }
    }
}

/// How C is read: `C[batch, row, col] = c[batch·batch_stride + row·row_stride + col·col_stride]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CLayout {
    /// The elements between two batches' C; 0 when every batch shares one C.
    pub batch_stride: usize,
    /// The elements between two rows of C; 0 broadcasts one row to all.
    pub row_stride: usize,
    /// The elements between two columns of C; 0 broadcasts one column to all.
    pub col_stride: usize,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    m: u32,
    n: u32,
    k: u32,
    a_offset: u32,
    a_batch_stride: u32,
    b_batch_stride: u32,
    c_batch_stride: u32,
    c_row_stride: u32,
    c_col_stride: u32,
    alpha: f32,
    beta: f32,
    b_offset: u32,
    out_offset: u32,
    pad: [u32; 3],
}

/// The operands of one dispatch.
pub struct GemmOperands<'a> {
    /// The left operand A, as [`GemmShape`] lays it out.
    pub a: &'a Tensor,
    /// The right operand B, as [`GemmShape`] lays it out.
    pub b: &'a Tensor,
    /// β·C, with its layout.
    pub c: Option<(&'a Tensor, CLayout)>,
    /// A vector of N values added to every row of the result.
    pub bias: Option<&'a Tensor>,
    /// Where the result goes: `[batch, m, n]`, contiguous from [`GemmShape::out_offset`].
    pub out: &'a Tensor,
    /// What the kernel does to each result as it stores it.
    pub epilogue: Epilogue<'a>,
}

/// What a product does to each result, after α, β·C and the bias, as it stores it: the
/// fusions that save a graph a pass over the product.
#[derive(Debug, Clone, Copy, Default)]
pub enum Epilogue<'a> {
    /// Stores the result.
    #[default]
    Plain,
    /// Stores max(result, 0): a ReLU fused into the product.
    Relu,
    /// Stores the result where `relu_output` (shaped and offset as the output) is positive,
    /// zero elsewhere: the gradient through that ReLU, fused into the product that computes
    /// the gradient of its output.
    ReluGrad {
        /// The output of the ReLU whose gradient this is.
        relu_output: &'a Tensor,
    },
}

/// Records one batched product into `operands.out` ([batch, m, n], contiguous).
pub fn gemm_dispatch(
    operands: &GemmOperands,
    shape: &GemmShape,
    alpha: f32,
    beta: f32,
    variant: MatmulVariant,
) -> Result<Dispatch> {
    let gpu = operands.a.gpu();
    if !variant.supports(gpu, shape) {
        return Err(Error::invalid(
            "matmul",
            format!(
                "the {} kernel needs {}, got {shape:?}",
                variant.name(),
                variant.contract()
            ),
        ));
    }
    check_extents(operands, shape)?;
    let max_batch = gpu.limits().max_compute_workgroups_per_dimension as usize;
    if shape.batch > max_batch {
        return Err(Error::invalid(
            "matmul",
            format!(
                "{} batches, this adapter dispatches at most {max_batch}",
                shape.batch
            ),
        ));
    }
    let c_layout = operands.c.map(|(_, layout)| layout).unwrap_or(CLayout {
        batch_stride: 0,
        row_stride: 0,
        col_stride: 0,
    });
    let params = Params {
        m: shape.m as u32,
        n: shape.n as u32,
        k: shape.k as u32,
        a_offset: shape.a_offset as u32,
        a_batch_stride: shape.a_batch_stride as u32,
        b_batch_stride: shape.b_batch_stride as u32,
        c_batch_stride: c_layout.batch_stride as u32,
        c_row_stride: c_layout.row_stride as u32,
        c_col_stride: c_layout.col_stride as u32,
        alpha,
        beta,
        b_offset: shape.b_offset as u32,
        out_offset: shape.out_offset as u32,
        pad: [0; 3],
    };
    let spec = gemm_spec(variant, shape, Extras::of(operands));
    let placeholder = gpu.placeholder();
    let c = operands.c.map(|(c, _)| c.buffer()).unwrap_or(placeholder);
    let bias = operands.bias.map(Tensor::buffer).unwrap_or(placeholder);
    let relu_output = match operands.epilogue {
        Epilogue::ReluGrad { relu_output } => relu_output.buffer(),
        Epilogue::Plain | Epilogue::Relu => placeholder,
    };
    let (tile_rows, tile_cols) = variant.tile();
    gpu.dispatch(
        &spec,
        &[
            operands.a.buffer(),
            operands.b.buffer(),
            c,
            bias,
            operands.out.buffer(),
            relu_output,
        ],
        &params,
        [
            (shape.n as u32).div_ceil(tile_cols),
            (shape.m as u32).div_ceil(tile_rows),
            shape.batch as u32,
        ],
    )
}

/// What a product computes beyond α·op(A)·op(B), as the shader's constants select it.
#[derive(Debug, Clone, Copy)]
struct Extras {
    has_c: bool,
    has_bias: bool,
    relu: bool,
    relu_grad: bool,
}

impl Extras {
    fn of(operands: &GemmOperands) -> Self {
        Extras {
            has_c: operands.c.is_some(),
            has_bias: operands.bias.is_some(),
            relu: matches!(operands.epilogue, Epilogue::Relu),
            relu_grad: matches!(operands.epilogue, Epilogue::ReluGrad { .. }),
        }
    }

    /// Every choice of C, bias and epilogue (one epilogue at most).
    fn all() -> Vec<Self> {
        let mut all = Vec::new();
        for has_c in [false, true] {
            for has_bias in [false, true] {
                for (relu, relu_grad) in [(false, false), (true, false), (false, true)] {
                    all.push(Extras {
                        has_c,
                        has_bias,
                        relu,
                        relu_grad,
                    });
                }
            }
        }
        all
    }
}

/// The kernel of `variant` for a product of `shape`'s layout.
fn gemm_spec(variant: MatmulVariant, shape: &GemmShape, extras: Extras) -> KernelSpec {
    let flag = |b: bool| f64::from(u8::from(b));
    let mut constants = vec![
        ("TRANS_A", flag(shape.trans_a)),
        ("TRANS_B", flag(shape.trans_b)),
        ("HAS_C", flag(extras.has_c)),
        ("HAS_BIAS", flag(extras.has_bias)),
        ("RELU", flag(extras.relu)),
        ("RELU_GRAD", flag(extras.relu_grad)),
    ];
    if variant == MatmulVariant::Subgroup {
        constants.push(("ALIGNED", flag(vec4_aligned(shape))));
    }
    KernelSpec {
        source: match variant {
            MatmulVariant::Subgroup => &SUBGROUP_SHADER,
            MatmulVariant::CoopF16 => &COOP_SHADER,
            _ => &SHADER,
        },
        entry: variant.entry(shape),
        bindings: &[
            Access::Read,
            Access::Read,
            Access::Read,
            Access::Read,
            Access::ReadWrite,
            Access::Read,
            Access::Uniform,
        ],
        constants,
    }
}

/// Every kernel variant [`gemm_dispatch`] can build, on any adapter: each variant for
/// every layout its contract takes, with every choice of C, bias and epilogue.
pub fn kernel_specs() -> Vec<KernelSpec> {
    let mut names = HashSet::new();
    let mut specs = Vec::new();
    for variant in MatmulVariant::ALL {
        for shape in layout_samples() {
            if !variant.supports_layout(&shape) {
                continue;
            }
            for extras in Extras::all() {
                let spec = gemm_spec(variant, &shape, extras);
                // Layouts a variant does not tell apart give it the same spec.
                if names.insert(spec.name()) {
                    specs.push(spec);
                }
            }
        }
    }
    specs
}

/// A product of each layout the variants tell apart: either operand transposed or not, by
/// rows that are whole vec4s nowhere, in the output only, or everywhere (M = 4 keeps a
/// transposed A's rows whole vec4s too).
fn layout_samples() -> Vec<GemmShape> {
    let mut shapes = Vec::new();
    for (trans_a, trans_b) in [(false, false), (false, true), (true, false), (true, true)] {
        for (n, k) in [(3, 3), (4, 3), (4, 4)] {
            shapes.push(GemmShape::contiguous(1, (4, n, k), trans_a, trans_b));
        }
    }
    shapes
}

/// Whether every row of A, B and the output starts on a vec4 and is whole vec4s long: N and
/// K multiples of 4 (and M when A is transposed), the offsets and batch strides too.
fn vec4_aligned(shape: &GemmShape) -> bool {
    shape.n.is_multiple_of(4)
        && shape.k.is_multiple_of(4)
        && (!shape.trans_a || shape.m.is_multiple_of(4))
        && [
            shape.a_offset,
            shape.b_offset,
            shape.out_offset,
            shape.a_batch_stride,
            shape.b_batch_stride,
        ]
        .iter()
        .all(|x| x.is_multiple_of(4))
}

/// Fails unless A, B and the output hold every element the product reads or writes from
/// their offsets on: the kernel binds whole buffers, so a slice that overruns its tensor
/// would silently touch another tensor's data.
fn check_extents(operands: &GemmOperands, shape: &GemmShape) -> Result<()> {
    if shape.batch == 0 || shape.m == 0 || shape.n == 0 {
        return Ok(());
    }
    let last_batch = shape.batch - 1;
    let operand_needs = |offset: usize, batch_stride: usize, elements: usize| {
        offset + last_batch * batch_stride + elements
    };
    let a_needs = if shape.k == 0 {
        0
    } else {
        operand_needs(shape.a_offset, shape.a_batch_stride, shape.m * shape.k)
    };
    let b_needs = if shape.k == 0 {
        0
    } else {
        operand_needs(shape.b_offset, shape.b_batch_stride, shape.k * shape.n)
    };
    let out_needs = shape.out_offset + shape.batch * shape.m * shape.n;
    let mut operand_extents = vec![
        ("A", operands.a, a_needs),
        ("B", operands.b, b_needs),
        ("the output", operands.out, out_needs),
    ];
    if let Epilogue::ReluGrad { relu_output } = operands.epilogue {
        operand_extents.push(("the ReLU output", relu_output, out_needs));
    }
    for (name, tensor, needs) in operand_extents {
        if tensor.numel() < needs {
            return Err(Error::invalid(
                "matmul",
                format!(
                    "{name} (shape {:?}) has {} elements, the product reaches element {} \
                     ({shape:?})",
                    tensor.shape(),
                    tensor.numel(),
                    needs
                ),
            ));
        }
    }
    Ok(())
}

/// CPU reference of one batched product, accumulating in f64. A and B are read from their
/// offsets on; the result is the [batch, m, n] product alone (the kernel writes it at
/// `out_offset`).
pub fn gemm_cpu(
    a: &[f32],
    b: &[f32],
    c: Option<(&[f32], CLayout)>,
    bias: Option<&[f32]>,
    shape: &GemmShape,
    alpha: f32,
    beta: f32,
) -> Vec<f32> {
    let GemmShape { batch, m, n, k, .. } = *shape;
    let mut out = vec![0.0; batch * m * n];
    for p in 0..batch {
        let a_base = shape.a_offset + p * shape.a_batch_stride;
        let b_base = shape.b_offset + p * shape.b_batch_stride;
        for i in 0..m {
            for j in 0..n {
                let mut acc = 0.0f64;
                for l in 0..k {
                    let av = if shape.trans_a {
                        a[a_base + l * m + i]
                    } else {
                        a[a_base + i * k + l]
                    };
                    let bv = if shape.trans_b {
                        b[b_base + j * k + l]
                    } else {
                        b[b_base + l * n + j]
                    };
                    acc += f64::from(av) * f64::from(bv);
                }
                let mut v = f64::from(alpha) * acc;
                if let Some((c, layout)) = c {
                    let at =
                        p * layout.batch_stride + i * layout.row_stride + j * layout.col_stride;
                    v += f64::from(beta) * f64::from(c[at]);
                }
                if let Some(bias) = bias {
                    v += f64::from(bias[j]);
                }
                out[(p * m + i) * n + j] = v as f32;
            }
        }
    }
    out
}

/// A matrix product being configured: `a.gemm(&b).trans_b(true).bias(&v).run()`.
///
/// `a` is [batch…, M, K] ([batch…, K, M] when transposed) and `b` is [batch…, K, N]
/// ([batch…, N, K]); a rank-2 operand is shared by every batch. `c` must broadcast to
/// [M, N] or equal the output's shape; `bias` has N elements.
#[must_use = "a Gemm does nothing until run"]
pub struct Gemm<'a> {
    a: &'a Tensor,
    b: &'a Tensor,
    trans_a: bool,
    trans_b: bool,
    alpha: f32,
    beta: f32,
    c: Option<&'a Tensor>,
    bias: Option<&'a Tensor>,
    epilogue: Epilogue<'a>,
    variant: Option<MatmulVariant>,
}

impl<'a> Gemm<'a> {
    /// Whether to use A (the tensor `gemm` was called on) transposed: then it is stored
    /// `[…, K, M]`.
    pub fn trans_a(mut self, yes: bool) -> Self {
        self.trans_a = yes;
        self
    }

    /// Whether to use B (the argument of `gemm`) transposed: then it is stored `[…, N, K]`.
    pub fn trans_b(mut self, yes: bool) -> Self {
        self.trans_b = yes;
        self
    }

    /// Scales the product (default 1).
    pub fn alpha(mut self, alpha: f32) -> Self {
        self.alpha = alpha;
        self
    }

    /// Adds β·C (β defaults to 1).
    pub fn c(mut self, c: &'a Tensor, beta: f32) -> Self {
        self.c = Some(c);
        self.beta = beta;
        self
    }

    /// Adds a row vector of N to every row.
    pub fn bias(mut self, bias: &'a Tensor) -> Self {
        self.bias = Some(bias);
        self
    }

    /// Fuses a ReLU or a ReLU's gradient into the store (default [`Epilogue::Plain`]).
    pub fn epilogue(mut self, epilogue: Epilogue<'a>) -> Self {
        self.epilogue = epilogue;
        self
    }

    /// Forces a kernel variant instead of the rule of [`MatmulVariant::choose`].
    pub fn variant(mut self, variant: MatmulVariant) -> Self {
        self.variant = Some(variant);
        self
    }

    /// Checks the shapes and works out the product's layout and output shape.
    pub fn shape(&self) -> Result<(GemmShape, Vec<usize>)> {
        let (a, b) = (self.a.shape(), self.b.shape());
        let mismatch = |expected: String| Error::ShapeMismatch {
            op: "matmul",
            lhs: a.to_vec(),
            rhs: b.to_vec(),
            expected,
        };
        if a.len() < 2 || b.len() < 2 {
            return Err(mismatch("both operands need at least 2 axes".into()));
        }
        let (a_rows, a_cols) = (a[a.len() - 2], a[a.len() - 1]);
        let (b_rows, b_cols) = (b[b.len() - 2], b[b.len() - 1]);
        let (m, k) = if self.trans_a {
            (a_cols, a_rows)
        } else {
            (a_rows, a_cols)
        };
        let (k_b, n) = if self.trans_b {
            (b_cols, b_rows)
        } else {
            (b_rows, b_cols)
        };
        if k != k_b {
            return Err(mismatch(format!(
                "the inner dimensions differ: {k} (of A{}) and {k_b} (of B{})",
                if self.trans_a { "ᵀ" } else { "" },
                if self.trans_b { "ᵀ" } else { "" }
            )));
        }
        let (a_batch, b_batch) = (&a[..a.len() - 2], &b[..b.len() - 2]);
        let batch_shape = match (a_batch.is_empty(), b_batch.is_empty()) {
            (_, true) => a_batch.to_vec(),
            (true, false) => b_batch.to_vec(),
            (false, false) if a_batch == b_batch => a_batch.to_vec(),
            _ => {
                return Err(mismatch(
                    "the batch axes must be equal, or one operand must be a plain matrix \
                     (Tensor::matmul broadcasts batch axes)"
                        .into(),
                ))
            }
        };
        let batch = batch_shape.iter().product();
        let mut out_shape = batch_shape;
        out_shape.extend([m, n]);
        let shape = GemmShape {
            a_batch_stride: if a_batch.is_empty() { 0 } else { m * k },
            b_batch_stride: if b_batch.is_empty() { 0 } else { k * n },
            ..GemmShape::contiguous(batch, (m, n, k), self.trans_a, self.trans_b)
        };
        Ok((shape, out_shape))
    }

    /// Runs the product.
    pub fn run(self) -> Result<Tensor> {
        self.a.same_device("matmul", self.b)?;
        let (shape, out_shape) = self.shape()?;
        let c = match self.c {
            Some(c) => {
                self.a.same_device("matmul", c)?;
                Some((c, c_layout(c.shape(), &out_shape, self.a, self.b)?))
            }
            None => None,
        };
        if let Some(bias) = self.bias {
            self.a.same_device("matmul", bias)?;
            if bias.numel() != shape.n {
                return Err(Error::ShapeMismatch {
                    op: "matmul bias",
                    lhs: bias.shape().to_vec(),
                    rhs: out_shape,
                    expected: format!("the bias needs {} values, one per output column", shape.n),
                });
            }
        }
        let gpu = self.a.gpu();
        let out = Tensor::uninit(gpu, &out_shape)?;
        if out.numel() == 0 {
            return Ok(out);
        }
        let variant = self
            .variant
            .unwrap_or_else(|| MatmulVariant::choose(gpu, &shape));
        let operands = GemmOperands {
            a: self.a,
            b: self.b,
            c,
            bias: self.bias,
            out: &out,
            epilogue: self.epilogue,
        };
        let dispatch = gemm_dispatch(&operands, &shape, self.alpha, self.beta, variant)?;
        gpu.submit(&[], &[dispatch])?;
        Ok(out)
    }
}

/// Where C is read from for each output element: C broadcasts to [M, N] (rank ≤ 2) or has
/// exactly the output's shape.
fn c_layout(c: &[usize], out: &[usize], a: &Tensor, b: &Tensor) -> Result<CLayout> {
    let (m, n) = (out[out.len() - 2], out[out.len() - 1]);
    if c == out {
        return Ok(CLayout {
            batch_stride: m * n,
            row_stride: n,
            col_stride: 1,
        });
    }
    let bad = || Error::ShapeMismatch {
        op: "matmul C",
        lhs: c.to_vec(),
        rhs: out.to_vec(),
        expected: format!(
            "C must broadcast to [{m}, {n}] or equal the output's shape (A is {:?}, B is {:?})",
            a.shape(),
            b.shape()
        ),
    };
    if c.len() > 2 {
        return Err(bad());
    }
    let padded: Vec<usize> = std::iter::repeat_n(1, 2 - c.len())
        .chain(c.iter().copied())
        .collect();
    let (rows, cols) = (padded[0], padded[1]);
    if (rows != 1 && rows != m) || (cols != 1 && cols != n) {
        return Err(bad());
    }
    Ok(CLayout {
        batch_stride: 0,
        row_stride: if rows == 1 { 0 } else { cols },
        col_stride: usize::from(cols != 1),
    })
}

impl Tensor {
    /// Starts configuring C = α·op(self)·op(other) + β·C + bias; finish with `.run()`.
    pub fn gemm<'a>(&'a self, other: &'a Tensor) -> Gemm<'a> {
        Gemm {
            a: self,
            b: other,
            trans_a: false,
            trans_b: false,
            alpha: 1.0,
            beta: 1.0,
            c: None,
            bias: None,
            epilogue: Epilogue::Plain,
            variant: None,
        }
    }

    /// The matrix product with numpy's rules: a 1-D operand is a row (left) or column
    /// (right) vector whose axis is dropped from the result, and batch axes broadcast.
    pub fn matmul(&self, other: &Tensor) -> Result<Tensor> {
        if self.rank() == 0 || other.rank() == 0 {
            return Err(Error::ShapeMismatch {
                op: "matmul",
                lhs: self.shape().to_vec(),
                rhs: other.shape().to_vec(),
                expected: "matmul does not take scalars; use mul".into(),
            });
        }
        let (a_vector, b_vector) = (self.rank() == 1, other.rank() == 1);
        let a = if a_vector {
            self.reshape(&[1, self.numel()])?
        } else {
            self.clone()
        };
        let b = if b_vector {
            other.reshape(&[other.numel(), 1])?
        } else {
            other.clone()
        };
        let batch_of = |t: &Tensor| t.shape()[..t.rank() - 2].to_vec();
        let batch = broadcast_shapes("matmul", &batch_of(&a), &batch_of(&b)).map_err(|_| {
            Error::ShapeMismatch {
                op: "matmul",
                lhs: self.shape().to_vec(),
                rhs: other.shape().to_vec(),
                expected: "the batch axes do not broadcast (numpy rules)".into(),
            }
        })?;
        let out = fit_batch(&a, &batch)?.gemm(&fit_batch(&b, &batch)?).run()?;
        let mut shape = batch;
        shape.extend_from_slice(&out.shape()[out.rank() - 2..]);
        if b_vector {
            shape.pop();
        }
        if a_vector {
            shape.remove(shape.len() - if b_vector { 1 } else { 2 });
        }
        out.reshape(&shape)
    }
}

/// `t` ([…, rows, cols]) made ready for a batched product over `batch`: a plain matrix if
/// it has a single batch (the kernel shares it), else expanded to [batch…, rows, cols].
fn fit_batch(t: &Tensor, batch: &[usize]) -> Result<Tensor> {
    let matrix = &t.shape()[t.rank() - 2..];
    if t.shape()[..t.rank() - 2].iter().product::<usize>() == 1 {
        return t.reshape(matrix);
    }
    let mut full = batch.to_vec();
    full.extend_from_slice(matrix);
    let mut padded = vec![1; full.len() - t.rank()];
    padded.extend_from_slice(t.shape());
    if padded == full {
        t.reshape(&full)
    } else {
        t.reshape(&padded)?.broadcast_to(&full)
    }
}
