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

/// Times every dispatch alone (best of 3) and prints the kernels by their summed time.
pub fn print_profile(gpu: &Gpu, lists: &[&[Dispatch]]) -> shadergrad::Result<()> {
    let mut by_kernel: Vec<(String, f64, usize)> = Vec::new();
    for dispatch in lists.iter().flat_map(|list| list.iter()) {
        let one = std::slice::from_ref(dispatch);
        let mut best = f64::INFINITY;
        for _ in 0..3 {
            best = best.min(gpu.submit_timed(one)?.seconds);
        }
        match by_kernel
            .iter_mut()
            .find(|(name, _, _)| *name == dispatch.kernel.name)
        {
            Some(entry) => {
                entry.1 += best;
                entry.2 += 1;
            }
            None => by_kernel.push((dispatch.kernel.name.clone(), best, 1)),
        }
    }
    by_kernel.sort_by(|a, b| b.1.total_cmp(&a.1));
    let total: f64 = by_kernel.iter().map(|(_, t, _)| t).sum();
    println!(
        "each dispatch alone (best of 3), by kernel: {:.2} ms in all",
        total * 1e3
    );
    for (name, seconds, count) in by_kernel {
        println!("  {:>8.3} ms  {count:>2}×  {name}", seconds * 1e3);
    }
    Ok(())
}
