//! Train at one batch size, save the weights, serve at another from the file:
//! `cargo run --release --example serve`.
//!
//! The model's weights live in a `Parameters` store, which its layers build into a graph of
//! any batch size: the store saved after training at batch 4 loads into a new store (in
//! this process here; in a server, the same lines would run there) that serves at batch 1.

use shadergrad::checkpoint;
use shadergrad::graph::{Feed, Graph, Var};
use shadergrad::models::argmax;
use shadergrad::nn::{Activation, Mlp, Parameters};
use shadergrad::optim::{OptimizerConfig, Rule};
use shadergrad::serde_json::json;
use shadergrad::{Error, Gpu};

/// XOR's classifier, 2 features → 8 → 2 classes, its weights in `params`.
fn classifier(params: &Parameters) -> shadergrad::Result<Mlp> {
    Mlp::new(params, &[2, 8, 2], Activation::Tanh)
}

/// The graph of `mlp` over `batch` rows: its input and logits.
fn model(g: &mut Graph, mlp: &Mlp, batch: usize) -> shadergrad::Result<(Var, Var)> {
    let x = g.input("x", &[batch, 2]);
    Ok((x, mlp.forward(g, x)?))
}

fn main() -> shadergrad::Result<()> {
    let gpu = Gpu::default_adapter()?;
    let points = [0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0];
    let classes = [0u32, 1, 1, 0];

    // Training, all four points in each step.
    let params = Parameters::new(&gpu, 1);
    let mlp = classifier(&params)?;
    let mut g = Graph::new(&gpu);
    let (x, logits) = model(&mut g, &mlp, 4)?;
    let labels = g.input_indices("labels", &[4]);
    let loss = g.cross_entropy(logits, labels)?;
    let grads = g.backward(loss)?;
    let mut outputs = vec![loss];
    outputs.extend(grads.parameter_gradients());
    let mut train = g.compile(&outputs)?;
    let config = OptimizerConfig::new(Rule::adam(), 0.05);
    let mut optimizer = params.optimizer(config)?;
    let feeds = [Feed::f32(x, &points), Feed::u32(labels, &classes)];
    for step in 0..200 {
        optimizer.prepare_step(step + 1)?;
        train.run(&feeds, optimizer.dispatches())?;
    }
    println!("trained: loss {:?}", train.read(loss)?);

    // The weights to a file (written atomically: a kill leaves the old file or the new).
    let path = std::env::temp_dir().join("shadergrad-example-xor.safetensors");
    checkpoint::save(&path, &params.named_tensors()?, &json!({ "model": "xor" }))?;

    // Serving one point at a time, from the file.
    let served_params = Parameters::new(&gpu, 0);
    let mlp = classifier(&served_params)?;
    served_params.load(&checkpoint::load(&path)?)?;
    let mut g = Graph::new(&gpu);
    let (one, served) = model(&mut g, &mlp, 1)?;
    let mut serve = g.compile(&[served])?;
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
