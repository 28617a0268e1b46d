//! Train at one batch size, save the weights, serve at another from the file:
//! `cargo run --release --example serve`.
//!
//! The model is built by one function for any batch size, so its parameters have the same
//! names in every graph: the checkpoint written by the training plan loads into a plan of
//! batch 1 (in this process here; in a server, the same lines would run there).

use shadergrad::checkpoint;
use shadergrad::graph::{Feed, Graph, Var};
use shadergrad::models::argmax;
use shadergrad::nn::{Activation, Mlp};
use shadergrad::optim::{Optimizer, OptimizerConfig, Rule};
use shadergrad::rng::Rng;
use shadergrad::serde_json::json;
use shadergrad::{Error, Gpu};

/// XOR's classifier, 2 features → 8 → 2 classes, for `batch` rows: its input and logits.
fn model(g: &mut Graph, batch: usize) -> shadergrad::Result<(Var, Var)> {
    let x = g.input("x", &[batch, 2]);
    let mlp = Mlp::new(g, &[2, 8, 2], Activation::Tanh, &mut Rng::new(1))?;
    Ok((x, mlp.forward(g, x)?))
}

fn main() -> shadergrad::Result<()> {
    let gpu = Gpu::default_adapter()?;
    let points = [0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0];
    let classes = [0u32, 1, 1, 0];

    // Training, all four points in each step.
    let mut g = Graph::new(&gpu);
    let (x, logits) = model(&mut g, 4)?;
    let labels = g.input_indices("labels", &[4]);
    let loss = g.cross_entropy(logits, labels, None)?;
    let grads = g.backward(loss)?;
    let mut outputs = vec![loss];
    outputs.extend(grads.parameter_gradients());
    let mut train = g.compile(&outputs)?;
    let config = OptimizerConfig::new(Rule::adam(), 0.05);
    let mut optimizer = Optimizer::new(&gpu, config, &train.parameter_pairs(&grads)?)?;
    let feeds = [Feed::f32(x, &points), Feed::u32(labels, &classes)];
    for _ in 0..200 {
        optimizer.prepare_step(1)?;
        train.run(&feeds, optimizer.dispatches())?;
    }
    println!("trained: loss {:?}", train.read(loss)?);

    // The weights to a file (written atomically: a kill leaves the old file or the new).
    let path = std::env::temp_dir().join("shadergrad-example-xor.safetensors");
    checkpoint::save_tensors(&path, &train.parameters(), &json!({ "model": "xor" }))?;

    // Serving one point at a time, from the file.
    let mut g = Graph::new(&gpu);
    let (one, served) = model(&mut g, 1)?;
    let mut serve = g.compile(&[served])?;
    serve.load_parameters(&checkpoint::load(&path)?)?;
    for (point, &expected) in points.chunks(2).zip(&classes) {
        serve.run(&[Feed::f32(one, point)], &[])?;
        let logits = serve.fetch(served)?; // shape [1, 2]
        let class = argmax(&logits.data);
        println!("{point:?} → class {class} (logits {:?})", logits.data);
        if class != expected as usize {
            return Err(Error::invalid(
                "serve",
                format!("{point:?} was classified {class}, expected {expected}"),
            ));
        }
    }
    std::fs::remove_file(&path).map_err(|source| Error::Io { path, source })?;
    Ok(())
}
