//! The Transformer encoder-decoder (Vaswani et al. 2017) for [`crate::nn::seq2seq`]'s
//! tasks, composed of [`crate::nn::attention`]'s layers over [`Parameters`].
//!
//! - Encoder: token embedding·√d plus sinusoidal positions (a constant), then `layers`
//!   layers of multi-head self-attention (the source lengths mask the padded keys) and a
//!   ReLU feed-forward block.
//! - Decoder: target embedding·√d plus positions, then `layers` layers of causal
//!   self-attention, cross-attention over the encoder's output (keys masked by the source
//!   lengths) and a feed-forward block; the output projection to the vocabulary.
//!
//! Every block is pre-norm: x + dropout(f(LayerNorm(x))), with a final layer norm closing
//! each stack (Xiong et al. 2020). Post-norm, the original arrangement, needs a
//! learning-rate warm-up to train at all; pre-norm trains without one, though a short one
//! still helps. Dropout (training graphs only) acts on the embeddings plus positions and on
//! each block's output before the residual add, as in the original; not on the attention
//! probabilities, which the fused attention kernel never writes out. Activations are
//! batch-major, `[B, T, d]` between layers.

use crate::error::{Error, Result};
use crate::graph::{Graph, Var};
use crate::nn::seq2seq::{Architecture, Seq2SeqConfig};
use crate::nn::{
    DecodingStep, Embedding, Init, KeyValues, LayerNorm, Linear, Mode, Parameters,
    TransformerDecoderLayer, TransformerEncoderLayer, TransformerLayerConfig,
};

/// The sizes of a Transformer's layers (how many layers each stack has, and the vocabulary,
/// are [`Seq2SeqConfig`]'s).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TransformerConfig {
    /// d_model: the width of the embeddings and of every layer's input and output (a
    /// checkpoint's `"hidden"`).
    #[serde(rename = "hidden")]
    pub width: usize,
    /// Attention heads; they divide d_model.
    pub heads: usize,
    /// Width of the feed-forward block's hidden layer.
    pub ff: usize,
    /// The drop probability of the training graphs' dropouts, in [0, 1) (checkpoints from
    /// before dropout have none: 0).
    #[serde(default, serialize_with = "shortest_decimal")]
    pub dropout: f32,
}

/// An f32 as the f64 of its shortest decimal, so that a config file reads 0.1, not
/// 0.10000000149011612.
fn shortest_decimal<S: serde::Serializer>(
    value: &f32,
    serializer: S,
) -> std::result::Result<S::Ok, S::Error> {
    let decimal: f64 = value.to_string().parse().unwrap_or(f64::from(*value));
    serializer.serialize_f64(decimal)
}

impl TransformerConfig {
    /// Checks the sizes and the dropout, naming the bad one.
    pub fn validate(&self) -> Result<()> {
        crate::nn::require_sizes("transformer", &[("width", self.width)])?;
        crate::kernels::random::drop_threshold(self.dropout)?;
        if self.heads == 0 || self.ff == 0 || !self.width.is_multiple_of(self.heads) {
            return Err(Error::invalid(
                "seq2seq",
                format!(
                    "a Transformer needs heads ({}) that divide its width ({}) and a \
                     feed-forward width ({}) of at least 1",
                    self.heads, self.width, self.ff
                ),
            ));
        }
        Ok(())
    }
}

/// Sinusoidal positions `[steps, width]`: sin(t / 10000^(2i/width)) at 2i, cos at 2i + 1.
pub fn sinusoidal_positions(steps: usize, width: usize) -> Vec<f32> {
    let mut values = vec![0.0f32; steps * width];
    for t in 0..steps {
        for i in 0..width {
            let rate = 10000f64.powf(-((i / 2 * 2) as f64) / width as f64);
            let angle = t as f64 * rate;
            values[t * width + i] = if i % 2 == 0 { angle.sin() } else { angle.cos() } as f32;
        }
    }
    values
}

/// The Transformer's modules, named as a PyTorch module holding its embeddings, an
/// `nn.Transformer(d, heads, layers, layers, ff, dropout, batch_first=True,
/// norm_first=True)` called `transformer` and its output layer would name them:
///
/// | name | shape |
/// |---|---|
/// | `source_embedding.weight`, `target_embedding.weight` | `[V, d]` |
/// | `transformer.encoder.layers.{i}.*` | [`TransformerEncoderLayer`]'s |
/// | `transformer.encoder.norm.*`, `transformer.decoder.norm.*` | `[d]` |
/// | `transformer.decoder.layers.{i}.*` | [`TransformerDecoderLayer`]'s |
/// | `output.weight`, `output.bias` | `[V, d]`, `[V]` |
#[derive(Debug, Clone)]
pub struct Transformer {
    /// Ids of the source vocabulary.
    pub source_vocab_size: usize,
    /// Ids of the target vocabulary: the output layer's classes.
    pub target_vocab_size: usize,
    /// Layers of the encoder and of the decoder.
    pub layers: usize,
    /// The layers' sizes and dropout.
    pub shape: TransformerConfig,
    source_embedding: Embedding,
    target_embedding: Embedding,
    encoder_layers: Vec<TransformerEncoderLayer>,
    encoder_norm: LayerNorm,
    decoder_layers: Vec<TransformerDecoderLayer>,
    decoder_norm: LayerNorm,
    output: Linear,
}

impl Transformer {
    /// The modules of `config`, which must be a Transformer's, their parameters made (or
    /// found) in `params`.
    pub fn new(config: &Seq2SeqConfig, params: &Parameters) -> Result<Self> {
        let shape = match config.architecture {
            Architecture::Transformer(shape) => shape,
            Architecture::Recurrent(_) => {
                return Err(Error::invalid(
                    "transformer",
                    "a recurrent config builds through nn::seq2seq::Seq2Seq",
                ))
            }
        };
        let d = shape.width;
        let (source_vocab, target_vocab) = (config.source_vocab_size, config.target_vocab_size);
        let layer = TransformerLayerConfig {
            d_model: d,
            heads: shape.heads,
            dim_feedforward: shape.ff,
            dropout: shape.dropout,
        };
        // Normal(1/√d) scaled by √d gives unit-variance embeddings, on a par with the
        // positions they are added to.
        let embedding_init = Init::Normal(1.0 / (d as f32).sqrt());
        let embedding =
            |name: &str, vocab| Embedding::with_init(&params.at(name), vocab, d, embedding_init);
        let source_embedding = embedding("source_embedding", source_vocab)?;
        let encoder = params.at("transformer.encoder");
        let encoder_layers = (0..config.layers)
            .map(|i| TransformerEncoderLayer::new(&encoder.at(&format!("layers.{i}")), layer))
            .collect::<Result<Vec<_>>>()?;
        let encoder_norm = LayerNorm::new(&encoder.at("norm"), d)?;
        let target_embedding = embedding("target_embedding", target_vocab)?;
        let decoder = params.at("transformer.decoder");
        let decoder_layers = (0..config.layers)
            .map(|i| TransformerDecoderLayer::new(&decoder.at(&format!("layers.{i}")), layer))
            .collect::<Result<Vec<_>>>()?;
        let decoder_norm = LayerNorm::new(&decoder.at("norm"), d)?;
        let output = Linear::new(&params.at("output"), d, target_vocab)?;
        Ok(Transformer {
            source_vocab_size: source_vocab,
            target_vocab_size: target_vocab,
            layers: config.layers,
            shape,
            source_embedding,
            target_embedding,
            encoder_layers,
            encoder_norm,
            decoder_layers,
            decoder_norm,
            output,
        })
    }

    /// Token ids `[T, B]` (time-major) as `[B, T, d]`: embedding·√d plus positions, then
    /// dropout in training.
    fn embed(&self, g: &mut Graph, table: &Embedding, ids: Var, mode: Mode) -> Result<Var> {
        let d = self.shape.width;
        let steps = g.shape(ids)[0];
        let x = table.forward(g, ids)?;
        let x = g.permute(x, &[1, 0, 2])?;
        let x = g.scale(x, (d as f32).sqrt())?;
        let positions = g.constant(sinusoidal_positions(steps, d), &[steps, d])?;
        let x = g.add(x, positions)?;
        mode.dropout(g, x, self.shape.dropout)
    }

    /// The encoder over source ids `[Ts, B]` (u32, time-major) with lengths `[B]`: its output
    /// `[B, Ts, d]` (padded positions hold values no key mask lets through).
    pub fn encode(&self, g: &mut Graph, source: Var, lengths: Var, mode: Mode) -> Result<Var> {
        let mut x = self.embed(g, &self.source_embedding, source, mode)?;
        for layer in &self.encoder_layers {
            x = layer.forward(g, x, Some(lengths), mode)?;
        }
        self.encoder_norm.forward(g, x)
    }

    /// Logits `[B·Td, V]` (batch-major rows: b·Td + t) of the decoder over input ids `[Td, B]`
    /// (BOS then the target, time-major), each position seeing the inputs up to itself and
    /// the encoder's `memory` `[B, Ts, d]` up to each source's length.
    pub fn logits(
        &self,
        g: &mut Graph,
        input: Var,
        memory: Var,
        source_lengths: Var,
        mode: Mode,
    ) -> Result<Var> {
        let states = self.decoder_states(g, input, memory, source_lengths, mode)?;
        let (batch, steps) = (g.shape(states)[0], g.shape(states)[1]);
        let rows = g.reshape(states, &[batch * steps, self.shape.width])?;
        self.project(g, rows)
    }

    /// The decoder's final states `[B, Td, d]` (after its last norm) over input ids
    /// `[Td, B]`: what [`Transformer::logits`] projects. Decoding picks one position of them
    /// before projecting, so the output layer runs over one row per hypothesis.
    pub fn decoder_states(
        &self,
        g: &mut Graph,
        input: Var,
        memory: Var,
        source_lengths: Var,
        mode: Mode,
    ) -> Result<Var> {
        let batch = g.shape(input)[1];
        let memory_batch = g.shape(memory)[0];
        if memory_batch != batch {
            return Err(Error::invalid(
                "transformer",
                format!("the decoder has {batch} rows, the encoder's output {memory_batch}"),
            ));
        }
        let mut x = self.embed(g, &self.target_embedding, input, mode)?;
        for layer in &self.decoder_layers {
            x = layer.forward(g, x, memory, Some(source_lengths), mode)?;
        }
        self.decoder_norm.forward(g, x)
    }

    /// The keys and values each decoder layer's cross-attention takes from the encoder's
    /// output `memory` `[B, Ts, d]`, in heads: computed once per batch of sources, read by
    /// every [`Transformer::decoder_step`].
    pub fn memory_keys_values(&self, g: &mut Graph, memory: Var) -> Result<Vec<KeyValues>> {
        self.decoder_layers
            .iter()
            .map(|layer| {
                let (keys, values) = layer.multihead_attn.project_keys_values(g, memory)?;
                Ok(KeyValues { keys, values })
            })
            .collect()
    }

    /// One step of incremental decoding: the decoder's final states `[B, d]` (after its last
    /// norm; [`Transformer::project`] gives the logits) for `tokens` (u32 `[1, B]`, each
    /// row's latest token) at `step.position`. Each layer writes its keys and values into
    /// its cache (`caches`, one per layer, each `[B, heads, S, d/heads]`, S the most
    /// positions decoded) and attends over the positions up to this one, and over
    /// `memory` ([`Transformer::memory_keys_values`]). Run for positions 0, 1, … it gives
    /// what [`Transformer::decoder_states`] gives over the whole prefix, at a cost per step
    /// that grows with the prefix only through the attention.
    pub fn decoder_step(
        &self,
        g: &mut Graph,
        tokens: Var,
        caches: &[KeyValues],
        memory: &[KeyValues],
        step: &DecodingStep,
    ) -> Result<Var> {
        let layers = self.decoder_layers.len();
        if caches.len() != layers || memory.len() != layers {
            return Err(Error::invalid(
                "transformer",
                format!(
                    "the decoder has {layers} layers, got {} caches and {} memory keys and values",
                    caches.len(),
                    memory.len()
                ),
            ));
        }
        let d = self.shape.width;
        let batch = g.shape(tokens)[1];
        let positions = g.shape(caches[0].keys)[2];
        let x = self.target_embedding.forward(g, tokens)?;
        let x = g.reshape(x, &[batch, 1, d])?;
        let x = g.scale(x, (d as f32).sqrt())?;
        let table = g.constant(sinusoidal_positions(positions, d), &[positions, d])?;
        let position = g.gather(table, 0, step.position)?;
        let mut x = g.add(x, position)?;
        for ((layer, &cache), &memory) in self.decoder_layers.iter().zip(caches).zip(memory) {
            x = layer.step(g, x, cache, memory, step)?;
        }
        let x = self.decoder_norm.forward(g, x)?;
        g.reshape(x, &[batch, d])
    }

    /// The output layer over decoder states `[…, d]`: logits `[…, V]`.
    pub fn project(&self, g: &mut Graph, states: Var) -> Result<Var> {
        self.output.forward(g, states)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_alternate_sine_and_cosine_at_falling_rates() {
        let width = 4;
        let values = sinusoidal_positions(3, width);
        assert_eq!(&values[..4], &[0.0, 1.0, 0.0, 1.0]);
        let t = 2.0f64;
        let rate = 10000f64.powf(-2.0 / 4.0);
        let expected = [t.sin(), t.cos(), (t * rate).sin(), (t * rate).cos()];
        for (got, want) in values[8..].iter().zip(expected) {
            assert!((f64::from(*got) - want).abs() < 1e-6, "{got} vs {want}");
        }
    }
}
