//! `cargo bench --bench optim`: one optimizer step over the parameters of an MLP
//! 784-256-256-10 (269,322 values in six tensors) on the default adapter (or the one
//! `SHADERGRAD_ADAPTER` names), for each rule, with and without clipping, in GB/s of the
//! data each step must move at least once.
//!
//! Each figure is the median of several runs after a warm-up, timed by GPU timestamps
//! where the adapter has them (the wall clock otherwise, which includes submission).

mod common;

use common::{print_adapter, print_header, print_row, time_dispatches};
use shadergrad::rng::Rng;
use shadergrad::{Gpu, Optimizer, OptimizerConfig, Rule, Tensor};

/// The layer widths of the MLP.
const LAYERS: [usize; 4] = [784, 256, 256, 10];

fn main() -> shadergrad::Result<()> {
    let gpu = Gpu::default_adapter()?;
    print_adapter(&gpu);
    print_header();
    let mut rng = Rng::new(1);
    let mut shapes = Vec::new();
    for pair in LAYERS.windows(2) {
        shapes.push(vec![pair[0], pair[1]]);
        shapes.push(vec![pair[1]]);
    }
    let mut params = Vec::new();
    for shape in &shapes {
        let n: usize = shape.iter().product();
        params.push((
            Tensor::from_slice(&gpu, &rng.vec(n, -0.1, 0.1), shape)?,
            Tensor::from_slice(&gpu, &rng.vec(n, -1.0, 1.0), shape)?,
        ));
    }
    let values: usize = shapes.iter().map(|s| s.iter().product::<usize>()).sum();
    let size = format!("{values} in {}", shapes.len());

    // Bytes per value: θ read and written, g read, each state tensor read and written;
    // clipping reads g once more.
    let rules = [
        ("sgd", Rule::Sgd, 12.0),
        (
            "momentum",
            Rule::Momentum {
                momentum: 0.9,
                nesterov: false,
            },
            20.0,
        ),
        ("adam", Rule::adam(), 28.0),
        ("adamw", Rule::adamw(0.01), 28.0),
    ];
    for (name, rule, bytes_per_value) in rules {
        for clip in [false, true] {
            let mut config = OptimizerConfig::new(rule, 1e-3);
            let mut bytes = bytes_per_value;
            if clip {
                config = config.with_max_grad_norm(1.0);
                bytes += 4.0;
            }
            let mut optimizer = Optimizer::new(&gpu, config, &params)?;
            optimizer.prepare_step(1)?;
            let stats = time_dispatches(&gpu, optimizer.dispatches())?;
            let variant = format!("{} dispatches", optimizer.dispatches().len());
            let kernel = if clip {
                format!("{name}+clip")
            } else {
                name.to_string()
            };
            print_row(
                &kernel,
                &variant,
                &size,
                &stats,
                None,
                Some(bytes * values as f64),
            );
        }
    }
    Ok(())
}
