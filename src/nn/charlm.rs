//! A character-level language model (Karpathy's char-rnn): embedding, `layers` recurrent
//! layers, then a linear layer to logits over the character vocabulary: each position
//! predicts the character after it. Built on the graph over [`Parameters`], so the
//! training graph (a window of steps at once) and the sampling graph (one step, the
//! recurrent states kept on the GPU) train and use the same tensors.
//!
//! [`Parameters`]: crate::nn::Parameters

use serde_json::Value;

use crate::error::{Error, Result};
use crate::graph::{Graph, Var};
use crate::kernels::recurrent::CellKind;
use crate::limits::{saturating_product, MemoryEstimate, Tally};
use crate::nn::recurrent::RecurrentConfig as RecurrentLayers;
use crate::nn::seq2seq::MAX_COUNTED_LAYERS;
use crate::nn::{Directions, Embedding, Linear, Parameters, Recurrent, State};

/// The architecture: everything needed to rebuild the model from a checkpoint.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CharLmConfig {
    /// The recurrent cell of every layer (RNN, GRU or LSTM).
    pub cell: CellKind,
    /// How many distinct characters (token ids `0..vocab_size`): the embedding's rows and
    /// the logits' width.
    pub vocab_size: usize,
    /// The width of a character's embedding vector.
    pub embed: usize,
    /// The width of each recurrent layer's state.
    pub hidden: usize,
    /// How many recurrent layers are stacked (the first reads the embeddings, each other
    /// the states of the one below).
    pub layers: usize,
}

/// The `kind` a checkpoint's architecture carries.
pub const CHARLM_KIND: &str = "charlm";

impl CharLmConfig {
    /// An error naming the first size (vocabulary, embedding, hidden, layer count) that is 0.
    pub fn validate(&self) -> Result<()> {
        crate::nn::require_sizes(
            "charlm",
            &[
                ("vocabulary size", self.vocab_size),
                ("embedding size", self.embed),
                ("hidden size", self.hidden),
                ("layer count", self.layers),
            ],
        )?;
        Ok(())
    }

    /// How many numbers the parameters hold, from the sizes alone (an error when the
    /// count overflows); a test holds it to the model built.
    pub fn parameter_count(&self) -> Result<u64> {
        let (v, e, h, layers) = (self.vocab_size, self.embed, self.hidden, self.layers);
        if layers > MAX_COUNTED_LAYERS {
            return Err(Error::invalid(
                "charlm",
                format!("{layers} layers: expected at most {MAX_COUNTED_LAYERS}"),
            ));
        }
        let gated = self.cell.gates().saturating_mul(h);
        let mut tally = Tally::new();
        tally.add(&[v, e]);
        for layer in 0..layers {
            let input = if layer == 0 { e } else { h };
            tally.add(&[input, gated]).add(&[h, gated]).add(&[2, gated]);
        }
        tally.add(&[h.saturating_add(1), v]);
        tally.total(&format!(
            "the parameter count of hidden {h}, embedding {e}, {layers} layers and vocabulary {v}"
        ))
    }

    /// Roughly what training on `batch` windows of `steps` characters allocates: the
    /// parameters with their gradients and two optimizer moments, and a step's larger
    /// activations with their gradients.
    pub fn training_memory(&self, batch: usize, steps: usize) -> Result<MemoryEstimate> {
        let (v, e, h, layers) = (self.vocab_size, self.embed, self.hidden, self.layers);
        let gated = self.cell.gates().saturating_mul(h);
        let parameters = self.parameter_count()?;
        let mut memory = MemoryEstimate::for_training(parameters);
        memory
            .buffer(
                format!("the embedding table (vocabulary {v} × embedding {e})"),
                saturating_product(&[v, e]),
            )
            .buffer(
                format!("a recurrent weight (hidden {h} × {gated} gate units)"),
                saturating_product(&[h, gated]),
            )
            .buffer(
                format!("the output layer (hidden {h} × vocabulary {v})"),
                saturating_product(&[h, v]),
            )
            .buffers(
                format!("the gates and states, per layer ({steps} steps × batch {batch} × {gated} gate units)"),
                saturating_product(&[4, layers]),
                saturating_product(&[steps, batch, gated]),
            )
            .buffers(
                format!("the logits and their gradients (batch {batch} × {steps} steps × vocabulary {v})"),
                3,
                saturating_product(&[batch, steps, v]),
            );
        Ok(memory)
    }

    /// The architecture as the JSON a checkpoint stores (`"kind": "charlm"`, the cell's
    /// name and the sizes); [`CharLmConfig::from_json`] reads it back.
    pub fn to_json(&self) -> Value {
        crate::nn::config_record(self, CHARLM_KIND)
    }

    /// The architecture a checkpoint stored ([`CharLmConfig::to_json`]). An error when the
    /// `kind` is not `"charlm"` (the checkpoint holds another model), a field is missing
    /// or ill-typed, the cell is unknown or a size is 0.
    pub fn from_json(value: &Value) -> Result<Self> {
        let config: CharLmConfig =
            crate::nn::from_config_record(value, CHARLM_KIND, "a train-lm model")?;
        config.validate()?;
        Ok(config)
    }
}

/// The language model's modules, named as a PyTorch module of the same structure names
/// them: `embedding.weight` `[V, E]`, `rnn.*` ([`Recurrent`]'s `weight_ih_l0`, …),
/// `output.weight` `[V, H]`, `output.bias` `[V]`.
#[derive(Debug, Clone)]
pub struct CharLm {
    /// The architecture.
    pub config: CharLmConfig,
    embedding: Embedding,
    rnn: Recurrent,
    output: Linear,
}

impl CharLm {
    /// The modules of `config`, their parameters made (or found) in `params`.
    pub fn new(config: &CharLmConfig, params: &Parameters) -> Result<Self> {
        let embedding = Embedding::new(&params.at("embedding"), config.vocab_size, config.embed)?;
        let rnn = Recurrent::new(
            &params.at("rnn"),
            RecurrentLayers {
                cell: config.cell,
                input_size: config.embed,
                hidden_size: config.hidden,
                num_layers: config.layers,
                directions: Directions::Forward,
            },
        )?;
        let output = Linear::new(&params.at("output"), config.hidden, config.vocab_size)?;
        Ok(CharLm {
            config: config.clone(),
            embedding,
            rnn,
            output,
        })
    }

    /// Each layer's zero state for `batch` rows.
    pub fn zero_states(&self, g: &mut Graph, batch: usize) -> Result<Vec<State>> {
        self.rnn.zero_states(g, batch)
    }

    /// Logits `[T·B, V]` (time-major rows: t·B + b) for ids `[T, B]` (u32, time-major) read from
    /// `initial` (one state per layer), and every layer's final state.
    pub fn logits(&self, g: &mut Graph, ids: Var, initial: &[State]) -> Result<(Var, Vec<State>)> {
        let config = &self.config;
        if initial.len() != config.layers {
            return Err(Error::invalid(
                "charlm",
                format!(
                    "the model has {} layers, got {} initial states",
                    config.layers,
                    initial.len()
                ),
            ));
        }
        let (steps, batch) = match *g.shape(ids) {
            [t, b] => (t, b),
            ref other => {
                return Err(Error::invalid(
                    "charlm",
                    format!("expected ids [T, B], got {other:?}"),
                ))
            }
        };
        let x = self.embedding.forward(g, ids)?;
        let out = self.rnn.forward(g, x, Some(initial), None)?;
        let rows = g.reshape(out.output, &[steps * batch, config.hidden])?;
        let logits = self.output.forward(g, rows)?;
        Ok((logits, out.finals))
    }
}
