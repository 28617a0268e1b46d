//! Multi-head attention and the Transformer's layers, with PyTorch's names and layouts
//! (`batch_first=True`, `norm_first=True`), so that their `state_dict`s move between the
//! two:
//!
//! - [`MultiheadAttention`]: `in_proj_weight` `[3d, d]` (the query, key and value
//!   projections stacked), `in_proj_bias` `[3d]`, `out_proj.weight` `[d, d]`,
//!   `out_proj.bias`;
//! - [`TransformerEncoderLayer`]: `self_attn.*`, `linear1`, `linear2`, `norm1`, `norm2`;
//! - [`TransformerDecoderLayer`]: `self_attn.*`, `multihead_attn.*`, `linear1`, `linear2`,
//!   `norm1`, `norm2`, `norm3`.
//!
//! A layer is pre-norm (x + block(LayerNorm(x))), with a ReLU feed-forward block. Dropout
//! acts only in [`Mode::Train`], on each block's output before the residual add; PyTorch's
//! layers also drop inside the feed-forward block and on the attention weights, so the two
//! agree exactly only without dropout (as every evaluation is).

use crate::error::{Error, Result};
use crate::graph::{Graph, Parameter, Var};
use crate::nn::{Init, LayerNorm, Linear, Parameters};

/// Whether a graph is built for training or for evaluation: what dropout does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Dropout draws its masks from `dropout_seed`, a u32 `[1]` input fed a new value every
    /// step.
    Train {
        /// The seed of every dropout of the graph (each draws its own stream).
        dropout_seed: Var,
    },
    /// No dropout: evaluation, serving, decoding.
    Eval,
}

impl Mode {
    /// `x` with dropout of probability `p` in training, `x` itself otherwise (or when p is 0).
    pub fn dropout(self, g: &mut Graph, x: Var, p: f32) -> Result<Var> {
        match self {
            Mode::Train { dropout_seed } if p > 0.0 => g.dropout(x, p, dropout_seed),
            _ => Ok(x),
        }
    }
}

/// PyTorch's `nn.MultiheadAttention(d, heads, batch_first=True)`: queries `[B, Tq, d]`
/// attend over keys and values `[B, Tk, d]` in `heads` heads of d / heads, scaled by
/// 1/√(d / heads).
#[derive(Debug, Clone)]
pub struct MultiheadAttention {
    /// `in_proj_weight`: `[3d, d]`, the query, key and value projections stacked.
    pub in_proj_weight: Parameter,
    /// `in_proj_bias`: `[3d]`.
    pub in_proj_bias: Parameter,
    /// `out_proj`: d → d.
    pub out_proj: Linear,
    /// How many heads.
    pub heads: usize,
}

impl MultiheadAttention {
    /// The projections in `params`, started as PyTorch starts them (Xavier-uniform
    /// `in_proj_weight`, zero biases).
    pub fn new(params: &Parameters, embed_dim: usize, heads: usize) -> Result<Self> {
        if embed_dim == 0 || heads == 0 || !embed_dim.is_multiple_of(heads) {
            return Err(Error::invalid(
                "MultiheadAttention",
                format!(
                    "{}: {heads} heads must divide the width {embed_dim} (both at least 1)",
                    params.path("in_proj_weight")
                ),
            ));
        }
        let d = embed_dim;
        let in_proj_weight = params.get_or_init("in_proj_weight", &[3 * d, d], Init::Xavier)?;
        let in_proj_bias = params.get_or_init("in_proj_bias", &[3 * d], Init::Zeros)?;
        // PyTorch starts out_proj's weight as any Linear's and its bias at zero.
        let out = params.at("out_proj");
        let bound = Init::Uniform(1.0 / (d as f32).sqrt());
        let out_proj = Linear {
            weight: out.get_or_init("weight", &[d, d], bound)?,
            bias: Some(out.get_or_init("bias", &[d], Init::Zeros)?),
        };
        Ok(MultiheadAttention {
            in_proj_weight,
            in_proj_bias,
            out_proj,
            heads,
        })
    }

    /// The width d.
    pub fn embed_dim(&self) -> usize {
        self.in_proj_weight.shape()[1]
    }

    /// Attention of `query` `[B, Tq, d]` over `key_value` `[B, Tk, d]` (the same value for
    /// self-attention, whose three projections are then one product): `[B, Tq, d]`.
    /// `key_lengths` (u32 `[B]`) masks each row's keys past its length (PyTorch's
    /// `key_padding_mask`); `causal` masks the keys after each query's position.
    pub fn forward(
        &self,
        g: &mut Graph,
        query: Var,
        key_value: Var,
        key_lengths: Option<Var>,
        causal: bool,
    ) -> Result<Var> {
        let (batch, _) = self.batch_steps(g, query)?;
        let (key_batch, _) = self.batch_steps(g, key_value)?;
        if key_batch != batch {
            return Err(Error::invalid(
                "MultiheadAttention",
                format!("{batch} query rows against {key_batch} key rows"),
            ));
        }
        let (q, k, v) = if query == key_value {
            self.project_self(g, query)?
        } else {
            let q = self.project_queries(g, query)?;
            let (k, v) = self.project_keys_values(g, key_value)?;
            (q, k, v)
        };
        self.attend(g, q, k, v, key_lengths, causal)
    }

    /// The queries, keys and values of `x` `[B, T, d]` (one product), each in heads
    /// `[B, h, T, d/h]`: what self-attention attends with.
    pub fn project_self(&self, g: &mut Graph, x: Var) -> Result<(Var, Var, Var)> {
        let d = self.embed_dim();
        let (batch, steps) = self.batch_steps(g, x)?;
        let weight = g.param(&self.in_proj_weight)?;
        let bias = g.param(&self.in_proj_bias)?;
        let rows = g.reshape(x, &[batch * steps, d])?;
        let qkv = project(g, rows, weight, bias, 0..3 * d)?;
        let mut heads = Vec::with_capacity(3);
        for part in 0..3 {
            let start = (part * d) as isize;
            let projected = g.slice(qkv, 1, start, start + d as isize)?;
            heads.push(self.split_heads(g, projected, batch, steps)?);
        }
        Ok((heads[0], heads[1], heads[2]))
    }

    /// The queries of `query` `[B, T, d]` in heads `[B, h, T, d/h]`.
    pub fn project_queries(&self, g: &mut Graph, query: Var) -> Result<Var> {
        let d = self.embed_dim();
        let (batch, steps) = self.batch_steps(g, query)?;
        let weight = g.param(&self.in_proj_weight)?;
        let bias = g.param(&self.in_proj_bias)?;
        let rows = g.reshape(query, &[batch * steps, d])?;
        let q = project(g, rows, weight, bias, 0..d)?;
        self.split_heads(g, q, batch, steps)
    }

    /// The keys and values of `key_value` `[B, T, d]` (one product), each in heads
    /// `[B, h, T, d/h]`. Cross-attention over an encoder's output computes them once per
    /// source: a decoder's every step attends over the same ones.
    pub fn project_keys_values(&self, g: &mut Graph, key_value: Var) -> Result<(Var, Var)> {
        let d = self.embed_dim();
        let (batch, steps) = self.batch_steps(g, key_value)?;
        let weight = g.param(&self.in_proj_weight)?;
        let bias = g.param(&self.in_proj_bias)?;
        let rows = g.reshape(key_value, &[batch * steps, d])?;
        let kv = project(g, rows, weight, bias, d..3 * d)?;
        let k = g.slice(kv, 1, 0, d as isize)?;
        let v = g.slice(kv, 1, d as isize, 2 * d as isize)?;
        Ok((
            self.split_heads(g, k, batch, steps)?,
            self.split_heads(g, v, batch, steps)?,
        ))
    }

    /// Attention of queries `[B, h, Tq, d/h]` over keys and values `[B, h, Tk, d/h]` (the
    /// projections above), the heads merged and projected out: `[B, Tq, d]`. The masks are
    /// [`MultiheadAttention::forward`]'s; with `causal`, the queries are the last Tq of the Tk
    /// positions.
    pub fn attend(
        &self,
        g: &mut Graph,
        q: Var,
        k: Var,
        v: Var,
        key_lengths: Option<Var>,
        causal: bool,
    ) -> Result<Var> {
        let d = self.embed_dim();
        let (batch, query_steps) = match *g.shape(q) {
            [batch, heads, steps, _] if heads == self.heads => (batch, steps),
            ref other => {
                return Err(Error::invalid(
                    "MultiheadAttention",
                    format!(
                        "{}: expected queries in {} heads [B, {}, T, {}], got {other:?}",
                        self.in_proj_weight.name(),
                        self.heads,
                        self.heads,
                        d / self.heads
                    ),
                ))
            }
        };
        let heads = g.attention(q, k, v, key_lengths, causal, None)?;
        let merged = g.permute(heads, &[0, 2, 1, 3])?;
        let merged = g.reshape(merged, &[batch, query_steps, d])?;
        self.out_proj.forward(g, merged)
    }

    fn batch_steps(&self, g: &Graph, x: Var) -> Result<(usize, usize)> {
        match *g.shape(x) {
            [batch, steps, d] if d == self.embed_dim() => Ok((batch, steps)),
            ref other => Err(Error::invalid(
                "MultiheadAttention",
                format!(
                    "{}: expected [B, T, {}], got {other:?}",
                    self.in_proj_weight.name(),
                    self.embed_dim()
                ),
            )),
        }
    }

    /// Rows `[B·T, d]` as heads `[B, h, T, d/h]`.
    fn split_heads(&self, g: &mut Graph, x: Var, batch: usize, steps: usize) -> Result<Var> {
        let d = self.embed_dim();
        let x = g.reshape(x, &[batch, steps, self.heads, d / self.heads])?;
        g.permute(x, &[0, 2, 1, 3])
    }
}

/// rows·W[rows_of_w]ᵀ + b[rows_of_w]: the projections of the stacked `weight` `[3d, d]` in
/// `range`.
fn project(
    g: &mut Graph,
    rows: Var,
    weight: Var,
    bias: Var,
    range: std::ops::Range<usize>,
) -> Result<Var> {
    let all = g.shape(weight)[0];
    let (weight, bias) = if range == (0..all) {
        (weight, bias)
    } else {
        let (start, end) = (range.start as isize, range.end as isize);
        (
            g.slice(weight, 0, start, end)?,
            g.slice(bias, 0, start, end)?,
        )
    };
    g.gemm(
        rows,
        weight,
        crate::graph::GemmSpec::new().transpose_b().bias(bias),
    )
}

/// The sizes of a Transformer layer: PyTorch's `d_model`, `nhead`, `dim_feedforward` and
/// `dropout`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TransformerLayerConfig {
    /// d: the width of every position.
    pub d_model: usize,
    /// Attention heads (they divide d).
    pub heads: usize,
    /// The feed-forward block's hidden width.
    pub dim_feedforward: usize,
    /// The drop probability in training, in [0, 1).
    pub dropout: f32,
}

/// The ReLU feed-forward block: linear2(relu(linear1(x))).
#[derive(Debug, Clone)]
struct FeedForward {
    linear1: Linear,
    linear2: Linear,
}

impl FeedForward {
    fn new(params: &Parameters, config: &TransformerLayerConfig) -> Result<Self> {
        Ok(FeedForward {
            linear1: Linear::new(
                &params.at("linear1"),
                config.d_model,
                config.dim_feedforward,
            )?,
            linear2: Linear::new(
                &params.at("linear2"),
                config.dim_feedforward,
                config.d_model,
            )?,
        })
    }

    fn forward(&self, g: &mut Graph, x: Var) -> Result<Var> {
        let hidden = self.linear1.forward(g, x)?;
        let hidden = g.relu(hidden)?;
        self.linear2.forward(g, hidden)
    }
}

/// A pre-norm block with its residual: x + dropout(block(norm(x))), dropout in training only.
fn residual(
    g: &mut Graph,
    x: Var,
    norm: &LayerNorm,
    mode: Mode,
    p: f32,
    block: impl FnOnce(&mut Graph, Var) -> Result<Var>,
) -> Result<Var> {
    let normed = norm.forward(g, x)?;
    let y = block(g, normed)?;
    let y = mode.dropout(g, y, p)?;
    g.add(x, y)
}

fn check_dropout(config: &TransformerLayerConfig) -> Result<()> {
    if (0.0..1.0).contains(&config.dropout) {
        Ok(())
    } else {
        Err(Error::invalid(
            "transformer layer",
            format!("dropout {} is not in [0, 1)", config.dropout),
        ))
    }
}

/// PyTorch's `nn.TransformerEncoderLayer(d, heads, ff, dropout, batch_first=True,
/// norm_first=True)`: x + self_attn(norm1(x)), then + linear2(relu(linear1(norm2(x)))).
#[derive(Debug, Clone)]
pub struct TransformerEncoderLayer {
    /// The sizes.
    pub config: TransformerLayerConfig,
    /// `self_attn`.
    pub self_attn: MultiheadAttention,
    feed_forward: FeedForward,
    /// `norm1`, before the self-attention.
    pub norm1: LayerNorm,
    /// `norm2`, before the feed-forward block.
    pub norm2: LayerNorm,
}

impl TransformerEncoderLayer {
    /// The layer's parameters in `params`, in PyTorch's state-dict order.
    pub fn new(params: &Parameters, config: TransformerLayerConfig) -> Result<Self> {
        check_dropout(&config)?;
        let self_attn =
            MultiheadAttention::new(&params.at("self_attn"), config.d_model, config.heads)?;
        let feed_forward = FeedForward::new(params, &config)?;
        Ok(TransformerEncoderLayer {
            config,
            self_attn,
            feed_forward,
            norm1: LayerNorm::new(&params.at("norm1"), config.d_model)?,
            norm2: LayerNorm::new(&params.at("norm2"), config.d_model)?,
        })
    }

    /// The layer over x `[B, T, d]`, the keys past each row's `key_lengths` masked.
    pub fn forward(
        &self,
        g: &mut Graph,
        x: Var,
        key_lengths: Option<Var>,
        mode: Mode,
    ) -> Result<Var> {
        let p = self.config.dropout;
        let x = residual(g, x, &self.norm1, mode, p, |g, normed| {
            self.self_attn
                .forward(g, normed, normed, key_lengths, false)
        })?;
        residual(g, x, &self.norm2, mode, p, |g, normed| {
            self.feed_forward.forward(g, normed)
        })
    }
}

/// Keys and values in heads, each `[B, h, T, d/h]`: a decoder layer's self-attention cache
/// (T: the most positions it holds; inputs that a decoding plan binds to tensors kept
/// between steps), or its cross-attention's projections of the encoder's output.
#[derive(Debug, Clone, Copy)]
pub struct KeyValues {
    /// The keys.
    pub keys: Var,
    /// The values.
    pub values: Var,
}

/// What every decoder layer's step reads besides its input: where it is, and which keys
/// each row attends over.
#[derive(Debug, Clone, Copy)]
pub struct DecodingStep {
    /// u32 `[1]`, fed: the position decoded, where the step writes its keys and values.
    pub position: Var,
    /// u32 `[B]`, fed: how many cached positions each row attends over (position + 1).
    pub cache_lengths: Var,
    /// u32 `[B]`: each row's source length, masking the encoder's padding.
    pub memory_lengths: Option<Var>,
}

/// PyTorch's `nn.TransformerDecoderLayer(d, heads, ff, dropout, batch_first=True,
/// norm_first=True)`: x + causal self_attn(norm1(x)), + multihead_attn(norm2(x), memory),
/// + linear2(relu(linear1(norm3(x)))).
#[derive(Debug, Clone)]
pub struct TransformerDecoderLayer {
    /// The sizes.
    pub config: TransformerLayerConfig,
    /// `self_attn`, causal.
    pub self_attn: MultiheadAttention,
    /// `multihead_attn`, over the encoder's output.
    pub multihead_attn: MultiheadAttention,
    feed_forward: FeedForward,
    /// `norm1`, before the self-attention.
    pub norm1: LayerNorm,
    /// `norm2`, before the attention over the memory.
    pub norm2: LayerNorm,
    /// `norm3`, before the feed-forward block.
    pub norm3: LayerNorm,
}

impl TransformerDecoderLayer {
    /// The layer's parameters in `params`, in PyTorch's state-dict order.
    pub fn new(params: &Parameters, config: TransformerLayerConfig) -> Result<Self> {
        check_dropout(&config)?;
        let (d, heads) = (config.d_model, config.heads);
        let self_attn = MultiheadAttention::new(&params.at("self_attn"), d, heads)?;
        let multihead_attn = MultiheadAttention::new(&params.at("multihead_attn"), d, heads)?;
        let feed_forward = FeedForward::new(params, &config)?;
        Ok(TransformerDecoderLayer {
            config,
            self_attn,
            multihead_attn,
            feed_forward,
            norm1: LayerNorm::new(&params.at("norm1"), d)?,
            norm2: LayerNorm::new(&params.at("norm2"), d)?,
            norm3: LayerNorm::new(&params.at("norm3"), d)?,
        })
    }

    /// The layer over x `[B, Tq, d]`, each position seeing the positions up to itself and
    /// `memory` `[B, Tk, d]` up to each row's `memory_lengths`.
    pub fn forward(
        &self,
        g: &mut Graph,
        x: Var,
        memory: Var,
        memory_lengths: Option<Var>,
        mode: Mode,
    ) -> Result<Var> {
        let p = self.config.dropout;
        let x = residual(g, x, &self.norm1, mode, p, |g, normed| {
            self.self_attn.forward(g, normed, normed, None, true)
        })?;
        let x = residual(g, x, &self.norm2, mode, p, |g, normed| {
            self.multihead_attn
                .forward(g, normed, memory, memory_lengths, false)
        })?;
        residual(g, x, &self.norm3, mode, p, |g, normed| {
            self.feed_forward.forward(g, normed)
        })
    }
    /// One decoding step over x `[B, 1, d]`, the position `step.position`: the layer's
    /// self-attention writes its keys and values into `cache` there and attends over the
    /// positions up to it; the cross-attention attends over `memory`, the encoder output's
    /// keys and values ([`MultiheadAttention::project_keys_values`] of `multihead_attn`,
    /// computed once per source). Evaluation only: no dropout.
    pub fn step(
        &self,
        g: &mut Graph,
        x: Var,
        cache: KeyValues,
        memory: KeyValues,
        step: &DecodingStep,
    ) -> Result<Var> {
        let x = residual(g, x, &self.norm1, Mode::Eval, 0.0, |g, normed| {
            let (q, k, v) = self.self_attn.project_self(g, normed)?;
            let keys = g.write_at(cache.keys, k, 2, step.position)?;
            let values = g.write_at(cache.values, v, 2, step.position)?;
            self.self_attn
                .attend(g, q, keys, values, Some(step.cache_lengths), false)
        })?;
        let x = residual(g, x, &self.norm2, Mode::Eval, 0.0, |g, normed| {
            let q = self.multihead_attn.project_queries(g, normed)?;
            self.multihead_attn
                .attend(g, q, memory.keys, memory.values, step.memory_lengths, false)
        })?;
        residual(g, x, &self.norm3, Mode::Eval, 0.0, |g, normed| {
            self.feed_forward.forward(g, normed)
        })
    }
}
