//! Reverse-mode autodiff as a graph transformation: [`Graph::backward`] walks the nodes
//! from the last to the first and, for each node whose outputs received a gradient, adds the
//! nodes of the op's backward rule (in `ops/<family>.rs`, beside its forward). A value used
//! by several nodes receives several gradients, which are added up.

use std::collections::HashMap;

use crate::error::{Error, Result};

use super::{DType, Graph, Source, Var};

/// The gradients [`Graph::backward`] added: dloss/dv for every value v the loss depends on
/// through differentiable ops.
#[derive(Debug, Clone)]
pub struct Gradients {
    loss: Var,
    grads: HashMap<Var, Var>,
    parameters: Vec<Var>,
}

impl Gradients {
    /// The gradient of `var`; an error if the loss does not depend on it or it has none
    /// (an integer input, a value reached only through ops without a gradient).
    pub fn of(&self, var: Var) -> Result<Var> {
        self.grads.get(&var).copied().ok_or_else(|| {
            Error::invalid(
                "backward",
                format!(
                    "value {} has no gradient with respect to the loss (value {}): the loss \
                     does not depend on it, or only through integer values",
                    var.0, self.loss.0
                ),
            )
        })
    }

    /// (parameter, gradient) for every parameter the loss depends on, in parameter order.
    pub fn parameters(&self) -> Vec<(Var, Var)> {
        self.parameters
            .iter()
            .filter_map(|p| self.grads.get(p).map(|&g| (*p, g)))
            .collect()
    }
}

impl Graph {
    /// Appends the nodes that compute the gradient of `loss` (a single value) with respect
    /// to every parameter it depends on.
    pub fn backward(&mut self, loss: Var) -> Result<Gradients> {
        let shape = self.shape(loss).to_vec();
        if shape.iter().product::<usize>() != 1 || self.dtype(loss) != DType::F32 {
            return Err(Error::invalid(
                "backward",
                format!(
                    "the loss must be a single f32 value, got shape {shape:?} ({:?})",
                    self.dtype(loss)
                ),
            ));
        }
        if !self.values[loss.0].needs_grad {
            return Err(Error::invalid(
                "backward",
                "the loss does not depend on any parameter through differentiable ops",
            ));
        }
        let seed = self.constant(vec![1.0], &shape)?;
        let mut grads: HashMap<Var, Var> = HashMap::from([(loss, seed)]);
        let forward_nodes = self.nodes.len();
        for index in (0..forward_nodes).rev() {
            let node = self.nodes[index].clone();
            let output_grads: Vec<Option<Var>> =
                node.outputs.iter().map(|v| grads.get(v).copied()).collect();
            if output_grads.iter().all(Option::is_none)
                || !node.inputs.iter().any(|v| self.values[v.0].needs_grad)
            {
                continue;
            }
            let input_grads = node
                .op
                .backward(self, &node.inputs, &node.outputs, &output_grads)?;
            for (&input, grad) in node.inputs.iter().zip(input_grads) {
                let Some(grad) = grad else { continue };
                if !self.values[input.0].needs_grad {
                    continue;
                }
                let total = match grads.get(&input) {
                    Some(&earlier) => self.add(earlier, grad)?,
                    None => grad,
                };
                grads.insert(input, total);
            }
        }
        let parameters = (0..self.values.len())
            .filter(|&i| matches!(self.values[i].source, Source::Parameter { .. }))
            .map(Var)
            .collect();
        Ok(Gradients {
            loss,
            grads,
            parameters,
        })
    }
}
