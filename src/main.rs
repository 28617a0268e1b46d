//! The `shadergrad` command line.

use std::io::Write;
use std::process::ExitCode;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use serde_json::json;
use shadergrad::bench::{table_header, BenchOptions, Family};
use shadergrad::data::classify::{read_labelled_tsv, split_examples, ClassifyTask};
use shadergrad::data::corpus::read_text;
use shadergrad::data::points::BuiltinTask;
use shadergrad::data::text::{read_tsv, split_pairs, Task, UNK};
use shadergrad::data::{Dataset, GenerationProgress, LastBatch, Parsed, Standardizer};
use shadergrad::gpu::{adapter_reports, enumerate_adapters, instance, select_adapter, ADAPTER_ENV};
use shadergrad::kernels::recurrent::CellKind;
use shadergrad::nn::charlm::CharLmConfig;
use shadergrad::nn::seq2seq::{parse_cell, AttentionKind, Seq2SeqConfig};
use shadergrad::nn::transformer::TransformerShape;
use shadergrad::nn::Activation;
use shadergrad::optim::{OptimizerConfig, Schedule};
use shadergrad::rng::Rng;
use shadergrad::train::charlm::{train_lm, CharLmModel, LmTraining};
use shadergrad::train::cnn::{train_cnn, CnnTraining};
use shadergrad::train::mlp::{parse_rule, train_mlp, MlpTraining};
use shadergrad::train::seq2seq::{train_seq2seq, Seq2SeqModel, Seq2SeqTraining, Stop};
use shadergrad::{AdapterSelector, Error, Gpu};

#[derive(Parser)]
#[command(
    name = "shadergrad",
    version,
    about = "Deep learning on hand-written WGSL compute shaders (Vulkan, Metal, DX12)"
)]
struct Cli {
    /// The adapter to run on: an index of `shadergrad adapters`, a backend (vulkan, metal,
    /// dx12, gl) or a name substring. Default: $SHADERGRAD_ADAPTER, else the best GPU.
    #[arg(long, global = true, value_name = "ADAPTER")]
    adapter: Option<String>,

    /// Pick kernel variants by fixed rules instead of timing them on this adapter (the
    /// autotuner times each new shape class once and remembers it in
    /// ~/.cache/shadergrad; SHADERGRAD_NO_AUTOTUNE=1 does the same as this flag).
    #[arg(long, global = true)]
    no_autotune: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List every GPU adapter of this machine with its limits and features.
    Adapters,
    /// Train a multi-layer perceptron on 2-D points (or your CSV) with backprop.
    TrainMlp(Box<TrainMlpArgs>),
    /// Train an RNN or Transformer encoder-decoder on a built-in task (or your TSV).
    TrainSeq2seq(Box<TrainSeq2seqArgs>),
    /// Decode text with a train-seq2seq checkpoint: the arguments, or each line of stdin.
    Translate(TranslateArgs),
    /// Train an n-gram CNN text classifier on a built-in task (or your TSV).
    TrainCnn(Box<TrainCnnArgs>),
    /// Time every kernel family and whole training steps on every adapter (or --adapter's).
    Bench(BenchArgs),
    /// Train a character-level RNN language model on a text (by default, one shipped with
    /// shadergrad).
    TrainLm(Box<TrainLmArgs>),
    /// Continue a prompt with a train-lm checkpoint, one sampled character at a time.
    Sample(SampleArgs),
}

#[derive(Args)]
struct BenchArgs {
    /// The smaller sizes and fewer runs: under a minute on lavapipe.
    #[arg(long)]
    quick: bool,
    /// Also write every measurement as a JSON array here.
    #[arg(long, value_name = "FILE.json")]
    json: Option<PathBuf>,
    /// Only these kernel families, comma-separated: matmul, elementwise, softmax,
    /// cross-entropy, conv, attention, recurrent, optimizer, train-step.
    #[arg(long, value_name = "FAMILY,...", value_delimiter = ',')]
    only: Vec<String>,
}

#[derive(Args)]
struct TrainCnnArgs {
    /// A built-in task, generated from the seed: reviews (three classes of short movie
    /// reviews whose class hangs on n-grams: "not good", "not bad", "not very good").
    #[arg(long, default_value = "reviews", conflicts_with = "data")]
    task: String,
    /// Training texts generated for a built-in task.
    #[arg(long, default_value_t = 4_000)]
    train_size: usize,
    /// Held-out validation texts generated for a built-in task.
    #[arg(long, default_value_t = 500)]
    valid_size: usize,
    /// Your own labelled texts: a label, a tab, the text, per line.
    #[arg(long, value_name = "FILE.tsv")]
    data: Option<PathBuf>,
    /// Validation texts for --data; without it, --valid-fraction of --data is held out.
    #[arg(long, value_name = "FILE.tsv", requires = "data")]
    valid: Option<PathBuf>,
    /// The share of --data held out for validation when --valid is not given.
    #[arg(long, default_value_t = 0.1)]
    valid_fraction: f64,
    /// The n-gram widths of the convolutions, comma-separated.
    #[arg(long, default_value = "2,3,4", value_delimiter = ',')]
    widths: Vec<usize>,
    /// Output channels of each convolution.
    #[arg(long, default_value_t = 64)]
    filters: usize,
    /// Width of the word embeddings.
    #[arg(long, default_value_t = 64)]
    embed: usize,
    /// Texts per step.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Passes over the training texts.
    #[arg(long, default_value_t = 3)]
    epochs: usize,
    /// The learning rate.
    #[arg(long, default_value_t = 0.003)]
    lr: f32,
    /// sgd, momentum, adam or adamw.
    #[arg(long, default_value = "adam")]
    optimizer: String,
    /// Seeds the data, the initial weights and the batch order.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Save the trained model here (a .safetensors file, with its .json config, vocabulary
    /// and class names beside it), with the optimizer state under `optimizer.`.
    #[arg(long, value_name = "FILE.safetensors")]
    save: Option<PathBuf>,
    /// Append one JSON line of metrics per epoch to this file.
    #[arg(long, value_name = "FILE")]
    metrics: Option<PathBuf>,
}

/// The text `train-lm` learns when given none: the opening of Shakespeare's Coriolanus.
const SHIPPED_TEXT: &str = include_str!("../data/coriolanus.txt");
const SHIPPED_TEXT_NAME: &str = "data/coriolanus.txt (shipped)";

#[derive(Args)]
struct TrainLmArgs {
    /// A UTF-8 text file; by default the opening of Shakespeare's Coriolanus (40 KB),
    /// shipped with shadergrad. Its first 90% trains, the rest validates.
    #[arg(long, value_name = "FILE")]
    text: Option<PathBuf>,
    /// The recurrent cell: rnn, gru or lstm.
    #[arg(long, default_value = "gru")]
    arch: String,
    /// Units of each recurrent layer.
    #[arg(long, default_value_t = 128)]
    hidden: usize,
    /// Recurrent layers.
    #[arg(long, default_value_t = 1)]
    layers: usize,
    /// Width of the character embeddings.
    #[arg(long, default_value_t = 64)]
    embed: usize,
    /// Characters per training window (the steps gradients flow back through).
    #[arg(long, default_value_t = 64)]
    steps: usize,
    /// Windows per step.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Passes over the training text.
    #[arg(long, default_value_t = 20)]
    epochs: usize,
    /// The learning rate.
    #[arg(long, default_value_t = 0.005)]
    lr: f32,
    /// sgd, momentum, adam or adamw.
    #[arg(long, default_value = "adam")]
    optimizer: String,
    /// Clip the gradients to this global norm (0: no clipping).
    #[arg(long, default_value_t = 5.0)]
    clip: f32,
    /// Seeds the initial weights, the window order and the samples.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Save the model here whenever validation perplexity improves (a .safetensors file,
    /// with its .json config and vocabulary beside it), with the optimizer state.
    #[arg(long, value_name = "FILE.safetensors")]
    save: Option<PathBuf>,
    /// Append one JSON line of metrics per epoch to this file.
    #[arg(long, value_name = "FILE")]
    metrics: Option<PathBuf>,
    /// Characters sampled after each epoch (0: none).
    #[arg(long, default_value_t = 160)]
    sample_length: usize,
}

#[derive(Args)]
struct SampleArgs {
    /// A checkpoint saved by train-lm --save.
    #[arg(long, value_name = "FILE.safetensors")]
    checkpoint: PathBuf,
    /// The text to continue.
    #[arg(long)]
    prompt: String,
    /// Divides the log-probabilities before each draw: below 1 safer, above 1 wilder; 0
    /// always takes the most likely character.
    #[arg(long, default_value_t = 0.8)]
    temperature: f64,
    /// Characters to generate.
    #[arg(long, default_value_t = 300)]
    length: usize,
    /// Seeds the draws.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// `train-seq2seq --arch transformer`'s default drop probability: none, since dropout 0.1
/// slowed training on the default task (see README) and the held-out pairs did not need it.
const TRANSFORMER_DROPOUT: f32 = 0.0;

/// `train-seq2seq --arch transformer`'s default warm-up, in steps.
const TRANSFORMER_WARMUP: u64 = 400;

#[derive(Args)]
struct TrainSeq2seqArgs {
    /// A built-in task, generated from the seed: addition ("535+61" → "596"), reverse,
    /// sort, or dates (written by people → ISO 8601).
    #[arg(long, default_value = "addition", conflicts_with = "data")]
    task: String,
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
    #[arg(long, default_value_t = 0.1)]
    valid_fraction: f64,
    /// The model: a recurrent encoder-decoder of rnn, gru or lstm cells, or a transformer.
    #[arg(long, default_value = "gru")]
    arch: String,
    /// The transformer's attention heads (they divide --hidden, its d_model).
    #[arg(long, default_value_t = 4)]
    heads: usize,
    /// The width of the transformer's feed-forward layers.
    #[arg(long, default_value_t = 256)]
    ff: usize,
    /// The transformer's drop probability, in [0, 1), of its embeddings and of each
    /// block's output (training only): by default 0, which reaches 99% on the default task
    /// an epoch sooner than 0.1. Recurrent models take none.
    #[arg(long)]
    dropout: Option<f32>,
    /// How the decoder looks at the encoder states: dot (Luong), additive (Bahdanau) or none.
    #[arg(long, default_value = "dot")]
    attention: String,
    /// Units of each recurrent layer, or the transformer's d_model.
    #[arg(long, default_value_t = 64)]
    hidden: usize,
    /// Layers of the encoder and of the decoder: by default 1 recurrent layer, or 2
    /// transformer layers.
    #[arg(long)]
    layers: Option<usize>,
    /// Width of the character embeddings.
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
    #[arg(long)]
    lr: Option<f32>,
    /// Multiply the learning rate by this after each epoch (1: constant).
    #[arg(long, default_value_t = 0.8)]
    lr_decay: f64,
    /// Steps over which the learning rate climbs linearly to --lr: by default 400 for a
    /// transformer (about half an epoch of the default task), 0 (none) for a recurrent model.
    #[arg(long)]
    warmup: Option<u64>,
    /// sgd, momentum, adam or adamw.
    #[arg(long, default_value = "adam")]
    optimizer: String,
    /// Clip the gradients to this global norm (0: no clipping).
    #[arg(long, default_value_t = 5.0)]
    clip: f32,
    /// Seeds the data, the initial weights and the batch order.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Stop after this many minutes (the epoch under way is evaluated and saved).
    #[arg(long, default_value_t = 20.0)]
    max_minutes: f64,
    /// Save the model here whenever validation improves (a .safetensors file, with its
    /// .json config and vocabulary beside it), with the optimizer state for --resume.
    #[arg(long, value_name = "FILE.safetensors")]
    save: Option<PathBuf>,
    /// Continue training from a checkpoint of --save (its architecture and vocabulary).
    #[arg(long, value_name = "FILE.safetensors")]
    resume: Option<PathBuf>,
    /// Append one JSON line of metrics per epoch to this file.
    #[arg(long, value_name = "FILE")]
    metrics: Option<PathBuf>,
    /// Validation examples printed after each epoch.
    #[arg(long, default_value_t = 3)]
    samples: usize,
}

#[derive(Args)]
struct TranslateArgs {
    /// A checkpoint saved by train-seq2seq --save.
    #[arg(long, value_name = "FILE.safetensors")]
    checkpoint: PathBuf,
    /// Beam width (1: greedy).
    #[arg(long, default_value_t = 1)]
    beam: usize,
    /// Lines decoded together.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// The texts to decode; without any, each line of standard input.
    text: Vec<String>,
}

#[derive(Args)]
struct TrainMlpArgs {
    /// A built-in task, generated from the seed: spirals, xor or circles.
    #[arg(long, default_value = "spirals", conflicts_with = "data")]
    dataset: String,
    /// Your own CSV: the features, then an integer label, per line (a header is allowed).
    #[arg(long, value_name = "FILE.csv")]
    data: Option<PathBuf>,
    /// Points per class of a built-in task.
    #[arg(long, default_value_t = 200)]
    points: usize,
    /// The share of the examples held out for testing.
    #[arg(long, default_value_t = 0.2)]
    test_fraction: f64,
    /// Hidden layer sizes, comma-separated.
    #[arg(long, default_value = "64,64", value_delimiter = ',')]
    layers: Vec<usize>,
    /// tanh, relu or sigmoid.
    #[arg(long, default_value = "relu")]
    activation: String,
    /// sgd, momentum, adam or adamw.
    #[arg(long, default_value = "adam")]
    optimizer: String,
    /// The learning rate.
    #[arg(long, default_value_t = 0.01)]
    lr: f32,
    /// The learning rate over training: constant, or cosine (from --lr down to 1% of it).
    #[arg(long, default_value = "cosine")]
    schedule: String,
    /// Examples per step.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Passes over the training examples.
    #[arg(long, default_value_t = 60)]
    epochs: usize,
    /// Seeds the data, the initial weights and the batch order.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Save the trained model here (a .safetensors file, with its .json config beside it).
    #[arg(long, value_name = "FILE.safetensors")]
    save: Option<PathBuf>,
    /// Append one JSON line of metrics per epoch to this file.
    #[arg(long, value_name = "FILE")]
    metrics: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.no_autotune {
        // Read by every device opened later; set before any thread exists.
        std::env::set_var(shadergrad::gpu::tuning::NO_AUTOTUNE_ENV, "1");
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> shadergrad::Result<()> {
    let selector = match &cli.adapter {
        Some(text) => text.parse()?,
        None => AdapterSelector::Default,
    };
    match cli.command {
        Command::Adapters => adapters(&selector),
        Command::TrainMlp(args) => train_mlp_command(&selector, *args),
        Command::TrainSeq2seq(args) => train_seq2seq_command(&selector, *args),
        Command::Translate(args) => translate_command(&selector, args),
        Command::Bench(args) => bench_command(cli.adapter.is_some().then_some(&selector), args),
        Command::TrainCnn(args) => train_cnn_command(&selector, *args),
        Command::TrainLm(args) => train_lm_command(&selector, *args),
        Command::Sample(args) => sample_command(&selector, args),
    }
}

/// `bench`: the suite on each adapter asked for (all of them by default), as a table and
/// optionally as JSON.
fn bench_command(selector: Option<&AdapterSelector>, args: BenchArgs) -> shadergrad::Result<()> {
    let adapters = match selector {
        Some(selector) => vec![select_adapter(enumerate_adapters(&instance())?, selector)?],
        None => enumerate_adapters(&instance())?,
    };
    let mut options = BenchOptions::new(args.quick);
    if !args.only.is_empty() {
        // In the order given, each once.
        let mut families: Vec<Family> = Vec::new();
        for name in &args.only {
            let family: Family = name.trim().parse()?;
            if !families.contains(&family) {
                families.push(family);
            }
        }
        options.families = families;
    }
    let mut all = Vec::new();
    for adapter in adapters {
        let info = adapter.get_info();
        let gpu = match Gpu::from_adapter(adapter) {
            Ok(gpu) => gpu,
            Err(error) => {
                eprintln!("skipping {} ({}): {error}", info.name, info.backend);
                continue;
            }
        };
        println!("\n{} ({}, {}):", info.name, info.backend, info.driver_info);
        println!("{}", table_header());
        let measured =
            shadergrad::bench::run(&gpu, &options, &mut |m| println!("{}", m.table_row()))?;
        all.extend(measured);
    }
    println!("(* the variant the engine picks for that shape on that adapter; training steps show items/s)");
    if let Some(path) = &args.json {
        let records: Vec<serde_json::Value> = all.iter().map(|m| m.to_json()).collect();
        let text = serde_json::to_string_pretty(&records).map_err(|e| {
            Error::invalid("bench", format!("cannot encode the results as JSON: {e}"))
        })?;
        shadergrad::files::write_atomically(path, text.as_bytes())?;
        eprintln!("wrote {} measurements to {}", all.len(), path.display());
    }
    Ok(())
}

/// `train-seq2seq`: generates or reads the pairs, trains, reports what it reached.
fn train_seq2seq_command(
    selector: &AdapterSelector,
    args: TrainSeq2seqArgs,
) -> shadergrad::Result<()> {
    let rule = parse_rule(&args.optimizer)?;
    if let Some(p) = args.dropout {
        if !(0.0..1.0).contains(&p) {
            return Err(Error::invalid(
                "train-seq2seq",
                format!("--dropout {p}: the drop probability must be in [0, 1)"),
            ));
        }
        if p > 0.0 && args.arch != "transformer" {
            return Err(Error::invalid(
                "train-seq2seq",
                format!(
                    "--dropout {p}: only --arch transformer has dropout, not {:?}",
                    args.arch
                ),
            ));
        }
    }
    // A transformer uses no cell; the GRU fills the field that names one.
    let (cell, transformer) = match args.arch.as_str() {
        "transformer" => (
            CellKind::Gru,
            Some(TransformerShape {
                heads: args.heads,
                ff: args.ff,
                dropout: args.dropout.unwrap_or(TRANSFORMER_DROPOUT),
            }),
        ),
        cell => (
            parse_cell(cell).map_err(|_| {
                Error::invalid(
                    "arch",
                    format!("{cell:?} is not one of rnn, gru, lstm, transformer"),
                )
            })?,
            None,
        ),
    };
    let model = Seq2SeqConfig {
        cell,
        transformer,
        attention: AttentionKind::parse(&args.attention)?,
        vocab_size: 1,
        embed: args.embed,
        hidden: args.hidden,
        layers: args
            .layers
            .unwrap_or(if transformer.is_some() { 2 } else { 1 }),
        bidirectional: args.bidirectional,
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
            let task = Task::parse(&args.task, args.digits, args.reverse_input)?;
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
    let resume = args
        .resume
        .as_deref()
        .map(shadergrad::checkpoint::load)
        .transpose()?;
    let gpu = Gpu::new(selector)?;
    eprintln!("train-seq2seq on {}", gpu.info().name);
    // The default rate follows the model trained: a resumed checkpoint's, else --arch's.
    let trains_transformer = match &resume {
        Some(checkpoint) => {
            checkpoint
                .config
                .pointer("/architecture/arch")
                .and_then(serde_json::Value::as_str)
                == Some("transformer")
        }
        None => model.transformer.is_some(),
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
        epochs: args.epochs,
        patience: args.patience.max(1),
        max_minutes: Some(args.max_minutes),
        seed: args.seed,
        save: args.save,
        resume,
        metrics: args.metrics,
        samples: args.samples,
    };
    let result = train_seq2seq(&gpu, &config)?;
    let reason = match result.stop {
        Stop::EpochsDone => "the epochs were done",
        Stop::NoImprovement => "validation exact-match stopped improving",
        Stop::Perfect => "every validation example was right",
        Stop::TimeCap => "--max-minutes passed",
    };
    let to_99 = match result.seconds_to_99 {
        Some(seconds) => format!("99% reached after {seconds:.0} s"),
        None => "99% not reached".to_string(),
    };
    println!(
        "best validation exact-match {:.2}% after {} epochs ({} steps) in {:.0} s, {:.0} target tokens/s; {to_99}; stopped because {reason}",
        100.0 * result.best_exact_match,
        result.epochs,
        result.steps,
        result.seconds,
        result.tokens_per_s
    );
    Ok(())
}

/// `train-cnn`: generates or reads the labelled texts, trains, prints the validation
/// accuracy.
fn train_cnn_command(selector: &AdapterSelector, args: TrainCnnArgs) -> shadergrad::Result<()> {
    let rule = parse_rule(&args.optimizer)?;
    let (train, valid, description) = match &args.data {
        Some(path) => {
            let examples = print_warnings(read_labelled_tsv(path)?);
            let (train, valid) = match &args.valid {
                Some(valid) => (examples, print_warnings(read_labelled_tsv(valid)?)),
                None => split_examples(&examples, args.valid_fraction, args.seed)?,
            };
            let description = json!({
                "data": path.display().to_string(),
                "valid": args.valid.as_ref().map(|p| p.display().to_string()),
            });
            (train, valid, description)
        }
        None => {
            let task = ClassifyTask::parse(&args.task)?;
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
                "train_size": args.train_size,
                "valid_size": args.valid_size,
                "seed": args.seed,
            });
            (train, valid, description)
        }
    };
    let gpu = Gpu::new(selector)?;
    eprintln!("train-cnn on {}", gpu.info().name);
    let config = CnnTraining {
        train,
        valid,
        data_description: description,
        embed: args.embed,
        widths: args.widths,
        filters: args.filters,
        optimizer: OptimizerConfig::new(rule, args.lr),
        batch: args.batch,
        epochs: args.epochs,
        seed: args.seed,
        save: args.save,
        metrics: args.metrics,
    };
    let result = train_cnn(&gpu, &config)?;
    println!(
        "validation accuracy {:.2}% (validation loss {:.4}; best epoch {:.2}%) after {} steps \
         in {:.1} s, {:.0} training examples/s",
        100.0 * result.valid_accuracy,
        result.valid_loss,
        100.0 * result.best_valid_accuracy,
        result.steps,
        result.seconds,
        result.examples_per_s
    );
    Ok(())
}

/// `translate`: decodes each argument, or each line of stdin, one output line per input.
fn translate_command(selector: &AdapterSelector, args: TranslateArgs) -> shadergrad::Result<()> {
    let checkpoint = shadergrad::checkpoint::load(&args.checkpoint)?;
    let gpu = Gpu::new(selector)?;
    let mut model = Seq2SeqModel::from_checkpoint(&gpu, &checkpoint)?;
    let lines: Vec<String> = if args.text.is_empty() {
        std::io::stdin()
            .lines()
            .collect::<std::io::Result<_>>()
            .map_err(|source| Error::Io {
                path: PathBuf::from("<stdin>"),
                source,
            })?
    } else {
        args.text
    };
    let mut sources = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        let (ids, unknown) = model.vocab.encode(line);
        if !unknown.is_empty() {
            eprintln!(
                "warning: input {} has characters the model does not know, read as UNK: {:?}",
                i + 1,
                unknown.iter().collect::<String>()
            );
        }
        sources.push(ids);
    }
    let outputs = model.decode(&sources, args.beam, args.batch)?;
    let mut out = std::io::stdout().lock();
    for output in outputs {
        writeln!(out, "{}", model.vocab.decode(&output)).map_err(|source| Error::Io {
            path: PathBuf::from("<stdout>"),
            source,
        })?;
    }
    Ok(())
}

/// `train-lm`: reads the text, trains, reports the perplexity reached.
fn train_lm_command(selector: &AdapterSelector, args: TrainLmArgs) -> shadergrad::Result<()> {
    let rule = parse_rule(&args.optimizer)?;
    let model = CharLmConfig {
        cell: parse_cell(&args.arch)?,
        vocab_size: 1,
        embed: args.embed,
        hidden: args.hidden,
        layers: args.layers,
    };
    model.validate()?;
    if !(args.clip >= 0.0 && args.clip.is_finite()) {
        return Err(Error::invalid(
            "train-lm",
            format!(
                "--clip {} must be 0 (no clipping) or a positive norm",
                args.clip
            ),
        ));
    }
    let (text, text_name) = match &args.text {
        Some(path) => (print_warnings(read_text(path)?), path.display().to_string()),
        None => (SHIPPED_TEXT.to_string(), SHIPPED_TEXT_NAME.to_string()),
    };
    let gpu = Gpu::new(selector)?;
    eprintln!("train-lm on {}", gpu.info().name);
    let mut optimizer = OptimizerConfig::new(rule, args.lr);
    if args.clip > 0.0 {
        optimizer = optimizer.with_max_grad_norm(args.clip);
    }
    let config = LmTraining {
        text,
        text_name,
        model,
        optimizer,
        batch: args.batch,
        steps: args.steps,
        epochs: args.epochs,
        seed: args.seed,
        save: args.save,
        metrics: args.metrics,
        sample_length: args.sample_length,
    };
    let result = train_lm(&gpu, &config)?;
    println!(
        "best validation perplexity {:.2} (unigram {:.2}) after {} steps in {:.0} s, {:.0} \
         characters/s",
        result.best_val_perplexity,
        result.unigram_perplexity,
        result.steps,
        result.seconds,
        result.chars_per_s
    );
    Ok(())
}

/// `sample`: prints the prompt and the characters drawn after it.
fn sample_command(selector: &AdapterSelector, args: SampleArgs) -> shadergrad::Result<()> {
    if !(args.temperature >= 0.0 && args.temperature.is_finite()) {
        return Err(Error::invalid(
            "sample",
            format!(
                "--temperature {} must be 0 (greedy) or positive",
                args.temperature
            ),
        ));
    }
    let checkpoint = shadergrad::checkpoint::load(&args.checkpoint)?;
    let gpu = Gpu::new(selector)?;
    let mut model = CharLmModel::from_checkpoint(&gpu, &checkpoint)?;
    let (ids, unknown) = model.vocab.encode(&args.prompt);
    if !unknown.is_empty() {
        eprintln!(
            "warning: the prompt has characters the model never saw, skipped: {:?}",
            unknown.iter().collect::<String>()
        );
    }
    let known: Vec<u32> = ids.into_iter().filter(|&id| id != UNK).collect();
    if known.is_empty() {
        return Err(Error::invalid(
            "sample",
            format!(
                "the prompt {:?} has no character the model knows; expected some of {:?}",
                args.prompt,
                model.vocab.chars().iter().collect::<String>()
            ),
        ));
    }
    let drawn = model.sample(
        &known,
        args.length,
        args.temperature,
        &mut Rng::new(args.seed),
    )?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}{}", args.prompt, model.vocab.decode(&drawn)).map_err(|source| Error::Io {
        path: PathBuf::from("<stdout>"),
        source,
    })
}

/// `train-mlp`: loads or generates the data, trains, prints the accuracies.
fn train_mlp_command(selector: &AdapterSelector, args: TrainMlpArgs) -> shadergrad::Result<()> {
    let activation: Activation = args.activation.parse()?;
    let rule = parse_rule(&args.optimizer)?;
    let (dataset, description) = match &args.data {
        Some(path) => (
            print_warnings(Dataset::from_csv(path)?),
            path.display().to_string(),
        ),
        None => {
            let task: BuiltinTask = args.dataset.parse()?;
            task.check_memory(args.points, "--points")?;
            (
                task.generate_with_progress(args.points, args.seed, &mut print_progress)?,
                format!(
                    "{} ({} points per class, seed {})",
                    args.dataset, args.points, args.seed
                ),
            )
        }
    };
    if !(args.test_fraction > 0.0 && args.test_fraction < 1.0) {
        return Err(Error::invalid(
            "train-mlp",
            format!(
                "--test-fraction {} must be between 0 and 1 (exclusive): the accuracy is measured on the held-out examples",
                args.test_fraction
            ),
        ));
    }
    let (mut train, mut test) = dataset.split(1.0 - args.test_fraction, args.seed)?;
    let standardizer = Standardizer::fit(&train)?;
    standardizer.transform(&mut train)?;
    standardizer.transform(&mut test)?;
    let steps = train.batch_count(args.batch.max(1), LastBatch::Pad { label: 0 }) * args.epochs;
    let schedule = match args.schedule.as_str() {
        "constant" => Schedule::Constant,
        "cosine" => Schedule::WarmupCosine {
            warmup: 0,
            total: steps.max(1) as u64,
            final_fraction: 0.01,
        },
        other => {
            return Err(Error::invalid(
                "train-mlp",
                format!("--schedule {other:?} is not one of constant, cosine"),
            ))
        }
    };
    let gpu = Gpu::new(selector)?;
    eprintln!(
        "train-mlp: {} training and {} test examples of {} features, {} classes, on {}",
        train.n,
        test.n,
        train.dim,
        train.classes.max(test.classes),
        gpu.info().name
    );
    let config = MlpTraining {
        train,
        test,
        hidden: args.layers,
        activation,
        optimizer: OptimizerConfig::new(rule, args.lr).with_schedule(schedule),
        batch: args.batch,
        epochs: args.epochs,
        seed: args.seed,
        save: args.save,
        metrics: args.metrics,
        data_description: description,
        standardizer: Some(standardizer),
    };
    let result = train_mlp(&gpu, &config)?;
    println!(
        "train accuracy {:.2}%, test accuracy {:.2}% (test loss {:.4}) after {} steps in {:.1} s",
        100.0 * result.train_accuracy,
        100.0 * result.test_accuracy,
        result.final_loss,
        result.steps,
        result.seconds
    );
    Ok(())
}

/// What a reader read, once its warnings are printed on stderr (a warning that cannot be
/// printed does not stop the run).
fn print_warnings<T>(parsed: Parsed<T>) -> T {
    let mut stderr = std::io::stderr().lock();
    for warning in &parsed.warnings {
        let _ = writeln!(stderr, "warning: {warning}");
    }
    parsed.contents
}

/// Prints a long generation's progress on stderr (a line that cannot be printed is skipped).
fn print_progress(progress: &GenerationProgress) {
    let _ = writeln!(std::io::stderr(), "{progress}");
}

/// Prints every adapter, then the one the other commands would use.
fn adapters(selector: &AdapterSelector) -> shadergrad::Result<()> {
    for report in adapter_reports()? {
        println!("{report}");
    }
    let chosen = select_adapter(enumerate_adapters(&instance())?, selector)?.get_info();
    println!(
        "\nselected: {} ({}); choose another with --adapter or {ADAPTER_ENV}=<index|backend|name>",
        chosen.name, chosen.backend
    );
    Ok(())
}
