//! The Transformer encoder-decoder (Vaswani et al. 2017) for [`crate::nn::seq2seq`]'s
//! tasks, built on the graph over
//! [`Parameters`].
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
//! batch-major, `[B·T, d]` rows between blocks.

use crate::error::{Error, Result};
use crate::graph::{GemmSpec, Graph, Var};
use crate::nn::seq2seq::{Architecture, Seq2SeqConfig};
use crate::nn::{Init, Parameters};

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

/// The layer norms' epsilon (PyTorch's default).
const NORM_EPS: f32 = 1e-5;

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

/// Builds the Transformer's parts into graphs.
pub struct Transformer {
    /// Tokens of the shared vocabulary.
    pub vocab_size: usize,
    /// Layers of the encoder and of the decoder.
    pub layers: usize,
    /// The layers' sizes and dropout.
    pub shape: TransformerConfig,
    /// A training graph's dropout seed (u32 `[1]`, fed a new value every step); `None` builds
    /// no dropout (evaluation and decoding).
    pub dropout_seed: Option<Var>,
}

impl Transformer {
    /// The builder of `config`, which must be a Transformer's; `dropout_seed` as the field.
    pub fn new(config: &Seq2SeqConfig, dropout_seed: Option<Var>) -> Result<Self> {
        match config.architecture {
            Architecture::Transformer(shape) => Ok(Transformer {
                vocab_size: config.vocab_size,
                layers: config.layers,
                shape,
                dropout_seed,
            }),
            Architecture::Recurrent(_) => Err(Error::invalid(
                "transformer",
                "a recurrent config builds through nn::seq2seq::Seq2Seq",
            )),
        }
    }

    fn width(&self) -> usize {
        self.shape.width
    }

    fn dropout(&self, g: &mut Graph, x: Var) -> Result<Var> {
        match self.dropout_seed {
            Some(seed) => g.dropout(x, self.shape.dropout, seed),
            None => Ok(x),
        }
    }

    /// Token ids `[T, B]` (time-major) as `[B·T, d]` rows: embedding·√d plus positions.
    fn embed(&self, g: &mut Graph, p: &Parameters, table: &str, ids: Var) -> Result<Var> {
        let d = self.width();
        let (steps, batch) = (g.shape(ids)[0], g.shape(ids)[1]);
        // Normal(1/√d) scaled by √d gives unit-variance embeddings, on a par with the
        // positions they are added to.
        let table = p.var(
            g,
            table,
            &[self.vocab_size, d],
            Init::Normal(1.0 / (d as f32).sqrt()),
        )?;
        let x = g.embedding(table, ids)?;
        let x = g.permute(x, &[1, 0, 2])?;
        let x = g.scale(x, (d as f32).sqrt())?;
        let positions = g.constant(sinusoidal_positions(steps, d), &[steps, d])?;
        let x = g.add(x, positions)?;
        let x = g.reshape(x, &[batch * steps, d])?;
        self.dropout(g, x)
    }

    /// x·W + b for rows x `[N, inputs]`, PyTorch's initialization.
    fn linear(
        &self,
        g: &mut Graph,
        p: &Parameters,
        name: &str,
        x: Var,
        outputs: usize,
    ) -> Result<Var> {
        let inputs = g.shape(x)[1];
        let bound = Init::Uniform(1.0 / (inputs as f32).sqrt());
        let w = p.var(g, &format!("{name}.weight"), &[inputs, outputs], bound)?;
        let b = p.var(g, &format!("{name}.bias"), &[outputs], bound)?;
        g.gemm(x, w, GemmSpec::new().bias(b))
    }

    fn norm(&self, g: &mut Graph, p: &Parameters, name: &str, x: Var) -> Result<Var> {
        let d = self.width();
        let gain = p.var(g, &format!("{name}.weight"), &[d], Init::Ones)?;
        let bias = p.var(g, &format!("{name}.bias"), &[d], Init::Zeros)?;
        g.layer_norm(x, gain, bias, NORM_EPS)
    }

    /// Rows `[B·T, d]` as heads `[B, h, T, d/h]`.
    fn split_heads(&self, g: &mut Graph, x: Var, batch: usize) -> Result<Var> {
        let (d, heads) = (self.width(), self.shape.heads);
        let steps = g.shape(x)[0] / batch;
        let x = g.reshape(x, &[batch, steps, heads, d / heads])?;
        g.permute(x, &[0, 2, 1, 3])
    }

    /// Multi-head attention of `queries` `[B·Tq, d]` over `memory` `[B·Tk, d]`: the Q, K, V
    /// projections, scaled dot-product attention per head, the output projection.
    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        g: &mut Graph,
        p: &Parameters,
        name: &str,
        queries: Var,
        memory: Var,
        batch: usize,
        key_lengths: Option<Var>,
        causal: bool,
    ) -> Result<Var> {
        let d = self.width();
        let q = self.linear(g, p, &format!("{name}.query"), queries, d)?;
        let k = self.linear(g, p, &format!("{name}.key"), memory, d)?;
        let v = self.linear(g, p, &format!("{name}.value"), memory, d)?;
        let (q, k, v) = (
            self.split_heads(g, q, batch)?,
            self.split_heads(g, k, batch)?,
            self.split_heads(g, v, batch)?,
        );
        let heads = g.attention(q, k, v, key_lengths, causal, None)?;
        let merged = g.permute(heads, &[0, 2, 1, 3])?;
        let rows = g.reshape(merged, &[g.shape(queries)[0], d])?;
        self.linear(g, p, &format!("{name}.output"), rows, d)
    }

    fn feed_forward(&self, g: &mut Graph, p: &Parameters, name: &str, x: Var) -> Result<Var> {
        let hidden = self.linear(g, p, &format!("{name}.linear1"), x, self.shape.ff)?;
        let hidden = g.relu(hidden)?;
        self.linear(g, p, &format!("{name}.linear2"), hidden, self.width())
    }

    /// x + dropout(block(LayerNorm(x))).
    fn residual(
        &self,
        g: &mut Graph,
        p: &Parameters,
        name: &str,
        x: Var,
        block: impl FnOnce(&mut Graph, &Parameters, Var) -> Result<Var>,
    ) -> Result<Var> {
        let normed = self.norm(g, p, &format!("{name}.norm"), x)?;
        let y = block(g, p, normed)?;
        let y = self.dropout(g, y)?;
        g.add(x, y)
    }

    /// The encoder over source ids `[Ts, B]` (u32, time-major) with lengths `[B]`: its output
    /// `[B, Ts, d]` (padded positions hold values no key mask lets through).
    pub fn encode(&self, g: &mut Graph, p: &Parameters, source: Var, lengths: Var) -> Result<Var> {
        let (steps, batch) = (g.shape(source)[0], g.shape(source)[1]);
        let mut x = self.embed(g, p, "source_embedding.weight", source)?;
        for layer in 0..self.layers {
            let name = format!("encoder.layer{layer}");
            x = self.residual(g, p, &format!("{name}.self_attention"), x, |g, p, x| {
                self.attention(
                    g,
                    p,
                    &format!("{name}.self_attention"),
                    x,
                    x,
                    batch,
                    Some(lengths),
                    false,
                )
            })?;
            x = self.residual(g, p, &format!("{name}.feed_forward"), x, |g, p, x| {
                self.feed_forward(g, p, &format!("{name}.feed_forward"), x)
            })?;
        }
        let x = self.norm(g, p, "encoder.norm", x)?;
        g.reshape(x, &[batch, steps, self.width()])
    }

    /// Logits `[B·Td, V]` (batch-major rows: b·Td + t) of the decoder over input ids `[Td, B]`
    /// (BOS then the target, time-major), each position seeing the inputs up to itself and
    /// the encoder's `memory` `[B, Ts, d]` up to each source's length.
    pub fn logits(
        &self,
        g: &mut Graph,
        p: &Parameters,
        input: Var,
        memory: Var,
        source_lengths: Var,
    ) -> Result<Var> {
        let batch = g.shape(input)[1];
        let (memory_batch, source_steps) = (g.shape(memory)[0], g.shape(memory)[1]);
        if memory_batch != batch {
            return Err(Error::invalid(
                "transformer",
                format!("the decoder has {batch} rows, the encoder's output {memory_batch}"),
            ));
        }
        let memory = g.reshape(memory, &[batch * source_steps, self.width()])?;
        let mut x = self.embed(g, p, "target_embedding.weight", input)?;
        for layer in 0..self.layers {
            let name = format!("decoder.layer{layer}");
            x = self.residual(g, p, &format!("{name}.self_attention"), x, |g, p, x| {
                self.attention(
                    g,
                    p,
                    &format!("{name}.self_attention"),
                    x,
                    x,
                    batch,
                    None,
                    true,
                )
            })?;
            x = self.residual(g, p, &format!("{name}.cross_attention"), x, |g, p, x| {
                self.attention(
                    g,
                    p,
                    &format!("{name}.cross_attention"),
                    x,
                    memory,
                    batch,
                    Some(source_lengths),
                    false,
                )
            })?;
            x = self.residual(g, p, &format!("{name}.feed_forward"), x, |g, p, x| {
                self.feed_forward(g, p, &format!("{name}.feed_forward"), x)
            })?;
        }
        let x = self.norm(g, p, "decoder.norm", x)?;
        self.linear(g, p, "output", x, self.vocab_size)
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
