//! [`Parameters`]: a model's named parameters, the one place its weights live. Modules make
//! theirs in it under a path (`params.at("encoder")` names them `encoder.…`); every graph
//! built from the modules, at any batch shape, reads and trains those same tensors; and the
//! store is what a checkpoint saves and loads and what an optimizer updates, like a
//! PyTorch model's `state_dict()` and `parameters()`.
//!
//! ```no_run
//! use shadergrad::graph::{Feed, Graph};
//! use shadergrad::nn::{Linear, Parameters};
//! use shadergrad::optim::{OptimizerConfig, Rule};
//! use shadergrad::Gpu;
//!
//! let gpu = Gpu::default_adapter()?;
//! let params = Parameters::new(&gpu, 7);
//! let layer = Linear::new(&params.at("fc"), 3, 2)?; // fc.weight [2, 3], fc.bias [2]
//! let mut optimizer = params.optimizer(OptimizerConfig::new(Rule::Sgd, 0.1))?;
//! for batch in [8, 1] {
//!     let mut g = Graph::new(&gpu);
//!     let x = g.input("x", &[batch, 3]);
//!     let y = layer.forward(&mut g, x)?; // the same weights at either batch size
//!     let plan = g.compile(&[y])?;
//! }
//! # Ok::<(), shadergrad::Error>(())
//! ```

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::checkpoint::{Checkpoint, NamedTensor};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::graph::{Graph, Parameter, Var, OPTIMIZER_PREFIX};
use crate::optim::{Optimizer, OptimizerConfig};
use crate::rng::Rng;
use crate::tensor::numel;

/// How a parameter starts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// All zeros (biases).
    Zeros,
    /// All ones (layer norm gains).
    Ones,
    /// Uniform in ±bound (PyTorch's default for linear and recurrent layers: 1/√fan_in).
    Uniform(f32),
    /// Normal with this standard deviation (embeddings: PyTorch's is 1).
    Normal(f32),
    /// Glorot & Bengio: uniform in ±√(6 / (fan_in + fan_out)).
    Xavier,
    /// He et al.: normal with standard deviation √(2 / fan_in), for ReLU layers.
    He,
}

impl Init {
    /// Starting values for a parameter of `shape`, drawn from `rng`. The fans are
    /// PyTorch's: a weight `[out, in, k…]` has fan_in = in·k…, fan_out = out·k…; a
    /// vector's are its length.
    pub fn values(self, shape: &[usize], rng: &mut Rng) -> Result<Vec<f32>> {
        let n = numel(shape)?;
        let (fan_in, fan_out) = fans(shape);
        Ok(match self {
            Init::Zeros => vec![0.0; n],
            Init::Ones => vec![1.0; n],
            Init::Uniform(bound) => rng.vec(n, -bound, bound),
            Init::Normal(std) => (0..n).map(|_| rng.normal() * std).collect(),
            Init::Xavier => {
                let bound = (6.0 / (fan_in + fan_out).max(1) as f32).sqrt();
                rng.vec(n, -bound, bound)
            }
            Init::He => {
                let std = (2.0 / fan_in.max(1) as f32).sqrt();
                (0..n).map(|_| rng.normal() * std).collect()
            }
        })
    }
}

/// (fan_in, fan_out) of a parameter of `shape`, as PyTorch counts them.
fn fans(shape: &[usize]) -> (usize, usize) {
    match shape {
        [] => (1, 1),
        [n] => (*n, *n),
        [out, input, window @ ..] => {
            let receptive: usize = window.iter().product();
            (input * receptive, out * receptive)
        }
    }
}

/// The named parameters of a model, seen from a path: cheap to clone, and every clone and
/// every [`Parameters::at`] of it shares one store.
#[derive(Clone)]
pub struct Parameters {
    gpu: Gpu,
    store: Arc<Mutex<Store>>,
    /// What this view prefixes to names: `""` at the root, `"encoder."` under `at("encoder")`.
    prefix: String,
}

struct Store {
    rng: Rng,
    /// Every parameter, in the order it was made (a state dict's order).
    parameters: Vec<Parameter>,
}

impl std::fmt::Debug for Parameters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parameters")
            .field("prefix", &self.prefix)
            .field("parameters", &self.list())
            .finish()
    }
}

impl Parameters {
    /// An empty store on `gpu`; new parameters draw their starting values from `seed`, in
    /// the order they are made.
    pub fn new(gpu: &Gpu, seed: u64) -> Parameters {
        Parameters {
            gpu: gpu.clone(),
            store: Arc::new(Mutex::new(Store {
                rng: Rng::new(seed),
                parameters: Vec::new(),
            })),
            prefix: String::new(),
        }
    }

    /// The device the parameters live on.
    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    /// The view under `name`: its parameters are called `"{name}.…"` below this one's path.
    pub fn at(&self, name: &str) -> Parameters {
        Parameters {
            gpu: self.gpu.clone(),
            store: Arc::clone(&self.store),
            prefix: format!("{}{name}.", self.prefix),
        }
    }

    /// The full name of this view's `name`.
    pub fn path(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn store(&self) -> MutexGuard<'_, Store> {
        // A panic elsewhere while the lock was held leaves the list whole: it only grows.
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The parameter `name` (under this view's path): made now from `init` if there is none
    /// yet, else the one there, which must have `shape` (an error names both shapes).
    pub fn get_or_init(&self, name: &str, shape: &[usize], init: Init) -> Result<Parameter> {
        let full = self.path(name);
        let mut store = self.store();
        if let Some(existing) = store.parameters.iter().find(|p| p.name() == full) {
            if existing.shape() != shape {
                return Err(Error::invalid(
                    "parameters",
                    format!(
                        "{full:?} exists with shape {:?}, asked for {shape:?}",
                        existing.shape()
                    ),
                ));
            }
            return Ok(existing.clone());
        }
        let values = init.values(shape, &mut store.rng)?;
        let parameter = Parameter::new(&self.gpu, &full, shape, &values)?;
        store.parameters.push(parameter.clone());
        Ok(parameter)
    }

    /// [`Parameters::get_or_init`] as a value of `g` ([`Graph::param`]).
    pub fn var(&self, g: &mut Graph, name: &str, shape: &[usize], init: Init) -> Result<Var> {
        let parameter = self.get_or_init(name, shape, init)?;
        g.param(&parameter)
    }

    /// The parameter `name` (under this view's path); an error listing what there is when
    /// there is no such parameter.
    pub fn get(&self, name: &str) -> Result<Parameter> {
        let full = self.path(name);
        let store = self.store();
        match store.parameters.iter().find(|p| p.name() == full) {
            Some(parameter) => Ok(parameter.clone()),
            None => {
                let names: Vec<&str> = store.parameters.iter().map(Parameter::name).collect();
                Err(Error::invalid(
                    "parameters",
                    format!("no parameter {full:?}; there are {names:?}"),
                ))
            }
        }
    }

    /// The parameters under this view's path, in the order they were made: a state dict.
    pub fn list(&self) -> Vec<Parameter> {
        self.store()
            .parameters
            .iter()
            .filter(|p| p.name().starts_with(&self.prefix))
            .cloned()
            .collect()
    }

    /// How many numbers the parameters under this view's path hold.
    pub fn numel(&self) -> usize {
        self.list().iter().map(Parameter::numel).sum()
    }

    /// The parameters under this view's path as named host tensors, for a checkpoint.
    pub fn named_tensors(&self) -> Result<Vec<NamedTensor>> {
        self.list()
            .iter()
            .map(|p| NamedTensor::download(p.name(), p.value()))
            .collect()
    }

    /// What a checkpoint of these parameters holds: the parameters, then the optimizer's
    /// state (if given) under [`OPTIMIZER_PREFIX`], which [`Parameters::load`] skips.
    pub fn checkpoint_tensors(&self, optimizer: Option<&Optimizer>) -> Result<Vec<NamedTensor>> {
        let mut tensors = self.named_tensors()?;
        for (name, tensor) in optimizer.map(Optimizer::state_tensors).unwrap_or_default() {
            tensors.push(NamedTensor::download(
                format!("{OPTIMIZER_PREFIX}{name}"),
                &tensor,
            )?);
        }
        Ok(tensors)
    }

    /// Overwrites every parameter under this view's path with the checkpoint's tensor of
    /// the same name, after checking that the checkpoint holds exactly these names and
    /// shapes besides an optimizer's state (under [`OPTIMIZER_PREFIX`]): the error names the
    /// first tensor that differs. Nothing is written unless everything matches.
    pub fn load(&self, checkpoint: &Checkpoint) -> Result<()> {
        let parameters = self.list();
        let named: Vec<(&str, &crate::Tensor)> =
            parameters.iter().map(|p| (p.name(), p.value())).collect();
        crate::graph::load_named(checkpoint, &named)
    }

    /// An optimizer over every parameter under this view's path and its gradient, its
    /// state keyed by the parameters' names (`optimizer.{name}.exp_avg` in a checkpoint).
    pub fn optimizer(&self, config: OptimizerConfig) -> Result<Optimizer> {
        let names: Vec<String> = self.list().iter().map(|p| p.name().to_string()).collect();
        Optimizer::new(&self.gpu, config, &self.optimizer_pairs()?)?.with_parameter_names(&names)
    }

    /// (value, gradient) of every parameter under this view's path, as
    /// [`Optimizer::new`] takes them.
    pub fn optimizer_pairs(&self) -> Result<Vec<(crate::Tensor, crate::Tensor)>> {
        self.list()
            .iter()
            .map(|p| Ok((p.value().clone(), p.gradient()?.clone())))
            .collect()
    }
}
