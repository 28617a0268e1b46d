//! `cargo bench --bench softmax`: softmax over the rows of a 1024×1024 matrix, its
//! backward, and the fused softmax-cross-entropy (loss and gradient) over 1024 rows of
//! 1024 classes, for each kernel variant on the default adapter (or the one
//! `SHADERGRAD_ADAPTER` names).
//!
//! GB/s counts the bytes each kernel must move: softmax reads x and writes y (4 MiB each),
//! its backward reads y and dy and writes dx, the cross-entropy reads the logits and
//! writes the gradient.

mod common;

use common::{print_adapter, print_header, print_row, time_dispatches};
use shadergrad::kernels::softmax::{
    cross_entropy_dispatch, cross_entropy_total_dispatch, softmax_backward_dispatch,
    softmax_dispatch, CrossEntropyOperands,
};
use shadergrad::rng::Rng;
use shadergrad::{Gpu, Indices, SoftmaxKind, SoftmaxVariant, Tensor};

const ROWS: usize = 1024;
const COLS: usize = 1024;

fn main() -> shadergrad::Result<()> {
    let gpu = Gpu::default_adapter()?;
    print_adapter(&gpu);
    print_header();
    let mut rng = Rng::new(1);
    let shape = [ROWS, COLS];
    let elements = (ROWS * COLS) as f64;
    let x = Tensor::from_slice(&gpu, &rng.vec(ROWS * COLS, -4.0, 4.0), &shape)?;
    let dy = Tensor::from_slice(&gpu, &rng.vec(ROWS * COLS, -1.0, 1.0), &shape)?;
    let y = Tensor::zeros(&gpu, &shape)?;
    let dx = Tensor::zeros(&gpu, &shape)?;
    let labels: Vec<u32> = (0..ROWS).map(|_| rng.below(COLS) as u32).collect();
    let targets = Indices::from_slice(&gpu, &labels, &[ROWS])?;
    let divisor = Tensor::from_slice(&gpu, &[ROWS as f32], &[1])?;
    let row_loss = Tensor::zeros(&gpu, &[ROWS])?;
    let loss = Tensor::zeros(&gpu, &[])?;
    let shape_name = format!("{ROWS}x{COLS}");
    let chosen = SoftmaxVariant::choose(&gpu, 1, COLS);

    for variant in SoftmaxVariant::ALL {
        let mark = if variant == chosen { "*" } else { "" };
        let name = format!("{}{mark}", variant.name());
        for kind in [SoftmaxKind::Softmax, SoftmaxKind::LogSoftmax] {
            let kernel = match kind {
                SoftmaxKind::Softmax => "softmax",
                SoftmaxKind::LogSoftmax => "log_softmax",
            };
            let forward = softmax_dispatch(&x, &y, 1, kind, variant)?;
            let stats = time_dispatches(&gpu, &[forward])?;
            print_row(
                kernel,
                &name,
                &shape_name,
                &stats,
                None,
                Some(2.0 * 4.0 * elements),
            );
        }
        let backward = softmax_backward_dispatch(&y, &dy, &dx, 1, SoftmaxKind::Softmax, variant)?;
        let stats = time_dispatches(&gpu, &[backward])?;
        print_row(
            "softmax_backward",
            &name,
            &shape_name,
            &stats,
            None,
            Some(3.0 * 4.0 * elements),
        );

        let operands = CrossEntropyOperands {
            logits: &x,
            targets: &targets,
            weights: None,
            divisor: &divisor,
            row_loss: &row_loss,
            grad: &dx,
        };
        let dispatches = [
            cross_entropy_dispatch(&operands, u32::MAX, variant)?,
            cross_entropy_total_dispatch(&operands, &loss)?,
        ];
        let stats = time_dispatches(&gpu, &dispatches)?;
        print_row(
            "softmax_cross_entropy",
            &name,
            &shape_name,
            &stats,
            None,
            Some(2.0 * 4.0 * elements),
        );
    }
    println!("(* the variant the rule picks on this adapter; cross-entropy = row kernel + total)");
    Ok(())
}
