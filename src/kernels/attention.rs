//! Scaled dot-product attention over several heads (`shaders/attention.wgsl`), forward and
//! backward, for Seq2Seq-with-attention and Transformers.
//!
//! For queries Q [B, H, Lq, D], keys K [B, Hkv, Lk, D] and values V [B, Hkv, Lk, Dv]:
//!
//! ```text
//! S = Q·Kᵀ·scale            (scale = 1/√D unless given)
//! S ← c·tanh(S/c)           (optional softcap c)
//! S ← S + mask, masked keys → −∞
//! P = softmax(S) along the keys; a row whose keys are all masked is P = 0
//! O = P·V                   [B, H, Lq, Dv]
//! ```
//!
//! The two products run on the batched matmul kernels, batched over B·H; this family adds
//! the masked row softmax between them and its backward (a key/value cache grows with
//! [`Tensor::concat`]). A query head h uses key/value head h / (H / Hkv), so Hkv < H is grouped-query
//! attention (Hkv = 1: multi-query); the keys and values are repeated per query head on
//! the GPU, and their gradients summed back over each group.
//!
//! Masks ([`AttentionOptions`]): causal (a key after the query's position), a sliding
//! window around it, key padding (per-batch key lengths), and a mask tensor, additive or
//! boolean, broadcastable to [B, H, Lq, Lk] as ONNX's `attn_mask`. Query i sits at key
//! position i + offset, with the offset given by [`QueryAlignment`].
//!
//! [`fused_attention`] computes O (and each row's log-sum-exp) in one dispatch without the
//! scores: each query streams over its keys with an online softmax. It serves inference
//! ([`attention_output`] picks it by [`AttentionVariant::choose`]) and training:
//! [`fused_attention_backward`] recomputes P from Q, K and the log-sum-exp in two
//! dispatches, one owning query rows (dQ), one owning key rows (dK, dV, summed over each
//! group of query heads), never writing [B, H, Lq, Lk]. The graph's attention op picks
//! the pair by [`AttentionVariant::choose_for_training`].
//!
//! The unfused backward needs P, which the forward returns, and recomputes S only with a
//! softcap: dV = Pᵀ·dO, dP = dO·Vᵀ, dS = P ⊙ (dP − rowsum(dP ⊙ P)) (times the softcap's
//! derivative), dQ = dS·K·scale, dK = dSᵀ·Q·scale.

use crate::error::{Error, Result};
use crate::gpu::{Access, Dispatch, Gpu, KernelSpec, ShaderSource, SizeConstant};
use crate::kernels::copy::strided_copy_dispatch;
use crate::kernels::matmul::{gemm_dispatch, Epilogue, GemmOperands, GemmShape, MatmulVariant};
use crate::kernels::reduce::{reduce_dispatch, Reduce, ReduceVariant};
use crate::kernels::{broadcast_shapes, broadcast_strides, WORKGROUP_1D};
use crate::tensor::{Indices, Tensor};

/// The attention module, `shaders/attention.wgsl`: the masked row softmax and its backward,
/// and the fused kernels; the products run on [`crate::kernels::matmul`]'s.
pub static SHADER: ShaderSource = ShaderSource {
    size_constants: &[
        SizeConstant {
            name: "CACHED_HEAD_DIM",
            values: 0..=VALUE_CHUNK as u32,
        },
        SizeConstant {
            name: "CHUNK_WIDTH",
            values: 0..=VALUE_CHUNK as u32,
        },
        SizeConstant {
            name: "CACHED_VALUE_DIM",
            values: 0..=VALUE_CHUNK as u32,
        },
    ],
    ..ShaderSource::new("attention", include_str!("../../shaders/attention.wgsl"))
};

/// The shader's VALUE_CHUNK: the result columns a workgroup of the fused kernels owns, and
/// the most elements of a row they keep in registers (the `CACHED_*` constants).
const VALUE_CHUNK: usize = 64;

/// The largest offset or window reach, in positions, that the kernels take: beyond it the
/// 32-bit position arithmetic of the shader could overflow. Every tensor axis is shorter.
pub const MAX_REACH: u32 = 1 << 28;

/// Where the queries sit among the keys: query i is at key position i + offset. Causal
/// masking and the window are measured from that position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QueryAlignment {
    /// A fixed offset: `Offset(0)` aligns the first query with the first key (top-left);
    /// with a key cache of P positions before the new keys, `Offset(P)` (ONNX's rule).
    Offset(i32),
    /// The queries are the last Lq of the Lk key positions: offset Lk − Lq (bottom-right).
    /// The same as `Offset(0)` when Lq = Lk; right for decoding with a key cache.
    #[default]
    End,
    /// Per batch, the queries are the last Lq of the valid keys: offset min(len_b, Lk) − Lq
    /// with the key lengths of [`AttentionOptions::key_lengths`] (ONNX's rule for
    /// `nonpad_kv_seqlen`). Without key lengths every key is valid: the same as `End`.
    EndOfValidKeys,
}

/// How the values of a mask tensor act.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaskKind {
    /// Added to the scores after the softcap; −∞ masks the key.
    Additive,
    /// 0 masks the key, any other value keeps it.
    Boolean,
}

impl MaskKind {
    fn code(self) -> u32 {
        match self {
            MaskKind::Additive => 1,
            MaskKind::Boolean => 2,
        }
    }
}

/// A mask tensor, broadcastable (numpy rules) to the scores' shape [B, H, Lq, Lk].
#[derive(Debug, Clone, Copy)]
pub struct AttentionMask<'a> {
    /// How its values act.
    pub kind: MaskKind,
    /// The mask, broadcastable to `[B, H, Lq, Lk]`.
    pub values: &'a Tensor,
}

/// The settings of attention that are plain values (no tensors).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct AttentionSettings {
    /// Multiplies Q·Kᵀ; `None` is 1/√D (1 when D = 0).
    pub scale: Option<f32>,
    /// Masks every key after the query's position.
    pub causal: bool,
    /// Where the queries sit among the keys.
    pub alignment: QueryAlignment,
    /// Masks keys more than this many positions before the query's position.
    pub window_left: Option<u32>,
    /// Masks keys more than this many positions after the query's position.
    pub window_right: Option<u32>,
    /// Caps the scores smoothly: S ← c·tanh(S/c), before the mask is added; c > 0.
    pub softcap: Option<f32>,
}

impl AttentionSettings {
    /// The scale for head size `head_dim`: the one given, or 1/√D.
    pub fn scale_for(&self, head_dim: usize) -> f32 {
        self.scale
            .unwrap_or_else(|| 1.0 / (head_dim.max(1) as f32).sqrt())
    }

    /// The offset of query i's key position, for batch b with `valid_keys` valid keys.
    pub fn offset(&self, q_len: usize, k_len: usize, valid_keys: usize) -> i64 {
        match self.alignment {
            QueryAlignment::Offset(offset) => i64::from(offset),
            QueryAlignment::End => k_len as i64 - q_len as i64,
            QueryAlignment::EndOfValidKeys => valid_keys as i64 - q_len as i64,
        }
    }

    /// Checks the settings' ranges: a finite scale, a positive softcap, reachable offsets.
    pub(crate) fn check(&self) -> Result<()> {
        if let Some(scale) = self.scale {
            if !scale.is_finite() {
                return Err(Error::invalid(
                    "attention",
                    format!("the scale must be finite, got {scale}"),
                ));
            }
        }
        if let Some(softcap) = self.softcap {
            if !(softcap > 0.0 && softcap.is_finite()) {
                return Err(Error::invalid(
                    "attention",
                    format!("the softcap must be positive and finite, got {softcap}"),
                ));
            }
        }
        let reach = |what: &str, value: u32| {
            if value > MAX_REACH {
                Err(Error::invalid(
                    "attention",
                    format!("{what} {value} is beyond the largest supported reach {MAX_REACH}"),
                ))
            } else {
                Ok(())
            }
        };
        if let QueryAlignment::Offset(offset) = self.alignment {
            reach("the query offset", offset.unsigned_abs())?;
        }
        if let Some(left) = self.window_left {
            reach("the left window", left)?;
        }
        if let Some(right) = self.window_right {
            reach("the right window", right)?;
        }
        Ok(())
    }
}

/// Everything [`attention`] takes besides Q, K and V; build it with the chained setters:
/// `AttentionOptions::default().causal(true).key_lengths(&lengths)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct AttentionOptions<'a> {
    /// The plain-value settings: scale, causality, alignment, window, softcap.
    pub settings: AttentionSettings,
    /// Valid keys per batch, \[B\]: keys at positions ≥ length are masked (lengths above Lk
    /// mean Lk).
    pub key_lengths: Option<&'a Indices>,
    /// A mask tensor applied on top of the other masks.
    pub mask: Option<AttentionMask<'a>>,
}

/// The setters of [`AttentionSettings`], shared by everything that carries them (the
/// eager [`AttentionOptions`], the graph's `AttentionSpec`): chain them on a default value.
pub trait AttentionSettingsBuilder: Sized {
    /// The settings the setters change.
    fn settings_mut(&mut self) -> &mut AttentionSettings;

    /// Multiplies q·kᵀ instead of 1/√D.
    fn scale(mut self, scale: f32) -> Self {
        self.settings_mut().scale = Some(scale);
        self
    }

    /// Masks every key after the query's position.
    fn causal(mut self, yes: bool) -> Self {
        self.settings_mut().causal = yes;
        self
    }

    /// Where the queries sit among the keys, which causal masking and the window follow.
    fn alignment(mut self, alignment: QueryAlignment) -> Self {
        self.settings_mut().alignment = alignment;
        self
    }

    /// A sliding window: masks the keys more than `left` positions before or `right`
    /// positions after the query's (`None`: unbounded on that side).
    fn window(mut self, left: Option<u32>, right: Option<u32>) -> Self {
        let settings = self.settings_mut();
        settings.window_left = left;
        settings.window_right = right;
        self
    }

    /// Caps the scores smoothly, s ← cap·tanh(s/cap), before the mask is added; cap > 0.
    fn softcap(mut self, cap: f32) -> Self {
        self.settings_mut().softcap = Some(cap);
        self
    }
}

impl AttentionSettingsBuilder for AttentionSettings {
    fn settings_mut(&mut self) -> &mut AttentionSettings {
        self
    }
}

impl AttentionSettingsBuilder for AttentionOptions<'_> {
    fn settings_mut(&mut self) -> &mut AttentionSettings {
        &mut self.settings
    }
}

impl<'a> AttentionOptions<'a> {
    /// Masks, in batch b, the keys at positions ≥ `lengths[b]` (`lengths` is `[B]`; a length
    /// above Lk means Lk).
    pub fn key_lengths(mut self, lengths: &'a Indices) -> Self {
        self.key_lengths = Some(lengths);
        self
    }

    /// Adds a mask tensor of `kind`, broadcastable to `[B, H, Lq, Lk]`.
    pub fn mask(mut self, kind: MaskKind, values: &'a Tensor) -> Self {
        self.mask = Some(AttentionMask { kind, values });
        self
    }
}

/// The sizes of one attention call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionDims {
    /// B, the batch size.
    pub batch: usize,
    /// Query heads H.
    pub heads: usize,
    /// Key/value heads Hkv, dividing H.
    pub kv_heads: usize,
    /// Lq, the number of queries per head.
    pub q_len: usize,
    /// Lk, the number of keys (and values) per head.
    pub k_len: usize,
    /// D, of queries and keys.
    pub head_dim: usize,
    /// Dv, of values and the output.
    pub value_dim: usize,
}

impl AttentionDims {
    /// Checks Q [B, H, Lq, D], K [B, Hkv, Lk, D] and V [B, Hkv, Lk, Dv] against each other.
    pub fn from_shapes(q: &[usize], k: &[usize], v: &[usize]) -> Result<AttentionDims> {
        let mismatch = |lhs: &[usize], rhs: &[usize], expected: String| Error::ShapeMismatch {
            op: "attention",
            lhs: lhs.to_vec(),
            rhs: rhs.to_vec(),
            expected,
        };
        for (name, shape) in [("Q", q), ("K", k), ("V", v)] {
            if shape.len() != 4 {
                return Err(Error::invalid(
                    "attention",
                    format!(
                        "{name} has shape {shape:?}; Q, K and V need 4 axes: Q [B, H, Lq, D], \
                         K [B, Hkv, Lk, D], V [B, Hkv, Lk, Dv]"
                    ),
                ));
            }
        }
        if q[0] != k[0] || k[0] != v[0] {
            return Err(mismatch(
                q,
                k,
                format!(
                    "Q, K and V need one batch size, got {}, {} and {}",
                    q[0], k[0], v[0]
                ),
            ));
        }
        if q[3] != k[3] {
            return Err(mismatch(
                q,
                k,
                format!("Q and K need one head size D, got {} and {}", q[3], k[3]),
            ));
        }
        if k[1] != v[1] || k[2] != v[2] {
            return Err(mismatch(
                k,
                v,
                "K and V need the same heads and sequence length (axes 1 and 2)".into(),
            ));
        }
        let (heads, kv_heads) = (q[1], k[1]);
        let divides = if kv_heads == 0 {
            heads == 0
        } else {
            heads.is_multiple_of(kv_heads)
        };
        if !divides {
            return Err(mismatch(
                q,
                k,
                format!(
                    "the {kv_heads} key/value heads must divide the {heads} query heads \
                     (each serves a group of query heads)"
                ),
            ));
        }
        Ok(AttentionDims {
            batch: q[0],
            heads,
            kv_heads,
            q_len: q[2],
            k_len: k[2],
            head_dim: q[3],
            value_dim: v[3],
        })
    }

    /// Query heads per key/value head.
    pub fn group(&self) -> usize {
        self.heads.checked_div(self.kv_heads).unwrap_or(1)
    }

    /// [B, H, Lq, Lk]: the scores and probabilities.
    pub fn scores_shape(&self) -> [usize; 4] {
        [self.batch, self.heads, self.q_len, self.k_len]
    }

    /// [B, H, Lq, Dv]: the output.
    pub fn output_shape(&self) -> [usize; 4] {
        [self.batch, self.heads, self.q_len, self.value_dim]
    }

    fn rows(&self) -> usize {
        self.batch * self.heads * self.q_len
    }
}

/// What [`attention`] returns: the output and the probabilities the backward needs.
#[derive(Debug, Clone)]
pub struct AttentionForward {
    /// O = P·V, [B, H, Lq, Dv].
    pub output: Tensor,
    /// P, [B, H, Lq, Lk]: 0 at every masked key.
    pub probs: Tensor,
}

/// What [`attention_backward`] returns: dL/dQ, dL/dK and dL/dV, shaped as Q, K and V.
#[derive(Debug, Clone)]
pub struct AttentionGradients {
    /// dL/dQ, `[B, H, Lq, D]`.
    pub query: Tensor,
    /// dL/dK, `[B, Hkv, Lk, D]`: summed over each group of query heads.
    pub key: Tensor,
    /// dL/dV, `[B, Hkv, Lk, Dv]`: summed over each group of query heads.
    pub value: Tensor,
}

/// The `Params` of `masked_softmax` and `fused_attention` (there `fused_params`).
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct AttentionParams {
    batch: u32,
    heads: u32,
    q_len: u32,
    k_len: u32,
    mask_strides: [u32; 4],
    offset: i32,
    left: i32,
    right: i32,
    softcap: f32,
    head_dim: u32,
    value_dim: u32,
    group: u32,
    scale: f32,
}

impl AttentionParams {
    fn new(dims: &AttentionDims, options: &AttentionOptions) -> AttentionParams {
        let settings = &options.settings;
        let offset = if offset_from_lengths(options) {
            0
        } else {
            settings.offset(dims.q_len, dims.k_len, dims.k_len) as i32
        };
        let reach = |window: Option<u32>| window.map_or(-1, |w| w as i32);
        AttentionParams {
            batch: dims.batch as u32,
            heads: dims.heads as u32,
            q_len: dims.q_len as u32,
            k_len: dims.k_len as u32,
            mask_strides: options.mask.map_or([0; 4], |mask| {
                broadcast_strides(mask.values.shape(), &dims.scores_shape())
            }),
            offset,
            left: reach(settings.window_left),
            right: reach(settings.window_right),
            softcap: settings.softcap.unwrap_or(1.0),
            head_dim: dims.head_dim as u32,
            value_dim: dims.value_dim as u32,
            group: dims.group() as u32,
            scale: settings.scale_for(dims.head_dim),
        }
    }
}

/// Whether the shader takes each batch's query offset from its key length.
fn offset_from_lengths(options: &AttentionOptions) -> bool {
    options.settings.alignment == QueryAlignment::EndOfValidKeys && options.key_lengths.is_some()
}

/// How the shader forms each logit, as its constants select it: the softcap, then the
/// masks of `options`.
#[derive(Debug, Clone, Copy)]
struct LogitConstants {
    /// 0 none, 1 additive, 2 boolean.
    mask: u32,
    key_lengths: bool,
    causal: bool,
    offset_from_lengths: bool,
    softcap: bool,
}

impl LogitConstants {
    fn of(options: &AttentionOptions) -> Self {
        LogitConstants {
            mask: options.mask.map_or(0, |mask| mask.kind.code()),
            key_lengths: options.key_lengths.is_some(),
            causal: options.settings.causal,
            offset_from_lengths: offset_from_lengths(options),
            softcap: options.settings.softcap.is_some(),
        }
    }

    /// Every selection options can make: the offset from the key lengths needs them.
    fn all() -> Vec<Self> {
        let mut all = Vec::new();
        for mask in [0, MaskKind::Additive.code(), MaskKind::Boolean.code()] {
            for (key_lengths, offset_from_lengths) in [(false, false), (true, false), (true, true)]
            {
                for causal in [false, true] {
                    for softcap in [false, true] {
                        all.push(LogitConstants {
                            mask,
                            key_lengths,
                            causal,
                            offset_from_lengths,
                            softcap,
                        });
                    }
                }
            }
        }
        all
    }

    fn constants(self) -> Vec<(&'static str, f64)> {
        vec![
            ("MASK", f64::from(self.mask)),
            ("KEY_LENGTHS", flag(self.key_lengths)),
            ("CAUSAL", flag(self.causal)),
            ("OFFSET_FROM_LENGTHS", flag(self.offset_from_lengths)),
            ("SOFTCAP", flag(self.softcap)),
        ]
    }
}

fn flag(yes: bool) -> f64 {
    f64::from(u8::from(yes))
}

/// The bindings of the masked softmax and its backward: three inputs, the output, the
/// uniform.
const MASKED_SOFTMAX_BINDINGS: &[Access] = &[
    Access::Read,
    Access::Read,
    Access::Read,
    Access::ReadWrite,
    Access::Uniform,
];

fn masked_softmax_spec(logits: LogitConstants, write_logits: bool) -> KernelSpec {
    let mut constants = logits.constants();
    constants.push(("WRITE_LOGITS", flag(write_logits)));
    KernelSpec {
        source: &SHADER,
        entry: "masked_softmax",
        bindings: MASKED_SOFTMAX_BINDINGS,
        constants,
    }
}

fn masked_softmax_backward_spec(softcap: bool) -> KernelSpec {
    KernelSpec {
        source: &SHADER,
        entry: "masked_softmax_backward",
        bindings: MASKED_SOFTMAX_BINDINGS,
        constants: vec![("SOFTCAP", flag(softcap))],
    }
}

fn fused_attention_spec(logits: LogitConstants, head_dim: usize, value_dim: usize) -> KernelSpec {
    // The private arrays' loop bounds, as constants so that the compiler unrolls them.
    let mut constants = logits.constants();
    constants.push(("CACHED_HEAD_DIM", head_dim.min(VALUE_CHUNK) as f64));
    constants.push(("CHUNK_WIDTH", value_dim.min(VALUE_CHUNK) as f64));
    KernelSpec {
        source: &SHADER,
        entry: "fused_attention",
        bindings: &[
            Access::Read,
            Access::Read,
            Access::Read,
            Access::ReadWrite,
            Access::Read,
            Access::Read,
            Access::ReadWrite,
            Access::Uniform,
        ],
        constants,
    }
}

/// The two kernels of the fused backward: one owns query rows, one key rows.
#[derive(Debug, Clone, Copy)]
enum FusedBackwardKernel {
    Queries,
    Keys,
}

fn fused_backward_spec(
    kernel: FusedBackwardKernel,
    logits: LogitConstants,
    head_dim: usize,
    value_dim: usize,
) -> KernelSpec {
    use Access::{Read, ReadWrite, Uniform};
    let mut constants = logits.constants();
    constants.push(("CACHED_HEAD_DIM", head_dim.min(VALUE_CHUNK) as f64));
    constants.push(("CACHED_VALUE_DIM", value_dim.min(VALUE_CHUNK) as f64));
    // Bindings 3, 8 and 9 differ: dQ, O, Δ (written) for the queries' kernel; dK, dV, Δ
    // (read) for the keys'.
    let (entry, bindings): (_, &'static [Access]) = match kernel {
        FusedBackwardKernel::Queries => (
            "fused_attention_backward_queries",
            &[
                Read, Read, Read, ReadWrite, Read, Read, Read, Read, Read, ReadWrite, Uniform,
            ],
        ),
        FusedBackwardKernel::Keys => (
            "fused_attention_backward_keys",
            &[
                Read, Read, Read, ReadWrite, Read, Read, Read, Read, ReadWrite, Read, Uniform,
            ],
        ),
    };
    KernelSpec {
        source: &SHADER,
        entry,
        bindings,
        constants,
    }
}

/// Every kernel variant the attention launchers can build. The fused kernels' head and
/// value sizes (`CACHED_*`, `CHUNK_WIDTH`: size constants, each in 0..=64) are sampled at
/// the ends of their range, each against the other end, and at odd sizes that fill no
/// whole vec4.
pub fn kernel_specs() -> Vec<KernelSpec> {
    let sizes = [(0, VALUE_CHUNK), (VALUE_CHUNK, 0), (13, 7)];
    let mut specs = Vec::new();
    for logits in LogitConstants::all() {
        for write_logits in [false, true] {
            specs.push(masked_softmax_spec(logits, write_logits));
        }
        for (head_dim, value_dim) in sizes {
            specs.push(fused_attention_spec(logits, head_dim, value_dim));
            for kernel in [FusedBackwardKernel::Queries, FusedBackwardKernel::Keys] {
                specs.push(fused_backward_spec(kernel, logits, head_dim, value_dim));
            }
        }
    }
    specs.extend([false, true].map(masked_softmax_backward_spec));
    specs
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct BackwardParams {
    rows: u32,
    k_len: u32,
    softcap: f32,
    pad: u32,
}

/// Checks the options against `dims`: settings in range, key lengths [B] and a mask that
/// broadcasts to [B, H, Lq, Lk], both on the device of `on`.
fn check_options(on: &Tensor, dims: &AttentionDims, options: &AttentionOptions) -> Result<()> {
    options.settings.check()?;
    if let Some(lengths) = options.key_lengths {
        if !on.gpu().same_device(lengths.gpu()) {
            return Err(Error::DeviceMismatch {
                op: "attention key lengths",
            });
        }
        if lengths.shape() != [dims.batch] {
            return Err(Error::ShapeMismatch {
                op: "attention key lengths",
                lhs: lengths.shape().to_vec(),
                rhs: dims.scores_shape().to_vec(),
                expected: format!("one length per batch: [{}]", dims.batch),
            });
        }
    }
    if let Some(mask) = options.mask {
        on.same_device("attention mask", mask.values)?;
        let scores = dims.scores_shape();
        let fits = broadcast_shapes("attention mask", mask.values.shape(), &scores)
            .is_ok_and(|shape| shape == scores);
        if !fits {
            return Err(Error::ShapeMismatch {
                op: "attention mask",
                lhs: mask.values.shape().to_vec(),
                rhs: scores.to_vec(),
                expected: "the mask must broadcast to the scores' shape [B, H, Lq, Lk]".into(),
            });
        }
    }
    Ok(())
}

/// Records the masked softmax of `scores` [B, H, Lq, Lk] into `out` (same shape); with
/// `write_logits`, the masked logits instead (the softmax's input, −∞ where masked).
pub fn masked_softmax_dispatch(
    scores: &Tensor,
    out: &Tensor,
    dims: &AttentionDims,
    options: &AttentionOptions,
    write_logits: bool,
) -> Result<Dispatch> {
    check_options(scores, dims, options)?;
    for tensor in [scores, out] {
        if tensor.shape() != dims.scores_shape() {
            return Err(Error::ShapeMismatch {
                op: "masked softmax",
                lhs: tensor.shape().to_vec(),
                rhs: dims.scores_shape().to_vec(),
                expected: "the scores and the output must be [B, H, Lq, Lk]".into(),
            });
        }
    }
    let gpu = scores.gpu();
    let params = AttentionParams::new(dims, options);
    let spec = masked_softmax_spec(LogitConstants::of(options), write_logits);
    let placeholder = gpu.placeholder();
    gpu.dispatch(
        &spec,
        &[
            scores.buffer(),
            options
                .mask
                .map_or(placeholder, |mask| mask.values.buffer()),
            options.key_lengths.map_or(placeholder, Indices::buffer),
            out.buffer(),
        ],
        &params,
        gpu.grid((dims.rows() as u32).div_ceil(WORKGROUP_1D)),
    )
}

/// Records dS = P ⊙ (dP − rowsum(dP ⊙ P)) into `grad_scores`, for rows of `k_len` keys;
/// with a softcap c, times 1 − tanh²(S/c), reading the uncapped `scores` S.
pub fn masked_softmax_backward_dispatch(
    probs: &Tensor,
    grad_probs: &Tensor,
    softcapped: Option<(&Tensor, f32)>,
    grad_scores: &Tensor,
    k_len: usize,
) -> Result<Dispatch> {
    let gpu = probs.gpu();
    let same_shapes = [grad_probs, grad_scores]
        .into_iter()
        .chain(softcapped.map(|(scores, _)| scores))
        .all(|t| t.shape() == probs.shape());
    if !same_shapes || probs.shape().last() != Some(&k_len) {
        return Err(Error::ShapeMismatch {
            op: "masked softmax backward",
            lhs: probs.shape().to_vec(),
            rhs: grad_probs.shape().to_vec(),
            expected: format!(
                "P, dP, dS (and S) must share one shape whose last axis is the {k_len} keys"
            ),
        });
    }
    let rows = probs.numel().checked_div(k_len).unwrap_or(0);
    let params = BackwardParams {
        rows: rows as u32,
        k_len: k_len as u32,
        softcap: softcapped.map_or(1.0, |(_, cap)| cap),
        pad: 0,
    };
    let spec = masked_softmax_backward_spec(softcapped.is_some());
    gpu.dispatch(
        &spec,
        &[
            probs.buffer(),
            grad_probs.buffer(),
            softcapped.map_or(gpu.placeholder(), |(scores, _)| scores.buffer()),
            grad_scores.buffer(),
        ],
        &params,
        gpu.grid((rows as u32).div_ceil(WORKGROUP_1D)),
    )
}

/// Dispatches recorded for one submission, with the intermediate tensors they bind.
///
/// A tensor's buffer goes back to the pool when the tensor is dropped; an intermediate
/// dropped before the submission could be handed to another tensor whose upload would then
/// land before these dispatches run. So the intermediates stay here until [`submit`].
///
/// [`submit`]: Recording::submit
#[derive(Default)]
pub struct Recording {
    /// The dispatches, in the order they must run.
    pub dispatches: Vec<Dispatch>,
    /// The intermediate tensors the dispatches bind, held until the submission.
    pub temporaries: Vec<Tensor>,
}

impl Recording {
    /// Keeps `tensor` alive until the submission.
    pub fn keep(&mut self, tensor: &Tensor) {
        self.temporaries.push(tensor.clone());
    }

    /// Submits the dispatches in order, then releases the intermediates.
    pub fn submit(self, gpu: &Gpu) -> Result<()> {
        gpu.submit(&[], &self.dispatches)
    }
}

/// Records out = α·op(a)·op(b) batch by batch, with the variant the matmul rule picks;
/// nothing when `out` is empty.
fn push_product(
    recording: &mut Recording,
    (a, b, out): (&Tensor, &Tensor, &Tensor),
    shape: &GemmShape,
    alpha: f32,
) -> Result<()> {
    if out.numel() == 0 {
        return Ok(());
    }
    let operands = GemmOperands {
        a,
        b,
        c: None,
        bias: None,
        out,
        epilogue: Epilogue::Plain,
    };
    let variant = MatmulVariant::choose(a.gpu(), shape);
    recording
        .dispatches
        .push(gemm_dispatch(&operands, shape, alpha, 0.0, variant)?);
    Ok(())
}

/// K or V [B, Hkv, L, X] with each head repeated for its group of query heads:
/// [B, H, L, X] (the input itself when Hkv = H).
fn repeat_heads(x: &Tensor, dims: &AttentionDims, recording: &mut Recording) -> Result<Tensor> {
    let group = dims.group();
    if group == 1 {
        return Ok(x.clone());
    }
    let (batch, kv_heads, len, width) = (x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]);
    let single = [batch, kv_heads, 1, len * width];
    let repeated = Tensor::uninit(x.gpu(), &[batch, kv_heads, group, len * width])?;
    recording.keep(&repeated);
    if repeated.numel() > 0 {
        recording.dispatches.push(strided_copy_dispatch(
            &x.reshape(&single)?,
            &repeated,
            broadcast_strides(&single, repeated.shape()),
        )?);
    }
    repeated.reshape(&[batch, dims.heads, len, width])
}

/// Where the gradient of repeated heads [B, H, L, X] goes before [`sum_groups`] folds it
/// into `grad` [B, Hkv, L, X]: `grad` itself when Hkv = H, else a kept intermediate.
fn repeated_heads_grad(
    grad: &Tensor,
    dims: &AttentionDims,
    recording: &mut Recording,
) -> Result<Tensor> {
    if dims.group() == 1 {
        return Ok(grad.clone());
    }
    let (len, width) = (grad.shape()[2], grad.shape()[3]);
    let repeated = Tensor::uninit(grad.gpu(), &[dims.batch, dims.heads, len, width])?;
    recording.keep(&repeated);
    Ok(repeated)
}

/// Records the sum of `repeated` [B, H, L, X] over each group of query heads into `grad`
/// [B, Hkv, L, X]; nothing when Hkv = H (`repeated` is `grad`).
fn sum_groups(
    repeated: &Tensor,
    grad: &Tensor,
    dims: &AttentionDims,
    recording: &mut Recording,
) -> Result<()> {
    let group = dims.group();
    if group == 1 || grad.numel() == 0 {
        return Ok(());
    }
    let (len, width) = (grad.shape()[2], grad.shape()[3]);
    let grouped = repeated.reshape(&[dims.batch, dims.kv_heads, group, len * width])?;
    let variant = ReduceVariant::choose(len * width, group);
    recording
        .dispatches
        .push(reduce_dispatch(&grouped, grad, 2, Reduce::Sum, variant)?);
    Ok(())
}

/// Records S = Q·K_repᵀ·scale into a new [B, H, Lq, Lk] tensor.
fn push_scores(
    q: &Tensor,
    k_rep: &Tensor,
    dims: &AttentionDims,
    scale: f32,
    recording: &mut Recording,
) -> Result<Tensor> {
    let scores = Tensor::uninit(q.gpu(), &dims.scores_shape())?;
    recording.keep(&scores);
    let shape = GemmShape::contiguous(
        dims.batch * dims.heads,
        (dims.q_len, dims.k_len, dims.head_dim),
        false,
        true,
    );
    push_product(recording, (q, k_rep, &scores), &shape, scale)?;
    Ok(scores)
}

/// Scaled dot-product attention: O = softmax(mask(Q·Kᵀ·scale))·V, with P kept for the
/// backward. Q [B, H, Lq, D], K [B, Hkv, Lk, D], V [B, Hkv, Lk, Dv], Hkv dividing H.
/// One submission: the two products, the masked softmax, and the head repeats of grouped
/// key/value heads.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    options: &AttentionOptions,
) -> Result<AttentionForward> {
    let mut recording = Recording::default();
    let forward = attention_dispatches(q, k, v, options, &mut recording)?;
    recording.submit(q.gpu())?;
    Ok(forward)
}

/// Records the dispatches of [`attention`] into `recording` (no submit); the returned
/// tensors hold the results once it has been submitted.
pub fn attention_dispatches(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    options: &AttentionOptions,
    recording: &mut Recording,
) -> Result<AttentionForward> {
    let dims = AttentionDims::from_shapes(q.shape(), k.shape(), v.shape())?;
    let forward = AttentionForward {
        output: Tensor::uninit(q.gpu(), &dims.output_shape())?,
        probs: Tensor::uninit(q.gpu(), &dims.scores_shape())?,
    };
    attention_dispatches_into((q, k, v), options, &forward, recording)?;
    Ok(forward)
}

/// Records the dispatches of [`attention`] writing into given tensors (a compiled graph's
/// buffers): `into.output` [B, H, Lq, Dv] and `into.probs` [B, H, Lq, Lk].
pub fn attention_dispatches_into(
    (q, k, v): (&Tensor, &Tensor, &Tensor),
    options: &AttentionOptions,
    into: &AttentionForward,
    recording: &mut Recording,
) -> Result<()> {
    let dims = AttentionDims::from_shapes(q.shape(), k.shape(), v.shape())?;
    for other in [k, v, &into.output, &into.probs] {
        q.same_device("attention", other)?;
    }
    check_options(q, &dims, options)?;
    check_result_shapes(
        "attention",
        &[
            ("output", &into.output, &dims.output_shape()[..]),
            ("probs", &into.probs, &dims.scores_shape()[..]),
        ],
    )?;
    let AttentionForward { output, probs } = into;
    let k_rep = repeat_heads(k, &dims, recording)?;
    let v_rep = repeat_heads(v, &dims, recording)?;
    let scale = options.settings.scale_for(dims.head_dim);
    let scores = push_scores(q, &k_rep, &dims, scale, recording)?;
    if probs.numel() > 0 {
        recording.dispatches.push(masked_softmax_dispatch(
            &scores, probs, &dims, options, false,
        )?);
    }
    // With Lk = 0 the product has no terms and writes zeros: O = 0 for rows without keys.
    let shape = GemmShape::contiguous(
        dims.batch * dims.heads,
        (dims.q_len, dims.value_dim, dims.k_len),
        false,
        false,
    );
    push_product(recording, (probs, &v_rep, output), &shape, 1.0)?;
    Ok(())
}

/// Which forward computes attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttentionVariant {
    /// Q·Kᵀ and P·V on the batched matmul kernels around the masked softmax: writes the
    /// scores and P, [B, H, Lq, Lk], which the backward needs.
    Unfused,
    /// `fused_attention`: one dispatch streaming over the keys with an online softmax;
    /// writes only O and the per-row log-sum-exp, from which `fused_attention_backward`
    /// recomputes P.
    Fused,
}

/// Lq·Lk from which [`AttentionVariant::choose`] picks the fused forward. Measured on
/// lavapipe (B = H = 4, D = 32), the matmul kernels around the softmax are faster below it:
/// about 1.5× at L = 128, 2.4× at L = 512 (level with causal masking, where the fused
/// forward skips the masked keys' products). From L = 1024 on the unfused forward holds
/// 128 MiB of scores and P for those 16 heads, which the fused one never writes.
pub const FUSED_MIN_SCORES: usize = 1024 * 1024;

/// Lq·Lk from which [`AttentionVariant::choose_for_training`] picks the fused forward and
/// backward on adapters that are not CPU-like. Not measured on such an adapter (none was
/// at hand): the length from which the unfused path's three [B, H, Lq, Lk] tensors (S, P,
/// dS) outgrow the caches, as for inference. On lavapipe (B = H = 4, D = 32) the fused
/// forward + backward is 3.9× slower than the unfused at L = 128 and 2.6× at L = 512
/// (3.3× and 2.0× causal): the per-row loops do the products without the matmul
/// kernels' register blocking.
pub const FUSED_TRAINING_MIN_SCORES: usize = 1024 * 1024;

impl AttentionVariant {
    /// The rule for a forward that needs no P: fused when Lq·Lk ≥ [`FUSED_MIN_SCORES`].
    pub fn choose(dims: &AttentionDims) -> AttentionVariant {
        if dims.q_len * dims.k_len >= FUSED_MIN_SCORES {
            AttentionVariant::Fused
        } else {
            AttentionVariant::Unfused
        }
    }

    /// The rule for a forward followed by its backward (training): never fused on
    /// CPU-like adapters, where the fused backward's per-row loops lose to the matmul
    /// kernels at every length measured, nor where the adapter binds too few storage
    /// buffers for the fused backward; elsewhere fused when Lq·Lk ≥
    /// [`FUSED_TRAINING_MIN_SCORES`].
    pub fn choose_for_training(gpu: &Gpu, dims: &AttentionDims) -> AttentionVariant {
        if !gpu.is_cpu_like()
            && fused_backward_fits(gpu)
            && dims.q_len * dims.k_len >= FUSED_TRAINING_MIN_SCORES
        {
            AttentionVariant::Fused
        } else {
            AttentionVariant::Unfused
        }
    }
}

/// What [`fused_attention`] returns: the output and, per query row, the log-sum-exp of its
/// logits, from which P = exp(logits − lse) can be recomputed.
#[derive(Debug, Clone)]
pub struct FusedAttention {
    /// O, [B, H, Lq, Dv].
    pub output: Tensor,
    /// log Σ_j exp(z_j) over the row's kept keys, [B, H, Lq]; −∞ for a row without keys.
    pub log_sum_exp: Tensor,
}

/// Attention's output O for inference (no backward): the variant [`AttentionVariant::choose`]
/// picks for these sizes. Same arguments and results as [`attention`]'s output.
pub fn attention_output(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    options: &AttentionOptions,
) -> Result<Tensor> {
    let dims = AttentionDims::from_shapes(q.shape(), k.shape(), v.shape())?;
    match AttentionVariant::choose(&dims) {
        AttentionVariant::Unfused => Ok(attention(q, k, v, options)?.output),
        AttentionVariant::Fused => Ok(fused_attention(q, k, v, options)?.output),
    }
}

/// The fused attention forward: O and the per-row log-sum-exp, without the [B, H, Lq, Lk]
/// scores. Every option of [`attention`]; one dispatch, one submission.
pub fn fused_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    options: &AttentionOptions,
) -> Result<FusedAttention> {
    let dims = AttentionDims::from_shapes(q.shape(), k.shape(), v.shape())?;
    let forward = FusedAttention {
        output: Tensor::uninit(q.gpu(), &dims.output_shape())?,
        log_sum_exp: Tensor::uninit(q.gpu(), &[dims.batch, dims.heads, dims.q_len])?,
    };
    let mut recording = Recording::default();
    recording
        .dispatches
        .extend(fused_attention_dispatch((q, k, v), options, &forward)?);
    recording.submit(q.gpu())?;
    Ok(forward)
}

/// Records [`fused_attention`] into given tensors: `into.output` [B, H, Lq, Dv] and
/// `into.log_sum_exp` [B, H, Lq]. `None` when there are no query rows (nothing to write).
pub fn fused_attention_dispatch(
    (q, k, v): (&Tensor, &Tensor, &Tensor),
    options: &AttentionOptions,
    into: &FusedAttention,
) -> Result<Option<Dispatch>> {
    let dims = AttentionDims::from_shapes(q.shape(), k.shape(), v.shape())?;
    for other in [k, v, &into.output, &into.log_sum_exp] {
        q.same_device("fused attention", other)?;
    }
    check_options(q, &dims, options)?;
    check_result_shapes(
        "fused attention",
        &[
            ("output", &into.output, &dims.output_shape()[..]),
            (
                "log-sum-exp",
                &into.log_sum_exp,
                &[dims.batch, dims.heads, dims.q_len][..],
            ),
        ],
    )?;
    // One workgroup per (batch, head), chunk of 64 output columns (at least one, which
    // writes the log-sum-exp) and block of 64 queries: the shader's VALUE_CHUNK and
    // FUSED_ROWS.
    let blocks =
        dims.batch * dims.heads * dims.value_dim.div_ceil(64).max(1) * dims.q_len.div_ceil(64);
    if blocks == 0 {
        return Ok(None);
    }
    let blocks = u32::try_from(blocks).map_err(|_| {
        Error::invalid(
            "fused attention",
            format!("{blocks} workgroups are more than one dispatch can index (2^32)"),
        )
    })?;
    let gpu = q.gpu();
    let spec = fused_attention_spec(LogitConstants::of(options), dims.head_dim, dims.value_dim);
    let placeholder = gpu.placeholder();
    let dispatch = gpu.dispatch(
        &spec,
        &[
            q.buffer(),
            options
                .mask
                .map_or(placeholder, |mask| mask.values.buffer()),
            options.key_lengths.map_or(placeholder, Indices::buffer),
            into.output.buffer(),
            k.buffer(),
            v.buffer(),
            into.log_sum_exp.buffer(),
        ],
        &AttentionParams::new(&dims, options),
        gpu.grid(blocks),
    )?;
    Ok(Some(dispatch))
}

/// The storage buffers each kernel of the fused backward binds.
const FUSED_BACKWARD_STORAGE_BUFFERS: u32 = 10;

/// Whether `gpu` binds enough storage buffers per stage for the fused backward (10; WebGPU
/// guarantees 8): where not, training uses the unfused backward.
pub fn fused_backward_fits(gpu: &Gpu) -> bool {
    gpu.limits().max_storage_buffers_per_shader_stage >= FUSED_BACKWARD_STORAGE_BUFFERS
}

/// The backward of [`fused_attention`] without the [B, H, Lq, Lk] probabilities: from Q, K,
/// V, the forward's O and log-sum-exp and dL/dO (`grad_output`, [B, H, Lq, Dv]), the
/// gradients of Q, K and V. P is recomputed from Q, K and the log-sum-exp, so `options`
/// must be the forward's (every mask acts again). Two dispatches, one submission.
pub fn fused_attention_backward(
    (q, k, v): (&Tensor, &Tensor, &Tensor),
    forward: &FusedAttention,
    grad_output: &Tensor,
    options: &AttentionOptions,
) -> Result<AttentionGradients> {
    let gpu = q.gpu();
    let grads = AttentionGradients {
        query: Tensor::uninit(gpu, q.shape())?,
        key: Tensor::uninit(gpu, k.shape())?,
        value: Tensor::uninit(gpu, v.shape())?,
    };
    let mut recording = Recording::default();
    fused_attention_backward_dispatches_into(
        (q, k, v),
        forward,
        grad_output,
        options,
        &grads,
        &mut recording,
    )?;
    recording.submit(gpu)?;
    Ok(grads)
}

/// Records [`fused_attention_backward`] writing into given tensors shaped as Q, K and V (a
/// compiled graph's buffers). The first dispatch owns query rows: dQ, and each row's
/// Δ = rowsum(dO ⊙ O) into a kept intermediate; the second owns key rows: dK and dV,
/// summed over the query heads of each key/value head inside the kernel.
pub fn fused_attention_backward_dispatches_into(
    (q, k, v): (&Tensor, &Tensor, &Tensor),
    forward: &FusedAttention,
    grad_output: &Tensor,
    options: &AttentionOptions,
    into: &AttentionGradients,
    recording: &mut Recording,
) -> Result<()> {
    let dims = AttentionDims::from_shapes(q.shape(), k.shape(), v.shape())?;
    check_result_shapes(
        "fused attention backward",
        &[
            (
                "attention output",
                &forward.output,
                &dims.output_shape()[..],
            ),
            (
                "log-sum-exp",
                &forward.log_sum_exp,
                &[dims.batch, dims.heads, dims.q_len][..],
            ),
            (
                "attention output gradient",
                grad_output,
                &dims.output_shape()[..],
            ),
            ("query gradient", &into.query, q.shape()),
            ("key gradient", &into.key, k.shape()),
            ("value gradient", &into.value, v.shape()),
        ],
    )?;
    for other in [
        k,
        v,
        &forward.output,
        &forward.log_sum_exp,
        grad_output,
        &into.query,
        &into.key,
        &into.value,
    ] {
        q.same_device("fused attention backward", other)?;
    }
    check_options(q, &dims, options)?;
    let gpu = q.gpu();
    if !fused_backward_fits(gpu) {
        let available = gpu.limits().max_storage_buffers_per_shader_stage;
        return Err(Error::invalid(
            "fused attention backward",
            format!(
                "its kernels bind {FUSED_BACKWARD_STORAGE_BUFFERS} storage buffers, the \
                 adapter allows {available} per stage: use the unfused backward"
            ),
        ));
    }
    let delta = Tensor::uninit(gpu, &[dims.batch, dims.heads, dims.q_len])?;
    recording.keep(&delta);
    // Workgroups of 64 rows (the shader's FUSED_ROWS) by chunks of 64 result columns
    // (VALUE_CHUNK), at least one chunk: the queries' writes Δ, which the keys' read.
    let query_blocks =
        dims.batch * dims.heads * dims.head_dim.div_ceil(64).max(1) * dims.q_len.div_ceil(64);
    let key_blocks = dims.batch
        * dims.kv_heads
        * dims.head_dim.max(dims.value_dim).div_ceil(64).max(1)
        * dims.k_len.div_ceil(64);
    let logits = LogitConstants::of(options);
    let params = AttentionParams::new(&dims, options);
    let placeholder = gpu.placeholder();
    let mask = options
        .mask
        .map_or(placeholder, |mask| mask.values.buffer());
    let lengths = options.key_lengths.map_or(placeholder, Indices::buffer);
    // What bindings 3, 8 and 9 hold: dQ, O, Δ (written) for the queries' kernel; dK, dV, Δ
    // (read) for the keys'.
    let kernels = [
        (
            FusedBackwardKernel::Queries,
            query_blocks,
            [&into.query, &forward.output, &delta],
        ),
        (
            FusedBackwardKernel::Keys,
            key_blocks,
            [&into.key, &into.value, &delta],
        ),
    ];
    for (kernel, blocks, [at_3, at_8, at_9]) in kernels {
        if blocks == 0 {
            continue;
        }
        let blocks = u32::try_from(blocks).map_err(|_| {
            Error::invalid(
                "fused attention backward",
                format!("{blocks} workgroups are more than one dispatch can index (2^32)"),
            )
        })?;
        let spec = fused_backward_spec(kernel, logits, dims.head_dim, dims.value_dim);
        recording.dispatches.push(gpu.dispatch(
            &spec,
            &[
                q.buffer(),
                mask,
                lengths,
                at_3.buffer(),
                k.buffer(),
                v.buffer(),
                forward.log_sum_exp.buffer(),
                grad_output.buffer(),
                at_8.buffer(),
                at_9.buffer(),
            ],
            &params,
            gpu.grid(blocks),
        )?);
    }
    Ok(())
}

/// Checks that each (name, tensor, shape) has its shape: the results a caller provides.
fn check_result_shapes(op: &'static str, results: &[(&str, &Tensor, &[usize])]) -> Result<()> {
    for &(name, tensor, shape) in results {
        if tensor.shape() != shape {
            return Err(Error::ShapeMismatch {
                op,
                lhs: tensor.shape().to_vec(),
                rhs: shape.to_vec(),
                expected: format!("the {name} must have shape {shape:?}"),
            });
        }
    }
    Ok(())
}

/// The logits the softmax of [`attention`] sees, [B, H, Lq, Lk]: Q·Kᵀ·scale, softcapped,
/// plus the additive mask, and −∞ at every masked key. With no mask options set, the
/// (softcapped) scaled scores.
pub fn attention_logits(q: &Tensor, k: &Tensor, options: &AttentionOptions) -> Result<Tensor> {
    let dims = AttentionDims::from_shapes(q.shape(), k.shape(), k.shape())?;
    q.same_device("attention", k)?;
    check_options(q, &dims, options)?;
    let mut recording = Recording::default();
    let k_rep = repeat_heads(k, &dims, &mut recording)?;
    let scale = options.settings.scale_for(dims.head_dim);
    let scores = push_scores(q, &k_rep, &dims, scale, &mut recording)?;
    let logits = Tensor::uninit(q.gpu(), &dims.scores_shape())?;
    if logits.numel() > 0 {
        recording.dispatches.push(masked_softmax_dispatch(
            &scores, &logits, &dims, options, true,
        )?);
    }
    recording.submit(q.gpu())?;
    Ok(logits)
}

/// The backward of [`attention`]: from dL/dO (`grad_output`, [B, H, Lq, Dv]) and the
/// forward's `probs`, the gradients of Q, K and V. The masks act through P (0 at masked
/// keys), so of the options only the scale and softcap matter; pass the forward's. With a
/// softcap S is recomputed (one more product). One submission.
pub fn attention_backward(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    probs: &Tensor,
    grad_output: &Tensor,
    options: &AttentionOptions,
) -> Result<AttentionGradients> {
    let mut recording = Recording::default();
    let grads =
        attention_backward_dispatches((q, k, v), probs, grad_output, options, &mut recording)?;
    recording.submit(q.gpu())?;
    Ok(grads)
}

/// Records the dispatches of [`attention_backward`] into `recording` (no submit). They may
/// follow the forward's in the same recording: `probs` is read when they run.
pub fn attention_backward_dispatches(
    (q, k, v): (&Tensor, &Tensor, &Tensor),
    probs: &Tensor,
    grad_output: &Tensor,
    options: &AttentionOptions,
    recording: &mut Recording,
) -> Result<AttentionGradients> {
    let gpu = q.gpu();
    let grads = AttentionGradients {
        query: Tensor::uninit(gpu, q.shape())?,
        key: Tensor::uninit(gpu, k.shape())?,
        value: Tensor::uninit(gpu, v.shape())?,
    };
    attention_backward_dispatches_into((q, k, v), probs, grad_output, options, &grads, recording)?;
    Ok(grads)
}

/// Records the dispatches of [`attention_backward`] writing into given tensors (a compiled
/// graph's buffers), shaped as Q, K and V.
pub fn attention_backward_dispatches_into(
    (q, k, v): (&Tensor, &Tensor, &Tensor),
    probs: &Tensor,
    grad_output: &Tensor,
    options: &AttentionOptions,
    into: &AttentionGradients,
    recording: &mut Recording,
) -> Result<()> {
    let dims = AttentionDims::from_shapes(q.shape(), k.shape(), v.shape())?;
    check_result_shapes(
        "attention backward",
        &[
            ("attention probs", probs, &dims.scores_shape()[..]),
            (
                "attention output gradient",
                grad_output,
                &dims.output_shape()[..],
            ),
            ("query gradient", &into.query, q.shape()),
            ("key gradient", &into.key, k.shape()),
            ("value gradient", &into.value, v.shape()),
        ],
    )?;
    for other in [
        k,
        v,
        probs,
        grad_output,
        &into.query,
        &into.key,
        &into.value,
    ] {
        q.same_device("attention backward", other)?;
    }
    options.settings.check()?;
    let gpu = q.gpu();
    let batches = dims.batch * dims.heads;
    let (lq, lk, d, dv) = (dims.q_len, dims.k_len, dims.head_dim, dims.value_dim);
    let scale = options.settings.scale_for(d);
    let k_rep = repeat_heads(k, &dims, recording)?;
    let v_rep = repeat_heads(v, &dims, recording)?;

    // dV = Pᵀ·dO and dP = dO·Vᵀ.
    let grad_v_rep = repeated_heads_grad(&into.value, &dims, recording)?;
    let shape = GemmShape::contiguous(batches, (lk, dv, lq), true, false);
    push_product(recording, (probs, grad_output, &grad_v_rep), &shape, 1.0)?;
    let grad_probs = Tensor::uninit(gpu, &dims.scores_shape())?;
    recording.keep(&grad_probs);
    let shape = GemmShape::contiguous(batches, (lq, lk, dv), false, true);
    push_product(recording, (grad_output, &v_rep, &grad_probs), &shape, 1.0)?;

    // dS through the softmax (and the softcap, whose derivative needs the uncapped S).
    let scores = match options.settings.softcap {
        Some(cap) => Some((push_scores(q, &k_rep, &dims, scale, recording)?, cap)),
        None => None,
    };
    let grad_scores = Tensor::uninit(gpu, &dims.scores_shape())?;
    recording.keep(&grad_scores);
    if grad_scores.numel() > 0 {
        recording.dispatches.push(masked_softmax_backward_dispatch(
            probs,
            &grad_probs,
            scores.as_ref().map(|(s, cap)| (s, *cap)),
            &grad_scores,
            lk,
        )?);
    }

    // dQ = dS·K·scale and dK = dSᵀ·Q·scale.
    let shape = GemmShape::contiguous(batches, (lq, d, lk), false, false);
    push_product(
        recording,
        (&grad_scores, &k_rep, &into.query),
        &shape,
        scale,
    )?;
    let grad_k_rep = repeated_heads_grad(&into.key, &dims, recording)?;
    let shape = GemmShape::contiguous(batches, (lk, d, lq), true, false);
    push_product(recording, (&grad_scores, q, &grad_k_rep), &shape, scale)?;

    sum_groups(&grad_k_rep, &into.key, &dims, recording)?;
    sum_groups(&grad_v_rep, &into.value, &dims, recording)
}

/// A mask tensor for the CPU reference: its kind, values and shape.
#[derive(Debug, Clone, Copy)]
pub struct CpuMask<'a> {
    /// How the values act.
    pub kind: MaskKind,
    /// The mask's values, row-major.
    pub values: &'a [f64],
    /// The mask's shape, broadcastable to `[B, H, Lq, Lk]`.
    pub shape: &'a [usize],
}

/// The inputs of [`attention_cpu`], contiguous row-major as on the GPU.
#[derive(Debug, Clone, Copy)]
pub struct AttentionCpuInputs<'a> {
    /// The sizes of the call.
    pub dims: AttentionDims,
    /// Q, `[B, H, Lq, D]`.
    pub q: &'a [f64],
    /// K, `[B, Hkv, Lk, D]`.
    pub k: &'a [f64],
    /// V, `[B, Hkv, Lk, Dv]`.
    pub v: &'a [f64],
    /// Valid keys per batch, `[B]`, as [`AttentionOptions::key_lengths`].
    pub key_lengths: Option<&'a [u32]>,
    /// A mask tensor, as [`AttentionOptions::mask`].
    pub mask: Option<CpuMask<'a>>,
}

/// What [`attention_cpu`] returns, in f64.
#[derive(Debug, Clone)]
pub struct AttentionCpuOutput {
    /// O, `[B, H, Lq, Dv]`.
    pub output: Vec<f64>,
    /// P, `[B, H, Lq, Lk]`: 0 at masked keys.
    pub probs: Vec<f64>,
    /// The softmax's input: −∞ at masked keys.
    pub logits: Vec<f64>,
}

/// CPU reference of [`attention`] and [`attention_logits`], in f64, element by element:
/// each key's mask is decided on its own (not as a range, as the shader does).
pub fn attention_cpu(
    inputs: &AttentionCpuInputs,
    settings: &AttentionSettings,
) -> AttentionCpuOutput {
    let AttentionDims {
        batch,
        heads,
        q_len,
        k_len,
        head_dim,
        value_dim,
        ..
    } = inputs.dims;
    let group = inputs.dims.group();
    let kv_heads = inputs.dims.kv_heads;
    let scale = f64::from(settings.scale_for(head_dim));
    let mask_strides = inputs
        .mask
        .map(|mask| broadcast_strides(mask.shape, &inputs.dims.scores_shape()));
    let rows = batch * heads * q_len;
    let mut logits = vec![f64::NEG_INFINITY; rows * k_len];
    let mut probs = vec![0.0; rows * k_len];
    let mut output = vec![0.0; rows * value_dim];
    for b in 0..batch {
        let valid = inputs
            .key_lengths
            .map_or(k_len, |lengths| (lengths[b] as usize).min(k_len));
        let offset = settings.offset(q_len, k_len, valid);
        for h in 0..heads {
            let kv = b * kv_heads + h / group;
            for i in 0..q_len {
                let row = (b * heads + h) * q_len + i;
                let position = i as i64 + offset;
                for j in 0..k_len {
                    let jj = j as i64;
                    let mut keep = j < valid && !(settings.causal && jj > position);
                    if let Some(left) = settings.window_left {
                        keep &= position - jj <= i64::from(left);
                    }
                    if let Some(right) = settings.window_right {
                        keep &= jj - position <= i64::from(right);
                    }
                    let dot: f64 = (0..head_dim)
                        .map(|e| {
                            inputs.q[row * head_dim + e] * inputs.k[(kv * k_len + j) * head_dim + e]
                        })
                        .sum();
                    let mut z = dot * scale;
                    if let Some(cap) = settings.softcap {
                        let cap = f64::from(cap);
                        z = cap * (z / cap).tanh();
                    }
                    if let (Some(mask), Some(strides)) = (inputs.mask, mask_strides) {
                        let at = [b, h, i, j]
                            .iter()
                            .zip(strides)
                            .map(|(&c, s)| c * s as usize)
                            .sum::<usize>();
                        let m = mask.values[at];
                        match mask.kind {
                            MaskKind::Additive if m == f64::NEG_INFINITY => keep = false,
                            MaskKind::Additive => z += m,
                            MaskKind::Boolean => keep &= m != 0.0,
                        }
                    }
                    if keep {
                        logits[row * k_len + j] = z;
                    }
                }
                let row_logits = &logits[row * k_len..(row + 1) * k_len];
                let top = row_logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                if top == f64::NEG_INFINITY {
                    continue; // every key masked: P = 0, O = 0
                }
                let sum: f64 = row_logits.iter().map(|&z| (z - top).exp()).sum();
                for j in 0..k_len {
                    let p = (row_logits[j] - top).exp() / sum;
                    probs[row * k_len + j] = p;
                    for e in 0..value_dim {
                        output[row * value_dim + e] +=
                            p * inputs.v[(kv * k_len + j) * value_dim + e];
                    }
                }
            }
        }
    }
    AttentionCpuOutput {
        output,
        probs,
        logits,
    }
}
