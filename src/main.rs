//! The `shadergrad` command line.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use shadergrad::gpu::{adapter_reports, enumerate_adapters, instance, select_adapter, ADAPTER_ENV};
use shadergrad::AdapterSelector;

#[derive(Parser)]
#[command(
    name = "shadergrad",
    version,
    about = "Deep learning on hand-written WGSL compute shaders (Vulkan, Metal, DX12)"
)]
struct Cli {
    /// The adapter to run on: an index of `shadergrad adapters`, a backend (vulkan, metal,
    /// dx12, gl) or a name substring. Default: $SHADERGRAD_ADAPTER, else the best GPU.
    #[arg(long, global = true, value_name = "ADAPTER")]
    adapter: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List every GPU adapter of this machine with its limits and features.
    Adapters,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> shadergrad::Result<()> {
    let selector = match &cli.adapter {
        Some(text) => text.parse()?,
        None => AdapterSelector::Default,
    };
    match cli.command {
        Command::Adapters => adapters(&selector),
    }
}

/// Prints every adapter, then the one the other commands would use.
fn adapters(selector: &AdapterSelector) -> shadergrad::Result<()> {
    for report in adapter_reports()? {
        println!("{report}");
    }
    let chosen = select_adapter(enumerate_adapters(&instance())?, selector)?.get_info();
    println!(
        "\nselected: {} ({}); choose another with --adapter or {ADAPTER_ENV}=<index|backend|name>",
        chosen.name, chosen.backend
    );
    Ok(())
}
