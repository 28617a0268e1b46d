//! Labelled examples for classification: a [`Dataset`] of feature rows with one class label
//! each, a stratified train/test [`split`](Dataset::split), seeded
//! [`batches`](Dataset::batches) of a fixed shape, and feature [`Standardizer`]s.
//!
//! The examples come from the built-in 2-D tasks of [`points`] (spirals, XOR, circles) or
//! from the user's own CSV file ([`Dataset::from_csv`]).
//!
//! Sequence-to-sequence pairs (source text → target text) live in [`text`]: built-in tasks,
//! TSV files, a character vocabulary and batches bucketed by length. Labelled texts for
//! classification live in [`classify`]: a built-in task, TSV files, a word vocabulary and
//! padded batches. Plain text for a character-level language model, in windows of fixed
//! length, lives in [`corpus`].
//!
//! Every reader of a user's file returns a [`Parsed`]: what it read, and the [`Warning`]s
//! for the caller to show (the library never prints). The readers share their rules: lines
//! end in "\n" or "\r\n" (a lone "\r" is an error naming its line), a UTF-8 byte order
//! mark is dropped, NUL bytes are read with a warning, and each format's limits are checked
//! as the file is read, so that a bad line is an error naming the file and the line before
//! anything trains ([`text::MAX_SEQUENCE_CHARS`], [`classify::MAX_TEXT_WORDS`],
//! [`classify::MAX_LABEL_CHARS`], [`points::MAX_FEATURES`], [`points::MAX_LABEL`]). Every
//! built-in generator checks the examples asked for against the memory free before it
//! draws one, and hands its [`GenerationProgress`] to a callback when it takes over two
//! seconds.
//!
//! ```
//! use shadergrad::data::{points::Spirals, LastBatch, Standardizer};
//!
//! let data = Spirals::default().generate(7)?;
//! let (mut train, mut test) = data.split(0.8, 7)?;
//! let scaler = Standardizer::fit(&train)?;
//! scaler.transform(&mut train)?;
//! scaler.transform(&mut test)?;
//! for epoch in 0..2 {
//!     for batch in train.batches(32, LastBatch::Drop, 7, epoch)? {
//!         assert_eq!(batch.labels.len(), 32);
//!     }
//! }
//! # Ok::<(), shadergrad::Error>(())
//! ```

pub mod classify;
pub mod corpus;
mod generating;
pub mod points;
mod reading;
pub mod text;
pub mod tokens;

pub use generating::GenerationProgress;
pub use reading::{Parsed, Warning};

use std::path::Path;

use crate::files::write_atomically;
use crate::rng::Rng;
use crate::{Error, Result};

/// `n` examples of `dim` features each, every one labelled with a class below `classes`.
///
/// The fields are public so that a caller can hand `features` to the GPU as they are; the
/// methods check the invariants below and return an error, not a panic, when they are broken.
/// - `features.len() == n * dim`, row-major: example `i` is `features[i * dim..(i + 1) * dim]`;
/// - `labels.len() == n`, each below `classes`.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// The features, `[n, dim]` row-major.
    pub features: Vec<f32>,
    /// The class of each example, `[n]`, each below `classes`.
    pub labels: Vec<u32>,
    /// The number of examples.
    pub n: usize,
    /// The number of features per example.
    pub dim: usize,
    /// The number of classes: labels run over `0..classes`.
    pub classes: usize,
}

/// What [`Dataset::batches`] does with the examples left over when the batch size does not
/// divide the number of examples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LastBatch {
    /// Leaves them out of this epoch. Every batch is full, as a graph built for one batch
    /// shape needs; the shuffle differs between epochs, so no example is left out every time.
    Drop,
    /// Yields them as a smaller last batch (for code that is not tied to one batch shape).
    Keep,
    /// Fills the last batch up to the batch size with rows of zero features labelled `label`.
    /// Pass the loss's ignore index (see [`crate::SoftmaxCrossEntropy::ignore_index`]) so the
    /// padding adds nothing to the loss or its gradient; [`Batch::real`] counts the real rows,
    /// which come first, for accuracy.
    Pad {
        /// The label of the padding rows: the loss's ignore index.
        label: u32,
    },
}

/// One mini-batch, gathered into contiguous rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// `rows × dim` features, row-major; padding rows are zeros.
    pub features: Vec<f32>,
    /// One label per row; padding rows carry the [`LastBatch::Pad`] label.
    pub labels: Vec<u32>,
    /// The dataset row of each real example, in batch order (padding rows have none).
    pub indices: Vec<usize>,
}

impl Batch {
    /// The batch cut into `parts` batches of consecutive rows, as equal as can be (the
    /// first ones a row longer): the shares of data-parallel replicas. Errors when there
    /// are fewer rows than parts.
    pub fn shards(&self, parts: usize) -> Result<Vec<Batch>> {
        let dim = self.features.len() / self.rows().max(1);
        let real = self.real();
        Ok(share_rows(self.rows(), parts)?
            .into_iter()
            .map(|rows| Batch {
                features: self.features[rows.start * dim..rows.end * dim].to_vec(),
                labels: self.labels[rows.clone()].to_vec(),
                indices: self.indices[rows.start.min(real)..rows.end.min(real)].to_vec(),
            })
            .collect())
    }

    /// Rows in the batch, padding included.
    pub fn rows(&self) -> usize {
        self.labels.len()
    }

    /// Real (not padding) rows; they are the first ones.
    pub fn real(&self) -> usize {
        self.indices.len()
    }
}

impl Dataset {
    /// A dataset of `labels.len()` examples, checking that `features` holds that many rows of
    /// `dim` values and that every label is below `classes`.
    pub fn new(features: Vec<f32>, labels: Vec<u32>, dim: usize, classes: usize) -> Result<Self> {
        let dataset = Dataset {
            n: labels.len(),
            features,
            labels,
            dim,
            classes,
        };
        dataset.validate()?;
        Ok(dataset)
    }

    /// Reads the user's examples from a CSV file: on each line the features, then an integer
    /// class label; a header line is allowed. See [`points::parse_csv`] for the details.
    pub fn from_csv(path: impl AsRef<Path>) -> Result<Parsed<Dataset>> {
        points::read_csv(path.as_ref())
    }

    /// Checks the invariants listed on [`Dataset`].
    pub fn validate(&self) -> Result<()> {
        if self.dim == 0 {
            return Err(Error::invalid(
                "dataset",
                "an example needs at least one feature (dim is 0)",
            ));
        }
        if self.labels.len() != self.n || self.n.checked_mul(self.dim) != Some(self.features.len())
        {
            return Err(Error::invalid(
                "dataset",
                format!(
                    "{} examples of {} features need {} features and {} labels, found {} and {}",
                    self.n,
                    self.dim,
                    self.n.saturating_mul(self.dim),
                    self.n,
                    self.features.len(),
                    self.labels.len()
                ),
            ));
        }
        if let Some((row, &label)) = self
            .labels
            .iter()
            .enumerate()
            .find(|(_, &label)| label as usize >= self.classes)
        {
            return Err(Error::invalid(
                "dataset",
                format!(
                    "example {row} has label {label}, expected one below {} classes",
                    self.classes
                ),
            ));
        }
        Ok(())
    }

    /// The features of example `i` (panics when `i >= n`, like slice indexing).
    pub fn row(&self, i: usize) -> &[f32] {
        &self.features[i * self.dim..(i + 1) * self.dim]
    }

    /// How many examples each class has.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes];
        for &label in &self.labels {
            counts[label as usize] += 1;
        }
        counts
    }

    /// The examples at `indices`, in that order (repeats allowed).
    pub fn subset(&self, indices: &[usize]) -> Result<Dataset> {
        self.validate()?;
        if let Some(&bad) = indices.iter().find(|&&i| i >= self.n) {
            return Err(Error::invalid(
                "dataset subset",
                format!("index {bad} is out of range for {} examples", self.n),
            ));
        }
        let mut features = Vec::with_capacity(indices.len() * self.dim);
        for &i in indices {
            features.extend_from_slice(self.row(i));
        }
        let labels = indices.iter().map(|&i| self.labels[i]).collect();
        Dataset::new(features, labels, self.dim, self.classes)
    }

    /// Reorders the examples by a permutation drawn from `seed`.
    pub fn shuffle(&mut self, seed: u64) -> Result<()> {
        let order = permutation(self.n, &mut Rng::new(seed));
        *self = self.subset(&order)?;
        Ok(())
    }

    /// Splits into (train, test) with `train_fraction` of every class in train, rounded to
    /// the nearest example, and the rest in test (a stratified split: both keep the class
    /// balance). Which examples go where, and the order of each part, follow from `seed`.
    pub fn split(&self, train_fraction: f64, seed: u64) -> Result<(Dataset, Dataset)> {
        self.validate()?;
        if !(train_fraction > 0.0 && train_fraction < 1.0) {
            return Err(Error::invalid(
                "dataset split",
                format!(
                    "the train fraction must lie strictly between 0 and 1, got {train_fraction}"
                ),
            ));
        }
        let mut rng = Rng::new(seed);
        let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); self.classes];
        for (i, &label) in self.labels.iter().enumerate() {
            by_class[label as usize].push(i);
        }
        let (mut train, mut test) = (Vec::new(), Vec::new());
        for members in &by_class {
            let order = permutation(members.len(), &mut rng);
            let train_count = (members.len() as f64 * train_fraction).round() as usize;
            train.extend(order[..train_count].iter().map(|&k| members[k]));
            test.extend(order[train_count..].iter().map(|&k| members[k]));
        }
        if train.is_empty() || test.is_empty() {
            return Err(Error::invalid(
                "dataset split",
                format!(
                    "a train fraction of {train_fraction} of {} examples leaves {} for training and {} for testing; both need at least one",
                    self.n,
                    train.len(),
                    test.len()
                ),
            ));
        }
        // The parts were gathered class by class; interleave the classes again.
        let train_order = permutation(train.len(), &mut rng);
        let test_order = permutation(test.len(), &mut rng);
        let train: Vec<usize> = train_order.iter().map(|&k| train[k]).collect();
        let test: Vec<usize> = test_order.iter().map(|&k| test[k]).collect();
        Ok((self.subset(&train)?, self.subset(&test)?))
    }

    /// How many batches one epoch of [`Dataset::batches`] yields.
    pub fn batch_count(&self, batch_size: usize, last: LastBatch) -> usize {
        if batch_size == 0 {
            return 0;
        }
        match last {
            LastBatch::Drop => self.n / batch_size,
            LastBatch::Keep | LastBatch::Pad { .. } => self.n.div_ceil(batch_size),
        }
    }

    /// The mini-batches of epoch `epoch`: every example once (but for those [`LastBatch::Drop`]
    /// leaves out), in an order drawn from `seed` and `epoch`, so each epoch is shuffled
    /// differently and the same (seed, epoch) always gives the same batches.
    pub fn batches(
        &self,
        batch_size: usize,
        last: LastBatch,
        seed: u64,
        epoch: u64,
    ) -> Result<Batches<'_>> {
        let order = permutation(self.n, &mut Rng::new(epoch_seed(seed, epoch)));
        self.batches_of(order, batch_size, last)
    }

    /// The mini-batches in dataset order, for evaluation.
    pub fn batches_in_order(&self, batch_size: usize, last: LastBatch) -> Result<Batches<'_>> {
        self.batches_of((0..self.n).collect(), batch_size, last)
    }

    fn batches_of(
        &self,
        order: Vec<usize>,
        batch_size: usize,
        last: LastBatch,
    ) -> Result<Batches<'_>> {
        self.validate()?;
        if batch_size == 0 {
            return Err(Error::invalid(
                "batches",
                "the batch size must be at least 1",
            ));
        }
        if self.n == 0 {
            return Err(Error::invalid("batches", "the dataset has no examples"));
        }
        if self.batch_count(batch_size, last) == 0 {
            return Err(Error::invalid(
                "batches",
                format!(
                    "{} examples make no batch of {batch_size} when the last partial batch is dropped; \
                     use a batch size of at most {} or keep or pad the last batch",
                    self.n, self.n
                ),
            ));
        }
        Ok(Batches {
            dataset: self,
            order,
            batch_size,
            last,
            next: 0,
        })
    }

    /// Writes the dataset as CSV: a header `x0,x1,…,label`, then one line per example with its
    /// features and label. [`Dataset::from_csv`] reads it back exactly (each f32 is written in
    /// its shortest form that parses back to the same value) when it has the two labels or
    /// more and at most [`points::MAX_FEATURES`] features that reading needs. The file is written to a
    /// temporary file beside it and renamed, so it is never seen half-written.
    pub fn write_csv(&self, path: impl AsRef<Path>) -> Result<()> {
        self.validate()?;
        let mut text = String::new();
        for column in 0..self.dim {
            text.push_str(&format!("x{column},"));
        }
        text.push_str("label\n");
        for i in 0..self.n {
            for value in self.row(i) {
                text.push_str(&format!("{value},"));
            }
            text.push_str(&format!("{}\n", self.labels[i]));
        }
        write_atomically(path.as_ref(), text.as_bytes())
    }
}

/// Iterator over the batches of one epoch; see [`Dataset::batches`].
#[derive(Debug)]
pub struct Batches<'a> {
    dataset: &'a Dataset,
    order: Vec<usize>,
    batch_size: usize,
    last: LastBatch,
    next: usize,
}

impl Iterator for Batches<'_> {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        let remaining = self.order.len() - self.next;
        if remaining == 0 || (remaining < self.batch_size && self.last == LastBatch::Drop) {
            return None;
        }
        let take = remaining.min(self.batch_size);
        let indices = self.order[self.next..self.next + take].to_vec();
        self.next += take;
        let dim = self.dataset.dim;
        let rows = match self.last {
            LastBatch::Pad { .. } => self.batch_size,
            LastBatch::Drop | LastBatch::Keep => take,
        };
        let mut features = Vec::with_capacity(rows * dim);
        let mut labels = Vec::with_capacity(rows);
        for &i in &indices {
            features.extend_from_slice(self.dataset.row(i));
            labels.push(self.dataset.labels[i]);
        }
        if let LastBatch::Pad { label } = self.last {
            features.resize(rows * dim, 0.0);
            labels.resize(rows, label);
        }
        Some(Batch {
            features,
            labels,
            indices,
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let remaining = self.order.len() - self.next;
        let count = match self.last {
            LastBatch::Drop => remaining / self.batch_size,
            LastBatch::Keep | LastBatch::Pad { .. } => remaining.div_ceil(self.batch_size),
        };
        (count, Some(count))
    }
}

impl ExactSizeIterator for Batches<'_> {}

/// Per-feature mean and standard deviation, to map every feature to mean 0 and standard
/// deviation 1. Fit it on the training split only and transform every split with it, so the
/// test examples are scaled exactly as the model saw its training examples; keep it with the
/// model for the same reason.
#[derive(Debug, Clone, PartialEq)]
pub struct Standardizer {
    /// The mean of each feature over the examples it was fitted on, `[dim]`.
    pub mean: Vec<f32>,
    /// The population standard deviation (dividing by n, as scikit-learn's StandardScaler);
    /// 1 for a feature that is constant, which is then only centred.
    pub std: Vec<f32>,
}

impl Standardizer {
    /// The statistics of `dataset`'s features (accumulated in f64).
    pub fn fit(dataset: &Dataset) -> Result<Self> {
        dataset.validate()?;
        if dataset.n == 0 {
            return Err(Error::invalid(
                "standardize",
                "cannot fit on a dataset with no examples",
            ));
        }
        let count = dataset.n as f64;
        let mut sum = vec![0.0f64; dataset.dim];
        for i in 0..dataset.n {
            for (total, &value) in sum.iter_mut().zip(dataset.row(i)) {
                *total += f64::from(value);
            }
        }
        let mean: Vec<f64> = sum.iter().map(|total| total / count).collect();
        let mut squares = vec![0.0f64; dataset.dim];
        for i in 0..dataset.n {
            for ((total, &value), centre) in squares.iter_mut().zip(dataset.row(i)).zip(&mean) {
                *total += (f64::from(value) - centre).powi(2);
            }
        }
        let std = squares
            .iter()
            .map(|total| {
                let std = (total / count).sqrt();
                if std > 0.0 {
                    std as f32
                } else {
                    1.0
                }
            })
            .collect();
        Ok(Standardizer {
            mean: mean.iter().map(|&m| m as f32).collect(),
            std,
        })
    }

    /// Replaces every feature x of `dataset` by (x − mean) / std.
    pub fn transform(&self, dataset: &mut Dataset) -> Result<()> {
        dataset.validate()?;
        if dataset.dim != self.mean.len() || self.std.len() != self.mean.len() {
            return Err(Error::invalid(
                "standardize",
                format!(
                    "statistics of {} features cannot transform examples of {} features",
                    self.mean.len(),
                    dataset.dim
                ),
            ));
        }
        for row in dataset.features.chunks_exact_mut(dataset.dim) {
            for ((value, mean), std) in row.iter_mut().zip(&self.mean).zip(&self.std) {
                *value = (*value - mean) / std;
            }
        }
        Ok(())
    }
}

/// The rows `0..rows` of a batch cut into `parts` ranges of consecutive rows, as equal as
/// can be (the first ones a row longer): the shares of data-parallel replicas. Errors when
/// there are fewer rows than parts, or no parts.
pub fn share_rows(rows: usize, parts: usize) -> Result<Vec<std::ops::Range<usize>>> {
    if parts == 0 || parts > rows {
        return Err(Error::invalid(
            "share_rows",
            format!("{parts} parts of a batch of {rows} rows: expected between 1 and the rows"),
        ));
    }
    let (base, longer) = (rows / parts, rows % parts);
    let mut end = 0;
    Ok((0..parts)
        .map(|part| {
            let start = end;
            end += base + usize::from(part < longer);
            start..end
        })
        .collect())
}

/// Rows `rows` of a time-major `[steps, batch]` array, time-major in turn.
pub fn time_major_rows(values: &[u32], batch: usize, rows: std::ops::Range<usize>) -> Vec<u32> {
    values
        .chunks(batch)
        .flat_map(|step| step[rows.clone()].iter().copied())
        .collect()
}

/// Splits off `valid_fraction` (strictly between 0 and 1) of `items`, shuffled with the seed:
/// (train, valid), the validation part round(`valid_fraction` × items) long. Each side needs
/// at least one item; otherwise an error naming the counts, in which `what` names the items.
pub fn split_held_out<T: Clone>(
    items: &[T],
    valid_fraction: f64,
    seed: u64,
    what: &str,
) -> Result<(Vec<T>, Vec<T>)> {
    let op = "split";
    if !(valid_fraction > 0.0 && valid_fraction < 1.0) {
        return Err(Error::invalid(
            op,
            format!(
                "the validation fraction must lie strictly between 0 and 1, got {valid_fraction}"
            ),
        ));
    }
    let valid_count = (items.len() as f64 * valid_fraction).round() as usize;
    if valid_count == 0 || valid_count == items.len() {
        return Err(Error::invalid(
            op,
            format!(
                "a validation fraction of {valid_fraction} of {} {what} leaves {} for training \
                 and {valid_count} for validation; both need at least one",
                items.len(),
                items.len() - valid_count
            ),
        ));
    }
    let order = permutation(items.len(), &mut Rng::new(seed));
    let (valid, train) = order.split_at(valid_count);
    let gather = |indices: &[usize]| indices.iter().map(|&i| items[i].clone()).collect();
    Ok((gather(train), gather(valid)))
}

/// A uniformly random permutation of 0..n (Fisher–Yates).
fn permutation(n: usize, rng: &mut Rng) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        order.swap(i, rng.below(i + 1));
    }
    order
}

/// The seed of epoch `epoch`'s shuffle. SplitMix64 seeds that differ by a multiple of its
/// increment give shifted copies of one stream, so the epoch is hashed before it is mixed in.
fn epoch_seed(seed: u64, epoch: u64) -> u64 {
    seed ^ Rng::new(epoch).next_u64()
}

/// Fails if `items` holds an entry twice, naming it (a `kind` such as "word") and both
/// positions: a vocabulary given the same entry twice would give it two ids.
pub(crate) fn check_distinct<T: std::hash::Hash + Eq + std::fmt::Debug>(
    op: &'static str,
    kind: &str,
    items: &[T],
) -> Result<()> {
    let mut seen = std::collections::HashMap::new();
    for (position, item) in items.iter().enumerate() {
        if let Some(first) = seen.insert(item, position) {
            return Err(Error::invalid(
                op,
                format!(
                    "the {kind} {item:?} appears twice (at positions {first} and {position}); \
                     expected each {kind} once"
                ),
            ));
        }
    }
    Ok(())
}
