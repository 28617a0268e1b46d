//! `shadergrad train-lm`: trains a [`CharLmModel`] on windows of a text to predict each next
//! character, printing samples after each epoch, and saves the best.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::checkpoint::Checkpoint;
use crate::data::corpus::LmBatch;
use crate::data::corpus::{lm_batches, split_text, unigram_perplexity};
use crate::data::text::Vocab;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::models::charlm::StepReport;
use crate::models::charlm::{evaluate, CharLmModel};
use crate::nn::charlm::CharLmConfig;
use crate::nn::Parameters;
use crate::optim::OptimizerConfig;
use crate::parallel::{Collective, SingleProcess};
use crate::rng::Rng;
use crate::train::metrics::{EpochMetrics, MetricsFile};
use crate::train::parallel::{
    check_batch_fits, describe_replicas, first_device, leaders_choice, DataParallel,
    ExchangeTotals, Replica, ShareReport,
};
use crate::train::progress::Progress;
use crate::train::{first_resumed_epoch, resume_optimizer, training_number};

/// The share of the text read for training; the rest validates.
pub const TRAIN_FRACTION: f64 = 0.9;

/// Temperature of the samples printed after each epoch.
pub const EPOCH_SAMPLE_TEMPERATURE: f64 = 0.8;

/// Everything `train-lm` needs to know.
pub struct LmTraining {
    /// The whole text: its first [`TRAIN_FRACTION`] trains, the rest validates.
    pub text: String,
    /// Where the text came from, for messages and the checkpoint.
    pub text_name: String,
    /// The architecture; its vocabulary size is set from the text.
    pub model: CharLmConfig,
    /// The update rule, learning rate, clipping and schedule.
    pub optimizer: OptimizerConfig,
    /// Windows per optimizer step (the batch size).
    pub batch: usize,
    /// Characters per window: how many steps backpropagation through time unrolls, each
    /// predicting the character after it.
    pub steps: usize,
    /// The last epoch to train, counted from the start of training: a run resumed after
    /// epoch 3 with `epochs` 5 trains epochs 4 and 5.
    pub epochs: usize,
    /// Seeds the initial weights, each epoch's window offsets and order, and the samples.
    pub seed: u64,
    /// Saved whenever the validation perplexity improves: the parameters, the optimizer's
    /// state and the epoch reached.
    pub save: Option<PathBuf>,
    /// A checkpoint of `save` to continue from: its model, vocabulary, optimizer state and
    /// epoch (`model` above is then unused; the text must only use its characters).
    pub resume: Option<Checkpoint>,
    /// A file to append one JSON line of [`EpochMetrics`] to after each epoch.
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
    /// Every epoch asked for was trained.
    EpochsDone,
    /// `patience` epochs passed without a better validation perplexity.
    NoImprovement,
    /// `max_minutes` passed.
    TimeCap,
}

/// What a training run reached.
#[derive(Debug, Clone)]
pub struct LmResult {
    /// Optimizer steps taken in all, those of a resumed checkpoint included.
    pub steps: u64,
    /// Wall-clock seconds this run took, validation and sampling included.
    pub seconds: f64,
    /// Epochs trained by this run (not counting those of a resumed checkpoint).
    pub epochs: usize,
    /// Why it stopped.
    pub stop: LmStop,
    /// The lowest validation perplexity reached (the exponential of the mean loss per
    /// character, in nats), the resumed checkpoint's included; 1 would be a perfect model,
    /// the vocabulary size a uniform guess.
    pub best_val_perplexity: f64,
    /// The perplexity of character frequencies alone on the validation text.
    pub unigram_perplexity: f64,
    /// Characters per second of training (validation and sampling excluded).
    pub chars_per_s: f64,
}

/// Trains a model as `config` says on one device, reporting progress on stderr.
pub fn train_lm(gpu: &Gpu, config: &LmTraining) -> Result<LmResult> {
    train_lm_parallel(std::slice::from_ref(gpu), &SingleProcess, config)
}

/// Trains a model as `config` says, data-parallel: a replica on each of `gpus`, and on
/// those of every other process of `collective`. Each batch of windows is cut into one
/// share per replica of every process (so `config.batch` must be at least their number),
/// the replicas' gradients are summed and every replica applies the same update: the step
/// one device takes on the whole batch, up to the order of the sums. Process 0 alone
/// prints progress and samples, validates (on its first device), saves and decides when
/// to stop; the others follow it (their result's validation figures stay empty).
pub fn train_lm_parallel(
    gpus: &[Gpu],
    collective: &dyn Collective,
    config: &LmTraining,
) -> Result<LmResult> {
    let gpu = first_device("train-lm", gpus)?;
    let leader = collective.rank() == 0;
    check_batch_fits(
        "train-lm",
        (config.batch, "windows"),
        gpus.len(),
        collective,
    )?;
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
    let (mut model, resumed) = match &config.resume {
        Some(checkpoint) => {
            let model = CharLmModel::from_checkpoint(gpu, checkpoint)?;
            // An older checkpoint's optimizer state, moved to where the model keeps it now.
            let checkpoint = model.upgrade_checkpoint(checkpoint)?;
            (model, Some(checkpoint))
        }
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
            (
                CharLmModel::new(gpu, model_config, vocab, config.seed)?,
                None,
            )
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
    let mut optimizer = model.parameters.optimizer(config.optimizer)?;
    let mut first_epoch = 1;
    let mut best = f64::INFINITY;
    if let Some(checkpoint) = &resumed {
        resume_optimizer(gpu, &mut optimizer, checkpoint, "train-lm")?;
        first_epoch = first_resumed_epoch(checkpoint, Some(config.epochs), "train-lm")?;
        best = training_number(checkpoint, "val_perplexity").map_or(f64::INFINITY, f64::ln);
        if leader {
            note!(
                "resuming from {} after epoch {}; the model and its vocabulary come from the \
                 checkpoint",
                checkpoint.path.display(),
                first_epoch - 1
            );
        }
    }
    let mut parallel = if gpus.len() * collective.size() > 1 {
        Some(DataParallel::new(
            "train-lm",
            &model,
            &gpus[1..],
            (config.optimizer, resumed.as_ref()),
            collective,
            |_, gpu| CharLmModel::new(gpu, model.config.clone(), model.vocab.clone(), config.seed),
        )?)
    } else {
        None
    };
    let mut metrics = match &config.metrics {
        Some(path) if leader => Some(MetricsFile::open(path)?),
        _ => None,
    };
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
    if leader {
        note!(
            "{} {}-layer{} character language model, hidden {}, embedding {}: {} parameters; {} \
         training and {} validation characters of {}, vocabulary of {} characters; windows of \
         {} steps, batch {}; unigram perplexity {unigram:.2}{}",
            model.config.cell.name(),
            model.config.layers,
            if model.config.layers == 1 { "" } else { "s" },
            model.config.hidden,
            model.config.embed,
            model.parameters.numel(),
            train.len(),
            valid.len(),
            config.text_name,
            model.vocab.chars().len(),
            config.steps,
            config.batch,
            describe_replicas(gpus.len(), collective, config.batch),
        );
    }

    let started = Instant::now();
    let cap = config
        .max_minutes
        .map(|m| Duration::from_secs_f64(m * 60.0));
    let windows_per_epoch = (train.len() - 1).div_ceil(config.steps);
    let epochs_left = (config.epochs + 1).saturating_sub(first_epoch);
    // Only process 0 draws progress; the others train silently beside it.
    let mut progress = leader.then(|| {
        Progress::stderr(
            (windows_per_epoch.div_ceil(config.batch) * epochs_left) as u64,
            config.epochs,
            "char",
        )
    });
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
        if let Some(progress) = progress.as_mut() {
            progress.start_epoch(epoch);
        }
        let (mut loss_sum, mut tokens) = (0.0f64, 0usize);
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
                        tokens: report.items,
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
            if let Some(progress) = progress.as_mut() {
                progress.advance(
                    report.tokens as u64,
                    &[("loss", loss_sum / tokens.max(1) as f64)],
                );
            }
        }
        let epoch_seconds = epoch_start.elapsed().as_secs_f64();
        train_chars_seen += tokens;
        train_seconds += epoch_seconds;
        if let Some(parallel) = &parallel {
            parallel.resynchronize(&model)?;
        }
        let chars_per_s = tokens as f64 / epoch_seconds.max(1e-9);
        let train_loss = loss_sum / tokens.max(1) as f64;
        epochs_run += 1;
        // Process 0 validates, reports and saves; its verdict reaches every process.
        let verdict = if let Some(progress) = progress.as_mut() {
            let (val_loss, val_accuracy) = evaluate(&mut model, &valid_batches)?;
            let val_perplexity = val_loss.exp();
            progress.message(&format!(
                "epoch {epoch}: train loss {train_loss:.4} (perplexity {:.2}) | validation loss \
                 {val_loss:.4}, perplexity {val_perplexity:.2}, next-character accuracy \
                 {val_accuracy:.4} | {chars_per_s:.0} chars/s, {:.0} s so far",
                train_loss.exp(),
                started.elapsed().as_secs_f64()
            ));
            if let Some(parallel) = &parallel {
                progress.message(&format!(
                    "  {}",
                    exchange.describe(parallel.replicas_in_all())
                ));
            }
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
                let record = match &parallel {
                    Some(_) => exchange.recorded(record),
                    None => record,
                };
                file.append(&record)?;
            }
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
                Some(LmStop::NoImprovement)
            } else if cap.is_some_and(|cap| started.elapsed() >= cap) {
                Some(LmStop::TimeCap)
            } else {
                None
            }
        } else {
            None
        };
        // Process 0's verdict is to go on, or to stop for want of improvement or of time.
        let code = match verdict {
            None => 0,
            Some(LmStop::NoImprovement) => 1,
            Some(_) => 2,
        };
        stop = match leaders_choice(collective, code)? {
            0 => continue,
            1 => LmStop::NoImprovement,
            _ => LmStop::TimeCap,
        };
        break;
    }
    if let Some(progress) = progress.as_mut() {
        progress.finish();
    }
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

impl Replica for CharLmModel {
    type Batch = LmBatch;

    fn shares(batch: &LmBatch, parts: usize) -> Result<Vec<LmBatch>> {
        batch.shards(parts)
    }

    fn items(batch: &LmBatch) -> usize {
        batch.tokens
    }

    fn parameters(&self) -> &Parameters {
        &self.parameters
    }

    fn gradients(&mut self, share: &LmBatch, _dropout_seed: u32) -> Result<ShareReport> {
        let report = self.train_step(share, &[])?;
        Ok(ShareReport {
            loss: report.loss,
            items: report.tokens,
            correct: report.correct,
        })
    }
}
