//! The optimizers on the GPU against an f64 reference written here from the textbook rules
//! (PyTorch's documented algorithms), against values worked out by hand, and their errors.

mod common;

use common::{assert_within, gpu};
use shadergrad::gpu::Dispatch;
use shadergrad::kernels::elementwise::unary_dispatch;
use shadergrad::rng::Rng;
use shadergrad::{Gpu, Optimizer, OptimizerConfig, Rule, Schedule, Tensor, Unary};

/// f32 epsilon as f64.
const EPS: f64 = f32::EPSILON as f64;

fn upload(data: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_slice(gpu(), data, shape).unwrap()
}

/// Overwrites a gradient in place, as a backward pass would before the optimizer runs.
fn write_grad(grad: &Tensor, values: &[f32]) {
    assert_eq!(grad.numel(), values.len());
    gpu().write(grad.buffer(), values);
}

fn max_abs(values: impl IntoIterator<Item = f64>) -> f64 {
    values.into_iter().fold(0.0, |m, v| m.max(v.abs()))
}

// ------------------------------------------------------------------- the f64 reference

/// The rules as their papers and PyTorch's documentation state them, in f64, one step at
/// a time; written independently of the kernels' arrangement of the same arithmetic.
struct Reference {
    config: OptimizerConfig,
    params: Vec<Vec<f64>>,
    /// Per parameter: the velocity (momentum), or m and v (Adam).
    first: Vec<Vec<f64>>,
    second: Vec<Vec<f64>>,
    step: u64,
}

impl Reference {
    fn new(config: OptimizerConfig, params: &[Vec<f32>]) -> Reference {
        let widen = |p: &Vec<f32>| p.iter().map(|&x| f64::from(x)).collect::<Vec<f64>>();
        let zeros = |p: &Vec<f32>| vec![0.0; p.len()];
        Reference {
            config,
            params: params.iter().map(widen).collect(),
            first: params.iter().map(zeros).collect(),
            second: params.iter().map(zeros).collect(),
            step: 0,
        }
    }

    /// Applies one step with `grads`; returns the global gradient norm and the clipping
    /// factor.
    fn step(&mut self, grads: &[Vec<f32>]) -> (f64, f64) {
        self.step += 1;
        let t = self.step as f64;
        let lr = f64::from(self.config.lr) * self.config.schedule.factor(self.step);
        let norm = grads
            .iter()
            .flatten()
            .map(|&g| f64::from(g) * f64::from(g))
            .sum::<f64>()
            .sqrt();
        let scale = match self.config.max_grad_norm {
            Some(max_norm) => (f64::from(max_norm) / (norm + 1e-6)).min(1.0),
            None => 1.0,
        };
        for (p, grad) in grads.iter().enumerate() {
            for (i, &g) in grad.iter().enumerate() {
                let g = f64::from(g) * scale;
                let theta = &mut self.params[p][i];
                let first = &mut self.first[p][i];
                let second = &mut self.second[p][i];
                match self.config.rule {
                    Rule::Sgd => *theta -= lr * g,
                    Rule::Momentum { momentum, nesterov } => {
                        let mu = f64::from(momentum);
                        *first = mu * *first + g;
                        let direction = if nesterov { g + mu * *first } else { *first };
                        *theta -= lr * direction;
                    }
                    Rule::Adam { beta1, beta2, eps } => {
                        adam(theta, first, second, g, lr, t, (beta1, beta2, eps));
                    }
                    Rule::AdamW {
                        beta1,
                        beta2,
                        eps,
                        weight_decay,
                    } => {
                        *theta -= lr * f64::from(weight_decay) * *theta;
                        adam(theta, first, second, g, lr, t, (beta1, beta2, eps));
                    }
                }
            }
        }
        (norm, scale)
    }
}

/// One Adam step of one element: m̂ = m/(1 − β1ᵗ), v̂ = v/(1 − β2ᵗ), θ ← θ − α·m̂/(√v̂ + ε).
fn adam(
    theta: &mut f64,
    m: &mut f64,
    v: &mut f64,
    g: f64,
    lr: f64,
    t: f64,
    (beta1, beta2, eps): (f32, f32, f32),
) {
    let (b1, b2) = (f64::from(beta1), f64::from(beta2));
    *m = b1 * *m + (1.0 - b1) * g;
    *v = b2 * *v + (1.0 - b2) * g * g;
    let m_hat = *m / (1.0 - b1.powf(t));
    let v_hat = *v / (1.0 - b2.powf(t));
    *theta -= lr * m_hat / (v_hat.sqrt() + f64::from(eps));
}

/// A bound on the size of the terms of one update, for the tolerance: α|g| for SGD,
/// α|g|(1 + μ)/(1 − μ) with momentum (|v| ≤ |g|/(1 − μ)), and α√t for Adam: m̂ and v̂ are
/// weighted means of g and g² whose weights are all at least about 1/t over t steps, so
/// |m̂| ≤ max|g| ≤ √(t·v̂).
fn update_bound(rule: &Rule, lr: f64, max_grad: f64, steps: usize) -> f64 {
    match *rule {
        Rule::Sgd => lr * max_grad,
        Rule::Momentum { momentum, .. } => {
            let mu = f64::from(momentum);
            lr * max_grad * (1.0 + mu) / (1.0 - mu)
        }
        Rule::Adam { .. } | Rule::AdamW { .. } => lr * (steps as f64).sqrt(),
    }
}

/// Runs `config` for `steps` steps with fresh random gradients each step over parameters
/// of `shapes`, on the GPU and in the reference, and compares parameters, state and norm.
///
/// Tolerance per element: each step rounds a handful of f32 operations, each off by at
/// most ε/2 of what it produces: θ itself (4ε·max|θ| covers eight roundings) and the terms
/// of the update (64ε of their bound covers the dozen roundings of Adam's quotient, the
/// geometric sum of the velocity's roundings with μ = 0.9, and the clipping factor's
/// summation of up to ~90 terms in sequence, which errs by at most ~45ε relative). Errors
/// carry to later steps without growth, so they add up over the steps. A wrong rule (a
/// missing bias correction, decay or clipping) is off by a sizeable part of an update,
/// which the test checks is thousands of times the tolerance.
fn check_against_reference(seed: u64, config: OptimizerConfig, shapes: &[&[usize]], steps: usize) {
    let mut rng = Rng::new(seed);
    let initial: Vec<Vec<f32>> = shapes
        .iter()
        .map(|s| rng.vec(s.iter().product(), -1.0, 1.0))
        .collect();
    let pairs: Vec<(Tensor, Tensor)> = shapes
        .iter()
        .zip(&initial)
        .map(|(shape, values)| (upload(values, shape), Tensor::zeros(gpu(), shape).unwrap()))
        .collect();
    let mut optimizer = Optimizer::new(gpu(), config, &pairs).unwrap();
    let mut reference = Reference::new(config, &initial);

    let mut max_lr = 0.0f64;
    let mut max_grad = 0.0f64;
    for step in 1..=steps as u64 {
        let grads: Vec<Vec<f32>> = initial
            .iter()
            .map(|p| rng.vec(p.len(), -1.0, 1.0))
            .collect();
        for ((_, grad), values) in pairs.iter().zip(&grads) {
            write_grad(grad, values);
        }
        optimizer.step().unwrap();
        let (norm, scale) = reference.step(&grads);
        max_lr = max_lr.max(config.learning_rate(step));
        // The largest gradient the update saw, after clipping.
        max_grad = max_grad.max(scale * max_abs(grads.iter().flatten().map(|&g| f64::from(g))));
        if config.max_grad_norm.is_some() {
            // Relative error of a sum of squares folded in ≤ ~90 sequential additions.
            let gpu_norm = f64::from(optimizer.grad_norm().unwrap().unwrap());
            assert!(
                (gpu_norm - norm).abs() <= 64.0 * EPS * norm,
                "step {step}: the GPU gives the norm {gpu_norm}, the reference {norm}"
            );
        }
    }
    assert_eq!(optimizer.current_step(), steps as u64);

    let max_theta = max_abs(reference.params.iter().flatten().copied()).max(1.0);
    let per_step =
        4.0 * EPS * max_theta + 64.0 * EPS * update_bound(&config.rule, max_lr, max_grad, steps);
    let tolerance = steps as f64 * per_step;
    let mut moved = 0.0f64;
    for (p, (param, _)) in pairs.iter().enumerate() {
        let expected: Vec<f32> = reference.params[p].iter().map(|&x| x as f32).collect();
        let what = format!("{:?} parameter {p} {:?}", config.rule, shapes[p]);
        assert_within(&what, &param.to_vec().unwrap(), &expected, |_| tolerance);
        moved = moved.max(max_abs(
            reference.params[p]
                .iter()
                .zip(&initial[p])
                .map(|(now, &before)| now - f64::from(before)),
        ));
    }
    assert!(
        moved > 1000.0 * tolerance,
        "the parameters moved by {moved:e} at most, too little to tell a right rule from a wrong one at tolerance {tolerance:e}"
    );

    // The state the optimizer keeps, against the reference's: its terms are at most
    // max|g|/(1 − μ) (velocity), max|g| (m) and max|g|² (v), rounded a few times per step.
    let state = optimizer.state_tensors();
    let by_name = |name: &str| {
        state
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no state tensor {name}"))
            .1
            .to_vec()
            .unwrap()
    };
    for p in 0..shapes.len() {
        let narrow = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
        match config.rule {
            Rule::Sgd => {}
            Rule::Momentum { momentum, .. } => {
                let bound = max_grad / (1.0 - f64::from(momentum));
                assert_within(
                    &format!("velocity {p}"),
                    &by_name(&format!("{p}.momentum_buffer")),
                    &narrow(&reference.first[p]),
                    |_| steps as f64 * 4.0 * EPS * bound,
                );
            }
            Rule::Adam { .. } | Rule::AdamW { .. } => {
                assert_within(
                    &format!("exp_avg {p}"),
                    &by_name(&format!("{p}.exp_avg")),
                    &narrow(&reference.first[p]),
                    |_| steps as f64 * 4.0 * EPS * max_grad,
                );
                assert_within(
                    &format!("exp_avg_sq {p}"),
                    &by_name(&format!("{p}.exp_avg_sq")),
                    &narrow(&reference.second[p]),
                    |_| steps as f64 * 4.0 * EPS * max_grad * max_grad,
                );
            }
        }
    }
}

/// Odd sizes: one element, primes, a matrix of prime sides, and 65537 = 2¹⁶ + 1, which
/// leaves one element past the last full workgroup (or, on CPU-like adapters, past the
/// last full turn of the several-elements-per-invocation loop).
/// And multiples of 4, which Adam updates four at a time on CPU-like adapters: one vec4,
/// and 65540 = 2¹⁶ + 4, one vec4 past the last full turn.
const SHAPES: &[&[usize]] = &[&[1], &[13], &[31, 17], &[65537], &[4], &[65540]];

const MOMENTUM: Rule = Rule::Momentum {
    momentum: 0.9,
    nesterov: false,
};

const NESTEROV: Rule = Rule::Momentum {
    momentum: 0.9,
    nesterov: true,
};

// ---------------------------------------------------------------- each rule, several steps

#[test]
fn sgd_matches_the_reference() {
    check_against_reference(1, OptimizerConfig::new(Rule::Sgd, 0.1), SHAPES, 5);
}

#[test]
fn momentum_matches_the_reference() {
    check_against_reference(2, OptimizerConfig::new(MOMENTUM, 0.05), SHAPES, 6);
}

#[test]
fn nesterov_momentum_matches_the_reference() {
    check_against_reference(3, OptimizerConfig::new(NESTEROV, 0.05), SHAPES, 6);
}

#[test]
fn adam_matches_the_reference() {
    check_against_reference(4, OptimizerConfig::new(Rule::adam(), 0.01), SHAPES, 6);
    // β1 = 0 and a large ε: the corners of the hyperparameters.
    let rule = Rule::Adam {
        beta1: 0.0,
        beta2: 0.5,
        eps: 0.1,
    };
    check_against_reference(5, OptimizerConfig::new(rule, 0.01), &[&[7], &[300]], 4);
}

#[test]
fn adamw_matches_the_reference() {
    // λ·α = 2e-3 per step: the decay alone moves θ by far more than the tolerance.
    check_against_reference(6, OptimizerConfig::new(Rule::adamw(0.2), 0.01), SHAPES, 6);
}

#[test]
fn clipping_folds_into_every_rule() {
    // Uniform gradients over ~66k elements have a norm near 148: a max norm of 10 bites.
    for (seed, rule, lr) in [
        (7, Rule::Sgd, 1.0),
        (8, MOMENTUM, 0.5),
        (9, NESTEROV, 0.5),
        (10, Rule::adam(), 0.01),
        (11, Rule::adamw(0.1), 0.01),
    ] {
        let config = OptimizerConfig::new(rule, lr).with_max_grad_norm(10.0);
        check_against_reference(seed, config, SHAPES, 4);
    }
}

#[test]
fn schedules_drive_the_learning_rate_on_the_gpu() {
    let config = OptimizerConfig::new(Rule::Sgd, 0.2).with_schedule(Schedule::StepDecay {
        every: 2,
        gamma: 0.5,
    });
    check_against_reference(12, config, &[&[5], &[257]], 6);
    let config = OptimizerConfig::new(Rule::adam(), 0.02).with_schedule(Schedule::WarmupCosine {
        warmup: 3,
        total: 8,
        final_fraction: 0.1,
    });
    check_against_reference(13, config, &[&[5], &[257]], 10);
}

// ---------------------------------------------------------------- values worked out by hand

/// Runs `steps` steps of `config` from `theta` with the constant gradient `grad`, returning
/// the parameters after each step.
fn trajectory(config: OptimizerConfig, theta: &[f32], grad: &[f32], steps: usize) -> Vec<Vec<f32>> {
    let param = upload(theta, &[theta.len()]);
    let gradient = upload(grad, &[grad.len()]);
    let mut optimizer = Optimizer::new(gpu(), config, &[(param.clone(), gradient)]).unwrap();
    (0..steps)
        .map(|_| {
            optimizer.step().unwrap();
            param.to_vec().unwrap()
        })
        .collect()
}

#[test]
fn sgd_by_hand() {
    // Every value is a short binary fraction, so f32 holds each one exactly.
    let steps = trajectory(
        OptimizerConfig::new(Rule::Sgd, 0.25),
        &[1.0, -2.0],
        &[0.5, 0.25],
        2,
    );
    assert_eq!(steps, vec![vec![0.875, -2.0625], vec![0.75, -2.125]]);
}

#[test]
fn momentum_by_hand() {
    // μ = ½, g = 1: v = 1, 1.5, 1.75, 1.875; θ falls by α·v = ¼·v each step.
    let config = OptimizerConfig::new(
        Rule::Momentum {
            momentum: 0.5,
            nesterov: false,
        },
        0.25,
    );
    let steps = trajectory(config, &[0.0], &[1.0], 4);
    assert_eq!(
        steps,
        vec![vec![-0.25], vec![-0.625], vec![-1.0625], vec![-1.53125]]
    );

    // Nesterov steps along g + μ·v = 1.5, 1.75, 1.875.
    let config = OptimizerConfig::new(
        Rule::Momentum {
            momentum: 0.5,
            nesterov: true,
        },
        0.25,
    );
    let steps = trajectory(config, &[0.0], &[1.0], 3);
    assert_eq!(steps, vec![vec![-0.375], vec![-0.8125], vec![-1.28125]]);
}

#[test]
fn adam_with_a_constant_gradient_steps_by_the_learning_rate() {
    // With g constant the bias corrections make m̂ = g and v̂ = g² exactly, so every step
    // is α·g/(|g| + ε): the sign of g times α, whatever its size. Tolerance: m̂ and v̂ are
    // off by a few ε per step in f32 (64ε of a step each step covers them), θ by ε/2.
    let (lr, eps) = (0.01, 1e-8);
    let theta = [0.5f32, -0.25, 2.0, 0.0];
    let grad = [0.3f32, -2.0, 1e-3, -0.7];
    let steps = trajectory(OptimizerConfig::new(Rule::adam(), lr), &theta, &grad, 5);
    for (t, actual) in steps.iter().enumerate() {
        let t = (t + 1) as f64;
        let expected: Vec<f32> = theta
            .iter()
            .zip(&grad)
            .map(|(&x, &g)| {
                let g = f64::from(g);
                (f64::from(x) - t * f64::from(lr) * g / (g.abs() + eps)) as f32
            })
            .collect();
        assert_within(&format!("Adam step {t}"), actual, &expected, |_| {
            t * (64.0 * EPS * f64::from(lr) + 4.0 * EPS * 2.0)
        });
    }
}

#[test]
fn adamw_decays_without_a_gradient_where_adam_does_not_move() {
    // g = 0 leaves m = v = 0 and Adam's step 0/(0 + ε) = 0, so only the decoupled decay
    // acts: θ_t = (1 − αλ)ᵗ·θ₀. A coupled L2 term would instead feed λθ into m and v and
    // step by about α·sign(θ), a hundred times more. Tolerance: one rounding of
    // (1 − αλ)·θ per step and of αλ itself, ε relative each.
    let (lr, weight_decay) = (0.1f32, 0.05f32);
    let theta = [1.0f32, -3.0, 0.125];
    let zero = [0.0f32; 3];
    let steps = trajectory(
        OptimizerConfig::new(Rule::adamw(weight_decay), lr),
        &theta,
        &zero,
        4,
    );
    let shrink = 1.0 - f64::from(lr) * f64::from(weight_decay);
    for (t, actual) in steps.iter().enumerate() {
        let t = (t + 1) as i32;
        let expected: Vec<f32> = theta
            .iter()
            .map(|&x| (f64::from(x) * shrink.powi(t)) as f32)
            .collect();
        assert_within(&format!("AdamW step {t}"), actual, &expected, |i| {
            f64::from(t) * 2.0 * EPS * f64::from(theta[i].abs())
        });
    }
    let unmoved = trajectory(OptimizerConfig::new(Rule::adam(), lr), &theta, &zero, 2);
    assert_eq!(unmoved[1], theta.to_vec());
}

// ---------------------------------------------------------------- clipping

/// Three gradients whose global norm is exactly 13: √(3² + 4² + 12² + 0²).
fn pythagorean_pairs() -> Vec<(Tensor, Tensor)> {
    vec![
        (
            Tensor::zeros(gpu(), &[2]).unwrap(),
            upload(&[3.0, 4.0], &[2]),
        ),
        (Tensor::zeros(gpu(), &[1]).unwrap(), upload(&[12.0], &[1])),
        (
            Tensor::zeros(gpu(), &[2, 2]).unwrap(),
            upload(&[0.0; 4], &[2, 2]),
        ),
    ]
}

/// With SGD at α = 1 from θ = 0, θ after one step is −scale·g.
fn clipped_step(max_norm: f32) -> (f32, Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let pairs = pythagorean_pairs();
    let config = OptimizerConfig::new(Rule::Sgd, 1.0).with_max_grad_norm(max_norm);
    let mut optimizer = Optimizer::new(gpu(), config, &pairs).unwrap();
    // One sum of squares per gradient, one fold, one update per parameter.
    assert_eq!(optimizer.dispatches().len(), 3 + 1 + 3);
    optimizer.step().unwrap();
    let norm = optimizer.grad_norm().unwrap().unwrap();
    let params = pairs.iter().map(|(p, _)| p.to_vec().unwrap()).collect();
    let grads = pairs.iter().map(|(_, g)| g.to_vec().unwrap()).collect();
    (norm, params, grads)
}

#[test]
fn clipping_below_the_threshold_leaves_the_gradients_alone() {
    // 13 < 100: scale = min(1, 100/(13 + 1e-6)) = 1, so θ = −g exactly.
    let (norm, params, grads) = clipped_step(100.0);
    // WGSL's sqrt may be off by a couple of units in the last place.
    assert!(
        (norm - 13.0).abs() <= 2.0 * 13.0 * f32::EPSILON,
        "norm {norm}"
    );
    assert_eq!(params, vec![vec![-3.0, -4.0], vec![-12.0], vec![0.0; 4]]);
    assert_eq!(grads, vec![vec![3.0, 4.0], vec![12.0], vec![0.0; 4]]);
}

#[test]
fn clipping_above_the_threshold_scales_to_the_max_norm() {
    // scale = 6.5/(13 + 1e-6) ≈ ½: θ = −scale·g. Tolerance: the norm's couple of units in
    // the last place and three roundings (the quotient, the product, the subtraction).
    let (norm, params, grads) = clipped_step(6.5);
    assert!(
        (norm - 13.0).abs() <= 2.0 * 13.0 * f32::EPSILON,
        "norm {norm}"
    );
    let scale = 6.5 / (13.0 + 1e-6);
    for (actual, grad) in params
        .iter()
        .zip([vec![3.0, 4.0], vec![12.0], vec![0.0; 4]])
    {
        let expected: Vec<f32> = grad.iter().map(|g: &f64| (-g * scale) as f32).collect();
        assert_within("clipped step", actual, &expected, |i| {
            6.0 * EPS * grad[i] * scale
        });
    }
    // The factor is folded into the updates: the gradients keep their values.
    assert_eq!(grads, vec![vec![3.0, 4.0], vec![12.0], vec![0.0; 4]]);
    // And the clipped global step has exactly the max norm (to rounding).
    let step_norm = params
        .iter()
        .flatten()
        .map(|&x| f64::from(x).powi(2))
        .sum::<f64>()
        .sqrt();
    assert!((step_norm - 6.5).abs() < 1e-5, "step norm {step_norm}");
}

#[test]
fn clipping_adds_pytorchs_guard_to_tiny_norms() {
    // ‖g‖ = 5e-7: the 1e-6 that keeps the quotient finite at g = 0 makes the factor
    // 1e-7/1.5e-6 = 1/15, not 1/5. Tolerance: a few roundings, ε relative each, and the
    // norm's couple of units in the last place.
    let param = Tensor::zeros(gpu(), &[2]).unwrap();
    let grad = [3e-7f32, 4e-7];
    let config = OptimizerConfig::new(Rule::Sgd, 1.0).with_max_grad_norm(1e-7);
    let mut optimizer =
        Optimizer::new(gpu(), config, &[(param.clone(), upload(&grad, &[2]))]).unwrap();
    optimizer.step().unwrap();
    let scale = 1e-7 / (5e-7 + 1e-6);
    let expected: Vec<f32> = grad
        .iter()
        .map(|&g| (-f64::from(g) * scale) as f32)
        .collect();
    assert_within("θ", &param.to_vec().unwrap(), &expected, |i| {
        8.0 * EPS * f64::from(expected[i]).abs()
    });
}

#[test]
fn clipping_slots_grow_with_the_size_up_to_a_cap() {
    use shadergrad::optim::launch::sum_squares_slots;
    let slots: Vec<usize> = [0, 1, 64, 65, 65537, 1 << 22, 1 << 28]
        .iter()
        .map(|&n| sum_squares_slots(n))
        .collect();
    assert_eq!(slots, vec![0, 1, 1, 2, 1025, 65536, 65536]);
}

#[test]
fn clipping_is_deterministic() {
    // The same gradients twice give the same bits: the norm's additions have a fixed order.
    let run = || {
        let mut rng = Rng::new(14);
        let pairs: Vec<(Tensor, Tensor)> = [70_001usize, 3, 4099]
            .iter()
            .map(|&n| {
                (
                    upload(&rng.vec(n, -1.0, 1.0), &[n]),
                    upload(&rng.vec(n, -1.0, 1.0), &[n]),
                )
            })
            .collect();
        let config = OptimizerConfig::new(Rule::adam(), 0.01).with_max_grad_norm(1.0);
        let mut optimizer = Optimizer::new(gpu(), config, &pairs).unwrap();
        optimizer.step().unwrap();
        optimizer.step().unwrap();
        let norm = optimizer.grad_norm().unwrap().unwrap();
        let params: Vec<u32> = pairs
            .iter()
            .flat_map(|(p, _)| p.to_vec().unwrap())
            .map(f32::to_bits)
            .collect();
        (norm.to_bits(), params)
    };
    assert_eq!(run(), run());
}

// ---------------------------------------------------------------- schedules

#[test]
fn schedules_give_known_values() {
    assert_eq!(Schedule::Constant.factor(1), 1.0);
    assert_eq!(Schedule::Constant.factor(1_000_000), 1.0);

    let decay = Schedule::StepDecay {
        every: 3,
        gamma: 0.5,
    };
    let factors: Vec<f64> = (1..=8).map(|t| decay.factor(t)).collect();
    assert_eq!(factors, vec![1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25]);

    // Warm-up 4, cosine to 0.1 at step 12: t/4 up to 1, then 0.1 + 0.9·½(1 + cos(π(t−4)/8)).
    let cosine = Schedule::WarmupCosine {
        warmup: 4,
        total: 12,
        final_fraction: 0.1,
    };
    let expected = [
        (1, 0.25),
        (2, 0.5),
        (3, 0.75),
        (4, 1.0),
        (6, 0.1 + 0.9 * 0.5 * (1.0 + std::f64::consts::FRAC_1_SQRT_2)),
        (8, 0.55),
        (12, 0.1),
        (13, 0.1),
        (1000, 0.1),
    ];
    for (t, factor) in expected {
        let actual = cosine.factor(t);
        assert!(
            (actual - factor).abs() < 1e-15,
            "step {t}: {actual}, expected {factor}"
        );
    }
    // No warm-up: the cosine starts at once, just below 1, and ends at 0.
    let plain = Schedule::WarmupCosine {
        warmup: 0,
        total: 2,
        final_fraction: 0.0,
    };
    assert!((plain.factor(1) - 0.5).abs() < 1e-15);
    assert_eq!(plain.factor(2), 0.0);

    let config = OptimizerConfig::new(Rule::Sgd, 0.4).with_schedule(decay);
    let pairs = [(
        Tensor::zeros(gpu(), &[1]).unwrap(),
        Tensor::zeros(gpu(), &[1]).unwrap(),
    )];
    let optimizer = Optimizer::new(gpu(), config, &pairs).unwrap();
    assert_eq!(optimizer.learning_rate(4), 0.2);
}

// ---------------------------------------------------------------- the recorded step

#[test]
fn recorded_dispatches_in_one_submission_match_eager_steps() {
    // A compiled training step: a kernel that writes the gradient (here g = 2·x from a
    // changing input x), then the optimizer's dispatches, in one submission per step after
    // prepare_step. Against eager steps, which submit the same kernel and step() apart.
    let shapes: &[&[usize]] = &[&[3, 5], &[1031]];
    let config = OptimizerConfig::new(Rule::adamw(0.1), 0.01)
        .with_schedule(Schedule::WarmupCosine {
            warmup: 5,
            total: 30,
            final_fraction: 0.2,
        })
        .with_max_grad_norm(5.0);
    let mut rng = Rng::new(15);
    let initial: Vec<Vec<f32>> = shapes
        .iter()
        .map(|s| rng.vec(s.iter().product(), -1.0, 1.0))
        .collect();
    let inputs: Vec<Tensor> = shapes
        .iter()
        .map(|s| Tensor::zeros(gpu(), s).unwrap())
        .collect();
    let make = || {
        let pairs: Vec<(Tensor, Tensor)> = shapes
            .iter()
            .zip(&initial)
            .map(|(s, v)| (upload(v, s), Tensor::zeros(gpu(), s).unwrap()))
            .collect();
        let gradient_kernels: Vec<Dispatch> = inputs
            .iter()
            .zip(&pairs)
            .map(|(x, (_, g))| unary_dispatch(x, g, Unary::Scale(2.0)).unwrap())
            .collect();
        let optimizer = Optimizer::new(gpu(), config, &pairs).unwrap();
        (pairs, gradient_kernels, optimizer)
    };
    let (compiled_pairs, compiled_grads, mut compiled) = make();
    let (eager_pairs, eager_grads, mut eager) = make();
    let plan: Vec<Dispatch> = compiled_grads
        .iter()
        .chain(compiled.dispatches())
        .cloned()
        .collect();
    let mut reference = Reference::new(config, &initial);

    let steps = 30;
    for step in 1..=steps {
        let x: Vec<Vec<f32>> = initial
            .iter()
            .map(|p| rng.vec(p.len(), -1.0, 1.0))
            .collect();
        for (input, values) in inputs.iter().zip(&x) {
            gpu().write(input.buffer(), values);
        }
        compiled.prepare_step(step).unwrap();
        gpu().submit(&[], &plan).unwrap();

        gpu().submit(&[], &eager_grads).unwrap();
        eager.step().unwrap();

        let grads: Vec<Vec<f32>> = x
            .iter()
            .map(|v| v.iter().map(|a| 2.0 * a).collect())
            .collect();
        reference.step(&grads);
    }
    let bits = |pairs: &[(Tensor, Tensor)]| -> Vec<u32> {
        pairs
            .iter()
            .flat_map(|(p, _)| p.to_vec().unwrap())
            .map(f32::to_bits)
            .collect()
    };
    assert_eq!(bits(&compiled_pairs), bits(&eager_pairs));
    assert_eq!(
        compiled.grad_norm().unwrap().unwrap().to_bits(),
        eager.grad_norm().unwrap().unwrap().to_bits()
    );
    // And both are right (tolerance as in check_against_reference, over 30 steps).
    let tolerance = steps as f64 * (4.0 * EPS * 2.0 + 64.0 * EPS * 0.01 * (steps as f64).sqrt());
    for (p, (param, _)) in compiled_pairs.iter().enumerate() {
        let expected: Vec<f32> = reference.params[p].iter().map(|&x| x as f32).collect();
        assert_within("compiled step", &param.to_vec().unwrap(), &expected, |_| {
            tolerance
        });
    }
}

#[test]
fn steps_allocate_nothing() {
    // A device of its own, so that other tests' allocations do not count.
    let gpu = Gpu::default_adapter().unwrap();
    let n = 4099;
    let pairs = [(
        Tensor::from_slice(&gpu, &vec![0.5; n], &[n]).unwrap(),
        Tensor::from_slice(&gpu, &vec![0.25; n], &[n]).unwrap(),
    )];
    let config = OptimizerConfig::new(Rule::adam(), 0.01).with_max_grad_norm(1.0);
    let mut optimizer = Optimizer::new(&gpu, config, &pairs).unwrap();
    optimizer.step().unwrap();
    gpu.wait().unwrap();
    let before = gpu.pool_stats();
    for step in 2..=20 {
        optimizer.prepare_step(step).unwrap();
        gpu.submit(&[], optimizer.dispatches()).unwrap();
    }
    gpu.wait().unwrap();
    assert_eq!(gpu.pool_stats(), before);
}

#[test]
fn zero_sized_parameters_are_carried_along() {
    let pairs = [
        (
            Tensor::zeros(gpu(), &[0, 3]).unwrap(),
            Tensor::zeros(gpu(), &[0, 3]).unwrap(),
        ),
        (upload(&[1.0], &[1]), upload(&[2.0], &[1])),
    ];
    let config = OptimizerConfig::new(Rule::Sgd, 0.5).with_max_grad_norm(1.0);
    let mut optimizer = Optimizer::new(gpu(), config, &pairs).unwrap();
    optimizer.step().unwrap();
    // Norm 2 clipped to 1: θ = 1 − 0.5·(1/(2 + 1e-6))·2.
    let expected = (1.0 - 0.5 * 2.0 / (2.0 + 1e-6)) as f32;
    assert_within("θ", &pairs[1].0.to_vec().unwrap(), &[expected], |_| {
        4.0 * EPS
    });
    assert!(optimizer.memory_bytes() > 0);
}

// ---------------------------------------------------------------- state for checkpoints

#[test]
fn state_round_trip_resumes_the_same_trajectory() {
    // Train 3 steps, save parameters and state as host copies (what a checkpoint holds),
    // restore them into a fresh optimizer, and train both 3 more steps: same bits. A fresh
    // optimizer without the state takes another path, so the test can tell.
    let n = 300;
    let mut rng = Rng::new(16);
    let theta = rng.vec(n, -1.0, 1.0);
    let grads: Vec<Vec<f32>> = (0..6).map(|_| rng.vec(n, -1.0, 1.0)).collect();
    for rule in [MOMENTUM, Rule::adamw(0.1)] {
        let config = OptimizerConfig::new(rule, 0.01).with_schedule(Schedule::StepDecay {
            every: 2,
            gamma: 0.5,
        });
        let pair = (upload(&theta, &[n]), Tensor::zeros(gpu(), &[n]).unwrap());
        let mut original = Optimizer::new(gpu(), config, std::slice::from_ref(&pair)).unwrap();
        for g in &grads[..3] {
            write_grad(&pair.1, g);
            original.step().unwrap();
        }
        let saved_theta = pair.0.to_vec().unwrap();
        let saved_state: Vec<(String, Tensor)> = original
            .state_tensors()
            .into_iter()
            .map(|(name, t)| (name, upload(&t.to_vec().unwrap(), t.shape())))
            .collect();
        let names: Vec<&str> = saved_state.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            rule.state_names()
                .iter()
                .map(|s| format!("0.{s}"))
                .collect::<Vec<_>>()
        );

        let resume = |load: bool| {
            let pair = (
                upload(&saved_theta, &[n]),
                Tensor::zeros(gpu(), &[n]).unwrap(),
            );
            let mut optimizer = Optimizer::new(gpu(), config, std::slice::from_ref(&pair)).unwrap();
            if load {
                optimizer.load_state(3, &saved_state).unwrap();
                assert_eq!(optimizer.current_step(), 3);
            }
            for g in &grads[3..] {
                write_grad(&pair.1, g);
                optimizer.step().unwrap();
            }
            pair.0.to_vec().unwrap()
        };
        for g in &grads[3..] {
            write_grad(&pair.1, g);
            original.step().unwrap();
        }
        let finished = pair.0.to_vec().unwrap();
        assert_eq!(resume(true), finished, "{rule:?}");
        assert_ne!(resume(false), finished, "{rule:?}");
    }
}

#[test]
fn load_state_refuses_what_does_not_fit() {
    let pair = (
        Tensor::zeros(gpu(), &[2, 3]).unwrap(),
        Tensor::zeros(gpu(), &[2, 3]).unwrap(),
    );
    let mut optimizer =
        Optimizer::new(gpu(), OptimizerConfig::new(Rule::adam(), 0.1), &[pair]).unwrap();
    let good = || Tensor::zeros(gpu(), &[2, 3]).unwrap();
    let mut err = |state: Vec<(&str, Tensor)>| {
        let state: Vec<(String, Tensor)> =
            state.into_iter().map(|(n, t)| (n.to_string(), t)).collect();
        optimizer.load_state(7, &state).unwrap_err().to_string()
    };
    let message = err(vec![("0.exp_avg", good())]);
    assert!(message.contains("\"0.exp_avg_sq\" is missing"), "{message}");
    let message = err(vec![
        ("0.exp_avg", good()),
        ("0.exp_avg_sq", good()),
        ("1.exp_avg", good()),
    ]);
    assert!(
        message.contains("unknown state tensor \"1.exp_avg\""),
        "{message}"
    );
    let message = err(vec![("0.exp_avg", good()), ("0.exp_avg", good())]);
    assert!(message.contains("given twice"), "{message}");
    let message = err(vec![
        ("0.exp_avg", good()),
        ("0.exp_avg_sq", Tensor::zeros(gpu(), &[3, 2]).unwrap()),
    ]);
    assert!(
        message.contains("[3, 2]") && message.contains("[2, 3]"),
        "{message}"
    );
    assert_eq!(
        optimizer.current_step(),
        0,
        "a refused load changes nothing"
    );
    // Its own tensors load as they are.
    let own = optimizer.state_tensors();
    optimizer.load_state(7, &own).unwrap();
    assert_eq!(optimizer.current_step(), 7);
}

// ---------------------------------------------------------------- errors

fn new_error(config: OptimizerConfig, pairs: &[(Tensor, Tensor)]) -> String {
    Optimizer::new(gpu(), config, pairs)
        .unwrap_err()
        .to_string()
}

#[test]
fn mismatched_shapes_name_both() {
    let pairs = [
        (
            Tensor::zeros(gpu(), &[4]).unwrap(),
            Tensor::zeros(gpu(), &[4]).unwrap(),
        ),
        (
            Tensor::zeros(gpu(), &[3, 5]).unwrap(),
            Tensor::zeros(gpu(), &[5, 3]).unwrap(),
        ),
    ];
    let message = new_error(OptimizerConfig::new(Rule::Sgd, 0.1), &pairs);
    assert!(
        message.contains("[3, 5]") && message.contains("[5, 3]") && message.contains("parameter 1"),
        "{message}"
    );
}

#[test]
fn bad_hyperparameters_are_refused_by_name() {
    let pairs = [(
        Tensor::zeros(gpu(), &[2]).unwrap(),
        Tensor::zeros(gpu(), &[2]).unwrap(),
    )];
    let adam = |beta1, beta2, eps| Rule::Adam { beta1, beta2, eps };
    let cases: Vec<(OptimizerConfig, &str)> = vec![
        (OptimizerConfig::new(Rule::Sgd, -0.1), "lr = -0.1"),
        (OptimizerConfig::new(Rule::Sgd, f32::NAN), "lr = NaN"),
        (OptimizerConfig::new(Rule::Sgd, f32::INFINITY), "lr = inf"),
        (
            OptimizerConfig::new(adam(1.0, 0.999, 1e-8), 0.1),
            "beta1 = 1",
        ),
        (
            OptimizerConfig::new(adam(0.9, -0.5, 1e-8), 0.1),
            "beta2 = -0.5",
        ),
        (
            OptimizerConfig::new(adam(0.9, 0.999, -1e-8), 0.1),
            "eps = -0.00000001",
        ),
        (
            OptimizerConfig::new(Rule::adamw(-0.01), 0.1),
            "weight_decay = -0.01",
        ),
        (
            OptimizerConfig::new(
                Rule::Momentum {
                    momentum: 1.0,
                    nesterov: false,
                },
                0.1,
            ),
            "momentum = 1",
        ),
        (
            OptimizerConfig::new(
                Rule::Momentum {
                    momentum: 0.0,
                    nesterov: true,
                },
                0.1,
            ),
            "Nesterov",
        ),
        (
            OptimizerConfig::new(Rule::Sgd, 0.1).with_max_grad_norm(0.0),
            "max_grad_norm = 0",
        ),
        (
            OptimizerConfig::new(Rule::Sgd, 0.1).with_schedule(Schedule::StepDecay {
                every: 0,
                gamma: 0.5,
            }),
            "every 0 steps",
        ),
        (
            OptimizerConfig::new(Rule::Sgd, 0.1).with_schedule(Schedule::StepDecay {
                every: 10,
                gamma: 1.5,
            }),
            "gamma = 1.5",
        ),
        (
            OptimizerConfig::new(Rule::Sgd, 0.1).with_schedule(Schedule::WarmupCosine {
                warmup: 10,
                total: 10,
                final_fraction: 0.0,
            }),
            "total = 10 steps and warmup = 10",
        ),
        (
            OptimizerConfig::new(Rule::Sgd, 0.1).with_schedule(Schedule::WarmupCosine {
                warmup: 0,
                total: 10,
                final_fraction: -0.5,
            }),
            "final_fraction = -0.5",
        ),
    ];
    for (config, expected) in cases {
        let message = new_error(config, &pairs);
        assert!(message.contains(expected), "{config:?}: {message}");
    }
}

#[test]
fn misused_parameters_are_refused() {
    let message = new_error(OptimizerConfig::new(Rule::Sgd, 0.1), &[]);
    assert!(message.contains("empty"), "{message}");

    let param = Tensor::zeros(gpu(), &[4]).unwrap();
    let pairs = [
        (param.clone(), Tensor::zeros(gpu(), &[4]).unwrap()),
        (
            param.reshape(&[2, 2]).unwrap(),
            Tensor::zeros(gpu(), &[2, 2]).unwrap(),
        ),
    ];
    let message = new_error(OptimizerConfig::new(Rule::Sgd, 0.1), &pairs);
    assert!(
        message.contains("parameter 1 shares its buffer with parameter 0"),
        "{message}"
    );

    let message = new_error(
        OptimizerConfig::new(Rule::Sgd, 0.1),
        &[(param.clone(), param.clone())],
    );
    assert!(
        message.contains("shares its buffer with a gradient"),
        "{message}"
    );

    let other = Gpu::default_adapter().unwrap();
    let foreign = Tensor::zeros(&other, &[4]).unwrap();
    let message = new_error(
        OptimizerConfig::new(Rule::Sgd, 0.1),
        &[(param.clone(), foreign)],
    );
    assert!(message.contains("different devices"), "{message}");

    let mut optimizer = Optimizer::new(
        gpu(),
        OptimizerConfig::new(Rule::adam(), 0.1),
        &[(param, Tensor::zeros(gpu(), &[4]).unwrap())],
    )
    .unwrap();
    let message = optimizer.prepare_step(0).unwrap_err().to_string();
    assert!(message.contains("step 0"), "{message}");
}
