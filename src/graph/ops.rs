//! The graph's ops. Each op has, side by side: its shape rule (`infer`), its backward rule
//! (`backward`, a graph transformation that adds the nodes computing its inputs'
//! gradients), and the kernels it records (`record`, used once by compile).

use crate::error::{Error, Result};
use crate::gpu::Dispatch;
use crate::kernels::attention::{
    attention_backward_dispatches_into, attention_dispatches_into,
    fused_attention_backward_dispatches_into, fused_attention_dispatch, AttentionDims,
    AttentionForward, AttentionGradients, AttentionMask, AttentionOptions, AttentionSettings,
    AttentionVariant, FusedAttention, MaskKind, Recording,
};
use crate::kernels::broadcast_shapes;
use crate::kernels::conv::{
    conv_bias_grad_dispatch, conv_forward_dispatch, conv_input_grad_dispatch,
    conv_weight_grad_dispatch, max_pool_backward_dispatch, max_pool_dispatch,
    output_shape as conv_output_shape, Conv2d, ConvGeometry, MaxPool1d,
};
use crate::kernels::copy::{
    region_copy_dispatch, slice_backward_dispatch, strided_copy_dispatch, CopyRegion,
};
use crate::kernels::elementwise::{binary_dispatch, unary_dispatch, Binary, Unary};
use crate::kernels::gather::{
    gather_backward_dispatch, gather_dispatch, gather_shape, GroupedPositions,
};
use crate::kernels::layernorm::{
    layer_norm_backward_dispatches, layer_norm_dispatch, LayerNormForward, LayerNormGrads,
    LayerNormShape, LayerNormVariant,
};
use crate::kernels::matmul::{gemm_dispatch, Epilogue, GemmOperands, GemmShape, MatmulVariant};
use crate::kernels::random::dropout_dispatch;
use crate::kernels::recurrent::{
    recurrent_backward_dispatches, recurrent_forward_dispatches, CellKind, RecurrentBackwardInputs,
    RecurrentGrads, RecurrentInputs, RecurrentOutputs, RecurrentShape,
};
use crate::kernels::reduce::{reduce_dispatch, Reduce, ReduceVariant};
use crate::kernels::softmax::{
    cross_entropy_dispatch, cross_entropy_total_dispatch, cross_entropy_weight_sum_dispatch,
    softmax_backward_dispatch, softmax_dispatch, CrossEntropyOperands, SoftmaxKind, SoftmaxVariant,
};
use crate::kernels::{broadcast_strides, check_rank, contiguous_strides, pad_to_rank4};
use crate::tensor::{numel, Indices, Tensor};

use super::{mismatch, DType, Graph, Var};

/// What `compile` fused into a matmul (`fuse_relus` in plan.rs), saving a pass over its product.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatMulFusion {
    Plain,
    /// relu(product): the ReLU that alone read the product.
    Relu,
    /// relu'(h) ⊙ product, h the ReLU output fed as the last input: the gradient through
    /// a ReLU, computed from the product (dy) that it alone read.
    ReluGrad,
}

/// An operation of the graph.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// op(a)·op(b) (+ bias), batched: inputs a [batch…, M, K], b [batch…, K, N] (op
    /// transposes the last two axes) and, if `bias`, a row vector of N. A rank-2 operand
    /// beside a batched one is shared by every batch. `fused` is what `compile` fused
    /// into the product's store (graphs build `Plain` only); a fused ReLU's gradient takes
    /// the ReLU's output as its last input.
    MatMul {
        trans_a: bool,
        trans_b: bool,
        bias: bool,
        fused: MatMulFusion,
    },
    /// y = f(x).
    Unary(Unary),
    /// a ∘ b with numpy broadcasting; the derivative ops take two values of one shape.
    Binary(Binary),
    /// Inverted dropout: inputs x and the seed (u32 \[1\], fed every run); keeps each element
    /// with probability 1 − p, scaled by 1/(1 − p), by the hash of (seed, `stream`, index)
    /// (`kernels::random`). Its backward is the same op on dy: the same bits drop the same
    /// elements, so no mask is stored.
    Dropout { p: f32, stream: u32 },
    /// Sum, max or mean over one axis.
    Reduce {
        op: Reduce,
        axis: usize,
        keep_dim: bool,
    },
    /// Sums a value down to a shape it was broadcast from.
    SumTo { shape: Vec<usize> },
    /// Broadcasts a value up to a shape.
    BroadcastTo { shape: Vec<usize> },
    /// The same buffer seen with another shape.
    Reshape { shape: Vec<usize> },
    /// Reorders the axes (rank ≤ 4).
    Permute { perm: Vec<usize> },
    /// Softmax or log-softmax along the last axis.
    Softmax { log: bool },
    /// The backward of `Softmax`: inputs y (its output) and dy.
    SoftmaxGrad { log: bool },
    /// Mean softmax-cross-entropy of logits [N, C] against u32 targets \[N\]; outputs the
    /// loss (a scalar) and the logits' gradient, computed in the same pass.
    CrossEntropy { ignore: Option<u32> },
    /// Layer norm over the last axis: inputs x, gain \[D\], bias \[D\]; outputs y and the
    /// per-row mean and rstd (shaped as x with the last axis 1) that the backward needs.
    LayerNorm { eps: f32 },
    /// The backward of `LayerNorm`: inputs x, dy, gain, mean, rstd; outputs dx, dgain, dbias.
    LayerNormGrad,
    /// Entries `start..end` of `axis`.
    Slice {
        axis: usize,
        start: usize,
        end: usize,
    },
    /// The backward of `Slice`: dy placed at `start` of `axis` in zeros of `len` entries.
    SliceGrad {
        axis: usize,
        start: usize,
        len: usize,
    },
    /// The inputs one after another along `axis` (every other axis equal).
    Concat { axis: usize },
    /// ONNX's Gather: the entries of `axis` of the data picked by u32 ids (any shape), output
    /// data.shape[..axis] + ids.shape + data.shape[axis + 1..]. The embedding lookup is the
    /// gather on axis 0 of a [vocab, dim] table.
    Gather { axis: usize },
    /// The backward of `Gather`: inputs dy and the ids; output the data's gradient (the axis
    /// of `axis_len` entries back in place of the ids' axes), a deterministic scatter-add over
    /// the positions grouped by id.
    GatherGrad { axis: usize, axis_len: usize },
    /// A convolution: inputs x, weight and, if `bias`, a bias \[O\]. Sequences: x [N, C, L],
    /// weight [O, C, k], output [N, O, L_out] (only the W entries of `options` count);
    /// images: x [N, C, H, W], weight [O, C, kh, kw], output [N, O, OH, OW].
    Conv {
        layout: ConvLayout,
        options: Conv2d,
        bias: bool,
    },
    /// The input gradient of `Conv`: inputs dy and the weight; output dx [N, C, size…]
    /// (`size` the input's L, or its H and W).
    ConvInputGrad { options: Conv2d, size: Vec<usize> },
    /// The weight gradient of `Conv`: inputs x and dy; output dw [O, C, kernel…] (`kernel`
    /// the weight's k, or its kh and kw).
    ConvWeightGrad { options: Conv2d, kernel: Vec<usize> },
    /// The bias gradient of `Conv`: input dy [N, O, positions…]; output \[O\], dy's sum over
    /// batch items and positions.
    ConvBiasGrad,
    /// Max pooling along the last axis, x [N, C, L] → [N, C, L_out]; outputs the maxima and
    /// their positions in 0..L (u32, kept for the backward).
    MaxPool1d { options: MaxPool1d },
    /// The backward of `MaxPool1d`: inputs dy [N, C, L_out] and the positions; output dx
    /// [N, C, len], at each position the sum of dy over the windows it was the maximum of.
    MaxPool1dGrad { options: MaxPool1d, len: usize },
    /// The maximum of each channel over time, x [N, C, L] → [N, C]; outputs the maxima and
    /// their positions (u32 [N, C], kept for the backward).
    MaxOverTime,
    /// The backward of `MaxOverTime`: inputs dy [N, C] and the positions; output dx
    /// [N, C, len], dy at each position and 0 elsewhere.
    MaxOverTimeGrad { len: usize },
    /// Scaled dot-product attention: inputs q [B, H, Lq, D], k [B, Hkv, Lk, D], v [B, Hkv,
    /// Lk, Dv] (Hkv dividing H), then u32 lengths \[B\] masking the keys past each if
    /// `key_lengths`, then an f32 mask broadcastable to [B, H, Lq, Lk] if `mask` says how it
    /// acts; outputs O [B, H, Lq, Dv] and what the backward needs: the probabilities
    /// P [B, H, Lq, Lk] (`Unfused`) or each row's log-sum-exp [B, H, Lq] (`Fused`).
    /// `settings`: the scale, causal masking, the queries' alignment among the keys, the
    /// sliding window and the softcap.
    Attention {
        settings: AttentionSettings,
        key_lengths: bool,
        mask: Option<MaskKind>,
        variant: AttentionVariant,
    },
    /// The backward of `Attention`: inputs q, k, v, P, dO; outputs dq, dk, dv. The masks act
    /// through P (0 at masked keys), so only the scale and the softcap are needed again.
    AttentionGrad {
        scale: Option<f32>,
        softcap: Option<f32>,
    },
    /// The backward of the fused `Attention`: inputs q, k, v, O, the log-sum-exp, dO, then
    /// the forward's key lengths and mask (P is recomputed, so every mask acts again);
    /// outputs dq, dk, dv.
    FusedAttentionGrad {
        settings: AttentionSettings,
        key_lengths: bool,
        mask: Option<MaskKind>,
    },
    /// A recurrent layer over a whole sequence, one direction (`kernels::recurrent`): inputs
    /// the input projections gx [T, B, G·H] (G gates of the cell), the recurrent weight
    /// r [H, G·H], its bias [G·H], h0 [B, H], c0 [B, H] for an LSTM, then u32 lengths \[B\] if
    /// `lengths` (a step past a batch item's length keeps its state). Outputs the states
    /// [T+1, B, H] (slot 0 is h0 forward, slot T reversed), the cells likewise for an LSTM,
    /// and the gate values the backward needs.
    Recurrent {
        kind: CellKind,
        reverse: bool,
        lengths: bool,
    },
    /// The backward of `Recurrent`: inputs dstates if `dstates`, dcells if `dcells`, the
    /// states, the cells (LSTM), the saved gates, r, then the lengths if `lengths`; outputs
    /// dgx, dr, dr_bias, dh0 and, for an LSTM, dc0.
    RecurrentGrad {
        kind: CellKind,
        reverse: bool,
        dstates: bool,
        dcells: bool,
        lengths: bool,
    },
}

/// What a convolution slides over; a sequence is an image of height 1 to the kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConvLayout {
    /// x [N, C, L] (`conv1d`).
    Sequence,
    /// x [N, C, H, W] (`conv2d`).
    Image,
}

impl ConvLayout {
    fn name(self) -> &'static str {
        match self {
            ConvLayout::Sequence => "conv1d",
            ConvLayout::Image => "conv2d",
        }
    }

    fn rank(self) -> usize {
        match self {
            ConvLayout::Sequence => 3,
            ConvLayout::Image => 4,
        }
    }
}

/// What one op records at compile time: its dispatches, the scratch tensors they bind
/// (which must live as long as the plan), and the groupings by id that the plan must
/// refresh whenever the u32 input at the given position is fed.
#[derive(Default)]
pub(crate) struct Recorded {
    pub dispatches: Vec<Dispatch>,
    pub scratch: Vec<Tensor>,
    pub groupings: Vec<(usize, GroupedPositions)>,
}

/// An op's operands as compile hands them to `record`.
pub(crate) enum Operand {
    F32(Tensor),
    U32(Indices),
}

impl Operand {
    fn f32(&self) -> &Tensor {
        match self {
            Operand::F32(t) => t,
            Operand::U32(_) => unreachable!("the shape rule admits f32 here"),
        }
    }

    fn u32(&self) -> &Indices {
        match self {
            Operand::U32(i) => i,
            Operand::F32(_) => unreachable!("the shape rule admits u32 here"),
        }
    }
}

type Shaped = (Vec<usize>, DType);

impl Op {
    pub fn name(&self) -> &'static str {
        match self {
            Op::MatMul { .. } => "matmul",
            Op::Unary(_) => "unary",
            Op::Binary(_) => "binary",
            Op::Dropout { .. } => "dropout",
            Op::Reduce { .. } => "reduce",
            Op::SumTo { .. } => "sum_to",
            Op::BroadcastTo { .. } => "broadcast_to",
            Op::Reshape { .. } => "reshape",
            Op::Permute { .. } => "permute",
            Op::Softmax { .. } => "softmax",
            Op::SoftmaxGrad { .. } => "softmax_grad",
            Op::CrossEntropy { .. } => "cross_entropy",
            Op::LayerNorm { .. } => "layer_norm",
            Op::LayerNormGrad => "layer_norm_grad",
            Op::Slice { .. } => "slice",
            Op::SliceGrad { .. } => "slice_grad",
            Op::Concat { .. } => "concat",
            Op::Gather { .. } => "gather",
            Op::GatherGrad { .. } => "gather_grad",
            Op::Conv { layout, .. } => layout.name(),
            Op::ConvInputGrad { .. } => "conv_input_grad",
            Op::ConvWeightGrad { .. } => "conv_weight_grad",
            Op::ConvBiasGrad => "conv_bias_grad",
            Op::MaxPool1d { .. } => "max_pool1d",
            Op::MaxPool1dGrad { .. } => "max_pool1d_grad",
            Op::MaxOverTime => "max_over_time",
            Op::MaxOverTimeGrad { .. } => "max_over_time_grad",
            Op::Attention { .. } => "attention",
            Op::AttentionGrad { .. } => "attention_grad",
            Op::FusedAttentionGrad { .. } => "fused_attention_grad",
            Op::Recurrent { .. } => "recurrent",
            Op::RecurrentGrad { .. } => "recurrent_grad",
        }
    }

    /// Which outputs carry a gradient back (the saved gradient of `CrossEntropy` does not).
    pub(crate) fn differentiable_outputs(&self) -> Vec<bool> {
        match self {
            Op::CrossEntropy { .. } => vec![true, false],
            Op::LayerNorm { .. } => vec![true, false, false],
            Op::LayerNormGrad => vec![false, false, false],
            Op::MaxOverTime | Op::MaxPool1d { .. } => vec![true, false],
            Op::Attention { .. } => vec![true, false],
            Op::AttentionGrad { .. } | Op::FusedAttentionGrad { .. } => vec![false, false, false],
            Op::Recurrent { kind, .. } => {
                let mut differentiable = vec![true];
                if *kind == CellKind::Lstm {
                    differentiable.push(true);
                }
                differentiable.push(false);
                differentiable
            }
            Op::RecurrentGrad { .. } => vec![false; 5],
            _ => vec![true],
        }
    }

    /// Whether the output shares its input's buffer instead of having its own.
    pub(crate) fn is_alias(&self) -> bool {
        matches!(self, Op::Reshape { .. })
    }

    /// The shape rule: the outputs' shapes and types, or an error naming the op and shapes.
    pub(crate) fn infer(&self, inputs: &[(&[usize], DType)]) -> Result<Vec<Shaped>> {
        let op = self.name();
        let expected_inputs = match self {
            Op::MatMul { bias, fused, .. } => {
                2 + usize::from(*bias) + usize::from(*fused == MatMulFusion::ReluGrad)
            }
            Op::Conv { bias, .. } => 2 + usize::from(*bias),
            Op::Binary(_)
            | Op::Dropout { .. }
            | Op::SoftmaxGrad { .. }
            | Op::CrossEntropy { .. }
            | Op::Gather { .. }
            | Op::GatherGrad { .. }
            | Op::ConvInputGrad { .. }
            | Op::ConvWeightGrad { .. }
            | Op::MaxOverTimeGrad { .. }
            | Op::MaxPool1dGrad { .. } => 2,
            Op::LayerNorm { .. } => 3,
            Op::LayerNormGrad => 5,
            Op::Concat { .. } => inputs.len().max(1),
            Op::Attention {
                key_lengths, mask, ..
            } => 3 + usize::from(*key_lengths) + usize::from(mask.is_some()),
            Op::AttentionGrad { .. } => 5,
            Op::FusedAttentionGrad {
                key_lengths, mask, ..
            } => 6 + usize::from(*key_lengths) + usize::from(mask.is_some()),
            Op::Recurrent { kind, lengths, .. } => {
                4 + usize::from(*kind == CellKind::Lstm) + usize::from(*lengths)
            }
            Op::RecurrentGrad {
                kind,
                dstates,
                dcells,
                lengths,
                ..
            } => {
                3 + usize::from(*dstates)
                    + usize::from(*dcells)
                    + usize::from(*kind == CellKind::Lstm)
                    + usize::from(*lengths)
            }
            _ => 1,
        };
        if inputs.len() != expected_inputs {
            return Err(Error::invalid(
                op,
                format!("takes {expected_inputs} inputs, got {}", inputs.len()),
            ));
        }
        for (i, (shape, dtype)) in inputs.iter().enumerate() {
            let wants = match self {
                Op::CrossEntropy { .. }
                | Op::Dropout { .. }
                | Op::Gather { .. }
                | Op::GatherGrad { .. }
                | Op::MaxOverTimeGrad { .. }
                | Op::MaxPool1dGrad { .. }
                    if i == 1 =>
                {
                    DType::U32
                }
                Op::Attention {
                    key_lengths: true, ..
                } if i == 3 => DType::U32,
                Op::FusedAttentionGrad {
                    key_lengths: true, ..
                } if i == 6 => DType::U32,
                Op::Recurrent { lengths: true, .. } | Op::RecurrentGrad { lengths: true, .. }
                    if i == inputs.len() - 1 =>
                {
                    DType::U32
                }
                _ => DType::F32,
            };
            if *dtype != wants {
                return Err(Error::invalid(
                    op,
                    format!("input {i} (shape {shape:?}) is {dtype:?}, expected {wants:?}"),
                ));
            }
        }
        let x = inputs[0].0;
        let f32 = |shape: Vec<usize>| Ok(vec![(shape, DType::F32)]);
        match self {
            Op::MatMul {
                trans_a,
                trans_b,
                bias,
                ..
            } => {
                let b = inputs[1].0;
                if x.len() < 2 || b.len() < 2 {
                    return Err(mismatch(
                        op,
                        x,
                        b,
                        "both operands need at least 2 axes: [batch…, rows, columns]".into(),
                    ));
                }
                let (a_batch, a_matrix) = x.split_at(x.len() - 2);
                let (b_batch, b_matrix) = b.split_at(b.len() - 2);
                let batch = if b_batch.is_empty() || a_batch == b_batch {
                    a_batch
                } else if a_batch.is_empty() {
                    b_batch
                } else {
                    return Err(mismatch(
                        op,
                        x,
                        b,
                        "the batch axes must be equal, or one operand a matrix shared by \
                         every batch"
                            .into(),
                    ));
                };
                let (m, k) = if *trans_a {
                    (a_matrix[1], a_matrix[0])
                } else {
                    (a_matrix[0], a_matrix[1])
                };
                let (k_b, n) = if *trans_b {
                    (b_matrix[1], b_matrix[0])
                } else {
                    (b_matrix[0], b_matrix[1])
                };
                if k != k_b {
                    return Err(mismatch(
                        op,
                        x,
                        b,
                        format!("the inner dimensions differ: {k} and {k_b}"),
                    ));
                }
                let mut out = batch.to_vec();
                out.extend([m, n]);
                if *bias && inputs[2].0 != [n] {
                    return Err(mismatch(
                        op,
                        inputs[2].0,
                        &out,
                        format!("the bias must be [{n}], one value per output column"),
                    ));
                }
                f32(out)
            }
            Op::Unary(_) | Op::Softmax { .. } => {
                if matches!(self, Op::Softmax { .. }) && x.last().is_none_or(|&n| n == 0) {
                    return Err(Error::ZeroSized {
                        op,
                        shape: x.to_vec(),
                        why: "softmax needs a last axis with at least one element",
                    });
                }
                f32(x.to_vec())
            }
            Op::Binary(binary) => {
                let b = inputs[1].0;
                match binary {
                    Binary::Add | Binary::Sub | Binary::Mul | Binary::Div => {
                        f32(broadcast_shapes(op, x, b)?)
                    }
                    _ if x == b => f32(x.to_vec()),
                    _ => Err(mismatch(
                        op,
                        x,
                        b,
                        "a derivative takes two values of one shape".into(),
                    )),
                }
            }
            Op::Dropout { .. } => {
                let seed = inputs[1].0;
                if seed != [1] {
                    return Err(mismatch(
                        op,
                        x,
                        seed,
                        "the seed must be one u32, shape [1]".into(),
                    ));
                }
                f32(x.to_vec())
            }
            Op::SoftmaxGrad { .. } => {
                let dy = inputs[1].0;
                if x != dy {
                    return Err(mismatch(op, x, dy, "y and dy must have one shape".into()));
                }
                f32(x.to_vec())
            }
            Op::Reduce {
                op: reduce,
                axis,
                keep_dim,
            } => {
                if *reduce == Reduce::Mean && x[*axis] == 0 {
                    return Err(Error::ZeroSized {
                        op,
                        shape: x.to_vec(),
                        why: "the mean over an empty axis is undefined",
                    });
                }
                let mut shape = x.to_vec();
                if *keep_dim {
                    shape[*axis] = 1;
                } else {
                    shape.remove(*axis);
                }
                f32(shape)
            }
            Op::SumTo { shape } => {
                if shape.len() > x.len() || broadcast_shapes(op, shape, x)? != x {
                    return Err(mismatch(
                        op,
                        x,
                        shape,
                        "the target must broadcast to the value's shape".into(),
                    ));
                }
                check_rank(op, x)?;
                f32(shape.clone())
            }
            Op::BroadcastTo { shape } => {
                if broadcast_shapes(op, x, shape)? != *shape {
                    return Err(mismatch(
                        op,
                        x,
                        shape,
                        "the value must broadcast to the target".into(),
                    ));
                }
                f32(shape.clone())
            }
            Op::Reshape { shape } => {
                if numel(shape)? != numel(x)? {
                    return Err(mismatch(
                        op,
                        x,
                        shape,
                        "both shapes must hold as many elements".into(),
                    ));
                }
                f32(shape.clone())
            }
            Op::Permute { perm } => {
                check_rank(op, x)?;
                let mut seen = vec![false; x.len()];
                let valid = perm.len() == x.len()
                    && perm
                        .iter()
                        .all(|&p| p < x.len() && !std::mem::replace(&mut seen[p], true));
                if !valid {
                    return Err(Error::invalid(
                        op,
                        format!("{perm:?} is not a permutation of the axes of shape {x:?}"),
                    ));
                }
                f32(perm.iter().map(|&p| x[p]).collect())
            }
            Op::LayerNorm { eps } => {
                let d = x.last().copied().unwrap_or(0);
                if d == 0 || !(*eps > 0.0 && eps.is_finite()) {
                    return Err(Error::invalid(
                        op,
                        format!("needs a last axis of at least one element and eps > 0, got shape {x:?} and eps {eps}"),
                    ));
                }
                for (what, shape) in [("gain", inputs[1].0), ("bias", inputs[2].0)] {
                    if shape != [d] {
                        return Err(mismatch(
                            op,
                            x,
                            shape,
                            format!("the {what} must be [{d}], one value per feature"),
                        ));
                    }
                }
                let mut stats = x.to_vec();
                *stats.last_mut().expect("rank ≥ 1") = 1;
                Ok(vec![
                    (x.to_vec(), DType::F32),
                    (stats.clone(), DType::F32),
                    (stats, DType::F32),
                ])
            }
            Op::LayerNormGrad => {
                let d = x.last().copied().unwrap_or(0);
                Ok(vec![
                    (x.to_vec(), DType::F32),
                    (vec![d], DType::F32),
                    (vec![d], DType::F32),
                ])
            }
            Op::Slice { axis, start, end } => {
                if *axis >= x.len() || start > end || *end > x[*axis] {
                    return Err(Error::invalid(
                        op,
                        format!("{start}..{end} of axis {axis} is outside shape {x:?}"),
                    ));
                }
                let mut shape = x.to_vec();
                shape[*axis] = end - start;
                f32(shape)
            }
            Op::SliceGrad { axis, start, len } => {
                let mut shape = x.to_vec();
                shape[*axis] = *len;
                if start + x[*axis] > *len {
                    return Err(mismatch(
                        op,
                        x,
                        &shape,
                        "the slice must lie within the input".into(),
                    ));
                }
                f32(shape)
            }
            Op::Concat { axis } => {
                let mut shape = x.to_vec();
                if *axis >= x.len() {
                    return Err(Error::invalid(
                        op,
                        format!("axis {axis} is outside shape {x:?}"),
                    ));
                }
                shape[*axis] = 0;
                for (part, _) in inputs {
                    let agree = part.len() == x.len()
                        && (0..x.len()).all(|a| a == *axis || part[a] == x[a]);
                    if !agree {
                        return Err(mismatch(
                            op,
                            x,
                            part,
                            format!("every axis but the concatenated axis {axis} must agree"),
                        ));
                    }
                    shape[*axis] += part[*axis];
                }
                f32(shape)
            }
            Op::Gather { axis } => {
                let ids = inputs[1].0;
                if *axis >= x.len() {
                    return Err(mismatch(
                        op,
                        x,
                        ids,
                        format!("axis {axis} is outside the data's shape"),
                    ));
                }
                f32(gather_shape(x, *axis, ids))
            }
            Op::GatherGrad { axis, axis_len } => {
                let ids = inputs[1].0;
                let gathered = *axis..axis + ids.len();
                if x.len() < gathered.end || x[gathered.clone()] != *ids {
                    return Err(mismatch(
                        op,
                        x,
                        ids,
                        format!(
                            "the gradient must be data.shape[..{axis}] + ids.shape + \
                             data.shape[{axis} + 1..]"
                        ),
                    ));
                }
                f32([&x[..*axis], &[*axis_len], &x[gathered.end..]].concat())
            }
            Op::CrossEntropy { .. } => {
                let targets = inputs[1].0;
                if x.len() != 2 || targets != [x[0]] || x[1] == 0 {
                    return Err(mismatch(
                        op,
                        x,
                        targets,
                        "logits must be [N, C] with C > 0 and targets [N]".into(),
                    ));
                }
                Ok(vec![(vec![], DType::F32), (x.to_vec(), DType::F32)])
            }
            Op::Conv {
                layout,
                options,
                bias,
            } => {
                let weight = inputs[1].0;
                let geometry = conv_geometry(op, *layout, x, weight, *options)?;
                let out_channels = geometry.out_channels;
                if *bias && inputs[2].0 != [out_channels] {
                    return Err(mismatch(
                        op,
                        inputs[2].0,
                        weight,
                        format!("the bias must be [{out_channels}], one value per output channel"),
                    ));
                }
                f32(conv_output_shape(x.len(), &geometry))
            }
            Op::ConvInputGrad { options, size } => {
                let (dy, weight) = (x, inputs[1].0);
                let mut x_shape = vec![
                    dy.first().copied().unwrap_or(0),
                    weight.get(1).copied().unwrap_or(0),
                ];
                x_shape.extend(size);
                let geometry = ConvGeometry::new(op, &x_shape, weight, *options)?;
                check_conv_dy(op, &geometry, dy)?;
                f32(x_shape)
            }
            Op::ConvWeightGrad { options, kernel } => {
                let dy = inputs[1].0;
                let mut weight = vec![
                    dy.get(1).copied().unwrap_or(0),
                    x.get(1).copied().unwrap_or(0),
                ];
                weight.extend(kernel);
                let geometry = ConvGeometry::new(op, x, &weight, *options)?;
                check_conv_dy(op, &geometry, dy)?;
                f32(weight)
            }
            Op::ConvBiasGrad => {
                let geometry = bias_grad_geometry(op, x)?;
                f32(vec![geometry.out_channels])
            }
            Op::MaxOverTime => {
                let &[n, c, len] = x else {
                    return Err(Error::invalid(
                        op,
                        format!("the input must be [N, C, L] (rank 3), got {x:?}"),
                    ));
                };
                if len == 0 {
                    return Err(Error::ZeroSized {
                        op,
                        shape: x.to_vec(),
                        why: "the maximum over no time steps has no value and no position",
                    });
                }
                Ok(vec![(vec![n, c], DType::F32), (vec![n, c], DType::U32)])
            }
            Op::MaxOverTimeGrad { len } => {
                let positions = inputs[1].0;
                if x.len() != 2 || positions != x || *len == 0 {
                    return Err(mismatch(
                        op,
                        x,
                        positions,
                        format!(
                            "dy and the positions must be one [N, C] shape, over {len} > 0 steps"
                        ),
                    ));
                }
                f32(vec![x[0], x[1], *len])
            }
            Op::MaxPool1d { options } => {
                let &[n, c, len] = x else {
                    return Err(Error::invalid(
                        op,
                        format!("the input must be [N, C, L] (rank 3), got {x:?}"),
                    ));
                };
                let pooled = vec![n, c, options.out_len(op, len)?];
                Ok(vec![(pooled.clone(), DType::F32), (pooled, DType::U32)])
            }
            Op::MaxPool1dGrad { options, len } => {
                let positions = inputs[1].0;
                let out_len = options.out_len(op, *len)?;
                if x.len() != 3 || positions != x || x[2] != out_len {
                    return Err(mismatch(
                        op,
                        x,
                        positions,
                        format!(
                            "dy and the positions must be one [N, C, {out_len}] shape: {len} \
                             steps pool to {out_len} with {options:?}"
                        ),
                    ));
                }
                f32(vec![x[0], x[1], *len])
            }
            Op::Attention {
                settings,
                key_lengths,
                mask,
                variant,
            } => {
                let dims = AttentionDims::from_shapes(x, inputs[1].0, inputs[2].0)?;
                check_attention_masks(op, &dims, settings, *key_lengths, *mask, &inputs[3..])?;
                let saved = match variant {
                    AttentionVariant::Unfused => dims.scores_shape().to_vec(),
                    AttentionVariant::Fused => vec![dims.batch, dims.heads, dims.q_len],
                };
                Ok(vec![
                    (dims.output_shape().to_vec(), DType::F32),
                    (saved, DType::F32),
                ])
            }
            Op::FusedAttentionGrad {
                settings,
                key_lengths,
                mask,
            } => {
                let (k, v) = (inputs[1].0, inputs[2].0);
                let dims = AttentionDims::from_shapes(x, k, v)?;
                check_attention_masks(op, &dims, settings, *key_lengths, *mask, &inputs[6..])?;
                let (output, log_sum_exp, dy) = (inputs[3].0, inputs[4].0, inputs[5].0);
                let rows = [dims.batch, dims.heads, dims.q_len];
                if output != dims.output_shape() || dy != output || log_sum_exp != rows {
                    return Err(mismatch(
                        op,
                        output,
                        log_sum_exp,
                        format!(
                            "O and dO must be {:?} and the log-sum-exp {rows:?}",
                            dims.output_shape()
                        ),
                    ));
                }
                Ok([x, k, v]
                    .into_iter()
                    .map(|shape| (shape.to_vec(), DType::F32))
                    .collect())
            }
            Op::AttentionGrad { .. } => {
                let (k, v) = (inputs[1].0, inputs[2].0);
                let dims = AttentionDims::from_shapes(x, k, v)?;
                let (probs, dy) = (inputs[3].0, inputs[4].0);
                if probs != dims.scores_shape() || dy != dims.output_shape() {
                    return Err(mismatch(
                        op,
                        probs,
                        dy,
                        format!(
                            "P and dO must be {:?} and {:?}",
                            dims.scores_shape(),
                            dims.output_shape()
                        ),
                    ));
                }
                Ok([x, k, v]
                    .into_iter()
                    .map(|shape| (shape.to_vec(), DType::F32))
                    .collect())
            }
            Op::Recurrent { kind, lengths, .. } => {
                let (r, r_bias, h0) = (inputs[1].0, inputs[2].0, inputs[3].0);
                let &[steps, batch, width] = x else {
                    return Err(Error::invalid(
                        op,
                        format!("gx must be [T, B, G·H] (rank 3), got {x:?}"),
                    ));
                };
                let &[hidden, _] = r else {
                    return Err(mismatch(op, x, r, "r must be [H, G·H]".into()));
                };
                let gated = kind.gates() * hidden;
                let expected = format!(
                    "{} gates of H = {hidden}: gx [T, B, {gated}], r [{hidden}, {gated}], \
                     r_bias [{gated}], h0 [B, {hidden}]",
                    kind.name()
                );
                if width != gated || r != [hidden, gated] || r_bias != [gated] {
                    return Err(mismatch(op, x, r, expected));
                }
                let mut states = vec![h0];
                if *kind == CellKind::Lstm {
                    states.push(inputs[4].0);
                }
                for state in states {
                    if state != [batch, hidden] {
                        return Err(mismatch(op, x, state, expected.clone()));
                    }
                }
                if *lengths && inputs[inputs.len() - 1].0 != [batch] {
                    return Err(mismatch(
                        op,
                        x,
                        inputs[inputs.len() - 1].0,
                        format!("the lengths must be [{batch}], one per batch item"),
                    ));
                }
                if steps == 0 || batch == 0 || hidden == 0 {
                    return Err(Error::ZeroSized {
                        op,
                        shape: x.to_vec(),
                        why: "a recurrent layer needs at least one step, batch item and unit",
                    });
                }
                let mut outputs = vec![(vec![steps + 1, batch, hidden], DType::F32)];
                if *kind == CellKind::Lstm {
                    outputs.push((vec![steps + 1, batch, hidden], DType::F32));
                }
                outputs.push((vec![steps, batch, kind.saved() * hidden], DType::F32));
                Ok(outputs)
            }
            Op::RecurrentGrad {
                kind,
                dstates,
                dcells,
                ..
            } => {
                let lstm = *kind == CellKind::Lstm;
                let first = usize::from(*dstates) + usize::from(*dcells);
                let states = inputs[first].0;
                let r = inputs[first + 2 + usize::from(lstm)].0;
                let &[slots, batch, hidden] = states else {
                    return Err(Error::invalid(
                        op,
                        format!("the states must be [T+1, B, H], got {states:?}"),
                    ));
                };
                let gated = kind.gates() * hidden;
                let mut outputs = vec![
                    (vec![slots - 1, batch, gated], DType::F32),
                    (r.to_vec(), DType::F32),
                    (vec![gated], DType::F32),
                    (vec![batch, hidden], DType::F32),
                ];
                if lstm {
                    outputs.push((vec![batch, hidden], DType::F32));
                }
                Ok(outputs)
            }
        }
    }

    /// The backward rule: given the gradients of the outputs (None where no gradient flows),
    /// adds the nodes that compute the gradient of each input (None where none is needed).
    pub(crate) fn backward(
        &self,
        g: &mut Graph,
        inputs: &[Var],
        outputs: &[Var],
        grads: &[Option<Var>],
    ) -> Result<Vec<Option<Var>>> {
        if let Op::Recurrent {
            kind,
            reverse,
            lengths,
        } = self
        {
            return recurrent_backward(g, (*kind, *reverse, *lengths), inputs, outputs, grads);
        }
        let Some(dy) = grads[0] else {
            return Ok(vec![None; inputs.len()]);
        };
        let y = outputs[0];
        let x = inputs[0];
        let x_shape = g.shape(x).to_vec();
        Ok(match self {
            Op::MatMul {
                trans_a,
                trans_b,
                bias,
                fused,
            } => {
                // With Ā = op(A), B̄ = op(B): dĀ = dC·B̄ᵀ and dB̄ = Āᵀ·dC, transposed back
                // where A or B was, batch by batch. An operand shared by every batch gets the
                // sum of its per-batch gradients. A fused ReLU first masks dy where its
                // output is positive (no gradient reaches a fused gradient's mask, which
                // is constant but at 0).
                let dy = match fused {
                    MatMulFusion::Plain => dy,
                    MatMulFusion::Relu => g.zip(y, dy, Binary::ReluGrad)?,
                    MatMulFusion::ReluGrad => {
                        g.zip(inputs[inputs.len() - 1], dy, Binary::ReluGrad)?
                    }
                };
                let (a, b) = (inputs[0], inputs[1]);
                let y_shape = g.shape(y).to_vec();
                let n = y_shape[y_shape.len() - 1];
                let rows = y_shape[..y_shape.len() - 1].iter().product();
                let batched = y_shape.len() > 2;
                let a_shared = batched && x_shape.len() == 2;
                let b_shared = batched && g.shape(b).len() == 2;
                // Σ_b A_bᵀ·dC_b is one product of A and dC seen as [batches·M, K] and
                // [batches·M, N] (free reshapes) when A is not transposed.
                let (a_rows, dy_rows) = if b_shared && !*trans_a {
                    let k = x_shape[x_shape.len() - 1];
                    (g.reshape(a, &[rows, k])?, g.reshape(dy, &[rows, n])?)
                } else {
                    (a, dy)
                };
                let da = if *trans_a {
                    g.gemm(b, dy, *trans_b, true, None)?
                } else if !*trans_b
                    && g.gpu().is_cpu_like()
                    && !multiplies_by_transposed_in_place(g, dy, b)
                {
                    // dy·Bᵀ with B transposed once by a copy: the blocked kernels of a CPU
                    // adapter multiply by a row-major B several times faster than by a
                    // transposed one (strided loads across lanes), far more than the copy
                    // costs. The subgroup kernel reads a transposed B as fast.
                    let b_t = g.transpose(b)?;
                    g.gemm(dy, b_t, false, false, None)?
                } else {
                    g.gemm(dy, b, false, !*trans_b, None)?
                };
                let db = if *trans_b {
                    g.gemm(dy_rows, a_rows, true, *trans_a, None)?
                } else {
                    g.gemm(a_rows, dy_rows, !*trans_a, false, None)?
                };
                let da = if a_shared { sum_batches(g, da)? } else { da };
                let db = if b_shared && *trans_a {
                    sum_batches(g, db)?
                } else {
                    db
                };
                let mut grads = vec![Some(da), Some(db)];
                if *bias {
                    let dy_rows = g.reshape(dy, &[rows, n])?;
                    grads.push(Some(g.sum(dy_rows, 0, false)?));
                }
                if *fused == MatMulFusion::ReluGrad {
                    grads.push(None);
                }
                grads
            }
            Op::Unary(f) => vec![Some(match f {
                Unary::Tanh => g.zip(y, dy, Binary::TanhGrad)?,
                // From the output (y > 0 exactly where x > 0), as a ReLU fused into a
                // matmul must: its input is never stored.
                Unary::Relu => g.zip(y, dy, Binary::ReluGrad)?,
                Unary::Sigmoid => g.zip(y, dy, Binary::SigmoidGrad)?,
                Unary::Exp => g.mul(dy, y)?,
                Unary::Log => g.div(dy, x)?,
                Unary::Neg => g.map(dy, Unary::Neg)?,
                Unary::Scale(alpha) => g.scale(dy, *alpha)?,
            })],
            Op::Binary(binary) => {
                let b = inputs[1];
                let b_shape = g.shape(b).to_vec();
                let (da, db) = match binary {
                    Binary::Add => (dy, dy),
                    Binary::Sub => (dy, g.map(dy, Unary::Neg)?),
                    Binary::Mul => (g.mul(dy, b)?, g.mul(dy, x)?),
                    Binary::Div => {
                        // d(a/b)/db = −a/b² = −(a/b)/b
                        let dy_y = g.mul(dy, y)?;
                        let dy_y_b = g.div(dy_y, b)?;
                        (g.div(dy, b)?, g.map(dy_y_b, Unary::Neg)?)
                    }
                    _ => {
                        return Err(no_gradient(
                            "a derivative op (second derivatives are not supported)",
                        ))
                    }
                };
                vec![Some(g.sum_to(da, &x_shape)?), Some(g.sum_to(db, &b_shape)?)]
            }
            Op::Dropout { .. } => vec![Some(g.push_one(self.clone(), &[dy, inputs[1]])?), None],
            Op::Reduce {
                op,
                axis,
                keep_dim: _,
            } => {
                let mut kept = x_shape.clone();
                kept[*axis] = 1;
                let dy_kept = g.reshape(dy, &kept)?;
                let spread = g.broadcast_to(dy_kept, &x_shape)?;
                vec![Some(match op {
                    Reduce::Sum => spread,
                    Reduce::Mean => g.scale(spread, 1.0 / x_shape[*axis] as f32)?,
                    Reduce::Max => return Err(no_gradient("max (it picks, it does not compute)")),
                })]
            }
            Op::SumTo { .. } => vec![Some(g.broadcast_to(dy, &x_shape)?)],
            Op::BroadcastTo { .. } => vec![Some(g.sum_to(dy, &x_shape)?)],
            Op::Reshape { .. } => vec![Some(g.reshape(dy, &x_shape)?)],
            Op::Permute { perm } => {
                let mut inverse = vec![0; perm.len()];
                for (i, &p) in perm.iter().enumerate() {
                    inverse[p] = i;
                }
                vec![Some(g.permute(dy, &inverse)?)]
            }
            Op::Softmax { log } => {
                vec![Some(g.push(Op::SoftmaxGrad { log: *log }, &[y, dy])?[0])]
            }
            Op::SoftmaxGrad { .. } => {
                return Err(no_gradient(
                    "softmax_grad (second derivatives are not supported)",
                ))
            }
            Op::LayerNorm { .. } => {
                let gain = inputs[1];
                let (mean, rstd) = (outputs[1], outputs[2]);
                let grads = g.push(Op::LayerNormGrad, &[x, dy, gain, mean, rstd])?;
                grads.into_iter().map(Some).collect()
            }
            Op::LayerNormGrad => {
                return Err(no_gradient(
                    "layer_norm_grad (second derivatives are not supported)",
                ))
            }
            Op::Recurrent { .. } | Op::RecurrentGrad { .. } => {
                return Err(no_gradient(
                    "recurrent_grad (second derivatives are not supported)",
                ))
            }
            Op::Slice { axis, start, .. } => vec![Some(g.push_one(
                Op::SliceGrad {
                    axis: *axis,
                    start: *start,
                    len: x_shape[*axis],
                },
                &[dy],
            )?)],
            Op::SliceGrad { axis, start, .. } => {
                // Linear: its gradient is the slice it placed.
                let len = x_shape[*axis];
                vec![Some(g.slice(
                    dy,
                    *axis as isize,
                    *start as isize,
                    (start + len) as isize,
                )?)]
            }
            Op::Concat { axis } => {
                let mut offset = 0;
                let mut grads = Vec::with_capacity(inputs.len());
                for &part in inputs {
                    let len = g.shape(part)[*axis];
                    grads.push(Some(g.slice(
                        dy,
                        *axis as isize,
                        offset as isize,
                        (offset + len) as isize,
                    )?));
                    offset += len;
                }
                grads
            }
            Op::Gather { axis } => {
                let grad = Op::GatherGrad {
                    axis: *axis,
                    axis_len: x_shape[*axis],
                };
                vec![Some(g.push_one(grad, &[dy, inputs[1]])?), None]
            }
            Op::GatherGrad { .. } => {
                return Err(no_gradient(
                    "gather_grad (second derivatives are not supported)",
                ))
            }
            Op::Attention {
                settings,
                key_lengths,
                mask,
                variant,
            } => {
                let (k, v, saved) = (inputs[1], inputs[2], outputs[1]);
                let grads = match variant {
                    AttentionVariant::Unfused => {
                        let grad = Op::AttentionGrad {
                            scale: settings.scale,
                            softcap: settings.softcap,
                        };
                        g.push(grad, &[x, k, v, saved, dy])?
                    }
                    AttentionVariant::Fused => {
                        let grad = Op::FusedAttentionGrad {
                            settings: *settings,
                            key_lengths: *key_lengths,
                            mask: *mask,
                        };
                        let mut operands = vec![x, k, v, outputs[0], saved, dy];
                        operands.extend_from_slice(&inputs[3..]);
                        g.push(grad, &operands)?
                    }
                };
                // The key lengths and the mask, if any, have no gradient.
                let mut grads: Vec<Option<Var>> = grads.into_iter().map(Some).collect();
                grads.resize(inputs.len(), None);
                grads
            }
            Op::AttentionGrad { .. } | Op::FusedAttentionGrad { .. } => {
                return Err(no_gradient(&format!(
                    "{} (second derivatives are not supported)",
                    self.name()
                )))
            }
            Op::CrossEntropy { .. } => {
                // The kernel left dloss/dlogits in output 1; scale it by the incoming dloss.
                let saved = outputs[1];
                vec![Some(g.mul(saved, dy)?), None]
            }
            Op::Conv { options, bias, .. } => {
                // One op per gradient, so that compile drops those nobody needs (the input's,
                // when the input is data).
                let weight = inputs[1];
                let size = x_shape[2..].to_vec();
                let kernel = g.shape(weight)[2..].to_vec();
                let options = *options;
                let mut grads = vec![
                    Some(g.push(Op::ConvInputGrad { options, size }, &[dy, weight])?[0]),
                    Some(g.push(Op::ConvWeightGrad { options, kernel }, &[x, dy])?[0]),
                ];
                if *bias {
                    grads.push(Some(g.push(Op::ConvBiasGrad, &[dy])?[0]));
                }
                grads
            }
            Op::MaxOverTime => {
                let positions = outputs[1];
                let len = x_shape[2];
                vec![Some(
                    g.push(Op::MaxOverTimeGrad { len }, &[dy, positions])?[0],
                )]
            }
            Op::MaxPool1d { options } => {
                let positions = outputs[1];
                let grad = Op::MaxPool1dGrad {
                    options: *options,
                    len: x_shape[2],
                };
                vec![Some(g.push(grad, &[dy, positions])?[0])]
            }
            Op::ConvInputGrad { .. }
            | Op::ConvWeightGrad { .. }
            | Op::ConvBiasGrad
            | Op::MaxOverTimeGrad { .. }
            | Op::MaxPool1dGrad { .. } => {
                return Err(no_gradient(&format!(
                    "{} (second derivatives are not supported)",
                    self.name()
                )))
            }
        })
    }

    /// Records the op's kernels over its operands (views of the plan's buffers).
    pub(crate) fn record(&self, inputs: &[Operand], outputs: &[Operand]) -> Result<Recorded> {
        let mut recorded = Recorded::default();
        let y = outputs[0].f32();
        // Attention's outputs are not empty together (P remains when Dv = 0; dK and dV are
        // zeros when Lq = 0): its launchers skip the empty products themselves.
        let skips_when_y_is_empty = !matches!(
            self,
            Op::Attention { .. } | Op::AttentionGrad { .. } | Op::FusedAttentionGrad { .. }
        );
        if y.numel() == 0 && matches!(self, Op::LayerNormGrad) {
            // No rows: dx is empty, but dgain and dbias are sums over no rows.
            return zeros_record(&[outputs[1].f32(), outputs[2].f32()]);
        }
        if (y.numel() == 0 && skips_when_y_is_empty) || self.is_alias() {
            return Ok(recorded);
        }
        let x = inputs[0].f32();
        let gpu = y.gpu();
        let dispatch = match self {
            Op::MatMul {
                trans_a,
                trans_b,
                bias,
                fused,
            } => {
                let (a, b) = (x, inputs[1].f32());
                let rank = y.rank();
                let (m, n) = (y.shape()[rank - 2], y.shape()[rank - 1]);
                let k = a.shape()[a.rank() - if *trans_a { 2 } else { 1 }];
                // A rank-2 operand is shared by every batch: it does not move between them.
                let batch_stride = |t: &Tensor, size| if t.rank() > 2 { size } else { 0 };
                let batch = y.shape()[..rank - 2].iter().product();
                let shape = GemmShape {
                    a_batch_stride: batch_stride(a, m * k),
                    b_batch_stride: batch_stride(b, k * n),
                    ..GemmShape::contiguous(batch, (m, n, k), *trans_a, *trans_b)
                };
                let operands = GemmOperands {
                    a,
                    b,
                    c: None,
                    bias: bias.then(|| inputs[2].f32()),
                    out: y,
                    epilogue: match fused {
                        MatMulFusion::Plain => Epilogue::Plain,
                        MatMulFusion::Relu => Epilogue::Relu,
                        MatMulFusion::ReluGrad => Epilogue::ReluGrad {
                            relu_output: inputs[inputs.len() - 1].f32(),
                        },
                    },
                };
                gemm_dispatch(
                    &operands,
                    &shape,
                    1.0,
                    0.0,
                    MatmulVariant::choose(gpu, &shape),
                )?
            }
            Op::Unary(f) => unary_dispatch(x, y, *f)?,
            Op::Binary(binary) => binary_dispatch(x, inputs[1].f32(), y, *binary)?,
            Op::Dropout { p, stream } => dropout_dispatch(x, inputs[1].u32(), y, *p, *stream)?,
            Op::Reduce { op, axis, .. } => {
                let (_, n, inner) = crate::kernels::reduce::split_at_axis(x.shape(), *axis);
                reduce_dispatch(x, y, *axis, *op, ReduceVariant::choose(inner, n))?
            }
            Op::SumTo { shape } => return sum_to_record(x, y, shape),
            Op::BroadcastTo { .. } => {
                strided_copy_dispatch(x, y, broadcast_strides(x.shape(), y.shape()))?
            }
            Op::Permute { perm } => {
                let strides = contiguous_strides(x.shape());
                let permuted: Vec<usize> = perm.iter().map(|&p| strides[p]).collect();
                strided_copy_dispatch(x, y, pad_to_rank4(&permuted, 0))?
            }
            Op::Softmax { log } => {
                let axis = x.rank() - 1;
                let variant = SoftmaxVariant::choose(gpu, 1, x.shape()[axis]);
                softmax_dispatch(x, y, axis, softmax_kind(*log), variant)?
            }
            Op::SoftmaxGrad { log } => {
                let axis = x.rank() - 1;
                let variant = SoftmaxVariant::choose(gpu, 1, x.shape()[axis]);
                softmax_backward_dispatch(x, inputs[1].f32(), y, axis, softmax_kind(*log), variant)?
            }
            Op::CrossEntropy { ignore } => {
                return cross_entropy_record(x, inputs[1].u32(), y, outputs[1].f32(), *ignore)
            }
            Op::LayerNorm { eps } => {
                let shape = LayerNormShape::new("layer_norm", x.shape(), -1)?;
                let forward = LayerNormForward {
                    y: y.clone(),
                    mean: outputs[1].f32().clone(),
                    rstd: outputs[2].f32().clone(),
                };
                let variant = LayerNormVariant::choose(gpu, shape.d);
                let (gain, bias) = (inputs[1].f32(), inputs[2].f32());
                layer_norm_dispatch(x, Some(gain), Some(bias), &forward, &shape, *eps, variant)?
            }
            Op::Recurrent {
                kind,
                reverse,
                lengths,
            } => {
                let lstm = *kind == CellKind::Lstm;
                let r = inputs[1].f32();
                let shape = RecurrentShape {
                    kind: *kind,
                    steps: x.shape()[0],
                    batch: x.shape()[1],
                    hidden: r.shape()[0],
                    reverse: *reverse,
                };
                let layer = RecurrentInputs {
                    gx: x,
                    r,
                    r_bias: inputs[2].f32(),
                    h0: inputs[3].f32(),
                    c0: lstm.then(|| inputs[4].f32()),
                    lengths: lengths.then(|| inputs[inputs.len() - 1].u32()),
                    peepholes: None,
                };
                let written = RecurrentOutputs {
                    states: y.clone(),
                    cells: lstm.then(|| outputs[1].f32().clone()),
                    saved: outputs[outputs.len() - 1].f32().clone(),
                };
                let (dispatches, scratch) = recurrent_forward_dispatches(&layer, &written, &shape)?;
                return Ok(Recorded {
                    dispatches,
                    scratch,
                    groupings: Vec::new(),
                });
            }
            Op::RecurrentGrad {
                kind,
                reverse,
                dstates,
                dcells,
                lengths,
            } => {
                let lstm = *kind == CellKind::Lstm;
                let mut next = inputs.iter();
                let mut take = |present: bool| if present { next.next() } else { None };
                let dstates = take(*dstates).map(Operand::f32);
                let dcells = take(*dcells).map(Operand::f32);
                let states = take(true).map(Operand::f32);
                let cells = take(lstm).map(Operand::f32);
                let saved = take(true).map(Operand::f32);
                let r = take(true).map(Operand::f32);
                let lengths = take(*lengths).map(Operand::u32);
                let (Some(states), Some(saved), Some(r)) = (states, saved, r) else {
                    return Err(Error::invalid("recurrent_grad", "missing inputs"));
                };
                let [batch, hidden] = [states.shape()[1], states.shape()[2]];
                let shape = RecurrentShape {
                    kind: *kind,
                    steps: states.shape()[0] - 1,
                    batch,
                    hidden,
                    reverse: *reverse,
                };
                let backward = RecurrentBackwardInputs {
                    dstates,
                    dcells,
                    states,
                    cells,
                    saved,
                    r,
                    lengths,
                };
                let grads = RecurrentGrads {
                    dgx: y.clone(),
                    dr: outputs[1].f32().clone(),
                    dr_bias: outputs[2].f32().clone(),
                    dh0: outputs[3].f32().clone(),
                    dc0: lstm.then(|| outputs[4].f32().clone()),
                };
                let (dispatches, scratch) =
                    recurrent_backward_dispatches(&backward, &grads, &shape)?;
                return Ok(Recorded {
                    dispatches,
                    scratch,
                    groupings: Vec::new(),
                });
            }
            Op::LayerNormGrad => {
                let shape = LayerNormShape::new("layer_norm_grad", x.shape(), -1)?;
                let grads = LayerNormGrads {
                    dx: y.clone(),
                    dgain: outputs[1].f32().clone(),
                    dbias: outputs[2].f32().clone(),
                };
                let [dy, gain, mean, rstd] = [1, 2, 3, 4].map(|i| inputs[i].f32());
                let variant = LayerNormVariant::choose(gpu, shape.d);
                let (dispatches, scratch) = layer_norm_backward_dispatches(
                    x,
                    dy,
                    Some(gain),
                    mean,
                    rstd,
                    &grads,
                    &shape,
                    variant,
                )?;
                return Ok(Recorded {
                    dispatches,
                    scratch,
                    groupings: Vec::new(),
                });
            }
            Op::Slice { axis, start, end } => {
                let region = CopyRegion::slice(x.shape(), *axis, *start, *end);
                region_copy_dispatch(x, y, &region, None)?
            }
            Op::SliceGrad { axis, start, .. } => {
                slice_backward_dispatch(x, y, *axis, *start, None)?
            }
            Op::Concat { axis } => {
                let total = y.shape()[*axis];
                let mut offset = 0;
                for part in inputs {
                    let part = part.f32();
                    if part.numel() > 0 {
                        let region = CopyRegion::into_axis(part.shape(), *axis, offset, total);
                        recorded
                            .dispatches
                            .push(region_copy_dispatch(part, y, &region, None)?);
                    }
                    offset += part.shape()[*axis];
                }
                return Ok(recorded);
            }
            Op::Gather { axis } => gather_dispatch(x, inputs[1].u32(), y, *axis, None)?,
            Op::GatherGrad { axis, axis_len } => {
                let ids = inputs[1].u32();
                let groups = GroupedPositions::with_capacity(gpu, ids.numel(), *axis_len)?;
                if ids.numel() == 0 {
                    // A run need not feed no ids, so group them now (every offset 0, so
                    // dx = 0): the grouping's buffer is this op's alone, nothing overwrites it.
                    groups.update(&[])?;
                }
                let dispatch = gather_backward_dispatch(x, &groups, y, *axis, None)?;
                return Ok(Recorded {
                    dispatches: vec![dispatch],
                    scratch: Vec::new(),
                    groupings: vec![(1, groups)],
                });
            }
            Op::Conv { options, .. } => {
                let weight = inputs[1].f32();
                let geometry = ConvGeometry::new(self.name(), x.shape(), weight.shape(), *options)?;
                // The direct kernel: the eager call's default (see `ConvVariant`).
                let bias = inputs.get(2).map(Operand::f32);
                conv_forward_dispatch(x, weight, bias, y, &geometry)?
            }
            Op::ConvInputGrad { options, .. } => {
                let (dy, weight) = (x, inputs[1].f32());
                let geometry = ConvGeometry::new(self.name(), y.shape(), weight.shape(), *options)?;
                conv_input_grad_dispatch(dy, weight, y, &geometry)?
            }
            Op::ConvWeightGrad { options, .. } => {
                let dy = inputs[1].f32();
                let geometry = ConvGeometry::new(self.name(), x.shape(), y.shape(), *options)?;
                conv_weight_grad_dispatch(x, dy, y, &geometry)?
            }
            Op::ConvBiasGrad => {
                let geometry = bias_grad_geometry(self.name(), x.shape())?;
                conv_bias_grad_dispatch(x, y, &geometry)?
            }
            Op::MaxOverTime => {
                let len = x.shape()[2];
                max_pool_dispatch(x, y, outputs[1].u32(), len, &MaxPool1d::new(len))?
            }
            Op::MaxOverTimeGrad { len } => {
                let positions = inputs[1].u32();
                max_pool_backward_dispatch(x, positions, y, *len, &MaxPool1d::new(*len))?
            }
            Op::MaxPool1d { options } => {
                max_pool_dispatch(x, y, outputs[1].u32(), x.shape()[2], options)?
            }
            Op::MaxPool1dGrad { options, len } => {
                max_pool_backward_dispatch(x, inputs[1].u32(), y, *len, options)?
            }
            Op::Attention {
                settings,
                key_lengths,
                mask,
                variant,
            } => {
                let options = attention_options(settings, *key_lengths, *mask, &inputs[3..]);
                let (k, v) = (inputs[1].f32(), inputs[2].f32());
                let mut recording = Recording::default();
                match variant {
                    AttentionVariant::Unfused => {
                        let forward = AttentionForward {
                            output: y.clone(),
                            probs: outputs[1].f32().clone(),
                        };
                        attention_dispatches_into((x, k, v), &options, &forward, &mut recording)?;
                    }
                    AttentionVariant::Fused => {
                        let forward = FusedAttention {
                            output: y.clone(),
                            log_sum_exp: outputs[1].f32().clone(),
                        };
                        recording.dispatches.extend(fused_attention_dispatch(
                            (x, k, v),
                            &options,
                            &forward,
                        )?);
                    }
                }
                return Ok(recording.into());
            }
            Op::FusedAttentionGrad {
                settings,
                key_lengths,
                mask,
            } => {
                let options = attention_options(settings, *key_lengths, *mask, &inputs[6..]);
                let forward = FusedAttention {
                    output: inputs[3].f32().clone(),
                    log_sum_exp: inputs[4].f32().clone(),
                };
                let grads = AttentionGradients {
                    query: y.clone(),
                    key: outputs[1].f32().clone(),
                    value: outputs[2].f32().clone(),
                };
                let [k, v, dy] = [1, 2, 5].map(|i| inputs[i].f32());
                let mut recording = Recording::default();
                fused_attention_backward_dispatches_into(
                    (x, k, v),
                    &forward,
                    dy,
                    &options,
                    &grads,
                    &mut recording,
                )?;
                return Ok(recording.into());
            }
            Op::AttentionGrad { scale, softcap } => {
                let options = AttentionOptions {
                    settings: AttentionSettings {
                        scale: *scale,
                        softcap: *softcap,
                        ..AttentionSettings::default()
                    },
                    ..AttentionOptions::default()
                };
                let grads = AttentionGradients {
                    query: y.clone(),
                    key: outputs[1].f32().clone(),
                    value: outputs[2].f32().clone(),
                };
                let [k, v, probs, dy] = [1, 2, 3, 4].map(|i| inputs[i].f32());
                let mut recording = Recording::default();
                attention_backward_dispatches_into(
                    (x, k, v),
                    probs,
                    dy,
                    &options,
                    &grads,
                    &mut recording,
                )?;
                return Ok(recording.into());
            }
            Op::Reshape { .. } => unreachable!("aliases record nothing"),
        };
        recorded.dispatches.push(dispatch);
        Ok(recorded)
    }
}

/// Attention's options over a plan's operands: the key lengths and the mask follow the
/// fixed operands in `operands`, in that order, where the op has them.
fn attention_options<'a>(
    settings: &AttentionSettings,
    key_lengths: bool,
    mask: Option<MaskKind>,
    operands: &'a [Operand],
) -> AttentionOptions<'a> {
    AttentionOptions {
        settings: *settings,
        key_lengths: key_lengths.then(|| operands[0].u32()),
        mask: mask.map(|kind| AttentionMask {
            kind,
            values: operands[operands.len() - 1].f32(),
        }),
    }
}

/// Checks attention's settings and its optional operands after Q, K and V (and, for the
/// fused backward, O, the log-sum-exp and dO): the key lengths [B], then a mask that
/// broadcasts to the scores [B, H, Lq, Lk].
fn check_attention_masks(
    op: &'static str,
    dims: &AttentionDims,
    settings: &AttentionSettings,
    key_lengths: bool,
    mask: Option<MaskKind>,
    operands: &[(&[usize], DType)],
) -> Result<()> {
    settings.check()?;
    if key_lengths && operands[0].0 != [dims.batch] {
        return Err(mismatch(
            op,
            operands[0].0,
            &[dims.batch],
            format!("the key lengths must be [{}], one per batch", dims.batch),
        ));
    }
    if mask.is_some() {
        let (mask, scores) = (operands[operands.len() - 1].0, dims.scores_shape());
        if broadcast_shapes(op, mask, &scores).ok().as_deref() != Some(&scores[..]) {
            return Err(mismatch(
                op,
                mask,
                &scores,
                "the mask must broadcast to the scores' shape [B, H, Lq, Lk]".into(),
            ));
        }
    }
    Ok(())
}

impl From<Recording> for Recorded {
    /// An eager call's recording: its intermediates live as long as the plan.
    fn from(recording: Recording) -> Recorded {
        Recorded {
            dispatches: recording.dispatches,
            scratch: recording.temporaries,
            groupings: Vec::new(),
        }
    }
}

/// Whether the rule runs dy·Bᵀ (dy [batch…, M, N], B [batch…, K, N] or [K, N]) with the
/// subgroup kernel, which reads B transposed in place.
fn multiplies_by_transposed_in_place(g: &Graph, dy: Var, b: Var) -> bool {
    let (dy_shape, b_shape) = (g.shape(dy), g.shape(b));
    let (m, k) = (dy_shape[dy_shape.len() - 2], dy_shape[dy_shape.len() - 1]);
    let n = b_shape[b_shape.len() - 2];
    let batch = dy_shape[..dy_shape.len() - 2].iter().product();
    let shape = GemmShape {
        b_batch_stride: if b_shape.len() == 2 { 0 } else { n * k },
        ..GemmShape::contiguous(batch, (m, n, k), false, true)
    };
    MatmulVariant::rule(g.gpu(), &shape) == MatmulVariant::Subgroup
}

/// Sums a gradient [batch…, R, C] over its batch axes: [R, C].
fn sum_batches(g: &mut Graph, grad: Var) -> Result<Var> {
    let shape = g.shape(grad).to_vec();
    let matrix = &shape[shape.len() - 2..];
    let batches = shape[..shape.len() - 2].iter().product();
    let stacked = g.reshape(grad, &[batches, matrix[0], matrix[1]])?;
    g.sum(stacked, 0, false)
}

fn softmax_kind(log: bool) -> SoftmaxKind {
    if log {
        SoftmaxKind::LogSoftmax
    } else {
        SoftmaxKind::Softmax
    }
}

fn no_gradient(what: &str) -> Error {
    Error::invalid("backward", format!("{what} has no gradient"))
}

/// The checked geometry of a convolution of x by a weight of `layout`.
fn conv_geometry(
    op: &'static str,
    layout: ConvLayout,
    x: &[usize],
    weight: &[usize],
    options: Conv2d,
) -> Result<ConvGeometry> {
    if x.len() != layout.rank() || weight.len() != layout.rank() {
        let expected = match layout {
            ConvLayout::Sequence => "the input must be [N, C, L] and the weight [O, C, k]",
            ConvLayout::Image => "the input must be [N, C, H, W] and the weight [O, C, kh, kw]",
        };
        return Err(mismatch(op, x, weight, expected.into()));
    }
    ConvGeometry::new(op, x, weight, options)
}

/// Checks that dy has the shape of the convolution's output (of dy's rank).
fn check_conv_dy(op: &'static str, geometry: &ConvGeometry, dy: &[usize]) -> Result<()> {
    let expected = conv_output_shape(dy.len(), geometry);
    if dy != expected {
        return Err(mismatch(
            op,
            dy,
            &expected,
            "dy must have the shape of the convolution's output".into(),
        ));
    }
    Ok(())
}

/// The bias gradient sums dy [N, O, positions…] over N and the positions, and its kernel
/// reads only the batch, output channels and output positions of a geometry: here those of
/// a one-tap convolution over one channel, which keeps the positions.
fn bias_grad_geometry(op: &'static str, dy: &[usize]) -> Result<ConvGeometry> {
    let Some((&[n, o], positions)) = dy.split_first_chunk() else {
        return Err(Error::invalid(
            op,
            format!("dy must be [N, O, L_out] or [N, O, OH, OW], got {dy:?}"),
        ));
    };
    let mut one_channel = vec![n, 1];
    one_channel.extend(positions);
    let mut one_tap = vec![o, 1];
    one_tap.extend(positions.iter().map(|_| 1));
    ConvGeometry::new(op, &one_channel, &one_tap, Conv2d::default())
}

/// Records zeros into each of `targets`: one zero copied over it. A dispatch, not a write at
/// compile time, since a plan's buffer may serve other values in turn.
/// The backward rule of `Op::Recurrent`, whose outputs may receive gradients separately
/// (the states through the sequence and the last state, the cells only through the last).
fn recurrent_backward(
    g: &mut Graph,
    (kind, reverse, lengths): (CellKind, bool, bool),
    inputs: &[Var],
    outputs: &[Var],
    grads: &[Option<Var>],
) -> Result<Vec<Option<Var>>> {
    let lstm = kind == CellKind::Lstm;
    let dstates = grads[0];
    let dcells = if lstm { grads[1] } else { None };
    if dstates.is_none() && dcells.is_none() {
        return Ok(vec![None; inputs.len()]);
    }
    let mut grad_inputs: Vec<Var> = dstates.into_iter().chain(dcells).collect();
    grad_inputs.push(outputs[0]);
    if lstm {
        grad_inputs.push(outputs[1]);
    }
    grad_inputs.push(outputs[outputs.len() - 1]);
    grad_inputs.push(inputs[1]);
    if lengths {
        grad_inputs.push(inputs[inputs.len() - 1]);
    }
    let op = Op::RecurrentGrad {
        kind,
        reverse,
        dstates: dstates.is_some(),
        dcells: dcells.is_some(),
        lengths,
    };
    let mut input_grads: Vec<Option<Var>> =
        g.push(op, &grad_inputs)?.into_iter().map(Some).collect();
    if lengths {
        input_grads.push(None);
    }
    Ok(input_grads)
}

fn zeros_record(targets: &[&Tensor]) -> Result<Recorded> {
    let mut recorded = Recorded::default();
    let Some(first) = targets.first() else {
        return Ok(recorded);
    };
    let zero = Tensor::zeros(first.gpu(), &[1])?;
    for target in targets.iter().filter(|t| t.numel() > 0) {
        recorded
            .dispatches
            .push(strided_copy_dispatch(&zero, target, [0; 4])?);
    }
    recorded.scratch.push(zero);
    Ok(recorded)
}

/// Sums `x` down to `shape`: one reduction per broadcast axis, each keeping its axis, the
/// last one writing into `y` (seen with the kept axes).
fn sum_to_record(x: &Tensor, y: &Tensor, shape: &[usize]) -> Result<Recorded> {
    let rank = x.rank();
    let lead = rank - shape.len();
    let axes: Vec<usize> = (0..rank)
        .filter(|&i| x.shape()[i] != 1 && (i < lead || shape[i - lead] == 1))
        .collect();
    let mut recorded = Recorded::default();
    let mut current = x.clone();
    for (step, &axis) in axes.iter().enumerate() {
        let mut kept = current.shape().to_vec();
        kept[axis] = 1;
        let target = if step + 1 == axes.len() {
            y.reshape(&kept)?
        } else {
            let scratch = Tensor::uninit(x.gpu(), &kept)?;
            recorded.scratch.push(scratch.clone());
            scratch
        };
        let (_, n, inner) = crate::kernels::reduce::split_at_axis(current.shape(), axis);
        recorded.dispatches.push(reduce_dispatch(
            &current,
            &target,
            axis,
            Reduce::Sum,
            ReduceVariant::choose(inner, n),
        )?);
        current = target;
    }
    Ok(recorded)
}

/// The three kernels of a mean cross-entropy whose divisor (the rows not ignored) is counted
/// on the GPU, so that new targets need no host work beyond their upload.
fn cross_entropy_record(
    logits: &Tensor,
    targets: &Indices,
    loss: &Tensor,
    grad: &Tensor,
    ignore: Option<u32>,
) -> Result<Recorded> {
    let gpu = logits.gpu();
    let (rows, classes) = (logits.shape()[0], logits.shape()[1]);
    let ones = Tensor::full(gpu, &[classes], 1.0)?;
    let divisor = Tensor::uninit(gpu, &[1])?;
    let row_loss = Tensor::uninit(gpu, &[rows])?;
    let operands = CrossEntropyOperands {
        logits,
        targets,
        weights: None,
        divisor: &divisor,
        row_loss: &row_loss,
        grad,
    };
    let ignore = ignore.unwrap_or(u32::MAX);
    let variant = SoftmaxVariant::choose(gpu, 1, classes);
    let dispatches = vec![
        cross_entropy_weight_sum_dispatch(&operands, &ones, ignore)?,
        cross_entropy_dispatch(&operands, ignore, variant)?,
        cross_entropy_total_dispatch(&operands, loss)?,
    ];
    Ok(Recorded {
        dispatches,
        scratch: vec![ones, divisor, row_loss],
        groupings: Vec::new(),
    })
}
