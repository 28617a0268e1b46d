//! `shadergrad train-mlp`: the multi-layer perceptron on 2-D points or a CSV.

use std::path::PathBuf;

use clap::Args;
use serde_json::json;
use shadergrad::data::points::BuiltinTask;
use shadergrad::data::{Dataset, LastBatch, Standardizer};
use shadergrad::optim::{OptimizerConfig, Schedule};
use shadergrad::train::mlp::{train_mlp_parallel, MlpTraining};
use shadergrad::{AdapterSelector, Error};

use super::choice::{self, typed_name};
use super::parallel::{run_training, ParallelArgs, Placement};
use super::{
    check_resume_agrees, check_training_files, finite_f32, finite_f64, print_progress,
    print_warnings, Typed,
};

#[derive(Args)]
#[command(allow_negative_numbers = true)]
pub(crate) struct TrainMlpArgs {
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
    #[command(flatten)]
    parallel: ParallelArgs,
}

/// `train-mlp`: loads or generates the data, trains, prints the accuracies.
pub(crate) fn train_mlp_command(
    selector: &AdapterSelector,
    args: TrainMlpArgs,
    typed: &Typed,
) -> shadergrad::Result<()> {
    let parallel = args.parallel.clone();
    run_training("train-mlp", selector, &parallel, |placement| {
        train_mlp_on(args, typed, placement)
    })
}

/// `train-mlp` where `placement` says.
fn train_mlp_on(args: TrainMlpArgs, typed: &Typed, placement: Placement) -> shadergrad::Result<()> {
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
    let gpus = placement.devices("train-mlp")?;
    if placement.leads() {
        say!(
            "train-mlp: {} training and {} test examples of {} features, {} classes",
            train.n,
            test.n,
            train.dim,
            train.classes.max(test.classes)
        );
    }
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
    let result = train_mlp_parallel(&gpus, placement.collective, &config)?;
    if !placement.leads() {
        return Ok(());
    }
    out!(
        "train accuracy {:.2}%, test accuracy {:.2}% (test loss {:.4}) after {} steps in {:.1} s",
        100.0 * result.train_accuracy,
        100.0 * result.test_accuracy,
        result.final_loss,
        result.steps,
        result.seconds
    )
}
