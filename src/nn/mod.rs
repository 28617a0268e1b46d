//! Layers built on the graph: [`Linear`], activations, and an [`Mlp`] builder, with seeded
//! initialisation and named parameters (`"<layer>.weight"`, `"<layer>.bias"`), the names
//! checkpoints key on.
//!
//! The submodules hold the larger architectures, each a config (the sizes, saved in a
//! checkpoint) and a builder that adds the model to a graph:
//! - [`shared`]: parameters that live outside any one graph, so that the plans of several
//!   batch shapes train the same tensors;
//! - [`seq2seq`]: the RNN encoder-decoder with attention, and the config of every
//!   sequence-to-sequence model;
//! - [`transformer`]: the Transformer encoder-decoder;
//! - [`charlm`]: the character-level language model;
//! - [`textcnn`]: the n-gram CNN text classifier.
//!
//! The models built from them, ready to train and run, are in [`crate::models`].

pub mod charlm;
pub mod seq2seq;
pub mod shared;
pub mod textcnn;
pub mod transformer;

use std::str::FromStr;

use crate::error::{Error, Result};
use crate::graph::{GemmSpec, Graph, Var};
use crate::kernels::elementwise::Unary;
use crate::limits::{saturating_product, MemoryEstimate, Tally};
use crate::rng::Rng;

/// An elementwise nonlinearity between layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// Hyperbolic tangent: squashes to (-1, 1), centred on 0.
    Tanh,
    /// Rectified linear unit: max(0, x).
    Relu,
    /// Logistic sigmoid: 1 / (1 + e^(-x)), squashes to (0, 1).
    Sigmoid,
    /// Gaussian error linear unit: x·Φ(x), PyTorch's exact `nn.GELU()`.
    Gelu,
    /// Sigmoid linear unit (swish): x·σ(x), PyTorch's `nn.SiLU()`.
    Silu,
}

impl Activation {
    /// Adds this nonlinearity, applied to every element of `x`, to `g`; the result has
    /// `x`'s shape.
    pub fn apply(self, g: &mut Graph, x: Var) -> Result<Var> {
        g.map(
            x,
            match self {
                Activation::Tanh => Unary::Tanh,
                Activation::Relu => Unary::Relu,
                Activation::Sigmoid => Unary::Sigmoid,
                Activation::Gelu => Unary::Gelu,
                Activation::Silu => Unary::Silu,
            },
        )
    }

    /// The initialisation that keeps activations at a steady scale through this
    /// nonlinearity: He for ReLU and its smooth cousins GELU and SiLU (which damp about
    /// half their inputs), Xavier otherwise.
    pub fn default_init(self) -> Init {
        match self {
            Activation::Relu | Activation::Gelu | Activation::Silu => Init::He,
            Activation::Tanh | Activation::Sigmoid => Init::Xavier,
        }
    }

    /// The lower-case name the command line and checkpoints use (`"tanh"`, `"relu"`,
    /// `"sigmoid"`, `"gelu"`, `"silu"`); [`FromStr`] parses it back.
    pub fn name(self) -> &'static str {
        match self {
            Activation::Tanh => "tanh",
            Activation::Relu => "relu",
            Activation::Sigmoid => "sigmoid",
            Activation::Gelu => "gelu",
            Activation::Silu => "silu",
        }
    }

    /// Every activation, in the order the command line lists them.
    pub const ALL: [Activation; 5] = [
        Activation::Tanh,
        Activation::Relu,
        Activation::Sigmoid,
        Activation::Gelu,
        Activation::Silu,
    ];
}

impl FromStr for Activation {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        match text {
            "tanh" => Ok(Activation::Tanh),
            "relu" => Ok(Activation::Relu),
            "sigmoid" => Ok(Activation::Sigmoid),
            "gelu" => Ok(Activation::Gelu),
            "silu" => Ok(Activation::Silu),
            other => Err(Error::invalid(
                "activation",
                format!("{other:?} is not one of tanh, relu, sigmoid, gelu, silu"),
            )),
        }
    }
}

/// A model's config as a checkpoint records it: its fields and `"kind": kind`, which names
/// the model so that a checkpoint of another one is refused.
pub fn config_record<T: serde::Serialize>(config: &T, kind: &str) -> serde_json::Value {
    let mut record = serde_json::json!(config);
    if let Some(map) = record.as_object_mut() {
        map.insert("kind".into(), kind.into());
    }
    record
}

/// The config of a [`config_record`] of `kind`: an error naming what is missing or
/// ill-typed when `record` is not one (`what` names the model in it, e.g. "a train-lm
/// model").
pub fn from_config_record<T: serde::de::DeserializeOwned>(
    record: &serde_json::Value,
    kind: &str,
    what: &str,
) -> Result<T> {
    if record.get("kind").and_then(serde_json::Value::as_str) != Some(kind) {
        return Err(Error::invalid(
            "checkpoint",
            format!("the architecture has no \"kind\": \"{kind}\" ({what}): {record}"),
        ));
    }
    T::deserialize(record).map_err(|e| {
        Error::invalid(
            "checkpoint",
            format!("the architecture is not {what}'s ({e}): {record}"),
        )
    })
}

/// An error naming the first of the model's sizes that is 0 (`op` names the model).
pub fn require_sizes(op: &'static str, sizes: &[(&str, usize)]) -> Result<()> {
    match sizes.iter().find(|(_, value)| *value == 0) {
        Some((what, _)) => Err(Error::invalid(
            op,
            format!("the {what} must be at least 1, got 0"),
        )),
        None => Ok(()),
    }
}

/// How a weight matrix `[fan_in, fan_out]` starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Init {
    /// Glorot & Bengio: uniform in ±√(6 / (fan_in + fan_out)).
    Xavier,
    /// He et al.: normal with standard deviation √(2 / fan_in).
    He,
}

impl Init {
    /// `fan_in · fan_out` initial weights drawn from `rng`.
    pub fn weights(self, fan_in: usize, fan_out: usize, rng: &mut Rng) -> Vec<f32> {
        let n = fan_in * fan_out;
        match self {
            Init::Xavier => {
                let bound = (6.0 / (fan_in + fan_out) as f32).sqrt();
                rng.vec(n, -bound, bound)
            }
            Init::He => {
                let std = (2.0 / fan_in as f32).sqrt();
                (0..n).map(|_| rng.normal() * std).collect()
            }
        }
    }
}

/// y = x·W + b for x `[batch, fan_in]`, W `[fan_in, fan_out]`, b `[fan_out]` (starting at 0).
#[derive(Debug, Clone, Copy)]
pub struct Linear {
    /// The weight matrix, shape `[fan_in, fan_out]`.
    pub weight: Var,
    /// The bias, shape `[fan_out]`, added to every row.
    pub bias: Var,
    /// How many features each input row has.
    pub fan_in: usize,
    /// How many features each output row has.
    pub fan_out: usize,
}

impl Linear {
    /// Adds the parameters `<name>.weight` and `<name>.bias` to `g`.
    pub fn new(
        g: &mut Graph,
        name: &str,
        fan_in: usize,
        fan_out: usize,
        init: Init,
        rng: &mut Rng,
    ) -> Result<Linear> {
        if fan_in == 0 || fan_out == 0 {
            return Err(Error::invalid(
                "Linear",
                format!("{name}: a layer of {fan_in} inputs and {fan_out} outputs has no weights"),
            ));
        }
        let weight = g.parameter(
            &format!("{name}.weight"),
            &[fan_in, fan_out],
            init.weights(fan_in, fan_out, rng),
        )?;
        let bias = g.parameter(&format!("{name}.bias"), &[fan_out], vec![0.0; fan_out])?;
        Ok(Linear {
            weight,
            bias,
            fan_in,
            fan_out,
        })
    }

    /// Adds `x · weight + bias` to `g`: for `x` of shape `[batch, fan_in]`, the result is
    /// `[batch, fan_out]`.
    pub fn forward(&self, g: &mut Graph, x: Var) -> Result<Var> {
        g.gemm(x, self.weight, GemmSpec::new().bias(self.bias))
    }
}

/// A multi-layer perceptron: Linear layers with an activation between them (none after
/// the last, which gives logits).
#[derive(Debug, Clone)]
pub struct Mlp {
    /// The layers, input first: `layers[i].fan_out == layers[i + 1].fan_in`.
    pub layers: Vec<Linear>,
    /// The nonlinearity after every layer but the last.
    pub activation: Activation,
}

impl Mlp {
    /// Layers of the given sizes, `sizes[0]` inputs to `sizes.last()` outputs, named
    /// `layer0`, `layer1`, …; weights drawn from `rng` by the activation's initialisation.
    pub fn new(
        g: &mut Graph,
        sizes: &[usize],
        activation: Activation,
        rng: &mut Rng,
    ) -> Result<Mlp> {
        if sizes.len() < 2 {
            return Err(Error::invalid(
                "Mlp",
                format!("needs at least an input and an output size, got {sizes:?}"),
            ));
        }
        let layers = sizes
            .windows(2)
            .enumerate()
            .map(|(i, pair)| {
                Linear::new(
                    g,
                    &format!("layer{i}"),
                    pair[0],
                    pair[1],
                    activation.default_init(),
                    rng,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Mlp { layers, activation })
    }

    /// How many numbers the parameters of an MLP of `sizes` hold (an error when the count
    /// overflows): weights and biases of each layer.
    pub fn parameter_count(sizes: &[usize]) -> Result<u64> {
        let mut tally = Tally::new();
        for pair in sizes.windows(2) {
            tally.add(&[pair[0].saturating_add(1), pair[1]]);
        }
        tally.total(&format!("the parameter count of layers {sizes:?}"))
    }

    /// Roughly what training an MLP of `sizes` on batches of `batch` allocates: the
    /// parameters with their gradients and two optimizer moments, and each layer's
    /// activations with their gradients.
    pub fn training_memory(sizes: &[usize], batch: usize) -> Result<MemoryEstimate> {
        let parameters = Mlp::parameter_count(sizes)?;
        let mut memory = MemoryEstimate::for_training(parameters);
        memory.buffer(
            format!(
                "a batch of inputs (batch {batch} × {} features)",
                sizes.first().copied().unwrap_or(0)
            ),
            saturating_product(&[batch, sizes.first().copied().unwrap_or(0)]),
        );
        for (i, pair) in sizes.windows(2).enumerate() {
            let (inputs, outputs) = (pair[0], pair[1]);
            memory
                .buffer(
                    format!("layer {i}'s weight ({inputs} inputs × {outputs} outputs)"),
                    saturating_product(&[inputs, outputs]),
                )
                .buffers(
                    format!(
                        "layer {i}'s activations and their gradients (batch {batch} × {outputs})"
                    ),
                    3,
                    saturating_product(&[batch, outputs]),
                );
        }
        Ok(memory)
    }

    /// The logits for a batch x `[batch, sizes[0]]`.
    pub fn forward(&self, g: &mut Graph, x: Var) -> Result<Var> {
        let mut h = x;
        for (i, layer) in self.layers.iter().enumerate() {
            h = layer.forward(g, h)?;
            if i + 1 < self.layers.len() {
                h = self.activation.apply(g, h)?;
            }
        }
        Ok(h)
    }
}
