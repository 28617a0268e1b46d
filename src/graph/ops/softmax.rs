//! The rules of the softmax family (`kernels::softmax`): `Softmax` and its gradient
//! `SoftmaxGrad`, and `CrossEntropy`, whose kernel computes the loss and its gradient at once.

use crate::error::{Error, Result};
use crate::kernels::softmax::{
    cross_entropy_dispatch, cross_entropy_total_dispatch, cross_entropy_weight_sum_dispatch,
    softmax_backward_dispatch, softmax_dispatch, CrossEntropyOperands, LossReduction, SoftmaxKind,
    SoftmaxVariant,
};
use crate::tensor::{ignore_bits, Tensor};

use super::super::{mismatch, DType, Graph, IndexBound, Var};
use super::{check_inputs, f32_output, NodeGradient, Op, Operand, Recorded, Shaped};

/// How [`Graph::cross_entropy_with`] treats targets and combines the rows' losses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrossEntropySpec {
    /// A target value whose rows add nothing: PyTorch's `ignore_index`. A class value
    /// (such as the padding token's id), or a negative one such as
    /// [`crate::PYTORCH_IGNORE_INDEX`] (-100), which targets fed as i64
    /// ([`crate::graph::Feed::i64`]) may hold: any u32 value or negative i32.
    pub ignore: Option<i64>,
    /// How the rows' losses combine.
    pub reduction: LossReduction,
}

impl CrossEntropySpec {
    /// The mean over the rows, none ignored.
    pub fn mean() -> Self {
        CrossEntropySpec {
            ignore: None,
            reduction: LossReduction::Mean,
        }
    }

    /// The sum over the rows, none ignored.
    pub fn sum() -> Self {
        CrossEntropySpec {
            reduction: LossReduction::Sum,
            ..CrossEntropySpec::mean()
        }
    }

    /// Each row's loss, `[N]`, none ignored.
    pub fn per_row() -> Self {
        CrossEntropySpec {
            reduction: LossReduction::None,
            ..CrossEntropySpec::mean()
        }
    }

    /// Rows whose target is `target` add nothing (and are not counted in a mean).
    pub fn ignore(self, target: i64) -> Self {
        CrossEntropySpec {
            ignore: Some(target),
            ..self
        }
    }
}

// The builders: the public `Graph` calls that add this family's ops.
impl Graph {
    /// Softmax along `axis` (negative counts from the end; PyTorch's `softmax(x, dim)`).
    pub fn softmax(&mut self, x: Var, axis: isize) -> Result<Var> {
        self.softmax_along(x, axis, false)
    }

    /// Log-softmax along `axis` (negative counts from the end): x − logsumexp(x), computed
    /// without overflow.
    pub fn log_softmax(&mut self, x: Var, axis: isize) -> Result<Var> {
        self.softmax_along(x, axis, true)
    }

    /// The kernel normalises the last axis; another axis is moved there and back.
    fn softmax_along(&mut self, x: Var, axis: isize, log: bool) -> Result<Var> {
        self.check("softmax", x)?;
        let axis = crate::tensor::resolve_axis("softmax", axis, self.shape(x).len())?;
        let (moved, perm) = self.move_axis_to_end(x, axis)?;
        let normalised = self.push_one(Op::Softmax { log }, &[moved])?;
        self.move_axis_back(normalised, &perm)
    }

    /// The mean softmax-cross-entropy of `logits` `[N, C]` against `targets` (u32 `[N]`),
    /// a scalar, as PyTorch's `cross_entropy(logits, targets)` with no ignore index. The
    /// logits' gradient is computed in the same pass and kept for the backward.
    pub fn cross_entropy(&mut self, logits: Var, targets: Var) -> Result<Var> {
        self.cross_entropy_with(logits, targets, CrossEntropySpec::mean())
    }

    /// [`Graph::cross_entropy`] reduced as `spec` says: the mean or the sum of the rows'
    /// losses (a scalar), or each row's (`[N]`, 0 for ignored rows), as PyTorch's
    /// `reduction="mean" | "sum" | "none"`, skipping the rows whose target is the spec's
    /// ignore index. Fed targets are checked: each a class below C or the ignore index.
    pub fn cross_entropy_with(
        &mut self,
        logits: Var,
        targets: Var,
        spec: CrossEntropySpec,
    ) -> Result<Var> {
        let ignore = spec
            .ignore
            .map(|index| ignore_bits("cross_entropy", index))
            .transpose()?;
        let op = Op::CrossEntropy {
            ignore,
            reduction: spec.reduction,
        };
        let outputs = self.push(op, &[logits, targets])?;
        let classes = self.shape(logits)[1] as u32;
        self.values[targets.index].index_bound = Some(IndexBound {
            bound: classes,
            ignore: spec.ignore,
        });
        Ok(outputs[0])
    }
}

pub(super) fn infer_softmax(op: &'static str, inputs: &[(&[usize], DType)]) -> Result<Vec<Shaped>> {
    check_inputs(op, inputs, &[DType::F32])?;
    let x = inputs[0].0;
    if x.last().is_none_or(|&n| n == 0) {
        return Err(Error::ZeroSized {
            op,
            shape: x.to_vec(),
            why: "softmax needs a last axis with at least one element",
        });
    }
    f32_output(x.to_vec())
}

/// `SoftmaxGrad` from the output y and dy.
pub(super) fn backward_softmax(
    g: &mut Graph,
    node: NodeGradient,
    log: bool,
) -> Result<Vec<Option<Var>>> {
    let y = node.outputs[0];
    Ok(vec![Some(
        g.push(Op::SoftmaxGrad { log }, &[y, node.dy])?[0],
    )])
}

pub(super) fn record_softmax(
    log: bool,
    inputs: &[Operand],
    outputs: &[Operand],
) -> Result<Recorded> {
    let (x, y) = (inputs[0].f32(), outputs[0].f32());
    let axis = x.rank() - 1;
    let variant = SoftmaxVariant::choose(y.gpu(), 1, x.shape()[axis]);
    Ok(softmax_dispatch(x, y, axis, softmax_kind(log), variant)?.into())
}

pub(super) fn infer_softmax_grad(
    op: &'static str,
    inputs: &[(&[usize], DType)],
) -> Result<Vec<Shaped>> {
    check_inputs(op, inputs, &[DType::F32, DType::F32])?;
    let (y, dy) = (inputs[0].0, inputs[1].0);
    if y != dy {
        return Err(mismatch(op, y, dy, "y and dy must have one shape".into()));
    }
    f32_output(y.to_vec())
}

pub(super) fn record_softmax_grad(
    log: bool,
    inputs: &[Operand],
    outputs: &[Operand],
) -> Result<Recorded> {
    let (y, dy, dx) = (inputs[0].f32(), inputs[1].f32(), outputs[0].f32());
    let axis = y.rank() - 1;
    let variant = SoftmaxVariant::choose(dx.gpu(), 1, y.shape()[axis]);
    Ok(softmax_backward_dispatch(y, dy, dx, axis, softmax_kind(log), variant)?.into())
}

fn softmax_kind(log: bool) -> SoftmaxKind {
    if log {
        SoftmaxKind::LogSoftmax
    } else {
        SoftmaxKind::Softmax
    }
}

pub(super) fn infer_cross_entropy(
    op: &'static str,
    reduction: LossReduction,
    inputs: &[(&[usize], DType)],
) -> Result<Vec<Shaped>> {
    check_inputs(op, inputs, &[DType::F32, DType::U32])?;
    let (logits, targets) = (inputs[0].0, inputs[1].0);
    if logits.len() != 2 || targets != [logits[0]] || logits[1] == 0 {
        return Err(mismatch(
            op,
            logits,
            targets,
            "logits must be [N, C] with C > 0 and targets [N]".into(),
        ));
    }
    let loss = match reduction {
        LossReduction::Mean | LossReduction::Sum => vec![],
        LossReduction::None => vec![logits[0]],
    };
    Ok(vec![(loss, DType::F32), (logits.to_vec(), DType::F32)])
}

/// The kernel left dloss/dlogits in output 1: scaled by the incoming dloss (one value, or
/// one per row without a reduction).
pub(super) fn backward_cross_entropy(
    g: &mut Graph,
    node: NodeGradient,
    reduction: LossReduction,
) -> Result<Vec<Option<Var>>> {
    let saved = node.outputs[1];
    let dy = match reduction {
        LossReduction::Mean | LossReduction::Sum => node.dy,
        LossReduction::None => {
            let rows = g.shape(node.dy)[0];
            g.reshape(node.dy, &[rows, 1])?
        }
    };
    Ok(vec![Some(g.mul(saved, dy)?), None])
}

/// The kernels of a cross-entropy: for a mean, the divisor (the rows not ignored) counted
/// on the GPU, so that new targets need no host work beyond their upload; the per-row
/// kernel; and the total, unless each row's loss is the output.
pub(super) fn record_cross_entropy(
    ignore: Option<u32>,
    reduction: LossReduction,
    inputs: &[Operand],
    outputs: &[Operand],
) -> Result<Recorded> {
    let (logits, targets) = (inputs[0].f32(), inputs[1].u32());
    let (loss, grad) = (outputs[0].f32(), outputs[1].f32());
    let gpu = logits.gpu();
    let (rows, classes) = (logits.shape()[0], logits.shape()[1]);
    let ones = Tensor::full(gpu, &[classes], 1.0)?;
    // A sum, or each row's loss, divides by 1.
    let divisor = Tensor::full(gpu, &[1], 1.0)?;
    let row_loss = match reduction {
        LossReduction::None => loss.clone(),
        LossReduction::Mean | LossReduction::Sum => Tensor::uninit(gpu, &[rows])?,
    };
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
    let mut dispatches = Vec::with_capacity(3);
    if reduction == LossReduction::Mean {
        dispatches.push(cross_entropy_weight_sum_dispatch(&operands, &ones, ignore)?);
    }
    dispatches.push(cross_entropy_dispatch(&operands, ignore, variant)?);
    if reduction != LossReduction::None {
        dispatches.push(cross_entropy_total_dispatch(&operands, loss)?);
    }
    Ok(Recorded {
        dispatches,
        scratch: vec![ones, divisor, row_loss],
        groupings: Vec::new(),
    })
}
