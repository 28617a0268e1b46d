//! The RNN encoder-decoder (Sutskever et al. 2014) with Luong's dot-product attention
//! (Luong et al. 2015), built on the graph over [`Parameters`].
//!
//! - Encoder: source embedding, then `layers` recurrent layers (each bidirectional if asked:
//!   a forward and a reversed layer whose states are concatenated), over time-major ids
//!   `[Ts, B]` with the source lengths masking the padding.
//! - Decoder: target embedding and `layers` recurrent layers started from the encoder's
//!   final states (through a tanh bridge when the encoder is bidirectional), fed BOS and the
//!   target (teacher forcing).
//! - Attention: each decoder state queries the encoder states (keys projected to the
//!   decoder's width, "general" scoring) through the attention kernel with the source
//!   lengths as the key-padding mask; [context; state] → tanh layer → vocabulary logits.
//!
//! The same functions build the training graph (all target steps at once) and the decoding
//! graphs (the encoder once, then one decoder step at a time).

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::graph::{Graph, Plan, Var};
use crate::kernels::recurrent::CellKind;
use crate::limits::{saturating_product, MemoryEstimate, Tally};
use crate::nn::recurrent::RecurrentConfig as RecurrentLayers;
use crate::nn::transformer::TransformerConfig;
use crate::nn::{Directions, Embedding, Linear, LinearSpec, Parameters, Recurrent};
use crate::tensor::Tensor;

/// How the decoder looks at the encoder states; in checkpoint configs `"dot"`,
/// `"additive"` or `"none"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttentionKind {
    /// Luong's scores hᵢ·W·sⱼ through the attention kernel.
    Dot,
    /// Bahdanau's scores v·tanh(W₁hᵢ + W₂sⱼ), composed from graph ops over a
    /// `[B, Td, Ts, H]` tensor, with the padding masked by an additive key mask.
    Additive,
    /// None: the encoder's final state is all the decoder gets.
    None,
}

impl AttentionKind {
    /// The name checkpoints store and `--attention` takes: `"dot"`, `"additive"` or
    /// `"none"`.
    pub fn name(self) -> &'static str {
        match self {
            AttentionKind::Dot => "dot",
            AttentionKind::Additive => "additive",
            AttentionKind::None => "none",
        }
    }
}

/// The `kind` a seq2seq checkpoint's architecture carries.
pub const SEQ2SEQ_KIND: &str = "seq2seq";

/// A sequence-to-sequence model's architecture: everything needed to rebuild it from a
/// checkpoint, where it is recorded as one JSON object: `"kind": "seq2seq"`, the sizes,
/// and `"arch"` naming the [`Architecture`] whose fields sit beside it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Seq2SeqConfig {
    /// Ids of the source vocabulary, special tokens included: the encoder's embedding rows.
    pub source_vocab_size: usize,
    /// Ids of the target vocabulary, special tokens included: the decoder's embedding rows
    /// and the output layer's classes.
    pub target_vocab_size: usize,
    /// Layers of the encoder and of the decoder.
    pub layers: usize,
    /// The network between the embeddings and the output layer.
    #[serde(flatten)]
    pub architecture: Architecture,
}

/// The two families of sequence-to-sequence networks, each with only the sizes it reads.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "arch", rename_all = "lowercase")]
pub enum Architecture {
    /// The RNN encoder-decoder of this module.
    Recurrent(RecurrentConfig),
    /// The Transformer of [`crate::nn::transformer`].
    Transformer(TransformerConfig),
}

/// The sizes of the RNN encoder-decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecurrentConfig {
    /// The recurrent cell of every layer.
    pub cell: CellKind,
    /// How the decoder looks at the encoder's states.
    pub attention: AttentionKind,
    /// Width of the token embeddings.
    pub embed: usize,
    /// Units of each recurrent layer (of each direction, when bidirectional).
    pub hidden: usize,
    /// Whether each encoder layer also reads the source backwards.
    pub bidirectional: bool,
}

impl RecurrentConfig {
    /// The width of the encoder's outputs.
    fn encoder_width(&self) -> usize {
        self.hidden
            .saturating_mul(if self.bidirectional { 2 } else { 1 })
    }
}

impl Architecture {
    /// The name checkpoints and `--arch` use for the family.
    pub fn name(&self) -> &'static str {
        match self {
            Architecture::Recurrent(_) => "recurrent",
            Architecture::Transformer(_) => "transformer",
        }
    }
}

impl Seq2SeqConfig {
    /// The width of the decoder's states, and so of the output layer's input: the
    /// recurrent layers' units, or a Transformer's d_model.
    pub fn width(&self) -> usize {
        match &self.architecture {
            Architecture::Recurrent(recurrent) => recurrent.hidden,
            Architecture::Transformer(transformer) => transformer.width,
        }
    }

    /// Checks every size and probability, naming the bad one.
    pub fn validate(&self) -> Result<()> {
        crate::nn::require_sizes(
            "seq2seq",
            &[
                ("source vocabulary size", self.source_vocab_size),
                ("target vocabulary size", self.target_vocab_size),
                ("layer count", self.layers),
            ],
        )?;
        match &self.architecture {
            Architecture::Recurrent(recurrent) => crate::nn::require_sizes(
                "seq2seq",
                &[
                    ("embedding size", recurrent.embed),
                    ("hidden size", recurrent.hidden),
                ],
            ),
            Architecture::Transformer(transformer) => transformer.validate(),
        }
    }

    /// The architecture as a checkpoint's config records it.
    pub fn to_json(&self) -> Value {
        crate::nn::config_record(self, SEQ2SEQ_KIND)
    }

    /// Reads [`Seq2SeqConfig::to_json`]'s record, and those of older checkpoints: without
    /// `"arch"` (recurrent), a Transformer's with the recurrent fields it ignored, without
    /// `"dropout"` (none), and with one `"vocab_size"` for both sides. Then checks the
    /// sizes.
    pub fn from_json(value: &Value) -> Result<Self> {
        let mut record = value.clone();
        if let Some(map) = record.as_object_mut() {
            // Checkpoints from before the Transformer have no "arch": they are recurrent.
            map.entry("arch").or_insert_with(|| json!("recurrent"));
            // Checkpoints from before token levels share one vocabulary.
            if let Some(shared) = map.remove("vocab_size") {
                map.entry("source_vocab_size").or_insert(shared.clone());
                map.entry("target_vocab_size").or_insert(shared);
            }
        }
        let config: Seq2SeqConfig =
            crate::nn::from_config_record(&record, SEQ2SEQ_KIND, "a seq2seq model")?;
        config.validate()?;
        Ok(config)
    }

    /// How many numbers the model's parameters hold, from the sizes alone: an error when
    /// the count overflows, as sizes from a user or a file may. It must agree with the
    /// model built (a test holds it to that).
    pub fn parameter_count(&self) -> Result<u64> {
        let (vs, vt, layers) = (self.source_vocab_size, self.target_vocab_size, self.layers);
        if layers > MAX_COUNTED_LAYERS {
            return Err(Error::invalid(
                "seq2seq",
                format!("{layers} layers: expected at most {MAX_COUNTED_LAYERS}"),
            ));
        }
        let mut tally = Tally::new();
        let described = match &self.architecture {
            Architecture::Transformer(transformer) => {
                let (d, ff) = (transformer.width, transformer.ff);
                let mut layer = |attention_blocks: usize| {
                    let residual_blocks = attention_blocks + 1;
                    for _ in 0..attention_blocks {
                        tally.add(&[4, d, d]).add(&[4, d]);
                    }
                    tally.add(&[d, ff]).add(&[ff]).add(&[ff, d]).add(&[d]);
                    tally.add(&[residual_blocks, 2, d]);
                };
                for _ in 0..layers {
                    layer(1);
                    layer(2);
                }
                tally
                    .add(&[vs, d])
                    .add(&[vt, d])
                    .add(&[2, 2, d])
                    .add(&[d, vt])
                    .add(&[vt]);
                format!("width {d}, feed-forward {ff}")
            }
            Architecture::Recurrent(recurrent) => {
                let (e, h) = (recurrent.embed, recurrent.hidden);
                let gated = recurrent.cell.gates().saturating_mul(h);
                let directions = if recurrent.bidirectional { 2 } else { 1 };
                let mut add_recurrent = |input: usize| {
                    tally.add(&[input, gated]).add(&[h, gated]).add(&[2, gated]);
                };
                for layer in 0..layers {
                    let input = if layer == 0 {
                        e
                    } else {
                        recurrent.encoder_width()
                    };
                    for _ in 0..directions {
                        add_recurrent(input);
                    }
                    add_recurrent(if layer == 0 { e } else { h });
                }
                if recurrent.bidirectional {
                    let bridges = if recurrent.cell == CellKind::Lstm {
                        2
                    } else {
                        1
                    };
                    tally.add(&[layers, bridges, h.saturating_mul(2).saturating_add(1), h]);
                }
                let width = recurrent.encoder_width();
                match recurrent.attention {
                    AttentionKind::None => {}
                    AttentionKind::Dot => {
                        tally
                            .add(&[width, h])
                            .add(&[width.saturating_add(h).saturating_add(1), h]);
                    }
                    AttentionKind::Additive => {
                        tally.add(&[width, h]).add(&[h, h]).add(&[h]);
                        tally.add(&[width.saturating_add(h).saturating_add(1), h]);
                    }
                }
                tally
                    .add(&[vs, e])
                    .add(&[vt, e])
                    .add(&[h.saturating_add(1), vt]);
                format!("hidden {h}, embedding {e}")
            }
        };
        tally.total(&format!(
            "the parameter count of {described}, {layers} layers and vocabularies {vs} \
             (source) and {vt} (target)"
        ))
    }

    /// Roughly what decoding `rows` hypotheses at a time, of sources up to `source_steps`
    /// and outputs up to `target_steps` tokens, allocates: the parameters, the output layer
    /// and one step's logits over the target vocabulary (decoding projects one position per
    /// hypothesis), and the larger activations (a Transformer's encoder over the source, and
    /// its decoder's caches of keys and values).
    pub fn decoding_memory(
        &self,
        rows: usize,
        source_steps: usize,
        target_steps: usize,
    ) -> Result<MemoryEstimate> {
        let (v, h, layers) = (self.target_vocab_size, self.width(), self.layers);
        let (ts, td) = (source_steps.max(1), target_steps.max(1));
        let mut memory = MemoryEstimate::new();
        let parameters = self.parameter_count()?;
        memory.spread(format!("the {parameters} parameters"), parameters);
        memory.buffer(
            format!("the output layer (hidden {h} × vocabulary {v})"),
            saturating_product(&[h, v]),
        );
        memory.buffers(
            format!("one step's logits and log-probabilities ({rows} rows × vocabulary {v})"),
            2,
            saturating_product(&[rows, v]),
        );
        match &self.architecture {
            Architecture::Transformer(transformer) => {
                memory.buffers(
                    format!("each decoder layer's cache of keys and values and the encoder's keys and values for it ({rows} rows × {td} + {ts} steps × width {h})"),
                    saturating_product(&[2, layers]),
                    saturating_product(&[rows, td + ts, h]),
                );
                memory.buffers(
                    format!("the encoder's activations over the source ({rows} rows × {ts} steps × width {h})"),
                    18,
                    saturating_product(&[rows, ts, h]),
                );
                memory.buffers(
                    format!("the encoder's attention weights ({rows} rows × heads {} × {ts} × {ts} steps)", transformer.heads),
                    2,
                    saturating_product(&[rows, transformer.heads, ts, ts]),
                );
            }
            Architecture::Recurrent(recurrent) => {
                memory.buffers(
                    format!(
                        "the encoder's states, per layer ({ts} steps × {rows} rows × width {})",
                        recurrent.encoder_width()
                    ),
                    saturating_product(&[4, layers]),
                    saturating_product(&[ts, rows, recurrent.encoder_width()]),
                );
            }
        }
        Ok(memory)
    }

    /// Roughly what training on batches of `batch` pairs of up to `source_steps` and
    /// `target_steps` tokens allocates: the parameters with their gradients and two
    /// optimizer moments, and the larger activations of a step with their gradients.
    pub fn training_memory(
        &self,
        batch: usize,
        source_steps: usize,
        target_steps: usize,
    ) -> Result<MemoryEstimate> {
        let (v, h, layers) = (self.target_vocab_size, self.width(), self.layers);
        let largest_vocab = v.max(self.source_vocab_size);
        let (b, ts, td) = (batch, source_steps.max(1), target_steps.max(1));
        let mut memory = MemoryEstimate::for_training(self.parameter_count()?);
        memory.buffer(
            format!("the output layer (hidden {h} × vocabulary {v})"),
            saturating_product(&[h, v]),
        );
        // The logits go through the output layer and the loss in chunks of rows that each
        // fit in a buffer (see `logit_rows_per_chunk`): one row must fit.
        memory.spread(
            format!(
                "the logits and their gradients (batch {b} × {td} target steps × vocabulary {v})"
            ),
            saturating_product(&[3, b, td, v]),
        );
        memory.buffer(format!("one row of logits (vocabulary {v})"), v as u64);
        match &self.architecture {
            Architecture::Transformer(transformer) => {
                let (heads, ff) = (transformer.heads, transformer.ff);
                memory.buffer(
                    format!("a feed-forward weight (width {h} × feed-forward {ff})"),
                    saturating_product(&[h, ff]),
                );
                memory.buffer(
                    format!("an embedding table (vocabulary {largest_vocab} × width {h})"),
                    saturating_product(&[largest_vocab, h]),
                );
                for (what, steps, per_layer) in [("encoder", ts, 12), ("decoder", td, 18)] {
                    memory.buffers(
                        format!("the {what}'s activations, per layer (batch {b} × {steps} steps × width {h})"),
                        saturating_product(&[per_layer, layers]),
                        saturating_product(&[b, steps, h]),
                    );
                    memory.buffers(
                        format!("the {what}'s feed-forward activations (batch {b} × {steps} steps × feed-forward {ff})"),
                        saturating_product(&[2, layers]),
                        saturating_product(&[b, steps, ff]),
                    );
                }
                for (what, keys) in [("self-attention", td), ("cross-attention", ts)] {
                    memory.buffers(
                        format!("the decoder's {what} weights (batch {b} × heads {heads} × {td} × {keys} steps)"),
                        saturating_product(&[2, layers]),
                        saturating_product(&[b, heads, td, keys]),
                    );
                }
            }
            Architecture::Recurrent(recurrent) => {
                let (cell, e) = (recurrent.cell, recurrent.embed);
                let gated = cell.gates().saturating_mul(h);
                memory.buffer(
                    format!("a recurrent weight (hidden {h} × {gated} gate units)"),
                    saturating_product(&[h, cell.gates(), h]),
                );
                memory.buffer(
                    format!("an embedding table (vocabulary {largest_vocab} × embedding {e})"),
                    saturating_product(&[largest_vocab, e]),
                );
                let directions = if recurrent.bidirectional { 2 } else { 1 };
                for (what, steps, sides) in [("encoder", ts, directions), ("decoder", td, 1)] {
                    memory.buffers(
                        format!("the {what}'s gates and states, per layer ({steps} steps × batch {b} × {gated} gate units)"),
                        saturating_product(&[4, sides, layers]),
                        saturating_product(&[steps, b, gated]),
                    );
                }
                if recurrent.attention == AttentionKind::Additive {
                    memory.buffers(
                        format!("additive attention over every query and key (batch {b} × {td} × {ts} steps × hidden {h})"),
                        3,
                        saturating_product(&[b, td, ts, h]),
                    );
                }
            }
        }
        Ok(memory)
    }
}

/// The most layers a model may declare: far beyond what trains, and a bound on the loops
/// that count and build them.
pub const MAX_COUNTED_LAYERS: usize = 1024;

/// How many rows of logits over `vocab` classes a training step puts through the output
/// layer and the loss at once: all `rows` when their logits fit in one buffer of
/// `max_buffer_bytes`, else as many as fit (a multiple of 64 where 64 fit, at least one). Each chunk's logits and their
/// gradient then fit in buffers the adapter can bind: at vocabulary 30,000, batch 64 and 21
/// target steps, the logits take 154 MiB where lavapipe binds at most 128.
pub fn logit_rows_per_chunk(rows: usize, vocab: usize, max_buffer_bytes: u64) -> usize {
    let row_bytes = (vocab as u64).saturating_mul(4).max(1);
    let fitting = usize::try_from(max_buffer_bytes / row_bytes).unwrap_or(usize::MAX);
    if fitting >= rows {
        return rows.max(1);
    }
    // Whole tiles of 64 rows keep the chunks' products on the matmuls' aligned variants
    // (an unaligned row count made the output layer's weight gradient 2× slower).
    if fitting >= CHUNK_ALIGNMENT {
        fitting - fitting % CHUNK_ALIGNMENT
    } else {
        fitting.max(1)
    }
}

/// The row multiple [`logit_rows_per_chunk`] rounds chunks down to.
const CHUNK_ALIGNMENT: usize = 64;

/// Values of a graph and the tensors [`Graph::compile_with`] stores them in.
pub type Bindings = Vec<(Var, Tensor)>;

/// `g` compiled ([`Graph::compile_with`]) with every value of `bindings` stored in its
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

pub use crate::nn::recurrent::State;

/// The additive mask of padded source positions, `[B, 1, Ts]`: 0 where a key is real,
/// [`MASKED`] past each source's length.
pub fn key_mask(lengths: &[u32], steps: usize) -> Vec<f32> {
    lengths
        .iter()
        .flat_map(|&len| (0..steps).map(move |t| if t < len as usize { 0.0 } else { MASKED }))
        .collect()
}

/// A score that softmax turns into a zero weight next to any real one.
pub const MASKED: f32 = -1e9;

/// What the decoder needs from the encoder.
#[derive(Debug, Clone)]
pub struct Encoded {
    /// Keys and values of the attention (None without it): dot, keys `[B, 1, Ts, H]` and
    /// values `[B, 1, Ts, He]`; additive, projected keys `[B, 1, Ts, H]` and values `[B, Ts, He]`.
    pub keys_values: Option<(Var, Var)>,
    /// The decoder's initial state, per layer.
    pub initial: Vec<State>,
}

/// The encoder-decoder's modules, over the parameters of a [`Parameters`] store, named as a
/// PyTorch module of the same structure names them:
///
/// | name | shape |
/// |---|---|
/// | `encoder.embedding.weight`, `decoder.embedding.weight` | `[V, E]` |
/// | `encoder.rnn.*`, `decoder.rnn.*` | [`Recurrent`]'s (`weight_ih_l0`, …, `_reverse`) |
/// | `bridge_h.{k}.weight`, `bridge_c.{k}.weight` (bidirectional; `c` for an LSTM) | `[H, 2H]` |
/// | `attention.key.weight` (no bias) | `[H, He]` |
/// | `attention.query.weight`, `attention.score.weight` (additive, no bias) | `[H, H]`, `[1, H]` |
/// | `attention.combine.weight` | `[H, He + H]` |
/// | `output.weight` | `[V, H]` |
///
/// with He = H, or 2H when the encoder is bidirectional; every Linear has a `bias` unless
/// said otherwise.
#[derive(Debug, Clone)]
pub struct Seq2Seq {
    /// Ids of the source vocabulary.
    pub source_vocab_size: usize,
    /// Ids of the target vocabulary: the output layer's classes.
    pub target_vocab_size: usize,
    /// Layers of the encoder and of the decoder.
    pub layers: usize,
    /// The recurrent network's sizes.
    pub config: RecurrentConfig,
    source_embedding: Embedding,
    encoder: Recurrent,
    /// Per encoder layer, the bridges from both directions' final h (and c) to the
    /// decoder's initial state; empty unless bidirectional.
    bridges: Vec<(Linear, Option<Linear>)>,
    /// Projects the encoder states to keys (dot and additive attention).
    key: Option<Linear>,
    target_embedding: Embedding,
    decoder: Recurrent,
    /// Additive attention's query projection and score vector.
    additive: Option<(Linear, Linear)>,
    /// [context; state] → the attentional state (with attention).
    combine: Option<Linear>,
    output: Linear,
}

impl Seq2Seq {
    /// The modules of `config`, which must be recurrent, their parameters made (or found)
    /// in `params`.
    pub fn new(config: &Seq2SeqConfig, params: &Parameters) -> Result<Self> {
        let recurrent = match config.architecture {
            Architecture::Recurrent(recurrent) => recurrent,
            Architecture::Transformer(_) => {
                return Err(Error::invalid(
                    "seq2seq",
                    "a Transformer's config builds through nn::transformer::Transformer",
                ))
            }
        };
        let layers = config.layers;
        let (source_vocab, target_vocab) = (config.source_vocab_size, config.target_vocab_size);
        let (embed, hidden, width) = (recurrent.embed, recurrent.hidden, recurrent.encoder_width());
        let stack = |input_size, directions| RecurrentLayers {
            cell: recurrent.cell,
            input_size,
            hidden_size: hidden,
            num_layers: layers,
            directions,
        };
        let directions = match recurrent.bidirectional {
            true => Directions::Bidirectional,
            false => Directions::Forward,
        };
        let source_embedding =
            Embedding::new(&params.at("encoder.embedding"), source_vocab, embed)?;
        let encoder = Recurrent::new(&params.at("encoder.rnn"), stack(embed, directions))?;
        let bridges = match directions {
            Directions::Forward => Vec::new(),
            Directions::Bidirectional => (0..layers)
                .map(|k| {
                    let h = Linear::new(&params.at(&format!("bridge_h.{k}")), 2 * hidden, hidden)?;
                    let c = match recurrent.cell {
                        CellKind::Lstm => Some(Linear::new(
                            &params.at(&format!("bridge_c.{k}")),
                            2 * hidden,
                            hidden,
                        )?),
                        CellKind::Rnn | CellKind::Gru => None,
                    };
                    Ok((h, c))
                })
                .collect::<Result<Vec<_>>>()?,
        };
        let without_bias = |name: &str, inputs, outputs| {
            Linear::with_spec(
                &params.at(name),
                LinearSpec::new(inputs, outputs).without_bias(),
            )
        };
        let key = match recurrent.attention {
            AttentionKind::None => None,
            AttentionKind::Dot | AttentionKind::Additive => {
                Some(without_bias("attention.key", width, hidden)?)
            }
        };
        let target_embedding =
            Embedding::new(&params.at("decoder.embedding"), target_vocab, embed)?;
        let decoder = Recurrent::new(&params.at("decoder.rnn"), stack(embed, Directions::Forward))?;
        let additive = match recurrent.attention {
            AttentionKind::Additive => Some((
                without_bias("attention.query", hidden, hidden)?,
                without_bias("attention.score", hidden, 1)?,
            )),
            AttentionKind::Dot | AttentionKind::None => None,
        };
        let combine = match recurrent.attention {
            AttentionKind::None => None,
            AttentionKind::Dot | AttentionKind::Additive => Some(Linear::new(
                &params.at("attention.combine"),
                width + hidden,
                hidden,
            )?),
        };
        let output = Linear::new(&params.at("output"), hidden, target_vocab)?;
        Ok(Seq2Seq {
            source_vocab_size: source_vocab,
            target_vocab_size: target_vocab,
            layers,
            config: recurrent,
            source_embedding,
            encoder,
            bridges,
            key,
            target_embedding,
            decoder,
            additive,
            combine,
            output,
        })
    }

    /// A zero state `[B, H]` (and a zero cell for an LSTM) for each decoder layer.
    pub fn zero_states(&self, g: &mut Graph, batch: usize) -> Result<Vec<State>> {
        self.decoder.zero_states(g, batch)
    }

    /// The encoder over source ids `[Ts, B]` (u32, time-major) with lengths `[B]`.
    pub fn encode(&self, g: &mut Graph, source: Var, lengths: Var) -> Result<Encoded> {
        let config = &self.config;
        let (steps, batch) = (g.shape(source)[0], g.shape(source)[1]);
        let x = self.source_embedding.forward(g, source)?;
        let encoded = self.encoder.forward(g, x, None, Some(lengths))?;
        let initial = match self.bridges.is_empty() {
            true => encoded.finals,
            false => encoded
                .finals
                .chunks(2)
                .zip(&self.bridges)
                .map(|(pair, bridge)| self.bridge(g, bridge, pair[0], pair[1]))
                .collect::<Result<Vec<_>>>()?,
        };
        let keys_values = match &self.key {
            None => None,
            Some(key) => {
                let width = config.encoder_width();
                let batch_major = g.permute(encoded.output, &[1, 0, 2])?;
                let keys = key.forward(g, batch_major)?;
                let keys = g.reshape(keys, &[batch, 1, steps, config.hidden])?;
                let values = match config.attention {
                    AttentionKind::Additive => batch_major,
                    AttentionKind::Dot | AttentionKind::None => {
                        g.reshape(batch_major, &[batch, 1, steps, width])?
                    }
                };
                Some((keys, values))
            }
        };
        Ok(Encoded {
            keys_values,
            initial,
        })
    }

    /// A bidirectional layer's two final states, as one decoder state: tanh(W·[h→; h←] + b)
    /// (and likewise for an LSTM's cells, without the tanh).
    fn bridge(
        &self,
        g: &mut Graph,
        (bridge_h, bridge_c): &(Linear, Option<Linear>),
        forward: State,
        backward: State,
    ) -> Result<State> {
        let both = g.concat(&[forward.h, backward.h], 1)?;
        let h = bridge_h.forward(g, both)?;
        let h = g.tanh(h)?;
        let c = match (bridge_c, forward.c, backward.c) {
            (Some(bridge_c), Some(a), Some(b)) => {
                let both = g.concat(&[a, b], 1)?;
                Some(bridge_c.forward(g, both)?)
            }
            _ => None,
        };
        Ok(State { h, c })
    }

    /// The decoder over input ids `[Td, B]` (BOS then the target, time-major) from `initial`:
    /// its top layer's states `[Td, B, H]` and every layer's final state.
    pub fn decode(
        &self,
        g: &mut Graph,
        input: Var,
        initial: &[State],
    ) -> Result<(Var, Vec<State>)> {
        if initial.len() != self.layers {
            return Err(Error::invalid(
                "seq2seq",
                format!(
                    "the decoder has {} layers, got {} initial states",
                    self.layers,
                    initial.len()
                ),
            ));
        }
        let x = self.target_embedding.forward(g, input)?;
        let decoded = self.decoder.forward(g, x, Some(initial), None)?;
        Ok((decoded.output, decoded.finals))
    }

    /// What the output layer reads, `[B·Td, H]` (batch-major rows: b·Td + t), from the
    /// decoder's states `[Td, B, H]`: each state combined with its attention context (the
    /// state itself without attention). `source_lengths` (u32 `[B]`) masks the padding for
    /// dot attention, `key_mask` (`[B, 1, Ts]`, see [`key_mask`]) for additive attention.
    pub fn features(
        &self,
        g: &mut Graph,
        states: Var,
        encoded: &Encoded,
        source_lengths: Var,
        key_mask: Option<Var>,
    ) -> Result<Var> {
        let config = &self.config;
        let (steps, batch, hidden) = (g.shape(states)[0], g.shape(states)[1], config.hidden);
        let batch_major = g.permute(states, &[1, 0, 2])?;
        let rows = g.reshape(batch_major, &[batch * steps, hidden])?;
        let width = config.encoder_width();
        let context = match (config.attention, encoded.keys_values, &self.additive) {
            (AttentionKind::None, _, _) | (_, None, _) => None,
            (AttentionKind::Dot, Some((keys, values)), _) => {
                let queries = g.reshape(batch_major, &[batch, 1, steps, hidden])?;
                let context =
                    g.attention(queries, keys, values, Some(source_lengths), false, None)?;
                Some(g.reshape(context, &[batch * steps, width])?)
            }
            (AttentionKind::Additive, Some((keys, values)), Some((query, score))) => {
                let key_mask = key_mask.ok_or_else(|| {
                    Error::invalid("seq2seq", "additive attention needs the key mask")
                })?;
                let source_steps = g.shape(keys)[2];
                let queries = query.forward(g, rows)?;
                let queries = g.reshape(queries, &[batch, steps, 1, hidden])?;
                // [B, Td, 1, H] + [B, 1, Ts, H]: every query against every key.
                let both = g.add(queries, keys)?;
                let both = g.tanh(both)?;
                let scores = score.forward(g, both)?;
                let scores = g.reshape(scores, &[batch, steps, source_steps])?;
                let scores = g.add(scores, key_mask)?;
                let weights = g.softmax(scores, -1)?;
                let context = g.matmul(weights, values)?;
                Some(g.reshape(context, &[batch * steps, width])?)
            }
            (AttentionKind::Additive, Some(_), None) => {
                return Err(Error::invalid(
                    "seq2seq",
                    "additive attention without its query and score layers",
                ))
            }
        };
        Ok(match (context, &self.combine) {
            (Some(context), Some(combine)) => {
                let both = g.concat(&[context, rows], 1)?;
                let combined = combine.forward(g, both)?;
                g.tanh(combined)?
            }
            _ => rows,
        })
    }

    /// The output layer over features `[…, H]`: logits `[…, V]`.
    pub fn project(&self, g: &mut Graph, features: Var) -> Result<Var> {
        self.output.forward(g, features)
    }

    /// Logits `[B·Td, V]`: [`Seq2Seq::features`] through the output layer.
    pub fn logits(
        &self,
        g: &mut Graph,
        states: Var,
        encoded: &Encoded,
        source_lengths: Var,
        key_mask: Option<Var>,
    ) -> Result<Var> {
        let features = self.features(g, states, encoded, source_lengths, key_mask)?;
        self.project(g, features)
    }
}
