//! Layers and the parameter store: initialisation statistics, PyTorch's names and layouts,
//! layers against CPU references, one set of weights shared by plans of every batch shape,
//! state-dict loading, and errors.

mod common;

use common::{assert_close, gpu};
use shadergrad::checkpoint::{Checkpoint, NamedTensor};
use shadergrad::graph::{Feed, Graph};
use shadergrad::nn::{Activation, Embedding, Init, LayerNorm, Linear, LinearSpec, Mlp, Parameters};
use shadergrad::optim::{OptimizerConfig, Rule};
use shadergrad::rng::Rng;

#[test]
fn initialisations_have_their_textbook_scale() {
    let mut rng = Rng::new(1);
    // A weight [out, in] = [200, 300]: fan_in 300, fan_out 200, as PyTorch counts them.
    let shape = [200, 300];
    let xavier = Init::Xavier.values(&shape, &mut rng).unwrap();
    let bound = (6.0f32 / 500.0).sqrt();
    assert!(xavier.iter().all(|w| w.abs() <= bound));
    let var = |w: &[f32]| w.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / w.len() as f64;
    // Uniform on ±b has variance b²/3 = 2/(fan_in + fan_out); 60k samples pin it to ~1%.
    assert!(
        (var(&xavier) / (2.0 / 500.0) - 1.0).abs() < 0.03,
        "{}",
        var(&xavier)
    );
    let he = Init::He.values(&shape, &mut rng).unwrap();
    assert!(
        (var(&he) / (2.0 / 300.0) - 1.0).abs() < 0.03,
        "{}",
        var(&he)
    );
    // A Conv1d weight [out, in, width] counts the window in both fans.
    let conv = Init::He.values(&[100, 20, 30], &mut rng).unwrap();
    assert!((var(&conv) / (2.0 / 600.0) - 1.0).abs() < 0.03);
    assert_eq!(
        Init::He.values(&[3, 4], &mut Rng::new(9)).unwrap(),
        Init::He.values(&[3, 4], &mut Rng::new(9)).unwrap()
    );
    assert!(Init::Ones
        .values(&[4], &mut rng)
        .unwrap()
        .iter()
        .all(|&v| v == 1.0));
}

/// Each activation adds its own nonlinearity (against the CPU reference of its kernel), and
/// its name reads back.
#[test]
fn every_activation_applies_its_function_and_round_trips_its_name() {
    use shadergrad::Unary;
    let xs = [-3.0f32, -1.0, -0.25, 0.0, 0.5, 2.0];
    for activation in Activation::ALL {
        let mut g = Graph::new(gpu());
        let x = g.input("x", &[6]);
        let y = activation.apply(&mut g, x).unwrap();
        let mut plan = g.compile(&[y]).unwrap();
        plan.run(&[Feed::f32(x, &xs)], &[]).unwrap();
        let reference = match activation {
            Activation::Tanh => Unary::Tanh,
            Activation::Relu => Unary::Relu,
            Activation::Sigmoid => Unary::Sigmoid,
            Activation::Gelu => Unary::Gelu,
            Activation::Silu => Unary::Silu,
        };
        for (got, &x) in plan.read(y).unwrap().iter().zip(&xs) {
            let want = reference.apply(f64::from(x));
            assert!(
                (f64::from(*got) - want).abs() <= 1e-6 * (1.0 + want.abs()),
                "{activation:?}({x}) = {got}, expected {want}"
            );
        }
        assert_eq!(activation.name().parse::<Activation>().unwrap(), activation);
    }
    assert!("swish".parse::<Activation>().is_err());
}

#[test]
fn an_mlp_names_its_parameters_as_pytorch_and_computes_logits() {
    let params = Parameters::new(gpu(), 2);
    let mlp = Mlp::new(&params.at("mlp"), &[3, 5, 4, 2], Activation::Relu).unwrap();
    let state: Vec<(String, Vec<usize>)> = params
        .list()
        .iter()
        .map(|p| (p.name().to_string(), p.shape().to_vec()))
        .collect();
    let expected = [
        ("mlp.layers.0.weight", vec![5, 3]),
        ("mlp.layers.0.bias", vec![5]),
        ("mlp.layers.1.weight", vec![4, 5]),
        ("mlp.layers.1.bias", vec![4]),
        ("mlp.layers.2.weight", vec![2, 4]),
        ("mlp.layers.2.bias", vec![2]),
    ];
    let expected: Vec<(String, Vec<usize>)> = expected
        .into_iter()
        .map(|(name, shape)| (name.to_string(), shape))
        .collect();
    assert_eq!(state, expected);
    assert_eq!(params.at("mlp").at("layers.1").list().len(), 2);
    // The count from the sizes alone (checked before a model is built) is the store's.
    assert_eq!(
        Mlp::parameter_count(&[3, 5, 4, 2]).unwrap(),
        params.numel() as u64
    );
    assert!(Mlp::parameter_count(&[3, usize::MAX, 4]).is_err());
    let mut g = Graph::new(gpu());
    let x = g.input("x", &[7, 3]);
    let logits = mlp.forward(&mut g, x).unwrap();
    assert_eq!(g.shape(logits), &[7, 2]);
    let mut plan = g.compile(&[logits]).unwrap();
    plan.run(&[Feed::f32(x, &[0.5; 21])], &[]).unwrap();
    let out = plan.read(logits).unwrap();
    assert_eq!(out.len(), 14);
    // Equal rows in, equal rows out.
    assert!(out.chunks(2).all(|row| row == &out[..2]));
}

/// y = x·Wᵀ + b with W `[out, in]` over the last axis of a rank-3 input, against a CPU loop.
#[test]
fn linear_uses_pytorch_layout_over_any_leading_axes() {
    let params = Parameters::new(gpu(), 5);
    let (inputs, outputs) = (7, 5);
    let layer = Linear::new(&params.at("fc"), inputs, outputs).unwrap();
    assert_eq!(layer.weight.shape(), &[outputs, inputs]);
    assert_eq!((layer.in_features(), layer.out_features()), (7, 5));
    let bias: Vec<f32> = (0..outputs).map(|o| o as f32 * 0.1 - 0.2).collect();
    layer.bias.as_ref().unwrap().set(&bias).unwrap();
    let weight = layer.weight.to_vec().unwrap();
    // PyTorch's default: uniform in ±1/√in.
    assert!(weight
        .iter()
        .all(|w| w.abs() <= 1.0 / (inputs as f32).sqrt()));
    let x_values = Rng::new(6).vec(2 * 3 * inputs, -1.0, 1.0);
    let mut g = Graph::new(gpu());
    let x = g.input("x", &[2, 3, inputs]);
    let y = layer.forward(&mut g, x).unwrap();
    assert_eq!(g.shape(y), &[2, 3, outputs]);
    let mut plan = g.compile(&[y]).unwrap();
    plan.run(&[Feed::f32(x, &x_values)], &[]).unwrap();
    let expected: Vec<f32> = x_values
        .chunks(inputs)
        .flat_map(|row| {
            (0..outputs).map(|o| {
                let dot: f64 = (0..inputs)
                    .map(|i| f64::from(row[i]) * f64::from(weight[o * inputs + i]))
                    .sum();
                (dot + f64::from(bias[o])) as f32
            })
        })
        .collect();
    assert_close("linear", &plan.read(y).unwrap(), &expected, 1e-5, 1e-6);

    let no_bias =
        Linear::with_spec(&params.at("proj"), LinearSpec::new(3, 2).without_bias()).unwrap();
    assert!(no_bias.bias.is_none());
    assert_eq!(
        params
            .at("proj")
            .list()
            .iter()
            .map(|p| p.name().to_string())
            .collect::<Vec<_>>(),
        ["proj.weight"]
    );
    let mut g = Graph::new(gpu());
    let x = g.input("x", &[4, 6]);
    let err = layer.forward(&mut g, x).unwrap_err().to_string();
    assert!(err.contains("fc.weight") && err.contains("[4, 6]"), "{err}");
}

#[test]
fn embedding_and_layer_norm_match_their_definitions() {
    let params = Parameters::new(gpu(), 8);
    let embedding = Embedding::new(&params.at("embed"), 6, 4).unwrap();
    let norm = LayerNorm::new(&params.at("norm"), 4).unwrap();
    assert_eq!(norm.weight.to_vec().unwrap(), [1.0; 4]);
    assert_eq!(norm.bias.to_vec().unwrap(), [0.0; 4]);
    norm.weight.set(&[1.0, 2.0, 0.5, -1.0]).unwrap();
    norm.bias.set(&[0.0, 0.1, 0.2, 0.3]).unwrap();
    let table = embedding.weight.to_vec().unwrap();
    let mut g = Graph::new(gpu());
    let ids = g.input_indices("ids", &[3]);
    let rows = embedding.forward(&mut g, ids).unwrap();
    let normed = norm.forward(&mut g, rows).unwrap();
    let mut plan = g.compile(&[rows, normed]).unwrap();
    let picked = [5u32, 0, 5];
    plan.run(&[Feed::u32(ids, &picked)], &[]).unwrap();
    let expected_rows: Vec<f32> = picked
        .iter()
        .flat_map(|&id| table[id as usize * 4..id as usize * 4 + 4].to_vec())
        .collect();
    assert_eq!(plan.read(rows).unwrap(), expected_rows);
    let (gain, shift) = ([1.0, 2.0, 0.5, -1.0], [0.0, 0.1, 0.2, 0.3]);
    let expected: Vec<f32> = expected_rows
        .chunks(4)
        .flat_map(|row| {
            let mean = row.iter().map(|&v| f64::from(v)).sum::<f64>() / 4.0;
            let var = row
                .iter()
                .map(|&v| (f64::from(v) - mean).powi(2))
                .sum::<f64>()
                / 4.0;
            (0..4).map(move |c| {
                ((f64::from(row[c]) - mean) / (var + 1e-5).sqrt() * gain[c] + shift[c]) as f32
            })
        })
        .collect();
    assert_close(
        "layer norm",
        &plan.read(normed).unwrap(),
        &expected,
        1e-4,
        1e-5,
    );
}

/// The point of the store: a model trained by the plan of one batch shape is served by the
/// plan of another, compiled before training began, with no copying or matching of names;
/// two training plans of different batch sizes write the same gradients for one optimizer.
#[test]
fn plans_of_every_batch_shape_share_one_set_of_weights() {
    let params = Parameters::new(gpu(), 11);
    let mlp = Mlp::new(&params, &[2, 8, 2], Activation::Tanh).unwrap();
    let mut serve = Graph::new(gpu());
    let one = serve.input("x", &[1, 2]);
    let served = mlp.forward(&mut serve, one).unwrap();
    let mut serve = serve.compile(&[served]).unwrap();

    let xor = [
        (0.0, 0.0, 0u32),
        (0.0, 1.0, 1),
        (1.0, 0.0, 1),
        (1.0, 1.0, 0),
    ];
    let mut train_plans = Vec::new();
    for batch in [4, 2] {
        let mut g = Graph::new(gpu());
        let x = g.input("x", &[batch, 2]);
        let labels = g.input_indices("labels", &[batch]);
        let logits = mlp.forward(&mut g, x).unwrap();
        let loss = g.cross_entropy(logits, labels).unwrap();
        let grads = g.backward(loss).unwrap();
        let mut outputs = vec![loss];
        outputs.extend(grads.parameter_gradients());
        train_plans.push((g.compile(&outputs).unwrap(), x, labels, loss));
    }
    let mut optimizer = params
        .optimizer(OptimizerConfig::new(Rule::adam(), 0.05))
        .unwrap();
    let features: Vec<f32> = xor.iter().flat_map(|&(a, b, _)| [a, b]).collect();
    let labels: Vec<u32> = xor.iter().map(|&(_, _, label)| label).collect();
    for step in 1..=300u64 {
        // Odd steps train on all four points at batch 4, even steps on two at batch 2.
        let (plan, x, y, _) = &mut train_plans[usize::from(step % 2 == 0)];
        let rows = match step % 4 {
            0 => 0..2,
            2 => 2..4,
            _ => 0..4,
        };
        let (x, y) = (*x, *y);
        optimizer.prepare_step(step).unwrap();
        plan.run(
            &[
                Feed::f32(x, &features[rows.start * 2..rows.end * 2]),
                Feed::u32(y, &labels[rows]),
            ],
            optimizer.dispatches(),
        )
        .unwrap();
    }
    let (plan, x, y, loss) = &mut train_plans[0];
    let (x, y, loss) = (*x, *y, *loss);
    plan.run(&[Feed::f32(x, &features), Feed::u32(y, &labels)], &[])
        .unwrap();
    assert!(plan.read(loss).unwrap()[0] < 0.1);
    for &(a, b, label) in &xor {
        serve.run(&[Feed::f32(one, &[a, b])], &[]).unwrap();
        let logits = serve.read(served).unwrap();
        let predicted = u32::from(logits[1] > logits[0]);
        assert_eq!(
            predicted, label,
            "xor({a}, {b}) served at batch 1: {logits:?}"
        );
    }
}

#[test]
fn the_store_saves_and_loads_a_state_dict_by_name() {
    let trained = Parameters::new(gpu(), 1);
    Mlp::new(&trained, &[4, 6, 3], Activation::Tanh).unwrap();
    let fresh = Parameters::new(gpu(), 2);
    Mlp::new(&fresh, &[4, 6, 3], Activation::Tanh).unwrap();
    let first = |p: &Parameters| p.list()[0].to_vec().unwrap();
    assert_ne!(first(&fresh), first(&trained));

    let mut tensors = trained.named_tensors().unwrap();
    tensors.push(NamedTensor::new(
        "optimizer.0.exp_avg",
        &[6, 4],
        vec![0.0f32; 24],
    ));
    let checkpoint = Checkpoint {
        path: "state.safetensors".into(),
        tensors,
        config: serde_json::Value::Null,
    };
    fresh.load(&checkpoint).unwrap();
    for (a, b) in fresh.list().iter().zip(trained.list()) {
        assert_eq!(a.to_vec().unwrap(), b.to_vec().unwrap(), "{}", a.name());
    }

    // Another architecture is refused, naming the tensor, and nothing is written.
    let other = Parameters::new(gpu(), 3);
    Mlp::new(&other, &[4, 7, 3], Activation::Tanh).unwrap();
    let before = first(&other);
    let err = other.load(&checkpoint).unwrap_err().to_string();
    assert!(
        err.contains("layers.0.weight") && err.contains("[7, 4]"),
        "{err}"
    );
    assert_eq!(first(&other), before);
}

#[test]
fn layer_errors_name_the_problem() {
    let params = Parameters::new(gpu(), 3);
    let err = Linear::new(&params.at("empty"), 0, 4)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("empty.weight") && err.contains("0 inputs"),
        "{err}"
    );
    assert!(Mlp::new(&params, &[4], Activation::Tanh).is_err());
    assert!(Embedding::new(&params.at("e"), 0, 3).is_err());
    assert!(LayerNorm::with_eps(&params.at("n"), 3, 0.0).is_err());
    let err = "swish".parse::<Activation>().unwrap_err().to_string();
    assert!(err.contains("swish"), "{err}");
    // Asking again for a layer's parameters finds the same ones (tied weights) …
    let a = Linear::new(&params.at("dup"), 2, 2).unwrap();
    let b = Linear::new(&params.at("dup"), 2, 2).unwrap();
    assert!(a.weight.same(&b.weight));
    // … in the same shape only.
    let err = Linear::new(&params.at("dup"), 2, 3)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("dup.weight") && err.contains("[2, 2]") && err.contains("[3, 2]"),
        "{err}"
    );
    let err = params.get("missing").unwrap_err().to_string();
    assert!(
        err.contains("missing") && err.contains("dup.weight"),
        "{err}"
    );
    // Two stores' parameters of one name cannot meet in a graph.
    let other = Parameters::new(gpu(), 4);
    let c = Linear::new(&other.at("dup"), 2, 2).unwrap();
    let mut g = Graph::new(gpu());
    let x = g.input("x", &[1, 2]);
    a.forward(&mut g, x).unwrap();
    let err = c.forward(&mut g, x).unwrap_err().to_string();
    assert!(
        err.contains("dup.weight") && err.contains("already taken"),
        "{err}"
    );
}

/// Dropout acts only in `Mode::Train` (and differs by seed); sizes that cannot work are
/// refused, naming them.
#[test]
fn transformer_layers_drop_only_in_training_and_refuse_bad_sizes() {
    use shadergrad::nn::{
        Mode, MultiheadAttention, TransformerEncoderLayer, TransformerLayerConfig,
    };
    let config = TransformerLayerConfig {
        d_model: 8,
        heads: 2,
        dim_feedforward: 16,
        dropout: 0.5,
    };
    let params = Parameters::new(gpu(), 12);
    let layer = TransformerEncoderLayer::new(&params.at("layer"), config).unwrap();
    let x_values = Rng::new(13).vec(2 * 3 * 8, -1.0, 1.0);
    let run = |mode: &dyn Fn(&mut Graph) -> Mode, seed: u32| {
        let mut g = Graph::new(gpu());
        let x = g.input("x", &[2, 3, 8]);
        let mode = mode(&mut g);
        let y = layer.forward(&mut g, x, None, mode).unwrap();
        let mut plan = g.compile(&[y]).unwrap();
        let mut feeds = vec![Feed::f32(x, &x_values)];
        let seeds = [seed];
        if let Mode::Train { dropout_seed } = mode {
            feeds.push(Feed::u32(dropout_seed, &seeds));
        }
        plan.run(&feeds, &[]).unwrap();
        plan.read(y).unwrap()
    };
    let eval = |_: &mut Graph| Mode::Eval;
    let train = |g: &mut Graph| Mode::Train {
        dropout_seed: g.input_indices("dropout_seed", &[1]),
    };
    assert_eq!(run(&eval, 0), run(&eval, 1));
    assert_ne!(run(&train, 1), run(&eval, 0));
    assert_ne!(run(&train, 1), run(&train, 2));
    assert_eq!(run(&train, 3), run(&train, 3));

    let err = MultiheadAttention::new(&params.at("odd"), 8, 3)
        .unwrap_err()
        .to_string();
    assert!(err.contains("3 heads") && err.contains("8"), "{err}");
    let err = TransformerEncoderLayer::new(
        &params.at("bad"),
        TransformerLayerConfig {
            dropout: 1.0,
            ..config
        },
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("dropout 1"), "{err}");
}

/// The optimizer that `Parameters::optimizer` makes keys its state by the parameters'
/// names, so a checkpoint's moments go back to their own parameters in a build that makes
/// the parameters in another order; a checkpoint whose state is keyed by index (as saved
/// before) is keyed by name on upgrade.
#[test]
fn optimizer_state_follows_its_parameter_by_name() {
    let build = |order: [&str; 2]| {
        let params = Parameters::new(gpu(), 5);
        for name in order {
            let shape: &[usize] = if name == "w" { &[2, 3] } else { &[3] };
            params.get_or_init(name, shape, Init::Uniform(1.0)).unwrap();
        }
        params
    };
    let trained = build(["w", "b"]);
    let mut optimizer = trained
        .optimizer(OptimizerConfig::new(Rule::adam(), 0.1))
        .unwrap();
    for parameter in trained.list() {
        let gradient: Vec<f32> = (0..parameter.numel()).map(|i| i as f32 - 1.5).collect();
        parameter
            .gradient()
            .unwrap()
            .gpu()
            .write(parameter.gradient().unwrap().buffer(), &gradient);
    }
    optimizer.step().unwrap();
    let tensors = trained.checkpoint_tensors(Some(&optimizer)).unwrap();
    let names: Vec<&str> = tensors.iter().map(|t| t.name.as_str()).collect();
    for name in ["optimizer.w.exp_avg", "optimizer.b.exp_avg_sq"] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }

    // Another build makes b first: its optimizer takes the state by name.
    let rebuilt = build(["b", "w"]);
    let mut resumed = rebuilt
        .optimizer(OptimizerConfig::new(Rule::adam(), 0.1))
        .unwrap();
    let state: Vec<(String, shadergrad::Tensor)> = tensors
        .iter()
        .filter_map(|t| Some((t.name.strip_prefix("optimizer.")?.to_string(), t)))
        .map(|(name, t)| (name, t.upload(gpu()).unwrap()))
        .collect();
    resumed.load_state(1, &state).unwrap();
    let moment = |optimizer: &shadergrad::Optimizer, name: &str| {
        let state = optimizer.state_tensors();
        let (_, tensor) = state.iter().find(|(n, _)| n == name).unwrap();
        tensor.to_vec().unwrap()
    };
    assert_eq!(
        moment(&resumed, "w.exp_avg"),
        moment(&optimizer, "w.exp_avg")
    );
    assert_eq!(
        moment(&resumed, "b.exp_avg_sq"),
        moment(&optimizer, "b.exp_avg_sq")
    );

    // Keyed by index, in the order of the build that saved it: renamed on upgrade by the
    // order of the parameters it is upgraded for.
    let by_index: Vec<NamedTensor> = tensors
        .iter()
        .map(|t| {
            let name = t
                .name
                .replace("optimizer.w.", "optimizer.0.")
                .replace("optimizer.b.", "optimizer.1.");
            NamedTensor::new(name, &t.shape, t.as_f32().unwrap().to_vec())
        })
        .collect();
    let checkpoint = Checkpoint {
        path: "old.safetensors".into(),
        tensors: by_index,
        config: serde_json::json!({ "weight_layout": shadergrad::models::WEIGHT_LAYOUT }),
    };
    let upgraded =
        shadergrad::models::upgrade_legacy_checkpoint(&checkpoint, &[], &trained).unwrap();
    let mut upgraded_names: Vec<&str> = upgraded.tensors.iter().map(|t| t.name.as_str()).collect();
    let mut expected = names.clone();
    upgraded_names.sort();
    expected.sort();
    assert_eq!(upgraded_names, expected);
}

#[test]
fn optimizer_parameter_names_are_one_per_parameter_and_distinct() {
    let params = Parameters::new(gpu(), 1);
    params.get_or_init("a", &[2], Init::Zeros).unwrap();
    params.get_or_init("b", &[2], Init::Zeros).unwrap();
    let make = || {
        shadergrad::Optimizer::new(
            gpu(),
            OptimizerConfig::new(Rule::Sgd, 0.1),
            &params.optimizer_pairs().unwrap(),
        )
        .unwrap()
    };
    assert_eq!(make().parameter_names(), ["0", "1"]);
    let message = make().with_parameter_names(&["a"]).unwrap_err().to_string();
    assert!(message.contains("1 names for 2 parameters"), "{message}");
    let message = make()
        .with_parameter_names(&["a", "a"])
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("\"a\" is empty or given twice"),
        "{message}"
    );
    let named = make().with_parameter_names(&["a", "b"]).unwrap();
    let state: Vec<String> = named.state_tensors().into_iter().map(|(n, _)| n).collect();
    assert!(state.is_empty(), "plain SGD keeps no state: {state:?}");
    assert_eq!(named.parameter_names(), ["a", "b"]);
}
