//! `cargo bench --bench matmul`: square f32 matmul at 256, 512 and 1024 for each kernel
//! variant on the default adapter (or the one `SHADERGRAD_ADAPTER` names), in GFLOP/s.
//!
//! Each figure is the median of several runs after a warm-up, timed by GPU timestamps
//! where the adapter has them (the wall clock otherwise, which includes submission).

mod common;

use common::{print_adapter, print_header, print_row, time_dispatches};
use shadergrad::kernels::matmul::{gemm_dispatch, Epilogue, GemmOperands, GemmShape};
use shadergrad::rng::Rng;
use shadergrad::{Gpu, MatmulVariant, Tensor};

const SIZES: [usize; 3] = [256, 512, 1024];

fn main() -> shadergrad::Result<()> {
    let gpu = Gpu::default_adapter()?;
    print_adapter(&gpu);
    print_header();
    let mut rng = Rng::new(1);
    for size in SIZES {
        let a = Tensor::from_slice(&gpu, &rng.vec(size * size, -1.0, 1.0), &[size, size])?;
        let b = Tensor::from_slice(&gpu, &rng.vec(size * size, -1.0, 1.0), &[size, size])?;
        let out = Tensor::zeros(&gpu, &[size, size])?;
        let shape = GemmShape::contiguous(1, (size, size, size), false, false);
        for variant in MatmulVariant::ALL {
            if !variant.supports(&gpu, &shape) {
                continue;
            }
            let operands = GemmOperands {
                a: &a,
                b: &b,
                c: None,
                bias: None,
                out: &out,
                epilogue: Epilogue::Plain,
            };
            let dispatch = gemm_dispatch(&operands, &shape, 1.0, 0.0, variant)?;
            let stats = time_dispatches(&gpu, std::slice::from_ref(&dispatch))?;
            let chosen = if MatmulVariant::choose(&gpu, &shape) == variant {
                "*"
            } else {
                ""
            };
            let flops = 2.0 * (size as f64).powi(3);
            let bytes = 3.0 * 4.0 * (size * size) as f64;
            print_row(
                "matmul",
                &format!("{}{chosen}", variant.name()),
                &format!("{size}x{size}x{size}"),
                &stats,
                Some(flops),
                Some(bytes),
            );
        }
    }
    println!("(* the variant the rule picks on this adapter)");
    Ok(())
}
