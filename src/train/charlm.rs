//! `shadergrad train-lm` and `sample`: the character-level language model of
//! [`crate::nn::charlm`], trained on windows of a text to predict each next character, and
//! sampled one character at a time.
//!
//! Training compiles one plan per window shape; sampling compiles a one-step plan whose
//! recurrent states stay on the GPU between steps (the step reads them and overwrites them
//! with the new ones). Both bind the same [`SharedParameters`], so samples taken during
//! training come from the weights as they are.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::checkpoint::{self, Checkpoint};
use crate::data::corpus::{lm_batches, split_text, unigram_perplexity, LmBatch};
use crate::data::text::{Vocab, PAD, SPECIAL_TOKENS};
use crate::error::{Error, Result};
use crate::gpu::{Dispatch, Gpu};
use crate::graph::{Feed, Graph, Plan, Var, OPTIMIZER_PREFIX};
use crate::kernels::recurrent::CellKind;
use crate::nn::charlm::{CharLm, CharLmConfig, CHARLM_KIND};
use crate::nn::seq2seq::State;
use crate::nn::shared::{bind_states, compile_bound, Binder, Bindings, SharedParameters};
use crate::optim::{Optimizer, OptimizerConfig};
use crate::rng::Rng;
use crate::tensor::Tensor;
use crate::train::metrics::{EpochMetrics, MetricsFile};
use crate::train::progress::Progress;
use crate::train::{
    check_config_against_tensors, first_resumed_epoch, resume_optimizer, training_number,
};

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
    /// Characters predicted (padding not counted) and how many the model got right.
    pub tokens: usize,
    pub correct: usize,
}

/// A character language model on the GPU, with its vocabulary.
pub struct CharLmModel {
    gpu: Gpu,
    pub config: CharLmConfig,
    pub vocab: Vocab,
    pub parameters: SharedParameters,
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
            parameters: SharedParameters::new(gpu, seed),
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
        model.parameters.load(checkpoint, OPTIMIZER_PREFIX)?;
        Ok(model)
    }

    /// Saves the parameters and, if given, the optimizer's state beside them; the config
    /// holds the architecture and the vocabulary, and `extra` merged in at the top level.
    pub fn save(&self, path: &Path, optimizer: Option<&Optimizer>, extra: Value) -> Result<()> {
        let tensors = self.parameters.checkpoint_tensors(optimizer)?;
        let config = checkpoint::with_extra(
            json!({
                "architecture": self.config.to_json(),
                "vocabulary": self.vocab.chars().iter().collect::<String>(),
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
    ) -> Result<(Graph, Bindings, [Var; 4])> {
        let mut g = Graph::new(&self.gpu);
        let input = g.input_indices("input", &[steps, batch]);
        let target = g.input_indices("target", &[steps * batch]);
        let model = CharLm {
            config: &self.config,
        };
        let initial = model.zero_states(&mut g, batch)?;
        let mut p = Binder::new(&mut self.parameters);
        let (logits, _) = model.logits(&mut g, &mut p, input, &initial)?;
        let loss = g.cross_entropy(logits, target, Some(PAD))?;
        let rows = g.reshape(logits, &[steps * batch, 1, self.config.vocab_size])?;
        let (_, predictions) = g.max_over_time_with_positions(rows)?;
        let gradients = g.backward(loss)?;
        let bindings = p.bindings(Some(&gradients))?;
        Ok((g, bindings, [input, target, loss, predictions]))
    }

    /// One step over `batch`: the loss, its gradients into the shared gradient tensors, then
    /// `extra` (an optimizer's update), in one submission. With no `extra` it only measures.
    pub fn train_step(&mut self, batch: &LmBatch, extra: &[Dispatch]) -> Result<StepReport> {
        let key = (batch.batch, batch.steps);
        if !self.train_plans.contains_key(&key) {
            let (g, bindings, [input, target, loss, predictions]) =
                self.training_graph(key.0, key.1)?;
            let plan = compile_bound(&g, &[loss, predictions], &bindings)?;
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
        let model = CharLm { config: &config };
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
        let mut p = Binder::new(&mut self.parameters);
        let (logits, finals) = model.logits(&mut g, &mut p, token, &initial)?;
        let log_probs = g.softmax(logits, true)?;
        bindings.extend(p.bindings(None)?);
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

/// The share of the text read for training; the rest validates.
pub const TRAIN_FRACTION: f64 = 0.9;

/// Temperature of the samples printed after each epoch.
pub const EPOCH_SAMPLE_TEMPERATURE: f64 = 0.8;

/// Everything `train-lm` needs to know.
pub struct LmTraining {
    pub text: String,
    /// Where the text came from, for messages and the checkpoint.
    pub text_name: String,
    /// The architecture; its vocabulary size is set from the text.
    pub model: CharLmConfig,
    pub optimizer: OptimizerConfig,
    /// Windows per step and characters per window.
    pub batch: usize,
    pub steps: usize,
    pub epochs: usize,
    pub seed: u64,
    /// Saved whenever the validation perplexity improves: the parameters, the optimizer's
    /// state and the epoch reached.
    pub save: Option<PathBuf>,
    /// A checkpoint of `save` to continue from: its model, vocabulary, optimizer state and
    /// epoch (`model` above is then unused; the text must only use its characters).
    pub resume: Option<Checkpoint>,
    pub metrics: Option<PathBuf>,
    /// Characters sampled after each epoch (0: none).
    pub sample_length: usize,
    /// Stop once this much time has passed (the epoch under way is finished and saved).
    pub max_minutes: Option<f64>,
    /// Stop after this many epochs without a better validation perplexity.
    pub patience: usize,
}

/// Why a training run stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LmStop {
    EpochsDone,
    /// `patience` epochs passed without a better validation perplexity.
    NoImprovement,
    /// `max_minutes` passed.
    TimeCap,
}

/// What a training run reached.
#[derive(Debug, Clone)]
pub struct LmResult {
    pub steps: u64,
    pub seconds: f64,
    /// Epochs trained by this run, and why it stopped.
    pub epochs: usize,
    pub stop: LmStop,
    pub best_val_perplexity: f64,
    /// The perplexity of character frequencies alone on the validation text.
    pub unigram_perplexity: f64,
    /// Characters per second of training (validation and sampling excluded).
    pub chars_per_s: f64,
}

/// Trains a model as `config` says, reporting progress on stderr.
pub fn train_lm(gpu: &Gpu, config: &LmTraining) -> Result<LmResult> {
    if config.batch == 0 || config.steps == 0 || config.epochs == 0 {
        return Err(Error::invalid(
            "train-lm",
            format!(
                "--batch ({}), --steps ({}) and --epochs ({}) must be at least 1",
                config.batch, config.steps, config.epochs
            ),
        ));
    }
    config.optimizer.validate()?;
    let chars: Vec<char> = config.text.chars().collect();
    let (train_chars, valid_chars) = split_text(&chars, TRAIN_FRACTION);
    if train_chars.len() <= config.steps || valid_chars.len() < 2 {
        return Err(Error::invalid(
            "train-lm",
            format!(
                "{} has {} characters: too short for a window of --steps {}. Its first {:.0}% \
                 ({} characters) trains and must hold a window and the character after it \
                 ({}), the rest ({}) validates and must hold at least 2; give a longer text or \
                 a smaller --steps",
                config.text_name,
                chars.len(),
                config.steps,
                100.0 * TRAIN_FRACTION,
                train_chars.len(),
                config.steps.saturating_add(1),
                valid_chars.len()
            ),
        ));
    }
    let mut model = match &config.resume {
        Some(checkpoint) => CharLmModel::from_checkpoint(gpu, checkpoint)?,
        None => {
            let vocab = Vocab::from_text(&config.text);
            let model_config = CharLmConfig {
                vocab_size: vocab.len(),
                ..config.model.clone()
            };
            model_config.validate()?;
            model_config
                .training_memory(config.batch, config.steps)?
                .check("train-lm", gpu.max_buffer_bytes())?;
            CharLmModel::new(gpu, model_config, vocab, config.seed)?
        }
    };
    if config.resume.is_some() {
        model
            .config
            .training_memory(config.batch, config.steps)?
            .check("train-lm", gpu.max_buffer_bytes())?;
    }
    let encode = |chars: &[char]| -> Result<Vec<u32>> {
        let (ids, unknown) = model.vocab.encode(&chars.iter().collect::<String>());
        match unknown.first() {
            None => Ok(ids),
            Some(c) => Err(Error::invalid(
                "train-lm",
                format!(
                    "{} holds {c:?}, which the resumed model's vocabulary lacks: resume with \
                     the text it was trained on",
                    config.text_name
                ),
            )),
        }
    };
    let (train, valid) = (encode(train_chars)?, encode(valid_chars)?);
    let unigram = unigram_perplexity(&train, &valid, model.vocab.len());
    let mut optimizer = Optimizer::new(gpu, config.optimizer, &model.parameters.optimizer_pairs())?;
    let mut first_epoch = 1;
    let mut best = f64::INFINITY;
    if let Some(checkpoint) = &config.resume {
        resume_optimizer(gpu, &mut optimizer, checkpoint, "train-lm")?;
        first_epoch = first_resumed_epoch(checkpoint, Some(config.epochs), "train-lm")?;
        best = training_number(checkpoint, "val_perplexity").map_or(f64::INFINITY, f64::ln);
        note!(
            "resuming from {} after epoch {}; the model and its vocabulary come from the \
             checkpoint",
            checkpoint.path.display(),
            first_epoch - 1
        );
    }
    let mut metrics = config.metrics.as_ref().map(MetricsFile::open).transpose()?;
    let valid_batches = lm_batches(&valid, config.steps, config.batch, 0, None)?;
    // The sample prompt: the start of the text's first line, which the model has read.
    let first_line: String = train_chars
        .iter()
        .take_while(|&&c| c != '\n')
        .take(32)
        .collect();
    let prompt = match model.vocab.encode(&first_line).0 {
        ids if ids.is_empty() => train[..1].to_vec(),
        ids => ids,
    };
    note!(
        "{} {}-layer{} character language model, hidden {}, embedding {}: {} parameters; {} \
         training and {} validation characters of {}, vocabulary of {} characters; windows of \
         {} steps, batch {}; unigram perplexity {unigram:.2}",
        model.config.cell.name(),
        model.config.layers,
        if model.config.layers == 1 { "" } else { "s" },
        model.config.hidden,
        model.config.embed,
        model.parameters.count(),
        train.len(),
        valid.len(),
        config.text_name,
        model.vocab.chars().len(),
        config.steps,
        config.batch,
    );

    let started = Instant::now();
    let cap = config
        .max_minutes
        .map(|m| Duration::from_secs_f64(m * 60.0));
    let windows_per_epoch = (train.len() - 1).div_ceil(config.steps);
    let epochs_left = (config.epochs + 1).saturating_sub(first_epoch);
    let mut progress = Progress::stderr(
        (windows_per_epoch.div_ceil(config.batch) * epochs_left) as u64,
        config.epochs,
        "char",
    );
    let mut step = optimizer.current_step();
    let (mut train_chars_seen, mut train_seconds) = (0usize, 0.0f64);
    let (mut epochs_run, mut since_best) = (0usize, 0usize);
    let mut stop = LmStop::EpochsDone;
    for epoch in first_epoch..=config.epochs {
        // Each epoch's draws come from the seed and the epoch alone, so that a resumed run
        // draws what an uninterrupted one would.
        let mut rng = Rng::new(config.seed ^ (epoch as u64) << 20);
        // A new offset each epoch, so that windows do not always cut the text at the same
        // places; at least one whole window stays.
        let start = rng.below(config.steps.min(train.len() - config.steps));
        let batches = lm_batches(
            &train,
            config.steps,
            config.batch,
            start,
            Some(rng.next_u64()),
        )?;
        progress.start_epoch(epoch);
        let (mut loss_sum, mut tokens) = (0.0f64, 0usize);
        let epoch_start = Instant::now();
        for batch in &batches {
            step += 1;
            optimizer.prepare_step(step)?;
            let report = model.train_step(batch, optimizer.dispatches())?;
            if !report.loss.is_finite() {
                progress.finish();
                return Err(Error::invalid(
                    "train-lm",
                    format!(
                        "the loss became {} at step {step} (epoch {epoch}); stopped there{}. Try \
                         a lower --lr or --clip",
                        report.loss,
                        match &config.save {
                            Some(path) if best.is_finite() =>
                                format!(", {} keeps the last good checkpoint", path.display()),
                            _ => String::new(),
                        }
                    ),
                ));
            }
            loss_sum += f64::from(report.loss) * report.tokens as f64;
            tokens += report.tokens;
            progress.advance(
                report.tokens as u64,
                &[("loss", loss_sum / tokens.max(1) as f64)],
            );
        }
        let epoch_seconds = epoch_start.elapsed().as_secs_f64();
        train_chars_seen += tokens;
        train_seconds += epoch_seconds;
        let chars_per_s = tokens as f64 / epoch_seconds.max(1e-9);
        let train_loss = loss_sum / tokens.max(1) as f64;
        let (val_loss, val_accuracy) = evaluate(&mut model, &valid_batches)?;
        let val_perplexity = val_loss.exp();
        progress.message(&format!(
            "epoch {epoch}: train loss {train_loss:.4} (perplexity {:.2}) | validation loss \
             {val_loss:.4}, perplexity {val_perplexity:.2}, next-character accuracy \
             {val_accuracy:.4} | {chars_per_s:.0} chars/s, {:.0} s so far",
            train_loss.exp(),
            started.elapsed().as_secs_f64()
        ));
        if config.sample_length > 0 {
            let mut sample_rng = Rng::new(config.seed ^ (epoch as u64) << 32);
            let drawn = model.sample(
                &prompt,
                config.sample_length,
                EPOCH_SAMPLE_TEMPERATURE,
                &mut sample_rng,
            )?;
            let text = model.vocab.decode(&prompt) + &model.vocab.decode(&drawn);
            let shown: Vec<String> = text.lines().map(|line| format!("  | {line}")).collect();
            progress.message(&format!(
                "  sample at temperature {EPOCH_SAMPLE_TEMPERATURE}:\n{}",
                shown.join("\n")
            ));
        }
        if let Some(file) = metrics.as_mut() {
            let record = EpochMetrics {
                epoch,
                step,
                elapsed_s: started.elapsed().as_secs_f64(),
                train_loss,
                val_loss: Some(val_loss),
                val_accuracy: Some(val_accuracy),
                extra: Vec::new(),
            }
            .with("val_perplexity", val_perplexity)
            .with("train_perplexity", train_loss.exp())
            .with("chars_per_s", chars_per_s)
            .with("lr", f64::from(optimizer.learning_rate(step)));
            file.append(&record)?;
        }
        epochs_run += 1;
        since_best += 1;
        if val_loss < best {
            best = val_loss;
            since_best = 0;
            if let Some(path) = &config.save {
                let training = json!({
                    "training": {
                        "epoch": epoch,
                        "steps": step,
                        "optimizer_step": optimizer.current_step(),
                        "val_perplexity": val_perplexity,
                        "seed": config.seed,
                        "batch": config.batch,
                        "window": config.steps,
                        "lr": config.optimizer.lr,
                        "optimizer": format!("{:?}", config.optimizer.rule),
                        "text": config.text_name,
                    }
                });
                model.save(path, Some(&optimizer), training)?;
                progress.message(&format!(
                    "  saved {} (validation perplexity {val_perplexity:.2})",
                    path.display()
                ));
            }
        }
        if since_best >= config.patience.max(1) {
            stop = LmStop::NoImprovement;
            break;
        }
        if cap.is_some_and(|cap| started.elapsed() >= cap) {
            stop = LmStop::TimeCap;
            break;
        }
    }
    progress.finish();
    Ok(LmResult {
        steps: step,
        epochs: epochs_run,
        stop,
        seconds: started.elapsed().as_secs_f64(),
        best_val_perplexity: best.exp(),
        unigram_perplexity: unigram,
        chars_per_s: train_chars_seen as f64 / train_seconds.max(1e-9),
    })
}
