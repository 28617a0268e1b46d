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

use std::collections::BTreeMap;

use crate::checkpoint::{Checkpoint, NamedTensor};
use crate::error::{Error, Result};
use crate::graph::OPTIMIZER_PREFIX;
use crate::nn::Parameters;

/// What a checkpoint's config records (`"weight_layout"`) once its parameters follow
/// PyTorch's names and layouts; checkpoints of a model without it are older.
pub const WEIGHT_LAYOUT: &str = "pytorch";

/// One parameter of a checkpoint from before PyTorch's names and layouts: its old name,
/// its name today, whether its matrix is transposed today (`[in, out]` then, `[out, in]`
/// now), and whether it is now one block of a stacked tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyName {
    /// The name the older build saved.
    pub old: String,
    /// The name today.
    pub new: String,
    /// Whether the matrix is stored transposed today.
    pub transposed: bool,
    /// `Some((k, n))`: the tensor is now block k of n stacked along the first axis of `new`
    /// (the query, key and value projections in `in_proj_weight`).
    pub block: Option<(usize, usize)>,
}

impl LegacyName {
    /// `old` saved as `new`, transposed or not.
    pub fn new(old: impl Into<String>, new: impl Into<String>, transposed: bool) -> Self {
        LegacyName {
            old: old.into(),
            new: new.into(),
            transposed,
            block: None,
        }
    }

    /// `old` saved as block `k` of the `n` stacked along the first axis of `new`.
    pub fn stacked(
        old: impl Into<String>,
        new: impl Into<String>,
        transposed: bool,
        (k, n): (usize, usize),
    ) -> Self {
        LegacyName {
            block: Some((k, n)),
            ..LegacyName::new(old, new, transposed)
        }
    }
}

/// A recurrent layer's four parameters as the older build made them, in its order
/// (`{old}.input.weight` `[in, G·H]`, `.input.bias`, `.recurrent.weight` `[H, G·H]`,
/// `.recurrent.bias`), and their names today (`{new}.weight_ih_{suffix}`, …).
pub fn legacy_recurrent_layer(old: &str, new: &str, suffix: &str) -> [LegacyName; 4] {
    [
        LegacyName::new(
            format!("{old}.input.weight"),
            format!("{new}.weight_ih_{suffix}"),
            true,
        ),
        LegacyName::new(
            format!("{old}.input.bias"),
            format!("{new}.bias_ih_{suffix}"),
            false,
        ),
        LegacyName::new(
            format!("{old}.recurrent.weight"),
            format!("{new}.weight_hh_{suffix}"),
            true,
        ),
        LegacyName::new(
            format!("{old}.recurrent.bias"),
            format!("{new}.bias_hh_{suffix}"),
            false,
        ),
    ]
}

/// `checkpoint` in today's names and layouts. Unless its config records [`WEIGHT_LAYOUT`],
/// every parameter named in `legacy` (the older build's parameters, in the order it made
/// them) is renamed and transposed as it says, and the optimizer's state of each
/// (`optimizer.{index}.…`, by that order) is renamed after it and transposed alike. Then
/// optimizer state still keyed by index (`optimizer.3.exp_avg`, as saved before the state
/// was keyed by name) is keyed by the name of the parameter at that index in `parameters`.
/// Tensors it does not know are left for the load to name.
pub fn upgrade_legacy_checkpoint(
    checkpoint: &Checkpoint,
    legacy: &[LegacyName],
    parameters: &Parameters,
) -> Result<Checkpoint> {
    let layout = checkpoint
        .config
        .get("weight_layout")
        .and_then(Value::as_str);
    let mut upgraded = if layout == Some(WEIGHT_LAYOUT) {
        checkpoint.clone()
    } else {
        upgrade_weight_layout(checkpoint, legacy)?
    };
    let order: Vec<String> = parameters
        .list()
        .iter()
        .map(|p| p.name().to_string())
        .collect();
    key_optimizer_state_by_name(&mut upgraded, &order);
    Ok(upgraded)
}

/// Renames `optimizer.{index}.{state}` to `optimizer.{name}.{state}`, `name` the
/// parameter at that index of `order`, unless the key already is a parameter's name.
fn key_optimizer_state_by_name(checkpoint: &mut Checkpoint, order: &[String]) {
    for tensor in &mut checkpoint.tensors {
        let Some((key, state)) = tensor
            .name
            .strip_prefix(OPTIMIZER_PREFIX)
            .and_then(|rest| rest.rsplit_once('.'))
        else {
            continue;
        };
        if order.iter().any(|name| name == key) {
            continue;
        }
        if let Some(name) = key.parse::<usize>().ok().and_then(|index| order.get(index)) {
            tensor.name = format!("{OPTIMIZER_PREFIX}{name}.{state}");
        }
    }
    checkpoint.tensors.sort_by(|a, b| a.name.cmp(&b.name));
}

/// The renames, transposes and stacks of [`upgrade_legacy_checkpoint`] for a checkpoint
/// from before PyTorch's layouts, and its optimizer state named after its parameters.
fn upgrade_weight_layout(checkpoint: &Checkpoint, legacy: &[LegacyName]) -> Result<Checkpoint> {
    let mut upgraded = checkpoint.clone();
    // Blocks of stacked tensors, by their name today, until every block has come.
    let mut stacks: BTreeMap<String, Vec<Option<NamedTensor>>> = BTreeMap::new();
    let mut tensors = Vec::with_capacity(upgraded.tensors.len());
    for mut tensor in std::mem::take(&mut upgraded.tensors) {
        let optimizer_state = tensor
            .name
            .strip_prefix(OPTIMIZER_PREFIX)
            .and_then(|rest| rest.split_once('.'))
            .and_then(|(index, state)| Some((index.parse::<usize>().ok()?, state.to_string())));
        let entry = match &optimizer_state {
            Some((index, _)) => legacy.get(*index),
            None => legacy.iter().find(|entry| entry.old == tensor.name),
        };
        let Some(entry) = entry else {
            tensors.push(tensor); // not a parameter of the older build: the load names it
            continue;
        };
        let name = match optimizer_state {
            None => entry.new.clone(),
            Some((_, state)) => format!("{OPTIMIZER_PREFIX}{}.{state}", entry.new),
        };
        if entry.transposed {
            tensor = tensor.transposed()?;
        }
        tensor.name = name;
        match entry.block {
            None => tensors.push(tensor),
            Some((k, n)) => {
                let blocks = stacks
                    .entry(tensor.name.clone())
                    .or_insert_with(|| vec![None; n]);
                if let Some(slot) = blocks.get_mut(k) {
                    *slot = Some(tensor);
                }
            }
        }
    }
    for (name, blocks) in stacks {
        let blocks: Vec<NamedTensor> = blocks
            .into_iter()
            .enumerate()
            .map(|(k, block)| {
                block.ok_or_else(|| {
                    Error::format(
                        &checkpoint.path,
                        format!("block {k} of {name:?} is missing from the checkpoint"),
                    )
                })
            })
            .collect::<Result<_>>()?;
        tensors.push(stack(&checkpoint.path, name, &blocks)?);
    }
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    upgraded.tensors = tensors;
    if let Some(config) = upgraded.config.as_object_mut() {
        config.insert("weight_layout".into(), WEIGHT_LAYOUT.into());
    }
    Ok(upgraded)
}

/// `blocks` of one shape stacked along their first axis, as `name`.
fn stack(path: &std::path::Path, name: String, blocks: &[NamedTensor]) -> Result<NamedTensor> {
    let first = &blocks[0].shape;
    let mut values = Vec::new();
    for block in blocks {
        if block.shape != *first {
            return Err(Error::format(
                path,
                format!(
                    "the blocks of {name:?} differ in shape: {:?} and {first:?}",
                    block.shape
                ),
            ));
        }
        values.extend_from_slice(block.as_f32()?);
    }
    let mut shape = first.clone();
    if let Some(rows) = shape.first_mut() {
        *rows *= blocks.len();
    }
    Ok(NamedTensor::new(name, &shape, values))
}

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
