//! The `shadergrad` command line.

use std::process::ExitCode;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use shadergrad::data::points::BuiltinTask;
use shadergrad::data::{Dataset, LastBatch, Standardizer};
use shadergrad::gpu::{adapter_reports, enumerate_adapters, instance, select_adapter, ADAPTER_ENV};
use shadergrad::nn::Activation;
use shadergrad::optim::{OptimizerConfig, Schedule};
use shadergrad::train::mlp::{parse_rule, train_mlp, MlpTraining};
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

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List every GPU adapter of this machine with its limits and features.
    Adapters,
    /// Train a multi-layer perceptron on 2-D points (or your CSV) with backprop.
    TrainMlp(Box<TrainMlpArgs>),
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
    }
}

/// `train-mlp`: loads or generates the data, trains, prints the accuracies.
fn train_mlp_command(selector: &AdapterSelector, args: TrainMlpArgs) -> shadergrad::Result<()> {
    let activation: Activation = args.activation.parse()?;
    let rule = parse_rule(&args.optimizer)?;
    let (dataset, description) = match &args.data {
        Some(path) => (Dataset::from_csv(path)?, path.display().to_string()),
        None => {
            let task: BuiltinTask = args.dataset.parse()?;
            (
                task.generate(args.points, args.seed)?,
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
