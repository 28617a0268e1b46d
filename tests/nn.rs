//! Layers: initialisation statistics, parameter names, shapes and errors.

mod common;

use common::gpu;
use shadergrad::graph::{Feed, Graph};
use shadergrad::nn::{Activation, Init, Linear, Mlp};
use shadergrad::rng::Rng;

#[test]
fn initialisations_have_their_textbook_scale() {
    let mut rng = Rng::new(1);
    let (fan_in, fan_out) = (300, 200);
    let xavier = Init::Xavier.weights(fan_in, fan_out, &mut rng);
    let bound = (6.0f32 / 500.0).sqrt();
    assert!(xavier.iter().all(|w| w.abs() <= bound));
    let var = |w: &[f32]| w.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / w.len() as f64;
    // Uniform on ±b has variance b²/3 = 2/(fan_in + fan_out); 60k samples pin it to ~1%.
    assert!(
        (var(&xavier) / (2.0 / 500.0) - 1.0).abs() < 0.03,
        "{}",
        var(&xavier)
    );
    let he = Init::He.weights(fan_in, fan_out, &mut rng);
    assert!(
        (var(&he) / (2.0 / 300.0) - 1.0).abs() < 0.03,
        "{}",
        var(&he)
    );
    assert_eq!(
        Init::He.weights(3, 4, &mut Rng::new(9)),
        Init::He.weights(3, 4, &mut Rng::new(9))
    );
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
fn an_mlp_names_its_parameters_and_computes_logits() {
    let mut g = Graph::new(gpu());
    let mut rng = Rng::new(2);
    let mlp = Mlp::new(&mut g, &[3, 5, 4, 2], Activation::Relu, &mut rng).unwrap();
    let names: Vec<&str> = g.parameters().iter().map(|&p| g.name(p).unwrap()).collect();
    assert_eq!(
        names,
        [
            "layer0.weight",
            "layer0.bias",
            "layer1.weight",
            "layer1.bias",
            "layer2.weight",
            "layer2.bias"
        ]
    );
    // The count from the sizes alone (checked before a model is built) is the graph's.
    let counted: usize = g
        .parameters()
        .iter()
        .map(|&p| g.shape(p).iter().product::<usize>())
        .sum();
    assert_eq!(Mlp::parameter_count(&[3, 5, 4, 2]).unwrap(), counted as u64);
    assert!(Mlp::parameter_count(&[3, usize::MAX, 4]).is_err());
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

#[test]
fn layer_errors_name_the_problem() {
    let mut g = Graph::new(gpu());
    let mut rng = Rng::new(3);
    let err = Linear::new(&mut g, "empty", 0, 4, Init::Xavier, &mut rng)
        .unwrap_err()
        .to_string();
    assert!(err.contains("empty") && err.contains("0 inputs"), "{err}");
    assert!(Mlp::new(&mut g, &[4], Activation::Tanh, &mut rng).is_err());
    let err = "swish".parse::<Activation>().unwrap_err().to_string();
    assert!(err.contains("swish"), "{err}");
    Linear::new(&mut g, "dup", 2, 2, Init::He, &mut rng).unwrap();
    let err = Linear::new(&mut g, "dup", 2, 2, Init::He, &mut rng)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("dup.weight") && err.contains("already taken"),
        "{err}"
    );
}
