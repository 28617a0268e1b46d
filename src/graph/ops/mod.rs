//! The graph's ops. [`Op`] lists them; everything about an op lives together in one file,
//! that of its kernel family (beside `kernels/<family>.rs`):
//!
//! - its builder: the public method of [`Graph`] that adds it ([`Graph::matmul`],
//!   [`Graph::softmax`], …), in an `impl Graph` block at the top of the file, followed by
//!   the types it takes or returns, which `graph` re-exports;
//! - its shape rule (`infer_<op>`): the outputs' shapes and types, or an error naming the
//!   op and shapes;
//! - its backward rule (`backward_<op>`): a graph transformation that adds the nodes
//!   computing its inputs' gradients;
//! - its recording (`record_<op>`): the kernels it records over a plan's buffers, once, at
//!   compile time.
//!
//! [`Op::infer`], [`Op::backward`] and [`Op::record`] hand each op to its family's rules.
//!
//! The files, each op with its builders in parentheses (the gradient ops have none: only
//! backward rules add them):
//!
//! - `matmul.rs`: `MatMul` (`matmul`, `gemm`);
//! - `elementwise.rs`: `Unary` (`map`, `tanh`, `relu`, `sigmoid`, `scale`, `gelu`, `silu`,
//!   `sqrt`, `abs`, `pow`, `clamp`), `Binary` (`zip`, `add`, `sub`, `mul`, `div`);
//! - `random.rs`: `Dropout` (`dropout`);
//! - `reduce.rs`: `Reduce` (`reduce`, `sum`, `mean`), `SumTo` (`sum_to`);
//! - `copy.rs`: `BroadcastTo` (`broadcast_to`), `Reshape` (`reshape`), `Permute`
//!   (`permute`, `transpose`), `Slice` (`slice`), `SliceGrad`, `Concat` (`concat`),
//!   `WriteAt` (`write_at`);
//! - `softmax.rs`: `Softmax` (`softmax`), `SoftmaxGrad`, `CrossEntropy` (`cross_entropy`);
//! - `layernorm.rs`: `LayerNorm` (`layer_norm`), `LayerNormGrad`;
//! - `gather.rs`: `Gather` (`gather`, `embedding`), `GatherGrad`;
//! - `conv.rs`: `Conv` (`conv1d`, `conv2d`) and its gradients, `MaxPool1d` (`max_pool1d`,
//!   `max_pool1d_with_positions`), `MaxOverTime` (`max_over_time`,
//!   `max_over_time_with_positions`) and theirs;
//! - `attention.rs`: `Attention` (`attention`, `attention_with`, with [`AttentionSpec`]),
//!   `AttentionGrad`, `FusedAttentionGrad`;
//! - `recurrent.rs`: `Recurrent` (`recurrent`, with [`RecurrentSpec`] and
//!   [`RecurrentOutput`]), `RecurrentGrad`;
//! - `top_k.rs`: `TopK` (`top_k`);
//! - `loss.rs`: losses composed of the ops above, with no op of their own (`mse_loss`,
//!   `binary_cross_entropy_with_logits`).
//!
//! To add an op, touch its family's file and this one: in the family's file (a new family:
//! a new file, declared and listed here), the builder in the `impl Graph` block and the
//! `infer_`, `backward_` and `record_` functions; here, its variant of [`Op`] and its arm
//! in [`Op::name`], [`Op::infer`], [`Op::backward`] and [`Op::record`] (and in
//! `differentiable_outputs` if some of its outputs carry no gradient). Then check its
//! backward against finite differences in `tests/graph.rs`.

mod attention;
mod conv;
mod copy;
mod elementwise;
mod gather;
mod layernorm;
mod loss;
mod matmul;
mod random;
mod recurrent;
mod reduce;
mod softmax;
mod top_k;

pub use attention::AttentionSpec;
pub use conv::ConvLayout;
pub use matmul::{GemmSpec, MatMulFusion};
pub use recurrent::{RecurrentOutput, RecurrentSpec};
pub use softmax::CrossEntropySpec;

use crate::error::{Error, Result};
use crate::gpu::Dispatch;
use crate::kernels::attention::{AttentionSettings, AttentionVariant, MaskKind};
use crate::kernels::conv::{Conv2d, MaxPool1d};
use crate::kernels::elementwise::{Binary, Unary};
use crate::kernels::gather::GroupedPositions;
use crate::kernels::recurrent::CellKind;
use crate::kernels::reduce::Reduce;
use crate::kernels::softmax::LossReduction;
use crate::tensor::{Indices, Tensor};

use super::{DType, Graph, Var};

/// An operation of the graph.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// op(a)·op(b) (+ bias), batched: inputs a [batch…, M, K], b [batch…, K, N] (op
    /// transposes the last two axes) and, if `bias`, a row vector of N. A rank-2 operand
    /// beside a batched one is shared by every batch. `fused` is what `compile` fused
    /// into the product's store (graphs build `Plain` only); a fused ReLU's gradient takes
    /// the ReLU's output as its last input.
    MatMul {
        /// Whether a is stored transposed, `[batch…, K, M]`.
        trans_a: bool,
        /// Whether b is stored transposed, `[batch…, N, K]`.
        trans_b: bool,
        /// Whether a third input, the bias of N values, is added to every row.
        bias: bool,
        /// What the product does to each result as it stores it.
        fused: MatMulFusion,
    },
    /// y = f(x).
    Unary(Unary),
    /// a ∘ b with numpy broadcasting; the derivative ops take two values of one shape.
    Binary(Binary),
    /// condition ? on_true : on_false elementwise, the three broadcast (numpy rules).
    Select,
    /// Inverted dropout: inputs x and the seed (u32 \[1\], fed every run); keeps each element
    /// with probability 1 − p, scaled by 1/(1 − p), by the hash of (seed, `stream`, index)
    /// (`kernels::random`). Its backward is the same op on dy: the same bits drop the same
    /// elements, so no mask is stored.
    Dropout {
        /// The probability of dropping an element, in `[0, 1)`.
        p: f32,
        /// Tells apart the dropouts of one graph, so that two of them fed the same seed
        /// drop different elements.
        stream: u32,
    },
    /// Sum, max or mean over one axis.
    Reduce {
        /// The reduction.
        op: Reduce,
        /// The axis reduced over.
        axis: usize,
        /// Whether the reduced axis stays, as size 1, or goes.
        keep_dim: bool,
    },
    /// Sums a value down to a shape it was broadcast from.
    SumTo {
        /// The shape to sum down to.
        shape: Vec<usize>,
    },
    /// Broadcasts a value up to a shape.
    BroadcastTo {
        /// The shape to broadcast to (numpy rules).
        shape: Vec<usize>,
    },
    /// The same buffer seen with another shape.
    Reshape {
        /// The new shape, of as many elements.
        shape: Vec<usize>,
    },
    /// Reorders the axes (rank ≤ 4).
    Permute {
        /// Output axis i is input axis `perm[i]`.
        perm: Vec<usize>,
    },
    /// Softmax or log-softmax along the last axis.
    Softmax {
        /// Whether it is the log-softmax.
        log: bool,
    },
    /// The backward of `Softmax`: inputs y (its output) and dy.
    SoftmaxGrad {
        /// Whether the forward was the log-softmax.
        log: bool,
    },
    /// Softmax-cross-entropy of logits `[N, C]` against u32 targets `[N]`; outputs the
    /// loss (reduced as asked) and the logits' gradient, computed in the same pass.
    CrossEntropy {
        /// The u32 bits of a target value whose rows add nothing to the loss or the
        /// gradient (padding), and are not counted in the mean.
        ignore: Option<u32>,
        /// How the rows' losses combine: their mean or sum (a scalar), or none (`[N]`).
        reduction: LossReduction,
    },
    /// Layer norm over the last axis: inputs x, gain \[D\], bias \[D\]; outputs y and the
    /// per-row mean and rstd (shaped as x with the last axis 1) that the backward needs.
    LayerNorm {
        /// Added to the variance before its square root, so that a constant row does not
        /// divide by 0.
        eps: f32,
    },
    /// The backward of `LayerNorm`: inputs x, dy, gain, mean, rstd; outputs dx, dgain, dbias.
    LayerNormGrad,
    /// Entries `start..end` of `axis`.
    Slice {
        /// The axis sliced.
        axis: usize,
        /// The first entry kept.
        start: usize,
        /// One past the last entry kept.
        end: usize,
    },
    /// The backward of `Slice`: dy placed at `start` of `axis` in zeros of `len` entries.
    SliceGrad {
        /// The axis the forward sliced.
        axis: usize,
        /// Where the slice started.
        start: usize,
        /// The length of that axis before slicing.
        len: usize,
    },
    /// The inputs one after another along `axis` (every other axis equal).
    Concat {
        /// The axis joined along.
        axis: usize,
    },
    /// The `k` largest entries along the last axis, best first (the lower index first among
    /// equals): outputs their values and their u32 indices, both `[…, k]`. No gradient.
    TopK {
        /// How many entries each row keeps.
        k: usize,
    },
    /// Inputs a cache, an update and a position (u32 \[1\]): the cache with entries
    /// position.. of `axis` replaced by the update, written in place (an alias of the
    /// cache's storage, see [`Graph::write_at`]). No gradient.
    WriteAt {
        /// The axis written along.
        axis: usize,
    },
    /// ONNX's Gather: the entries of `axis` of the data picked by u32 ids (any shape), output
    /// data.shape[..axis] + ids.shape + data.shape[axis + 1..]. The embedding lookup is the
    /// gather on axis 0 of a [vocab, dim] table.
    Gather {
        /// The axis of the data the ids index.
        axis: usize,
    },
    /// The backward of `Gather`: inputs dy and the ids; output the data's gradient (the axis
    /// of `axis_len` entries back in place of the ids' axes), a deterministic scatter-add over
    /// the positions grouped by id.
    GatherGrad {
        /// The axis the forward gathered along.
        axis: usize,
        /// The length of that axis in the data.
        axis_len: usize,
    },
    /// A convolution: inputs x, weight and, if `bias`, a bias \[O\]. Sequences: x [N, C, L],
    /// weight [O, C, k], output [N, O, L_out] (only the W entries of `options` count);
    /// images: x [N, C, H, W], weight [O, C, kh, kw], output [N, O, OH, OW].
    Conv {
        /// Sequences or images.
        layout: ConvLayout,
        /// Strides and padding.
        options: Conv2d,
        /// Whether a third input, the bias, is added.
        bias: bool,
    },
    /// The input gradient of `Conv`: inputs dy and the weight; output dx [N, C, size…]
    /// (`size` the input's L, or its H and W).
    ConvInputGrad {
        /// The forward's strides and padding.
        options: Conv2d,
        /// The input's spatial size.
        size: Vec<usize>,
    },
    /// The weight gradient of `Conv`: inputs x and dy; output dw [O, C, kernel…] (`kernel`
    /// the weight's k, or its kh and kw).
    ConvWeightGrad {
        /// The forward's strides and padding.
        options: Conv2d,
        /// The weight's spatial size.
        kernel: Vec<usize>,
    },
    /// The bias gradient of `Conv`: input dy [N, O, positions…]; output \[O\], dy's sum over
    /// batch items and positions.
    ConvBiasGrad,
    /// Max pooling along the last axis, x [N, C, L] → [N, C, L_out]; outputs the maxima and
    /// their positions in 0..L (u32, kept for the backward).
    MaxPool1d {
        /// Window, stride and padding.
        options: MaxPool1d,
    },
    /// The backward of `MaxPool1d`: inputs dy [N, C, L_out] and the positions; output dx
    /// [N, C, len], at each position the sum of dy over the windows it was the maximum of.
    MaxPool1dGrad {
        /// The forward's window, stride and padding.
        options: MaxPool1d,
        /// L, the length of the forward's input.
        len: usize,
    },
    /// The maximum of each channel over time, x [N, C, L] → [N, C]; outputs the maxima and
    /// their positions (u32 [N, C], kept for the backward).
    MaxOverTime,
    /// The backward of `MaxOverTime`: inputs dy [N, C] and the positions; output dx
    /// [N, C, len], dy at each position and 0 elsewhere.
    MaxOverTimeGrad {
        /// L, the length of the forward's input.
        len: usize,
    },
    /// Scaled dot-product attention: inputs q [B, H, Lq, D], k [B, Hkv, Lk, D], v [B, Hkv,
    /// Lk, Dv] (Hkv dividing H), then u32 lengths \[B\] masking the keys past each if
    /// `key_lengths`, then an f32 mask broadcastable to [B, H, Lq, Lk] if `mask` says how it
    /// acts; outputs O [B, H, Lq, Dv] and what the backward needs: the probabilities
    /// P [B, H, Lq, Lk] (`Unfused`) or each row's log-sum-exp [B, H, Lq] (`Fused`).
    /// `settings`: the scale, causal masking, the queries' alignment among the keys, the
    /// sliding window and the softcap.
    Attention {
        /// Scale, causal masking, alignment, window and softcap.
        settings: AttentionSettings,
        /// Whether an input of key lengths follows v.
        key_lengths: bool,
        /// How the mask input acts; `None`: there is no mask input.
        mask: Option<MaskKind>,
        /// Unfused (outputs P) or fused (outputs the log-sum-exp).
        variant: AttentionVariant,
    },
    /// The backward of `Attention`: inputs q, k, v, P, dO; outputs dq, dk, dv. The masks act
    /// through P (0 at masked keys), so only the scale and the softcap are needed again.
    AttentionGrad {
        /// The forward's scale; `None` is 1/√D.
        scale: Option<f32>,
        /// The forward's softcap, if any.
        softcap: Option<f32>,
    },
    /// The backward of the fused `Attention`: inputs q, k, v, O, the log-sum-exp, dO, then
    /// the forward's key lengths and mask (P is recomputed, so every mask acts again);
    /// outputs dq, dk, dv.
    FusedAttentionGrad {
        /// The forward's settings.
        settings: AttentionSettings,
        /// Whether the forward's key lengths are an input.
        key_lengths: bool,
        /// How the forward's mask acts; `None`: there was none.
        mask: Option<MaskKind>,
    },
    /// A recurrent layer over a whole sequence, one direction (`kernels::recurrent`): inputs
    /// the input projections gx [T, B, G·H] (G gates of the cell), the recurrent weight
    /// r [H, G·H], its bias [G·H], h0 [B, H], c0 [B, H] for an LSTM, then u32 lengths \[B\] if
    /// `lengths` (a step past a batch item's length keeps its state). Outputs the states
    /// [T+1, B, H] (slot 0 is h0 forward, slot T reversed), the cells likewise for an LSTM,
    /// and the gate values the backward needs.
    Recurrent {
        /// RNN, GRU or LSTM.
        kind: CellKind,
        /// Whether the steps run from the last to the first.
        reverse: bool,
        /// Whether an input of sequence lengths follows.
        lengths: bool,
    },
    /// The backward of `Recurrent`: inputs dstates if `dstates`, dcells if `dcells`, the
    /// states, the cells (LSTM), the saved gates, r, then the lengths if `lengths`; outputs
    /// dgx, dr, dr_bias, dh0 and, for an LSTM, dc0.
    RecurrentGrad {
        /// The forward's cell.
        kind: CellKind,
        /// The forward's direction.
        reverse: bool,
        /// Whether the states' gradient is an input (else it is zero).
        dstates: bool,
        /// Whether the cells' gradient is an input (else it is zero).
        dcells: bool,
        /// Whether the forward's lengths are an input.
        lengths: bool,
    },
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

    /// How many elements the value holds, whatever its type.
    fn numel(&self) -> usize {
        match self {
            Operand::F32(t) => t.numel(),
            Operand::U32(i) => i.numel(),
        }
    }
}

type Shaped = (Vec<usize>, DType);

impl From<Dispatch> for Recorded {
    /// The recording of an op that is one kernel over its operands.
    fn from(dispatch: Dispatch) -> Recorded {
        Recorded {
            dispatches: vec![dispatch],
            ..Recorded::default()
        }
    }
}

/// A node as its backward rule sees it: its inputs, its outputs, and the gradient that
/// reached its first output.
#[derive(Clone, Copy)]
struct NodeGradient<'a> {
    inputs: &'a [Var],
    outputs: &'a [Var],
    dy: Var,
}

impl Op {
    /// The op's name in lower case (`matmul`, `layer_norm_grad`, …), as errors name it.
    pub fn name(&self) -> &'static str {
        match self {
            Op::MatMul { .. } => "matmul",
            Op::Unary(_) => "unary",
            Op::Binary(_) => "binary",
            Op::Select => "select",
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
            Op::WriteAt { .. } => "write_at",
            Op::TopK { .. } => "top_k",
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
            Op::TopK { .. } => vec![true, false],
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

    /// Whether the output shares its first input's buffer instead of having its own: a
    /// reshape, which only renames, and a write in place.
    pub(crate) fn is_alias(&self) -> bool {
        matches!(self, Op::Reshape { .. } | Op::WriteAt { .. })
    }

    /// The shape rule: the outputs' shapes and types, or an error naming the op and shapes.
    pub(crate) fn infer(&self, inputs: &[(&[usize], DType)]) -> Result<Vec<Shaped>> {
        let op = self.name();
        match self {
            Op::MatMul {
                trans_a,
                trans_b,
                bias,
                fused,
            } => matmul::infer_matmul(op, *trans_a, *trans_b, *bias, *fused, inputs),
            Op::Unary(_) => elementwise::infer_unary(op, inputs),
            Op::Binary(binary) => elementwise::infer_binary(op, *binary, inputs),
            Op::Select => elementwise::infer_select(op, inputs),
            Op::Dropout { .. } => random::infer_dropout(op, inputs),
            Op::Reduce {
                op: reduce,
                axis,
                keep_dim,
            } => reduce::infer_reduce(op, *reduce, *axis, *keep_dim, inputs),
            Op::SumTo { shape } => reduce::infer_sum_to(op, shape, inputs),
            Op::BroadcastTo { shape } => copy::infer_broadcast_to(op, shape, inputs),
            Op::Reshape { shape } => copy::infer_reshape(op, shape, inputs),
            Op::Permute { perm } => copy::infer_permute(op, perm, inputs),
            Op::Slice { axis, start, end } => copy::infer_slice(op, *axis, *start, *end, inputs),
            Op::SliceGrad { axis, start, len } => {
                copy::infer_slice_grad(op, *axis, *start, *len, inputs)
            }
            Op::Concat { axis } => copy::infer_concat(op, *axis, inputs),
            Op::WriteAt { axis } => copy::infer_write_at(op, *axis, inputs),
            Op::TopK { k } => top_k::infer_top_k(op, *k, inputs),
            Op::Softmax { .. } => softmax::infer_softmax(op, inputs),
            Op::SoftmaxGrad { .. } => softmax::infer_softmax_grad(op, inputs),
            Op::CrossEntropy { reduction, .. } => {
                softmax::infer_cross_entropy(op, *reduction, inputs)
            }
            Op::LayerNorm { eps } => layernorm::infer_layer_norm(op, *eps, inputs),
            Op::LayerNormGrad => layernorm::infer_layer_norm_grad(op, inputs),
            Op::Gather { axis } => gather::infer_gather(op, *axis, inputs),
            Op::GatherGrad { axis, axis_len } => {
                gather::infer_gather_grad(op, *axis, *axis_len, inputs)
            }
            Op::Conv {
                layout,
                options,
                bias,
            } => conv::infer_conv(op, *layout, *options, *bias, inputs),
            Op::ConvInputGrad { options, size } => {
                conv::infer_conv_input_grad(op, *options, size, inputs)
            }
            Op::ConvWeightGrad { options, kernel } => {
                conv::infer_conv_weight_grad(op, *options, kernel, inputs)
            }
            Op::ConvBiasGrad => conv::infer_conv_bias_grad(op, inputs),
            Op::MaxPool1d { options } => conv::infer_max_pool1d(op, options, inputs),
            Op::MaxPool1dGrad { options, len } => {
                conv::infer_max_pool1d_grad(op, options, *len, inputs)
            }
            Op::MaxOverTime => conv::infer_max_over_time(op, inputs),
            Op::MaxOverTimeGrad { len } => conv::infer_max_over_time_grad(op, *len, inputs),
            Op::Attention {
                settings,
                key_lengths,
                mask,
                variant,
            } => attention::infer_attention(op, settings, *key_lengths, *mask, *variant, inputs),
            Op::AttentionGrad { .. } => attention::infer_attention_grad(op, inputs),
            Op::FusedAttentionGrad {
                settings,
                key_lengths,
                mask,
            } => attention::infer_fused_attention_grad(op, settings, *key_lengths, *mask, inputs),
            Op::Recurrent { kind, lengths, .. } => {
                recurrent::infer_recurrent(op, *kind, *lengths, inputs)
            }
            Op::RecurrentGrad {
                kind,
                dstates,
                dcells,
                lengths,
                ..
            } => recurrent::infer_recurrent_grad(op, *kind, *dstates, *dcells, *lengths, inputs),
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
            // Its states and its cells receive gradients separately: its rule reads them all.
            return recurrent::backward_recurrent(
                g, *kind, *reverse, *lengths, inputs, outputs, grads,
            );
        }
        let Some(dy) = grads[0] else {
            return Ok(vec![None; inputs.len()]);
        };
        let node = NodeGradient {
            inputs,
            outputs,
            dy,
        };
        match self {
            Op::MatMul {
                trans_a,
                trans_b,
                bias,
                fused,
            } => matmul::backward_matmul(g, node, *trans_a, *trans_b, *bias, *fused),
            Op::Unary(f) => elementwise::backward_unary(g, node, *f),
            Op::Binary(binary) => elementwise::backward_binary(g, node, *binary),
            Op::Select => elementwise::backward_select(g, node),
            Op::Dropout { p, stream } => random::backward_dropout(g, node, *p, *stream),
            Op::Reduce { op, axis, .. } => reduce::backward_reduce(g, node, *op, *axis),
            Op::SumTo { .. } => reduce::backward_sum_to(g, node),
            Op::BroadcastTo { .. } => copy::backward_broadcast_to(g, node),
            Op::Reshape { .. } => copy::backward_reshape(g, node),
            Op::Permute { perm } => copy::backward_permute(g, node, perm),
            Op::Slice { axis, start, .. } => copy::backward_slice(g, node, *axis, *start),
            Op::SliceGrad { axis, start, .. } => copy::backward_slice_grad(g, node, *axis, *start),
            Op::Concat { axis } => copy::backward_concat(g, node, *axis),
            Op::WriteAt { .. } => Err(no_gradient("write_at, which serves decoding,")),
            Op::TopK { .. } => Err(no_gradient("top_k, which serves decoding,")),
            Op::Softmax { log } => softmax::backward_softmax(g, node, *log),
            Op::CrossEntropy { reduction, .. } => {
                softmax::backward_cross_entropy(g, node, *reduction)
            }
            Op::LayerNorm { .. } => layernorm::backward_layer_norm(g, node),
            Op::Gather { axis } => gather::backward_gather(g, node, *axis),
            Op::Conv { options, bias, .. } => conv::backward_conv(g, node, *options, *bias),
            Op::MaxPool1d { options } => conv::backward_max_pool1d(g, node, *options),
            Op::MaxOverTime => conv::backward_max_over_time(g, node),
            Op::Attention {
                settings,
                key_lengths,
                mask,
                variant,
            } => attention::backward_attention(g, node, settings, *key_lengths, *mask, *variant),
            Op::Recurrent { .. } => unreachable!("differentiated above"),
            Op::SoftmaxGrad { .. }
            | Op::LayerNormGrad
            | Op::GatherGrad { .. }
            | Op::ConvInputGrad { .. }
            | Op::ConvWeightGrad { .. }
            | Op::ConvBiasGrad
            | Op::MaxPool1dGrad { .. }
            | Op::MaxOverTimeGrad { .. }
            | Op::AttentionGrad { .. }
            | Op::FusedAttentionGrad { .. }
            | Op::RecurrentGrad { .. } => Err(no_gradient(&format!(
                "{} (second derivatives are not supported)",
                self.name()
            ))),
        }
    }

    /// Records the op's kernels over its operands (views of the plan's buffers).
    pub(crate) fn record(&self, inputs: &[Operand], outputs: &[Operand]) -> Result<Recorded> {
        // An empty first output needs no kernel, but attention's outputs are not empty
        // together (P remains when Dv = 0; dK and dV are zeros when Lq = 0) and its
        // launchers skip the empty products themselves, and layer norm's gradient over no
        // rows still writes dgain and dbias.
        let records_when_empty = matches!(
            self,
            Op::Attention { .. }
                | Op::AttentionGrad { .. }
                | Op::FusedAttentionGrad { .. }
                | Op::LayerNormGrad
        );
        if outputs[0].numel() == 0 && !records_when_empty {
            return Ok(Recorded::default());
        }
        match self {
            Op::MatMul {
                trans_a,
                trans_b,
                bias,
                fused,
            } => matmul::record_matmul(*trans_a, *trans_b, *bias, *fused, inputs, outputs),
            Op::Unary(f) => elementwise::record_unary(*f, inputs, outputs),
            Op::Binary(binary) => elementwise::record_binary(*binary, inputs, outputs),
            Op::Select => elementwise::record_select(inputs, outputs),
            Op::Dropout { p, stream } => random::record_dropout(*p, *stream, inputs, outputs),
            Op::Reduce { op, axis, .. } => reduce::record_reduce(*op, *axis, inputs, outputs),
            Op::SumTo { shape } => reduce::record_sum_to(shape, inputs, outputs),
            Op::BroadcastTo { .. } => copy::record_broadcast_to(inputs, outputs),
            // An alias (`is_alias`): its output is its input's buffer.
            Op::Reshape { .. } => Ok(Recorded::default()),
            Op::Permute { perm } => copy::record_permute(perm, inputs, outputs),
            Op::Slice { axis, start, end } => {
                copy::record_slice(*axis, *start, *end, inputs, outputs)
            }
            Op::SliceGrad { axis, start, .. } => {
                copy::record_slice_grad(*axis, *start, inputs, outputs)
            }
            Op::Concat { axis } => copy::record_concat(*axis, inputs, outputs),
            Op::WriteAt { axis } => copy::record_write_at(*axis, inputs, outputs),
            Op::TopK { k } => top_k::record_top_k(*k, inputs, outputs),
            Op::Softmax { log } => softmax::record_softmax(*log, inputs, outputs),
            Op::SoftmaxGrad { log } => softmax::record_softmax_grad(*log, inputs, outputs),
            Op::CrossEntropy { ignore, reduction } => {
                softmax::record_cross_entropy(*ignore, *reduction, inputs, outputs)
            }
            Op::LayerNorm { eps } => layernorm::record_layer_norm(*eps, inputs, outputs),
            Op::LayerNormGrad => layernorm::record_layer_norm_grad(inputs, outputs),
            Op::Gather { axis } => gather::record_gather(*axis, inputs, outputs),
            Op::GatherGrad { axis, axis_len } => {
                gather::record_gather_grad(*axis, *axis_len, inputs, outputs)
            }
            Op::Conv { options, .. } => conv::record_conv(self.name(), *options, inputs, outputs),
            Op::ConvInputGrad { options, .. } => {
                conv::record_conv_input_grad(self.name(), *options, inputs, outputs)
            }
            Op::ConvWeightGrad { options, .. } => {
                conv::record_conv_weight_grad(self.name(), *options, inputs, outputs)
            }
            Op::ConvBiasGrad => conv::record_conv_bias_grad(self.name(), inputs, outputs),
            Op::MaxPool1d { options } => conv::record_max_pool1d(options, inputs, outputs),
            Op::MaxPool1dGrad { options, len } => {
                conv::record_max_pool1d_grad(options, *len, inputs, outputs)
            }
            Op::MaxOverTime => conv::record_max_over_time(inputs, outputs),
            Op::MaxOverTimeGrad { len } => conv::record_max_over_time_grad(*len, inputs, outputs),
            Op::Attention {
                settings,
                key_lengths,
                mask,
                variant,
            } => attention::record_attention(
                settings,
                *key_lengths,
                *mask,
                *variant,
                inputs,
                outputs,
            ),
            Op::AttentionGrad { scale, softcap } => {
                attention::record_attention_grad(*scale, *softcap, inputs, outputs)
            }
            Op::FusedAttentionGrad {
                settings,
                key_lengths,
                mask,
            } => attention::record_fused_attention_grad(
                settings,
                *key_lengths,
                *mask,
                inputs,
                outputs,
            ),
            Op::Recurrent {
                kind,
                reverse,
                lengths,
            } => recurrent::record_recurrent(*kind, *reverse, *lengths, inputs, outputs),
            Op::RecurrentGrad {
                kind,
                reverse,
                dstates,
                dcells,
                lengths,
            } => recurrent::record_recurrent_grad(
                *kind, *reverse, *dstates, *dcells, *lengths, inputs, outputs,
            ),
        }
    }
}

/// Checks an op's inputs against the types it takes, one per input: first their count, then
/// each one's type.
fn check_inputs(op: &'static str, inputs: &[(&[usize], DType)], types: &[DType]) -> Result<()> {
    if inputs.len() != types.len() {
        return Err(Error::invalid(
            op,
            format!("takes {} inputs, got {}", types.len(), inputs.len()),
        ));
    }
    for (i, ((shape, dtype), wants)) in inputs.iter().zip(types).enumerate() {
        if dtype != wants {
            return Err(Error::invalid(
                op,
                format!("input {i} (shape {shape:?}) is {dtype:?}, expected {wants:?}"),
            ));
        }
    }
    Ok(())
}

/// The shape rule's answer for an op with one f32 output.
fn f32_output(shape: Vec<usize>) -> Result<Vec<Shaped>> {
    Ok(vec![(shape, DType::F32)])
}

fn no_gradient(what: &str) -> Error {
    Error::invalid("backward", format!("{what} has no gradient"))
}
