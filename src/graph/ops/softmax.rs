//! The rules of the softmax family (`kernels::softmax`): `Softmax` and its gradient
//! `SoftmaxGrad`, and `CrossEntropy`, whose kernel computes the loss and its gradient at once.

use crate::error::{Error, Result};
use crate::kernels::softmax::{
    cross_entropy_dispatch, cross_entropy_total_dispatch, cross_entropy_weight_sum_dispatch,
    softmax_backward_dispatch, softmax_dispatch, CrossEntropyOperands, SoftmaxKind, SoftmaxVariant,
};
use crate::tensor::Tensor;

use super::super::{mismatch, DType, Graph, IndexBound, Var};
use super::{check_inputs, f32_output, NodeGradient, Op, Operand, Recorded, Shaped};

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
        let rank = self.shape(x).len();
        let axis = crate::tensor::resolve_axis("softmax", axis, rank)?;
        if axis + 1 == rank {
            return self.push_one(Op::Softmax { log }, &[x]);
        }
        let mut perm: Vec<usize> = (0..rank).filter(|&i| i != axis).collect();
        perm.push(axis);
        let moved = self.permute(x, &perm)?;
        let normalised = self.push_one(Op::Softmax { log }, &[moved])?;
        let mut back = vec![0; rank];
        for (position, &from) in perm.iter().enumerate() {
            back[from] = position;
        }
        self.permute(normalised, &back)
    }

    /// The mean softmax-cross-entropy of `logits` [N, C] against `targets` (u32 \[N\]),
    /// skipping rows whose target is `ignore`: a scalar. The logits' gradient is computed
    /// in the same pass and kept for the backward.
    pub fn cross_entropy(&mut self, logits: Var, targets: Var, ignore: Option<u32>) -> Result<Var> {
        let outputs = self.push(Op::CrossEntropy { ignore }, &[logits, targets])?;
        let classes = self.shape(logits)[1] as u32;
        self.values[targets.index].index_bound = Some(IndexBound {
            bound: classes,
            ignore,
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
    Ok(vec![(vec![], DType::F32), (logits.to_vec(), DType::F32)])
}

/// The kernel left dloss/dlogits in output 1: scaled by the incoming dloss.
pub(super) fn backward_cross_entropy(
    g: &mut Graph,
    node: NodeGradient,
) -> Result<Vec<Option<Var>>> {
    let saved = node.outputs[1];
    Ok(vec![Some(g.mul(saved, node.dy)?), None])
}

/// The three kernels of a mean cross-entropy whose divisor (the rows not ignored) is counted
/// on the GPU, so that new targets need no host work beyond their upload.
pub(super) fn record_cross_entropy(
    ignore: Option<u32>,
    inputs: &[Operand],
    outputs: &[Operand],
) -> Result<Recorded> {
    let (logits, targets) = (inputs[0].f32(), inputs[1].u32());
    let (loss, grad) = (outputs[0].f32(), outputs[1].f32());
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
