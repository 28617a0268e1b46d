//! `cargo bench --bench cpu_gemm`: f32 matmul on the default adapter beside the CPU's own
//! GEMM (the `matrixmultiply` crate, threaded over every core), at the sizes of the
//! performance bar (512² and 1024²) and the seq2seq model's recurrent step. On lavapipe the
//! CPU figure is the ceiling: lavapipe runs our shaders on the same cores.

mod common;

use std::time::Instant;

use common::{print_adapter, time_dispatches};
use shadergrad::kernels::matmul::{gemm_dispatch, Epilogue, GemmOperands, GemmShape};
use shadergrad::rng::Rng;
use shadergrad::{Gpu, MatmulVariant, Tensor};

fn cpu_gemm_seconds(m: usize, n: usize, k: usize, a: &[f32], b: &[f32]) -> f64 {
    let mut c = vec![0.0f32; m * n];
    let mut seconds = Vec::new();
    for run in 0..common::WARMUP + common::RUNS {
        let start = Instant::now();
        // SAFETY: a is m×k, b is k×n and c is m×n, all row-major and owned here.
        unsafe {
            matrixmultiply::sgemm(
                m,
                k,
                n,
                1.0,
                a.as_ptr(),
                k as isize,
                1,
                b.as_ptr(),
                n as isize,
                1,
                0.0,
                c.as_mut_ptr(),
                n as isize,
                1,
            );
        }
        if run >= common::WARMUP {
            seconds.push(start.elapsed().as_secs_f64());
        }
    }
    seconds.sort_by(f64::total_cmp);
    seconds[seconds.len() / 2]
}

fn main() -> shadergrad::Result<()> {
    let gpu = Gpu::default_adapter()?;
    print_adapter(&gpu);
    println!(
        "{:<16} {:>12} {:>14} {:>14} {:>8}",
        "m×n×k", "ours", "ours GFLOP/s", "CPU GFLOP/s", "share"
    );
    let mut rng = Rng::new(3);
    for (m, n, k) in [(512, 512, 512), (1024, 1024, 1024), (128, 192, 64)] {
        let a_host = rng.vec(m * k, -1.0, 1.0);
        let b_host = rng.vec(k * n, -1.0, 1.0);
        let a = Tensor::from_slice(&gpu, &a_host, &[m, k])?;
        let b = Tensor::from_slice(&gpu, &b_host, &[k, n])?;
        let out = Tensor::zeros(&gpu, &[m, n])?;
        let shape = GemmShape::contiguous(1, (m, n, k), false, false);
        let variant = MatmulVariant::choose(&gpu, &shape);
        let operands = GemmOperands {
            a: &a,
            b: &b,
            c: None,
            bias: None,
            out: &out,
            epilogue: Epilogue::Plain,
        };
        let dispatch = gemm_dispatch(&operands, &shape, 1.0, 0.0, variant)?;
        let ours = time_dispatches(&gpu, std::slice::from_ref(&dispatch))?.median;
        let cpu = cpu_gemm_seconds(m, n, k, &a_host, &b_host);
        let flops = 2.0 * (m * n * k) as f64;
        println!(
            "{:<16} {:>12} {:>14.2} {:>14.2} {:>7.1}%",
            format!("{m}×{n}×{k}"),
            variant.name(),
            flops / ours / 1e9,
            flops / cpu / 1e9,
            100.0 * cpu / ours
        );
    }
    Ok(())
}
