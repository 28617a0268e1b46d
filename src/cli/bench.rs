//! `shadergrad bench`: every kernel family and whole training steps, timed on each adapter.

use std::path::PathBuf;

use clap::Args;
use shadergrad::bench::{table_header, BenchOptions, Family};
use shadergrad::gpu::{enumerate_adapters, instance, select_adapter};
use shadergrad::{AdapterSelector, Error, Gpu};

use super::check_output_path;

#[derive(Args)]
#[command(allow_negative_numbers = true)]
pub(crate) struct BenchArgs {
    /// The smaller sizes and fewer runs: under a minute on lavapipe.
    #[arg(long)]
    quick: bool,
    /// Also write every measurement as a JSON array here.
    #[arg(long, value_name = "FILE.json")]
    json: Option<PathBuf>,
    /// Only these kernel families, comma-separated.
    #[arg(long, value_name = "FAMILY,...", value_delimiter = ',')]
    only: Vec<Family>,
}

/// `bench`: the suite on each adapter asked for (all of them by default), as a table and
/// optionally as JSON.
pub(crate) fn bench_command(
    selector: Option<&AdapterSelector>,
    args: BenchArgs,
) -> shadergrad::Result<()> {
    let adapters = match selector {
        Some(selector) => vec![select_adapter(enumerate_adapters(&instance())?, selector)?],
        None => enumerate_adapters(&instance())?,
    };
    if let Some(path) = &args.json {
        check_output_path("--json", path)?;
    }
    let mut options = BenchOptions::new(args.quick);
    if !args.only.is_empty() {
        // In the order given, each once.
        let mut families: Vec<Family> = Vec::new();
        for &family in &args.only {
            if !families.contains(&family) {
                families.push(family);
            }
        }
        options.families = families;
    }
    let mut all = Vec::new();
    for adapter in adapters {
        let info = adapter.get_info();
        let gpu = match Gpu::from_adapter(adapter) {
            Ok(gpu) => gpu,
            Err(error) => {
                say!("skipping {} ({}): {error}", info.name, info.backend);
                continue;
            }
        };
        gpu.set_autotune(super::command_line_autotune());
        out!("\n{} ({}, {}):", info.name, info.backend, info.driver_info)?;
        out!("{}", table_header())?;
        let measured = shadergrad::bench::run(&gpu, &options, &mut |m| out!("{}", m.table_row()))?;
        all.extend(measured);
    }
    out!("(* the variant the engine picks for that shape on that adapter; training steps show items/s)")?;
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&all).map_err(|e| {
            Error::invalid("bench", format!("cannot encode the results as JSON: {e}"))
        })?;
        shadergrad::files::write_atomically(path, text.as_bytes())?;
        say!("wrote {} measurements to {}", all.len(), path.display());
    }
    Ok(())
}
