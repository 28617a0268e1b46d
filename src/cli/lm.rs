//! `shadergrad train-lm` and `shadergrad sample`: the character-level language model.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use serde_json::json;
use shadergrad::data::corpus::read_text;
use shadergrad::data::text::UNK;
use shadergrad::models::charlm::CharLmModel;
use shadergrad::nn::charlm::CharLmConfig;
use shadergrad::optim::OptimizerConfig;
use shadergrad::rng::Rng;
use shadergrad::train::charlm::{train_lm_parallel, LmStop, LmTraining};
use shadergrad::{AdapterSelector, Error};

use super::choice::{self, typed_name};
use super::parallel::{run_training, ParallelArgs, Placement};
use super::{
    check_resume_agrees, check_training_files, finite_f32, finite_f64, open_gpu, print_warnings,
    stdout_error, Typed,
};

/// The text `train-lm` learns when given none: the opening of Shakespeare's Coriolanus.
const SHIPPED_TEXT: &str = include_str!("../../data/coriolanus.txt");
const SHIPPED_TEXT_NAME: &str = "data/coriolanus.txt (shipped)";

#[derive(Args)]
#[command(allow_negative_numbers = true)]
pub(crate) struct TrainLmArgs {
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
    #[command(flatten)]
    parallel: ParallelArgs,
}

#[derive(Args)]
#[command(allow_negative_numbers = true)]
pub(crate) struct SampleArgs {
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

/// `train-lm`: reads the text, trains, reports the perplexity reached.
pub(crate) fn train_lm_command(
    selector: &AdapterSelector,
    args: TrainLmArgs,
    typed: &Typed,
) -> shadergrad::Result<()> {
    let parallel = args.parallel.clone();
    run_training("train-lm", selector, &parallel, |placement| {
        train_lm_on(args, typed, placement)
    })
}

/// `train-lm` where `placement` says.
fn train_lm_on(args: TrainLmArgs, typed: &Typed, placement: Placement) -> shadergrad::Result<()> {
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
    let gpus = placement.devices("train-lm")?;
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
    let result = train_lm_parallel(&gpus, placement.collective, &config)?;
    if !placement.leads() {
        return Ok(());
    }
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
pub(crate) fn sample_command(
    selector: &AdapterSelector,
    args: SampleArgs,
) -> shadergrad::Result<()> {
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
    let gpu = open_gpu(selector)?;
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
