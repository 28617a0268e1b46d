//! `shadergrad train-cnn`: trains a [`TextCnnModel`] on labelled texts (a built-in task or
//! the user's TSV), and saves it after every epoch.

use std::path::PathBuf;
use std::time::Instant;

use serde_json::{json, Value};

use crate::checkpoint::Checkpoint;
use crate::data::classify::TextBatch;
use crate::data::classify::{
    encode_texts, text_batches, tokenize, LabelledText, Labels, WordVocab,
};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::models::textcnn::{evaluate, StepReport, TextCnnModel};
use crate::nn::textcnn::TextCnnConfig;
use crate::nn::Parameters;
use crate::optim::OptimizerConfig;
use crate::parallel::{Collective, SingleProcess};
use crate::rng::Rng;
use crate::train::metrics::{EpochMetrics, MetricsFile};
use crate::train::parallel::{
    check_batch_fits, describe_replicas, first_device, DataParallel, ExchangeTotals, Replica,
    ShareReport,
};
use crate::train::progress::Progress;
use crate::train::{first_resumed_epoch, resume_optimizer, training_number};

/// Everything `train-cnn` needs to know.
pub struct CnnTraining {
    /// The training examples. A new model takes its vocabulary and class names from them.
    pub train: Vec<LabelledText>,
    /// The validation examples, measured after each epoch; their labels must be among the
    /// training ones (an error otherwise), unknown words are read as the unknown token.
    pub valid: Vec<LabelledText>,
    /// Describes the data in the checkpoint (the task and its options, or the files).
    pub data_description: Value,
    /// The width of a word's embedding vector.
    pub embed: usize,
    /// The n-gram widths of the convolutions, one convolution each (e.g. `[3, 4, 5]`).
    pub widths: Vec<usize>,
    /// Output channels (filters) of each convolution.
    pub filters: usize,
    /// The update rule, learning rate, clipping and schedule.
    pub optimizer: OptimizerConfig,
    /// Texts per optimizer step.
    pub batch: usize,
    /// The last epoch to train, counted from the start of training: a run resumed after
    /// epoch 3 with `epochs` 5 trains epochs 4 and 5.
    pub epochs: usize,
    /// Seeds the initial weights and each epoch's shuffling.
    pub seed: u64,
    /// Saved after every epoch: the parameters, the optimizer's state and the epoch reached.
    pub save: Option<PathBuf>,
    /// A checkpoint of `save` to continue from: its model, vocabulary, class names,
    /// optimizer state and epoch (`embed`, `widths` and `filters` above are then unused).
    pub resume: Option<Checkpoint>,
    /// A file to append one JSON line of [`EpochMetrics`] to after each epoch.
    pub metrics: Option<PathBuf>,
}

/// What a training run reached.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CnnResult {
    /// The fraction of validation texts classified right after the last epoch.
    pub valid_accuracy: f64,
    /// The mean cross-entropy (nats) of the validation texts after the last epoch.
    pub valid_loss: f64,
    /// The best validation accuracy of any epoch.
    pub best_valid_accuracy: f64,
    /// Optimizer steps taken in all, those of a resumed checkpoint included.
    pub steps: u64,
    /// Wall-clock seconds this run took, validation included.
    pub seconds: f64,
    /// Training examples per second (validation excluded).
    pub examples_per_s: f64,
}

/// Trains a text CNN as `config` says on one device, reporting progress on stderr.
pub fn train_cnn(gpu: &Gpu, config: &CnnTraining) -> Result<CnnResult> {
    train_cnn_parallel(std::slice::from_ref(gpu), &SingleProcess, config)
}

/// Trains a text CNN as `config` says, data-parallel: a replica on each of `gpus`, and on
/// those of every other process of `collective`. Each batch of texts is cut into one share
/// per replica of every process (so `config.batch` must be at least their number), the
/// replicas' gradients are summed and every replica applies the same update: the step one
/// device takes on the whole batch, up to the order of the sums. Process 0 alone prints
/// progress, validates (on its first device) and saves; the others follow it (their
/// result's validation figures stay empty).
pub fn train_cnn_parallel(
    gpus: &[Gpu],
    collective: &dyn Collective,
    config: &CnnTraining,
) -> Result<CnnResult> {
    let gpu = first_device("train-cnn", gpus)?;
    let leader = collective.rank() == 0;
    check_batch_fits("train-cnn", (config.batch, "texts"), gpus.len(), collective)?;
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
    let (mut model, resumed) = match &config.resume {
        Some(checkpoint) => {
            let model = TextCnnModel::from_checkpoint(gpu, checkpoint)?;
            // An older checkpoint's optimizer state, moved to where the model keeps it now.
            let checkpoint = model.upgrade_checkpoint(checkpoint)?;
            (model, Some(checkpoint))
        }
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
            (
                TextCnnModel::new(gpu, model_config, vocab, labels, config.seed)?,
                None,
            )
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
    let mut optimizer = model.parameters.optimizer(config.optimizer)?;
    let mut first_epoch = 1;
    let mut best = 0.0f64;
    if let Some(checkpoint) = &resumed {
        resume_optimizer(gpu, &mut optimizer, checkpoint, "train-cnn")?;
        first_epoch = first_resumed_epoch(checkpoint, Some(config.epochs), "train-cnn")?;
        best = training_number(checkpoint, "best_valid_accuracy").unwrap_or(0.0);
        if leader {
            note!(
                "resuming from {} after epoch {}; the model, its vocabulary and classes come \
                 from the checkpoint",
                checkpoint.path.display(),
                first_epoch - 1
            );
        }
    }
    let mut parallel = if gpus.len() * collective.size() > 1 {
        Some(DataParallel::new(
            "train-cnn",
            &model,
            &gpus[1..],
            (config.optimizer, resumed.as_ref()),
            collective,
            |_, gpu| {
                TextCnnModel::new(
                    gpu,
                    model.config.clone(),
                    model.vocab.clone(),
                    model.labels.clone(),
                    config.seed,
                )
            },
        )?)
    } else {
        None
    };
    let mut metrics = match &config.metrics {
        Some(path) if leader => Some(MetricsFile::open(path)?),
        _ => None,
    };
    let longest = train.iter().map(|t| t.ids.len()).max().unwrap_or(0);
    if leader {
        note!(
            "text CNN, embedding {}, widths {:?} of {} filters: {} parameters; {} training and {} \
         validation texts (longest {longest} words), {} words, classes {:?}{}",
            model.config.embed,
            model.config.widths,
            model.config.filters,
            model.parameters.numel(),
            train.len(),
            valid.len(),
            model.vocab.len(),
            model.labels.names(),
            describe_replicas(gpus.len(), collective, config.batch),
        );
    }

    let steps_per_epoch = train.len().div_ceil(config.batch) as u64;
    let epochs_left = (config.epochs + 1).saturating_sub(first_epoch);
    // Only process 0 draws progress; the others train silently beside it.
    let mut progress =
        leader.then(|| Progress::stderr(steps_per_epoch * epochs_left as u64, config.epochs, "ex"));
    let started = Instant::now();
    let (mut train_examples, mut train_seconds) = (0usize, 0.0f64);
    let mut step = optimizer.current_step();
    let mut last = (0.0, 0.0);
    // The display keeps the last validation accuracy beside the running loss.
    let mut shown_accuracy: Option<f64> = None;
    for epoch in first_epoch..=config.epochs {
        if let Some(progress) = progress.as_mut() {
            progress.start_epoch(epoch);
        }
        let epoch_seed = config.seed ^ Rng::new(epoch as u64).next_u64();
        let batches = text_batches(
            &train,
            config.batch,
            model.config.widest(),
            Some(epoch_seed),
        )?;
        let (mut loss_sum, mut seen, mut correct) = (0.0f64, 0usize, 0usize);
        let epoch_start = Instant::now();
        let mut exchange = ExchangeTotals::default();
        for batch in &batches {
            step += 1;
            let report = match parallel.as_mut() {
                Some(parallel) => {
                    let (report, _) = parallel.step(
                        &mut model,
                        &mut optimizer,
                        batch,
                        (config.seed, step),
                        false,
                        &mut exchange,
                    )?;
                    StepReport {
                        loss: report.loss,
                        examples: report.items,
                        correct: report.correct,
                    }
                }
                None => {
                    optimizer.prepare_step(step)?;
                    model.train_step(batch, optimizer.dispatches())?
                }
            };
            if !report.loss.is_finite() {
                if let Some(progress) = progress.as_mut() {
                    progress.finish();
                }
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
            if let Some(progress) = progress.as_mut() {
                progress.advance(report.examples as u64, &shown);
            }
        }
        let epoch_seconds = epoch_start.elapsed().as_secs_f64();
        train_examples += seen;
        train_seconds += epoch_seconds;
        if let Some(parallel) = &parallel {
            parallel.resynchronize(&model)?;
        }
        // Process 0 validates, reports and saves.
        if let Some(progress) = progress.as_mut() {
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
            if let Some(parallel) = &parallel {
                progress.message(&format!(
                    "  {}",
                    exchange.describe(parallel.replicas_in_all())
                ));
            }
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
                let record = match &parallel {
                    Some(_) => exchange.recorded(record),
                    None => record,
                };
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
    }
    if let Some(progress) = progress.as_mut() {
        progress.finish();
    }
    Ok(CnnResult {
        valid_accuracy: last.1,
        valid_loss: last.0,
        best_valid_accuracy: best,
        steps: step,
        seconds: started.elapsed().as_secs_f64(),
        examples_per_s: train_examples as f64 / train_seconds.max(1e-9),
    })
}

impl Replica for TextCnnModel {
    type Batch = TextBatch;

    fn shares(batch: &TextBatch, parts: usize) -> Result<Vec<TextBatch>> {
        batch.shards(parts)
    }

    fn items(batch: &TextBatch) -> usize {
        batch.real
    }

    fn parameters(&self) -> &Parameters {
        &self.parameters
    }

    fn gradients(&mut self, share: &TextBatch, _dropout_seed: u32) -> Result<ShareReport> {
        let report = self.train_step(share, &[])?;
        Ok(ShareReport {
            loss: report.loss,
            items: report.examples,
            correct: report.correct,
        })
    }
}
