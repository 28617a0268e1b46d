//! The `shadergrad` binary's commands, one module per command family: each holds its
//! clap `*Args` struct (whose doc comments are the `--help` text) and its `*_command`
//! function. These modules belong to the binary (`src/main.rs` declares `mod cli`), not to
//! the library: `src/lib.rs` never declares `cli`, so nothing here is part of the crate's
//! API.
//!
//! This file holds what several commands share: the `out!` and `say!` macros (defined
//! above the `mod` lines so that every command module sees them, and exported to
//! `main.rs` by its `#[macro_use]`), the number parsers of the flags, and the checks made
//! before any work (`--save`, `--metrics` and other output paths, `--resume`'s agreement
//! with the flags typed), with the printing of readers' warnings and of progress.
//!
//! - [`adapters`] holds `shadergrad adapters`;
//! - [`bench`](mod@bench) holds `shadergrad bench`;
//! - [`choice`] holds the fixed sets of values the choice flags take (clap `ValueEnum`s);
//! - [`cnn`] holds `train-cnn`;
//! - [`lm`] holds `train-lm` and `sample`;
//! - [`mlp`] holds `train-mlp`;
//! - [`parallel`] holds the data-parallel flags every `train-*` command shares;
//! - [`seq2seq`] holds `train-seq2seq` and `translate`.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::ArgMatches;
use shadergrad::checkpoint::Checkpoint;
use shadergrad::data::{GenerationProgress, Parsed};
use shadergrad::gpu::tuning::{Autotune, NO_AUTOTUNE_ENV};
use shadergrad::{AdapterSelector, Error, Gpu};

/// Writes a line to stdout. A closed or full stdout is an error naming it: the command's
/// output is lost, so the command stops there.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($arg)*).map_err($crate::cli::stdout_error)
    }};
}

/// `eprintln!` that cannot panic: a closed or full stderr loses the message, not the work.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

pub(crate) mod adapters;
pub(crate) mod bench;
pub(crate) mod choice;
pub(crate) mod cnn;
pub(crate) mod lm;
pub(crate) mod mlp;
pub(crate) mod parallel;
pub(crate) mod seq2seq;

pub(crate) fn stdout_error(source: std::io::Error) -> Error {
    Error::Io {
        path: PathBuf::from("<stdout>"),
        source,
    }
}

/// A number that must be finite: clap's parser for the rate, fraction and time flags (NaN
/// would otherwise pass every `<` check silently).
pub(crate) fn finite_f64(text: &str) -> Result<f64, String> {
    let value: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    if value.is_finite() {
        Ok(value)
    } else {
        Err(format!("{text:?} is not a finite number"))
    }
}

pub(crate) fn finite_f32(text: &str) -> Result<f32, String> {
    let value = finite_f64(text)?;
    if value.abs() > f64::from(f32::MAX) {
        return Err(format!("{text:?} is beyond the range of a 32-bit float"));
    }
    Ok(value as f32)
}

/// The subcommand's arguments as clap matched them: which flags the user typed, as opposed
/// to their defaults.
pub(crate) struct Typed(pub(crate) ArgMatches);

impl Typed {
    /// Whether the flag whose field is `id` was given on the command line.
    fn given(&self, id: &str) -> bool {
        self.0.try_contains_id(id).unwrap_or(false)
            && self.0.value_source(id) == Some(ValueSource::CommandLine)
    }
}

/// Checks, before any training, that `--save` can take a checkpoint: the name ends in
/// `.safetensors`, its folder exists and takes a new file, and no checkpoint is there
/// already unless `--overwrite` lets it be replaced or it is the one `--resume` continues.
pub(crate) fn check_save_path(
    save: &Path,
    resume: Option<&Path>,
    overwrite: bool,
) -> shadergrad::Result<()> {
    let refuse = |message: String| Error::invalid("--save", message);
    if save.extension().is_none_or(|ext| ext != "safetensors") {
        return Err(refuse(format!(
            "{} does not end in .safetensors: a checkpoint is named like model.safetensors",
            save.display()
        )));
    }
    check_output_path("--save", save)?;
    let resumes_it = resume.is_some_and(|resume| same_file(resume, save));
    if save.exists() && !overwrite && !resumes_it {
        return Err(refuse(format!(
            "{} already exists: pass --overwrite to replace it, --resume {} to continue it, \
             or choose another name",
            save.display(),
            save.display()
        )));
    }
    Ok(())
}

/// Checks, before the work whose results go there, that the file `flag` names can be
/// written: its folder exists and takes a new file, and it is not a folder itself.
pub(crate) fn check_output_path(flag: &'static str, path: &Path) -> shadergrad::Result<()> {
    let folder = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    if !folder.is_dir() {
        return Err(Error::invalid(
            flag,
            format!(
                "{}: the folder {} does not exist; create it first",
                path.display(),
                folder.display()
            ),
        ));
    }
    if path.is_dir() {
        return Err(Error::invalid(
            flag,
            format!("{} is a folder, not a file", path.display()),
        ));
    }
    // A file made and removed now, so that a folder the run cannot write to is said before
    // the work rather than at its end.
    let probe = folder.join(format!(".shadergrad-write-probe.{}", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .map_err(|source| Error::Io {
            path: folder.to_path_buf(),
            source,
        })?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// A training's files, checked before any work: `--save` can take the checkpoint
/// ([`check_save_path`]), `--metrics` can be written; and the checkpoint `--resume`
/// continues, loaded.
pub(crate) fn check_training_files(
    save: Option<&Path>,
    resume: Option<&Path>,
    overwrite: bool,
    metrics: Option<&Path>,
) -> shadergrad::Result<Option<Checkpoint>> {
    if let Some(save) = save {
        check_save_path(save, resume, overwrite)?;
    }
    if let Some(metrics) = metrics {
        check_output_path("--metrics", metrics)?;
    }
    resume.map(shadergrad::checkpoint::load).transpose()
}

/// Whether two paths name the same existing file.
fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Checks that each architecture flag the user typed agrees with the model `--resume`
/// continues: `flags` pairs a flag's field name with its key in the checkpoint's
/// `architecture` and the value typed. A flag left out takes the checkpoint's value.
pub(crate) fn check_resume_agrees(
    checkpoint: &Checkpoint,
    typed: &Typed,
    flags: &[(&str, &str, serde_json::Value)],
) -> shadergrad::Result<()> {
    let architecture = checkpoint.config.get("architecture");
    for (field, key, value) in flags {
        if !typed.given(field) {
            continue;
        }
        let stored = architecture.and_then(|a| a.get(*key));
        if stored != Some(value) {
            let flag = format!("--{}", field.replace('_', "-"));
            return Err(Error::invalid(
                "--resume",
                format!(
                    "{flag} {} disagrees with {}, whose model has {key} {}: leave {flag} out to \
                     resume that model, or train a new one without --resume",
                    plain(value),
                    checkpoint.path.display(),
                    stored.map_or("(none)".to_string(), plain)
                ),
            ));
        }
    }
    Ok(())
}

/// A JSON value as a user would type it: `gru`, not `"gru"`; lists comma-separated.
fn plain(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(text) => text.clone(),
        serde_json::Value::Array(items) => items.iter().map(plain).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// What a reader read, once its warnings are printed on stderr (a warning that cannot be
/// printed does not stop the run).
pub(crate) fn print_warnings<T>(parsed: Parsed<T>) -> T {
    let mut stderr = std::io::stderr().lock();
    for warning in &parsed.warnings {
        let _ = writeln!(stderr, "warning: {warning}");
    }
    parsed.contents
}

/// The command line tunes kernels by default, remembering the choices in the per-user
/// cache folder; `--no-autotune` (or `SHADERGRAD_NO_AUTOTUNE=1`) leaves the fixed rules.
pub(crate) fn command_line_autotune() -> Autotune {
    let off = std::env::var(NO_AUTOTUNE_ENV).is_ok_and(|v| !v.is_empty() && v != "0");
    if off {
        Autotune::Off
    } else {
        Autotune::UserCache
    }
}

/// Opens the adapter `selector` picks, tuned as the command line tunes.
pub(crate) fn open_gpu(selector: &AdapterSelector) -> shadergrad::Result<Gpu> {
    let gpu = Gpu::new(selector)?;
    gpu.set_autotune(command_line_autotune());
    Ok(gpu)
}

/// Prints a long generation's progress on stderr (a line that cannot be printed is skipped).
pub(crate) fn print_progress(progress: &GenerationProgress) {
    let _ = writeln!(std::io::stderr(), "{progress}");
}
