//! The rules of `Dropout` (`kernels::random`).

use crate::error::Result;
use crate::kernels::random::dropout_dispatch;

use super::super::{mismatch, DType, Graph, Var};
use super::{check_inputs, f32_output, NodeGradient, Op, Operand, Recorded, Shaped};

// The builders: the public `Graph` calls that add this family's ops.
impl Graph {
    /// Inverted dropout: each element of `x` kept with probability 1 − p and scaled by
    /// 1/(1 − p), else 0, by a hash of the `seed` (u32 \[1\], an input fed before each run:
    /// a new value every training step), the element's index and the dropout's stream, its
    /// count among the graph's dropouts (so that dropouts sharing a seed draw different
    /// masks). p must be in [0, 1); 0 builds no op and returns `x`.
    pub fn dropout(&mut self, x: Var, p: f32, seed: Var) -> Result<Var> {
        crate::kernels::random::drop_threshold(p)?;
        if p == 0.0 {
            return Ok(x);
        }
        let stream = self
            .nodes
            .iter()
            .filter(|node| matches!(node.op, Op::Dropout { .. }))
            .count() as u32;
        self.push_one(Op::Dropout { p, stream }, &[x, seed])
    }
}

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
