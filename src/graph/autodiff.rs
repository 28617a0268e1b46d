//! Reverse-mode autodiff as a graph transformation: [`Graph::backward`] walks the nodes
//! from the last to the first and, for each node whose outputs received a gradient, adds the
//! nodes of the op's backward rule (in `ops/<family>.rs`, beside its forward). A value used
//! by several nodes receives several gradients, which are added up.

use std::collections::HashMap;

use crate::error::{Error, Result};

use super::{DType, Graph, Source, Var};

/// The gradients [`Graph::backward`] added: dloss/dv for every value v the loss depends on
/// through differentiable ops (parameters, differentiable inputs and the values between).
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
                    var.index, self.loss.index
                ),
            )
        })
    }

    /// The gradient of every parameter the loss depends on, in parameter order: the values
    /// to name among compile's outputs for an optimizer ([`crate::graph::Plan::parameter_pairs`]).
    pub fn parameter_gradients(&self) -> Vec<Var> {
        self.parameters()
            .into_iter()
            .map(|(_, grad)| grad)
            .collect()
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
        self.check("backward", loss)?;
        let shape = self.shape(loss).to_vec();
        if shape.iter().product::<usize>() != 1 || self.dtype(loss) != DType::F32 {
            return Err(Error::invalid(
                "backward",
                format!(
                    "the loss must be a single f32 value, got shape {shape:?} ({:?}): for \
                     another output, seed its gradient with backward_from",
                    self.dtype(loss)
                ),
            ));
        }
        let seed = self.constant(vec![1.0], &shape)?;
        self.backward_from(loss, seed)
    }

    /// The vector-Jacobian product: appends the nodes that compute, for every parameter and
    /// differentiable input that `output` depends on, the gradient of Σ seed·output, where
    /// `seed` is a value of `output`'s shape (an input fed each run, say, holding the
    /// gradient that flows into `output` from outside the graph). [`Graph::backward`] is
    /// this with a seed of 1 for a single-value loss.
    pub fn backward_from(&mut self, output: Var, seed: Var) -> Result<Gradients> {
        self.check_each("backward", &[output, seed])?;
        if self.dtype(output) != DType::F32
            || self.dtype(seed) != DType::F32
            || self.shape(seed) != self.shape(output)
        {
            return Err(Error::invalid(
                "backward",
                format!(
                    "the seed gradient must be f32 of the output's shape {:?} ({:?}), got {:?} \
                     ({:?})",
                    self.shape(output),
                    self.dtype(output),
                    self.shape(seed),
                    self.dtype(seed)
                ),
            ));
        }
        let loss = output;
        if !self.values[loss.index].needs_grad {
            return Err(Error::invalid(
                "backward",
                "the output does not depend on any parameter or differentiable input through \
                 differentiable ops",
            ));
        }
        let mut grads: HashMap<Var, Var> = HashMap::from([(loss, seed)]);
        let forward_nodes = self.nodes.len();
        for index in (0..forward_nodes).rev() {
            let node = self.nodes[index].clone();
            let output_grads: Vec<Option<Var>> =
                node.outputs.iter().map(|v| grads.get(v).copied()).collect();
            if output_grads.iter().all(Option::is_none)
                || !node.inputs.iter().any(|v| self.values[v.index].needs_grad)
            {
                continue;
            }
            let input_grads = node
                .op
                .backward(self, &node.inputs, &node.outputs, &output_grads)?;
            for (&input, grad) in node.inputs.iter().zip(input_grads) {
                let Some(grad) = grad else { continue };
                if !self.values[input.index].needs_grad {
                    continue;
                }
                let total = match grads.get(&input) {
                    Some(&earlier) => self.add(earlier, grad)?,
                    None => grad,
                };
                grads.insert(input, total);
            }
        }
        let parameters: Vec<Var> = (0..self.values.len())
            .filter(|&i| matches!(self.values[i].source, Source::Parameter { .. }))
            .map(|index| self.var(index))
            .collect();
        self.give_each_parameter_its_own_gradient(&parameters, &mut grads)?;
        for &parameter in &parameters {
            if let Some(&grad) = grads.get(&parameter) {
                self.parameter_gradients.insert(parameter.index, grad);
            }
        }
        Ok(Gradients {
            loss,
            grads,
            parameters,
        })
    }

    /// A parameter's gradient is written to the parameter's own gradient tensor, so it must
    /// be a computed value whose storage no other parameter's gradient shares: a gradient
    /// that is a leaf (the seed itself), or the same value or a reshape of another
    /// parameter's, is copied first.
    fn give_each_parameter_its_own_gradient(
        &mut self,
        parameters: &[Var],
        grads: &mut HashMap<Var, Var>,
    ) -> Result<()> {
        let mut alias_of = HashMap::new();
        for node in &self.nodes {
            if node.op.is_alias() {
                alias_of.insert(node.outputs[0], node.inputs[0]);
            }
        }
        let root = |mut var: Var| {
            while let Some(&input) = alias_of.get(&var) {
                var = input;
            }
            var
        };
        let mut taken = Vec::new();
        for parameter in parameters {
            let Some(&grad) = grads.get(parameter) else {
                continue;
            };
            let storage = root(grad);
            let is_leaf = !matches!(self.values[storage.index].source, Source::Computed);
            if is_leaf || taken.contains(&storage) {
                let copy = self.scale(grad, 1.0)?;
                grads.insert(*parameter, copy);
                taken.push(copy);
            } else {
                taken.push(storage);
            }
        }
        Ok(())
    }
}
