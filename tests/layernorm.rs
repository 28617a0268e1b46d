//! Layer normalisation: the forward against the f64 CPU reference on odd shapes (both
//! kernel variants), the backward against finite differences of that reference, and the
//! errors for bad shapes, axes and eps.

mod common;

use common::{assert_gradient, assert_within, gpu, numeric_gradient, weighted_sum};
use shadergrad::kernels::layernorm::{layer_norm_backward_cpu, layer_norm_cpu, LayerNormCpu};
use shadergrad::rng::Rng;
use shadergrad::{Error, LayerNormVariant, Tensor};

/// f32 epsilon as f64.
const EPS: f64 = f32::EPSILON as f64;
/// The eps of the normalisation (PyTorch's and ONNX's default).
const NORM_EPS: f32 = 1e-5;

fn upload(data: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_slice(gpu(), data, shape).unwrap()
}

fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| f64::from(x)).collect()
}

fn to_f32(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

/// One forward problem: x of `shape` normalised from `axis`, with optional gain and bias.
struct Problem {
    shape: Vec<usize>,
    axis: isize,
    x: Vec<f32>,
    gain: Option<Vec<f32>>,
    bias: Option<Vec<f32>>,
}

impl Problem {
    /// x uniform in offset ± 1, gain in [0.5, 1.5], bias in [−1, 1].
    fn random(
        seed: u64,
        shape: &[usize],
        axis: isize,
        offset: f32,
        with_gain: bool,
        with_bias: bool,
    ) -> Problem {
        let mut rng = Rng::new(seed);
        let n = shape.iter().product();
        let d = width(shape, axis);
        let x = rng.vec(n, -1.0, 1.0).iter().map(|v| v + offset).collect();
        Problem {
            shape: shape.to_vec(),
            axis,
            x,
            gain: with_gain.then(|| rng.vec(d, 0.5, 1.5)),
            bias: with_bias.then(|| rng.vec(d, -1.0, 1.0)),
        }
    }

    fn d(&self) -> usize {
        width(&self.shape, self.axis)
    }

    fn normalized_shape(&self) -> Vec<usize> {
        let axis = self.axis.rem_euclid(self.shape.len() as isize) as usize;
        self.shape[axis..].to_vec()
    }

    fn reference(&self) -> LayerNormCpu {
        let gain = self.gain.as_deref().map(to_f64);
        let bias = self.bias.as_deref().map(to_f64);
        layer_norm_cpu(
            &to_f64(&self.x),
            gain.as_deref(),
            bias.as_deref(),
            self.d(),
            f64::from(NORM_EPS),
        )
    }

    /// Runs the forward on the GPU with `variant` and checks y, mean and rstd.
    ///
    /// Tolerances follow the error of f32 sums of d terms, γ = (d + small)·ε relative to
    /// the magnitudes summed, which the corrected two-pass algorithm keeps relative to the
    /// row's spread, not its offset:
    /// - mean: the final rounding ε·|mean|, plus γ times the largest |x − mean| of the row;
    /// - rstd: γ relative (the variance is a d-term sum of squares; √ halves its error);
    /// - y: γ·|gain| times (|x̂| + the row's largest |x̂| + 1), the first for the error of
    ///   rstd, the second for that of the mean, scaled by rstd; plus the rounding of +bias.
    fn check(&self, variant: LayerNormVariant) {
        let d = self.d();
        let normalized = self.normalized_shape();
        let x = upload(&self.x, &self.shape);
        let gain = self.gain.as_ref().map(|g| upload(g, &normalized));
        let bias = self.bias.as_ref().map(|b| upload(b, &normalized));
        let out = x
            .layer_norm_with(gain.as_ref(), bias.as_ref(), self.axis, NORM_EPS, variant)
            .unwrap();
        let what = format!(
            "layer_norm {variant:?} shape {:?} axis {} gain {} bias {}",
            self.shape,
            self.axis,
            self.gain.is_some(),
            self.bias.is_some()
        );
        assert_eq!(out.y.shape(), &self.shape[..], "{what}");
        let stats_shape: Vec<usize> = self.shape[..self.shape.len() - normalized.len()]
            .iter()
            .copied()
            .chain(normalized.iter().map(|_| 1))
            .collect();
        assert_eq!(out.mean.shape(), &stats_shape[..], "{what}");
        assert_eq!(out.rstd.shape(), &stats_shape[..], "{what}");

        let expected = self.reference();
        let gamma = (d as f64 + 8.0) * EPS;
        let rows = self.x.len() / d;
        let x_hat: Vec<f64> = (0..self.x.len())
            .map(|i| (f64::from(self.x[i]) - expected.mean[i / d]) * expected.rstd[i / d])
            .collect();
        let row_max = |v: &[f64], r: usize| {
            v[r * d..(r + 1) * d]
                .iter()
                .fold(0.0, |m: f64, e| m.max(e.abs()))
        };
        let spread: Vec<f64> = (0..rows).map(|r| row_max(&x_hat, r)).collect();

        let y = out.y.to_vec().unwrap();
        assert!(
            y.iter().all(|v| v.is_finite()),
            "{what}: y has a non-finite value"
        );
        assert_within(&format!("{what}: y"), &y, &to_f32(&expected.y), |i| {
            let (r, c) = (i / d, i % d);
            let gain = self.gain.as_ref().map_or(1.0, |g| f64::from(g[c]).abs());
            let bias = self.bias.as_ref().map_or(0.0, |b| f64::from(b[c]).abs());
            gamma * gain * (x_hat[i].abs() + spread[r] + 1.0) + EPS * bias
        });
        assert_within(
            &format!("{what}: mean"),
            &out.mean.to_vec().unwrap(),
            &to_f32(&expected.mean),
            |r| EPS * expected.mean[r].abs() + gamma * spread[r] / expected.rstd[r],
        );
        assert_within(
            &format!("{what}: rstd"),
            &out.rstd.to_vec().unwrap(),
            &to_f32(&expected.rstd),
            |r| gamma * expected.rstd[r],
        );
    }
}

/// The product of the normalised axes of `shape` from `axis`.
fn width(shape: &[usize], axis: isize) -> usize {
    let axis = axis.rem_euclid(shape.len() as isize) as usize;
    shape[axis..].iter().product()
}

#[test]
fn forward_matches_reference_on_odd_shapes() {
    // (shape, axis): d = 1, primes, d not a multiple of the workgroup (256) on either side
    // of it, rows not a multiple of it, and several normalised axes.
    let cases: [(&[usize], isize); 9] = [
        (&[1, 1], -1),
        (&[5, 1], 1),
        (&[1, 7], -1),
        (&[13, 31], -1),
        (&[3, 257], 1),
        (&[2, 1031], -1),
        (&[300, 3], -1),
        (&[2, 3, 5, 7], 2),
        (&[2, 3, 5, 7], -3),
    ];
    let mut seed = 0;
    for variant in LayerNormVariant::ALL {
        for &(shape, axis) in &cases {
            for (with_gain, with_bias) in
                [(true, true), (false, false), (true, false), (false, true)]
            {
                seed += 1;
                Problem::random(seed, shape, axis, 0.0, with_gain, with_bias).check(variant);
            }
        }
    }
}

#[test]
fn forward_large() {
    for variant in LayerNormVariant::ALL {
        Problem::random(100, &[1031, 2053], -1, 0.0, true, true).check(variant);
    }
}

/// Rows of one repeated value have var = 0: rstd = 1/√eps, y = bias, and nothing is NaN.
#[test]
fn constant_rows_give_the_bias() {
    for variant in LayerNormVariant::ALL {
        for d in [1, 5, 300] {
            let mut problem = Problem::random(7, &[4, d], -1, 0.0, true, true);
            for (r, row) in problem.x.chunks_mut(d).enumerate() {
                row.fill([0.3, -2.5, 1e4, 0.0][r]);
            }
            problem.check(variant);
            let expected_rstd = 1.0 / f64::from(NORM_EPS).sqrt();
            assert!(problem
                .reference()
                .rstd
                .iter()
                .all(|&r| (r - expected_rstd).abs() < 1e-9));
        }
    }
}

/// Rows at 1e4 + noise in ±1: E[x²] − E[x]² in f32 would lose every digit of the variance
/// (ε·1e8 ≈ 10 against a variance of 1/3); the two-pass sums keep the tolerance of `check`,
/// which is relative to the noise, not to the offset.
#[test]
fn large_offsets_keep_the_numerics() {
    for variant in LayerNormVariant::ALL {
        for &(shape, offset) in &[
            (&[6, 300][..], 1e4),
            (&[3, 2053][..], -3e4),
            (&[9, 17][..], 1e4),
        ] {
            Problem::random(11, shape, -1, offset, true, true).check(variant);
        }
    }
}

#[test]
fn forward_is_deterministic() {
    let problem = Problem::random(3, &[37, 611], -1, 0.0, true, true);
    let x = upload(&problem.x, &problem.shape);
    for variant in LayerNormVariant::ALL {
        let first = x
            .layer_norm_with(None, None, -1, NORM_EPS, variant)
            .unwrap();
        let second = x
            .layer_norm_with(None, None, -1, NORM_EPS, variant)
            .unwrap();
        assert_eq!(first.y.to_vec().unwrap(), second.y.to_vec().unwrap());
        assert_eq!(first.rstd.to_vec().unwrap(), second.rstd.to_vec().unwrap());
    }
}

// ----------------------------------------------------------------------------- backward

/// GPU gradients of L = Σ w·y for x, gain and bias against central differences of the f64
/// reference. h = 1e-3 keeps the truncation error of the differences (∝ h²) near 1e-6 of
/// these O(1) gradients while the f64 rounding stays far below. The GPU side is f32 with
/// d- and rows-term sums, errors near 1e-5 relative here; rtol 1e-3 with atol 1e-4 (for
/// elements near zero) leaves room above both and still catches any wrong term.
fn check_backward(
    seed: u64,
    shape: &[usize],
    axis: isize,
    with_gain: bool,
    variant: LayerNormVariant,
) {
    const H: f64 = 1e-3;
    const RTOL: f64 = 1e-3;
    const ATOL: f64 = 1e-4;
    let problem = Problem::random(seed, shape, axis, 0.5, with_gain, true);
    let d = problem.d();
    let normalized = problem.normalized_shape();
    let mut rng = Rng::new(seed + 1000);
    let w = rng.vec(problem.x.len(), -1.0, 1.0);
    let w64 = to_f64(&w);
    let x64 = to_f64(&problem.x);
    let gain64 = problem.gain.as_deref().map(to_f64);
    let bias64 = to_f64(problem.bias.as_ref().unwrap());
    let eps = f64::from(NORM_EPS);

    let x = upload(&problem.x, shape);
    let gain = problem.gain.as_ref().map(|g| upload(g, &normalized));
    let bias = upload(problem.bias.as_ref().unwrap(), &normalized);
    let forward = x
        .layer_norm_with(gain.as_ref(), Some(&bias), axis, NORM_EPS, variant)
        .unwrap();
    let dy = upload(&w, shape);
    let grads = x
        .layer_norm_backward_with(
            &dy,
            gain.as_ref(),
            &forward.mean,
            &forward.rstd,
            axis,
            variant,
        )
        .unwrap();
    assert_eq!(grads.dx.shape(), shape);
    assert_eq!(grads.dgain.shape(), &normalized[..]);
    assert_eq!(grads.dbias.shape(), &normalized[..]);
    let what =
        format!("layer_norm backward {variant:?} shape {shape:?} axis {axis} gain {with_gain}");

    let loss = |x: &[f64], gain: Option<&[f64]>, bias: &[f64]| {
        weighted_sum(&w64, &layer_norm_cpu(x, gain, Some(bias), d, eps).y)
    };
    let dx = grads.dx.to_vec().unwrap();
    if d == 1 {
        // A row of one element always normalises to 0: nothing flows back to x.
        assert!(dx.iter().all(|&v| v == 0.0), "{what}: dx {dx:?}");
    } else {
        let numeric = numeric_gradient(&x64, H, |x| loss(x, gain64.as_deref(), &bias64));
        assert_gradient(&format!("{what}: dx"), &dx, &numeric, RTOL, ATOL);
        // dgain = Σ dy·x̂ is the gradient of a gain of ones when there is none.
        let ones = vec![1.0; d];
        let gain_point = gain64.clone().unwrap_or(ones);
        let numeric = numeric_gradient(&gain_point, H, |g| loss(&x64, Some(g), &bias64));
        assert_gradient(
            &format!("{what}: dgain"),
            &grads.dgain.to_vec().unwrap(),
            &numeric,
            RTOL,
            ATOL,
        );
    }
    let numeric = numeric_gradient(&bias64, H, |b| loss(&x64, gain64.as_deref(), b));
    assert_gradient(
        &format!("{what}: dbias"),
        &grads.dbias.to_vec().unwrap(),
        &numeric,
        RTOL,
        ATOL,
    );
}

#[test]
fn backward_matches_finite_differences() {
    let mut seed = 0;
    for variant in LayerNormVariant::ALL {
        // d = 1, a prime d, several normalised axes, and 40 rows: more than one chunk of
        // the column sums (16 rows each), the last one partial.
        let cases: [(&[usize], isize); 5] = [
            (&[4, 1], -1),
            (&[3, 7], -1),
            (&[2, 3, 5], 1),
            (&[2, 3, 5], -1),
            (&[40, 5], 1),
        ];
        for &(shape, axis) in &cases {
            for with_gain in [true, false] {
                seed += 1;
                check_backward(seed, shape, axis, with_gain, variant);
            }
        }
    }
}

/// A large backward against the closed form in f64 (the finite differences would take too
/// long here). Tolerances: γ = (n + 8)·ε for the n-term sums involved, times the magnitudes
/// that met: for dx, rstd·(|g| + mean|g| + (|x̂| + 1)·mean(|g|·(|x̂| + 1))) (x̂ carries the
/// forward's error); for dgain, Σ|dy|·(|x̂| + 1) over the rows; for dbias, Σ|dy|.
#[test]
fn backward_large_matches_closed_form() {
    let (rows, d) = (1031, 67);
    for variant in LayerNormVariant::ALL {
        let problem = Problem::random(55, &[rows, d], -1, 0.0, true, true);
        let mut rng = Rng::new(56);
        let dy_data = rng.vec(rows * d, -1.0, 1.0);
        let gain_data = problem.gain.clone().unwrap();
        let x = upload(&problem.x, &[rows, d]);
        let gain = upload(&gain_data, &[d]);
        let forward = x
            .layer_norm_with(Some(&gain), None, -1, NORM_EPS, variant)
            .unwrap();
        let dy = upload(&dy_data, &[rows, d]);
        let grads = x
            .layer_norm_backward_with(&dy, Some(&gain), &forward.mean, &forward.rstd, -1, variant)
            .unwrap();

        let (x64, dy64, gain64) = (to_f64(&problem.x), to_f64(&dy_data), to_f64(&gain_data));
        let eps = f64::from(NORM_EPS);
        let (dx, dgain, dbias) = layer_norm_backward_cpu(&x64, &dy64, Some(&gain64), d, eps);
        let reference = layer_norm_cpu(&x64, None, None, d, eps);
        let x_hat = &reference.y;
        let g: Vec<f64> = (0..rows * d)
            .map(|i| (dy64[i] * gain64[i % d]).abs())
            .collect();
        let row_mean = |f: &dyn Fn(usize) -> f64, r: usize| {
            (0..d).map(|c| f(r * d + c)).sum::<f64>() / d as f64
        };
        let gamma_d = (d as f64 + 8.0) * EPS;
        let gamma_rows = (rows as f64 + d as f64 + 8.0) * EPS;
        let what = format!("layer_norm backward {variant:?} {rows}x{d}");
        assert_within(
            &format!("{what}: dx"),
            &grads.dx.to_vec().unwrap(),
            &to_f32(&dx),
            |i| {
                let r = i / d;
                let mean_g = row_mean(&|j| g[j], r);
                let mean_gx = row_mean(&|j| g[j] * (x_hat[j].abs() + 1.0), r);
                gamma_d * reference.rstd[r] * (g[i] + mean_g + (x_hat[i].abs() + 1.0) * mean_gx)
            },
        );
        assert_within(
            &format!("{what}: dgain"),
            &grads.dgain.to_vec().unwrap(),
            &to_f32(&dgain),
            |c| {
                gamma_rows
                    * (0..rows)
                        .map(|r| dy64[r * d + c].abs() * (x_hat[r * d + c].abs() + 1.0))
                        .sum::<f64>()
            },
        );
        assert_within(
            &format!("{what}: dbias"),
            &grads.dbias.to_vec().unwrap(),
            &to_f32(&dbias),
            |c| gamma_rows * (0..rows).map(|r| dy64[r * d + c].abs()).sum::<f64>(),
        );
    }
}

#[test]
fn backward_is_deterministic() {
    let problem = Problem::random(9, &[517, 33], -1, 0.0, true, true);
    let x = upload(&problem.x, &problem.shape);
    let gain = upload(problem.gain.as_ref().unwrap(), &[33]);
    let dy = upload(&Rng::new(10).vec(517 * 33, -1.0, 1.0), &problem.shape);
    for variant in LayerNormVariant::ALL {
        let forward = x
            .layer_norm_with(Some(&gain), None, -1, NORM_EPS, variant)
            .unwrap();
        let run = || {
            x.layer_norm_backward_with(&dy, Some(&gain), &forward.mean, &forward.rstd, -1, variant)
                .unwrap()
        };
        let (first, second) = (run(), run());
        assert_eq!(first.dx.to_vec().unwrap(), second.dx.to_vec().unwrap());
        assert_eq!(
            first.dgain.to_vec().unwrap(),
            second.dgain.to_vec().unwrap()
        );
        assert_eq!(
            first.dbias.to_vec().unwrap(),
            second.dbias.to_vec().unwrap()
        );
    }
}

/// No rows: empty outputs, and the gradients of gain and bias are empty sums (zeros).
#[test]
fn zero_rows_give_empty_outputs() {
    let x = upload(&[], &[0, 5]);
    let forward = x.layer_norm(None, None, -1, NORM_EPS).unwrap();
    assert_eq!(forward.y.shape(), &[0, 5]);
    assert_eq!(forward.mean.shape(), &[0, 1]);
    let grads = x
        .layer_norm_backward(&x, None, &forward.mean, &forward.rstd, -1)
        .unwrap();
    assert_eq!(grads.dx.shape(), &[0, 5]);
    assert_eq!(grads.dgain.to_vec().unwrap(), vec![0.0; 5]);
    assert_eq!(grads.dbias.to_vec().unwrap(), vec![0.0; 5]);
}

// ------------------------------------------------------------------------------- errors

fn message(error: Error) -> String {
    error.to_string()
}

#[test]
fn errors_name_the_bad_values() {
    let x = upload(&[0.0; 12], &[3, 4]);
    let wrong = upload(&[1.0; 5], &[5]);
    let right = upload(&[1.0; 4], &[4]);

    let err = message(x.layer_norm(Some(&wrong), None, -1, NORM_EPS).unwrap_err());
    assert!(
        err.contains("gain") && err.contains("[5]") && err.contains("[4]"),
        "{err}"
    );
    let err = message(
        x.layer_norm(Some(&right), Some(&wrong), -1, NORM_EPS)
            .unwrap_err(),
    );
    assert!(
        err.contains("bias") && err.contains("[5]") && err.contains("[4]"),
        "{err}"
    );
    // Normalising over both axes wants a [3, 4] gain.
    let err = message(x.layer_norm(Some(&right), None, 0, NORM_EPS).unwrap_err());
    assert!(err.contains("[3, 4]") && err.contains("axis 0"), "{err}");

    for axis in [2, -3] {
        let err = message(x.layer_norm(None, None, axis, NORM_EPS).unwrap_err());
        assert!(
            err.contains(&format!("axis {axis}")) && err.contains("rank 2"),
            "{err}"
        );
        let err = message(x.layer_norm_backward(&x, None, &x, &x, axis).unwrap_err());
        assert!(err.contains(&format!("axis {axis}")), "{err}");
    }
    for eps in [0.0, -1e-5, f32::NAN, f32::INFINITY] {
        let err = message(x.layer_norm(None, None, -1, eps).unwrap_err());
        assert!(
            err.contains("eps") && err.contains(&eps.to_string()),
            "{err}"
        );
    }
    let err = message(
        upload(&[], &[3, 0])
            .layer_norm(None, None, -1, NORM_EPS)
            .unwrap_err(),
    );
    assert!(err.contains("[3, 0]") && err.contains("0/0"), "{err}");

    let forward = x.layer_norm(None, None, -1, NORM_EPS).unwrap();
    let err = message(
        x.layer_norm_backward(&wrong, None, &forward.mean, &forward.rstd, -1)
            .unwrap_err(),
    );
    assert!(
        err.contains("dy") && err.contains("[5]") && err.contains("[3, 4]"),
        "{err}"
    );
    let err = message(
        x.layer_norm_backward(&x, Some(&wrong), &forward.mean, &forward.rstd, -1)
            .unwrap_err(),
    );
    assert!(err.contains("gain") && err.contains("[5]"), "{err}");
    let err = message(
        x.layer_norm_backward(
            &x,
            None,
            &forward.rstd.reshape(&[3]).unwrap(),
            &forward.rstd,
            -1,
        )
        .unwrap_err(),
    );
    assert!(
        err.contains("mean") && err.contains("[3]") && err.contains("[3, 1]"),
        "{err}"
    );
    let err = message(
        x.layer_norm_backward(&x, None, &forward.mean, &wrong, -1)
            .unwrap_err(),
    );
    assert!(
        err.contains("rstd") && err.contains("[5]") && err.contains("[3, 1]"),
        "{err}"
    );
}
