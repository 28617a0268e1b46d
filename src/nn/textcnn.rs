//! The n-gram CNN text classifier (Kim 2014), built on the graph over [`Parameters`]:
//!
//! ids `[B, L]` → embedding `[B, L, E]` → permute to `[B, E, L]` → for each filter width
//! w: conv1d of `filters` channels `[B, F, L − w + 1]` → ReLU → × window mask → max over
//! time `[B, F]` → concat `[B, F·widths]` → Linear → logits `[B, classes]`.
//!
//! The window mask (fed, `[B, 1, L − w + 1]`) zeroes the windows that start past a text's last
//! full window, so a text's prediction does not depend on how far its batch pads it: after
//! the ReLU every value is ≥ 0, so a zeroed window never beats a real one.
//!
//! Parameters (PyTorch's layouts): `embedding.weight` `[V, E]`, `conv{w}.weight`
//! `[F, E, w]`, `conv{w}.bias` `[F]`, `output.weight` `[C, F·widths]`, `output.bias` `[C]`.
//!
//! [`Parameters`]: crate::nn::Parameters

use serde_json::Value;

use crate::error::{Error, Result};
use crate::graph::{Graph, Var};
use crate::limits::{saturating_product, MemoryEstimate, Tally};
use crate::nn::{Conv1d, Embedding, Linear, Parameters};

/// The architecture: everything needed to rebuild the model.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TextCnnConfig {
    /// How many distinct words (token ids `0..vocab_size`): the embedding's rows.
    pub vocab_size: usize,
    /// The width `E` of a word's embedding vector: the convolutions' input channels.
    pub embed: usize,
    /// The n-gram widths, one convolution each.
    pub widths: Vec<usize>,
    /// Output channels of each convolution.
    pub filters: usize,
    /// How many labels the texts fall into: the logits' width.
    pub classes: usize,
}

impl TextCnnConfig {
    /// Checks the sizes, naming the first that is unusable.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: &str, value: String, expected: &str| {
            Err(Error::invalid(
                "text cnn",
                format!("{what} {value}: expected {expected}"),
            ))
        };
        if self.embed == 0 {
            return bad("--embed", "0".into(), "at least 1");
        }
        if self.filters == 0 {
            return bad("--filters", "0".into(), "at least 1");
        }
        let widths = match self.widths.as_slice() {
            [] => "(none)".to_string(),
            widths => widths
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(","),
        };
        if self.widths.is_empty() || self.widths.contains(&0) {
            return bad(
                "--widths",
                widths,
                "one or more widths of at least 1, e.g. 2,3,4",
            );
        }
        let mut sorted = self.widths.clone();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.len() != self.widths.len() {
            return bad(
                "--widths",
                widths,
                "each width once (parameters are named by width)",
            );
        }
        if self.classes < 2 {
            return bad("classes", self.classes.to_string(), "at least 2");
        }
        Ok(())
    }

    /// The widest filter: batches are padded to at least this many words.
    pub fn widest(&self) -> usize {
        self.widths.iter().copied().max().unwrap_or(1)
    }

    /// How many numbers the parameters hold, from the sizes alone (an error when the
    /// count overflows); a test holds it to the model built.
    pub fn parameter_count(&self) -> Result<u64> {
        let (v, e, filters, classes) = (self.vocab_size, self.embed, self.filters, self.classes);
        let mut tally = Tally::new();
        tally.add(&[v, e]);
        for &width in &self.widths {
            tally.add(&[filters, e, width]).add(&[filters]);
        }
        let features = filters.saturating_mul(self.widths.len());
        tally.add(&[features.saturating_add(1), classes]);
        tally.total(&format!(
            "the parameter count of embedding {e}, widths {:?} and {filters} filters",
            self.widths
        ))
    }

    /// Roughly what training on batches of `batch` texts of up to `words` words allocates:
    /// the parameters with their gradients and two optimizer moments, and a step's larger
    /// activations with their gradients.
    pub fn training_memory(&self, batch: usize, words: usize) -> Result<MemoryEstimate> {
        let (v, e, filters) = (self.vocab_size, self.embed, self.filters);
        let widest = self.widths.iter().copied().max().unwrap_or(1);
        let parameters = self.parameter_count()?;
        let mut memory = MemoryEstimate::for_training(parameters);
        memory
            .buffer(
                format!("the embedding table (vocabulary {v} × embedding {e})"),
                saturating_product(&[v, e]),
            )
            .buffer(
                format!("the widest convolution's weight (filters {filters} × embedding {e} × width {widest})"),
                saturating_product(&[filters, e, widest]),
            )
            .buffers(
                format!("the embedded words and their gradients (batch {batch} × {words} words × embedding {e})"),
                3,
                saturating_product(&[batch, words, e]),
            )
            .buffers(
                format!("the convolutions' outputs and their gradients, per width (batch {batch} × filters {filters} × {words} words)"),
                saturating_product(&[4, self.widths.len()]),
                saturating_product(&[batch, filters, words]),
            );
        Ok(memory)
    }

    /// The architecture as the JSON a checkpoint stores (`"kind": "textcnn"` and the
    /// sizes); [`TextCnnConfig::from_json`] reads it back.
    pub fn to_json(&self) -> Value {
        crate::nn::config_record(self, TEXTCNN_KIND)
    }

    /// The architecture a checkpoint stored ([`TextCnnConfig::to_json`]): an error when the
    /// `kind` is not `"textcnn"`, a field is missing or ill-typed, or a size is unusable.
    pub fn from_json(value: &Value) -> Result<Self> {
        let config: TextCnnConfig =
            crate::nn::from_config_record(value, TEXTCNN_KIND, "a train-cnn model")?;
        config.validate()?;
        Ok(config)
    }
}

/// The `kind` a text CNN checkpoint's architecture carries.
pub const TEXTCNN_KIND: &str = "textcnn";

/// The classifier's modules, named as a PyTorch module of the same structure names them:
/// `embedding.weight` `[V, E]`, per filter width w `conv{w}.weight` `[F, E, w]` and
/// `conv{w}.bias` (`nn.Conv1d`), `output.weight` `[C, F·widths]` and `output.bias`.
#[derive(Debug, Clone)]
pub struct TextCnn {
    /// The architecture.
    pub config: TextCnnConfig,
    embedding: Embedding,
    /// One convolution per filter width, in the config's order.
    convs: Vec<Conv1d>,
    output: Linear,
}

impl TextCnn {
    /// The modules of `config`, their parameters made (or found) in `params`.
    pub fn new(config: &TextCnnConfig, params: &Parameters) -> Result<Self> {
        let embedding = Embedding::new(&params.at("embedding"), config.vocab_size, config.embed)?;
        let convs = config
            .widths
            .iter()
            .map(|&width| {
                let params = params.at(&format!("conv{width}"));
                Conv1d::new(&params, config.embed, config.filters, width)
            })
            .collect::<Result<Vec<_>>>()?;
        let features = config.filters.saturating_mul(config.widths.len());
        let output = Linear::new(&params.at("output"), features, config.classes)?;
        Ok(TextCnn {
            config: config.clone(),
            embedding,
            convs,
            output,
        })
    }

    /// The logits `[B, classes]` of `ids` (u32 `[B, L]`); `window_masks[i]` (f32
    /// `[B, 1, L − widths[i] + 1]`) is 1 for the windows each text fills, 0 after.
    pub fn logits(&self, g: &mut Graph, ids: Var, window_masks: &[Var]) -> Result<Var> {
        if window_masks.len() != self.convs.len() {
            return Err(Error::invalid(
                "text cnn",
                format!(
                    "{} window masks for {} widths; expected one per width",
                    window_masks.len(),
                    self.convs.len()
                ),
            ));
        }
        let embedded = self.embedding.forward(g, ids)?;
        let channels_first = g.permute(embedded, &[0, 2, 1])?;
        let mut pooled = Vec::with_capacity(self.convs.len());
        for (conv, &mask) in self.convs.iter().zip(window_masks) {
            let windows = conv.forward(g, channels_first)?;
            let activated = g.relu(windows)?;
            let kept = g.mul(activated, mask)?;
            pooled.push(g.max_over_time(kept)?);
        }
        let features = g.concat(&pooled, 1)?;
        self.output.forward(g, features)
    }
}

/// The window mask of each width for texts of `lengths` padded to `steps`: [B, 1,
/// steps − w + 1] row-major, 1 where a window starts at or before the text's last full
/// window (a text shorter than w keeps its first window, which it fills partly).
pub fn window_mask(lengths: &[u32], steps: usize, width: usize) -> Vec<f32> {
    let windows = steps + 1 - width.min(steps);
    let mut mask = vec![0.0; lengths.len() * windows];
    for (row, &length) in lengths.iter().enumerate() {
        let last_start = (length as usize).saturating_sub(width);
        for start in 0..=last_start.min(windows - 1) {
            mask[row * windows + start] = 1.0;
        }
    }
    mask
}
