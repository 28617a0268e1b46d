//! The sequence-to-sequence model of [`crate::nn::seq2seq`] (a recurrent encoder-decoder
//! or a Transformer) on the GPU: training and evaluation steps with teacher forcing,
//! checkpoints, and greedy or beam-search decoding.
//!
//! Batches come in several shapes (source and target steps), and each shape is its own
//! compiled plan; every plan reads the same parameters and writes the same gradient
//! tensors ([`Parameters`]), so one optimizer trains them all. Decoding compiles, per shape, an
//! encoder plan and a one-step decoder plan whose recurrent states (a Transformer: its caches
//! of keys and values) and attention keys stay on the GPU between steps; beam search
//! reorders them there too, by each hypothesis's parent.

use std::collections::HashMap;

use serde_json::{json, Value};

use crate::checkpoint::{self, Checkpoint};
use crate::data::text::{bucketed_batches, Bucketing, EncodedPair, SeqBatch, BOS, EOS, PAD};
use crate::data::tokens::{PairVocab, TokenVocab};
use crate::error::{Error, Result};
use crate::gpu::{Dispatch, Gpu};
use crate::graph::{CrossEntropySpec, Feed, Graph, Plan, Var};
use crate::kernels::recurrent::CellKind;
use crate::models::{
    check_config_against_tensors, legacy_recurrent_layer, upgrade_legacy_checkpoint, LegacyName,
    WEIGHT_LAYOUT,
};
use crate::nn::seq2seq::{bind_states, compile_bound, logit_rows_per_chunk};
use crate::nn::seq2seq::{
    key_mask, Architecture, AttentionKind, Encoded, RecurrentConfig, Seq2Seq, Seq2SeqConfig, State,
};
use crate::nn::transformer::Transformer;
use crate::nn::{DecodingStep, KeyValues, Mode, Parameters};
use crate::optim::Optimizer;
use crate::scoring;
use crate::tensor::Tensor;

/// The longest source or target, in tokens, that a checkpoint's config may declare: the
/// bound on how far translation decodes and how wide its plans are. Above the data's own
/// limit ([`crate::data::text::MAX_SEQUENCE_CHARS`]), so that checkpoints trained before
/// that limit still load.
pub const MAX_DECODE_STEPS: usize = 4096;

/// The widest beam: the GPU's top-k ([`crate::kernels::top_k::MAX_K`] per row at most)
/// keeps each hypothesis's best `beam` + 2 tokens, since PAD and BOS may be among them.
pub const MAX_BEAM: usize = crate::kernels::top_k::MAX_K - 2;

/// The values of a training graph that a step feeds or reads.
struct TrainValues {
    source: Var,
    source_lengths: Var,
    /// Additive attention's mask of padded keys.
    key_mask: Option<Var>,
    decoder_input: Var,
    /// The targets `[B·Td]` (batch-major) in chunks of rows, each its own input: one chunk
    /// unless the logits of every row outgrow a buffer ([`logit_rows_per_chunk`]).
    targets: Vec<Var>,
    /// The rows of each chunk but the last (which may be shorter).
    chunk_rows: usize,
    /// With several chunks: f32 `[1]`, 1 / the batch's target tokens, which makes the mean
    /// of the chunks' summed losses.
    loss_scale: Option<Var>,
    /// A Transformer's dropout seed (u32 `[1]`), in training graphs with dropout.
    dropout_seed: Option<Var>,
    loss: Var,
    /// Each chunk's most likely tokens.
    predictions: Vec<Var>,
}

/// A compiled training step (or, without the backward and dropout, an evaluation step) for
/// one batch shape.
struct TrainPlan {
    plan: Plan,
    values: TrainValues,
}

/// The compiled decoding plans for one shape: the encoder, then one decoder step.
struct Decoder {
    encoder: Plan,
    encoder_source: Var,
    encoder_lengths: Var,
    step: Plan,
    step_tokens: Var,
    /// The source lengths (dot attention) or the key mask (additive attention) that mask
    /// the padding; neither without attention.
    step_lengths: Option<Var>,
    step_key_mask: Option<Var>,
    /// Beam search only: u32 `[rows]`, each row's parent hypothesis, whose state it
    /// continues (the states are gathered by it before the step).
    step_parents: Option<Var>,
    /// What the host reads back after each step.
    choice: StepChoice,
}

/// The compiled decoding plans of a Transformer for one shape: the encoder, which leaves
/// each decoder layer's keys and values of its output on the GPU, then one decoder step
/// ([`Transformer::decoder_step`]), which writes its own keys and values into each layer's
/// cache and attends over the positions cached so far.
struct TransformerDecoder {
    encoder: Plan,
    encoder_source: Var,
    encoder_lengths: Var,
    step: Plan,
    /// `[1, rows]`: each hypothesis's latest token.
    step_tokens: Var,
    step_lengths: Var,
    /// `[1]`: the position decoded.
    step_position: Var,
    /// `[rows]`: position + 1, the cached positions each row attends over.
    cache_lengths: Var,
    /// Beam search only: each row's parent hypothesis (`[rows]`), whose cache it continues,
    /// and the position (`[1]`, always 0) the reordered caches are written back at.
    reorder: Option<(Var, Var)>,
    /// What the host reads back after each step.
    choice: StepChoice,
    max_steps: usize,
}

/// What one training step measured.
#[derive(Debug, Clone, Copy)]
pub struct StepReport {
    /// Mean cross-entropy (nats) per target token, padding not counted.
    pub loss: f32,
    /// Target tokens (EOS included, padding not).
    pub tokens: usize,
    /// How many of those tokens were the model's most likely prediction (with teacher
    /// forcing: each step sees the true previous token).
    pub correct: usize,
}

/// A sequence-to-sequence model on the GPU, with its vocabulary and length limits.
pub struct Seq2SeqModel {
    gpu: Gpu,
    /// The architecture (vocabulary size, layers, recurrent or Transformer).
    pub config: Seq2SeqConfig,
    /// The sources' and the targets' tokens.
    pub vocab: PairVocab,
    /// The longest source (in tokens) the model was trained for.
    pub max_source: usize,
    /// The longest target (in tokens, without EOS) the model was trained for: decoding
    /// stops after `max_target + 1` steps even if no EOS comes.
    pub max_target: usize,
    /// The weights on the GPU, bound by every plan the model compiles.
    pub parameters: Parameters,
    /// Beam search ranks its finished outputs by their log-probability over (tokens + 1)^α,
    /// the EOS counted ([`Seq2SeqModel::set_length_penalty`]): α 1, the default, is the mean
    /// log-probability per token; 0 the sum, which favours short outputs.
    length_penalty: f64,
    /// Keyed by batch, source steps, target steps and whether the plan trains.
    train_plans: HashMap<(usize, usize, usize, bool), TrainPlan>,
    /// The most rows of logits a training step computes at once, below what one buffer
    /// holds ([`Seq2SeqModel::limit_logit_rows`]).
    logit_rows: Option<usize>,
    /// Keyed by rows, source steps and beam width.
    decoders: HashMap<(usize, usize, usize), Decoder>,
    transformer_decoders: HashMap<(usize, usize, usize), TransformerDecoder>,
}

/// An RNN encoder-decoder's parameters before PyTorch's names and layouts, in the order
/// that model made them (its optimizer state's order).
fn legacy_recurrent_names(config: &Seq2SeqConfig, recurrent: &RecurrentConfig) -> Vec<LegacyName> {
    let mut names = vec![LegacyName::new(
        "source_embedding.weight",
        "encoder.embedding.weight",
        false,
    )];
    let attention = recurrent.attention != AttentionKind::None;
    for k in 0..config.layers {
        let (old, suffix) = (format!("encoder.layer{k}"), format!("l{k}"));
        names.extend(legacy_recurrent_layer(
            &format!("{old}.forward"),
            "encoder.rnn",
            &suffix,
        ));
        if recurrent.bidirectional {
            let reverse = format!("{suffix}_reverse");
            names.extend(legacy_recurrent_layer(
                &format!("{old}.backward"),
                "encoder.rnn",
                &reverse,
            ));
            let states: &[&str] = match recurrent.cell {
                CellKind::Lstm => &["h", "c"],
                CellKind::Rnn | CellKind::Gru => &["h"],
            };
            for state in states {
                for (what, transposed) in [("weight", true), ("bias", false)] {
                    names.push(LegacyName::new(
                        format!("bridge.layer{k}.{state}.{what}"),
                        format!("bridge_{state}.{k}.{what}"),
                        transposed,
                    ));
                }
            }
        }
    }
    if attention {
        names.push(LegacyName::new(
            "attention.key.weight",
            "attention.key.weight",
            true,
        ));
    }
    names.push(LegacyName::new(
        "target_embedding.weight",
        "decoder.embedding.weight",
        false,
    ));
    for k in 0..config.layers {
        let (old, suffix) = (format!("decoder.layer{k}"), format!("l{k}"));
        names.extend(legacy_recurrent_layer(&old, "decoder.rnn", &suffix));
    }
    if recurrent.attention == AttentionKind::Additive {
        for name in ["attention.query.weight", "attention.score.weight"] {
            names.push(LegacyName::new(name, name, true));
        }
    }
    if attention {
        names.push(LegacyName::new(
            "attention.combine.weight",
            "attention.combine.weight",
            true,
        ));
        names.push(LegacyName::new(
            "attention.combine.bias",
            "attention.combine.bias",
            false,
        ));
    }
    names.push(LegacyName::new("output.weight", "output.weight", true));
    names.push(LegacyName::new("output.bias", "output.bias", false));
    names
}

/// A Transformer's parameters before PyTorch's names and layouts, in the order that
/// model made them: separate query, key and value projections `[d, d]` (now the blocks of
/// `in_proj_weight`), every matrix `[in, out]`.
fn legacy_transformer_names(layers: usize) -> Vec<LegacyName> {
    let mut names = Vec::new();
    let mut same = |name: &str| names.push(LegacyName::new(name, name, false));
    same("source_embedding.weight");
    let pair = |names: &mut Vec<LegacyName>, old: &str, new: &str, transposed: bool| {
        names.push(LegacyName::new(
            format!("{old}.weight"),
            format!("{new}.weight"),
            transposed,
        ));
        names.push(LegacyName::new(
            format!("{old}.bias"),
            format!("{new}.bias"),
            false,
        ));
    };
    let attention = |names: &mut Vec<LegacyName>, old: &str, new: &str| {
        for (k, projection) in ["query", "key", "value"].into_iter().enumerate() {
            names.push(LegacyName::stacked(
                format!("{old}.{projection}.weight"),
                format!("{new}.in_proj_weight"),
                true,
                (k, 3),
            ));
            names.push(LegacyName::stacked(
                format!("{old}.{projection}.bias"),
                format!("{new}.in_proj_bias"),
                false,
                (k, 3),
            ));
        }
        pair(
            names,
            &format!("{old}.output"),
            &format!("{new}.out_proj"),
            true,
        );
    };
    // A layer: each attention block with the norm before it (norm1, norm2, …), then the
    // feed-forward block with the next norm.
    let layer = |names: &mut Vec<LegacyName>, old: &str, new: &str, blocks: &[(&str, &str)]| {
        for (n, (old_block, new_block)) in blocks.iter().enumerate() {
            let norm = format!("{new}.norm{}", n + 1);
            pair(names, &format!("{old}.{old_block}.norm"), &norm, false);
            attention(
                names,
                &format!("{old}.{old_block}"),
                &format!("{new}.{new_block}"),
            );
        }
        let norm = format!("{new}.norm{}", blocks.len() + 1);
        pair(names, &format!("{old}.feed_forward.norm"), &norm, false);
        for linear in ["linear1", "linear2"] {
            pair(
                names,
                &format!("{old}.feed_forward.{linear}"),
                &format!("{new}.{linear}"),
                true,
            );
        }
    };
    let self_attention = ("self_attention", "self_attn");
    for i in 0..layers {
        layer(
            &mut names,
            &format!("encoder.layer{i}"),
            &format!("transformer.encoder.layers.{i}"),
            &[self_attention],
        );
    }
    pair(
        &mut names,
        "encoder.norm",
        "transformer.encoder.norm",
        false,
    );
    names.push(LegacyName::new(
        "target_embedding.weight",
        "target_embedding.weight",
        false,
    ));
    for i in 0..layers {
        layer(
            &mut names,
            &format!("decoder.layer{i}"),
            &format!("transformer.decoder.layers.{i}"),
            &[self_attention, ("cross_attention", "multihead_attn")],
        );
    }
    pair(
        &mut names,
        "decoder.norm",
        "transformer.decoder.norm",
        false,
    );
    pair(&mut names, "output", "output", true);
    names
}

/// Sequences up to this many steps get plans of their exact length; longer ones are
/// rounded up so that a few plans cover every batch.
const EXACT_LENGTHS: usize = 16;

/// The number of steps a batch of longest sequence `len` is padded to.
pub fn round_steps(len: usize) -> usize {
    let len = len.max(1);
    if len <= EXACT_LENGTHS {
        len
    } else {
        len.div_ceil(8) * 8
    }
}

/// The vocabularies a checkpoint's config records: `"source_vocabulary"` and
/// `"target_vocabulary"`, or, in checkpoints from before token levels, one `"vocabulary"`
/// string of characters that both sides share.
fn checkpoint_vocab(checkpoint: &Checkpoint) -> Result<PairVocab> {
    let config = &checkpoint.config;
    let side = |key: &str| -> Result<Option<TokenVocab>> {
        config
            .get(key)
            .map(|value| {
                TokenVocab::from_json(value, key)
                    .map_err(|e| Error::format(&checkpoint.path, e.to_string()))
            })
            .transpose()
    };
    match (side("source_vocabulary")?, side("target_vocabulary")?) {
        (Some(source), Some(target)) => Ok(PairVocab { source, target }),
        (None, None) => {
            let chars: Vec<char> = config
                .get("vocabulary")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    Error::format(
                        &checkpoint.path,
                        "the config has no \"source_vocabulary\" and \"target_vocabulary\" \
                         (nor an older \"vocabulary\")",
                    )
                })?
                .chars()
                .collect();
            let shared = TokenVocab::from_chars(&chars)
                .map_err(|e| Error::format(&checkpoint.path, e.to_string()))?;
            Ok(PairVocab {
                source: shared.clone(),
                target: shared,
            })
        }
        _ => Err(Error::format(
            &checkpoint.path,
            "the config has only one of \"source_vocabulary\" and \"target_vocabulary\"",
        )),
    }
}

impl Seq2SeqModel {
    /// A new model with parameters drawn from `seed`.
    pub fn new(
        gpu: &Gpu,
        config: Seq2SeqConfig,
        vocab: PairVocab,
        (max_source, max_target): (usize, usize),
        seed: u64,
    ) -> Result<Self> {
        config.validate()?;
        let sizes = (config.source_vocab_size, config.target_vocab_size);
        if sizes != (vocab.source.len(), vocab.target.len()) {
            return Err(Error::invalid(
                "seq2seq",
                format!(
                    "the model has {} source and {} target ids, the vocabularies {} and {}",
                    sizes.0,
                    sizes.1,
                    vocab.source.len(),
                    vocab.target.len()
                ),
            ));
        }
        let mut model = Seq2SeqModel {
            gpu: gpu.clone(),
            config,
            vocab,
            max_source: max_source.max(1),
            max_target: max_target.max(1),
            parameters: Parameters::new(gpu, seed),
            train_plans: HashMap::new(),
            logit_rows: None,
            length_penalty: 1.0,
            decoders: HashMap::new(),
            transformer_decoders: HashMap::new(),
        };
        // Building (not compiling) the smallest graph makes every parameter, in a fixed
        // order, before an optimizer is made over them.
        model.training_graph(1, 1, 1, true)?;
        Ok(model)
    }

    /// The model a checkpoint of [`Seq2SeqModel::save`] holds; optimizer state
    /// in it is left for [`Optimizer::load_state`].
    pub fn from_checkpoint(gpu: &Gpu, checkpoint: &Checkpoint) -> Result<Self> {
        let config = &checkpoint.config;
        let architecture = config.get("architecture").ok_or_else(|| {
            Error::format(
                &checkpoint.path,
                "the config has no \"architecture\": not a train-seq2seq checkpoint",
            )
        })?;
        match architecture.get("kind").and_then(Value::as_str) {
            Some("seq2seq") => {}
            Some(crate::nn::charlm::CHARLM_KIND) => {
                return Err(Error::format(
                    &checkpoint.path,
                    "holds a train-lm language model, not a train-seq2seq model: continue a \
                     prompt with it through `shadergrad sample`",
                ))
            }
            kind => {
                return Err(Error::format(
                    &checkpoint.path,
                    format!(
                        "holds a model of kind {}, not a train-seq2seq model (kind \"seq2seq\")",
                        kind.map_or("(none)".to_string(), |k| format!("{k:?}"))
                    ),
                ))
            }
        }
        let model_config = Seq2SeqConfig::from_json(architecture)?;
        let vocab = checkpoint_vocab(checkpoint)?;
        let limit = |key: &str| {
            config
                .get(key)
                .and_then(Value::as_u64)
                .map(|v| v as usize)
                .ok_or_else(|| {
                    Error::format(&checkpoint.path, format!("the config has no {key:?}"))
                })
        };
        let limits = (limit("max_source")?, limit("max_target")?);
        if limits.0.max(limits.1) > MAX_DECODE_STEPS {
            return Err(Error::format(
                &checkpoint.path,
                format!(
                    "the config's max_source {} or max_target {} is beyond the {MAX_DECODE_STEPS} \
                     steps a sequence may have",
                    limits.0, limits.1
                ),
            ));
        }
        check_config_against_tensors(checkpoint, model_config.parameter_count())?;
        model_config
            .training_memory(1, limits.0, limits.1)?
            .check("checkpoint", gpu.max_buffer_bytes())?;
        let model = Seq2SeqModel::new(gpu, model_config, vocab, limits, 0)?;
        model
            .parameters
            .load(&model.upgrade_checkpoint(checkpoint)?)?;
        Ok(model)
    }

    /// `checkpoint` with its tensors under this model's names and in its layouts: one from
    /// before PyTorch's names and layouts (no `"weight_layout": "pytorch"`) has its
    /// parameters renamed, its matrices transposed (a Transformer's query, key and value
    /// projections stacked into `in_proj_weight`) and its optimizer state moved to the
    /// parameters' new places, so that it loads and resumes as it would have.
    pub fn upgrade_checkpoint(&self, checkpoint: &Checkpoint) -> Result<Checkpoint> {
        match &self.config.architecture {
            Architecture::Recurrent(recurrent) => upgrade_legacy_checkpoint(
                checkpoint,
                &legacy_recurrent_names(&self.config, recurrent),
                &self.parameters,
            ),
            Architecture::Transformer(_) => upgrade_legacy_checkpoint(
                checkpoint,
                &legacy_transformer_names(self.config.layers),
                &self.parameters,
            ),
        }
    }

    /// The config a checkpoint of this model carries (`extra` merged in at the top level).
    pub fn checkpoint_config(&self, extra: Value) -> Value {
        let mut record = json!({
            "architecture": self.config.to_json(),
            "source_vocabulary": self.vocab.source.to_json(),
            "target_vocabulary": self.vocab.target.to_json(),
            "max_source": self.max_source,
            "max_target": self.max_target,
        });
        if let Some(map) = record.as_object_mut() {
            map.insert("weight_layout".into(), WEIGHT_LAYOUT.into());
        }
        checkpoint::with_extra(record, extra)
    }

    /// Saves the parameters and, if given, the optimizer's state beside them.
    pub fn save(
        &self,
        path: &std::path::Path,
        optimizer: Option<&Optimizer>,
        extra: Value,
    ) -> Result<()> {
        let tensors = self.parameters.checkpoint_tensors(optimizer)?;
        checkpoint::save(path, &tensors, &self.checkpoint_config(extra))
    }

    /// Whether the model is recurrent with additive attention, whose graphs take a mask of
    /// the padded keys.
    fn additive_attention(&self) -> bool {
        matches!(
            self.config.architecture,
            Architecture::Recurrent(RecurrentConfig {
                attention: AttentionKind::Additive,
                ..
            })
        )
    }

    /// The training graph for `batch` rows of `source_steps` and `target_steps` (without
    /// compiling it): the values a step touches, and the outputs to compile (the loss, the
    /// predictions and, when training, the parameters' gradients). Without `training`, the
    /// graph has neither the backward nor dropout: it evaluates.
    fn training_graph(
        &mut self,
        batch: usize,
        source_steps: usize,
        target_steps: usize,
        training: bool,
    ) -> Result<(Graph, TrainValues, Vec<Var>)> {
        let mut g = Graph::new(&self.gpu);
        let source = g.input_indices("source", &[source_steps, batch]);
        let source_lengths = g.input_indices("source_lengths", &[batch]);
        let key_mask = self
            .additive_attention()
            .then(|| g.input("key_mask", &[batch, 1, source_steps]));
        let decoder_input = g.input_indices("decoder_input", &[target_steps, batch]);
        let p = self.parameters.clone();
        // What the output layer reads, [B·Td, width], and the output layer.
        type OutputLayer = Box<dyn Fn(&mut Graph, Var) -> Result<Var>>;
        let (features, output, dropout_seed): (Var, OutputLayer, Option<Var>) =
            match self.config.architecture {
                Architecture::Transformer(shape) => {
                    let dropout_seed = (training && shape.dropout > 0.0)
                        .then(|| g.input_indices("dropout_seed", &[1]));
                    let mode = match dropout_seed {
                        Some(dropout_seed) => Mode::Train { dropout_seed },
                        None => Mode::Eval,
                    };
                    let transformer = Transformer::new(&self.config, &p)?;
                    let memory = transformer.encode(&mut g, source, source_lengths, mode)?;
                    let states = transformer.decoder_states(
                        &mut g,
                        decoder_input,
                        memory,
                        source_lengths,
                        mode,
                    )?;
                    let features =
                        g.reshape(states, &[batch * target_steps, transformer.shape.width])?;
                    let output = Box::new(move |g: &mut Graph, x| transformer.project(g, x));
                    (features, output, dropout_seed)
                }
                Architecture::Recurrent(_) => {
                    let model = Seq2Seq::new(&self.config, &p)?;
                    let encoded = model.encode(&mut g, source, source_lengths)?;
                    let (states, _) = model.decode(&mut g, decoder_input, &encoded.initial)?;
                    let features =
                        model.features(&mut g, states, &encoded, source_lengths, key_mask)?;
                    let output = Box::new(move |g: &mut Graph, x| model.project(g, x));
                    (features, output, None)
                }
            };
        let rows = batch * target_steps;
        let vocab = self.config.target_vocab_size;
        let chunk = logit_rows_per_chunk(rows, vocab, self.gpu.max_buffer_bytes())
            .min(self.logit_rows.unwrap_or(usize::MAX));
        let predict = |g: &mut Graph, logits: Var| -> Result<Var> {
            let rows = g.shape(logits)[0];
            let logits = g.reshape(logits, &[rows, 1, vocab])?;
            Ok(g.max_over_time_with_positions(logits)?.1)
        };
        let (targets, loss_scale, loss, predictions) = if chunk >= rows {
            let target = g.input_indices("target", &[rows]);
            let logits = output(&mut g, features)?;
            let loss =
                g.cross_entropy_with(logits, target, CrossEntropySpec::mean().ignore(PAD.into()))?;
            let predictions = predict(&mut g, logits)?;
            (vec![target], None, loss, vec![predictions])
        } else {
            // Each chunk's logits fit in a buffer; its summed loss adds to the others'.
            let loss_scale = g.input("loss_scale", &[1]);
            let (mut targets, mut predictions, mut total) = (Vec::new(), Vec::new(), None);
            for (i, start) in (0..rows).step_by(chunk).enumerate() {
                let end = (start + chunk).min(rows);
                let target = g.input_indices(&format!("target{i}"), &[end - start]);
                let part = g.slice(features, 0, start as isize, end as isize)?;
                let logits = output(&mut g, part)?;
                let sum = g.cross_entropy_with(
                    logits,
                    target,
                    CrossEntropySpec::sum().ignore(PAD.into()),
                )?;
                total = Some(match total {
                    Some(total) => g.add(total, sum)?,
                    None => sum,
                });
                targets.push(target);
                predictions.push(predict(&mut g, logits)?);
            }
            let total = total.expect("a batch has at least one row");
            let loss = g.mul(total, loss_scale)?;
            (targets, Some(loss_scale), loss, predictions)
        };
        let mut outputs = vec![loss];
        outputs.extend(&predictions);
        if training {
            outputs.extend(g.backward(loss)?.parameter_gradients());
        }
        let values = TrainValues {
            source,
            source_lengths,
            key_mask,
            decoder_input,
            targets,
            chunk_rows: chunk.min(rows),
            loss_scale,
            dropout_seed,
            loss,
            predictions,
        };
        Ok((g, values, outputs))
    }

    fn train_plan(&mut self, batch: &SeqBatch, training: bool) -> Result<&mut TrainPlan> {
        let key = (
            batch.batch,
            batch.source_steps,
            batch.target_steps,
            training,
        );
        if !self.train_plans.contains_key(&key) {
            let (g, values, outputs) = self.training_graph(key.0, key.1, key.2, training)?;
            let plan = g.compile(&outputs)?;
            self.train_plans.insert(key, TrainPlan { plan, values });
        }
        Ok(self.train_plans.get_mut(&key).expect("inserted above"))
    }

    /// Sets beam search's length normalisation α (finite, at least 0): finished outputs rank
    /// by their log-probability over (tokens + 1)^α. 1 by default; 0 ranks by the plain sum
    /// of log-probabilities, which favours short outputs.
    pub fn set_length_penalty(&mut self, alpha: f32) -> Result<()> {
        if !(alpha.is_finite() && alpha >= 0.0) {
            return Err(Error::invalid(
                "decode",
                format!("length penalty {alpha}: expected a finite number of at least 0"),
            ));
        }
        self.length_penalty = f64::from(alpha);
        Ok(())
    }

    /// Makes training steps put at most `rows` rows (at least 1) through the output layer
    /// and the loss at once, to bound the memory of a step's logits over a large
    /// vocabulary; by default a step takes as many rows as one buffer holds. The loss and
    /// gradients are the same, up to rounding.
    pub fn limit_logit_rows(&mut self, rows: usize) {
        self.logit_rows = Some(rows.max(1));
        self.train_plans.clear();
    }

    /// The dispatches of the training step for `batch`'s shape (compiling its plan on first
    /// use), for profiling.
    pub fn training_dispatches(&mut self, batch: &SeqBatch) -> Result<&[Dispatch]> {
        Ok(self.train_plan(batch, true)?.plan.dispatches())
    }

    /// One step over `batch` with teacher forcing: the loss, its gradients into the shared
    /// gradient tensors, then `extra` (an optimizer's update), in one submission. A
    /// Transformer's dropouts draw their masks from `dropout_seed` (see [`dropout_seed`]).
    pub fn train_step(
        &mut self,
        batch: &SeqBatch,
        dropout_seed: u32,
        extra: &[Dispatch],
    ) -> Result<StepReport> {
        self.run_step(batch, Some(dropout_seed), extra)
    }

    /// The loss and predictions over `batch` with teacher forcing, without dropout and
    /// without gradients.
    pub fn evaluation_step(&mut self, batch: &SeqBatch) -> Result<StepReport> {
        self.run_step(batch, None, &[])
    }

    /// A training step given a dropout seed, an evaluation step without.
    fn run_step(
        &mut self,
        batch: &SeqBatch,
        dropout_seed: Option<u32>,
        extra: &[Dispatch],
    ) -> Result<StepReport> {
        let mask = key_mask(&batch.source_lengths, batch.source_steps);
        let TrainPlan { plan, values } = self.train_plan(batch, dropout_seed.is_some())?;
        let seed = [dropout_seed.unwrap_or(0)];
        let mut feeds = vec![
            Feed::u32(values.source, &batch.source),
            Feed::u32(values.source_lengths, &batch.source_lengths),
            Feed::u32(values.decoder_input, &batch.decoder_input),
        ];
        for (target, rows) in values
            .targets
            .iter()
            .zip(batch.target.chunks(values.chunk_rows))
        {
            feeds.push(Feed::u32(*target, rows));
        }
        let scale = [1.0 / batch.target_tokens().max(1) as f32];
        feeds.extend(values.loss_scale.map(|var| Feed::f32(var, &scale)));
        feeds.extend(values.key_mask.map(|var| Feed::f32(var, &mask)));
        feeds.extend(values.dropout_seed.map(|var| Feed::u32(var, &seed)));
        plan.run(&feeds, extra)?;
        let loss = plan.read(values.loss)?[0];
        let mut predictions = Vec::with_capacity(batch.target.len());
        for &chunk in &values.predictions {
            predictions.extend(plan.read_indices(chunk)?);
        }
        let (mut tokens, mut correct) = (0, 0);
        for (&target, &predicted) in batch.target.iter().zip(&predictions) {
            if target != PAD {
                tokens += 1;
                correct += usize::from(target == predicted);
            }
        }
        Ok(StepReport {
            loss,
            tokens,
            correct,
        })
    }

    fn decoder(&mut self, rows: usize, source_steps: usize, beam: usize) -> Result<&mut Decoder> {
        let key = (rows, source_steps, beam);
        if !self.decoders.contains_key(&key) {
            let decoder = self.build_decoder(rows, source_steps, beam)?;
            self.decoders.insert(key, decoder);
        }
        Ok(self.decoders.get_mut(&key).expect("inserted above"))
    }

    fn build_decoder(&mut self, rows: usize, source_steps: usize, beam: usize) -> Result<Decoder> {
        let gpu = self.gpu.clone();
        let model = Seq2Seq::new(&self.config, &self.parameters)?;
        let config = model.config;
        let layers = model.layers;
        let lstm = config.cell == CellKind::Lstm;
        let state_shape = [rows, config.hidden];
        let per_layer = if lstm { 2 } else { 1 };
        let states = (0..layers * per_layer)
            .map(|_| Tensor::zeros(&gpu, &state_shape))
            .collect::<Result<Vec<_>>>()?;

        let mut g = Graph::new(&gpu);
        let encoder_source = g.input_indices("source", &[source_steps, rows]);
        let encoder_lengths = g.input_indices("source_lengths", &[rows]);
        let encoded = model.encode(&mut g, encoder_source, encoder_lengths)?;
        let mut bindings = Vec::new();
        let keys_values = match encoded.keys_values {
            Some((keys, values)) => {
                let keys_tensor = Tensor::zeros(&gpu, g.shape(keys))?;
                let values_tensor = Tensor::zeros(&gpu, g.shape(values))?;
                bindings.push((keys, keys_tensor.clone()));
                bindings.push((values, values_tensor.clone()));
                Some((keys_tensor, values_tensor))
            }
            None => None,
        };
        bind_states(&mut bindings, &encoded.initial, &states);
        let encoder = compile_bound(&g, &[], &bindings)?;

        let mut g = Graph::new(&gpu);
        let step_tokens = g.input_indices("tokens", &[1, rows]);
        let step_lengths = g.input_indices("source_lengths", &[rows]);
        let step_key_mask = (config.attention == AttentionKind::Additive)
            .then(|| g.input("key_mask", &[rows, 1, source_steps]));
        let mut bindings = Vec::new();
        let mut kept = Vec::new();
        for layer in 0..layers {
            let h = g.input(&format!("h{layer}"), &state_shape);
            let c = lstm.then(|| g.input(&format!("c{layer}"), &state_shape));
            kept.push(State { h, c });
        }
        bind_states(&mut bindings, &kept, &states);
        let step_parents = (beam > 1).then(|| g.input_indices("parents", &[rows]));
        let initial = match step_parents {
            Some(parents) => kept
                .iter()
                .map(|state| {
                    Ok(State {
                        h: g.gather(state.h, 0, parents)?,
                        c: state.c.map(|c| g.gather(c, 0, parents)).transpose()?,
                    })
                })
                .collect::<Result<Vec<_>>>()?,
            None => kept,
        };
        let keys_values = match &keys_values {
            Some((keys, values)) => {
                let k = g.input("keys", keys.shape());
                let v = g.input("values", values.shape());
                bindings.push((k, keys.clone()));
                bindings.push((v, values.clone()));
                Some((k, v))
            }
            None => None,
        };
        let encoded = Encoded {
            keys_values,
            initial: initial.clone(),
        };
        let (top, finals) = model.decode(&mut g, step_tokens, &initial)?;
        let logits = model.logits(&mut g, top, &encoded, step_lengths, step_key_mask)?;
        let choice = StepChoice::over(&mut g, logits, beam)?;
        bind_states(&mut bindings, &finals, &states);
        let step = compile_bound(&g, &choice.outputs(), &bindings)?;
        Ok(Decoder {
            encoder,
            encoder_source,
            encoder_lengths,
            step,
            step_tokens,
            step_lengths: (config.attention == AttentionKind::Dot).then_some(step_lengths),
            step_key_mask,
            step_parents,
            choice,
        })
    }

    fn transformer_decoder(
        &mut self,
        rows: usize,
        source_steps: usize,
        beam: usize,
    ) -> Result<&mut TransformerDecoder> {
        let key = (rows, source_steps, beam);
        if !self.transformer_decoders.contains_key(&key) {
            let decoder = self.build_transformer_decoder(rows, source_steps, beam)?;
            self.transformer_decoders.insert(key, decoder);
        }
        Ok(self
            .transformer_decoders
            .get_mut(&key)
            .expect("inserted above"))
    }

    fn build_transformer_decoder(
        &mut self,
        rows: usize,
        source_steps: usize,
        beam: usize,
    ) -> Result<TransformerDecoder> {
        let gpu = self.gpu.clone();
        let model = Transformer::new(&self.config, &self.parameters)?;
        let heads = model.shape.heads;
        let head_width = model.shape.width / heads;
        let max_steps = self.max_target + 1;
        let tensors = |steps: usize| -> Result<Vec<KeyValueTensors>> {
            (0..model.layers)
                .map(|_| {
                    let shape = [rows, heads, steps, head_width];
                    Ok(KeyValueTensors {
                        keys: Tensor::zeros(&gpu, &shape)?,
                        values: Tensor::zeros(&gpu, &shape)?,
                    })
                })
                .collect()
        };
        let memory_tensors = tensors(source_steps)?;
        let cache_tensors = tensors(max_steps)?;

        let mut g = Graph::new(&gpu);
        let encoder_source = g.input_indices("source", &[source_steps, rows]);
        let encoder_lengths = g.input_indices("source_lengths", &[rows]);
        let memory = model.encode(&mut g, encoder_source, encoder_lengths, Mode::Eval)?;
        let memory = model.memory_keys_values(&mut g, memory)?;
        let mut bindings = Vec::new();
        for (vars, tensors) in memory.iter().zip(&memory_tensors) {
            tensors.bind(vars, &mut bindings);
        }
        let encoder = compile_bound(&g, &[], &bindings)?;

        let mut g = Graph::new(&gpu);
        let step_tokens = g.input_indices("tokens", &[1, rows]);
        let step_lengths = g.input_indices("source_lengths", &[rows]);
        let step_position = g.input_indices("position", &[1]);
        let cache_lengths = g.input_indices("cache_lengths", &[rows]);
        let mut bindings = Vec::new();
        let mut inputs = |g: &mut Graph, name: &str, tensors: &[KeyValueTensors]| {
            tensors
                .iter()
                .enumerate()
                .map(|(layer, tensors)| {
                    let vars = KeyValues {
                        keys: g.input(&format!("{name}_keys{layer}"), tensors.keys.shape()),
                        values: g.input(&format!("{name}_values{layer}"), tensors.values.shape()),
                    };
                    tensors.bind(&vars, &mut bindings);
                    vars
                })
                .collect::<Vec<_>>()
        };
        let memory = inputs(&mut g, "memory", &memory_tensors);
        let mut caches = inputs(&mut g, "cache", &cache_tensors);
        // Beam search first moves each row's cache to where its hypothesis went.
        let reorder = if beam > 1 {
            let parents = g.input_indices("parents", &[rows]);
            let origin = g.input_indices("origin", &[1]);
            for cache in &mut caches {
                let keys = g.gather(cache.keys, 0, parents)?;
                let values = g.gather(cache.values, 0, parents)?;
                *cache = KeyValues {
                    keys: g.write_at(cache.keys, keys, 0, origin)?,
                    values: g.write_at(cache.values, values, 0, origin)?,
                };
            }
            Some((parents, origin))
        } else {
            None
        };
        let step = DecodingStep {
            position: step_position,
            cache_lengths,
            memory_lengths: Some(step_lengths),
        };
        let states = model.decoder_step(&mut g, step_tokens, &caches, &memory, &step)?;
        let logits = model.project(&mut g, states)?;
        let choice = StepChoice::over(&mut g, logits, beam)?;
        let step = compile_bound(&g, &choice.outputs(), &bindings)?;
        Ok(TransformerDecoder {
            encoder,
            encoder_source,
            encoder_lengths,
            step,
            step_tokens,
            step_lengths,
            step_position,
            cache_lengths,
            reorder,
            choice,
            max_steps,
        })
    }

    /// Decodes each source (token ids without BOS/EOS) greedily (`beam` 1) or by beam
    /// search, `chunk` sources at a time: the token ids of each output, without EOS.
    pub fn decode(
        &mut self,
        sources: &[Vec<u32>],
        beam: usize,
        chunk: usize,
    ) -> Result<Vec<Vec<u32>>> {
        if beam == 0 || chunk == 0 {
            return Err(Error::invalid(
                "decode",
                format!("the beam width ({beam}) and batch ({chunk}) must be at least 1"),
            ));
        }
        if beam > MAX_BEAM {
            return Err(Error::invalid(
                "decode",
                format!("the beam width ({beam}) is at most {MAX_BEAM}"),
            ));
        }
        if let Some(long) = sources.iter().find(|s| s.len() > self.max_source) {
            return Err(Error::invalid(
                "decode",
                format!(
                    "a source of {} tokens is longer than the model's maximum of {} (the \
                     longest it was trained on)",
                    long.len(),
                    self.max_source
                ),
            ));
        }
        // A batch wider than the input is only padding.
        let chunk = chunk.min(sources.len().max(1));
        let rows = crate::limits::product("the batch × the beam width", &[chunk, beam])?;
        self.config
            .decoding_memory(
                usize::try_from(rows).unwrap_or(usize::MAX),
                self.max_source,
                self.max_target + 1,
            )?
            .check("decode", self.gpu.max_buffer_bytes())?;
        let mut outputs = Vec::with_capacity(sources.len());
        for group in sources.chunks(chunk) {
            outputs.extend(self.decode_group(group, beam, chunk)?);
        }
        Ok(outputs)
    }

    /// One group of at most `chunk` sources, padded to `chunk` rows (so that every group of
    /// a shape shares one plan), each source repeated for its `beam` hypotheses.
    fn decode_group(
        &mut self,
        group: &[Vec<u32>],
        beam: usize,
        chunk: usize,
    ) -> Result<Vec<Vec<u32>>> {
        let rows = chunk * beam;
        let (source, lengths, source_steps) = batch_sources(group, beam, rows);
        if let Architecture::Transformer(_) = self.config.architecture {
            return self.decode_group_transformer(group.len(), beam, rows, &source, &lengths);
        }
        let max_steps = self.max_target + 1;
        let length_penalty = self.length_penalty;
        let decoder = self.decoder(rows, source_steps, beam)?;
        decoder.encoder.run(
            &[
                Feed::u32(decoder.encoder_source, &source),
                Feed::u32(decoder.encoder_lengths, &lengths),
            ],
            &[],
        )?;
        let mut search = BeamSearch::new(group.len(), beam, length_penalty);
        let mut greedy = Greedy::new(group.len());
        let mut tokens = vec![BOS; rows];
        let mut parents: Vec<u32> = (0..rows as u32).collect();
        let mask = key_mask(&lengths, source_steps);
        for _ in 0..max_steps {
            let mut feeds = vec![Feed::u32(decoder.step_tokens, &tokens)];
            feeds.extend(decoder.step_lengths.map(|var| Feed::u32(var, &lengths)));
            feeds.extend(decoder.step_key_mask.map(|var| Feed::f32(var, &mask)));
            feeds.extend(decoder.step_parents.map(|var| Feed::u32(var, &parents)));
            decoder.step.run(&feeds, &[])?;
            let done = match decoder.choice {
                StepChoice::Greedy { next } => {
                    tokens = decoder.step.fetch_indices(next)?.data;
                    greedy.advance(&tokens)
                }
                StepChoice::Beam {
                    log_probs,
                    tokens: best,
                } => {
                    parents = search.advance_from(&mut decoder.step, log_probs, best, rows)?;
                    tokens = search.last_tokens(rows);
                    search.all_done()
                }
            };
            if done {
                break;
            }
        }
        Ok(if beam == 1 {
            greedy.outputs
        } else {
            search.best()
        })
    }

    /// [`Seq2SeqModel::decode_group`] for a Transformer: the encoder leaves each layer's keys
    /// and values of the sources on the GPU, then each step feeds every hypothesis's latest
    /// token (and, in beam search, its parent, whose cache it continues).
    fn decode_group_transformer(
        &mut self,
        sources: usize,
        beam: usize,
        rows: usize,
        source: &[u32],
        lengths: &[u32],
    ) -> Result<Vec<Vec<u32>>> {
        let source_steps = source.len() / rows;
        let length_penalty = self.length_penalty;
        let decoder = self.transformer_decoder(rows, source_steps, beam)?;
        decoder.encoder.run(
            &[
                Feed::u32(decoder.encoder_source, source),
                Feed::u32(decoder.encoder_lengths, lengths),
            ],
            &[],
        )?;
        let mut search = BeamSearch::new(sources, beam, length_penalty);
        let mut greedy = Greedy::new(sources);
        let mut tokens = vec![BOS; rows];
        let mut parents: Vec<u32> = (0..rows as u32).collect();
        for position in 0..decoder.max_steps {
            let cache_lengths = vec![position as u32 + 1; rows];
            let position = [position as u32];
            let mut feeds = vec![
                Feed::u32(decoder.step_tokens, &tokens),
                Feed::u32(decoder.step_lengths, lengths),
                Feed::u32(decoder.step_position, &position),
                Feed::u32(decoder.cache_lengths, &cache_lengths),
            ];
            if let Some((parents_var, origin)) = decoder.reorder {
                feeds.push(Feed::u32(parents_var, &parents));
                feeds.push(Feed::u32(origin, &[0]));
            }
            decoder.step.run(&feeds, &[])?;
            let done = match decoder.choice {
                StepChoice::Greedy { next } => {
                    tokens = decoder.step.fetch_indices(next)?.data;
                    greedy.advance(&tokens)
                }
                StepChoice::Beam {
                    log_probs,
                    tokens: best,
                } => {
                    parents = search.advance_from(&mut decoder.step, log_probs, best, rows)?;
                    tokens = search.last_tokens(rows);
                    search.all_done()
                }
            };
            if done {
                break;
            }
        }
        Ok(if beam == 1 {
            greedy.outputs
        } else {
            search.best()
        })
    }
}

/// One layer's keys and values in tensors kept between a decoder's plans and steps.
struct KeyValueTensors {
    keys: Tensor,
    values: Tensor,
}

impl KeyValueTensors {
    /// Binds `vars`' keys and values to these tensors.
    fn bind(&self, vars: &KeyValues, bindings: &mut Vec<(Var, Tensor)>) {
        bindings.push((vars.keys, self.keys.clone()));
        bindings.push((vars.values, self.values.clone()));
    }
}

/// A group of sources as the encoder takes them, each repeated for its `beam` hypotheses
/// and padded to `rows`: ids `[Ts, rows]` (time-major), lengths `[rows]`, and Ts.
fn batch_sources(group: &[Vec<u32>], beam: usize, rows: usize) -> (Vec<u32>, Vec<u32>, usize) {
    let longest = group.iter().map(Vec::len).max().unwrap_or(0);
    let source_steps = round_steps(longest);
    let mut source = vec![PAD; source_steps * rows];
    let mut lengths = vec![0u32; rows];
    for (i, ids) in group.iter().enumerate() {
        for k in 0..beam {
            let row = i * beam + k;
            lengths[row] = ids.len() as u32;
            for (t, &id) in ids.iter().enumerate() {
                source[t * rows + row] = id;
            }
        }
    }
    (source, lengths, source_steps)
}

/// Greedy decoding of a group: each source's output grows by the token the GPU picked for
/// its row (the argmax of its log-probabilities) until that token is EOS.
struct Greedy {
    outputs: Vec<Vec<u32>>,
    done: Vec<bool>,
}

impl Greedy {
    fn new(sources: usize) -> Greedy {
        Greedy {
            outputs: vec![Vec::new(); sources],
            done: vec![false; sources],
        }
    }

    /// Appends each unfinished source's `next` token (rows past the sources are padding);
    /// whether every source is done.
    fn advance(&mut self, next: &[u32]) -> bool {
        for ((output, done), &token) in self.outputs.iter_mut().zip(&mut self.done).zip(next) {
            if *done {
                continue;
            }
            if token == EOS {
                *done = true;
            } else {
                output.push(token);
            }
        }
        self.done.iter().all(|&d| d)
    }
}

/// What a decoding step leaves on the GPU for the host to read back.
#[derive(Debug, Clone, Copy)]
enum StepChoice {
    /// Greedy decoding: u32 `[rows]`, each row's most likely token.
    Greedy {
        /// Each row's next token.
        next: Var,
    },
    /// Beam search: each row's best tokens and their log-probabilities (`[rows, n]` each,
    /// best first), chosen on the GPU. n is two more than the beam, so that `beam` remain
    /// when PAD and BOS (never decoded, dropped by [`BeamSearch::advance`]) are among them:
    /// cheaper than masking them in every row first.
    Beam {
        /// The candidates' log-probabilities.
        log_probs: Var,
        /// The candidates' tokens.
        tokens: Var,
    },
}

impl StepChoice {
    /// The choice over a step's logits `[rows, V]`: greedy for a beam of 1.
    fn over(g: &mut Graph, logits: Var, beam: usize) -> Result<StepChoice> {
        let log_probs = g.log_softmax(logits, -1)?;
        if beam == 1 {
            return Ok(StepChoice::Greedy {
                next: g.argmax(log_probs, -1)?,
            });
        }
        let vocab = g.shape(log_probs)[1];
        let (log_probs, tokens) = g.top_k(log_probs, (beam + 2).min(vocab))?;
        Ok(StepChoice::Beam { log_probs, tokens })
    }

    /// The values the step's plan must leave readable.
    fn outputs(self) -> Vec<Var> {
        match self {
            StepChoice::Greedy { next } => vec![next],
            StepChoice::Beam { log_probs, tokens } => vec![log_probs, tokens],
        }
    }
}

/// One hypothesis of a beam.
#[derive(Debug, Clone)]
struct Hypothesis {
    tokens: Vec<u32>,
    score: f64,
    done: bool,
}

/// Beam search over groups of `beam` rows, one group per source (greedy when `beam` is 1).
/// Scores are sums of log-probabilities; a finished hypothesis keeps its score.
struct BeamSearch {
    beam: usize,
    /// α of the length normalisation ([`Seq2SeqModel::set_length_penalty`]).
    length_penalty: f64,
    groups: Vec<Vec<Hypothesis>>,
}

impl BeamSearch {
    fn new(sources: usize, beam: usize, length_penalty: f64) -> Self {
        // Only the first hypothesis is live at the start: the others would repeat it.
        let start = |k: usize| Hypothesis {
            tokens: Vec::new(),
            score: if k == 0 { 0.0 } else { f64::NEG_INFINITY },
            done: k != 0,
        };
        BeamSearch {
            beam,
            length_penalty,
            groups: (0..sources)
                .map(|_| (0..beam).map(start).collect())
                .collect(),
        }
    }

    /// Extends every group by one token from each row's best tokens and their
    /// log-probabilities (`[rows, n]` each, best first; [`StepChoice::Beam`]; `rows` counts
    /// the padding rows too); returns, for each row, the row whose state it continues.
    fn advance(&mut self, log_probs: &[f32], tokens: &[u32], rows: usize) -> Vec<usize> {
        let mut parents: Vec<usize> = (0..rows).collect();
        let per_row = tokens.len() / rows.max(1);
        for (i, group) in self.groups.iter_mut().enumerate() {
            // (score, parent hypothesis, token or None to keep a finished one). Only a row's
            // `beam` best tokens can be among the group's `beam` best, so each row offers
            // just those: beam² candidates, not beam × the vocabulary.
            let mut candidates: Vec<(f64, usize, Option<u32>)> = Vec::new();
            for (k, hypothesis) in group.iter().enumerate() {
                if hypothesis.done {
                    if hypothesis.score.is_finite() {
                        candidates.push((hypothesis.score, k, None));
                    }
                    continue;
                }
                let row = (i * self.beam + k) * per_row;
                for (&token, &lp) in tokens[row..row + per_row]
                    .iter()
                    .zip(&log_probs[row..row + per_row])
                {
                    if token != PAD && token != BOS {
                        candidates.push((hypothesis.score + f64::from(lp), k, Some(token)));
                    }
                }
            }
            // Best score first; among equal scores the earlier hypothesis, then the lower
            // token: a total order, so the choice does not depend on the order of work.
            candidates.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
            let mut next: Vec<Hypothesis> = Vec::with_capacity(self.beam);
            for (k, &(score, parent, token)) in candidates.iter().take(self.beam).enumerate() {
                let mut hypothesis = group[parent].clone();
                hypothesis.score = score;
                if let Some(token) = token {
                    if token == EOS {
                        hypothesis.done = true;
                    } else {
                        hypothesis.tokens.push(token);
                    }
                }
                parents[i * self.beam + k] = i * self.beam + parent;
                next.push(hypothesis);
            }
            while next.len() < self.beam {
                next.push(Hypothesis {
                    tokens: Vec::new(),
                    score: f64::NEG_INFINITY,
                    done: true,
                });
            }
            *group = next;
        }
        parents
    }

    /// [`BeamSearch::advance`] by the candidates a decoding step left in `step`
    /// ([`StepChoice::Beam`]): each row's parent row, as the next step takes it.
    fn advance_from(
        &mut self,
        step: &mut Plan,
        log_probs: Var,
        tokens: Var,
        rows: usize,
    ) -> Result<Vec<u32>> {
        let (values, tokens) = (step.read(log_probs)?, step.read_indices(tokens)?);
        Ok(self
            .advance(&values, &tokens, rows)
            .into_iter()
            .map(|parent| parent as u32)
            .collect())
    }

    /// The token each row feeds to the next step.
    fn last_tokens(&self, rows: usize) -> Vec<u32> {
        let mut tokens = vec![EOS; rows];
        for (i, group) in self.groups.iter().enumerate() {
            for (k, hypothesis) in group.iter().enumerate() {
                tokens[i * self.beam + k] = hypothesis.tokens.last().copied().unwrap_or(BOS);
            }
        }
        tokens
    }

    fn all_done(&self) -> bool {
        self.groups.iter().flatten().all(|h| h.done)
    }

    /// The best hypothesis of each group: finished ones first, then by length-normalised
    /// score.
    fn best(self) -> Vec<Vec<u32>> {
        let alpha = self.length_penalty;
        let normalised = |h: &Hypothesis| h.score / ((h.tokens.len() + 1) as f64).powf(alpha);
        self.groups
            .into_iter()
            .map(|group| {
                group
                    .into_iter()
                    .max_by(|a, b| {
                        (a.done, normalised(a))
                            .partial_cmp(&(b.done, normalised(b)))
                            .unwrap_or(std::cmp::Ordering::Equal)
                    })
                    .map(|h| h.tokens)
                    .unwrap_or_default()
            })
            .collect()
    }
}

/// How well decoded outputs match their references: what validation and `evaluate`
/// report.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Scores {
    /// The fraction of outputs whose tokens are exactly the reference's.
    pub exact_match: f64,
    /// Edits over reference length, in the target's units
    /// ([`TokenVocab::error_rate_units`]): the character, word or (for subwords) word
    /// error rate; it can exceed 1.
    pub token_error_rate: f64,
    /// Corpus BLEU, 0-100, as sacreBLEU computes it by default ([`crate::scoring`]).
    pub bleu: f64,
    /// Corpus chrF, 0-100, as sacreBLEU computes it by default.
    pub chrf: f64,
}

impl Scores {
    /// Scores `outputs` (target ids without EOS, as [`Seq2SeqModel::decode`] gives them)
    /// against the `references` texts: exact match on the tokens (a reference's unknown
    /// tokens never match), the error rate and BLEU and chrF on the decoded texts against
    /// the references as written.
    pub fn of(target: &TokenVocab, outputs: &[Vec<u32>], references: &[&str]) -> Result<Scores> {
        if outputs.len() != references.len() || outputs.is_empty() {
            return Err(Error::invalid(
                "scores",
                format!(
                    "{} outputs for {} references: expected one output per reference, and at \
                     least one",
                    outputs.len(),
                    references.len()
                ),
            ));
        }
        let (reference_ids, _) = target.encode_all(references.iter().copied());
        let exact = outputs
            .iter()
            .zip(&reference_ids)
            .filter(|(output, reference)| output == reference)
            .count();
        let texts: Vec<String> = outputs.iter().map(|ids| target.decode(ids)).collect();
        let hypotheses: Vec<&str> = texts.iter().map(String::as_str).collect();
        let units = |texts: &[&str]| -> Vec<Vec<String>> {
            texts.iter().map(|t| target.error_rate_units(t)).collect()
        };
        let (hypothesis_units, reference_units) = (units(&hypotheses), units(references));
        let token_error_rate = if reference_units.iter().all(Vec::is_empty)
            && hypothesis_units.iter().any(|u| !u.is_empty())
        {
            // Every reference empty: each output token is an insertion against nothing.
            f64::INFINITY
        } else {
            scoring::token_error_rate(hypothesis_units.iter().zip(&reference_units))?
        };
        Ok(Scores {
            exact_match: exact as f64 / outputs.len() as f64,
            token_error_rate,
            bleu: scoring::corpus_bleu(&hypotheses, references)?.score,
            chrf: scoring::corpus_chrf(&hypotheses, references)?.score,
        })
    }
}

/// Exact-match accuracy and loss of `model` on `pairs`, and the decoded outputs.
pub fn evaluate(
    model: &mut Seq2SeqModel,
    pairs: &[EncodedPair],
    batch: usize,
) -> Result<(f64, f64, Vec<Vec<u32>>)> {
    let sources: Vec<Vec<u32>> = pairs.iter().map(|p| p.source.clone()).collect();
    let outputs = model.decode(&sources, 1, batch)?;
    let exact = pairs
        .iter()
        .zip(&outputs)
        .filter(|(pair, output)| &pair.target == *output)
        .count();
    let bucketing = Bucketing {
        batch,
        round_to: 1,
        pad_last: true,
    };
    let (mut loss_sum, mut tokens) = (0.0, 0usize);
    for batch in bucketed_batches(pairs, &bucketing, None)? {
        let batch = rounded(batch);
        let report = model.evaluation_step(&batch)?;
        loss_sum += f64::from(report.loss) * report.tokens as f64;
        tokens += report.tokens;
    }
    Ok((
        exact as f64 / pairs.len().max(1) as f64,
        loss_sum / tokens.max(1) as f64,
        outputs,
    ))
}

/// The dropout seed of training step `step` of a run seeded with `run_seed`: a new one
/// every step, and the same sequence when a run resumes at a later step.
pub fn dropout_seed(run_seed: u64, step: u64) -> u32 {
    let mut rng = crate::rng::Rng::new(run_seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    (rng.next_u64() >> 32) as u32
}

/// `batch` with its steps padded to [`round_steps`], so that a few plans serve every batch.
pub(crate) fn rounded(batch: SeqBatch) -> SeqBatch {
    let (source_steps, target_steps) = (
        round_steps(batch.source_steps),
        round_steps(batch.target_steps),
    );
    if source_steps == batch.source_steps && target_steps == batch.target_steps {
        return batch;
    }
    let b = batch.batch;
    let mut source = batch.source.clone();
    source.resize(source_steps * b, PAD);
    let mut decoder_input = batch.decoder_input.clone();
    decoder_input.resize(target_steps * b, PAD);
    let mut target = vec![PAD; b * target_steps];
    for row in 0..b {
        target[row * target_steps..row * target_steps + batch.target_steps].copy_from_slice(
            &batch.target[row * batch.target_steps..(row + 1) * batch.target_steps],
        );
    }
    SeqBatch {
        source_steps,
        target_steps,
        source,
        decoder_input,
        target,
        ..batch
    }
}
