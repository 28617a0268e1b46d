//! The README's graph example: `cargo run --release --example graph`.

use shadergrad::graph::{Feed, Graph};
use shadergrad::nn::{Activation, Mlp};
use shadergrad::rng::Rng;

fn main() -> shadergrad::Result<()> {
    let gpu = shadergrad::Gpu::default_adapter()?;
    let mut g = Graph::new(&gpu);
    let x = g.input("x", &[4, 2]);
    let labels = g.input_indices("labels", &[4]);
    let mlp = Mlp::new(&mut g, &[2, 8, 2], Activation::Tanh, &mut Rng::new(1))?;
    let logits = mlp.forward(&mut g, x)?;
    let loss = g.cross_entropy(logits, labels, None)?;
    let grads = g.backward(loss)?; // appends the gradient nodes
    let outputs: Vec<_> = std::iter::once(loss)
        .chain(grads.parameters().into_iter().map(|(_, grad)| grad))
        .collect();
    let mut plan = g.compile(&outputs)?; // liveness-shared buffers, dispatches recorded once
    plan.run(
        &[
            Feed::f32(x, &[0., 0., 0., 1., 1., 0., 1., 1.]),
            Feed::u32(labels, &[0, 1, 1, 0]),
        ],
        &[], // more dispatches for the same submission: an optimizer's update
    )?;
    println!("loss {:?}, memory {:?}", plan.read(loss)?, plan.memory());
    Ok(())
}
