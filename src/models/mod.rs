//! Models ready to train and run: each owns its parameters on the GPU, compiles a plan per
//! batch shape on first use (every plan binding the same parameter tensors, so one
//! optimizer trains them all), saves and loads checkpoints, and decodes, samples or
//! classifies.
//!
//! - [`seq2seq`]: the recurrent encoder-decoder or Transformer of [`crate::nn::seq2seq`],
//!   with greedy and beam-search decoding;
//! - [`charlm`]: the character-level language model of [`crate::nn::charlm`], with
//!   sampling;
//! - [`textcnn`]: the n-gram CNN text classifier of [`crate::nn::textcnn`].
//!
//! The training loops that drive them (epochs, early stopping, progress, metrics) are the
//! command line's, in `train` (the `cli` feature).

pub mod charlm;
pub mod seq2seq;
pub mod textcnn;

use serde_json::Value;

use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::graph::OPTIMIZER_PREFIX;

/// Checks, before a model is built from a checkpoint, that the parameter count its config
/// implies (`counted`, from the sizes alone) is what its tensors hold: a config edited to
/// absurd sizes, or one of another checkpoint, is refused before it allocates anything.
pub fn check_config_against_tensors(checkpoint: &Checkpoint, counted: Result<u64>) -> Result<()> {
    let stored: u64 = checkpoint
        .tensors
        .iter()
        .filter(|t| !t.name.starts_with(OPTIMIZER_PREFIX))
        .map(|t| t.data.len() as u64)
        .sum();
    let mismatch = |counted: String| {
        Error::format(
            &checkpoint.path,
            format!(
                "the config's architecture {} implies {counted} parameters, its tensors hold \
                 {stored}: the config was edited or belongs to another model",
                checkpoint
                    .config
                    .get("architecture")
                    .map_or("(none)".to_string(), Value::to_string)
            ),
        )
    };
    match counted {
        Ok(counted) if counted == stored => Ok(()),
        Ok(counted) => Err(mismatch(counted.to_string())),
        Err(error) => Err(mismatch(format!("an impossible number of ({error})"))),
    }
}

/// The index of the largest value of `row` (the first of equal ones): a classifier's
/// prediction from its logits.
pub fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
            if v > best.1 {
                (i, v)
            } else {
                best
            }
        })
        .0
}
