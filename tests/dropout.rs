//! Dropout's counter-based generator: the GPU's masks against the CPU reference bit for
//! bit, their statistics, seeds, and the errors for bad probabilities.

mod common;

use common::gpu;
use shadergrad::graph::{Feed, Graph};
use shadergrad::kernels::random::{dropout_cpu, dropout_dispatch, keep_mask};
use shadergrad::rng::Rng;
use shadergrad::{Indices, Tensor};

/// dropout(x) on the GPU through the kernel's launcher.
fn gpu_dropout(x: &[f32], seed: u32, stream: u32, p: f32) -> Vec<f32> {
    let gpu = gpu();
    let x = Tensor::from_slice(gpu, x, &[x.len()]).unwrap();
    let seed = Indices::from_slice(gpu, &[seed], &[1]).unwrap();
    let y = Tensor::zeros(gpu, x.shape()).unwrap();
    let dispatch = dropout_dispatch(&x, &seed, &y, p, stream).unwrap();
    gpu.submit(&[], &[dispatch]).unwrap();
    y.to_vec().unwrap()
}

fn bits(values: &[f32]) -> Vec<u32> {
    values.iter().map(|v| v.to_bits()).collect()
}

#[test]
fn the_gpu_mask_is_the_cpu_mask_bit_for_bit() {
    let x = Rng::new(3).vec(100_003, -2.0, 2.0);
    for (seed, stream, p) in [(0, 0, 0.1), (12345, 7, 0.5), (u32::MAX, 1, 0.9)] {
        let expected = dropout_cpu(&x, seed, stream, p).unwrap();
        let got = gpu_dropout(&x, seed, stream, p);
        assert_eq!(
            bits(&got),
            bits(&expected),
            "seed {seed}, stream {stream}, p {p}"
        );
    }
}

#[test]
fn the_kept_fraction_is_one_minus_p_within_four_sigma() {
    let n = 100_000;
    let ones = vec![1.0f32; n];
    for p in [0.1f32, 0.5, 0.9] {
        let kept = gpu_dropout(&ones, 99, 0, p)
            .iter()
            .filter(|&&v| v != 0.0)
            .count() as f64;
        let q = 1.0 - f64::from(p);
        let sigma = (n as f64 * q * (1.0 - q)).sqrt();
        assert!(
            (kept - n as f64 * q).abs() < 4.0 * sigma,
            "p {p}: kept {kept} of {n}, expected {} ± {sigma:.0}",
            n as f64 * q
        );
    }
}

#[test]
fn p_zero_is_the_identity() {
    let x = Rng::new(5).vec(4099, -3.0, 3.0);
    assert_eq!(bits(&gpu_dropout(&x, 17, 2, 0.0)), bits(&x));
    let mut g = Graph::new(gpu());
    let input = g.input("x", &[3]);
    let seed = g.input_indices("seed", &[1]);
    assert_eq!(g.dropout(input, 0.0, seed).unwrap(), input);
}

#[test]
fn the_same_seed_gives_the_same_bits_and_other_seeds_and_streams_differ() {
    let n = 10_000;
    let mask = |seed, stream| keep_mask(seed, stream, n, 0.5).unwrap();
    let x = vec![1.0f32; n];
    assert_eq!(
        bits(&gpu_dropout(&x, 8, 0, 0.5)),
        bits(&gpu_dropout(&x, 8, 0, 0.5))
    );
    let agreement = |a: &[bool], b: &[bool]| a.iter().zip(b).filter(|(x, y)| x == y).count();
    // Independent masks at p = 0.5 agree on half the elements (σ = 50).
    for (other_seed, other_stream) in [(9, 0), (8, 1)] {
        let same = agreement(&mask(8, 0), &mask(other_seed, other_stream));
        assert!(
            (4800..5200).contains(&same),
            "seed 8 stream 0 and seed {other_seed} stream {other_stream} agree on {same} of {n}"
        );
    }
}

#[test]
fn a_graph_draws_a_new_mask_per_seed_and_per_dropout() {
    let gpu = gpu();
    let n = 2048;
    let mut g = Graph::new(gpu);
    let x = g.input("x", &[n]);
    let seed = g.input_indices("seed", &[1]);
    let first = g.dropout(x, 0.5, seed).unwrap();
    let second = g.dropout(x, 0.5, seed).unwrap();
    let mut plan = g.compile(&[first, second]).unwrap();
    let ones = vec![1.0f32; n];
    let mut run = |seed_value: u32| {
        plan.run(&[Feed::f32(x, &ones), Feed::u32(seed, &[seed_value])], &[])
            .unwrap();
        (plan.read(first).unwrap(), plan.read(second).unwrap())
    };
    let (a, b) = run(1);
    assert_eq!(bits(&a), bits(&dropout_cpu(&ones, 1, 0, 0.5).unwrap()));
    assert_eq!(bits(&b), bits(&dropout_cpu(&ones, 1, 1, 0.5).unwrap()));
    assert_ne!(a, b, "two dropouts of one graph drew the same mask");
    let (c, _) = run(2);
    assert_eq!(bits(&c), bits(&dropout_cpu(&ones, 2, 0, 0.5).unwrap()));
    assert_ne!(a, c, "a new seed drew the same mask");
}

#[test]
fn bad_probabilities_are_errors_naming_them() {
    let mut g = Graph::new(gpu());
    let x = g.input("x", &[4]);
    let seed = g.input_indices("seed", &[1]);
    for p in [-0.5f32, 1.0, 1.5, f32::NAN] {
        let message = g.dropout(x, p, seed).unwrap_err().to_string();
        assert!(
            message.contains("dropout") && message.contains(&format!("p = {p}")),
            "{message}"
        );
        assert!(message.contains("[0, 1)"), "{message}");
    }
    let wide_seed = g.input_indices("wide_seed", &[2]);
    let message = g.dropout(x, 0.5, wide_seed).unwrap_err().to_string();
    assert!(
        message.contains("seed") && message.contains("[2]"),
        "{message}"
    );
    let f32_seed = g.input("f32_seed", &[1]);
    let message = g.dropout(x, 0.5, f32_seed).unwrap_err().to_string();
    assert!(message.contains("U32"), "{message}");
}
