//! Models built on the graph. A model's weights live in a [`Parameters`] store (named, in
//! the order they were made: a state dict), where its layers make them; each layer's
//! `forward` adds it to a graph of any batch shape over those same weights, so the plan that
//! trains at batch 64 and the one that serves at batch 1 share them, and one optimizer
//! ([`Parameters::optimizer`]) trains every plan.
//!
//! - [`parameters`]: the store and [`Init`];
//! - [`layers`]: [`Linear`], [`Embedding`], [`LayerNorm`], [`Conv1d`] and the [`Mlp`], with
//!   PyTorch's names and layouts;
//! - [`recurrent`]: [`Recurrent`], PyTorch's RNN, GRU and LSTM stacks;
//! - [`attention`]: [`MultiheadAttention`] and the Transformer's encoder and decoder layers,
//!   with [`Mode`], which says whether dropout acts;
//!
//! The other submodules hold the larger architectures, each a config (the sizes, saved in a
//! checkpoint) and a builder that adds the model to a graph:
//! - [`seq2seq`]: the RNN encoder-decoder with attention, and the config of every
//!   sequence-to-sequence model;
//! - [`transformer`]: the Transformer encoder-decoder;
//! - [`charlm`]: the character-level language model;
//! - [`textcnn`]: the n-gram CNN text classifier.
//!
//! The models built from them, ready to train and run, are in [`crate::models`].

pub mod attention;
pub mod charlm;
pub mod layers;
pub mod parameters;
pub mod recurrent;
pub mod seq2seq;
pub mod textcnn;
pub mod transformer;

pub use attention::{
    DecodingStep, KeyValues, Mode, MultiheadAttention, TransformerDecoderLayer,
    TransformerEncoderLayer, TransformerLayerConfig,
};
pub use layers::{Conv1d, Embedding, LayerNorm, Linear, LinearSpec, Mlp};
pub use parameters::{Init, Parameters};
pub use recurrent::{Directions, Recurrent, RecurrentConfig, State};

use std::str::FromStr;

use crate::error::{Error, Result};
use crate::graph::{Graph, Var};
use crate::kernels::elementwise::Unary;

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
