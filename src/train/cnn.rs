//! `shadergrad train-cnn`: the n-gram CNN text classifier of [`crate::nn::textcnn`] trained
//! on labelled texts (a built-in task or the user's TSV), every step one GPU submission.
//!
//! Batches are padded to their longest text, so they come in several lengths; each length
//! is its own compiled plan, and every plan binds the same parameter and gradient tensors
//! ([`SharedParameters`]), so one optimizer trains them all.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::{json, Value};

use crate::checkpoint::{self, Checkpoint};
use crate::data::classify::{
    encode_texts, text_batches, tokenize, EncodedText, LabelledText, Labels, TextBatch, WordVocab,
    NO_LABEL,
};
use crate::error::{Error, Result};
use crate::gpu::{Dispatch, Gpu};
use crate::graph::{Feed, Graph, Plan, Var, OPTIMIZER_PREFIX};
use crate::nn::shared::{compile_bound, Binder, Bindings, SharedParameters};
use crate::nn::textcnn::{window_mask, TextCnn, TextCnnConfig};
use crate::optim::{Optimizer, OptimizerConfig};
use crate::rng::Rng;
use crate::train::metrics::{EpochMetrics, MetricsFile};
use crate::train::progress::Progress;
use crate::train::{
    check_config_against_tensors, first_resumed_epoch, resume_optimizer, training_number,
};

/// A compiled training step for one batch shape, and the values it feeds or reads.
struct TrainPlan {
    plan: Plan,
    ids: Var,
    window_masks: Vec<Var>,
    labels: Var,
    loss: Var,
    logits: Var,
}

/// What one step measured over the batch's real rows.
#[derive(Debug, Clone, Copy)]
pub struct StepReport {
    /// The mean cross-entropy of the real rows.
    pub loss: f32,
    pub examples: usize,
    /// Real rows whose largest logit is their label.
    pub correct: usize,
}

/// A text CNN on the GPU, with its vocabulary and class names.
pub struct TextCnnModel {
    gpu: Gpu,
    pub config: TextCnnConfig,
    pub vocab: WordVocab,
    pub labels: Labels,
    pub parameters: SharedParameters,
    plans: HashMap<(usize, usize), TrainPlan>,
}

impl TextCnnModel {
    /// A new model with parameters drawn from `seed`; `config`'s vocabulary size and class
    /// count must be those of `vocab` and `labels`.
    pub fn new(
        gpu: &Gpu,
        config: TextCnnConfig,
        vocab: WordVocab,
        labels: Labels,
        seed: u64,
    ) -> Result<Self> {
        config.validate()?;
        if config.vocab_size != vocab.len() || config.classes != labels.len() {
            return Err(Error::invalid(
                "text cnn",
                format!(
                    "the model has {} words and {} classes, the data {} and {}",
                    config.vocab_size,
                    config.classes,
                    vocab.len(),
                    labels.len()
                ),
            ));
        }
        let widest = config.widest();
        let mut model = TextCnnModel {
            gpu: gpu.clone(),
            config,
            vocab,
            labels,
            parameters: SharedParameters::new(gpu, seed),
            plans: HashMap::new(),
        };
        // Building (not compiling) the smallest graph makes every parameter, in a fixed
        // order, before an optimizer is made over them.
        model.training_graph(1, widest)?;
        Ok(model)
    }

    /// The model a checkpoint of [`TextCnnModel::save`] holds, with its vocabulary and
    /// class names; optimizer state in it is left alone.
    pub fn from_checkpoint(gpu: &Gpu, checkpoint: &Checkpoint) -> Result<Self> {
        let bad = |what: &str| {
            Error::format(
                &checkpoint.path,
                format!("the config has no valid {what}: not a train-cnn checkpoint"),
            )
        };
        let config = &checkpoint.config;
        let architecture = config
            .get("architecture")
            .filter(|a| a.get("kind").and_then(Value::as_str) == Some("textcnn"))
            .ok_or_else(|| bad("\"architecture\" of kind \"textcnn\""))?;
        let size = |key: &str| {
            architecture
                .get(key)
                .and_then(Value::as_u64)
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| bad(&format!("architecture {key:?}")))
        };
        let strings = |key: &str| -> Result<Vec<String>> {
            config
                .get(key)
                .and_then(Value::as_array)
                .and_then(|items| {
                    items
                        .iter()
                        .map(|item| item.as_str().map(str::to_string))
                        .collect()
                })
                .ok_or_else(|| bad(&format!("{key:?} (a list of strings)")))
        };
        let widths = architecture
            .get("widths")
            .and_then(Value::as_array)
            .and_then(|items| {
                items
                    .iter()
                    .map(|w| w.as_u64().and_then(|w| usize::try_from(w).ok()))
                    .collect::<Option<Vec<usize>>>()
            })
            .ok_or_else(|| bad("architecture \"widths\""))?;
        let model_config = TextCnnConfig {
            vocab_size: size("vocab_size")?,
            embed: size("embed")?,
            widths,
            filters: size("filters")?,
            classes: size("classes")?,
        };
        let vocab = WordVocab::from_words(&strings("vocabulary")?)?;
        let labels = Labels::from_names(strings("labels")?)?;
        check_config_against_tensors(checkpoint, model_config.parameter_count())?;
        model_config
            .training_memory(1, model_config.widest())?
            .check("checkpoint", gpu.max_buffer_bytes())?;
        let model = TextCnnModel::new(gpu, model_config, vocab, labels, 0)?;
        model.parameters.load(checkpoint, OPTIMIZER_PREFIX)?;
        Ok(model)
    }

    /// The training graph for `batch` rows of `steps` words, uncompiled, with the bindings
    /// to the shared parameters and gradients.
    fn training_graph(&mut self, batch: usize, steps: usize) -> Result<(Graph, TrainPlanValues)> {
        let mut g = Graph::new(&self.gpu);
        let ids = g.input_indices("ids", &[batch, steps]);
        let window_masks: Vec<Var> = self
            .config
            .widths
            .iter()
            .map(|&w| g.input(&format!("window_mask{w}"), &[batch, 1, steps + 1 - w]))
            .collect();
        let labels = g.input_indices("labels", &[batch]);
        let model = TextCnn {
            config: &self.config,
        };
        let mut p = Binder::new(&mut self.parameters);
        let logits = model.logits(&mut g, &mut p, ids, &window_masks)?;
        let loss = g.cross_entropy(logits, labels, Some(NO_LABEL))?;
        let gradients = g.backward(loss)?;
        let bindings = p.bindings(Some(&gradients))?;
        Ok((
            g,
            TrainPlanValues {
                ids,
                window_masks,
                labels,
                loss,
                logits,
                bindings,
            },
        ))
    }

    fn train_plan(&mut self, batch: usize, steps: usize) -> Result<&mut TrainPlan> {
        let key = (batch, steps);
        if !self.plans.contains_key(&key) {
            let (g, values) = self.training_graph(batch, steps)?;
            let plan = compile_bound(&g, &[values.loss, values.logits], &values.bindings)?;
            let plan = TrainPlan {
                plan,
                ids: values.ids,
                window_masks: values.window_masks,
                labels: values.labels,
                loss: values.loss,
                logits: values.logits,
            };
            self.plans.insert(key, plan);
        }
        Ok(self.plans.get_mut(&key).expect("inserted above"))
    }

    /// One step over `batch`: the loss and its gradients into the shared gradient tensors,
    /// then `extra` (an optimizer's update; none to evaluate), in one submission.
    pub fn train_step(&mut self, batch: &TextBatch, extra: &[Dispatch]) -> Result<StepReport> {
        if batch.steps < self.config.widest() {
            return Err(Error::invalid(
                "text cnn",
                format!(
                    "a batch of {} words is narrower than the widest filter ({}); pad it to at \
                     least that",
                    batch.steps,
                    self.config.widest()
                ),
            ));
        }
        let masks: Vec<Vec<f32>> = self
            .config
            .widths
            .iter()
            .map(|&w| window_mask(&batch.lengths, batch.steps, w))
            .collect();
        let classes = self.config.classes;
        let step = self.train_plan(batch.batch, batch.steps)?;
        let mut feeds = vec![
            Feed::u32(step.ids, &batch.ids),
            Feed::u32(step.labels, &batch.labels),
        ];
        feeds.extend(
            step.window_masks
                .iter()
                .zip(&masks)
                .map(|(&var, mask)| Feed::f32(var, mask)),
        );
        step.plan.run(&feeds, extra)?;
        let loss = step.plan.read(step.loss)?[0];
        let logits = step.plan.read(step.logits)?;
        let correct = logits
            .chunks(classes)
            .zip(&batch.labels)
            .take(batch.real)
            .filter(|(row, &label)| argmax(row) == label as usize)
            .count();
        Ok(StepReport {
            loss,
            examples: batch.real,
            correct,
        })
    }

    /// Saves the parameters, the optimizer's state (if given) under `optimizer.`, and a
    /// config with the architecture, the vocabulary and the class names (`extra` merged in
    /// at the top level).
    pub fn save(&self, path: &Path, optimizer: Option<&Optimizer>, extra: Value) -> Result<()> {
        let tensors = self.parameters.checkpoint_tensors(optimizer)?;
        let config = checkpoint::with_extra(
            json!({
                "architecture": self.config.to_json(),
                "vocabulary": self.vocab.words(),
                "labels": self.labels.names(),
            }),
            extra,
        );
        checkpoint::save(path, &tensors, &config)
    }
}

/// What [`TextCnnModel::training_graph`] returns besides the graph.
struct TrainPlanValues {
    ids: Var,
    window_masks: Vec<Var>,
    labels: Var,
    loss: Var,
    logits: Var,
    bindings: Bindings,
}

fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
            if v > best.1 {
                (i, v)
            } else {
                best
            }
        })
        .0
}

/// The mean loss and the accuracy of `model` on `texts`, in batches of `batch` rows.
pub fn evaluate(
    model: &mut TextCnnModel,
    texts: &[EncodedText],
    batch: usize,
) -> Result<(f64, f64)> {
    let (mut loss_sum, mut correct, mut seen) = (0.0, 0usize, 0usize);
    for chunk in text_batches(texts, batch, model.config.widest(), None)? {
        let report = model.train_step(&chunk, &[])?;
        loss_sum += f64::from(report.loss) * report.examples as f64;
        correct += report.correct;
        seen += report.examples;
    }
    let seen = seen.max(1) as f64;
    Ok((loss_sum / seen, correct as f64 / seen))
}

/// Everything `train-cnn` needs to know.
pub struct CnnTraining {
    pub train: Vec<LabelledText>,
    pub valid: Vec<LabelledText>,
    /// Describes the data in the checkpoint (the task and its options, or the files).
    pub data_description: Value,
    pub embed: usize,
    pub widths: Vec<usize>,
    pub filters: usize,
    pub optimizer: OptimizerConfig,
    pub batch: usize,
    pub epochs: usize,
    pub seed: u64,
    /// Saved after every epoch: the parameters, the optimizer's state and the epoch reached.
    pub save: Option<PathBuf>,
    /// A checkpoint of `save` to continue from: its model, vocabulary, class names,
    /// optimizer state and epoch (`embed`, `widths` and `filters` above are then unused).
    pub resume: Option<Checkpoint>,
    pub metrics: Option<PathBuf>,
}

/// What a training run reached.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CnnResult {
    pub valid_accuracy: f64,
    pub valid_loss: f64,
    /// The best validation accuracy of any epoch.
    pub best_valid_accuracy: f64,
    pub steps: u64,
    pub seconds: f64,
    /// Training examples per second (validation excluded).
    pub examples_per_s: f64,
}

/// Trains a text CNN as `config` says, reporting progress on stderr.
pub fn train_cnn(gpu: &Gpu, config: &CnnTraining) -> Result<CnnResult> {
    if config.batch == 0 || config.epochs == 0 {
        return Err(Error::invalid(
            "train-cnn",
            format!(
                "--batch {} and --epochs {} must both be at least 1",
                config.batch, config.epochs
            ),
        ));
    }
    if config.train.is_empty() || config.valid.is_empty() {
        return Err(Error::invalid(
            "train-cnn",
            format!(
                "needs training ({}) and validation ({}) examples",
                config.train.len(),
                config.valid.len()
            ),
        ));
    }
    config.optimizer.validate()?;
    let longest_text = config
        .train
        .iter()
        .chain(&config.valid)
        .map(|example| tokenize(&example.text).len())
        .max()
        .unwrap_or(0);
    let mut model = match &config.resume {
        Some(checkpoint) => TextCnnModel::from_checkpoint(gpu, checkpoint)?,
        None => {
            let labels = Labels::from_examples(&config.train)?;
            let vocab = WordVocab::from_examples(&config.train);
            let model_config = TextCnnConfig {
                vocab_size: vocab.len(),
                embed: config.embed,
                widths: config.widths.clone(),
                filters: config.filters,
                classes: labels.len(),
            };
            model_config.validate()?;
            model_config
                .training_memory(config.batch, longest_text.max(model_config.widest()))?
                .check("train-cnn", gpu.max_buffer_bytes())?;
            TextCnnModel::new(gpu, model_config, vocab, labels, config.seed)?
        }
    };
    if config.resume.is_some() {
        let words = longest_text.max(model.config.widest());
        model
            .config
            .training_memory(config.batch, words)?
            .check("train-cnn", gpu.max_buffer_bytes())?;
    }
    let train = encode_texts(&model.vocab, &model.labels, &config.train, "training")?;
    let valid = encode_texts(&model.vocab, &model.labels, &config.valid, "validation")?;
    let mut optimizer = Optimizer::new(gpu, config.optimizer, &model.parameters.optimizer_pairs())?;
    let mut first_epoch = 1;
    let mut best = 0.0f64;
    if let Some(checkpoint) = &config.resume {
        resume_optimizer(gpu, &mut optimizer, checkpoint, "train-cnn")?;
        first_epoch = first_resumed_epoch(checkpoint, Some(config.epochs), "train-cnn")?;
        best = training_number(checkpoint, "best_valid_accuracy").unwrap_or(0.0);
        note!(
            "resuming from {} after epoch {}; the model, its vocabulary and classes come from \
             the checkpoint",
            checkpoint.path.display(),
            first_epoch - 1
        );
    }
    let mut metrics = config.metrics.as_ref().map(MetricsFile::open).transpose()?;
    let longest = train.iter().map(|t| t.ids.len()).max().unwrap_or(0);
    note!(
        "text CNN, embedding {}, widths {:?} of {} filters: {} parameters; {} training and {} \
         validation texts (longest {longest} words), {} words, classes {:?}",
        model.config.embed,
        model.config.widths,
        model.config.filters,
        model.parameters.count(),
        train.len(),
        valid.len(),
        model.vocab.len(),
        model.labels.names()
    );

    let steps_per_epoch = train.len().div_ceil(config.batch) as u64;
    let epochs_left = (config.epochs + 1).saturating_sub(first_epoch);
    let mut progress = Progress::stderr(steps_per_epoch * epochs_left as u64, config.epochs, "ex");
    let started = Instant::now();
    let (mut train_examples, mut train_seconds) = (0usize, 0.0f64);
    let mut step = optimizer.current_step();
    let mut last = (0.0, 0.0);
    // The display keeps the last validation accuracy beside the running loss.
    let mut shown_accuracy: Option<f64> = None;
    for epoch in first_epoch..=config.epochs {
        progress.start_epoch(epoch);
        let epoch_seed = config.seed ^ Rng::new(epoch as u64).next_u64();
        let batches = text_batches(
            &train,
            config.batch,
            model.config.widest(),
            Some(epoch_seed),
        )?;
        let (mut loss_sum, mut seen, mut correct) = (0.0f64, 0usize, 0usize);
        let epoch_start = Instant::now();
        for batch in &batches {
            step += 1;
            optimizer.prepare_step(step)?;
            let report = model.train_step(batch, optimizer.dispatches())?;
            if !report.loss.is_finite() {
                progress.finish();
                return Err(Error::invalid(
                    "train-cnn",
                    format!(
                        "the loss became {} at step {step} (epoch {epoch}); try a lower --lr",
                        report.loss
                    ),
                ));
            }
            loss_sum += f64::from(report.loss) * report.examples as f64;
            seen += report.examples;
            correct += report.correct;
            let mut shown = vec![
                ("loss", loss_sum / seen.max(1) as f64),
                ("acc", correct as f64 / seen.max(1) as f64),
            ];
            shown.extend(shown_accuracy.map(|a| ("val_acc", a)));
            progress.advance(report.examples as u64, &shown);
        }
        let epoch_seconds = epoch_start.elapsed().as_secs_f64();
        train_examples += seen;
        train_seconds += epoch_seconds;
        let (val_loss, val_accuracy) = evaluate(&mut model, &valid, config.batch)?;
        shown_accuracy = Some(val_accuracy);
        best = best.max(val_accuracy);
        last = (val_loss, val_accuracy);
        progress.message(&format!(
            "epoch {epoch}: train loss {:.4}, accuracy {:.4} | validation loss {val_loss:.4}, \
             accuracy {val_accuracy:.4} | {:.0} examples/s, {:.1} s so far",
            loss_sum / seen.max(1) as f64,
            correct as f64 / seen.max(1) as f64,
            seen as f64 / epoch_seconds.max(1e-9),
            started.elapsed().as_secs_f64()
        ));
        if let Some(file) = metrics.as_mut() {
            let record = EpochMetrics {
                epoch,
                step,
                elapsed_s: started.elapsed().as_secs_f64(),
                train_loss: loss_sum / seen.max(1) as f64,
                val_loss: Some(val_loss),
                val_accuracy: Some(val_accuracy),
                extra: Vec::new(),
            }
            .with("train_accuracy", correct as f64 / seen.max(1) as f64)
            .with("examples_per_s", seen as f64 / epoch_seconds.max(1e-9))
            .with("lr", f64::from(optimizer.learning_rate(step)));
            file.append(&record)?;
        }
        if let Some(path) = &config.save {
            let training = json!({
                "training": {
                    "epoch": epoch,
                    "epochs": config.epochs,
                    "steps": step,
                    "optimizer_step": optimizer.current_step(),
                    "seed": config.seed,
                    "batch": config.batch,
                    "lr": config.optimizer.lr,
                    "optimizer": format!("{:?}", config.optimizer.rule),
                    "valid_accuracy": val_accuracy,
                    "best_valid_accuracy": best,
                    "data": config.data_description,
                }
            });
            model.save(path, Some(&optimizer), training)?;
            progress.message(&format!("  saved {}", path.display()));
        }
    }
    progress.finish();
    Ok(CnnResult {
        valid_accuracy: last.1,
        valid_loss: last.0,
        best_valid_accuracy: best,
        steps: step,
        seconds: started.elapsed().as_secs_f64(),
        examples_per_s: train_examples as f64 / train_seconds.max(1e-9),
    })
}
