//! `cargo bench --bench matmul`: square f32 matmul at 256, 512 and 1024 for each kernel
//! variant on the default adapter (or the one `SHADERGRAD_ADAPTER` names), in GFLOP/s.
//!
//! Each figure is the median of several runs after a warm-up, timed by GPU timestamps
//! where the adapter has them (the wall clock otherwise, which includes submission).

use shadergrad::gpu::TimingSource;
use shadergrad::kernels::matmul::{gemm_dispatch, GemmOperands, GemmShape};
use shadergrad::rng::Rng;
use shadergrad::{Gpu, MatmulVariant, Tensor};

const SIZES: [usize; 3] = [256, 512, 1024];
const WARMUP: usize = 2;
const RUNS: usize = 7;

fn main() -> shadergrad::Result<()> {
    let gpu = Gpu::default_adapter()?;
    let info = gpu.info();
    println!(
        "adapter: {} ({}, {})",
        info.name, info.backend, info.driver_info
    );
    println!(
        "{:>13} {:>6} {:>11} {:>11} {:>9}  timing",
        "variant", "size", "median ms", "spread ms", "GFLOP/s"
    );
    let mut rng = Rng::new(1);
    for size in SIZES {
        let a = Tensor::from_slice(&gpu, &rng.vec(size * size, -1.0, 1.0), &[size, size])?;
        let b = Tensor::from_slice(&gpu, &rng.vec(size * size, -1.0, 1.0), &[size, size])?;
        let out = Tensor::zeros(&gpu, &[size, size])?;
        let shape = GemmShape {
            batch: 1,
            m: size,
            n: size,
            k: size,
            trans_a: false,
            trans_b: false,
            a_batch_stride: 0,
            b_batch_stride: 0,
        };
        for variant in MatmulVariant::ALL {
            let operands = GemmOperands {
                a: &a,
                b: &b,
                c: None,
                bias: None,
                out: &out,
            };
            let dispatch = gemm_dispatch(&operands, &shape, 1.0, 0.0, variant)?;
            let mut seconds = Vec::with_capacity(RUNS);
            let mut source = TimingSource::WallClock;
            for run in 0..WARMUP + RUNS {
                let timing = gpu.submit_timed(std::slice::from_ref(&dispatch))?;
                if run >= WARMUP {
                    seconds.push(timing.seconds);
                    source = timing.source;
                }
            }
            seconds.sort_by(f64::total_cmp);
            let median = seconds[RUNS / 2];
            let spread = seconds[RUNS - 1] - seconds[0];
            let gflops = 2.0 * (size as f64).powi(3) / median / 1e9;
            let chosen = if MatmulVariant::choose(&gpu, &shape) == variant {
                " (chosen)"
            } else {
                ""
            };
            println!(
                "{:>13} {:>6} {:>11.3} {:>11.3} {:>9.2}  {source}{chosen}",
                variant.name(),
                size,
                median * 1e3,
                spread * 1e3,
                gflops
            );
        }
    }
    Ok(())
}
