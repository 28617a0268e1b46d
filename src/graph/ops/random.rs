//! The rules of `Dropout` (`kernels::random`).

use crate::error::Result;
use crate::kernels::random::dropout_dispatch;

use super::super::{mismatch, DType, Graph, Var};
use super::{check_inputs, f32_output, NodeGradient, Op, Operand, Recorded, Shaped};

pub(super) fn infer_dropout(op: &'static str, inputs: &[(&[usize], DType)]) -> Result<Vec<Shaped>> {
    check_inputs(op, inputs, &[DType::F32, DType::U32])?;
    let (x, seed) = (inputs[0].0, inputs[1].0);
    if seed != [1] {
        return Err(mismatch(
            op,
            x,
            seed,
            "the seed must be one u32, shape [1]".into(),
        ));
    }
    f32_output(x.to_vec())
}

/// The same dropout of dy: the same seed and stream drop the same elements.
pub(super) fn backward_dropout(
    g: &mut Graph,
    node: NodeGradient,
    p: f32,
    stream: u32,
) -> Result<Vec<Option<Var>>> {
    let seed = node.inputs[1];
    Ok(vec![
        Some(g.push_one(Op::Dropout { p, stream }, &[node.dy, seed])?),
        None,
    ])
}

pub(super) fn record_dropout(
    p: f32,
    stream: u32,
    inputs: &[Operand],
    outputs: &[Operand],
) -> Result<Recorded> {
    let (x, seed, y) = (inputs[0].f32(), inputs[1].u32(), outputs[0].f32());
    Ok(dropout_dispatch(x, seed, y, p, stream)?.into())
}
