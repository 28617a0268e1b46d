//! The README's graph example: `cargo run --release --example graph`.

use shadergrad::graph::{Feed, Graph};
use shadergrad::nn::{Activation, Mlp, Parameters};
use shadergrad::optim::{OptimizerConfig, Rule};

fn main() -> shadergrad::Result<()> {
    let gpu = shadergrad::Gpu::default_adapter()?;
    let mut g = Graph::new(&gpu);
    let x = g.input("x", &[4, 2]);
    let labels = g.input_indices("labels", &[4]);
    let params = Parameters::new(&gpu, 1); // the model's weights, named as in PyTorch
    let mlp = Mlp::new(&params, &[2, 8, 2], Activation::Tanh)?;
    let logits = mlp.forward(&mut g, x)?;
    let loss = g.cross_entropy(logits, labels)?;
    let grads = g.backward(loss)?; // appends the gradient nodes
    let mut outputs = vec![loss];
    outputs.extend(grads.parameter_gradients());
    let mut plan = g.compile(&outputs)?; // liveness-shared buffers, dispatches recorded once
    let config = OptimizerConfig::new(Rule::adam(), 0.05);
    let mut optimizer = params.optimizer(config)?; // every parameter and its gradient
    let feeds = [
        Feed::f32(x, &[0., 0., 0., 1., 1., 0., 1., 1.]),
        Feed::u32(labels, &[0, 1, 1, 0]),
    ];
    for step in 0..200 {
        optimizer.prepare_step(step + 1)?;
        // The step and the update in one submission.
        plan.run(&feeds, optimizer.dispatches())?;
        if step % 50 == 0 {
            println!("step {step}: loss {:?}", plan.read(loss)?);
        }
    }
    println!("loss {:?}, memory {:?}", plan.read(loss)?, plan.memory());
    Ok(())
}
