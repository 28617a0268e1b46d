//! `shadergrad train-cnn`: the n-gram CNN text classifier.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::json;
use shadergrad::data::classify::{
    read_labelled_tsv, split_examples, ClassifyTask, LabelledText, Labels,
};
use shadergrad::optim::OptimizerConfig;
use shadergrad::train::cnn::{train_cnn_parallel, CnnTraining};
use shadergrad::{AdapterSelector, Error};

use super::choice;
use super::parallel::{run_training, ParallelArgs, Placement};
use super::{
    check_resume_agrees, check_training_files, finite_f32, finite_f64, print_progress,
    print_warnings, Typed,
};

#[derive(Args)]
#[command(allow_negative_numbers = true)]
pub(crate) struct TrainCnnArgs {
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
    #[command(flatten)]
    parallel: ParallelArgs,
}

/// `train-cnn`: generates or reads the labelled texts, trains, prints the validation
/// accuracy.
pub(crate) fn train_cnn_command(
    selector: &AdapterSelector,
    args: TrainCnnArgs,
    typed: &Typed,
) -> shadergrad::Result<()> {
    let parallel = args.parallel.clone();
    run_training("train-cnn", selector, &parallel, |placement| {
        train_cnn_on(args, typed, placement)
    })
}

/// `train-cnn` where `placement` says.
fn train_cnn_on(args: TrainCnnArgs, typed: &Typed, placement: Placement) -> shadergrad::Result<()> {
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
    let gpus = placement.devices("train-cnn")?;
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
    let result = train_cnn_parallel(&gpus, placement.collective, &config)?;
    if !placement.leads() {
        return Ok(());
    }
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
