//! The rules of `LayerNorm` and its gradient `LayerNormGrad` (`kernels::layernorm`).

use crate::error::{Error, Result};
use crate::kernels::copy::strided_copy_dispatch;
use crate::kernels::layernorm::{
    layer_norm_backward_dispatches, layer_norm_dispatch, LayerNormForward, LayerNormGrads,
    LayerNormShape, LayerNormVariant,
};
use crate::tensor::Tensor;

use super::super::{mismatch, DType, Graph, Var};
use super::{check_inputs, NodeGradient, Op, Operand, Recorded, Shaped};

// The builders: the public `Graph` calls that add this family's ops.
impl Graph {
    /// Layer norm over the last axis with a gain and a bias of its size.
    pub fn layer_norm(&mut self, x: Var, gain: Var, bias: Var, eps: f32) -> Result<Var> {
        Ok(self.push(Op::LayerNorm { eps }, &[x, gain, bias])?[0])
    }
}

/// Outputs y and the per-row mean and rstd (x's shape with the last axis 1).
pub(super) fn infer_layer_norm(
    op: &'static str,
    eps: f32,
    inputs: &[(&[usize], DType)],
) -> Result<Vec<Shaped>> {
    check_inputs(op, inputs, &[DType::F32; 3])?;
    let x = inputs[0].0;
    let d = x.last().copied().unwrap_or(0);
    if d == 0 || !(eps > 0.0 && eps.is_finite()) {
        return Err(Error::invalid(
            op,
            format!(
                "needs a last axis of at least one element and eps > 0, got shape {x:?} and \
                 eps {eps}"
            ),
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

/// `LayerNormGrad` from x, dy, the gain and the saved mean and rstd.
pub(super) fn backward_layer_norm(g: &mut Graph, node: NodeGradient) -> Result<Vec<Option<Var>>> {
    let (x, gain) = (node.inputs[0], node.inputs[1]);
    let (mean, rstd) = (node.outputs[1], node.outputs[2]);
    let grads = g.push(Op::LayerNormGrad, &[x, node.dy, gain, mean, rstd])?;
    Ok(grads.into_iter().map(Some).collect())
}

pub(super) fn record_layer_norm(
    eps: f32,
    inputs: &[Operand],
    outputs: &[Operand],
) -> Result<Recorded> {
    let x = inputs[0].f32();
    let shape = LayerNormShape::new("layer_norm", x.shape(), -1)?;
    let forward = LayerNormForward {
        y: outputs[0].f32().clone(),
        mean: outputs[1].f32().clone(),
        rstd: outputs[2].f32().clone(),
    };
    let variant = LayerNormVariant::choose(forward.y.gpu(), shape.d);
    let (gain, bias) = (inputs[1].f32(), inputs[2].f32());
    let dispatch = layer_norm_dispatch(x, Some(gain), Some(bias), &forward, &shape, eps, variant)?;
    Ok(dispatch.into())
}

/// Outputs dx, dgain and dbias.
pub(super) fn infer_layer_norm_grad(
    op: &'static str,
    inputs: &[(&[usize], DType)],
) -> Result<Vec<Shaped>> {
    check_inputs(op, inputs, &[DType::F32; 5])?;
    let x = inputs[0].0;
    let d = x.last().copied().unwrap_or(0);
    Ok(vec![
        (x.to_vec(), DType::F32),
        (vec![d], DType::F32),
        (vec![d], DType::F32),
    ])
}

pub(super) fn record_layer_norm_grad(inputs: &[Operand], outputs: &[Operand]) -> Result<Recorded> {
    let grads = LayerNormGrads {
        dx: outputs[0].f32().clone(),
        dgain: outputs[1].f32().clone(),
        dbias: outputs[2].f32().clone(),
    };
    if grads.dx.numel() == 0 {
        // No rows: dx is empty, but dgain and dbias are sums over no rows.
        return zeros_record(&[&grads.dgain, &grads.dbias]);
    }
    let x = inputs[0].f32();
    let shape = LayerNormShape::new("layer_norm_grad", x.shape(), -1)?;
    let [dy, gain, mean, rstd] = [1, 2, 3, 4].map(|i| inputs[i].f32());
    let variant = LayerNormVariant::choose(grads.dx.gpu(), shape.d);
    let (dispatches, scratch) =
        layer_norm_backward_dispatches(x, dy, Some(gain), mean, rstd, &grads, &shape, variant)?;
    Ok(Recorded {
        dispatches,
        scratch,
        groupings: Vec::new(),
    })
}

/// Records zeros into each of `targets`: one zero copied over it. A dispatch, not a write at
/// compile time, since a plan's buffer may serve other values in turn.
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
