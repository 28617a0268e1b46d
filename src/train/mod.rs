//! Training's reporting, shared by every `train-*` command: the per-epoch [`metrics`] file
//! (`--metrics FILE`, JSON Lines) and the [`progress`] display on stderr.

pub mod charlm;
pub mod cnn;
pub mod metrics;
pub mod mlp;
pub mod progress;
pub mod seq2seq;

pub use metrics::{EpochMetrics, MetricsFile};
pub use progress::{format_progress, Drawing, Progress, ProgressState};
