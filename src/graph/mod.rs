//! The static graph: a model is built once as ops over [`Var`] handles, differentiated by
//! [`Graph::backward`] (a graph transformation that appends gradient nodes), and compiled
//! by [`Graph::compile`] into a [`Plan`] whose every step is one GPU submission.
//!
//! ```no_run
//! use shadergrad::graph::{Feed, Graph};
//! use shadergrad::Gpu;
//!
//! let gpu = Gpu::default_adapter()?;
//! let mut g = Graph::new(&gpu);
//! let x = g.input("x", &[4, 2]);
//! let labels = g.input_indices("labels", &[4]);
//! let w = g.parameter("w", &[2, 2], vec![0.1, -0.2, 0.3, 0.4])?;
//! let logits = g.matmul(x, w)?;
//! let loss = g.cross_entropy(logits, labels, None)?;
//! let grads = g.backward(loss)?;
//! let mut plan = g.compile(&[loss, grads.of(w)?])?;
//! plan.run(&[Feed::f32(x, &[0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0]), Feed::u32(labels, &[0, 1, 1, 0])], &[])?;
//! println!("loss {:?}", plan.read(loss)?);
//! # Ok::<(), shadergrad::Error>(())
//! ```
//!
//! - `mod.rs` (this file): values, nodes and the builder calls;
//! - `ops/`: the ops, each one's shape rule, backward rule and the kernels it records
//!   together in the file of its kernel family (`ops/mod.rs` lists them);
//! - `autodiff.rs`: [`Graph::backward`];
//! - `plan.rs`: [`Graph::compile`] and [`Plan::run`].

mod autodiff;
mod ops;
mod plan;

pub use autodiff::Gradients;
pub use ops::{ConvLayout, MatMulFusion, Op};
pub use plan::{Feed, MemoryReport, Plan, OPTIMIZER_PREFIX};

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::kernels::attention::{
    AttentionDims, AttentionSettings, AttentionSettingsBuilder, AttentionVariant, MaskKind,
};
use crate::kernels::conv::{Conv1d, Conv2d, MaxPool1d};
use crate::kernels::elementwise::{Binary, Unary};
use crate::kernels::recurrent::CellKind;
use crate::kernels::reduce::Reduce;
use crate::tensor::numel;

/// A value of the graph: a leaf (parameter, input, constant) or an op's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Var(pub(crate) usize);

/// The element type of a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    /// 32-bit floats: activations, parameters, gradients, a [`crate::Tensor`] on the GPU.
    F32,
    /// Token ids, class labels: [`crate::Indices`] on the GPU.
    U32,
}

/// Where a value comes from.
#[derive(Debug, Clone)]
pub(crate) enum Source {
    /// Trained; its initial values live here until compile uploads them.
    Parameter { name: String, init: Vec<f32> },
    /// Fed at every run.
    Input { name: String },
    /// Fixed values.
    Constant { data: Vec<f32> },
    /// An op's output.
    Computed,
}

/// Which u32 values an index input may hold: below `bound`, or exactly `ignore`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IndexBound {
    pub bound: u32,
    pub ignore: Option<u32>,
}

#[derive(Debug, Clone)]
pub(crate) struct Value {
    pub shape: Vec<usize>,
    pub dtype: DType,
    pub source: Source,
    /// Whether a gradient can flow from this value back to a parameter.
    pub needs_grad: bool,
    pub index_bound: Option<IndexBound>,
}

/// One op applied to input values, producing output values.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub op: Op,
    pub inputs: Vec<Var>,
    pub outputs: Vec<Var>,
}

/// A model under construction: values and the nodes that compute them, in the order they
/// were added (which is a topological order, since a node only takes existing values).
#[derive(Debug, Clone)]
pub struct Graph {
    gpu: Gpu,
    pub(crate) values: Vec<Value>,
    pub(crate) nodes: Vec<Node>,
}

impl Graph {
    /// An empty graph whose plans will run on `gpu`.
    pub fn new(gpu: &Gpu) -> Graph {
        Graph {
            gpu: gpu.clone(),
            values: Vec::new(),
            nodes: Vec::new(),
        }
    }

    /// The device the graph's plans run on.
    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    /// The shape of a value.
    pub fn shape(&self, var: Var) -> &[usize] {
        &self.values[var.0].shape
    }

    /// The element type of a value.
    pub fn dtype(&self, var: Var) -> DType {
        self.values[var.0].dtype
    }

    /// The name of a parameter or input, `None` for other values.
    pub fn name(&self, var: Var) -> Option<&str> {
        match &self.values[var.0].source {
            Source::Parameter { name, .. } | Source::Input { name } => Some(name),
            _ => None,
        }
    }

    /// Every parameter, in the order they were made.
    pub fn parameters(&self) -> Vec<Var> {
        (0..self.values.len())
            .filter(|&i| matches!(self.values[i].source, Source::Parameter { .. }))
            .map(Var)
            .collect()
    }

    /// How many ops the graph holds.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    fn leaf(&mut self, shape: &[usize], dtype: DType, source: Source, needs_grad: bool) -> Var {
        self.values.push(Value {
            shape: shape.to_vec(),
            dtype,
            source,
            needs_grad,
            index_bound: None,
        });
        Var(self.values.len() - 1)
    }

    /// A trained parameter with its initial values (`init.len()` = the shape's size). Names
    /// must be unique: they key checkpoints.
    pub fn parameter(&mut self, name: &str, shape: &[usize], init: Vec<f32>) -> Result<Var> {
        let n = numel(shape)?;
        if init.len() != n {
            return Err(Error::ShapeMismatch {
                op: "parameter",
                lhs: vec![init.len()],
                rhs: shape.to_vec(),
                expected: format!("parameter {name:?} needs {n} initial values"),
            });
        }
        if self
            .parameters()
            .iter()
            .any(|&p| self.name(p) == Some(name))
        {
            return Err(Error::invalid(
                "parameter",
                format!("the name {name:?} is already taken by another parameter"),
            ));
        }
        let source = Source::Parameter {
            name: name.to_string(),
            init,
        };
        Ok(self.leaf(shape, DType::F32, source, true))
    }

    /// An f32 input, fed at every run.
    pub fn input(&mut self, name: &str, shape: &[usize]) -> Var {
        let source = Source::Input {
            name: name.to_string(),
        };
        self.leaf(shape, DType::F32, source, false)
    }

    /// A u32 input (token ids, class labels), fed at every run.
    pub fn input_indices(&mut self, name: &str, shape: &[usize]) -> Var {
        let source = Source::Input {
            name: name.to_string(),
        };
        self.leaf(shape, DType::U32, source, false)
    }

    /// Fixed f32 values.
    pub fn constant(&mut self, data: Vec<f32>, shape: &[usize]) -> Result<Var> {
        let n = numel(shape)?;
        if data.len() != n {
            return Err(Error::ShapeMismatch {
                op: "constant",
                lhs: vec![data.len()],
                rhs: shape.to_vec(),
                expected: format!("the shape holds {n} values"),
            });
        }
        Ok(self.leaf(shape, DType::F32, Source::Constant { data }, false))
    }

    /// Adds a node after checking its inputs with the op's shape rule; returns its outputs.
    pub(crate) fn push(&mut self, op: Op, inputs: &[Var]) -> Result<Vec<Var>> {
        let shapes: Vec<(&[usize], DType)> = inputs
            .iter()
            .map(|&v| (self.values[v.0].shape.as_slice(), self.values[v.0].dtype))
            .collect();
        let outputs = op.infer(&shapes)?;
        let differentiable = op.differentiable_outputs();
        let needs_grad = inputs.iter().any(|v| self.values[v.0].needs_grad);
        let mut vars = Vec::with_capacity(outputs.len());
        for (i, (shape, dtype)) in outputs.into_iter().enumerate() {
            self.values.push(Value {
                shape,
                dtype,
                source: Source::Computed,
                needs_grad: needs_grad && differentiable.get(i).copied().unwrap_or(false),
                index_bound: None,
            });
            vars.push(Var(self.values.len() - 1));
        }
        self.nodes.push(Node {
            op,
            inputs: inputs.to_vec(),
            outputs: vars.clone(),
        });
        Ok(vars)
    }

    pub(crate) fn push_one(&mut self, op: Op, inputs: &[Var]) -> Result<Var> {
        Ok(self.push(op, inputs)?[0])
    }

    /// a·b for a [batch…, M, K] and b [batch…, K, N]: the same batch axes, or a matrix
    /// (rank 2) on either side shared by every batch of the other.
    pub fn matmul(&mut self, a: Var, b: Var) -> Result<Var> {
        self.gemm(a, b, false, false, None)
    }

    /// op(a)·op(b) + bias, batched as [`Graph::matmul`], with op a transpose of the last two
    /// axes where asked and bias a row vector of N.
    pub fn gemm(
        &mut self,
        a: Var,
        b: Var,
        trans_a: bool,
        trans_b: bool,
        bias: Option<Var>,
    ) -> Result<Var> {
        let mut inputs = vec![a, b];
        inputs.extend(bias);
        self.push_one(
            Op::MatMul {
                trans_a,
                trans_b,
                bias: bias.is_some(),
                fused: MatMulFusion::Plain,
            },
            &inputs,
        )
    }

    /// y = f(x) elementwise.
    pub fn map(&mut self, x: Var, f: Unary) -> Result<Var> {
        self.push_one(Op::Unary(f), &[x])
    }

    /// tanh(x) elementwise.
    pub fn tanh(&mut self, x: Var) -> Result<Var> {
        self.map(x, Unary::Tanh)
    }

    /// max(x, 0) elementwise.
    pub fn relu(&mut self, x: Var) -> Result<Var> {
        self.map(x, Unary::Relu)
    }

    /// 1/(1 + e^(−x)) elementwise.
    pub fn sigmoid(&mut self, x: Var) -> Result<Var> {
        self.map(x, Unary::Sigmoid)
    }

    /// α·x elementwise.
    pub fn scale(&mut self, x: Var, alpha: f32) -> Result<Var> {
        self.map(x, Unary::Scale(alpha))
    }

    /// a ∘ b elementwise with numpy broadcasting (or a derivative op, same shapes).
    pub fn zip(&mut self, a: Var, b: Var, op: Binary) -> Result<Var> {
        self.push_one(Op::Binary(op), &[a, b])
    }

    /// a + b elementwise with numpy broadcasting; the result has the broadcast shape.
    pub fn add(&mut self, a: Var, b: Var) -> Result<Var> {
        self.zip(a, b, Binary::Add)
    }

    /// a − b elementwise with numpy broadcasting.
    pub fn sub(&mut self, a: Var, b: Var) -> Result<Var> {
        self.zip(a, b, Binary::Sub)
    }

    /// a · b elementwise with numpy broadcasting.
    pub fn mul(&mut self, a: Var, b: Var) -> Result<Var> {
        self.zip(a, b, Binary::Mul)
    }

    /// a / b elementwise with numpy broadcasting.
    pub fn div(&mut self, a: Var, b: Var) -> Result<Var> {
        self.zip(a, b, Binary::Div)
    }

    /// Inverted dropout: each element of `x` kept with probability 1 − p and scaled by
    /// 1/(1 − p), else 0, by a hash of the `seed` (u32 \[1\], an input fed before each run:
    /// a new value every training step), the element's index and the dropout's stream, its
    /// count among the graph's dropouts (so that dropouts sharing a seed draw different
    /// masks). p must be in [0, 1); 0 builds no op and returns `x`.
    pub fn dropout(&mut self, x: Var, p: f32, seed: Var) -> Result<Var> {
        crate::kernels::random::drop_threshold(p)?;
        if p == 0.0 {
            return Ok(x);
        }
        let stream = self
            .nodes
            .iter()
            .filter(|node| matches!(node.op, Op::Dropout { .. }))
            .count() as u32;
        self.push_one(Op::Dropout { p, stream }, &[x, seed])
    }

    /// Sum, max or mean over `axis` (negative counts from the end).
    pub fn reduce(&mut self, x: Var, op: Reduce, axis: isize, keep_dim: bool) -> Result<Var> {
        let axis = crate::tensor::resolve_axis("reduce", axis, self.shape(x).len())?;
        self.push_one(Op::Reduce { op, axis, keep_dim }, &[x])
    }

    /// The sum over `axis` (negative counts from the end); `keep_dim` keeps it as size 1.
    pub fn sum(&mut self, x: Var, axis: isize, keep_dim: bool) -> Result<Var> {
        self.reduce(x, Reduce::Sum, axis, keep_dim)
    }

    /// The mean over `axis` (negative counts from the end); `keep_dim` keeps it as size 1.
    pub fn mean(&mut self, x: Var, axis: isize, keep_dim: bool) -> Result<Var> {
        self.reduce(x, Reduce::Mean, axis, keep_dim)
    }

    /// Sums `x` down to `shape`, the inverse of broadcasting it from `shape`.
    pub fn sum_to(&mut self, x: Var, shape: &[usize]) -> Result<Var> {
        if self.shape(x) == shape {
            return Ok(x);
        }
        self.push_one(
            Op::SumTo {
                shape: shape.to_vec(),
            },
            &[x],
        )
    }

    /// Repeats `x` along its size-1 axes to `shape` (numpy broadcasting).
    pub fn broadcast_to(&mut self, x: Var, shape: &[usize]) -> Result<Var> {
        if self.shape(x) == shape {
            return Ok(x);
        }
        self.push_one(
            Op::BroadcastTo {
                shape: shape.to_vec(),
            },
            &[x],
        )
    }

    /// The same values with another shape of as many elements (no copy).
    pub fn reshape(&mut self, x: Var, shape: &[usize]) -> Result<Var> {
        if self.shape(x) == shape {
            return Ok(x);
        }
        self.push_one(
            Op::Reshape {
                shape: shape.to_vec(),
            },
            &[x],
        )
    }

    /// Reorders the axes: axis i of the result is axis `perm[i]` of `x`.
    pub fn permute(&mut self, x: Var, perm: &[usize]) -> Result<Var> {
        self.push_one(
            Op::Permute {
                perm: perm.to_vec(),
            },
            &[x],
        )
    }

    /// Swaps the last two axes.
    pub fn transpose(&mut self, x: Var) -> Result<Var> {
        let rank = self.shape(x).len();
        if rank < 2 {
            return Err(Error::invalid(
                "transpose",
                format!("needs 2 axes, the value has shape {:?}", self.shape(x)),
            ));
        }
        let mut perm: Vec<usize> = (0..rank).collect();
        perm.swap(rank - 2, rank - 1);
        self.permute(x, &perm)
    }

    /// Softmax (or log-softmax) along the last axis.
    pub fn softmax(&mut self, x: Var, log: bool) -> Result<Var> {
        self.push_one(Op::Softmax { log }, &[x])
    }

    /// Entries `start..end` of `axis` (negative values count from the end, as in Python).
    pub fn slice(&mut self, x: Var, axis: isize, start: isize, end: isize) -> Result<Var> {
        let (axis, start, end) =
            crate::kernels::copy::resolve_slice("slice", self.shape(x), axis, start, end)?;
        if start == 0 && end == self.shape(x)[axis] {
            return Ok(x);
        }
        self.push_one(Op::Slice { axis, start, end }, &[x])
    }

    /// The values one after another along `axis` (negative counts from the end).
    pub fn concat(&mut self, parts: &[Var], axis: isize) -> Result<Var> {
        let Some(&first) = parts.first() else {
            return Err(Error::invalid("concat", "needs at least one value"));
        };
        let axis = crate::tensor::resolve_axis("concat", axis, self.shape(first).len())?;
        self.push_one(Op::Concat { axis }, parts)
    }

    /// Looks up the rows of `table` [vocab, dim] for u32 `ids` of any shape: ids.shape +
    /// \[dim\] (the gather on axis 0). Fed ids are checked against the vocabulary before they
    /// reach the GPU.
    pub fn embedding(&mut self, table: Var, ids: Var) -> Result<Var> {
        if self.shape(table).len() != 2 {
            return Err(mismatch(
                "embedding",
                self.shape(table),
                self.shape(ids),
                "the table must be [vocab, dim]".into(),
            ));
        }
        self.gather(table, 0, ids)
    }

    /// ONNX's Gather: the entries of `axis` of `x` (negative counts from the end) picked by
    /// u32 `indices` of any shape, giving x.shape[..axis] + indices.shape +
    /// x.shape[axis + 1..]. Fed indices are checked against the axis length before they
    /// reach the GPU. The gradient sums into each entry the gradients of the positions that
    /// picked it, in a fixed order (the same bits every run).
    pub fn gather(&mut self, x: Var, axis: isize, indices: Var) -> Result<Var> {
        let axis = crate::tensor::resolve_axis("gather", axis, self.shape(x).len())?;
        let out = self.push_one(Op::Gather { axis }, &[x, indices])?;
        let axis_len = self.shape(x)[axis] as u32;
        // Indices that serve several lookups must suit the shortest axis, and no gather
        // admits an ignore value.
        let bound = match self.values[indices.0].index_bound {
            Some(earlier) => earlier.bound.min(axis_len),
            None => axis_len,
        };
        self.values[indices.0].index_bound = Some(IndexBound {
            bound,
            ignore: None,
        });
        Ok(out)
    }

    /// Layer norm over the last axis with a gain and a bias of its size.
    pub fn layer_norm(&mut self, x: Var, gain: Var, bias: Var, eps: f32) -> Result<Var> {
        Ok(self.push(Op::LayerNorm { eps }, &[x, gain, bias])?[0])
    }

    /// The n-gram window of a text CNN: x [N, C, L] (C the embedding width) convolved with
    /// `weight` [O, C, k], plus `bias` \[O\] if given: [N, O, L_out] with
    /// L_out = (L + pad_left + pad_right − k) / stride + 1.
    pub fn conv1d(
        &mut self,
        x: Var,
        weight: Var,
        bias: Option<Var>,
        options: Conv1d,
    ) -> Result<Var> {
        self.convolve(ConvLayout::Sequence, x, weight, bias, options.into())
    }

    /// The convolution of images x [N, C, H, W] with `weight` [O, C, kh, kw], plus `bias`
    /// (O values) if given: [N, O, OH, OW] with
    /// OH = (H + pad_top + pad_bottom − kh) / stride_h + 1 and OW likewise.
    pub fn conv2d(
        &mut self,
        x: Var,
        weight: Var,
        bias: Option<Var>,
        options: Conv2d,
    ) -> Result<Var> {
        self.convolve(ConvLayout::Image, x, weight, bias, options)
    }

    fn convolve(
        &mut self,
        layout: ConvLayout,
        x: Var,
        weight: Var,
        bias: Option<Var>,
        options: Conv2d,
    ) -> Result<Var> {
        let mut inputs = vec![x, weight];
        inputs.extend(bias);
        let op = Op::Conv {
            layout,
            options,
            bias: bias.is_some(),
        };
        self.push_one(op, &inputs)
    }

    /// The maximum of each channel over time, x [N, C, L] → [N, C]: the pooling of a text
    /// CNN (the first maximum wins a tie, a NaN propagates).
    pub fn max_over_time(&mut self, x: Var) -> Result<Var> {
        Ok(self.max_over_time_with_positions(x)?.0)
    }

    /// [`Graph::max_over_time`] and the position in 0..L of each maximum (u32 [N, C], which
    /// [`Plan::read_indices`] reads when compiled as an output).
    pub fn max_over_time_with_positions(&mut self, x: Var) -> Result<(Var, Var)> {
        let outputs = self.push(Op::MaxOverTime, &[x])?;
        Ok((outputs[0], outputs[1]))
    }

    /// Max pooling along the last axis, x [N, C, L] → [N, C, L_out] with
    /// L_out = (L + pad_left + pad_right − kernel) / stride + 1; padding never wins (the
    /// first maximum wins a tie, a NaN propagates). Where windows overlap, an input that is
    /// the maximum of several gets the sum of their gradients.
    pub fn max_pool1d(&mut self, x: Var, options: MaxPool1d) -> Result<Var> {
        Ok(self.max_pool1d_with_positions(x, options)?.0)
    }

    /// [`Graph::max_pool1d`] and the position in 0..L of each maximum (u32 [N, C, L_out],
    /// which [`Plan::read_indices`] reads when compiled as an output).
    pub fn max_pool1d_with_positions(&mut self, x: Var, options: MaxPool1d) -> Result<(Var, Var)> {
        let outputs = self.push(Op::MaxPool1d { options }, &[x])?;
        Ok((outputs[0], outputs[1]))
    }

    /// Scaled dot-product attention, softmax(q·kᵀ·scale + masks)·v: q [B, H, Lq, D],
    /// k [B, Hkv, Lk, D], v [B, Hkv, Lk, Dv] with Hkv dividing H (each key/value head serves
    /// a group of query heads: grouped-query attention), result [B, H, Lq, Dv]. `scale`
    /// defaults to 1/√D. The masks: `key_lengths` (u32 \[B\], fed) masks each batch's keys past
    /// its length (lengths above Lk mean Lk), `causal` the keys after each query's position,
    /// the queries being the last Lq of the Lk positions (query i sees keys up to i when
    /// Lq = Lk). A query whose keys are all masked gets 0. [`Graph::attention_with`] takes
    /// the other options: a mask tensor, a sliding window, a softcap.
    pub fn attention(
        &mut self,
        q: Var,
        k: Var,
        v: Var,
        key_lengths: Option<Var>,
        causal: bool,
        scale: Option<f32>,
    ) -> Result<Var> {
        let mut spec = AttentionSpec::default().causal(causal);
        spec.settings.scale = scale;
        spec.key_lengths = key_lengths;
        self.attention_with(q, k, v, &spec)
    }

    /// A recurrent layer (RNN, GRU or LSTM, `kernels::recurrent`) over a whole sequence in
    /// one direction: gx [T, B, G·H] holds the input projections x·Wx + bx of every step
    /// (one matmul beforehand), r [H, G·H] and r_bias [G·H] the recurrent weight and bias
    /// (gh = h·r + r_bias), h0 [B, H] the initial state. Each step is one recurrent matmul
    /// and one fused cell kernel, forward and backward.
    pub fn recurrent(
        &mut self,
        gx: Var,
        r: Var,
        r_bias: Var,
        h0: Var,
        spec: &RecurrentSpec,
    ) -> Result<RecurrentOutput> {
        let lstm = spec.kind == CellKind::Lstm;
        if lstm != spec.c0.is_some() {
            return Err(Error::invalid(
                "recurrent",
                format!(
                    "an LSTM needs an initial cell c0 and other cells take none; got a {} \
                     with{} c0",
                    spec.kind.name(),
                    if spec.c0.is_some() { "" } else { "out" }
                ),
            ));
        }
        let mut inputs = vec![gx, r, r_bias, h0];
        inputs.extend(spec.c0);
        inputs.extend(spec.lengths);
        let op = Op::Recurrent {
            kind: spec.kind,
            reverse: spec.reverse,
            lengths: spec.lengths.is_some(),
        };
        let outputs = self.push(op, &inputs)?;
        let steps = self.shape(gx)[0] as isize;
        let (sequence, last) = if spec.reverse {
            (0..steps, 0)
        } else {
            (1..steps + 1, steps)
        };
        let batch_hidden = self.shape(h0).to_vec();
        let final_slot = |g: &mut Graph, all: Var| -> Result<Var> {
            let slot = g.slice(all, 0, last, last + 1)?;
            g.reshape(slot, &batch_hidden)
        };
        let last_state = final_slot(self, outputs[0])?;
        let last_cell = if lstm {
            Some(final_slot(self, outputs[1])?)
        } else {
            None
        };
        Ok(RecurrentOutput {
            sequence: self.slice(outputs[0], 0, sequence.start, sequence.end)?,
            last: last_state,
            last_cell,
        })
    }

    /// [`Graph::attention`] with every option of the attention kernels (see
    /// [`AttentionSpec`]). The mask has no gradient: it must not depend on a parameter.
    pub fn attention_with(&mut self, q: Var, k: Var, v: Var, spec: &AttentionSpec) -> Result<Var> {
        let mut inputs = vec![q, k, v];
        inputs.extend(spec.key_lengths);
        if let Some((_, mask)) = spec.mask {
            if self.values[mask.0].needs_grad {
                return Err(Error::invalid(
                    "attention",
                    format!(
                        "the mask (shape {:?}) depends on a parameter, but attention gives \
                         its mask no gradient: build a learned score bias from matmul, add \
                         and softmax instead",
                        self.shape(mask)
                    ),
                ));
            }
            inputs.push(mask);
        }
        let dims = AttentionDims::from_shapes(self.shape(q), self.shape(k), self.shape(v))?;
        let variant = spec
            .variant
            .unwrap_or_else(|| AttentionVariant::choose_for_training(&self.gpu, &dims));
        let op = Op::Attention {
            settings: spec.settings,
            key_lengths: spec.key_lengths.is_some(),
            mask: spec.mask.map(|(kind, _)| kind),
            variant,
        };
        Ok(self.push(op, &inputs)?[0])
    }

    /// The mean softmax-cross-entropy of `logits` [N, C] against `targets` (u32 \[N\]),
    /// skipping rows whose target is `ignore`: a scalar. The logits' gradient is computed
    /// in the same pass and kept for the backward.
    pub fn cross_entropy(&mut self, logits: Var, targets: Var, ignore: Option<u32>) -> Result<Var> {
        let outputs = self.push(Op::CrossEntropy { ignore }, &[logits, targets])?;
        let classes = self.shape(logits)[1] as u32;
        self.values[targets.0].index_bound = Some(IndexBound {
            bound: classes,
            ignore,
        });
        Ok(outputs[0])
    }
}

/// What [`Graph::recurrent`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecurrentOutput {
    /// The state after each step, [T, B, H], time t at index t in either direction (a step
    /// past a batch item's length repeats the state before it).
    pub sequence: Var,
    /// The final state [B, H]: after each item's last real step going forward, after step 0
    /// going backward.
    pub last: Var,
    /// An LSTM's final cell [B, H].
    pub last_cell: Option<Var>,
}

/// The options of [`Graph::recurrent`] besides its operands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecurrentSpec {
    /// RNN, GRU or LSTM.
    pub kind: CellKind,
    /// Runs from the last step to the first (the backward half of a bidirectional layer).
    pub reverse: bool,
    /// u32 \[B\]: the steps at and after an item's length keep its state.
    pub lengths: Option<Var>,
    /// An LSTM's initial cell [B, H] (required for an LSTM, refused otherwise).
    pub c0: Option<Var>,
}

impl RecurrentSpec {
    /// A forward layer over full-length sequences.
    pub fn new(kind: CellKind) -> Self {
        RecurrentSpec {
            kind,
            reverse: false,
            lengths: None,
            c0: None,
        }
    }
}

/// The options of [`Graph::attention_with`], none set by default; chain the setters:
/// `AttentionSpec::default().causal(true).softcap(30.0).mask(MaskKind::Additive, bias)`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct AttentionSpec {
    /// The scale, causal masking, where the queries sit among the keys (by default the last
    /// Lq of the Lk positions), the sliding window and the softcap.
    pub settings: AttentionSettings,
    /// u32 \[B\], fed: each batch's keys past its length are masked.
    pub key_lengths: Option<Var>,
    /// An f32 value broadcastable to the scores [B, H, Lq, Lk]: added to the (softcapped)
    /// scores, −∞ masking, or boolean as 0/1 (0 masks). Not differentiable.
    pub mask: Option<(MaskKind, Var)>,
    /// Forces the unfused kernels (which keep P for the backward) or the fused ones (which
    /// keep each row's log-sum-exp and recompute P); `None`:
    /// [`AttentionVariant::choose_for_training`].
    pub variant: Option<AttentionVariant>,
}

impl AttentionSettingsBuilder for AttentionSpec {
    fn settings_mut(&mut self) -> &mut AttentionSettings {
        &mut self.settings
    }
}

impl AttentionSpec {
    /// Masks each batch's keys past its length: `lengths` is a u32 value `[B]`, fed.
    pub fn key_lengths(mut self, lengths: Var) -> Self {
        self.key_lengths = Some(lengths);
        self
    }

    /// Adds a mask value of `kind`, broadcastable to the scores `[B, H, Lq, Lk]`.
    pub fn mask(mut self, kind: MaskKind, values: Var) -> Self {
        self.mask = Some((kind, values));
        self
    }

    /// Forces the fused or the unfused kernels, forward and backward.
    pub fn variant(mut self, variant: AttentionVariant) -> Self {
        self.variant = Some(variant);
        self
    }
}

/// `name: shape mismatch` for ops whose operands disagree.
pub(crate) fn mismatch(op: &'static str, lhs: &[usize], rhs: &[usize], expected: String) -> Error {
    Error::ShapeMismatch {
        op,
        lhs: lhs.to_vec(),
        rhs: rhs.to_vec(),
        expected,
    }
}
