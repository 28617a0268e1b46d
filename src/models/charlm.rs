//! The character-level language model of [`crate::nn::charlm`] on the GPU: training and
//! evaluation steps over windows of text, checkpoints, and sampling one character at a
//! time.
//!
//! Training compiles one plan per window shape; sampling compiles a one-step plan whose
//! recurrent states stay on the GPU between steps (the step reads them and overwrites them
//! with the new ones). Both read the same [`Parameters`], so samples taken during
//! training come from the weights as they are.

use std::collections::HashMap;
use std::path::Path;

use serde_json::{json, Value};

use crate::checkpoint::{self, Checkpoint};
use crate::data::corpus::LmBatch;
use crate::data::text::{Vocab, PAD, SPECIAL_TOKENS};
use crate::error::{Error, Result};
use crate::gpu::{Dispatch, Gpu};
use crate::graph::{CrossEntropySpec, Feed, Graph, Plan, Var};
use crate::kernels::recurrent::CellKind;
use crate::models::{
    check_config_against_tensors, legacy_recurrent_layer, upgrade_legacy_checkpoint, LegacyName,
    WEIGHT_LAYOUT,
};
use crate::nn::charlm::{CharLm, CharLmConfig, CHARLM_KIND};
use crate::nn::seq2seq::State;
use crate::nn::seq2seq::{bind_states, compile_bound};
use crate::nn::Parameters;
use crate::optim::Optimizer;
use crate::rng::Rng;
use crate::tensor::Tensor;

/// A compiled training step for one window shape, and the values it feeds or reads.
struct TrainPlan {
    plan: Plan,
    input: Var,
    target: Var,
    loss: Var,
    predictions: Var,
}

/// The one-step plan: a character in, the log-probabilities of the next one out.
struct Sampler {
    plan: Plan,
    token: Var,
    log_probs: Var,
    /// Each layer's state (h, and c for an LSTM): read and overwritten by every step.
    states: Vec<Tensor>,
}

/// What one training step measured.
#[derive(Debug, Clone, Copy)]
pub struct StepReport {
    /// Mean cross-entropy (nats) per predicted character.
    pub loss: f32,
    /// Characters predicted (padding not counted).
    pub tokens: usize,
    /// How many of those characters were the model's most likely prediction.
    pub correct: usize,
}

/// A character language model on the GPU, with its vocabulary.
pub struct CharLmModel {
    gpu: Gpu,
    /// The architecture (sizes and cell).
    pub config: CharLmConfig,
    /// The characters the model reads and writes, with their ids.
    pub vocab: Vocab,
    /// The weights on the GPU, bound by every plan the model compiles.
    pub parameters: Parameters,
    train_plans: HashMap<(usize, usize), TrainPlan>,
    sampler: Option<Sampler>,
}

impl CharLmModel {
    /// A new model with parameters drawn from `seed`.
    pub fn new(gpu: &Gpu, config: CharLmConfig, vocab: Vocab, seed: u64) -> Result<Self> {
        config.validate()?;
        if config.vocab_size != vocab.len() {
            return Err(Error::invalid(
                "charlm",
                format!(
                    "the model has {} tokens, the vocabulary {}",
                    config.vocab_size,
                    vocab.len()
                ),
            ));
        }
        let mut model = CharLmModel {
            gpu: gpu.clone(),
            config,
            vocab,
            parameters: Parameters::new(gpu, seed),
            train_plans: HashMap::new(),
            sampler: None,
        };
        // Building (not compiling) the smallest graph makes every parameter, in a fixed
        // order, before an optimizer is made over them.
        model.training_graph(1, 1)?;
        Ok(model)
    }

    /// The model a checkpoint of [`CharLmModel::save`] holds; optimizer state in it is
    /// left alone.
    pub fn from_checkpoint(gpu: &Gpu, checkpoint: &Checkpoint) -> Result<Self> {
        let config = &checkpoint.config;
        let architecture = config.get("architecture").ok_or_else(|| {
            Error::format(
                &checkpoint.path,
                "the config has no \"architecture\": not a train-lm checkpoint",
            )
        })?;
        let kind = architecture.get("kind").and_then(Value::as_str);
        if kind != Some(CHARLM_KIND) {
            return Err(Error::format(
                &checkpoint.path,
                format!(
                    "holds a model of kind {}, not a train-lm language model (kind \"{CHARLM_KIND}\")",
                    kind.map_or("(none)".to_string(), |k| format!("{k:?}"))
                ),
            ));
        }
        let model_config = CharLmConfig::from_json(architecture)?;
        let chars: Vec<char> = config
            .get("vocabulary")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::format(&checkpoint.path, "the config has no \"vocabulary\""))?
            .chars()
            .collect();
        let vocab = Vocab::from_chars(&chars)?;
        check_config_against_tensors(checkpoint, model_config.parameter_count())?;
        model_config
            .training_memory(1, 1)?
            .check("checkpoint", gpu.max_buffer_bytes())?;
        let model = CharLmModel::new(gpu, model_config, vocab, 0)?;
        model
            .parameters
            .load(&model.upgrade_checkpoint(checkpoint)?)?;
        Ok(model)
    }

    /// `checkpoint` with its tensors under this model's names and in its layouts: one from
    /// before PyTorch's names and layouts (no `"weight_layout": "pytorch"`) has its
    /// parameters renamed, its matrices transposed and its optimizer state moved to the
    /// parameters' new places, so that it loads and resumes as it would have.
    pub fn upgrade_checkpoint(&self, checkpoint: &Checkpoint) -> Result<Checkpoint> {
        let mut legacy = vec![LegacyName::new(
            "embedding.weight",
            "embedding.weight",
            false,
        )];
        for k in 0..self.config.layers {
            legacy.extend(legacy_recurrent_layer(
                &format!("layer{k}"),
                "rnn",
                &format!("l{k}"),
            ));
        }
        legacy.push(LegacyName::new("output.weight", "output.weight", true));
        legacy.push(LegacyName::new("output.bias", "output.bias", false));
        upgrade_legacy_checkpoint(checkpoint, &legacy, &self.parameters)
    }

    /// Saves the parameters and, if given, the optimizer's state beside them; the config
    /// holds the architecture and the vocabulary, and `extra` merged in at the top level.
    pub fn save(&self, path: &Path, optimizer: Option<&Optimizer>, extra: Value) -> Result<()> {
        let tensors = self.parameters.checkpoint_tensors(optimizer)?;
        let config = checkpoint::with_extra(
            json!({
                "architecture": self.config.to_json(),
                "vocabulary": self.vocab.chars().iter().collect::<String>(),
                "weight_layout": WEIGHT_LAYOUT,
            }),
            extra,
        );
        checkpoint::save(path, &tensors, &config)
    }

    /// The training graph for `batch` windows of `steps` (not compiled), from zero states.
    fn training_graph(
        &mut self,
        batch: usize,
        steps: usize,
    ) -> Result<(Graph, Vec<Var>, [Var; 4])> {
        let mut g = Graph::new(&self.gpu);
        let input = g.input_indices("input", &[steps, batch]);
        let target = g.input_indices("target", &[steps * batch]);
        let model = CharLm::new(&self.config, &self.parameters)?;
        let initial = model.zero_states(&mut g, batch)?;
        let (logits, _) = model.logits(&mut g, input, &initial)?;
        let loss =
            g.cross_entropy_with(logits, target, CrossEntropySpec::mean().ignore(PAD.into()))?;
        let rows = g.reshape(logits, &[steps * batch, 1, self.config.vocab_size])?;
        let (_, predictions) = g.max_over_time_with_positions(rows)?;
        let gradients = g.backward(loss)?.parameter_gradients();
        Ok((g, gradients, [input, target, loss, predictions]))
    }

    /// One step over `batch`: the loss, its gradients into the shared gradient tensors, then
    /// `extra` (an optimizer's update), in one submission. With no `extra` it only measures.
    pub fn train_step(&mut self, batch: &LmBatch, extra: &[Dispatch]) -> Result<StepReport> {
        let key = (batch.batch, batch.steps);
        if !self.train_plans.contains_key(&key) {
            let (g, gradients, [input, target, loss, predictions]) =
                self.training_graph(key.0, key.1)?;
            let mut outputs = vec![loss, predictions];
            outputs.extend(gradients);
            let plan = g.compile(&outputs)?;
            let plan = TrainPlan {
                plan,
                input,
                target,
                loss,
                predictions,
            };
            self.train_plans.insert(key, plan);
        }
        let plan = self.train_plans.get_mut(&key).expect("inserted above");
        plan.plan.run(
            &[
                Feed::u32(plan.input, &batch.input),
                Feed::u32(plan.target, &batch.target),
            ],
            extra,
        )?;
        let loss = plan.plan.read(plan.loss)?[0];
        let predictions = plan.plan.read_indices(plan.predictions)?;
        let correct = batch
            .target
            .iter()
            .zip(&predictions)
            .filter(|&(&target, &predicted)| target != PAD && target == predicted)
            .count();
        Ok(StepReport {
            loss,
            tokens: batch.tokens,
            correct,
        })
    }

    fn build_sampler(&mut self) -> Result<Sampler> {
        let config = self.config.clone();
        let model = CharLm::new(&config, &self.parameters)?;
        let lstm = config.cell == CellKind::Lstm;
        let state_shape = [1, config.hidden];
        let per_layer = if lstm { 2 } else { 1 };
        let states = (0..config.layers * per_layer)
            .map(|_| Tensor::zeros(&self.gpu, &state_shape))
            .collect::<Result<Vec<_>>>()?;
        let mut g = Graph::new(&self.gpu);
        let token = g.input_indices("token", &[1, 1]);
        let mut bindings = Vec::new();
        let mut initial = Vec::with_capacity(config.layers);
        for layer in 0..config.layers {
            let h = g.input(&format!("h{layer}"), &state_shape);
            let c = lstm.then(|| g.input(&format!("c{layer}"), &state_shape));
            initial.push(State { h, c });
        }
        bind_states(&mut bindings, &initial, &states);
        let (logits, finals) = model.logits(&mut g, token, &initial)?;
        let log_probs = g.log_softmax(logits, -1)?;
        bind_states(&mut bindings, &finals, &states);
        let plan = compile_bound(&g, &[log_probs], &bindings)?;
        Ok(Sampler {
            plan,
            token,
            log_probs,
            states,
        })
    }

    /// Reads `prompt` (character ids) from a zero state, then draws `length` characters,
    /// each fed back as the next input: the ids drawn. `temperature` divides the
    /// log-probabilities before the draw (0: always the most likely character); only
    /// characters are drawn, never the special tokens.
    pub fn sample(
        &mut self,
        prompt: &[u32],
        length: usize,
        temperature: f64,
        rng: &mut Rng,
    ) -> Result<Vec<u32>> {
        let mut drawn = Vec::new();
        self.sample_each(prompt, length, temperature, rng, &mut |id| {
            drawn.push(id);
            Ok(())
        })?;
        Ok(drawn)
    }

    /// [`CharLmModel::sample`], handing each id to `each` as soon as it is drawn (to print
    /// a long sample as it grows); an error from `each` stops the sampling with it.
    pub fn sample_each(
        &mut self,
        prompt: &[u32],
        length: usize,
        temperature: f64,
        rng: &mut Rng,
        each: &mut dyn FnMut(u32) -> Result<()>,
    ) -> Result<()> {
        if !(temperature >= 0.0 && temperature.is_finite()) {
            return Err(Error::invalid(
                "sample",
                format!("the temperature {temperature} must be 0 (greedy) or positive"),
            ));
        }
        if prompt.is_empty() {
            return Err(Error::invalid(
                "sample",
                "the prompt is empty: expected at least one character to start from",
            ));
        }
        let vocab_size = self.config.vocab_size;
        if let Some(&bad) = prompt.iter().find(|&&id| id as usize >= vocab_size) {
            return Err(Error::invalid(
                "sample",
                format!("the prompt holds id {bad}; the vocabulary has {vocab_size}"),
            ));
        }
        if self.sampler.is_none() {
            self.sampler = Some(self.build_sampler()?);
        }
        let gpu = self.gpu.clone();
        let sampler = self.sampler.as_mut().expect("built above");
        for state in &sampler.states {
            gpu.write(state.buffer(), &vec![0.0f32; state.numel()]);
        }
        // Every prompt character but the last only moves the states on: nothing is read.
        for &id in &prompt[..prompt.len() - 1] {
            sampler.plan.run(&[Feed::u32(sampler.token, &[id])], &[])?;
        }
        let mut next = prompt[prompt.len() - 1];
        for _ in 0..length {
            sampler
                .plan
                .run(&[Feed::u32(sampler.token, &[next])], &[])?;
            let log_probs = sampler.plan.read(sampler.log_probs)?;
            next = draw(&log_probs, temperature, rng);
            each(next)?;
        }
        Ok(())
    }
}

/// A character id drawn from log-probabilities over the vocabulary at `temperature` (0:
/// the most likely); the special tokens are never drawn.
fn draw(log_probs: &[f32], temperature: f64, rng: &mut Rng) -> u32 {
    let chars = &log_probs[SPECIAL_TOKENS.min(log_probs.len())..];
    let best = chars
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i);
    let id = |i: usize| (SPECIAL_TOKENS + i) as u32;
    if temperature == 0.0 {
        return id(best);
    }
    let top = f64::from(chars[best]);
    let weights: Vec<f64> = chars
        .iter()
        .map(|&lp| ((f64::from(lp) - top) / temperature).exp())
        .collect();
    let mut left = rng.next_f64() * weights.iter().sum::<f64>();
    for (i, weight) in weights.iter().enumerate() {
        left -= weight;
        if left < 0.0 {
            return id(i);
        }
    }
    id(best)
}

/// Mean loss per character and next-character accuracy of `model` over `batches`.
pub fn evaluate(model: &mut CharLmModel, batches: &[LmBatch]) -> Result<(f64, f64)> {
    let (mut loss_sum, mut tokens, mut correct) = (0.0, 0usize, 0usize);
    for batch in batches {
        let report = model.train_step(batch, &[])?;
        loss_sum += f64::from(report.loss) * report.tokens as f64;
        tokens += report.tokens;
        correct += report.correct;
    }
    Ok((
        loss_sum / tokens.max(1) as f64,
        correct as f64 / tokens.max(1) as f64,
    ))
}
