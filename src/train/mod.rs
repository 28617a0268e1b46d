//! The command line's trainers, one per `train-*` command ([`mlp`], [`cnn`], [`charlm`],
//! [`seq2seq`]): each takes its settings as one struct, runs the epochs (resuming from a
//! checkpoint if asked), saves checkpoints and returns what the run reached.
//!
//! Training's reporting, shared by every trainer: the per-epoch [`metrics`] file
//! (`--metrics FILE`, JSON Lines) and the [`progress`] display on stderr.
//!
//! This module exists only with the `cli` feature (on by default).

/// `eprintln!` that cannot panic: a closed or full stderr (`… 2>&1 | head`) loses the
/// message, never the training.
macro_rules! note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

pub mod charlm;
pub mod cnn;
pub mod metrics;
pub mod mlp;
pub(crate) mod parallel;
pub mod progress;
pub mod seq2seq;

pub use metrics::{EpochMetrics, MetricsFile};
pub use progress::{format_progress, Drawing, Progress, ProgressState};

use serde_json::Value;

use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::graph::OPTIMIZER_PREFIX;
use crate::optim::Optimizer;
use crate::tensor::Tensor;

/// A number of a checkpoint's `training` record (the epoch reached, the best validation
/// score, …), as every trainer saves it.
pub fn training_number(checkpoint: &Checkpoint, key: &str) -> Option<f64> {
    checkpoint
        .config
        .get("training")
        .and_then(|training| training.get(key))
        .and_then(Value::as_f64)
}

/// The epoch a checkpoint was saved after: a resumed run goes on with the next one.
fn resumed_epoch(checkpoint: &Checkpoint) -> Result<usize> {
    match training_number(checkpoint, "epoch") {
        Some(epoch) if epoch >= 0.0 && epoch.fract() == 0.0 && epoch <= 1e9 => Ok(epoch as usize),
        _ => Err(Error::format(
            &checkpoint.path,
            "the config's training record has no valid \"epoch\": it cannot be resumed",
        )),
    }
}

/// The first epoch a run resumed from `checkpoint` trains, once `epochs` (the last epoch
/// asked for) leaves it one to train; `command` names the trainer in errors.
pub fn first_resumed_epoch(
    checkpoint: &Checkpoint,
    epochs: Option<usize>,
    command: &'static str,
) -> Result<usize> {
    let done = resumed_epoch(checkpoint)?;
    match epochs {
        Some(epochs) if epochs <= done => Err(Error::invalid(
            command,
            format!(
                "{} was saved after epoch {done}: --epochs {epochs} leaves nothing to train; ask \
                 for more epochs",
                checkpoint.path.display()
            ),
        )),
        _ => Ok(done + 1),
    }
}

/// Loads the optimizer state a checkpoint holds (its tensors under [`OPTIMIZER_PREFIX`]
/// and the step count of `training.optimizer_step`) into `optimizer`, which must be of the
/// rule it was saved by; `command` names the trainer in errors.
pub fn resume_optimizer(
    gpu: &Gpu,
    optimizer: &mut Optimizer,
    checkpoint: &Checkpoint,
    command: &'static str,
) -> Result<u64> {
    let state: Vec<(String, Tensor)> = checkpoint
        .tensors
        .iter()
        .filter_map(|t| t.name.strip_prefix(OPTIMIZER_PREFIX).map(|name| (name, t)))
        .map(|(name, t)| Ok((name.to_string(), t.upload(gpu)?)))
        .collect::<Result<_>>()?;
    let step = match training_number(checkpoint, "optimizer_step") {
        Some(step) if step >= 0.0 && step.fract() == 0.0 && step <= 1e15 => step as u64,
        _ => {
            return Err(Error::format(
                &checkpoint.path,
                "the config's training record has no valid \"optimizer_step\": it cannot be \
                 resumed",
            ))
        }
    };
    optimizer.load_state(step, &state).map_err(|e| {
        let trained_with = checkpoint
            .config
            .get("training")
            .and_then(|t| t.get("optimizer"))
            .and_then(Value::as_str)
            .unwrap_or("unknown");
        Error::invalid(
            command,
            format!(
                "{e}; the checkpoint's optimizer state is from {trained_with}: resume with the \
                 optimizer it was trained with"
            ),
        )
    })?;
    Ok(step)
}
