//! Timing shared by the `cargo bench` harnesses.
#![allow(dead_code)] // each bench uses its own subset

use shadergrad::gpu::{Dispatch, TimingSource};
use shadergrad::Gpu;

/// Warm-up runs before timing, and timed runs.
pub const WARMUP: usize = 2;
pub const RUNS: usize = 7;

/// The median and spread (max − min) of timed runs, in seconds.
#[derive(Debug, Clone, Copy)]
pub struct Stats {
    pub median: f64,
    pub spread: f64,
    pub source: TimingSource,
}

/// Times one submission of `dispatches`, `RUNS` times after `WARMUP`.
pub fn time_dispatches(gpu: &Gpu, dispatches: &[Dispatch]) -> shadergrad::Result<Stats> {
    let mut seconds = Vec::with_capacity(RUNS);
    let mut source = TimingSource::WallClock;
    for run in 0..WARMUP + RUNS {
        let timing = gpu.submit_timed(dispatches)?;
        if run >= WARMUP {
            seconds.push(timing.seconds);
            source = timing.source;
        }
    }
    seconds.sort_by(f64::total_cmp);
    Ok(Stats {
        median: seconds[RUNS / 2],
        spread: seconds[RUNS - 1] - seconds[0],
        source,
    })
}

/// Prints which adapter the numbers below belong to.
pub fn print_adapter(gpu: &Gpu) {
    let info = gpu.info();
    println!(
        "adapter: {} ({}, {})",
        info.name, info.backend, info.driver_info
    );
}

/// The header of `print_row`'s table.
pub fn print_header() {
    println!(
        "{:<22} {:<14} {:<20} {:>10} {:>10} {:>9} {:>9}  timing",
        "kernel", "variant", "shape", "median ms", "spread ms", "GFLOP/s", "GB/s"
    );
}

/// One row: throughput from the work done (`flops`) and the bytes moved (`bytes`);
/// `None` where the figure means nothing for the kernel.
pub fn print_row(
    kernel: &str,
    variant: &str,
    shape: &str,
    stats: &Stats,
    flops: Option<f64>,
    bytes: Option<f64>,
) {
    let rate = |amount: Option<f64>| match amount {
        Some(amount) => format!("{:.2}", amount / stats.median / 1e9),
        None => "-".to_string(),
    };
    println!(
        "{kernel:<22} {variant:<14} {shape:<20} {:>10.3} {:>10.3} {:>9} {:>9}  {}",
        stats.median * 1e3,
        stats.spread * 1e3,
        rate(flops),
        rate(bytes),
        stats.source
    );
}
