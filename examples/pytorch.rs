//! A PyTorch round trip: `cargo run --release --example pytorch`.
//!
//! Loads a model's `state_dict` that PyTorch saved (`safetensors.torch.save_file`, a plain
//! file: `tests/data/pytorch/mlp.state.safetensors`, written by
//! `scripts/pytorch-reference.py`), checks that it computes PyTorch's logits, trains it a few
//! Adam steps at one batch size, serves it at another, and saves it under the same names and
//! shapes, which PyTorch loads back with `model.load_state_dict(load_file(path))`.

use std::path::Path;

use shadergrad::checkpoint;
use shadergrad::graph::{Feed, Graph};
use shadergrad::nn::{Activation, Mlp, Parameters};
use shadergrad::optim::{OptimizerConfig, Rule};
use shadergrad::serde_json::json;
use shadergrad::{Error, Gpu};

fn main() -> shadergrad::Result<()> {
    let gpu = Gpu::default_adapter()?;
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/pytorch");

    // The same module as PyTorch's: Linear layers in a list called `layers`, tanh between.
    let params = Parameters::new(&gpu, 0);
    let mlp = Mlp::new(&params, &[3, 7, 5, 4], Activation::Tanh)?;
    params.load(&checkpoint::load_weights(
        &data.join("mlp.state.safetensors"),
    )?)?;
    for p in params.list() {
        println!("{} {:?}", p.name(), p.shape());
    }

    // Its inputs and PyTorch's logits for them.
    let io = checkpoint::load_weights(&data.join("mlp.io.safetensors"))?;
    let x_values = io.get("x")?.as_f32()?.to_vec();
    let torch_logits = io.get("logits")?.as_f32()?.to_vec();
    let labels: Vec<u32> = match &io.get("labels")?.data {
        checkpoint::TensorData::I64(values) => values.iter().map(|&v| v as u32).collect(),
        other => {
            return Err(Error::invalid(
                "example",
                format!("labels are {:?}", other.dtype()),
            ))
        }
    };

    // Training at batch 6.
    let mut g = Graph::new(&gpu);
    let x = g.input("x", &[6, 3]);
    let targets = g.input_indices("labels", &[6]);
    let logits = mlp.forward(&mut g, x)?;
    let loss = g.cross_entropy(logits, targets)?;
    let grads = g.backward(loss)?;
    let mut outputs = vec![loss, logits];
    outputs.extend(grads.parameter_gradients());
    let mut train = g.compile(&outputs)?;
    let feeds = [Feed::f32(x, &x_values), Feed::u32(targets, &labels)];
    train.run(&feeds, &[])?;
    let ours = train.read(logits)?;
    let difference = ours
        .iter()
        .zip(&torch_logits)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    println!("logits differ from PyTorch's by at most {difference:.1e}");
    if difference > 1e-5 {
        return Err(Error::invalid(
            "example",
            format!("the logits differ from PyTorch's by {difference}"),
        ));
    }
    let mut optimizer = params.optimizer(OptimizerConfig::new(Rule::adam(), 0.01))?;
    for step in 1..=20 {
        optimizer.prepare_step(step)?;
        train.run(&feeds, optimizer.dispatches())?;
        if step % 5 == 0 {
            println!("step {step}: loss {:.4}", train.read(loss)?[0]);
        }
    }

    // Serving one row at a time over the same (trained) parameters.
    let mut g = Graph::new(&gpu);
    let one = g.input("x", &[1, 3]);
    let served = mlp.forward(&mut g, one)?;
    let mut serve = g.compile(&[served])?;
    serve.run(&[Feed::f32(one, &x_values[..3])], &[])?;
    println!("row 0 served at batch 1: {:?}", serve.fetch(served)?);

    // Saved under PyTorch's names and shapes.
    let path = std::env::temp_dir().join("shadergrad-example-mlp.safetensors");
    checkpoint::save(&path, &params.named_tensors()?, &json!({ "model": "mlp" }))?;
    println!(
        "saved {}: in PyTorch, model.load_state_dict(safetensors.torch.load_file(path))",
        path.display()
    );
    std::fs::remove_file(&path).map_err(|source| Error::Io { path, source })?;
    Ok(())
}
