//! The `shadergrad` command line: the binary behind the default `cli` feature.
//!
//! This file holds the top of it: the clap [`Cli`] and its [`Command`]s, `main`, and
//! [`run`], which hands each command to its module. The commands themselves live in
//! `src/cli/`, modules of this binary and not of the library (`src/lib.rs` never declares
//! `cli`): `cli/mod.rs` (the `out!`/`say!` macros, the flags' number parsers, the checks
//! shared by the trainers), `cli/choice.rs` (the choice flags' values), and one file per
//! command family holding its `*Args` struct and its `*_command` function: `adapters.rs`,
//! `bench.rs`, `mlp.rs` (train-mlp), `seq2seq.rs` (train-seq2seq, translate, evaluate), `cnn.rs`
//! (train-cnn), `lm.rs` (train-lm, sample).

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use shadergrad::AdapterSelector;

// First, so that its `out!` and `say!` macros reach the code below.
#[macro_use]
mod cli;

use cli::bench::BenchArgs;
use cli::cnn::TrainCnnArgs;
use cli::lm::{SampleArgs, TrainLmArgs};
use cli::mlp::TrainMlpArgs;
use cli::seq2seq::{EvaluateArgs, TrainSeq2seqArgs, TranslateArgs};
use cli::Typed;

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
    /// Score a train-seq2seq checkpoint on a test TSV: exact match, token error rate, BLEU
    /// and chrF, decoding the sources in batches.
    Evaluate(EvaluateArgs),
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
        // Read by every device the commands open; set before any thread exists.
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

fn run(cli: Cli, typed: &Typed) -> shadergrad::Result<()> {
    let selector = match &cli.adapter {
        Some(text) => text.parse()?,
        None => AdapterSelector::Default,
    };
    match cli.command {
        Command::Adapters => cli::adapters::adapters_command(&selector),
        Command::TrainMlp(args) => cli::mlp::train_mlp_command(&selector, *args, typed),
        Command::TrainSeq2seq(args) => cli::seq2seq::train_seq2seq_command(&selector, *args, typed),
        Command::Translate(args) => cli::seq2seq::translate_command(&selector, args),
        Command::Evaluate(args) => cli::seq2seq::evaluate_command(&selector, args),
        Command::Bench(args) => {
            cli::bench::bench_command(cli.adapter.is_some().then_some(&selector), args)
        }
        Command::TrainCnn(args) => cli::cnn::train_cnn_command(&selector, *args, typed),
        Command::TrainLm(args) => cli::lm::train_lm_command(&selector, *args, typed),
        Command::Sample(args) => cli::lm::sample_command(&selector, args),
    }
}
