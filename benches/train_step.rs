//! `cargo bench --bench train_step`: one training step of an MLP 784-256-256-10 (batch 128,
//! ReLU, softmax-cross-entropy, Adam) compiled into a plan, on the default adapter: the wall
//! time of a whole step (forward, backward and update in one submission, then a wait), and
//! the CPU time the step's encoding and submission take per dispatch, and each kernel's
//! share of the step (every dispatch timed alone, summed by kernel).

mod common;

use std::time::Instant;

use shadergrad::graph::{Feed, Graph, Var};
use shadergrad::nn::{Activation, Mlp, Parameters};
use shadergrad::optim::{OptimizerConfig, Rule};
use shadergrad::rng::Rng;
use shadergrad::Gpu;

const BATCH: usize = 128;
const SIZES: [usize; 4] = [784, 256, 256, 10];
const WARMUP: usize = 3;
const STEPS: usize = 20;

fn main() -> shadergrad::Result<()> {
    let gpu = Gpu::default_adapter()?;
    let info = gpu.info();
    println!(
        "adapter: {} ({}, {})",
        info.name, info.backend, info.driver_info
    );
    let mut rng = Rng::new(1);
    let mut g = Graph::new(&gpu);
    let x = g.input("x", &[BATCH, SIZES[0]]);
    let labels = g.input_indices("labels", &[BATCH]);
    let params = Parameters::new(&gpu, 1);
    let mlp = Mlp::new(&params, &SIZES, Activation::Relu)?;
    let logits = mlp.forward(&mut g, x)?;
    let loss = g.cross_entropy(logits, labels)?;
    let grads = g.backward(loss)?;
    let outputs: Vec<Var> = std::iter::once(loss)
        .chain(grads.parameter_gradients())
        .collect();
    let mut plan = g.compile(&outputs)?;
    let mut adam = params.optimizer(OptimizerConfig::new(Rule::adam(), 1e-3))?;
    let dispatches = plan.dispatch_count() + adam.dispatches().len();
    let features = rng.vec(BATCH * SIZES[0], 0.0, 1.0);
    let targets: Vec<u32> = (0..BATCH).map(|i| (i % 10) as u32).collect();
    let feeds = [Feed::f32(x, &features), Feed::u32(labels, &targets)];

    let mut step_seconds = Vec::with_capacity(STEPS);
    let mut encode_seconds = Vec::with_capacity(STEPS);
    for step in 0..WARMUP + STEPS {
        let start = Instant::now();
        adam.prepare_step(step as u64 + 1)?;
        plan.run(&feeds, adam.dispatches())?;
        let encoded = start.elapsed().as_secs_f64();
        gpu.wait()?;
        if step >= WARMUP {
            encode_seconds.push(encoded);
            step_seconds.push(start.elapsed().as_secs_f64());
        }
    }
    step_seconds.sort_by(f64::total_cmp);
    encode_seconds.sort_by(f64::total_cmp);
    let median = |v: &[f64]| v[v.len() / 2];
    let memory = plan.memory();
    println!("MLP {SIZES:?} batch {BATCH}, forward + backward + Adam: {dispatches} dispatches");
    println!(
        "step: median {:.2} ms (min {:.2}, max {:.2}) wall clock, submit to finish",
        median(&step_seconds) * 1e3,
        step_seconds[0] * 1e3,
        step_seconds[STEPS - 1] * 1e3
    );
    println!(
        "encoding and submission: {:.1} µs per dispatch (CPU)",
        median(&encode_seconds) * 1e6 / dispatches as f64
    );
    println!(
        "memory of computed values: {} KiB shared by liveness, {} KiB with one buffer each",
        memory.peak_bytes / 1024,
        memory.naive_bytes / 1024
    );
    common::print_profile(&gpu, &[plan.dispatches(), adam.dispatches()])?;
    Ok(())
}
