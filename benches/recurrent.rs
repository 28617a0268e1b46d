//! `cargo bench --bench recurrent`: one recurrent layer's sequence (T = 8, B = 128,
//! H = 128) for each cell, forward alone and forward + backward, on the default adapter (or
//! the one `SHADERGRAD_ADAPTER` names): milliseconds per sequence and per step.
//!
//! Each figure is the median of several runs after a warm-up, timed by GPU timestamps
//! where the adapter has them (the wall clock otherwise, which includes submission).

mod common;

use common::{print_adapter, print_header, print_row, time_dispatches};
use shadergrad::kernels::recurrent::{
    recurrent_backward_dispatches, recurrent_forward_dispatches, CellKind, RecurrentBackwardInputs,
    RecurrentGrads, RecurrentInputs, RecurrentOutputs, RecurrentShape,
};
use shadergrad::rng::Rng;
use shadergrad::{Gpu, Tensor};

const STEPS: usize = 8;
const BATCH: usize = 128;
const HIDDEN: usize = 128;

fn main() -> shadergrad::Result<()> {
    let gpu = Gpu::default_adapter()?;
    print_adapter(&gpu);
    print_header();
    let mut rng = Rng::new(1);
    let mut per_step = Vec::new();
    for kind in CellKind::ALL {
        let shape = RecurrentShape {
            kind,
            steps: STEPS,
            batch: BATCH,
            hidden: HIDDEN,
            reverse: false,
        };
        let width = shape.gate_width();
        let scale = 1.0 / (HIDDEN as f32).sqrt();
        let mut random = |shape: &[usize], bound: f32| {
            let n = shape.iter().product();
            Tensor::from_slice(&gpu, &rng.vec(n, -bound, bound), shape)
        };
        let gx = random(&shape.gates_shape(), 1.0)?;
        let r = random(&[HIDDEN, width], scale)?;
        let r_bias = random(&[width], 0.1)?;
        let h0 = random(&[BATCH, HIDDEN], 1.0)?;
        let c0 = (kind == CellKind::Lstm)
            .then(|| random(&[BATCH, HIDDEN], 1.0))
            .transpose()?;
        let dstates = random(&shape.states_shape(), 1.0)?;
        let inputs = RecurrentInputs {
            gx: &gx,
            r: &r,
            r_bias: &r_bias,
            h0: &h0,
            c0: c0.as_ref(),
            lengths: None,
            peepholes: None,
        };
        let outputs = RecurrentOutputs::allocate(&gpu, &shape)?;
        let (forward, _forward_scratch) = recurrent_forward_dispatches(&inputs, &outputs, &shape)?;
        let grads = RecurrentGrads::allocate(&gpu, &shape)?;
        let backward_inputs = RecurrentBackwardInputs {
            dstates: Some(&dstates),
            dcells: None,
            states: &outputs.states,
            cells: outputs.cells.as_ref(),
            saved: &outputs.saved,
            r: &r,
            lengths: None,
        };
        let (backward, _backward_scratch) =
            recurrent_backward_dispatches(&backward_inputs, &grads, &shape)?;
        let both: Vec<_> = forward.iter().chain(&backward).cloned().collect();

        // The recurrent products dominate: 2·B·H·G·H per step forward, twice that backward
        // (dh_prev per step, dR over all steps).
        let product_flops = (2 * STEPS * BATCH * HIDDEN * width) as f64;
        let label = format!("T{STEPS} B{BATCH} H{HIDDEN}");
        for (pass, dispatches, flops) in [
            ("forward", &forward, product_flops),
            ("forward+backward", &both, 3.0 * product_flops),
        ] {
            let stats = time_dispatches(&gpu, dispatches)?;
            let name = format!("{} {pass}", kind.name());
            print_row(
                &name,
                &format!("{} disp.", dispatches.len()),
                &label,
                &stats,
                Some(flops),
                None,
            );
            per_step.push((name, stats.median * 1e3, stats.median * 1e3 / STEPS as f64));
        }
    }
    println!();
    println!("{:<22} {:>14} {:>12}", "pass", "ms/sequence", "ms/step");
    for (name, sequence, step) in per_step {
        println!("{name:<22} {sequence:>14.3} {step:>12.3}");
    }
    Ok(())
}
