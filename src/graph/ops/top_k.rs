//! The rules of `TopK` (`kernels::top_k`): each row's k largest entries and where they are.

use crate::error::Result;
use crate::kernels::top_k::{check_top_k, top_k_dispatch};

use super::super::{DType, Graph, Var};
use super::{check_inputs, Op, Operand, Recorded, Shaped};

// The builders: the public `Graph` calls that add this family's ops.
impl Graph {
    /// The `k` largest entries along the last axis of `x` (`[…, n]`), best first (the lower
    /// index first among equal values): their values `[…, k]` and their indices (u32
    /// `[…, k]`). k is at most [`crate::kernels::top_k::MAX_K`]. Beam search reads only these
    /// instead of a row of the vocabulary per hypothesis. No gradient.
    pub fn top_k(&mut self, x: Var, k: usize) -> Result<(Var, Var)> {
        self.check("top_k", x)?;
        let outputs = self.push(Op::TopK { k }, &[x])?;
        Ok((outputs[0], outputs[1]))
    }
}

pub(super) fn infer_top_k(
    op: &'static str,
    k: usize,
    inputs: &[(&[usize], DType)],
) -> Result<Vec<Shaped>> {
    check_inputs(op, inputs, &[DType::F32])?;
    let x = inputs[0].0;
    check_top_k(x, k)?;
    let shape = [&x[..x.len() - 1], &[k]].concat();
    Ok(vec![(shape.clone(), DType::F32), (shape, DType::U32)])
}

pub(super) fn record_top_k(k: usize, inputs: &[Operand], outputs: &[Operand]) -> Result<Recorded> {
    let (x, values, indices) = (inputs[0].f32(), outputs[0].f32(), outputs[1].u32());
    Ok(top_k_dispatch(x, values, indices, k, None)?.into())
}
