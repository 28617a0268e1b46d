//! The n-gram CNN text classifier of [`crate::nn::textcnn`] on the GPU: training and
//! evaluation steps (every step one GPU submission), checkpoints and predictions.
//!
//! Batches are padded to their longest text, so they come in several lengths; each length
//! is its own compiled plan, and every plan binds the same parameter and gradient tensors
//! ([`Parameters`]), so one optimizer trains them all.

use std::collections::HashMap;
use std::path::Path;

use serde_json::{json, Value};

use crate::checkpoint::{self, Checkpoint};
use crate::data::classify::{text_batches, EncodedText, Labels, TextBatch, WordVocab, NO_LABEL};
use crate::error::{Error, Result};
use crate::gpu::{Dispatch, Gpu};
use crate::graph::{CrossEntropySpec, Feed, Graph, Plan, Var};
use crate::models::{
    argmax, check_config_against_tensors, upgrade_legacy_checkpoint, LegacyName, WEIGHT_LAYOUT,
};
use crate::nn::textcnn::{window_mask, TextCnn, TextCnnConfig};
use crate::nn::Parameters;
use crate::optim::Optimizer;

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
    /// The batch's real rows (padding rows not counted).
    pub examples: usize,
    /// Real rows whose largest logit is their label.
    pub correct: usize,
}

/// A text CNN on the GPU, with its vocabulary and class names.
pub struct TextCnnModel {
    gpu: Gpu,
    /// The architecture (sizes and filter widths).
    pub config: TextCnnConfig,
    /// The words the model knows, with their ids.
    pub vocab: WordVocab,
    /// The class names, in the order of the logits.
    pub labels: Labels,
    /// The weights on the GPU, bound by every plan the model compiles.
    pub parameters: Parameters,
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
            parameters: Parameters::new(gpu, seed),
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
            .ok_or_else(|| bad("\"architecture\""))?;
        let model_config = TextCnnConfig::from_json(architecture)
            .map_err(|e| Error::format(&checkpoint.path, e.to_string()))?;
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
        let vocab = WordVocab::from_words(&strings("vocabulary")?)?;
        let labels = Labels::from_names(strings("labels")?)?;
        check_config_against_tensors(checkpoint, model_config.parameter_count())?;
        model_config
            .training_memory(1, model_config.widest())?
            .check("checkpoint", gpu.max_buffer_bytes())?;
        let model = TextCnnModel::new(gpu, model_config, vocab, labels, 0)?;
        model
            .parameters
            .load(&model.upgrade_checkpoint(checkpoint)?)?;
        Ok(model)
    }

    /// The training graph for `batch` rows of `steps` words, uncompiled, with the
    /// parameters' gradients to compile as outputs.
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
        let model = TextCnn::new(&self.config, &self.parameters)?;
        let logits = model.logits(&mut g, ids, &window_masks)?;
        let loss = g.cross_entropy_with(
            logits,
            labels,
            CrossEntropySpec::mean().ignore(NO_LABEL.into()),
        )?;
        let gradients = g.backward(loss)?.parameter_gradients();
        Ok((
            g,
            TrainPlanValues {
                ids,
                window_masks,
                labels,
                loss,
                logits,
                gradients,
            },
        ))
    }

    fn train_plan(&mut self, batch: usize, steps: usize) -> Result<&mut TrainPlan> {
        let key = (batch, steps);
        if !self.plans.contains_key(&key) {
            let (g, values) = self.training_graph(batch, steps)?;
            let mut outputs = vec![values.loss, values.logits];
            outputs.extend(&values.gradients);
            let plan = g.compile(&outputs)?;
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

    /// `checkpoint` with its tensors in this model's layouts: one from before PyTorch's
    /// layouts (no `"weight_layout": "pytorch"`) has its output layer's weight, and that
    /// weight's optimizer state, transposed to `[C, F·widths]`; the other names and
    /// layouts were PyTorch's already.
    pub fn upgrade_checkpoint(&self, checkpoint: &Checkpoint) -> Result<Checkpoint> {
        let mut legacy = vec![LegacyName::new(
            "embedding.weight",
            "embedding.weight",
            false,
        )];
        for width in &self.config.widths {
            for what in ["weight", "bias"] {
                let name = format!("conv{width}.{what}");
                legacy.push(LegacyName::new(name.clone(), name, false));
            }
        }
        legacy.push(LegacyName::new("output.weight", "output.weight", true));
        legacy.push(LegacyName::new("output.bias", "output.bias", false));
        upgrade_legacy_checkpoint(checkpoint, &legacy, &self.parameters)
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
                "weight_layout": WEIGHT_LAYOUT,
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
    /// The parameters' gradients, compiled as outputs.
    gradients: Vec<Var>,
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
