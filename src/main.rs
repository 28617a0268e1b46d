//! The `shadergrad` command line.

use std::collections::BTreeSet;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use serde_json::json;
use shadergrad::bench::{table_header, BenchOptions, Family};
use shadergrad::checkpoint::Checkpoint;
use shadergrad::data::classify::{
    read_labelled_tsv, split_examples, ClassifyTask, LabelledText, Labels,
};
use shadergrad::data::corpus::read_text;
use shadergrad::data::points::BuiltinTask;
use shadergrad::data::text::{read_tsv, split_pairs, UNK};
use shadergrad::data::{Dataset, GenerationProgress, LastBatch, Parsed, Standardizer};
use shadergrad::gpu::{adapter_reports, enumerate_adapters, instance, select_adapter, ADAPTER_ENV};
use shadergrad::models::charlm::CharLmModel;
use shadergrad::models::seq2seq::Seq2SeqModel;
use shadergrad::nn::charlm::CharLmConfig;
use shadergrad::nn::seq2seq::{Architecture, RecurrentConfig, Seq2SeqConfig};
use shadergrad::nn::transformer::TransformerConfig;
use shadergrad::optim::{OptimizerConfig, Schedule};
use shadergrad::rng::Rng;
use shadergrad::train::charlm::{train_lm, LmStop, LmTraining};
use shadergrad::train::cnn::{train_cnn, CnnTraining};
use shadergrad::train::mlp::{train_mlp, MlpTraining};
use shadergrad::train::seq2seq::{train_seq2seq, Seq2SeqTraining, Stop};
use shadergrad::{AdapterSelector, Error, Gpu};

/// Writes a line to stdout. A closed or full stdout is an error naming it: the command's
/// output is lost, so the command stops there.
macro_rules! out {
    ($($arg:tt)*) => {
        writeln!(std::io::stdout(), $($arg)*).map_err(stdout_error)
    };
}

/// `eprintln!` that cannot panic: a closed or full stderr loses the message, not the work.
macro_rules! say {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

fn stdout_error(source: std::io::Error) -> Error {
    Error::Io {
        path: PathBuf::from("<stdout>"),
        source,
    }
}

/// A number that must be finite: clap's parser for the rate, fraction and time flags (NaN
/// would otherwise pass every `<` check silently).
fn finite_f64(text: &str) -> Result<f64, String> {
    let value: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    if value.is_finite() {
        Ok(value)
    } else {
        Err(format!("{text:?} is not a finite number"))
    }
}

fn finite_f32(text: &str) -> Result<f32, String> {
    let value = finite_f64(text)?;
    if value.abs() > f64::from(f32::MAX) {
        return Err(format!("{text:?} is beyond the range of a 32-bit float"));
    }
    Ok(value as f32)
}

/// The fixed sets of values the choice flags take: clap lists them in `--help` and answers
/// a value outside them with the nearest one. Each maps to the library's own type.
mod choice {
    use clap::ValueEnum;
    use shadergrad::data::classify::ClassifyTask;
    use shadergrad::data::points::BuiltinTask;
    use shadergrad::data::text::Task;
    use shadergrad::kernels::recurrent::CellKind;
    use shadergrad::nn::seq2seq::AttentionKind;
    use shadergrad::optim::Rule;

    /// `--optimizer`: the update rule, with the command line's fixed hyperparameters.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
    pub enum Optimizer {
        /// Plain stochastic gradient descent.
        Sgd,
        /// SGD with heavy-ball momentum 0.9.
        Momentum,
        /// Adam with PyTorch's defaults: β1 0.9, β2 0.999, ε 1e-8.
        Adam,
        /// Adam with decoupled weight decay 0.01.
        Adamw,
    }

    impl Optimizer {
        pub fn rule(self) -> Rule {
            match self {
                Optimizer::Sgd => Rule::Sgd,
                Optimizer::Momentum => Rule::Momentum {
                    momentum: 0.9,
                    nesterov: false,
                },
                Optimizer::Adam => Rule::adam(),
                Optimizer::Adamw => Rule::adamw(0.01),
            }
        }
    }

    /// `train-lm --arch`: the recurrent cell.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
    pub enum Cell {
        Rnn,
        Gru,
        Lstm,
    }

    impl From<Cell> for CellKind {
        fn from(cell: Cell) -> CellKind {
            match cell {
                Cell::Rnn => CellKind::Rnn,
                Cell::Gru => CellKind::Gru,
                Cell::Lstm => CellKind::Lstm,
            }
        }
    }

    /// `train-seq2seq --arch`: a recurrent encoder-decoder of one cell, or a transformer.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
    pub enum Seq2SeqArch {
        Rnn,
        Gru,
        Lstm,
        Transformer,
    }

    impl Seq2SeqArch {
        /// The recurrent cell, or `None` for the transformer.
        pub fn cell(self) -> Option<CellKind> {
            match self {
                Seq2SeqArch::Rnn => Some(CellKind::Rnn),
                Seq2SeqArch::Gru => Some(CellKind::Gru),
                Seq2SeqArch::Lstm => Some(CellKind::Lstm),
                Seq2SeqArch::Transformer => None,
            }
        }
    }

    /// `--attention`: how the decoder looks at the encoder states.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
    pub enum Attention {
        /// Luong's multiplicative scores.
        Dot,
        /// Bahdanau's additive scores.
        Additive,
        /// The encoder's final state only.
        None,
    }

    impl From<Attention> for AttentionKind {
        fn from(attention: Attention) -> AttentionKind {
            match attention {
                Attention::Dot => AttentionKind::Dot,
                Attention::Additive => AttentionKind::Additive,
                Attention::None => AttentionKind::None,
            }
        }
    }

    /// `--activation`: the hidden layers' nonlinearity.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
    pub enum Activation {
        Tanh,
        Relu,
        Sigmoid,
    }

    impl From<Activation> for shadergrad::nn::Activation {
        fn from(activation: Activation) -> shadergrad::nn::Activation {
            match activation {
                Activation::Tanh => shadergrad::nn::Activation::Tanh,
                Activation::Relu => shadergrad::nn::Activation::Relu,
                Activation::Sigmoid => shadergrad::nn::Activation::Sigmoid,
            }
        }
    }

    /// `train-mlp --schedule`: the learning rate over training.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
    pub enum Schedule {
        /// --lr throughout.
        Constant,
        /// From --lr down to 1% of it, along half a cosine.
        Cosine,
    }

    /// `train-mlp --dataset`: a built-in task of 2-D points.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
    pub enum Points {
        Spirals,
        Xor,
        Circles,
    }

    impl From<Points> for BuiltinTask {
        fn from(points: Points) -> BuiltinTask {
            match points {
                Points::Spirals => BuiltinTask::Spirals,
                Points::Xor => BuiltinTask::Xor,
                Points::Circles => BuiltinTask::Circles,
            }
        }
    }

    /// `train-seq2seq --task`: a built-in task of sequence pairs.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
    pub enum SequenceTask {
        Addition,
        Reverse,
        Sort,
        Dates,
    }

    impl SequenceTask {
        /// The task; `digits` and `reverse_input` only shape addition (and are checked
        /// there).
        pub fn task(self, digits: usize, reverse_input: bool) -> shadergrad::Result<Task> {
            match self {
                SequenceTask::Addition => Task::addition(digits, reverse_input),
                SequenceTask::Reverse => Ok(Task::Reverse),
                SequenceTask::Sort => Ok(Task::Sort),
                SequenceTask::Dates => Ok(Task::Dates),
            }
        }
    }

    /// `train-cnn --task`: a built-in task of labelled texts.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
    pub enum TextTask {
        Reviews,
    }

    impl From<TextTask> for ClassifyTask {
        fn from(task: TextTask) -> ClassifyTask {
            match task {
                TextTask::Reviews => ClassifyTask::Reviews,
            }
        }
    }
}

/// The name a choice is typed as on the command line (`transformer`, `cross-entropy`).
fn typed_name(choice: impl ValueEnum) -> String {
    choice
        .to_possible_value()
        .expect("every choice can be typed")
        .get_name()
        .to_string()
}

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
#[command(allow_negative_numbers = true)]
struct BenchArgs {
    /// The smaller sizes and fewer runs: under a minute on lavapipe.
    #[arg(long)]
    quick: bool,
    /// Also write every measurement as a JSON array here.
    #[arg(long, value_name = "FILE.json")]
    json: Option<PathBuf>,
    /// Only these kernel families, comma-separated.
    #[arg(long, value_name = "FAMILY,...", value_delimiter = ',')]
    only: Vec<Family>,
}

#[derive(Args)]
#[command(allow_negative_numbers = true)]
struct TrainCnnArgs {
    /// A built-in task, generated from the seed: reviews (three classes of short movie
    /// reviews whose class hangs on n-grams: "not good", "not bad", "not very good").
    #[arg(long, value_enum, default_value_t = choice::TextTask::Reviews, conflicts_with = "data")]
    task: choice::TextTask,
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
    #[arg(value_parser = finite_f64, long, default_value_t = 0.1)]
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
    #[arg(value_parser = finite_f32, long, default_value_t = 0.003)]
    lr: f32,
    /// The update rule.
    #[arg(long, value_enum, default_value_t = choice::Optimizer::Adam)]
    optimizer: choice::Optimizer,
    /// Seeds the data, the initial weights and the batch order.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Save the model here after every epoch (one .safetensors file, holding its config,
    /// vocabulary and class names too), with the optimizer state under `optimizer.`.
    #[arg(long, value_name = "FILE.safetensors")]
    save: Option<PathBuf>,
    /// Continue training from a checkpoint of train-cnn --save: its model, its optimizer state and
    /// the epoch it reached (architecture flags, if given, must agree with it).
    #[arg(long, value_name = "FILE.safetensors")]
    resume: Option<PathBuf>,
    /// Let --save replace a checkpoint that is already there (without it, an existing file
    /// is refused, unless it is the one --resume continues).
    #[arg(long)]
    overwrite: bool,
    /// Append one JSON line of metrics per epoch to this file.
    #[arg(long, value_name = "FILE")]
    metrics: Option<PathBuf>,
}

/// The text `train-lm` learns when given none: the opening of Shakespeare's Coriolanus.
const SHIPPED_TEXT: &str = include_str!("../data/coriolanus.txt");
const SHIPPED_TEXT_NAME: &str = "data/coriolanus.txt (shipped)";

#[derive(Args)]
#[command(allow_negative_numbers = true)]
struct TrainLmArgs {
    /// A UTF-8 text file; by default the opening of Shakespeare's Coriolanus (40 KB),
    /// shipped with shadergrad. Its first 90% trains, the rest validates.
    #[arg(long, value_name = "FILE")]
    text: Option<PathBuf>,
    /// The recurrent cell.
    #[arg(long, value_enum, default_value_t = choice::Cell::Gru)]
    arch: choice::Cell,
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
    #[arg(value_parser = finite_f32, long, default_value_t = 0.005)]
    lr: f32,
    /// The update rule.
    #[arg(long, value_enum, default_value_t = choice::Optimizer::Adam)]
    optimizer: choice::Optimizer,
    /// Clip the gradients to this global norm (0: no clipping).
    #[arg(value_parser = finite_f32, long, default_value_t = 5.0)]
    clip: f32,
    /// Seeds the initial weights, the window order and the samples.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Save the model here whenever validation perplexity improves (one .safetensors file,
    /// holding its config and vocabulary too), with the optimizer state.
    #[arg(long, value_name = "FILE.safetensors")]
    save: Option<PathBuf>,
    /// Continue training from a checkpoint of train-lm --save: its model, its optimizer state and
    /// the epoch it reached (architecture flags, if given, must agree with it).
    #[arg(long, value_name = "FILE.safetensors")]
    resume: Option<PathBuf>,
    /// Let --save replace a checkpoint that is already there (without it, an existing file
    /// is refused, unless it is the one --resume continues).
    #[arg(long)]
    overwrite: bool,
    /// Stop after this many minutes (the epoch under way is evaluated and saved).
    #[arg(value_parser = finite_f64, long, default_value_t = 60.0)]
    max_minutes: f64,
    /// Epochs without a better validation perplexity before stopping early.
    #[arg(long, default_value_t = 5)]
    patience: usize,
    /// Append one JSON line of metrics per epoch to this file.
    #[arg(long, value_name = "FILE")]
    metrics: Option<PathBuf>,
    /// Characters sampled after each epoch (0: none).
    #[arg(long, default_value_t = 160)]
    sample_length: usize,
}

#[derive(Args)]
#[command(allow_negative_numbers = true)]
struct SampleArgs {
    /// A checkpoint saved by train-lm --save.
    #[arg(long, value_name = "FILE.safetensors")]
    checkpoint: PathBuf,
    /// The text to continue.
    #[arg(long)]
    prompt: String,
    /// Divides the log-probabilities before each draw: below 1 safer, above 1 wilder; 0
    /// always takes the most likely character.
    #[arg(value_parser = finite_f64, long, default_value_t = 0.8)]
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
#[command(allow_negative_numbers = true)]
struct TrainSeq2seqArgs {
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
}

#[derive(Args)]
#[command(allow_negative_numbers = true)]
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
#[command(allow_negative_numbers = true)]
struct TrainMlpArgs {
    /// A built-in task, generated from the seed: spirals, xor or circles.
    #[arg(long, value_enum, default_value_t = choice::Points::Spirals, conflicts_with = "data")]
    dataset: choice::Points,
    /// Your own CSV: the features, then an integer label, per line (a header is allowed).
    #[arg(long, value_name = "FILE.csv")]
    data: Option<PathBuf>,
    /// Points per class of a built-in task.
    #[arg(long, default_value_t = 200)]
    points: usize,
    /// The share of the examples held out for testing.
    #[arg(value_parser = finite_f64, long, default_value_t = 0.2)]
    test_fraction: f64,
    /// Hidden layer sizes, comma-separated.
    #[arg(long, default_value = "64,64", value_delimiter = ',')]
    layers: Vec<usize>,
    /// The hidden layers' nonlinearity.
    #[arg(long, value_enum, default_value_t = choice::Activation::Relu)]
    activation: choice::Activation,
    /// The update rule.
    #[arg(long, value_enum, default_value_t = choice::Optimizer::Adam)]
    optimizer: choice::Optimizer,
    /// The learning rate.
    #[arg(value_parser = finite_f32, long, default_value_t = 0.01)]
    lr: f32,
    /// The learning rate over training.
    #[arg(long, value_enum, default_value_t = choice::Schedule::Cosine)]
    schedule: choice::Schedule,
    /// Examples per step.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Passes over the training examples.
    #[arg(long, default_value_t = 60)]
    epochs: usize,
    /// Seeds the data, the initial weights and the batch order.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Save the model here after every epoch (one .safetensors file, holding its config and
    /// the optimizer state too).
    #[arg(long, value_name = "FILE.safetensors")]
    save: Option<PathBuf>,
    /// Continue training from a checkpoint of train-mlp --save: its model, its optimizer state and
    /// the epoch it reached (architecture flags, if given, must agree with it).
    #[arg(long, value_name = "FILE.safetensors")]
    resume: Option<PathBuf>,
    /// Let --save replace a checkpoint that is already there (without it, an existing file
    /// is refused, unless it is the one --resume continues).
    #[arg(long)]
    overwrite: bool,
    /// Append one JSON line of metrics per epoch to this file.
    #[arg(long, value_name = "FILE")]
    metrics: Option<PathBuf>,
}

fn main() -> ExitCode {
    // Silent unless asked: `RUST_LOG=shadergrad=debug` shows the adapter chosen, the
    // autotuner's decisions and every pipeline compiled (`RUST_LOG=wgpu_core=warn`, wgpu's).
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("off")).init();
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(error) => error.exit(),
    };
    if cli.no_autotune {
        // Read by every device opened later; set before any thread exists.
        std::env::set_var(shadergrad::gpu::tuning::NO_AUTOTUNE_ENV, "1");
    }
    let typed = Typed(
        matches
            .subcommand()
            .map(|(_, sub)| sub.clone())
            .unwrap_or_default(),
    );
    match run(cli, &typed) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            say!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The subcommand's arguments as clap matched them: which flags the user typed, as opposed
/// to their defaults.
struct Typed(ArgMatches);

impl Typed {
    /// Whether the flag whose field is `id` was given on the command line.
    fn given(&self, id: &str) -> bool {
        self.0.try_contains_id(id).unwrap_or(false)
            && self.0.value_source(id) == Some(ValueSource::CommandLine)
    }
}

fn run(cli: Cli, typed: &Typed) -> shadergrad::Result<()> {
    let selector = match &cli.adapter {
        Some(text) => text.parse()?,
        None => AdapterSelector::Default,
    };
    match cli.command {
        Command::Adapters => adapters(&selector),
        Command::TrainMlp(args) => train_mlp_command(&selector, *args, typed),
        Command::TrainSeq2seq(args) => train_seq2seq_command(&selector, *args, typed),
        Command::Translate(args) => translate_command(&selector, args),
        Command::Bench(args) => bench_command(cli.adapter.is_some().then_some(&selector), args),
        Command::TrainCnn(args) => train_cnn_command(&selector, *args, typed),
        Command::TrainLm(args) => train_lm_command(&selector, *args, typed),
        Command::Sample(args) => sample_command(&selector, args),
    }
}

/// Checks, before any training, that `--save` can take a checkpoint: the name ends in
/// `.safetensors`, its folder exists and takes a new file, and no checkpoint is there
/// already unless `--overwrite` lets it be replaced or it is the one `--resume` continues.
fn check_save_path(save: &Path, resume: Option<&Path>, overwrite: bool) -> shadergrad::Result<()> {
    let refuse = |message: String| Error::invalid("--save", message);
    if save.extension().is_none_or(|ext| ext != "safetensors") {
        return Err(refuse(format!(
            "{} does not end in .safetensors: a checkpoint is named like model.safetensors",
            save.display()
        )));
    }
    check_output_path("--save", save)?;
    let resumes_it = resume.is_some_and(|resume| same_file(resume, save));
    if save.exists() && !overwrite && !resumes_it {
        return Err(refuse(format!(
            "{} already exists: pass --overwrite to replace it, --resume {} to continue it, \
             or choose another name",
            save.display(),
            save.display()
        )));
    }
    Ok(())
}

/// Checks, before the work whose results go there, that the file `flag` names can be
/// written: its folder exists and takes a new file, and it is not a folder itself.
fn check_output_path(flag: &'static str, path: &Path) -> shadergrad::Result<()> {
    let folder = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    if !folder.is_dir() {
        return Err(Error::invalid(
            flag,
            format!(
                "{}: the folder {} does not exist; create it first",
                path.display(),
                folder.display()
            ),
        ));
    }
    if path.is_dir() {
        return Err(Error::invalid(
            flag,
            format!("{} is a folder, not a file", path.display()),
        ));
    }
    // A file made and removed now, so that a folder the run cannot write to is said before
    // the work rather than at its end.
    let probe = folder.join(format!(".shadergrad-write-probe.{}", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .map_err(|source| Error::Io {
            path: folder.to_path_buf(),
            source,
        })?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// A training's files, checked before any work: `--save` can take the checkpoint
/// ([`check_save_path`]), `--metrics` can be written; and the checkpoint `--resume`
/// continues, loaded.
fn check_training_files(
    save: Option<&Path>,
    resume: Option<&Path>,
    overwrite: bool,
    metrics: Option<&Path>,
) -> shadergrad::Result<Option<Checkpoint>> {
    if let Some(save) = save {
        check_save_path(save, resume, overwrite)?;
    }
    if let Some(metrics) = metrics {
        check_output_path("--metrics", metrics)?;
    }
    resume.map(shadergrad::checkpoint::load).transpose()
}

/// Whether two paths name the same existing file.
fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Checks that each architecture flag the user typed agrees with the model `--resume`
/// continues: `flags` pairs a flag's field name with its key in the checkpoint's
/// `architecture` and the value typed. A flag left out takes the checkpoint's value.
fn check_resume_agrees(
    checkpoint: &Checkpoint,
    typed: &Typed,
    flags: &[(&str, &str, serde_json::Value)],
) -> shadergrad::Result<()> {
    let architecture = checkpoint.config.get("architecture");
    for (field, key, value) in flags {
        if !typed.given(field) {
            continue;
        }
        let stored = architecture.and_then(|a| a.get(*key));
        if stored != Some(value) {
            let flag = format!("--{}", field.replace('_', "-"));
            return Err(Error::invalid(
                "--resume",
                format!(
                    "{flag} {} disagrees with {}, whose model has {key} {}: leave {flag} out to \
                     resume that model, or train a new one without --resume",
                    plain(value),
                    checkpoint.path.display(),
                    stored.map_or("(none)".to_string(), plain)
                ),
            ));
        }
    }
    Ok(())
}

/// A JSON value as a user would type it: `gru`, not `"gru"`; lists comma-separated.
fn plain(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(text) => text.clone(),
        serde_json::Value::Array(items) => items.iter().map(plain).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// `bench`: the suite on each adapter asked for (all of them by default), as a table and
/// optionally as JSON.
fn bench_command(selector: Option<&AdapterSelector>, args: BenchArgs) -> shadergrad::Result<()> {
    let adapters = match selector {
        Some(selector) => vec![select_adapter(enumerate_adapters(&instance())?, selector)?],
        None => enumerate_adapters(&instance())?,
    };
    if let Some(path) = &args.json {
        check_output_path("--json", path)?;
    }
    let mut options = BenchOptions::new(args.quick);
    if !args.only.is_empty() {
        // In the order given, each once.
        let mut families: Vec<Family> = Vec::new();
        for &family in &args.only {
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
                say!("skipping {} ({}): {error}", info.name, info.backend);
                continue;
            }
        };
        out!("\n{} ({}, {}):", info.name, info.backend, info.driver_info)?;
        out!("{}", table_header())?;
        let measured = shadergrad::bench::run(&gpu, &options, &mut |m| out!("{}", m.table_row()))?;
        all.extend(measured);
    }
    out!("(* the variant the engine picks for that shape on that adapter; training steps show items/s)")?;
    if let Some(path) = &args.json {
        let records: Vec<serde_json::Value> = all.iter().map(|m| m.to_json()).collect();
        let text = serde_json::to_string_pretty(&records).map_err(|e| {
            Error::invalid("bench", format!("cannot encode the results as JSON: {e}"))
        })?;
        shadergrad::files::write_atomically(path, text.as_bytes())?;
        say!("wrote {} measurements to {}", all.len(), path.display());
    }
    Ok(())
}

/// `train-seq2seq`: generates or reads the pairs, trains, reports what it reached.
fn train_seq2seq_command(
    selector: &AdapterSelector,
    args: TrainSeq2seqArgs,
    typed: &Typed,
) -> shadergrad::Result<()> {
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
        vocab_size: 1,
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
    }
    let gpu = Gpu::new(selector)?;
    say!("train-seq2seq on {}", gpu.info().name);
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
    out!(
        "best validation exact-match {:.2}% after {} epochs ({} steps) in {:.0} s, {:.0} target tokens/s; {to_99}; stopped because {reason}",
        100.0 * result.best_exact_match,
        result.epochs,
        result.steps,
        result.seconds,
        result.tokens_per_s
    )
}

/// `train-cnn`: generates or reads the labelled texts, trains, prints the validation
/// accuracy.
fn train_cnn_command(
    selector: &AdapterSelector,
    args: TrainCnnArgs,
    typed: &Typed,
) -> shadergrad::Result<()> {
    let rule = args.optimizer.rule();
    let resume = check_training_files(
        args.save.as_deref(),
        args.resume.as_deref(),
        args.overwrite,
        args.metrics.as_deref(),
    )?;
    if let Some(checkpoint) = &resume {
        check_resume_agrees(
            checkpoint,
            typed,
            &[
                ("embed", "embed", json!(args.embed)),
                ("widths", "widths", json!(args.widths)),
                ("filters", "filters", json!(args.filters)),
            ],
        )?;
    }
    let (train, valid, description) = match &args.data {
        Some(path) => {
            let examples = print_warnings(read_labelled_tsv(path)?);
            let (train, valid) = match &args.valid {
                Some(valid) => (examples, print_warnings(read_labelled_tsv(valid)?)),
                None => split_examples(&examples, args.valid_fraction, args.seed)?,
            };
            if args.resume.is_none() {
                check_labels(&train, path, &valid, args.valid.as_deref().unwrap_or(path))?;
            }
            let description = json!({
                "data": path.display().to_string(),
                "valid": args.valid.as_ref().map(|p| p.display().to_string()),
            });
            (train, valid, description)
        }
        None => {
            let task = ClassifyTask::from(args.task);
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
    say!("train-cnn on {}", gpu.info().name);
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
        resume,
        metrics: args.metrics,
    };
    let result = train_cnn(&gpu, &config)?;
    out!(
        "validation accuracy {:.2}% (validation loss {:.4}; best epoch {:.2}%) after {} steps \
         in {:.1} s, {:.0} training examples/s",
        100.0 * result.valid_accuracy,
        result.valid_loss,
        100.0 * result.best_valid_accuracy,
        result.steps,
        result.seconds,
        result.examples_per_s
    )
}

/// `translate`: decodes each argument, or each line of stdin, one output line per input.
/// A line that cannot be decoded (not UTF-8, empty, longer than the model reads) is named
/// on stderr and printed as an empty line, so that outputs stay in step with inputs; the
/// rest are decoded, and the command fails at the end.
fn translate_command(selector: &AdapterSelector, args: TranslateArgs) -> shadergrad::Result<()> {
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
    let gpu = Gpu::new(selector)?;
    let mut model = Seq2SeqModel::from_checkpoint(&gpu, &checkpoint)?;
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
                    .map(|ids| model.vocab.decode(&ids))
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
    let (ids, unknown) = model.vocab.encode(text);
    if ids.len() > model.max_source {
        return Err(format!(
            "{} characters, more than the {} this model reads (the longest source it was \
             trained on)",
            ids.len(),
            model.max_source
        ));
    }
    if !unknown.is_empty() {
        say!(
            "warning: input {number} has characters the model does not know, read as UNK: {:?}",
            unknown.iter().collect::<String>()
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

/// `train-lm`: reads the text, trains, reports the perplexity reached.
fn train_lm_command(
    selector: &AdapterSelector,
    args: TrainLmArgs,
    typed: &Typed,
) -> shadergrad::Result<()> {
    let rule = args.optimizer.rule();
    let resume = check_training_files(
        args.save.as_deref(),
        args.resume.as_deref(),
        args.overwrite,
        args.metrics.as_deref(),
    )?;
    if args.max_minutes <= 0.0 {
        return Err(Error::invalid(
            "train-lm",
            format!("--max-minutes {} must be above 0", args.max_minutes),
        ));
    }
    if let Some(checkpoint) = &resume {
        check_resume_agrees(
            checkpoint,
            typed,
            &[
                ("arch", "cell", json!(typed_name(args.arch))),
                ("hidden", "hidden", json!(args.hidden)),
                ("layers", "layers", json!(args.layers)),
                ("embed", "embed", json!(args.embed)),
            ],
        )?;
    }
    let model = CharLmConfig {
        cell: args.arch.into(),
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
    say!("train-lm on {}", gpu.info().name);
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
        resume,
        metrics: args.metrics,
        sample_length: args.sample_length,
        max_minutes: Some(args.max_minutes),
        patience: args.patience,
    };
    let result = train_lm(&gpu, &config)?;
    let reason = match result.stop {
        LmStop::EpochsDone => "the epochs were done",
        LmStop::NoImprovement => "validation perplexity stopped improving",
        LmStop::TimeCap => "--max-minutes passed",
    };
    out!(
        "best validation perplexity {:.2} (unigram {:.2}) after {} epochs ({} steps) in {:.0} \
         s, {:.0} characters/s; stopped because {reason}",
        result.best_val_perplexity,
        result.unigram_perplexity,
        result.epochs,
        result.steps,
        result.seconds,
        result.chars_per_s
    )
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
        say!(
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
    // Each character is printed as it is drawn: a long sample shows itself growing.
    let mut out = std::io::stdout().lock();
    write!(out, "{}", args.prompt)
        .and_then(|()| out.flush())
        .map_err(stdout_error)?;
    let vocab = model.vocab.clone();
    model.sample_each(
        &known,
        args.length,
        args.temperature,
        &mut Rng::new(args.seed),
        &mut |id| {
            write!(out, "{}", vocab.decode(&[id]))
                .and_then(|()| out.flush())
                .map_err(stdout_error)
        },
    )?;
    writeln!(out).map_err(stdout_error)
}

/// `train-mlp`: loads or generates the data, trains, prints the accuracies.
fn train_mlp_command(
    selector: &AdapterSelector,
    args: TrainMlpArgs,
    typed: &Typed,
) -> shadergrad::Result<()> {
    let rule = args.optimizer.rule();
    let resume = check_training_files(
        args.save.as_deref(),
        args.resume.as_deref(),
        args.overwrite,
        args.metrics.as_deref(),
    )?;
    if let Some(checkpoint) = &resume {
        check_resume_agrees(
            checkpoint,
            typed,
            &[
                ("layers", "hidden", json!(args.layers)),
                (
                    "activation",
                    "activation",
                    json!(typed_name(args.activation)),
                ),
            ],
        )?;
    }
    let (dataset, description) = match &args.data {
        Some(path) => (
            print_warnings(Dataset::from_csv(path)?),
            path.display().to_string(),
        ),
        None => {
            let task = BuiltinTask::from(args.dataset);
            task.check_memory(args.points, "--points")?;
            (
                task.generate_with_progress(args.points, args.seed, &mut print_progress)?,
                format!(
                    "{} ({} points per class, seed {})",
                    typed_name(args.dataset),
                    args.points,
                    args.seed
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
    let schedule = match args.schedule {
        choice::Schedule::Constant => Schedule::Constant,
        choice::Schedule::Cosine => Schedule::WarmupCosine {
            warmup: 0,
            total: steps.max(1) as u64,
            final_fraction: 0.01,
        },
    };
    let gpu = Gpu::new(selector)?;
    say!(
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
        activation: args.activation.into(),
        optimizer: OptimizerConfig::new(rule, args.lr).with_schedule(schedule),
        batch: args.batch,
        epochs: args.epochs,
        seed: args.seed,
        save: args.save,
        resume,
        metrics: args.metrics,
        data_description: description,
        standardizer: Some(standardizer),
    };
    let result = train_mlp(&gpu, &config)?;
    out!(
        "train accuracy {:.2}%, test accuracy {:.2}% (test loss {:.4}) after {} steps in {:.1} s",
        100.0 * result.train_accuracy,
        100.0 * result.test_accuracy,
        result.final_loss,
        result.steps,
        result.seconds
    )
}

/// Checks train-cnn's labels before anything trains, naming the file at fault: the
/// training examples (from `train_path`) need two classes, and the validation examples
/// (from `valid_path`) only classes the training examples have.
fn check_labels(
    train: &[LabelledText],
    train_path: &Path,
    valid: &[LabelledText],
    valid_path: &Path,
) -> shadergrad::Result<()> {
    let labels =
        Labels::from_examples(train).map_err(|e| Error::format(train_path, e.to_string()))?;
    let unknown: BTreeSet<&str> = valid
        .iter()
        .map(|example| example.label.as_str())
        .filter(|&label| labels.id(label).is_none())
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    Err(Error::format(
        valid_path,
        format!(
            "the validation examples have labels the training examples ({}) lack: {}; the \
             training examples have {}",
            train_path.display(),
            unknown.into_iter().collect::<Vec<_>>().join(", "),
            labels.names().join(", ")
        ),
    ))
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
        out!("{report}")?;
    }
    let chosen = select_adapter(enumerate_adapters(&instance())?, selector)?.get_info();
    out!(
        "\nselected: {} ({}); choose another with --adapter or {ADAPTER_ENV}=<index|backend|name>",
        chosen.name,
        chosen.backend
    )
}
