//! `shadergrad train-seq2seq`: trains a [`Seq2SeqModel`] with teacher forcing on batches
//! bucketed by length, until the validation figure it selects by (exact match by default;
//! loss, token error rate, BLEU or chrF) stops improving, and saves the best.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::checkpoint::Checkpoint;
use crate::data::text::SeqBatch;
use crate::data::text::{bucketed_batches, Bucketing, EncodedPair, Pair};
use crate::data::tokens::{PairVocab, PairVocabSpec, TokenVocab};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::models::seq2seq::{dropout_seed, evaluate, rounded, Scores, Seq2SeqModel, StepReport};
use crate::nn::seq2seq::{Architecture, Seq2SeqConfig};
use crate::nn::Parameters;
use crate::optim::{OptimizerConfig, Schedule};
use crate::parallel::{Collective, SingleProcess};
use crate::train::metrics::{EpochMetrics, MetricsFile};
use crate::train::parallel::{
    check_batch_fits, describe_replicas, first_device, leaders_choice, DataParallel,
    ExchangeTotals, Replica, ShareReport,
};
use crate::train::progress::Progress;
use crate::train::{first_resumed_epoch, resume_optimizer, training_number};

/// Everything `train-seq2seq` needs to know.
pub struct Seq2SeqTraining {
    /// The training pairs. A new model takes its vocabulary and length limits from them
    /// (and from `valid`).
    pub train: Vec<Pair>,
    /// The validation pairs, decoded greedily after each epoch for the exact-match score;
    /// no longer than the model's limits (an error otherwise).
    pub valid: Vec<Pair>,
    /// Describes the data in the checkpoint (the task and its options, or the files).
    pub data_description: Value,
    /// The architecture; its vocabulary sizes are set from the pairs (unused when
    /// resuming).
    pub model: Seq2SeqConfig,
    /// How a new model's vocabularies are learned from the training pairs (unused when
    /// resuming: the checkpoint's are kept).
    pub tokens: PairVocabSpec,
    /// The update rule, learning rate and clipping; `lr_decay` and `warmup` add a schedule.
    pub optimizer: OptimizerConfig,
    /// The learning rate is multiplied by this after each epoch (1: constant).
    pub lr_decay: f64,
    /// Steps of linear learning-rate warm-up (0: none).
    pub warmup: u64,
    /// Pairs per optimizer step, batched with others of similar length.
    pub batch: usize,
    /// How many epochs to train.
    pub epochs: Epochs,
    /// Stop once this much time has passed: the epoch under way ends after its current
    /// batch, and is validated (and saved if better).
    pub max_minutes: Option<f64>,
    /// Seeds the initial weights, each epoch's batching and the dropout masks.
    pub seed: u64,
    /// Saved whenever validation exact-match improves: the parameters, the optimizer's state
    /// and the epoch reached.
    pub save: Option<PathBuf>,
    /// A checkpoint to continue from: its model, vocabulary and optimizer state.
    pub resume: Option<Checkpoint>,
    /// A file to append one JSON line of [`EpochMetrics`] to after each epoch (exact-match as
    /// `val_accuracy`).
    pub metrics: Option<PathBuf>,
    /// Validation examples printed after each epoch.
    pub samples: usize,
    /// What "validation improved" means, for saving and early stopping.
    pub select: Selection,
}

/// What "validation improved" means: the figure that decides saving and early stopping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Selection {
    /// Exact match, higher being better: for tasks with one right answer.
    #[default]
    ExactMatch,
    /// The teacher-forced loss, lower being better.
    Loss,
    /// The token error rate, lower being better: for transcription.
    TokenErrorRate,
    /// BLEU, higher being better: for translation.
    Bleu,
    /// chrF, higher being better: for translation, kinder to morphology than BLEU.
    Chrf,
}

impl Selection {
    /// The name `--select` takes and checkpoints record: exact, loss, ter, bleu, chrf.
    pub fn name(self) -> &'static str {
        match self {
            Selection::ExactMatch => "exact",
            Selection::Loss => "loss",
            Selection::TokenErrorRate => "ter",
            Selection::Bleu => "bleu",
            Selection::Chrf => "chrf",
        }
    }

    /// The figure in words: exact-match, loss, token error rate, BLEU, chrF.
    pub fn describe(self) -> &'static str {
        match self {
            Selection::ExactMatch => "exact-match",
            Selection::Loss => "loss",
            Selection::TokenErrorRate => "token error rate",
            Selection::Bleu => "BLEU",
            Selection::Chrf => "chrF",
        }
    }

    /// The selection called `name` ([`Selection::name`]).
    pub fn parse(name: &str) -> Option<Selection> {
        [
            Selection::ExactMatch,
            Selection::Loss,
            Selection::TokenErrorRate,
            Selection::Bleu,
            Selection::Chrf,
        ]
        .into_iter()
        .find(|s| s.name() == name)
    }

    /// The figure this selection reads from an epoch's validation.
    pub fn figure(self, scores: &Scores, loss: f64) -> f64 {
        match self {
            Selection::ExactMatch => scores.exact_match,
            Selection::Loss => loss,
            Selection::TokenErrorRate => scores.token_error_rate,
            Selection::Bleu => scores.bleu,
            Selection::Chrf => scores.chrf,
        }
    }

    /// Whether `now` is better than `best` (anything but NaN beats no figure yet).
    pub fn improves(self, now: f64, best: Option<f64>) -> bool {
        let lower_is_better = matches!(self, Selection::Loss | Selection::TokenErrorRate);
        match best {
            _ if now.is_nan() => false,
            None => true,
            Some(best) if lower_is_better => now < best,
            Some(best) => now > best,
        }
    }
}

/// How long a run trains; `max_minutes` caps either.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Epochs {
    /// Up to and including this epoch (a resumed checkpoint's epochs count).
    Fixed(usize),
    /// Until validation exact-match has not improved for `patience` epochs in a row, or
    /// every validation example is right.
    UntilNoImprovement {
        /// Epochs without improvement before stopping (at least 1).
        patience: usize,
    },
}

impl Epochs {
    /// The last epoch of a fixed count; `None` when training until no improvement.
    pub fn fixed(self) -> Option<usize> {
        match self {
            Epochs::Fixed(epochs) => Some(epochs),
            Epochs::UntilNoImprovement { .. } => None,
        }
    }
}

/// Why training stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The fixed number of epochs was trained.
    EpochsDone,
    /// The selected validation figure did not improve for `patience` epochs (only without a
    /// fixed number of epochs).
    NoImprovement,
    /// Every validation example is right: nothing left to improve (only without a fixed
    /// number of epochs).
    Perfect,
    /// `max_minutes` passed.
    TimeCap,
}

/// What a training run reached.
#[derive(Debug, Clone)]
pub struct Seq2SeqResult {
    /// The last epoch trained, counted from the start of training (a resumed checkpoint's
    /// epochs included).
    pub epochs: usize,
    /// Optimizer steps taken in all, those of a resumed checkpoint included.
    pub steps: u64,
    /// Wall-clock seconds this run took, validation included.
    pub seconds: f64,
    /// The best fraction of validation pairs decoded exactly right (greedy decoding) in
    /// this run.
    pub best_exact_match: f64,
    /// The figure selected by and its best value, the resumed checkpoint's included
    /// (`None` if no epoch was validated).
    pub best: (Selection, Option<f64>),
    /// Seconds from the start until validation exact-match first reached 99%.
    pub seconds_to_99: Option<f64>,
    /// Target tokens per second of training (validation excluded).
    pub tokens_per_s: f64,
    /// Why it stopped.
    pub stop: Stop,
}

/// Trains a model as `config` says on one device, reporting progress on stderr.
pub fn train_seq2seq(gpu: &Gpu, config: &Seq2SeqTraining) -> Result<Seq2SeqResult> {
    train_seq2seq_parallel(std::slice::from_ref(gpu), &SingleProcess, config)
}

/// Trains a model as `config` says, data-parallel: a replica on each of `gpus` (two may be
/// the same adapter, opened twice), and on those of every other process of `collective`.
/// Each batch is cut into one share per replica of every process (so `config.batch` must
/// be at least their number), each replica computes its share's gradients, the gradients
/// are summed ([`crate::parallel::GradientSum`]), and every replica applies the same update: the step one
/// device takes on the whole batch, up to the order of the sums. Process 0 alone prints
/// progress, validates (on its first device), saves and decides when to stop; the others
/// follow it. With one device and [`SingleProcess`], [`train_seq2seq`].
pub fn train_seq2seq_parallel(
    gpus: &[Gpu],
    collective: &dyn Collective,
    config: &Seq2SeqTraining,
) -> Result<Seq2SeqResult> {
    let gpu = first_device("train-seq2seq", gpus)?;
    let leader = collective.rank() == 0;
    let shares = gpus.len() * collective.size();
    check_batch_fits(
        "train-seq2seq",
        (config.batch, "pairs"),
        gpus.len(),
        collective,
    )?;
    if config.batch == 0
        || config.epochs == Epochs::Fixed(0)
        || config.train.is_empty()
        || config.valid.is_empty()
    {
        return Err(Error::invalid(
            "train-seq2seq",
            format!(
                "needs a batch ({}) and epochs ({}) of at least 1, and training ({}) and \
                 validation ({}) pairs",
                config.batch,
                config
                    .epochs
                    .fixed()
                    .map_or("until no improvement".to_string(), |e| e.to_string()),
                config.train.len(),
                config.valid.len()
            ),
        ));
    }
    config.optimizer.validate()?;
    let (mut model, resumed) = match &config.resume {
        Some(checkpoint) => {
            let model = Seq2SeqModel::from_checkpoint(gpu, checkpoint)?;
            // An older checkpoint's optimizer state, moved to where the model keeps it now.
            let checkpoint = model.upgrade_checkpoint(checkpoint)?;
            (model, Some(checkpoint))
        }
        None => {
            let vocab = PairVocab::learn(&config.train, config.tokens)?;
            let mut encoded = vocab.encode(&config.train).0;
            encoded.extend(vocab.encode(&config.valid).0);
            let limits = crate::data::text::longest(&encoded);
            let model_config = Seq2SeqConfig {
                source_vocab_size: vocab.source.len(),
                target_vocab_size: vocab.target.len(),
                ..config.model.clone()
            };
            model_config
                .training_memory(config.batch, limits.0, limits.1)?
                .check("train-seq2seq", gpu.max_buffer_bytes())?;
            (
                Seq2SeqModel::new(gpu, model_config, vocab, limits, config.seed)?,
                None,
            )
        }
    };
    if resumed.is_some() {
        model
            .config
            .training_memory(config.batch, model.max_source, model.max_target)?
            .check("train-seq2seq", gpu.max_buffer_bytes())?;
    }
    let train = encode_checked(&model, &config.train, "training")?;
    let valid = encode_checked(&model, &config.valid, "validation")?;

    let steps_per_epoch = train.len().div_ceil(config.batch) as u64;
    let optimizer_config = if config.lr_decay < 1.0 || config.warmup > 0 {
        config.optimizer.with_schedule(Schedule::WarmupStepDecay {
            warmup: config.warmup,
            every: steps_per_epoch,
            gamma: config.lr_decay,
        })
    } else {
        config.optimizer
    };
    let mut optimizer = model.parameters.optimizer(optimizer_config)?;
    let mut start_epoch = 1;
    let select = config.select;
    let mut best: Option<f64> = None;
    if let Some(checkpoint) = &resumed {
        let step = resume_optimizer(gpu, &mut optimizer, checkpoint, "train-seq2seq")?;
        start_epoch = first_resumed_epoch(checkpoint, config.epochs.fixed(), "train-seq2seq")?;
        best = resumed_best(checkpoint, select);
        if leader {
            note!(
                "resuming from {} after epoch {} (step {step}, best {}: {}); the model, its \
             vocabularies and length limits come from the checkpoint",
                checkpoint.path.display(),
                start_epoch - 1,
                select.describe(),
                best.map_or("none recorded".to_string(), |b| format!("{b:.4}"))
            );
        }
    }
    let mut parallel = if shares > 1 {
        Some(DataParallel::new(
            "train-seq2seq",
            &model,
            &gpus[1..],
            (optimizer_config, resumed.as_ref()),
            collective,
            |_, gpu| {
                Seq2SeqModel::new(
                    gpu,
                    model.config.clone(),
                    model.vocab.clone(),
                    (model.max_source, model.max_target),
                    config.seed,
                )
            },
        )?)
    } else {
        None
    };
    let mut best_exact_match: f64 = 0.0;
    let mut metrics = match &config.metrics {
        Some(path) if leader => Some(MetricsFile::open(path)?),
        _ => None,
    };
    let bucketing = Bucketing {
        batch: config.batch,
        round_to: 1,
        pad_last: true,
    };
    let layers = format!("{}-layer", model.config.layers);
    let architecture = match model.config.architecture {
        Architecture::Transformer(shape) => format!(
            "Transformer {layers} encoder-decoder, d_model {}, {} heads, feed-forward {}, \
             dropout {}",
            shape.width, shape.heads, shape.ff, shape.dropout
        ),
        Architecture::Recurrent(recurrent) => format!(
            "{} {layers} {} encoder-decoder, attention {}, hidden {}, embedding {}",
            recurrent.cell.name(),
            if recurrent.bidirectional {
                "bidirectional"
            } else {
                "unidirectional"
            },
            recurrent.attention.name(),
            recurrent.hidden,
            recurrent.embed,
        ),
    };
    if leader {
        note!(
            "{architecture}: {} parameters; {} training and {} validation pairs; {}{}",
            model.parameters.numel(),
            train.len(),
            valid.len(),
            describe_vocab(&model.vocab),
            describe_replicas(gpus.len(), collective, config.batch)
        );
    }

    let started = Instant::now();
    let cap = config
        .max_minutes
        .map(|m| Duration::from_secs_f64(m * 60.0));
    let out_of_time = || cap.is_some_and(|cap| started.elapsed() >= cap);
    let mut step = optimizer.current_step();
    let (mut train_tokens, mut train_seconds) = (0usize, 0.0f64);
    let mut since_best = 0;
    let mut seconds_to_99 = None;
    let mut epoch = start_epoch;
    let stop = loop {
        if config.epochs.fixed().is_some_and(|epochs| epoch > epochs) {
            break Stop::EpochsDone;
        }
        let batches =
            bucketed_batches(&train, &bucketing, Some(config.seed ^ (epoch as u64) << 20))?;
        // Only process 0 draws progress; the others train silently beside it.
        let mut progress = leader.then(|| {
            Progress::stderr(
                batches.len() as u64,
                config.epochs.fixed().unwrap_or(0),
                "tok",
            )
        });
        if let Some(progress) = progress.as_mut() {
            progress.start_epoch(epoch);
        }
        let (mut loss_sum, mut loss_tokens, mut correct) = (0.0f64, 0usize, 0usize);
        let mut timed_out = false;
        let epoch_start = Instant::now();
        let mut exchange = ExchangeTotals::default();
        for batch in batches {
            let batch = rounded(batch);
            step += 1;
            let report = match parallel.as_mut() {
                Some(parallel) => {
                    // Process 0's clock decides for every process, within the step's sum.
                    let stop_after = leader && out_of_time();
                    let (report, stop) = parallel.step(
                        &mut model,
                        &mut optimizer,
                        &batch,
                        (config.seed, step),
                        stop_after,
                        &mut exchange,
                    )?;
                    timed_out = stop;
                    StepReport {
                        loss: report.loss,
                        tokens: report.items,
                        correct: report.correct,
                    }
                }
                None => {
                    optimizer.prepare_step(step)?;
                    let report = model.train_step(
                        &batch,
                        dropout_seed(config.seed, step),
                        optimizer.dispatches(),
                    )?;
                    timed_out = out_of_time();
                    report
                }
            };
            if !report.loss.is_finite() {
                if let Some(progress) = progress.as_mut() {
                    progress.finish();
                }
                return Err(Error::invalid(
                    "train-seq2seq",
                    format!(
                        "the loss became {} at step {step} (epoch {epoch}); stopped there{}. Try \
                         a lower --lr or --clip",
                        report.loss,
                        match &config.save {
                            Some(path) if best.is_some() =>
                                format!(", {} keeps the last good checkpoint", path.display()),
                            _ => String::new(),
                        }
                    ),
                ));
            }
            loss_sum += f64::from(report.loss) * report.tokens as f64;
            loss_tokens += report.tokens;
            correct += report.correct;
            if let Some(progress) = progress.as_mut() {
                progress.advance(
                    report.tokens as u64,
                    &[
                        ("loss", loss_sum / loss_tokens.max(1) as f64),
                        ("tok_acc", correct as f64 / loss_tokens.max(1) as f64),
                    ],
                );
            }
            if timed_out {
                break;
            }
        }
        if let Some(progress) = progress.as_mut() {
            progress.finish();
        }
        train_tokens += loss_tokens;
        train_seconds += epoch_start.elapsed().as_secs_f64();
        if let Some(parallel) = &parallel {
            parallel.resynchronize(&model)?;
        }
        let tokens_per_s = loss_tokens as f64 / epoch_start.elapsed().as_secs_f64().max(1e-9);

        // Process 0 validates, reports and saves; its verdict reaches every process.
        let verdict = if leader {
            let (_, val_loss, outputs) = evaluate(&mut model, &valid, config.batch)?;
            let references: Vec<&str> = config.valid.iter().map(|p| p.target.as_str()).collect();
            let scores = Scores::of(&model.vocab.target, &outputs, &references)?;
            let exact = scores.exact_match;
            best_exact_match = best_exact_match.max(exact);
            if exact >= 0.99 && seconds_to_99.is_none() {
                seconds_to_99 = Some(started.elapsed().as_secs_f64());
            }
            note!(
                "epoch {epoch}: train loss {:.4}, token accuracy {:.4} | validation loss {val_loss:.4}, \
                 exact-match {exact:.4}, token error rate {:.4}, BLEU {:.2}, chrF {:.2} | \
                 {tokens_per_s:.0} tokens/s, {:.0} s so far",
                loss_sum / loss_tokens.max(1) as f64,
                correct as f64 / loss_tokens.max(1) as f64,
                scores.token_error_rate,
                scores.bleu,
                scores.chrf,
                started.elapsed().as_secs_f64()
            );
            if let Some(parallel) = &parallel {
                note!("  {}", exchange.describe(parallel.replicas_in_all()));
            }
            for (pair, output) in valid.iter().zip(&outputs).take(config.samples) {
                let (source, target, predicted) = (
                    model.vocab.source.decode(&pair.source),
                    model.vocab.target.decode(&pair.target),
                    model.vocab.target.decode(output),
                );
                let mark = if *output == pair.target {
                    "ok"
                } else {
                    "wrong"
                };
                note!("  {source:?} → {predicted:?} (expected {target:?}, {mark})");
            }
            if let Some(file) = metrics.as_mut() {
                let mut record = EpochMetrics {
                    epoch,
                    step,
                    elapsed_s: started.elapsed().as_secs_f64(),
                    train_loss: loss_sum / loss_tokens.max(1) as f64,
                    val_loss: Some(val_loss),
                    val_accuracy: Some(exact),
                    extra: Vec::new(),
                }
                .with(
                    "train_token_accuracy",
                    correct as f64 / loss_tokens.max(1) as f64,
                )
                .with("val_token_error_rate", scores.token_error_rate)
                .with("val_bleu", scores.bleu)
                .with("val_chrf", scores.chrf)
                .with("tokens_per_s", tokens_per_s)
                .with("lr", f64::from(optimizer.learning_rate(step)));
                if parallel.is_some() {
                    record = exchange.recorded(record);
                }
                file.append(&record)?;
            }
            let figure = select.figure(&scores, val_loss);
            if select.improves(figure, best) {
                best = Some(figure);
                since_best = 0;
                if let Some(path) = &config.save {
                    let training = json!({
                        "training": {
                            "epoch": epoch,
                            "steps": step,
                            "optimizer_step": optimizer.current_step(),
                            "selected_by": select.name(),
                            "best": figure,
                            "exact_match": exact,
                            "seed": config.seed,
                            "batch": config.batch,
                            "lr": config.optimizer.lr,
                            "warmup": config.warmup,
                            "optimizer": format!("{:?}", config.optimizer.rule),
                            "data": config.data_description,
                        }
                    });
                    model.save(path, Some(&optimizer), training)?;
                    note!(
                        "  saved {} ({} {figure:.4})",
                        path.display(),
                        select.describe()
                    );
                }
            } else {
                since_best += 1;
            }
            if timed_out || out_of_time() {
                Verdict::Stop(Stop::TimeCap)
            } else {
                match config.epochs {
                    Epochs::UntilNoImprovement { .. } if exact >= 1.0 => {
                        Verdict::Stop(Stop::Perfect)
                    }
                    Epochs::UntilNoImprovement { patience } if since_best >= patience => {
                        Verdict::Stop(Stop::NoImprovement)
                    }
                    _ => Verdict::Continue,
                }
            }
        } else {
            Verdict::Continue
        };
        if let Verdict::Stop(stop) = verdict.shared(collective)? {
            break stop;
        }
        epoch += 1;
    };
    Ok(Seq2SeqResult {
        epochs: epoch.min(config.epochs.fixed().unwrap_or(usize::MAX)),
        steps: step,
        seconds: started.elapsed().as_secs_f64(),
        best_exact_match,
        best: (select, best),
        seconds_to_99,
        tokens_per_s: train_tokens as f64 / train_seconds.max(1e-9),
        stop,
    })
}

/// What process 0 decided after an epoch's validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Continue,
    Stop(Stop),
}

impl Verdict {
    /// Process 0's verdict, on every process.
    fn shared(self, collective: &dyn Collective) -> Result<Verdict> {
        let code = match self {
            Verdict::Continue => 0,
            Verdict::Stop(Stop::EpochsDone) => 1,
            Verdict::Stop(Stop::NoImprovement) => 2,
            Verdict::Stop(Stop::Perfect) => 3,
            Verdict::Stop(Stop::TimeCap) => 4,
        };
        Ok(match leaders_choice(collective, code)? {
            0 => Verdict::Continue,
            1 => Verdict::Stop(Stop::EpochsDone),
            2 => Verdict::Stop(Stop::NoImprovement),
            3 => Verdict::Stop(Stop::Perfect),
            _ => Verdict::Stop(Stop::TimeCap),
        })
    }
}

impl Replica for Seq2SeqModel {
    type Batch = SeqBatch;

    fn shares(batch: &SeqBatch, parts: usize) -> Result<Vec<SeqBatch>> {
        batch.shards(parts)
    }

    fn items(batch: &SeqBatch) -> usize {
        batch.target_tokens()
    }

    fn parameters(&self) -> &Parameters {
        &self.parameters
    }

    fn gradients(&mut self, share: &SeqBatch, dropout_seed: u32) -> Result<ShareReport> {
        let report = self.train_step(share, dropout_seed, &[])?;
        Ok(ShareReport {
            loss: report.loss,
            items: report.tokens,
            correct: report.correct,
        })
    }
}

/// The best figure a checkpoint recorded for `select`: `best` when it was selected by the
/// same figure, or the older `best_exact_match`; `None` otherwise (the run then saves at its
/// first validation).
fn resumed_best(checkpoint: &Checkpoint, select: Selection) -> Option<f64> {
    let training = checkpoint.config.get("training")?;
    match training.get("selected_by").and_then(Value::as_str) {
        Some(by) if by == select.name() => training.get("best").and_then(Value::as_f64),
        Some(_) => None,
        None if select == Selection::ExactMatch => training_number(checkpoint, "best_exact_match"),
        None => None,
    }
}

/// The vocabularies in words: `source: 42 words, target: 2,000 bpe pieces` (or one shared).
fn describe_vocab(vocab: &PairVocab) -> String {
    let side = |v: &TokenVocab| {
        let unit = match v.level() {
            crate::data::tokens::TokenLevel::Char => "characters",
            crate::data::tokens::TokenLevel::Word => "words",
            crate::data::tokens::TokenLevel::Bpe => "subword pieces",
        };
        format!("{} {unit}", v.tokens().len())
    };
    if vocab.source == vocab.target {
        format!("one vocabulary of {} for both sides", side(&vocab.source))
    } else {
        format!(
            "vocabularies of {} (source) and {} (target)",
            side(&vocab.source),
            side(&vocab.target)
        )
    }
}

/// Encodes pairs with the model's vocabularies, refusing sequences longer than its limits
/// and warning (once per side) about tokens it does not know.
fn encode_checked(model: &Seq2SeqModel, pairs: &[Pair], what: &str) -> Result<Vec<EncodedPair>> {
    let (encoded, unknown) = model.vocab.encode(pairs);
    for (side, tokens) in [("source", &unknown.source), ("target", &unknown.target)] {
        if !tokens.is_empty() {
            note!(
                "warning: {} {what} {side} tokens are not in the model's vocabulary and become \
                 UNK: {}",
                tokens.len(),
                list_tokens(tokens)
            );
        }
    }
    for (i, pair) in encoded.iter().enumerate() {
        if pair.source.len() > model.max_source || pair.target.len() > model.max_target {
            return Err(Error::invalid(
                "train-seq2seq",
                format!(
                    "{what} pair {} has a source of {} and a target of {} tokens; the model \
                     takes at most {} and {}",
                    i + 1,
                    pair.source.len(),
                    pair.target.len(),
                    model.max_source,
                    model.max_target
                ),
            ));
        }
    }
    Ok(encoded)
}

/// Up to 20 tokens, quoted, then how many more.
fn list_tokens(tokens: &[String]) -> String {
    const SHOWN: usize = 20;
    let mut listed: Vec<String> = tokens
        .iter()
        .take(SHOWN)
        .map(|t| format!("{t:?}"))
        .collect();
    if tokens.len() > SHOWN {
        listed.push(format!("and {} more", tokens.len() - SHOWN));
    }
    listed.join(", ")
}
