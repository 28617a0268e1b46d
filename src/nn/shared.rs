//! Parameters that live outside any one graph: a model whose batches come in several shapes
//! (sequence lengths) is compiled into a plan per shape, and every plan binds the same
//! parameter and gradient tensors (`Graph::compile_with`), so one optimizer trains them all.

use crate::checkpoint::{Checkpoint, NamedTensor};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::graph::{Graph, Plan, Var, OPTIMIZER_PREFIX};
use crate::nn::seq2seq::State;
use crate::optim::Optimizer;
use crate::rng::Rng;
use crate::tensor::{numel, Tensor};

/// Values of a graph and the tensors `Graph::compile_with` stores them in.
pub type Bindings = Vec<(Var, Tensor)>;

/// `g` compiled (`Graph::compile_with`) with every value of `bindings` stored in its
/// tensor.
pub fn compile_bound(g: &Graph, outputs: &[Var], bindings: &[(Var, Tensor)]) -> Result<Plan> {
    let bound: Vec<(Var, &Tensor)> = bindings.iter().map(|(v, t)| (*v, t)).collect();
    g.compile_with(outputs, &bound)
}

/// Binds each layer's recurrent state (h, and c for an LSTM) to `tensors`, laid out layer by
/// layer, h before c: the tensors a decoding plan keeps its states in between steps.
pub fn bind_states(bindings: &mut Bindings, states: &[State], tensors: &[Tensor]) {
    let mut next = tensors.iter();
    for state in states {
        for var in std::iter::once(state.h).chain(state.c) {
            if let Some(tensor) = next.next() {
                bindings.push((var, tensor.clone()));
            }
        }
    }
}

/// How a parameter starts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Start {
    /// Uniform in ±bound (PyTorch's default for linear and recurrent layers: 1/√fan_in).
    Uniform(f32),
    /// Normal with this standard deviation (embeddings).
    Normal(f32),
    /// All zeros (biases).
    Zeros,
    /// All ones (layer norm gains).
    Ones,
}

/// One named parameter: its values and the gradient every training plan writes.
pub struct SharedParameter {
    /// The name checkpoints key on, e.g. `"embedding.weight"`.
    pub name: String,
    /// The current values, which the optimizer updates in place.
    pub value: Tensor,
    /// The gradient of the loss with respect to `value` (same shape), written by
    /// the training plan's backward pass and read by the optimizer.
    pub gradient: Tensor,
}

/// The parameters of a model, in the order they were first asked for.
pub struct SharedParameters {
    gpu: Gpu,
    rng: Rng,
    parameters: Vec<SharedParameter>,
}

impl SharedParameters {
    /// An empty set; new parameters draw their starting values from `seed`.
    pub fn new(gpu: &Gpu, seed: u64) -> Self {
        SharedParameters {
            gpu: gpu.clone(),
            rng: Rng::new(seed),
            parameters: Vec::new(),
        }
    }

    /// The parameters, in the order they were first asked for.
    pub fn iter(&self) -> impl Iterator<Item = &SharedParameter> {
        self.parameters.iter()
    }

    /// (value, gradient) pairs for an optimizer.
    pub fn optimizer_pairs(&self) -> Vec<(Tensor, Tensor)> {
        self.parameters
            .iter()
            .map(|p| (p.value.clone(), p.gradient.clone()))
            .collect()
    }

    /// How many numbers the parameters hold.
    pub fn count(&self) -> usize {
        self.parameters.iter().map(|p| p.value.numel()).sum()
    }

    /// A parameter `name` of `g`, to be bound to this set's tensor of that name (made now
    /// from `start` if it is new).
    fn get(&mut self, g: &mut Graph, name: &str, shape: &[usize], start: Start) -> Result<Var> {
        let n = numel(shape)?;
        if let Some(existing) = self.parameters.iter().find(|p| p.name == name) {
            let have = existing.value.shape();
            if have != shape {
                return Err(Error::invalid(
                    "parameters",
                    format!("{name:?} exists with shape {have:?}, asked for {shape:?}"),
                ));
            }
        } else {
            let values: Vec<f32> = match start {
                Start::Uniform(bound) => self.rng.vec(n, -bound, bound),
                Start::Normal(std) => (0..n).map(|_| self.rng.normal() * std).collect(),
                Start::Zeros => vec![0.0; n],
                Start::Ones => vec![1.0; n],
            };
            self.parameters.push(SharedParameter {
                name: name.to_string(),
                value: Tensor::from_slice(&self.gpu, &values, shape)?,
                gradient: Tensor::zeros(&self.gpu, shape)?,
            });
        }
        g.parameter(name, shape, vec![0.0; n])
    }

    /// The tensor of the parameter `name`.
    pub fn value(&self, name: &str) -> Result<&Tensor> {
        self.parameters
            .iter()
            .find(|p| p.name == name)
            .map(|p| &p.value)
            .ok_or_else(|| Error::invalid("parameters", format!("no parameter {name:?}")))
    }

    /// Overwrites every parameter with the checkpoint's tensor of the same name, after
    /// checking that the checkpoint holds exactly these names and shapes besides
    /// `extra_prefix` tensors (an optimizer's state): the error names the first that differs.
    pub fn load(&self, checkpoint: &Checkpoint, extra_prefix: &str) -> Result<()> {
        let extra = checkpoint
            .tensors
            .iter()
            .filter(|t| t.name.starts_with(extra_prefix))
            .map(|t| (t.name.as_str(), t.shape.as_slice()));
        let expected: Vec<(&str, &[usize])> = self
            .parameters
            .iter()
            .map(|p| (p.name.as_str(), p.value.shape()))
            .chain(extra)
            .collect();
        checkpoint.check_against(&expected)?;
        for p in &self.parameters {
            self.gpu
                .write(p.value.buffer(), checkpoint.get(&p.name)?.as_f32()?);
        }
        Ok(())
    }

    /// The parameters as named host tensors, for a checkpoint.
    pub fn download(&self) -> Result<Vec<NamedTensor>> {
        self.parameters
            .iter()
            .map(|p| NamedTensor::download(p.name.clone(), &p.value))
            .collect()
    }

    /// What a checkpoint of these parameters holds: the parameters, then the optimizer's
    /// state (if given) under [`OPTIMIZER_PREFIX`], which [`SharedParameters::load`] skips.
    pub fn checkpoint_tensors(&self, optimizer: Option<&Optimizer>) -> Result<Vec<NamedTensor>> {
        let mut tensors = self.download()?;
        for (name, tensor) in optimizer.map(Optimizer::state_tensors).unwrap_or_default() {
            tensors.push(NamedTensor::download(
                format!("{OPTIMIZER_PREFIX}{name}"),
                &tensor,
            )?);
        }
        Ok(tensors)
    }
}

/// Builds one graph over shared parameters, collecting what `Graph::compile_with` binds.
pub struct Binder<'a> {
    parameters: &'a mut SharedParameters,
    bound: Vec<(Var, String)>,
}

impl<'a> Binder<'a> {
    /// A binder that finds (or makes) its parameters in `parameters`; nothing is bound yet.
    pub fn new(parameters: &'a mut SharedParameters) -> Self {
        Binder {
            parameters,
            bound: Vec::new(),
        }
    }

    /// The shared parameter `name` as a value of `g`.
    pub fn parameter(
        &mut self,
        g: &mut Graph,
        name: &str,
        shape: &[usize],
        start: Start,
    ) -> Result<Var> {
        let var = self.parameters.get(g, name, shape, start)?;
        self.bound.push((var, name.to_string()));
        Ok(var)
    }

    /// The bindings of every parameter used, and of its gradient when `gradients` (from
    /// `Graph::backward`) gives one: pass them to `Graph::compile_with`.
    pub fn bindings(&self, gradients: Option<&crate::graph::Gradients>) -> Result<Bindings> {
        let mut bindings = Vec::new();
        for (var, name) in &self.bound {
            let shared = self
                .parameters
                .parameters
                .iter()
                .find(|p| &p.name == name)
                .ok_or_else(|| Error::invalid("parameters", format!("no parameter {name:?}")))?;
            bindings.push((*var, shared.value.clone()));
            if let Some(gradients) = gradients {
                bindings.push((gradients.of(*var)?, shared.gradient.clone()));
            }
        }
        Ok(bindings)
    }
}
