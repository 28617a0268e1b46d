//! `shadergrad train-seq2seq`, `translate` and `evaluate`: the RNN and Transformer
//! encoder-decoders.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use clap::Args;
use serde_json::json;
use shadergrad::data::text::{read_tsv, split_pairs, SPECIAL_TOKENS};
use shadergrad::data::tokens::{PairVocabSpec, Sharing, TokenLevel, VocabLimits};
use shadergrad::models::seq2seq::{Scores, Seq2SeqModel};
use shadergrad::nn::seq2seq::{Architecture, RecurrentConfig, Seq2SeqConfig};
use shadergrad::nn::transformer::TransformerConfig;
use shadergrad::optim::OptimizerConfig;
use shadergrad::train::seq2seq::{
    train_seq2seq_parallel, Epochs, Selection, Seq2SeqTraining, Stop,
};
use shadergrad::{AdapterSelector, Error};

use super::choice::{self, typed_name};
use super::parallel::{run_training, ParallelArgs, Placement};
use super::{
    check_output_path, check_resume_agrees, check_training_files, finite_f32, finite_f64, open_gpu,
    print_progress, print_warnings, stdout_error, Typed,
};

/// `train-seq2seq --arch transformer`'s default drop probability: none, since dropout 0.1
/// slowed training on the default task (see README) and the held-out pairs did not need it.
const TRANSFORMER_DROPOUT: f32 = 0.0;

/// `train-seq2seq --arch transformer`'s default warm-up, in steps.
const TRANSFORMER_WARMUP: u64 = 400;

#[derive(Args)]
#[command(allow_negative_numbers = true)]
pub(crate) struct TrainSeq2seqArgs {
    /// A built-in task, generated from the seed: addition ("535+61" → "596"), reverse,
    /// sort, or dates (written by people → ISO 8601).
    #[arg(long, value_enum, default_value_t = choice::SequenceTask::Addition, conflicts_with = "data")]
    task: choice::SequenceTask,
    /// Digits of each operand of the addition task.
    #[arg(long, default_value_t = 3)]
    digits: usize,
    /// Write the addition task's source reversed ("16+535" for "535+61").
    #[arg(long)]
    reverse_input: bool,
    /// Training pairs generated for a built-in task.
    #[arg(long, default_value_t = 50_000)]
    train_size: usize,
    /// Held-out validation pairs generated for a built-in task.
    #[arg(long, default_value_t = 1_000)]
    valid_size: usize,
    /// Your own pairs: source, a tab, target, per line.
    #[arg(long, value_name = "FILE.tsv")]
    data: Option<PathBuf>,
    /// Validation pairs for --data; without it, --valid-fraction of --data is held out.
    #[arg(long, value_name = "FILE.tsv", requires = "data")]
    valid: Option<PathBuf>,
    /// The share of --data held out for validation when --valid is not given.
    #[arg(value_parser = finite_f64, long, default_value_t = 0.1)]
    valid_fraction: f64,
    /// What a token of the sources is: a character, a word (punctuation marks apart) or a
    /// subword piece of byte-pair encoding learned from the training sources.
    #[arg(long, value_enum, default_value_t = choice::Tokens::Char)]
    source_tokens: choice::Tokens,
    /// What a token of the targets is (as --source-tokens).
    #[arg(long, value_enum, default_value_t = choice::Tokens::Char)]
    target_tokens: choice::Tokens,
    /// At most this many ids per vocabulary, the 4 special ones included: the most frequent
    /// tokens of the training pairs are kept, the rest read as UNK. By default, all.
    #[arg(long)]
    max_vocab: Option<usize>,
    /// How many merges byte-pair encoding learns at most (fewer when no pair of symbols
    /// occurs twice).
    #[arg(long, default_value_t = 8_000)]
    bpe_merges: usize,
    /// One vocabulary for both sides, learned from both (the token levels must agree),
    /// instead of one per side.
    #[arg(long)]
    shared_vocab: bool,
    /// The model: a recurrent encoder-decoder of rnn, gru or lstm cells, or a transformer.
    #[arg(long, value_enum, default_value_t = choice::Seq2SeqArch::Gru)]
    arch: choice::Seq2SeqArch,
    /// The transformer's attention heads (they divide --hidden, its d_model).
    #[arg(long, default_value_t = 4)]
    heads: usize,
    /// The width of the transformer's feed-forward layers.
    #[arg(long, default_value_t = 256)]
    ff: usize,
    /// The transformer's drop probability, in [0, 1), of its embeddings and of each
    /// block's output (training only): by default 0, which reaches 99% on the default task
    /// an epoch sooner than 0.1. Recurrent models take none.
    #[arg(value_parser = finite_f32, long)]
    dropout: Option<f32>,
    /// How the decoder looks at the encoder states.
    #[arg(long, value_enum, default_value_t = choice::Attention::Dot)]
    attention: choice::Attention,
    /// Units of each recurrent layer, or the transformer's d_model.
    #[arg(long, default_value_t = 64)]
    hidden: usize,
    /// Layers of the encoder and of the decoder: by default 1 recurrent layer, or 2
    /// transformer layers.
    #[arg(long)]
    layers: Option<usize>,
    /// Width of the token embeddings.
    #[arg(long, default_value_t = 32)]
    embed: usize,
    /// Read the source in both directions (true) or left to right only (false).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "true|false")]
    bidirectional: bool,
    /// Pairs per step: by default 128, or 64 for a transformer (twice the updates per epoch
    /// take it past its early plateau sooner).
    #[arg(long)]
    batch: Option<usize>,
    /// Train exactly this many epochs; by default, until validation exact-match stops
    /// improving for --patience epochs (or --max-minutes pass).
    #[arg(long)]
    epochs: Option<usize>,
    /// Epochs without a better validation exact-match before stopping early.
    #[arg(long, default_value_t = 3)]
    patience: usize,
    /// The learning rate: by default 0.01 for a recurrent model, 0.003 for a transformer
    /// (without a warm-up, Transformers want a lower rate than recurrent models).
    #[arg(value_parser = finite_f32, long)]
    lr: Option<f32>,
    /// Multiply the learning rate by this after each epoch (1: constant).
    #[arg(value_parser = finite_f64, long, default_value_t = 0.8)]
    lr_decay: f64,
    /// Steps over which the learning rate climbs linearly to --lr: by default 400 for a
    /// transformer (about half an epoch of the default task), 0 (none) for a recurrent model.
    #[arg(long)]
    warmup: Option<u64>,
    /// The update rule.
    #[arg(long, value_enum, default_value_t = choice::Optimizer::Adam)]
    optimizer: choice::Optimizer,
    /// Clip the gradients to this global norm (0: no clipping).
    #[arg(value_parser = finite_f32, long, default_value_t = 5.0)]
    clip: f32,
    /// Seeds the data, the initial weights and the batch order.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Stop after this many minutes (the epoch under way is evaluated and saved).
    #[arg(value_parser = finite_f64, long, default_value_t = 20.0)]
    max_minutes: f64,
    /// Save the model here whenever validation improves (one .safetensors file, holding its
    /// config and vocabulary too), with the optimizer state for --resume.
    #[arg(long, value_name = "FILE.safetensors")]
    save: Option<PathBuf>,
    /// Continue training from a checkpoint of --save (its architecture and vocabulary;
    /// architecture flags, if given, must agree with it).
    #[arg(long, value_name = "FILE.safetensors")]
    resume: Option<PathBuf>,
    /// Let --save replace a checkpoint that is already there (without it, an existing file
    /// is refused, unless it is the one --resume continues).
    #[arg(long)]
    overwrite: bool,
    /// Append one JSON line of metrics per epoch to this file.
    #[arg(long, value_name = "FILE")]
    metrics: Option<PathBuf>,
    /// Validation examples printed after each epoch.
    #[arg(long, default_value_t = 3)]
    samples: usize,
    /// What "validation improved" means for --save and for stopping early: exact match,
    /// the loss, the token error rate, BLEU or chrF (each also reported every epoch).
    #[arg(long, value_enum, default_value_t = choice::Select::Exact)]
    select: choice::Select,
    #[command(flatten)]
    parallel: ParallelArgs,
}

#[derive(Args)]
#[command(allow_negative_numbers = true)]
pub(crate) struct TranslateArgs {
    /// A checkpoint saved by train-seq2seq --save.
    #[arg(long, value_name = "FILE.safetensors")]
    checkpoint: PathBuf,
    /// Beam width (1: greedy), at most 16.
    #[arg(long, default_value_t = 1)]
    beam: usize,
    /// Beam search ranks finished outputs by log-probability / (tokens + 1)^A: 1 is the mean
    /// per token, 0 the plain sum (which favours short outputs).
    #[arg(long, value_name = "A", default_value_t = 1.0)]
    length_penalty: f32,
    /// Lines decoded together.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// The texts to decode; without any, each line of standard input.
    text: Vec<String>,
}

/// `train-seq2seq`: generates or reads the pairs, trains, reports what it reached.
pub(crate) fn train_seq2seq_command(
    selector: &AdapterSelector,
    args: TrainSeq2seqArgs,
    typed: &Typed,
) -> shadergrad::Result<()> {
    let parallel = args.parallel.clone();
    run_training("train-seq2seq", selector, &parallel, |placement| {
        train_on(args, typed, placement)
    })
}

/// `train-seq2seq` where `placement` says.
fn train_on(args: TrainSeq2seqArgs, typed: &Typed, placement: Placement) -> shadergrad::Result<()> {
    let rule = args.optimizer.rule();
    if let Some(p) = args.dropout {
        if !(0.0..1.0).contains(&p) {
            return Err(Error::invalid(
                "train-seq2seq",
                format!("--dropout {p}: the drop probability must be in [0, 1)"),
            ));
        }
        if p > 0.0 && args.arch != choice::Seq2SeqArch::Transformer {
            return Err(Error::invalid(
                "train-seq2seq",
                format!(
                    "--dropout {p}: only --arch transformer has dropout, not {:?}",
                    typed_name(args.arch)
                ),
            ));
        }
    }
    let (architecture, default_layers) = match args.arch.cell() {
        Some(cell) => (
            Architecture::Recurrent(RecurrentConfig {
                cell,
                attention: args.attention.into(),
                embed: args.embed,
                hidden: args.hidden,
                bidirectional: args.bidirectional,
            }),
            1,
        ),
        None => (
            Architecture::Transformer(TransformerConfig {
                width: args.hidden,
                heads: args.heads,
                ff: args.ff,
                dropout: args.dropout.unwrap_or(TRANSFORMER_DROPOUT),
            }),
            2,
        ),
    };
    let model = Seq2SeqConfig {
        source_vocab_size: 1,
        target_vocab_size: 1,
        layers: args.layers.unwrap_or(default_layers),
        architecture,
    };
    model.validate()?;
    if args.max_minutes.is_nan() || args.max_minutes <= 0.0 {
        return Err(Error::invalid(
            "train-seq2seq",
            format!("--max-minutes {} must be above 0", args.max_minutes),
        ));
    }
    if !(args.clip >= 0.0 && args.clip.is_finite()) {
        return Err(Error::invalid(
            "train-seq2seq",
            format!(
                "--clip {} must be 0 (no clipping) or a positive norm",
                args.clip
            ),
        ));
    }
    let resume = check_training_files(
        args.save.as_deref(),
        args.resume.as_deref(),
        args.overwrite,
        args.metrics.as_deref(),
    )?;
    let (train, valid, description) = match &args.data {
        Some(path) => {
            let pairs = print_warnings(read_tsv(path)?);
            let (train, valid) = match &args.valid {
                Some(valid) => (pairs, print_warnings(read_tsv(valid)?)),
                None => split_pairs(&pairs, args.valid_fraction, args.seed)?,
            };
            let description = json!({
                "data": path.display().to_string(),
                "valid": args.valid.as_ref().map(|p| p.display().to_string()),
            });
            (train, valid, description)
        }
        None => {
            let task = args.task.task(args.digits, args.reverse_input)?;
            task.check_memory(
                args.train_size,
                args.valid_size,
                ("--train-size", "--valid-size"),
            )?;
            let (train, valid) = task.generate_with_progress(
                args.train_size,
                args.valid_size,
                args.seed,
                &mut print_progress,
            )?;
            let description = json!({
                "task": task.name(),
                "digits": args.digits,
                "reverse_input": args.reverse_input,
                "train_size": args.train_size,
                "valid_size": args.valid_size,
                "seed": args.seed,
            });
            (train, valid, description)
        }
    };
    if let Some(checkpoint) = &resume {
        let arch = model.architecture.name();
        let mut flags = vec![
            ("arch", "arch", json!(arch)),
            ("hidden", "hidden", json!(args.hidden)),
            ("layers", "layers", json!(model.layers)),
        ];
        if arch == "transformer" {
            flags.extend([
                ("heads", "heads", json!(args.heads)),
                ("ff", "ff", json!(args.ff)),
            ]);
        } else {
            flags.extend([
                ("arch", "cell", json!(typed_name(args.arch))),
                ("attention", "attention", json!(typed_name(args.attention))),
                ("embed", "embed", json!(args.embed)),
                ("bidirectional", "bidirectional", json!(args.bidirectional)),
            ]);
        }
        check_resume_agrees(checkpoint, typed, &flags)?;
        let vocabulary_flags = [
            ("source_tokens", "--source-tokens"),
            ("target_tokens", "--target-tokens"),
            ("max_vocab", "--max-vocab"),
            ("bpe_merges", "--bpe-merges"),
            ("shared_vocab", "--shared-vocab"),
        ];
        if let Some((_, flag)) = vocabulary_flags.iter().find(|(id, _)| typed.given(id)) {
            return Err(Error::invalid(
                "train-seq2seq",
                format!(
                    "{flag} shapes a new model's vocabularies; --resume continues with the \
                     checkpoint's: leave {flag} out"
                ),
            ));
        }
    }
    if let Some(max) = args.max_vocab.filter(|&max| max <= SPECIAL_TOKENS) {
        return Err(Error::invalid(
            "train-seq2seq",
            format!(
                "--max-vocab {max} leaves no room for tokens: the {SPECIAL_TOKENS} special ids \
                 (padding, start, end, unknown) come first"
            ),
        ));
    }
    let tokens = PairVocabSpec {
        source: args.source_tokens.into(),
        target: args.target_tokens.into(),
        limits: VocabLimits {
            max_vocab: args.max_vocab,
            merges: args.bpe_merges,
        },
        sharing: if args.shared_vocab {
            Sharing::Shared
        } else {
            Sharing::Separate
        },
    };
    let gpus = placement.devices("train-seq2seq")?;
    // The default rate follows the model trained: a resumed checkpoint's, else --arch's.
    let trains_transformer = match &resume {
        Some(checkpoint) => {
            checkpoint
                .config
                .pointer("/architecture/arch")
                .and_then(serde_json::Value::as_str)
                == Some("transformer")
        }
        None => matches!(model.architecture, Architecture::Transformer(_)),
    };
    let lr = args
        .lr
        .unwrap_or(if trains_transformer { 0.003 } else { 0.01 });
    let mut optimizer = OptimizerConfig::new(rule, lr);
    if args.clip > 0.0 {
        optimizer = optimizer.with_max_grad_norm(args.clip);
    }
    let config = Seq2SeqTraining {
        train,
        valid,
        data_description: description,
        model,
        tokens,
        optimizer,
        lr_decay: args.lr_decay,
        warmup: args.warmup.unwrap_or(if trains_transformer {
            TRANSFORMER_WARMUP
        } else {
            0
        }),
        batch: args
            .batch
            .unwrap_or(if trains_transformer { 64 } else { 128 }),
        epochs: match args.epochs {
            Some(epochs) => Epochs::Fixed(epochs),
            None => Epochs::UntilNoImprovement {
                patience: args.patience.max(1),
            },
        },
        max_minutes: Some(args.max_minutes),
        seed: args.seed,
        save: args.save,
        resume,
        metrics: args.metrics,
        samples: args.samples,
        select: args.select.into(),
    };
    let result = train_seq2seq_parallel(&gpus, placement.collective, &config)?;
    if !placement.leads() {
        return Ok(());
    }
    let (selection, best) = result.best;
    let improving = format!("validation {} stopped improving", selection.describe());
    let reason = match result.stop {
        Stop::EpochsDone => "the epochs were done",
        Stop::NoImprovement => &improving,
        Stop::Perfect => "every validation example was right",
        Stop::TimeCap => "--max-minutes passed",
    };
    let to_99 = match result.seconds_to_99 {
        Some(seconds) => format!("99% exact-match reached after {seconds:.0} s"),
        None => "99% exact-match not reached".to_string(),
    };
    let selected = match (selection, best) {
        (Selection::ExactMatch, _) => String::new(),
        (_, Some(best)) => format!(", best {} {best:.4}", selection.describe()),
        (_, None) => String::new(),
    };
    out!(
        "best validation exact-match {:.2}%{selected} after {} epochs ({} steps) in {:.0} s, {:.0} target tokens/s; {to_99}; stopped because {reason}",
        100.0 * result.best_exact_match,
        result.epochs,
        result.steps,
        result.seconds,
        result.tokens_per_s
    )
}

#[derive(Args)]
pub(crate) struct EvaluateArgs {
    /// A checkpoint saved by train-seq2seq --save.
    #[arg(long, value_name = "FILE.safetensors")]
    checkpoint: PathBuf,
    /// The test pairs: source, a tab, reference, per line.
    #[arg(long, value_name = "FILE.tsv")]
    data: PathBuf,
    /// Beam width (1: greedy), at most 16.
    #[arg(long, default_value_t = 1)]
    beam: usize,
    /// Beam search ranks finished outputs by log-probability / (tokens + 1)^A: 1 is the mean
    /// per token, 0 the plain sum (which favours short outputs).
    #[arg(long, value_name = "A", default_value_t = 1.0)]
    length_penalty: f32,
    /// Sources decoded together.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Also write the scores here, as one JSON object.
    #[arg(long, value_name = "FILE.json")]
    json: Option<PathBuf>,
}

/// `evaluate`: decodes every source of a test file in batches and scores the outputs
/// against the references: exact match, token error rate, BLEU and chrF.
pub(crate) fn evaluate_command(
    selector: &AdapterSelector,
    args: EvaluateArgs,
) -> shadergrad::Result<()> {
    if let Some(json) = &args.json {
        check_output_path("--json", json)?;
    }
    if args.beam == 0 || args.batch == 0 {
        return Err(Error::invalid(
            "evaluate",
            format!(
                "--beam {} and --batch {} must be at least 1",
                args.beam, args.batch
            ),
        ));
    }
    let checkpoint = shadergrad::checkpoint::load(&args.checkpoint)?;
    let pairs = print_warnings(read_tsv(&args.data)?);
    if pairs.is_empty() {
        return Err(Error::invalid(
            "evaluate",
            format!("{} holds no pairs to score", args.data.display()),
        ));
    }
    let gpu = open_gpu(selector)?;
    let mut model = Seq2SeqModel::from_checkpoint(&gpu, &checkpoint)?;
    model.set_length_penalty(args.length_penalty)?;
    let (encoded, unknown) = model.vocab.encode(&pairs);
    if !unknown.source.is_empty() {
        say!(
            "warning: {} source tokens are not in the model's vocabulary and read as UNK",
            unknown.source.len()
        );
    }
    let too_long: Vec<usize> = encoded
        .iter()
        .enumerate()
        .filter(|(_, pair)| pair.source.len() > model.max_source)
        .map(|(i, _)| i + 1)
        .collect();
    if !too_long.is_empty() {
        return Err(Error::invalid(
            "evaluate",
            format!(
                "{} of {} sources are longer than the {} tokens this model reads (line{} {}): \
                 leave them out, or train on longer sources",
                too_long.len(),
                pairs.len(),
                model.max_source,
                if too_long.len() == 1 { "" } else { "s" },
                list_some(&too_long)
            ),
        ));
    }
    let sources: Vec<Vec<u32>> = encoded.into_iter().map(|pair| pair.source).collect();
    // Decoded a slice at a time so that a long file shows its progress.
    let slice = args.batch.saturating_mul(16);
    let started = std::time::Instant::now();
    let mut outputs = Vec::with_capacity(sources.len());
    for chunk in sources.chunks(slice) {
        outputs.extend(model.decode(chunk, args.beam, args.batch)?);
        if sources.len() > slice {
            say!(
                "evaluate: {}/{} sentences decoded, {:.0} s",
                outputs.len(),
                sources.len(),
                started.elapsed().as_secs_f64()
            );
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let references: Vec<&str> = pairs.iter().map(|p| p.target.as_str()).collect();
    let scores = Scores::of(&model.vocab.target, &outputs, &references)?;
    // Words are whatever the target's spaces separate: phonemes, for a pronunciation.
    let units = match model.vocab.target.level() {
        TokenLevel::Char => "characters",
        TokenLevel::Word | TokenLevel::Bpe => "words",
    };
    let per_second = pairs.len() as f64 / seconds.max(1e-9);
    out!(
        "{} pairs of {}, beam {}: exact match {:.2}%, token error rate {:.2}% (over {units}), \
         BLEU {:.2}, chrF {:.2} ({per_second:.1} sentences/s, {seconds:.1} s)",
        pairs.len(),
        args.data.display(),
        args.beam,
        100.0 * scores.exact_match,
        100.0 * scores.token_error_rate,
        scores.bleu,
        scores.chrf
    )?;
    if let Some(path) = &args.json {
        let record = json!({
            "checkpoint": args.checkpoint.display().to_string(),
            "data": args.data.display().to_string(),
            "sentences": pairs.len(),
            "beam": args.beam,
            "exact_match": scores.exact_match,
            "token_error_rate": scores.token_error_rate,
            "token_error_rate_units": units,
            "bleu": scores.bleu,
            "chrf": scores.chrf,
            "seconds": seconds,
            "sentences_per_s": per_second,
        });
        let text = serde_json::to_string_pretty(&record)
            .map_err(|e| Error::invalid("evaluate", format!("the scores do not serialise: {e}")))?;
        shadergrad::files::write_atomically(path, format!("{text}\n").as_bytes())?;
    }
    Ok(())
}

/// `translate`: decodes each argument, or each line of stdin, one output line per input.
/// A line that cannot be decoded (not UTF-8, empty, longer than the model reads) is named
/// on stderr and printed as an empty line, so that outputs stay in step with inputs; the
/// rest are decoded, and the command fails at the end.
pub(crate) fn translate_command(
    selector: &AdapterSelector,
    args: TranslateArgs,
) -> shadergrad::Result<()> {
    if let Some(position) = args.text.iter().position(|text| text.is_empty()) {
        return Err(Error::invalid(
            "translate",
            format!(
                "text argument {} is empty: expected something to translate",
                position + 1
            ),
        ));
    }
    let checkpoint = shadergrad::checkpoint::load(&args.checkpoint)?;
    let gpu = open_gpu(selector)?;
    let mut model = Seq2SeqModel::from_checkpoint(&gpu, &checkpoint)?;
    model.set_length_penalty(args.length_penalty)?;
    let inputs: Vec<Vec<u8>> = if args.text.is_empty() {
        std::io::stdin()
            .lock()
            .split(b'\n')
            .collect::<std::io::Result<_>>()
            .map_err(|source| Error::Io {
                path: PathBuf::from("<stdin>"),
                source,
            })?
    } else {
        args.text.into_iter().map(String::into_bytes).collect()
    };
    let mut out = std::io::stdout().lock();
    let mut bad_lines = Vec::new();
    let window = args.batch.max(1);
    for (first, lines) in inputs.chunks(window).enumerate() {
        let first = first * window;
        // Each line's ids, or why it cannot be decoded.
        let sources: Vec<Result<Vec<u32>, String>> = lines
            .iter()
            .enumerate()
            .map(|(i, line)| source_ids(&model, line, first + i + 1))
            .collect();
        let good: Vec<Vec<u32>> = sources.iter().filter_map(|s| s.clone().ok()).collect();
        let mut decoded = if good.is_empty() {
            Vec::new()
        } else {
            model.decode(&good, args.beam, args.batch)?
        }
        .into_iter();
        for (i, source) in sources.iter().enumerate() {
            let text = match source {
                Ok(_) => decoded
                    .next()
                    .map(|ids| model.vocab.target.decode(&ids))
                    .unwrap_or_default(),
                Err(why) => {
                    say!(
                        "error: input line {}: {why}; printed as an empty line",
                        first + i + 1
                    );
                    bad_lines.push(first + i + 1);
                    String::new()
                }
            };
            out!("{text}")?;
        }
        out.flush().map_err(stdout_error)?;
    }
    match bad_lines.as_slice() {
        [] => Ok(()),
        bad => Err(Error::invalid(
            "translate",
            format!(
                "{} of {} inputs could not be translated (line{} {}); the others were",
                bad.len(),
                inputs.len(),
                if bad.len() == 1 { "" } else { "s" },
                list_some(bad)
            ),
        )),
    }
}

/// The ids of one input of `translate` (`number` counts from 1), or why it cannot be
/// decoded.
fn source_ids(model: &Seq2SeqModel, line: &[u8], number: usize) -> Result<Vec<u32>, String> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let text = std::str::from_utf8(line).map_err(|e| {
        format!(
            "not UTF-8 text (an invalid byte at column {})",
            e.valid_up_to() + 1
        )
    })?;
    if text.is_empty() {
        return Err("empty: nothing to translate".to_string());
    }
    let (ids, unknown) = model.vocab.source.encode(text);
    if ids.len() > model.max_source {
        return Err(format!(
            "{} tokens, more than the {} this model reads (the longest source it was \
             trained on)",
            ids.len(),
            model.max_source
        ));
    }
    if !unknown.is_empty() {
        say!(
            "warning: input {number} has tokens the model does not know, read as UNK: {}",
            unknown
                .iter()
                .map(|t| format!("{t:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(ids)
}

/// Up to ten numbers, comma-separated, and how many more there are.
fn list_some(numbers: &[usize]) -> String {
    const SHOWN: usize = 10;
    let shown: Vec<String> = numbers.iter().take(SHOWN).map(usize::to_string).collect();
    match numbers.len().saturating_sub(SHOWN) {
        0 => shown.join(", "),
        more => format!("{} and {more} more", shown.join(", ")),
    }
}
