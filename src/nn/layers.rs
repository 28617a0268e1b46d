//! The basic layers, with PyTorch's parameter names, layouts and default initialisations,
//! so that a `state_dict` moves between the two: [`Linear`] (`weight` `[out, in]`,
//! `bias`), [`Embedding`] (`weight` `[vocab, dim]`), [`LayerNorm`] (`weight`, `bias`),
//! [`Conv1d`] (`weight` `[out, in, k]`, `bias`), and the [`Mlp`] stacked from Linear layers.
//!
//! A layer holds its [`Parameter`]s, made in a [`Parameters`] store when the layer is; its
//! `forward` adds the layer to any graph, at any batch shape, over those same parameters.

use crate::error::{Error, Result};
use crate::graph::{GemmSpec, Graph, Parameter, Var};
use crate::kernels::conv::Conv1d as Conv1dGeometry;
use crate::limits::{saturating_product, MemoryEstimate, Tally};
use crate::nn::{Activation, Init, Parameters};

/// PyTorch's `nn.Linear`: y = x·Wᵀ + b over the last axis of x `[…, in]`, giving `[…, out]`.
#[derive(Debug, Clone)]
pub struct Linear {
    /// `weight`, shape `[out_features, in_features]`.
    pub weight: Parameter,
    /// `bias`, shape `[out_features]`; `None` for a layer made [`LinearSpec::without_bias`].
    pub bias: Option<Parameter>,
}

/// How to make a [`Linear`]: its sizes, whether it has a bias, how its weight starts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinearSpec {
    /// Features of each input row.
    pub in_features: usize,
    /// Features of each output row.
    pub out_features: usize,
    /// Whether the layer adds a bias (PyTorch's `bias=True`, the default).
    pub bias: bool,
    /// How the weight starts; PyTorch's default (uniform in ±1/√in) when `None`. The bias
    /// always starts as PyTorch's does.
    pub init: Option<Init>,
}

impl LinearSpec {
    /// A layer of `in_features` to `out_features` with a bias, started as PyTorch starts it.
    pub fn new(in_features: usize, out_features: usize) -> Self {
        LinearSpec {
            in_features,
            out_features,
            bias: true,
            init: None,
        }
    }

    /// The layer without a bias.
    pub fn without_bias(self) -> Self {
        LinearSpec {
            bias: false,
            ..self
        }
    }

    /// The weight started by `init` instead of PyTorch's default.
    pub fn init(self, init: Init) -> Self {
        LinearSpec {
            init: Some(init),
            ..self
        }
    }
}

impl Linear {
    /// `weight` and `bias` in `params`, started as PyTorch's `nn.Linear(in, out)` starts them.
    pub fn new(params: &Parameters, in_features: usize, out_features: usize) -> Result<Linear> {
        Linear::with_spec(params, LinearSpec::new(in_features, out_features))
    }

    /// The layer `spec` describes, its parameters made (or found) in `params`.
    pub fn with_spec(params: &Parameters, spec: LinearSpec) -> Result<Linear> {
        let (inputs, outputs) = (spec.in_features, spec.out_features);
        if inputs == 0 || outputs == 0 {
            return Err(Error::invalid(
                "Linear",
                format!(
                    "{}: a layer of {inputs} inputs and {outputs} outputs has no weights",
                    params.path("weight")
                ),
            ));
        }
        let bound = Init::Uniform(1.0 / (inputs as f32).sqrt());
        let weight =
            params.get_or_init("weight", &[outputs, inputs], spec.init.unwrap_or(bound))?;
        let bias = match spec.bias {
            true => Some(params.get_or_init("bias", &[outputs], bound)?),
            false => None,
        };
        Ok(Linear { weight, bias })
    }

    /// Features of each input row.
    pub fn in_features(&self) -> usize {
        self.weight.shape()[1]
    }

    /// Features of each output row.
    pub fn out_features(&self) -> usize {
        self.weight.shape()[0]
    }

    /// Adds x·Wᵀ + b to `g`: for `x` of shape `[…, in]`, the result is `[…, out]`.
    pub fn forward(&self, g: &mut Graph, x: Var) -> Result<Var> {
        let shape = g.shape(x).to_vec();
        let (inputs, outputs) = (self.in_features(), self.out_features());
        if shape.last() != Some(&inputs) {
            return Err(Error::invalid(
                "Linear",
                format!(
                    "{} takes inputs of {inputs} features on the last axis, got shape {shape:?}",
                    self.weight.name()
                ),
            ));
        }
        let rows = shape[..shape.len() - 1].iter().product();
        let flat = g.reshape(x, &[rows, inputs])?;
        let weight = g.param(&self.weight)?;
        let mut spec = GemmSpec::new().transpose_b();
        if let Some(bias) = &self.bias {
            spec = spec.bias(g.param(bias)?);
        }
        let y = g.gemm(flat, weight, spec)?;
        let mut out_shape = shape;
        *out_shape.last_mut().expect("the input has a last axis") = outputs;
        g.reshape(y, &out_shape)
    }
}

/// PyTorch's `nn.Embedding`: rows of `weight` `[vocab, dim]` looked up by u32 ids of any
/// shape, giving `ids.shape + [dim]`.
#[derive(Debug, Clone)]
pub struct Embedding {
    /// `weight`, shape `[num_embeddings, embedding_dim]`.
    pub weight: Parameter,
}

impl Embedding {
    /// `weight` in `params`, started as PyTorch starts it (standard normal).
    pub fn new(params: &Parameters, num_embeddings: usize, embedding_dim: usize) -> Result<Self> {
        Embedding::with_init(params, num_embeddings, embedding_dim, Init::Normal(1.0))
    }

    /// `weight` in `params`, started by `init`.
    pub fn with_init(
        params: &Parameters,
        num_embeddings: usize,
        embedding_dim: usize,
        init: Init,
    ) -> Result<Self> {
        if num_embeddings == 0 || embedding_dim == 0 {
            return Err(Error::invalid(
                "Embedding",
                format!(
                    "{}: a table of {num_embeddings} rows of {embedding_dim} has no weights",
                    params.path("weight")
                ),
            ));
        }
        let weight = params.get_or_init("weight", &[num_embeddings, embedding_dim], init)?;
        Ok(Embedding { weight })
    }

    /// Adds the lookup of u32 `ids` to `g`.
    pub fn forward(&self, g: &mut Graph, ids: Var) -> Result<Var> {
        let table = g.param(&self.weight)?;
        g.embedding(table, ids)
    }
}

/// PyTorch's `nn.LayerNorm` over the last axis: (x − mean) / √(var + eps) · weight + bias.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    /// `weight` (the gain), shape `[dim]`, starting at 1.
    pub weight: Parameter,
    /// `bias`, shape `[dim]`, starting at 0.
    pub bias: Parameter,
    /// Added to the variance, PyTorch's default 1e-5.
    pub eps: f32,
}

impl LayerNorm {
    /// PyTorch's default epsilon.
    pub const DEFAULT_EPS: f32 = 1e-5;

    /// `weight` and `bias` of `dim` in `params`, with PyTorch's default epsilon.
    pub fn new(params: &Parameters, dim: usize) -> Result<LayerNorm> {
        LayerNorm::with_eps(params, dim, LayerNorm::DEFAULT_EPS)
    }

    /// `weight` and `bias` of `dim` in `params`, with `eps` added to the variance.
    pub fn with_eps(params: &Parameters, dim: usize, eps: f32) -> Result<LayerNorm> {
        if dim == 0 || !(eps > 0.0 && eps.is_finite()) {
            return Err(Error::invalid(
                "LayerNorm",
                format!(
                    "{}: needs at least one feature and eps > 0, got {dim} and {eps}",
                    params.path("weight")
                ),
            ));
        }
        Ok(LayerNorm {
            weight: params.get_or_init("weight", &[dim], Init::Ones)?,
            bias: params.get_or_init("bias", &[dim], Init::Zeros)?,
            eps,
        })
    }

    /// Adds the normalisation of `x`'s last axis to `g`.
    pub fn forward(&self, g: &mut Graph, x: Var) -> Result<Var> {
        let (weight, bias) = (g.param(&self.weight)?, g.param(&self.bias)?);
        g.layer_norm(x, weight, bias, self.eps)
    }
}

/// PyTorch's `nn.Conv1d`: x `[N, C_in, L]` convolved with `weight` `[C_out, C_in, k]`, plus
/// `bias` `[C_out]`, giving `[N, C_out, L_out]` (L_out = (L + padding − k) / stride + 1).
#[derive(Debug, Clone)]
pub struct Conv1d {
    /// `weight`, shape `[out_channels, in_channels, kernel_size]`.
    pub weight: Parameter,
    /// `bias`, shape `[out_channels]`.
    pub bias: Parameter,
    /// Stride and padding.
    pub geometry: Conv1dGeometry,
}

impl Conv1d {
    /// `weight` and `bias` in `params`, started as PyTorch's `nn.Conv1d(in, out, k)` starts
    /// them (uniform in ±1/√(in·k)), with stride 1 and no padding.
    pub fn new(
        params: &Parameters,
        in_channels: usize,
        out_channels: usize,
        kernel_size: usize,
    ) -> Result<Conv1d> {
        Conv1d::with_geometry(
            params,
            in_channels,
            out_channels,
            kernel_size,
            Conv1dGeometry::default(),
        )
    }

    /// [`Conv1d::new`] with another stride or padding.
    pub fn with_geometry(
        params: &Parameters,
        in_channels: usize,
        out_channels: usize,
        kernel_size: usize,
        geometry: Conv1dGeometry,
    ) -> Result<Conv1d> {
        if in_channels == 0 || out_channels == 0 || kernel_size == 0 {
            return Err(Error::invalid(
                "Conv1d",
                format!(
                    "{}: {in_channels} input channels, {out_channels} output channels and a \
                     window of {kernel_size} must all be at least 1",
                    params.path("weight")
                ),
            ));
        }
        let fan_in = in_channels.saturating_mul(kernel_size);
        let bound = Init::Uniform(1.0 / (fan_in as f32).sqrt());
        let shape = [out_channels, in_channels, kernel_size];
        Ok(Conv1d {
            weight: params.get_or_init("weight", &shape, bound)?,
            bias: params.get_or_init("bias", &[out_channels], bound)?,
            geometry,
        })
    }

    /// Adds the convolution of `x` `[N, C_in, L]` to `g`.
    pub fn forward(&self, g: &mut Graph, x: Var) -> Result<Var> {
        let (weight, bias) = (g.param(&self.weight)?, g.param(&self.bias)?);
        g.conv1d(x, weight, Some(bias), self.geometry)
    }
}

/// A multi-layer perceptron: Linear layers with an activation between them (none after
/// the last, which gives logits), named as a PyTorch module holding them in an
/// `nn.ModuleList` called `layers` would name them: `layers.0.weight`, `layers.0.bias`,
/// `layers.1.weight`, ….
#[derive(Debug, Clone)]
pub struct Mlp {
    /// The layers, input first: `layers[i].out_features() == layers[i + 1].in_features()`.
    pub layers: Vec<Linear>,
    /// The nonlinearity after every layer but the last.
    pub activation: Activation,
}

impl Mlp {
    /// Layers of the given sizes, `sizes[0]` inputs to `sizes.last()` outputs, their
    /// weights started by the activation's initialisation ([`Activation::default_init`]).
    pub fn new(params: &Parameters, sizes: &[usize], activation: Activation) -> Result<Mlp> {
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
                let spec = LinearSpec::new(pair[0], pair[1]).init(activation.default_init());
                Linear::with_spec(&params.at(&format!("layers.{i}")), spec)
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
                    format!("layer {i}'s weight ({outputs} outputs × {inputs} inputs)"),
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

    /// The logits for a batch x `[…, sizes[0]]`.
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
