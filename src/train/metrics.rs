//! The metrics file of every `train-*` command (`--metrics FILE`): one JSON object per line
//! per epoch (JSON Lines), appended, so a plot or a later run can read the whole history.
//!
//! ```text
//! {"epoch":1,"step":40,"elapsed_s":1.52,"train_loss":0.91,"val_loss":0.85,"val_accuracy":0.62,"lr":0.01}
//! ```
//!
//! Unlike the other files shadergrad writes, this one is appended to rather than replaced
//! through a temporary file. Each record is one `write_all` of the whole line on a file
//! opened in append mode, then a flush, so a record lands after every earlier line and a
//! reader never sees half of one unless the process dies mid-write; a file whose last line
//! was cut off that way gets a newline first, so the damage stays on that line.
//!
//! JSON has no NaN or infinity: a non-finite number (a diverged loss) is written as `null`.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// The figures of one epoch. The fixed fields come first in every line, in this order, then
/// the `extra` ones in the order they were added; NaN and infinities, which JSON cannot
/// express, are written as `null`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct EpochMetrics {
    /// 1-based epoch number.
    pub epoch: usize,
    /// Optimizer steps taken since the start of training.
    pub step: u64,
    /// Seconds since the start of training.
    pub elapsed_s: f64,
    /// Mean training loss over the epoch.
    pub train_loss: f64,
    /// Loss on the validation split; `None` (written as `null`) when there is none.
    pub val_loss: Option<f64>,
    /// Accuracy on the validation split, a fraction in [0, 1]; `None` when there is none.
    pub val_accuracy: Option<f64>,
    /// Further named figures, e.g. `train_accuracy`, `lr`, `tokens_per_s`.
    #[serde(flatten, serialize_with = "named_fields")]
    pub extra: Vec<(String, f64)>,
}

/// `extra`'s figures as fields of the record, in their order.
fn named_fields<S: serde::Serializer>(
    extra: &[(String, f64)],
    serializer: S,
) -> std::result::Result<S::Ok, S::Error> {
    serializer.collect_map(extra.iter().map(|(name, value)| (name, value)))
}

/// The names of the fixed fields, which no extra field may take.
pub const FIXED_FIELDS: [&str; 6] = [
    "epoch",
    "step",
    "elapsed_s",
    "train_loss",
    "val_loss",
    "val_accuracy",
];

impl EpochMetrics {
    /// Adds the extra field `name`.
    pub fn with(mut self, name: impl Into<String>, value: f64) -> Self {
        self.extra.push((name.into(), value));
        self
    }

    /// The record as one line of JSON, without the newline. Fails when an extra field repeats
    /// a name, as JSON objects with duplicate keys are read differently by different parsers.
    pub fn to_json_line(&self) -> Result<String> {
        let mut seen: Vec<&str> = FIXED_FIELDS.to_vec();
        for (name, _) in &self.extra {
            if seen.contains(&name.as_str()) {
                return Err(Error::invalid(
                    "metrics",
                    format!("the field {name:?} appears twice in one record"),
                ));
            }
            seen.push(name);
        }
        serde_json::to_string(self).map_err(|e| {
            Error::invalid("metrics", format!("cannot encode the record as JSON: {e}"))
        })
    }
}

/// A metrics file open for appending.
#[derive(Debug)]
pub struct MetricsFile {
    path: PathBuf,
    file: File,
}

impl MetricsFile {
    /// Opens `path` for appending, creating it if needed. Records already there are kept; if
    /// the last one was cut off mid-line, a newline is added so the next record starts clean.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let io_error = |source| Error::Io {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(io_error)?;
        if file.seek(SeekFrom::End(0)).map_err(io_error)? > 0 {
            file.seek(SeekFrom::End(-1)).map_err(io_error)?;
            let mut last = [0u8];
            file.read_exact(&mut last).map_err(io_error)?;
            if last[0] != b'\n' {
                file.write_all(b"\n").map_err(io_error)?;
            }
        }
        Ok(MetricsFile { path, file })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `record` as one line, with one write, and flushes it.
    pub fn append(&mut self, record: &EpochMetrics) -> Result<()> {
        let mut line = record.to_json_line()?;
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .and_then(|()| self.file.flush())
            .map_err(|source| Error::Io {
                path: self.path.clone(),
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn record() -> EpochMetrics {
        EpochMetrics {
            epoch: 2,
            step: 80,
            elapsed_s: 3.25,
            train_loss: 0.5,
            val_loss: Some(0.625),
            val_accuracy: None,
            extra: Vec::new(),
        }
    }

    #[test]
    fn fixed_fields_come_first_in_order_then_the_extras() {
        let line = record()
            .with("lr", 0.01)
            .with("tokens_per_s", 1500.0)
            .to_json_line()
            .unwrap();
        assert_eq!(
            line,
            r#"{"epoch":2,"step":80,"elapsed_s":3.25,"train_loss":0.5,"val_loss":0.625,"val_accuracy":null,"lr":0.01,"tokens_per_s":1500.0}"#
        );
    }

    #[test]
    fn non_finite_numbers_become_null() {
        let mut diverged = record().with("grad_norm", f64::INFINITY);
        diverged.train_loss = f64::NAN;
        diverged.val_loss = Some(f64::NEG_INFINITY);
        let parsed: Value = serde_json::from_str(&diverged.to_json_line().unwrap()).unwrap();
        assert_eq!(parsed["train_loss"], Value::Null);
        assert_eq!(parsed["val_loss"], Value::Null);
        assert_eq!(parsed["grad_norm"], Value::Null);
        assert_eq!(parsed["elapsed_s"], 3.25);
    }

    #[test]
    fn repeated_names_are_refused() {
        let error = record()
            .with("lr", 0.1)
            .with("lr", 0.2)
            .to_json_line()
            .unwrap_err();
        assert!(
            error.to_string().contains("\"lr\" appears twice"),
            "{error}"
        );
        let error = record().with("val_loss", 0.1).to_json_line().unwrap_err();
        assert!(error.to_string().contains("\"val_loss\""), "{error}");
    }

    #[test]
    fn names_are_escaped() {
        let line = record().with("odd \"name\"\n", 1.0).to_json_line().unwrap();
        let parsed: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(parsed["odd \"name\"\n"], 1.0);
    }
}
