//! Plain text for a character-level language model: the text read from a file
//! ([`read_text`]), split into training and validation characters, and cut into
//! [`LmBatch`]es of fixed-length windows ([`lm_batches`]) whose every character is followed
//! by the one the model learns to predict.
//!
//! ```
//! use shadergrad::data::corpus::{lm_batches, split_text};
//! use shadergrad::data::text::Vocab;
//!
//! let text = "to be, or not to be, that is the question";
//! let chars: Vec<char> = text.chars().collect();
//! let (train, valid) = split_text(&chars, 0.9);
//! let vocab = Vocab::from_text(text);
//! let ids = vocab.encode(&train.iter().collect::<String>()).0;
//! for batch in lm_batches(&ids, 8, 2, 0, Some(7))? {
//!     assert_eq!(batch.input.len(), 8 * 2);
//! }
//! # let _ = valid;
//! # Ok::<(), shadergrad::Error>(())
//! ```

use std::path::Path;

use super::reading::text_warnings;
use super::{permutation, Parsed};
use crate::data::text::PAD;
use crate::rng::Rng;
use crate::{Error, Result};

/// The text of a UTF-8 file; see [`parse_text`] for what is done to it and the errors.
pub fn read_text(path: impl AsRef<Path>) -> Result<Parsed<String>> {
    let path = path.as_ref();
    parse_text(&crate::files::read_text_file(path)?, path)
}

/// The text to learn from, given the whole of a file; `path` only names the file in errors
/// and warnings. A leading UTF-8 byte order mark is dropped and every "\r\n" becomes "\n",
/// so that a file with Windows line ends trains the same model as one with Unix ends (a
/// carriage return elsewhere is kept as a character). A text with nothing but whitespace is
/// an error naming the file. NUL bytes are read as characters, with a
/// [`Warning`](super::Warning).
pub fn parse_text(text: &str, path: &Path) -> Result<Parsed<String>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.trim().is_empty() {
        return Err(Error::format(
            path,
            "is empty; expected some text to learn from",
        ));
    }
    Ok(Parsed {
        contents: text.replace("\r\n", "\n"),
        warnings: text_warnings(text, path),
    })
}

/// The first `train_fraction` of the characters for training, the rest for validation (a
/// split in reading order, so that validation is text the model has not read).
pub fn split_text(chars: &[char], train_fraction: f64) -> (&[char], &[char]) {
    let cut = ((chars.len() as f64 * train_fraction).round() as usize).min(chars.len());
    chars.split_at(cut)
}

/// `batch` windows of `steps` characters, time-major: `input[t * batch + row]` is character
/// `t` of window `row`, and `target` (same layout) the character after it. Windows cut short
/// by the end of the text, and the rows that fill the last batch, are padded with [`PAD`] in
/// both, which the loss ignores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LmBatch {
    /// The number of windows (rows).
    pub batch: usize,
    /// The number of time steps (characters per window).
    pub steps: usize,
    /// The input ids, `[steps, batch]` (time-major).
    pub input: Vec<u32>,
    /// The ids to predict, `[steps, batch]`: each the character after its input.
    pub target: Vec<u32>,
    /// Targets that are not padding.
    pub tokens: usize,
}

impl LmBatch {
    /// The batch cut into `parts` batches of consecutive windows, as equal as can be (the
    /// first ones a window longer), each with this batch's steps: the shares of
    /// data-parallel replicas. Errors when there are fewer windows than parts.
    pub fn shards(&self, parts: usize) -> Result<Vec<LmBatch>> {
        Ok(super::share_rows(self.batch, parts)?
            .into_iter()
            .map(|rows| {
                let target = super::time_major_rows(&self.target, self.batch, rows.clone());
                LmBatch {
                    batch: rows.len(),
                    steps: self.steps,
                    input: super::time_major_rows(&self.input, self.batch, rows),
                    tokens: target.iter().filter(|&&t| t != PAD).count(),
                    target,
                }
            })
            .collect())
    }
}

/// The windows of `ids` starting at `start`, `start + steps`, … (each predicting the `steps`
/// characters after its first), `batch` to an [`LmBatch`]; in a seeded random order when
/// `shuffle` gives a seed, else in reading order. Every character after `start` is a target
/// exactly once.
pub fn lm_batches(
    ids: &[u32],
    steps: usize,
    batch: usize,
    start: usize,
    shuffle: Option<u64>,
) -> Result<Vec<LmBatch>> {
    if steps == 0 || batch == 0 {
        return Err(Error::invalid(
            "lm_batches",
            format!("the window ({steps} steps) and the batch ({batch}) must be at least 1"),
        ));
    }
    // A window needs a character to read and the one after it.
    let starts: Vec<usize> = (start..ids.len().saturating_sub(1))
        .step_by(steps)
        .collect();
    if starts.is_empty() {
        return Err(Error::invalid(
            "lm_batches",
            format!(
                "{} characters from position {start} hold no window: expected at least 2",
                ids.len()
            ),
        ));
    }
    let order = match shuffle {
        Some(seed) => permutation(starts.len(), &mut Rng::new(seed)),
        None => (0..starts.len()).collect(),
    };
    let batches = order
        .chunks(batch)
        .map(|rows| {
            let mut input = vec![PAD; steps * batch];
            let mut target = vec![PAD; steps * batch];
            let mut tokens = 0;
            for (row, &window) in rows.iter().enumerate() {
                let first = starts[window];
                let len = steps.min(ids.len() - 1 - first);
                for t in 0..len {
                    input[t * batch + row] = ids[first + t];
                    target[t * batch + row] = ids[first + t + 1];
                }
                tokens += len;
            }
            LmBatch {
                batch,
                steps,
                input,
                target,
                tokens,
            }
        })
        .collect();
    Ok(batches)
}

/// The perplexity on `valid` of the model that ignores context: each id's frequency in
/// `train` (add-one smoothed over `vocab_size` ids). What a language model must beat.
pub fn unigram_perplexity(train: &[u32], valid: &[u32], vocab_size: usize) -> f64 {
    let mut counts = vec![1.0f64; vocab_size];
    for &id in train {
        if let Some(count) = counts.get_mut(id as usize) {
            *count += 1.0;
        }
    }
    let total: f64 = counts.iter().sum();
    let nll: f64 = valid
        .iter()
        .map(|&id| -(counts.get(id as usize).copied().unwrap_or(1.0) / total).ln())
        .sum();
    (nll / valid.len().max(1) as f64).exp()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_character_after_the_start_is_a_target_once() {
        let ids: Vec<u32> = (10..31).collect(); // 21 ids
        let batches = lm_batches(&ids, 4, 3, 1, Some(5)).unwrap();
        let mut targets: Vec<u32> = batches
            .iter()
            .flat_map(|b| b.target.iter().copied().filter(|&t| t != PAD))
            .collect();
        targets.sort_unstable();
        assert_eq!(targets, (12..31).collect::<Vec<u32>>());
        assert_eq!(batches.iter().map(|b| b.tokens).sum::<usize>(), 19);
        for b in &batches {
            for (&input, &target) in b.input.iter().zip(&b.target) {
                if target != PAD {
                    assert_eq!(target, input + 1);
                }
            }
        }
    }

    #[test]
    fn reading_order_is_time_major_and_padded() {
        let ids: Vec<u32> = (4..11).collect(); // 7 ids: windows at 0, 3 (3 steps) and 6 (none)
        let batches = lm_batches(&ids, 3, 4, 0, None).unwrap();
        assert_eq!(batches.len(), 1);
        let b = &batches[0];
        // rows: [4 5 6]→[5 6 7], [7 8 9]→[8 9 10], then two padding rows
        assert_eq!(b.input, vec![4, 7, 0, 0, 5, 8, 0, 0, 6, 9, 0, 0]);
        assert_eq!(b.target, vec![5, 8, 0, 0, 6, 9, 0, 0, 7, 10, 0, 0]);
        assert_eq!(b.tokens, 6);
        assert!(lm_batches(&ids[..1], 3, 4, 0, None).is_err());
        assert!(lm_batches(&ids, 0, 4, 0, None).is_err());
    }

    #[test]
    fn a_uniform_text_has_the_unigram_perplexity_of_its_alphabet() {
        let train: Vec<u32> = (0..4000).map(|i| i % 4).collect();
        let perplexity = unigram_perplexity(&train, &[0, 1, 2, 3], 4);
        assert!((perplexity - 4.0).abs() < 1e-2, "{perplexity}");
    }
}
