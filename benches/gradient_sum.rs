//! `cargo bench --bench gradient_sum`: what data parallelism costs a step besides the
//! network, [`GradientSum::sum`] over replicas of models from 87 thousand to 40 million
//! parameters on one and on two devices (two opened on the default adapter): every
//! replica's gradients read back, added on the host, and written back, with a single
//! process's (empty) all-reduce. The median of several sums after a warm-up, and the bytes
//! per second of gradients handled (one replica's gradient bytes × replicas / time).

use std::time::Instant;

use shadergrad::nn::{Init, Parameters};
use shadergrad::parallel::{GradientSum, SingleProcess};
use shadergrad::{AdapterSelector, Gpu};

const RUNS: usize = 5;

/// A replica of `numel` parameters in tensors of at most a million numbers, as a model's
/// layers would hold them.
fn replica(gpu: &Gpu, numel: usize) -> shadergrad::Result<Parameters> {
    let params = Parameters::new(gpu, 1);
    let (mut left, mut index) = (numel, 0);
    while left > 0 {
        let size = left.min(1 << 20);
        params.get_or_init(&format!("p{index}"), &[size], Init::Zeros)?;
        left -= size;
        index += 1;
    }
    Ok(params)
}

fn main() -> shadergrad::Result<()> {
    let first = Gpu::default_adapter()?;
    let index = shadergrad::gpu::enumerate_adapters(&shadergrad::gpu::instance())?
        .iter()
        .position(|adapter| adapter.get_info() == *first.info())
        .unwrap_or(0);
    let second = Gpu::new(&AdapterSelector::Index(index))?;
    println!("adapter: {} ({})", first.info().name, first.info().backend);
    println!(
        "{:>12} {:>9} {:>11} {:>11} {:>10} {:>10}",
        "parameters", "replicas", "median ms", "spread ms", "read+add", "GB/s"
    );
    for numel in [87_086, 236_494, 10_000_000, 40_000_000] {
        for devices in [vec![first.clone()], vec![first.clone(), second.clone()]] {
            let replicas = devices
                .iter()
                .map(|gpu| replica(gpu, numel))
                .collect::<shadergrad::Result<Vec<_>>>()?;
            let mut sum = GradientSum::new(&replicas)?;
            let weights = vec![1.0; replicas.len()];
            let (mut seconds, mut gathers) = (Vec::new(), Vec::new());
            for run in 0..RUNS + 1 {
                let start = Instant::now();
                let timing = sum.sum(&SingleProcess, &weights, &mut [0.0; 3])?;
                if run > 0 {
                    gathers.push(timing.gather_s);
                }
                for gpu in &devices {
                    // The writes back are queued: a submission carries them to the device.
                    gpu.submit(&[], &[])?;
                    gpu.wait()?;
                }
                if run > 0 {
                    seconds.push(start.elapsed().as_secs_f64());
                }
            }
            seconds.sort_by(f64::total_cmp);
            gathers.sort_by(f64::total_cmp);
            let median = seconds[RUNS / 2];
            let bytes = (numel * 4 * replicas.len()) as f64;
            println!(
                "{numel:>12} {:>9} {:>11.2} {:>11.2} {:>10.2} {:>10.2}",
                replicas.len(),
                1e3 * median,
                1e3 * (seconds[RUNS - 1] - seconds[0]),
                1e3 * gathers[RUNS / 2],
                bytes / median / 1e9
            );
        }
    }
    Ok(())
}
