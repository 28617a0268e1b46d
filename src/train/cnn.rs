//! `shadergrad train-cnn`: trains a [`TextCnnModel`] on labelled texts (a built-in task or
//! the user's TSV), and saves it after every epoch.

use std::path::PathBuf;
use std::time::Instant;

use serde_json::{json, Value};

use crate::checkpoint::Checkpoint;
use crate::data::classify::{
    encode_texts, text_batches, tokenize, LabelledText, Labels, WordVocab,
};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::models::textcnn::{evaluate, TextCnnModel};
use crate::nn::textcnn::TextCnnConfig;
use crate::optim::OptimizerConfig;
use crate::rng::Rng;
use crate::train::metrics::{EpochMetrics, MetricsFile};
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
        model.parameters.numel(),
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
