//! `cargo bench --bench layernorm`: layer norm forward and backward over the last axis for
//! each kernel variant on the default adapter (or the one `SHADERGRAD_ADAPTER` names), in
//! GB/s of the data each pass must move at least once.
//!
//! Each figure is the median of several runs after a warm-up, timed by GPU timestamps
//! where the adapter has them (the wall clock otherwise, which includes submission).

mod common;

use common::{print_adapter, print_header, print_row, time_dispatches};
use shadergrad::kernels::layernorm::{
    input_grad_dispatch, layer_norm_dispatch, param_grads_fold_dispatch,
    param_grads_partial_dispatch, rows_per_chunk, LayerNormGrads, LayerNormShape,
};
use shadergrad::rng::Rng;
use shadergrad::{Gpu, LayerNormVariant, Tensor};

/// (rows, d): a transformer's activations, a wide row, and a few very long rows.
const SIZES: [(usize, usize); 3] = [(4096, 512), (1024, 4096), (64, 65536)];

fn main() -> shadergrad::Result<()> {
    let gpu = Gpu::default_adapter()?;
    print_adapter(&gpu);
    print_header();
    let mut rng = Rng::new(1);
    for (rows, d) in SIZES {
        let x = Tensor::from_slice(&gpu, &rng.vec(rows * d, -1.0, 1.0), &[rows, d])?;
        let dy = Tensor::from_slice(&gpu, &rng.vec(rows * d, -1.0, 1.0), &[rows, d])?;
        let gain = Tensor::from_slice(&gpu, &rng.vec(d, 0.5, 1.5), &[d])?;
        let bias = Tensor::from_slice(&gpu, &rng.vec(d, -1.0, 1.0), &[d])?;
        let shape = LayerNormShape::new("bench", x.shape(), -1)?;
        let forward = x.layer_norm(Some(&gain), Some(&bias), -1, 1e-5)?;
        let grads = LayerNormGrads {
            dx: Tensor::zeros(&gpu, &[rows, d])?,
            dgain: Tensor::zeros(&gpu, &[d])?,
            dbias: Tensor::zeros(&gpu, &[d])?,
        };
        let chunk = rows_per_chunk(rows, d);
        let chunks = rows.div_ceil(chunk);
        let dgain_partial = Tensor::zeros(&gpu, &[chunks, d])?;
        let dbias_partial = Tensor::zeros(&gpu, &[chunks, d])?;
        let size = format!("{rows}x{d}");
        let matrix_bytes = 4.0 * (rows * d) as f64;

        for variant in LayerNormVariant::ALL {
            let chosen = if LayerNormVariant::choose(&gpu, d) == variant {
                "*"
            } else {
                ""
            };
            let name = format!("{}{chosen}", variant.name());
            // Reads x, writes y.
            let dispatch = layer_norm_dispatch(
                &x,
                Some(&gain),
                Some(&bias),
                &forward,
                &shape,
                1e-5,
                variant,
            )?;
            let stats = time_dispatches(&gpu, std::slice::from_ref(&dispatch))?;
            print_row(
                "layer_norm",
                &name,
                &size,
                &stats,
                None,
                Some(2.0 * matrix_bytes),
            );
            // Reads x and dy, writes dx.
            let dispatch = input_grad_dispatch(
                &x,
                &dy,
                Some(&gain),
                &forward.mean,
                &forward.rstd,
                &grads.dx,
                &shape,
                variant,
            )?;
            let stats = time_dispatches(&gpu, std::slice::from_ref(&dispatch))?;
            print_row(
                "layer_norm dx",
                &name,
                &size,
                &stats,
                None,
                Some(3.0 * matrix_bytes),
            );
        }

        // Reads x and dy once more for the column sums; the partials are small beside them.
        let mut dispatches = vec![param_grads_partial_dispatch(
            &x,
            &dy,
            &forward.mean,
            &forward.rstd,
            &dgain_partial,
            &dbias_partial,
            &shape,
            chunk,
        )?];
        dispatches.push(param_grads_fold_dispatch(
            &dgain_partial,
            &dbias_partial,
            &grads,
            &shape,
            chunk,
        )?);
        let stats = time_dispatches(&gpu, &dispatches)?;
        print_row(
            "layer_norm dgain,dbias",
            &format!("chunks={chunks}"),
            &size,
            &stats,
            None,
            Some(2.0 * matrix_bytes),
        );
    }
    println!("(* the variant the rule picks on this adapter)");
    Ok(())
}
