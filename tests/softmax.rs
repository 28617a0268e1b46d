//! Softmax, log-softmax, their gradients and the fused softmax-cross-entropy against the
//! f64 CPU references (forward) and central finite differences (backward).

mod common;

use common::{assert_close, assert_gradient, assert_within, gpu, numeric_gradient, weighted_sum};
use shadergrad::kernels::softmax::{softmax_backward_cpu, softmax_cpu, softmax_cross_entropy_cpu};
use shadergrad::rng::Rng;
use shadergrad::{
    Error, Indices, LossReduction, SoftmaxKind, SoftmaxVariant, Tensor, PYTORCH_IGNORE_INDEX,
};

/// f32 epsilon as f64.
const EPS: f64 = f32::EPSILON as f64;

const KINDS: [SoftmaxKind; 2] = [SoftmaxKind::Softmax, SoftmaxKind::LogSoftmax];

fn upload(data: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_slice(gpu(), data, shape).unwrap()
}

/// PyTorch's ignore index -100 as u32 targets hold it: the bits that
/// `Indices::from_i64` stores for it.
const TORCH_IGNORE: u32 = PYTORCH_IGNORE_INDEX as i32 as u32;

/// A u32 target or ignore value as the i64 it stands for (`TORCH_IGNORE` is -100).
fn as_i64(bits: u32) -> i64 {
    i64::from(bits as i32)
}

fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| f64::from(x)).collect()
}

fn to_f32(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

/// Whether `variant` can run along `axis` of `shape` (the rows variant: last axis only;
/// the vec4 variant: last axis, rows a multiple of 4 long).
fn applies(variant: SoftmaxVariant, shape: &[usize], axis: usize) -> bool {
    let inner: usize = shape[axis + 1..].iter().product();
    variant.supports(inner, shape[axis])
}

/// Tolerance of one forward element, for rows of length n with |x − max| ≤ 8:
/// WGSL allows exp an error of 3 + 2|x| ULP (≤ 19 here), the row sum of n terms errs by
/// ≤ n·ε relative, and the division or the log and the subtractions add a few roundings.
/// So softmax is within (2n + 32)·ε relative; log-softmax, y = (x − m) − log Σ, within
/// (2n + 32)·ε·(1 + |y|) absolute. A wrong shift, axis or stride misses by far more.
fn forward_tolerance(kind: SoftmaxKind, n: usize, expected: f64) -> f64 {
    let budget = (2 * n + 32) as f64 * EPS;
    match kind {
        SoftmaxKind::Softmax => budget * expected.abs(),
        SoftmaxKind::LogSoftmax => budget * (1.0 + expected.abs()),
    }
}

fn check_forward(x: &[f32], shape: &[usize], axis: usize, variant: SoftmaxVariant) {
    let gx = upload(x, shape);
    for kind in KINDS {
        let got = gx.softmax_with(kind, axis, variant).unwrap();
        assert_eq!(got.shape(), shape);
        let expected = softmax_cpu(&to_f64(x), shape, axis, kind);
        assert_within(
            &format!("{kind:?} {variant:?} {shape:?} axis {axis}"),
            &got.to_vec().unwrap(),
            &to_f32(&expected),
            |i| forward_tolerance(kind, shape[axis], expected[i]),
        );
    }
}

// ----------------------------------------------------------------------------- forward

#[test]
fn forward_matches_reference_on_odd_shapes_and_every_axis() {
    let mut rng = Rng::new(31);
    for shape in [
        vec![1],
        vec![7, 1],
        vec![1, 7],
        vec![3, 5, 7],
        vec![2, 3, 5, 11],
        vec![5, 257],
        vec![3, 1031],
        vec![1031, 3],
        vec![2, 1, 3, 2, 5],
        // Rows a multiple of 4 long, for the vec4 variant.
        vec![1, 4],
        vec![5, 8],
        vec![3, 2, 1028],
    ] {
        let x = rng.vec(shape.iter().product(), -4.0, 4.0);
        for axis in 0..shape.len() {
            for variant in SoftmaxVariant::ALL {
                if applies(variant, &shape, axis) {
                    check_forward(&x, &shape, axis, variant);
                }
            }
        }
    }
}

#[test]
fn forward_large_case() {
    // 1031 rows of a prime length 2053: neither a multiple of the workgroup; the strided
    // variant also along axis 0, where neighbouring invocations read neighbouring columns.
    let shape = [1031, 2053];
    let x = Rng::new(32).vec(shape.iter().product(), -4.0, 4.0);
    for variant in SoftmaxVariant::ALL {
        if applies(variant, &shape, 1) {
            check_forward(&x, &shape, 1, variant);
        }
    }
    check_forward(&x, &shape, 0, SoftmaxVariant::Strided);
    // Rows of 2052 for the vec4 variant, against the strided one's reference.
    let shape = [1031, 2052];
    let x = Rng::new(32).vec(shape.iter().product(), -4.0, 4.0);
    check_forward(&x, &shape, 1, SoftmaxVariant::Vec4);
}

#[test]
fn negative_axes_and_the_default_choice() {
    let shape = [3, 4, 5];
    let x = Rng::new(33).vec(60, -2.0, 2.0);
    let gx = upload(&x, &shape);
    for (axis, resolved) in [(-1isize, 2usize), (-3, 0), (1, 1)] {
        let y = gx.softmax(axis).unwrap().to_vec().unwrap();
        let expected = softmax_cpu(&to_f64(&x), &shape, resolved, SoftmaxKind::Softmax);
        assert_within("softmax", &y, &to_f32(&expected), |i| {
            forward_tolerance(SoftmaxKind::Softmax, shape[resolved], expected[i])
        });
        let y = gx.log_softmax(axis).unwrap().to_vec().unwrap();
        let expected = softmax_cpu(&to_f64(&x), &shape, resolved, SoftmaxKind::LogSoftmax);
        assert_within("log_softmax", &y, &to_f32(&expected), |i| {
            forward_tolerance(SoftmaxKind::LogSoftmax, shape[resolved], expected[i])
        });
    }
}

#[test]
fn huge_logits_give_exact_finite_results() {
    // Without the max shift exp(1e4) overflows to inf and every row becomes NaN.
    let x = [
        1e4, 1e4, // two equal maxima: exactly 1/2 each
        1e4, -1e4, // e^-2e4 underflows to exactly 0
        -1e4, -1e4, // equal minima: 1/2 each
        -1e4, 1e4, // the other order
    ];
    for variant in SoftmaxVariant::ALL {
        if !applies(variant, &[4, 2], 1) {
            continue;
        }
        let gx = upload(&x, &[4, 2]);
        let y = gx
            .softmax_with(SoftmaxKind::Softmax, 1, variant)
            .unwrap()
            .to_vec()
            .unwrap();
        assert_eq!(y, [0.5, 0.5, 1.0, 0.0, 0.5, 0.5, 0.0, 1.0], "{variant:?}");
        let y = gx
            .softmax_with(SoftmaxKind::LogSoftmax, 1, variant)
            .unwrap()
            .to_vec()
            .unwrap();
        let ln2 = -std::f32::consts::LN_2;
        // -2e4 is exact in f32, and log Σ = log(1 + e^-2e4) = 0 there.
        assert_eq!(y, [ln2, ln2, 0.0, -2e4, ln2, ln2, -2e4, 0.0], "{variant:?}");
    }
    // Rows of 4, which every variant walks: the same cases, the vec4 kernel's lanes
    // meeting the maxima in different places.
    let x = [
        1e4, 1e4, 1e4, 1e4, // four equal maxima: 1/4 each
        -1e4, 1e4, -1e4, -1e4, // one maximum
        -1e4, -1e4, -1e4, -1e4, // equal minima
    ];
    for variant in SoftmaxVariant::ALL {
        let gx = upload(&x, &[3, 4]);
        let y = gx
            .softmax_with(SoftmaxKind::Softmax, 1, variant)
            .unwrap()
            .to_vec()
            .unwrap();
        let quarter = [0.25; 4];
        assert_eq!(y[..4], quarter, "{variant:?}");
        assert_eq!(y[4..8], [0.0, 1.0, 0.0, 0.0], "{variant:?}");
        assert_eq!(y[8..], quarter, "{variant:?}");
        let y = gx
            .softmax_with(SoftmaxKind::LogSoftmax, 1, variant)
            .unwrap()
            .to_vec()
            .unwrap();
        let ln4 = -(4.0f64.ln());
        let expected = [
            ln4, ln4, ln4, ln4, -2e4, 0.0, -2e4, -2e4, ln4, ln4, ln4, ln4,
        ];
        // log 4 within a few ulp (WGSL's log), the rest exact.
        assert_within(&format!("{variant:?}"), &y, &to_f32(&expected), |_| {
            4.0 * EPS
        });
    }
    // Mixed magnitudes along a strided axis, against the f64 reference.
    let x = [
        1e4,
        -3.0,
        0.5,
        9999.0,
        -1e4,
        1e4,
        2.0,
        -1e4,
        0.0,
        1e4 - 0.5,
        7.0,
        -1e4,
    ];
    let shape = [3, 4];
    check_forward(&x, &shape, 0, SoftmaxVariant::Strided);
    let y = upload(&x, &shape).log_softmax(0).unwrap().to_vec().unwrap();
    assert!(y.iter().all(|v| v.is_finite()), "{y:?}");
}

#[test]
fn fully_masked_rows_give_zeros_not_nan() {
    let inf = f32::INFINITY;
    // A masked row, a partly masked row, and a row of length 1.
    let x = [-inf, -inf, -inf, -inf, 0.0, 0.0];
    for variant in SoftmaxVariant::ALL {
        if !applies(variant, &[2, 3], 1) {
            continue;
        }
        let gx = upload(&x, &[2, 3]);
        let y = gx
            .softmax_with(SoftmaxKind::Softmax, 1, variant)
            .unwrap()
            .to_vec()
            .unwrap();
        assert_eq!(y, [0.0, 0.0, 0.0, 0.0, 0.5, 0.5], "{variant:?}");
        let y = gx
            .softmax_with(SoftmaxKind::LogSoftmax, 1, variant)
            .unwrap()
            .to_vec()
            .unwrap();
        let ln2 = -std::f32::consts::LN_2;
        assert_eq!(y, [-inf, -inf, -inf, -inf, ln2, ln2], "{variant:?}");
    }
    // The same in rows of 4 (the vec4 variant too): a masked row, then one with two live
    // elements in different lanes.
    let x = [-inf, -inf, -inf, -inf, -inf, 0.0, -inf, 0.0];
    for variant in SoftmaxVariant::ALL {
        let gx = upload(&x, &[2, 4]);
        let y = gx
            .softmax_with(SoftmaxKind::Softmax, 1, variant)
            .unwrap()
            .to_vec()
            .unwrap();
        assert_eq!(y, [0.0, 0.0, 0.0, 0.0, 0.0, 0.5, 0.0, 0.5], "{variant:?}");
        let y = gx
            .softmax_with(SoftmaxKind::LogSoftmax, 1, variant)
            .unwrap()
            .to_vec()
            .unwrap();
        let ln2 = -std::f32::consts::LN_2;
        assert_eq!(
            y,
            [-inf, -inf, -inf, -inf, -inf, ln2, -inf, ln2],
            "{variant:?}"
        );
    }
    let single = upload(&[-inf, 3.0], &[2, 1]).softmax(-1).unwrap();
    assert_eq!(single.to_vec().unwrap(), [0.0, 1.0]);
}

#[test]
fn same_input_same_bits() {
    let shape = [37, 1032];
    let x = upload(&Rng::new(34).vec(37 * 1032, -4.0, 4.0), &shape);
    for variant in SoftmaxVariant::ALL {
        let a = x.softmax_with(SoftmaxKind::Softmax, 1, variant).unwrap();
        let b = x.softmax_with(SoftmaxKind::Softmax, 1, variant).unwrap();
        assert_eq!(a.to_vec().unwrap(), b.to_vec().unwrap(), "{variant:?}");
    }
}

#[test]
fn empty_tensors_give_empty_results() {
    let x = upload(&[], &[3, 0, 2]);
    assert_eq!(x.softmax(1).unwrap().shape(), &[3, 0, 2]);
    assert_eq!(x.log_softmax(0).unwrap().shape(), &[3, 0, 2]);
    let y = x.softmax(-1).unwrap();
    assert_eq!(y.softmax_backward(&y, -1).unwrap().shape(), &[3, 0, 2]);
}

// ---------------------------------------------------------------------------- backward

/// Tolerance of the backward passes against finite differences: the GPU result carries a
/// few f32 roundings of values ≤ ~4 in size (≲ 1e-6 absolute); central differences of the
/// f64 reference with h = 1e-4 err by h²·|f'''|/6 ≲ 1e-8. So atol 1e-5 and rtol 1e-4
/// leave a margin of 10, and a missing term (the row sum, the exp) misses by ≥ 1e-2.
const GRAD_RTOL: f64 = 1e-4;
const GRAD_ATOL: f64 = 1e-5;
const H: f64 = 1e-4;

#[test]
fn backward_matches_finite_differences() {
    let mut rng = Rng::new(35);
    for (shape, axis) in [
        (vec![3, 7], 1),
        (vec![1, 1], 1),
        (vec![4, 5, 3], 1),
        (vec![5, 2, 3], 0),
        (vec![2, 131], 1),
        (vec![3, 8], 1),
        (vec![2, 3, 4], 2),
    ] {
        let n: usize = shape.iter().product();
        let x = rng.vec(n, -3.0, 3.0);
        let w: Vec<f64> = rng.vec(n, -1.0, 1.0).into_iter().map(f64::from).collect();
        let gx = upload(&x, &shape);
        let dy = upload(&to_f32(&w), &shape);
        for kind in KINDS {
            let numeric = numeric_gradient(&to_f64(&x), H, |x| {
                weighted_sum(&w, &softmax_cpu(x, &shape, axis, kind))
            });
            for variant in SoftmaxVariant::ALL {
                if !applies(variant, &shape, axis) {
                    continue;
                }
                let y = gx.softmax_with(kind, axis, variant).unwrap();
                let dx = y.softmax_backward_with(kind, &dy, axis, variant).unwrap();
                let what = format!("{kind:?} backward {variant:?} {shape:?} axis {axis}");
                if shape == [1, 1] {
                    // One class: softmax is constant 1, log-softmax constant 0: dx = 0.
                    assert_eq!(dx.to_vec().unwrap(), [0.0], "{what}");
                    continue;
                }
                assert_gradient(&what, &dx.to_vec().unwrap(), &numeric, GRAD_RTOL, GRAD_ATOL);
            }
        }
    }
}

#[test]
fn backward_matches_reference_on_long_rows() {
    // The rows variant's tree and the strided loop on rows longer than a workgroup.
    let shape = [37, 1032];
    let mut rng = Rng::new(36);
    let x = rng.vec(37 * 1032, -4.0, 4.0);
    let dy = rng.vec(37 * 1032, -1.0, 1.0);
    let (gx, gdy) = (upload(&x, &shape), upload(&dy, &shape));
    for kind in KINDS {
        let y = gx.softmax_with(kind, 1, SoftmaxVariant::Strided).unwrap();
        let y_host = y.to_vec().unwrap();
        let expected = softmax_backward_cpu(&to_f64(&y_host), &to_f64(&dy), &shape, 1, kind);
        // The row reduction (Σ dy⊙y or Σ dy) of n terms errs by ≤ n·ε·Σ|term| (worst case,
        // any order), and reaches dx_i multiplied by y_i (softmax) or exp(y_i) (log-softmax);
        // the rest is a few roundings of dx_i itself.
        let n = shape[1];
        let tolerance: Vec<f64> = (0..y_host.len())
            .map(|i| {
                let row = i / n * n..i / n * n + n;
                let terms: f64 = row
                    .map(|j| match kind {
                        SoftmaxKind::Softmax => f64::from((dy[j] * y_host[j]).abs()),
                        SoftmaxKind::LogSoftmax => f64::from(dy[j].abs()),
                    })
                    .sum();
                let factor = match kind {
                    SoftmaxKind::Softmax => f64::from(y_host[i]),
                    SoftmaxKind::LogSoftmax => f64::from(y_host[i]).exp(),
                };
                n as f64 * EPS * terms * factor + 4.0 * EPS * expected[i].abs()
            })
            .collect();
        for variant in SoftmaxVariant::ALL {
            let dx = y.softmax_backward_with(kind, &gdy, 1, variant).unwrap();
            assert_within(
                &format!("{kind:?} backward {variant:?}"),
                &dx.to_vec().unwrap(),
                &to_f32(&expected),
                |i| tolerance[i],
            );
        }
    }
}

// ------------------------------------------------------------------- cross-entropy

fn indices(targets: &[u32], shape: &[usize]) -> Indices {
    Indices::from_slice(gpu(), targets, shape).unwrap()
}

/// Random targets for `rows` rows of `classes` classes, about one in four set to `ignore`.
fn random_targets(rng: &mut Rng, rows: usize, classes: usize, ignore: Option<u32>) -> Vec<u32> {
    (0..rows)
        .map(|_| match ignore {
            Some(index) if rng.below(4) == 0 => index,
            _ => rng.below(classes) as u32,
        })
        .collect()
}

struct CeCase {
    shape: Vec<usize>,
    weighted: bool,
    ignore: Option<u32>,
}

#[test]
fn cross_entropy_matches_reference() {
    let mut rng = Rng::new(37);
    let cases = [
        (vec![1, 1], false, None),
        (vec![7, 3], false, None),
        (vec![7, 3], true, Some(1)),
        (vec![5, 257], true, Some(TORCH_IGNORE)),
        (vec![3, 5, 2, 7], false, Some(2)),
        (vec![3, 5, 2, 7], true, Some(10)),
        (vec![2, 5, 3, 2, 3], true, Some(TORCH_IGNORE)),
        (vec![1031, 3], false, Some(TORCH_IGNORE)),
        // Classes a multiple of 4, for the vec4 variant.
        (vec![9, 4], false, None),
        (vec![7, 12], true, Some(5)),
        (vec![130, 260], true, Some(TORCH_IGNORE)),
    ];
    for (shape, weighted, ignore) in cases {
        let case = CeCase {
            shape,
            weighted,
            ignore,
        };
        check_cross_entropy(&mut rng, &case);
    }
}

fn check_cross_entropy(rng: &mut Rng, case: &CeCase) {
    let shape = &case.shape;
    let classes = shape[1];
    let row_shape: Vec<usize> = [&shape[..1], &shape[2..]].concat();
    let rows: usize = row_shape.iter().product();
    let x = rng.vec(shape.iter().product(), -4.0, 4.0);
    let targets = random_targets(rng, rows, classes, case.ignore);
    let weights = rng.vec(classes, 0.25, 2.0);
    let (gx, gt, gw) = (
        upload(&x, shape),
        indices(&targets, &row_shape),
        upload(&weights, &[classes]),
    );
    let weights_f64 = to_f64(&weights);
    for reduction in [LossReduction::None, LossReduction::Sum, LossReduction::Mean] {
        let (loss, grad) = softmax_cross_entropy_cpu(
            &to_f64(&x),
            shape,
            &targets,
            case.weighted.then_some(&weights_f64[..]),
            case.ignore,
            reduction,
        );
        for variant in SoftmaxVariant::ALL {
            if !applies(variant, shape, 1) {
                continue;
            }
            let mut run = gx
                .softmax_cross_entropy(&gt)
                .reduction(reduction)
                .variant(variant);
            if case.weighted {
                run = run.weights(&gw);
            }
            if let Some(index) = case.ignore {
                run = run.ignore_index(as_i64(index));
            }
            let out = run.run().unwrap();
            let what = format!(
                "cross-entropy {shape:?} weighted {} ignore {:?} {reduction:?} {variant:?}",
                case.weighted, case.ignore
            );
            let expected_loss_shape: &[usize] = match reduction {
                LossReduction::None => &row_shape,
                _ => &[],
            };
            assert_eq!(out.loss.shape(), expected_loss_shape, "{what}");
            assert_eq!(out.grad.shape(), &shape[..], "{what}");
            // Row loss = (m − x_t) + log Σ: a logsumexp of C terms, ≤ (C + 32)·ε·(1 + |loss|)
            // as for log-softmax; a sum over R rows adds R·ε relative.
            let budget = (2 * classes + 32 + rows) as f64 * EPS;
            let loss_scale = loss.iter().fold(1.0f64, |m, v| m.max(v.abs()));
            assert_within(
                &format!("{what}: loss"),
                &out.loss.to_vec().unwrap(),
                &to_f32(&loss),
                |_| budget * 4.0 * loss_scale,
            );
            // Gradient elements are w·(p − onehot)/divisor with |·| ≤ 2·max w: a softmax
            // probability's error (2C + 32)·ε relative, plus one rounding of the scale.
            assert_within(
                &format!("{what}: grad"),
                &out.grad.to_vec().unwrap(),
                &to_f32(&grad),
                |i| budget * (grad[i].abs() + 2.0 * EPS) + 4.0 * EPS * grad[i].abs(),
            );
        }
    }
}

#[test]
fn cross_entropy_gradient_matches_finite_differences() {
    let mut rng = Rng::new(38);
    for (shape, weighted, ignore, reduction) in [
        (vec![6, 5], false, None, LossReduction::Mean),
        (vec![6, 5], true, Some(3), LossReduction::Mean),
        (vec![4, 7], true, Some(TORCH_IGNORE), LossReduction::Sum),
        (
            vec![3, 4, 2, 3],
            true,
            Some(TORCH_IGNORE),
            LossReduction::Mean,
        ),
        (vec![3, 4, 5], false, Some(0), LossReduction::None),
        (vec![2, 300], false, None, LossReduction::Mean),
    ] {
        let classes = shape[1];
        let row_shape: Vec<usize> = [&shape[..1], &shape[2..]].concat();
        let rows: usize = row_shape.iter().product();
        let x = rng.vec(shape.iter().product(), -3.0, 3.0);
        let targets = random_targets(&mut rng, rows, classes, ignore);
        let weights = rng.vec(classes, 0.25, 2.0);
        let weights_f64 = to_f64(&weights);
        let weights_ref = weighted.then_some(&weights_f64[..]);
        // The loss the gradient belongs to: for LossReduction::None, the sum of the rows.
        let numeric = numeric_gradient(&to_f64(&x), H, |x| {
            let (loss, _) =
                softmax_cross_entropy_cpu(x, &shape, &targets, weights_ref, ignore, reduction);
            loss.iter().sum()
        });
        let (gx, gt, gw) = (
            upload(&x, &shape),
            indices(&targets, &row_shape),
            upload(&weights, &[classes]),
        );
        let mut run = gx.softmax_cross_entropy(&gt).reduction(reduction);
        if weighted {
            run = run.weights(&gw);
        }
        if let Some(index) = ignore {
            run = run.ignore_index(as_i64(index));
        }
        let grad = run.run().unwrap().grad.to_vec().unwrap();
        let what = format!(
            "cross-entropy gradient {shape:?} weighted {weighted} ignore {ignore:?} {reduction:?}"
        );
        // As for softmax: f32 roundings of probabilities (≲ 1e-6) against differences
        // erring by ≲ 1e-8.
        assert_gradient(&what, &grad, &numeric, GRAD_RTOL, GRAD_ATOL);
    }
}

/// PyTorch's convention: i64 targets with -100 where a row is ignored, the default
/// `ignore_index`. The loss and gradient equal those of the same targets in u32 with a class
/// value as the ignore index.
#[test]
fn pytorch_ignore_index_on_i64_targets() {
    let x = Rng::new(41).vec(5 * 4, -2.0, 2.0);
    let gx = upload(&x, &[5, 4]);
    let torch = Indices::from_i64(gx.gpu(), &[3, -100, 0, -100, 2], &[5]).unwrap();
    for reduction in [LossReduction::Mean, LossReduction::Sum, LossReduction::None] {
        let ours = gx
            .softmax_cross_entropy(&torch)
            .ignore_index(PYTORCH_IGNORE_INDEX)
            .reduction(reduction)
            .run()
            .unwrap();
        let (loss, grad) = softmax_cross_entropy_cpu(
            &x.iter().map(|&v| f64::from(v)).collect::<Vec<_>>(),
            &[5, 4],
            &[3, 9, 0, 9, 2],
            None,
            Some(9),
            reduction,
        );
        let (loss, grad) = (to_f32(&loss), to_f32(&grad));
        assert_close("loss", &ours.loss.to_vec().unwrap(), &loss, 1e-5, 1e-6);
        assert_close("grad", &ours.grad.to_vec().unwrap(), &grad, 1e-5, 1e-6);
    }
}

#[test]
fn ignored_rows_contribute_nothing() {
    let x = Rng::new(39).vec(4 * 3, -2.0, 2.0);
    let targets = indices(&[2, 7, 0, 7], &[4]);
    // The labels are checked on the host, from the copy Indices keeps of them.
    assert_eq!(&*targets.host_values().unwrap(), [2, 7, 0, 7]);
    let gx = upload(&x, &[4, 3]);
    let out = gx
        .softmax_cross_entropy(&targets)
        .ignore_index(7)
        .run()
        .unwrap();
    let grad = out.grad.to_vec().unwrap();
    assert!(
        grad[3..6].iter().chain(&grad[9..12]).all(|&g| g == 0.0),
        "{grad:?}"
    );
    // The mean over the two counted rows equals the mean loss of those rows alone.
    let kept = [&x[0..3], &x[6..9]].concat();
    let alone = upload(&kept, &[2, 3])
        .softmax_cross_entropy(&indices(&[2, 0], &[2]))
        .run()
        .unwrap();
    let (a, b) = (
        out.loss.to_vec().unwrap()[0],
        alone.loss.to_vec().unwrap()[0],
    );
    assert!((a - b).abs() <= 4.0 * f32::EPSILON * b.abs(), "{a} vs {b}");
    let alone_grad = alone.grad.to_vec().unwrap();
    assert_eq!(grad[0..3], alone_grad[0..3]);
    assert_eq!(grad[6..9], alone_grad[3..6]);
}

#[test]
fn all_padding_gives_zero_loss_and_gradient() {
    let x = Rng::new(40).vec(3 * 8, -2.0, 2.0);
    let gx = upload(&x, &[3, 8]);
    let pad = TORCH_IGNORE;
    let targets = indices(&[pad, pad, pad], &[3]);
    let weights = upload(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0], &[8]);
    for reduction in [LossReduction::None, LossReduction::Sum, LossReduction::Mean] {
        for weighted in [false, true] {
            for variant in SoftmaxVariant::ALL {
                let mut run = gx
                    .softmax_cross_entropy(&targets)
                    .ignore_index(as_i64(pad))
                    .reduction(reduction)
                    .variant(variant);
                if weighted {
                    run = run.weights(&weights);
                }
                let out = run.run().unwrap();
                let what = format!("{reduction:?} weighted {weighted} {variant:?}");
                assert!(
                    out.loss.to_vec().unwrap().iter().all(|&l| l == 0.0),
                    "{what}"
                );
                assert_eq!(out.grad.to_vec().unwrap(), vec![0.0; 24], "{what}");
            }
        }
    }
    // An empty batch: loss 0, an empty gradient.
    let empty = upload(&[], &[0, 5])
        .softmax_cross_entropy(&indices(&[], &[0]))
        .run()
        .unwrap();
    assert_eq!(empty.loss.to_vec().unwrap(), [0.0]);
    assert_eq!(empty.grad.shape(), &[0, 5]);
}

#[test]
fn cross_entropy_of_huge_logits_is_finite_and_exact() {
    // Row 0: the target is the larger logit, loss log(1 + e^-2e4) = 0 exactly in f32.
    // Row 1: the target is the smaller one, loss 2e4 (exact in f32).
    let x = [1e4, -1e4, 1e4, -1e4];
    for variant in SoftmaxVariant::ALL {
        if !applies(variant, &[2, 2], 1) {
            continue;
        }
        let out = upload(&x, &[2, 2])
            .softmax_cross_entropy(&indices(&[0, 1], &[2]))
            .reduction(LossReduction::None)
            .variant(variant)
            .run()
            .unwrap();
        assert_eq!(out.loss.to_vec().unwrap(), [0.0, 2e4], "{variant:?}");
        assert_eq!(
            out.grad.to_vec().unwrap(),
            [0.0, 0.0, 1.0, -1.0],
            "{variant:?}"
        );
    }
}

#[test]
fn cross_entropy_is_deterministic() {
    let shape = [257, 129];
    let mut rng = Rng::new(41);
    let x = upload(&rng.vec(257 * 129, -4.0, 4.0), &shape);
    let targets = indices(&random_targets(&mut rng, 257, 129, None), &[257]);
    let first = x.softmax_cross_entropy(&targets).run().unwrap();
    let again = x.softmax_cross_entropy(&targets).run().unwrap();
    assert_eq!(first.loss.to_vec().unwrap(), again.loss.to_vec().unwrap());
    assert_eq!(first.grad.to_vec().unwrap(), again.grad.to_vec().unwrap());
}

// ------------------------------------------------------------------------------ errors

fn message(result: Result<impl std::fmt::Debug, Error>) -> String {
    result.unwrap_err().to_string()
}

#[test]
fn bad_axes_and_shapes_are_errors() {
    let x = upload(&[1.0; 6], &[2, 3]);
    let err = message(x.softmax(2));
    assert!(
        err.contains("softmax") && err.contains("axis 2") && err.contains("rank 2"),
        "{err}"
    );
    let err = message(x.log_softmax(-3));
    assert!(
        err.contains("log_softmax") && err.contains("axis -3"),
        "{err}"
    );
    let err = message(x.softmax_with(SoftmaxKind::Softmax, 0, SoftmaxVariant::Rows));
    assert!(
        err.contains("rows variant") && err.contains("stride 3"),
        "{err}"
    );
    let err = message(x.softmax_with(SoftmaxKind::Softmax, 1, SoftmaxVariant::Vec4));
    assert!(
        err.contains("vec4 variant") && err.contains("multiple of 4") && err.contains("rows of 3"),
        "{err}"
    );
    let dy = upload(&[1.0; 6], &[3, 2]);
    let err = message(x.softmax_backward(&dy, -1));
    assert!(err.contains("[2, 3]") && err.contains("[3, 2]"), "{err}");
    let err = message(x.log_softmax_backward(&x, 5));
    assert!(
        err.contains("log_softmax_backward") && err.contains("axis 5"),
        "{err}"
    );
    let err = message(x.softmax_with(SoftmaxKind::Softmax, usize::MAX, SoftmaxVariant::Strided));
    assert!(
        err.contains(&format!("axis {}", usize::MAX)) && err.contains("[2, 3]"),
        "{err}"
    );
    let err =
        message(x.softmax_backward_with(SoftmaxKind::Softmax, &x, 2, SoftmaxVariant::Strided));
    assert!(err.contains("softmax_backward: axis 2"), "{err}");
    let scalar = upload(&[1.0], &[]);
    assert!(scalar.softmax(-1).is_err());
}

#[test]
fn bad_cross_entropy_operands_are_errors() {
    let x = upload(&[0.5; 12], &[4, 3]);
    let targets = indices(&[0, 1, 2, 1], &[4]);

    // A target out of range, with and without an ignore index.
    let bad = indices(&[0, 3, 1, 2], &[4]);
    let err = message(x.softmax_cross_entropy(&bad).run());
    assert!(
        err.contains("target 3 at position 1")
            && err.contains("3 classes")
            && err.contains("no ignore index"),
        "{err}"
    );
    let err = message(x.softmax_cross_entropy(&bad).ignore_index(7).run());
    assert!(
        err.contains("target 3") && err.contains("ignore index 7"),
        "{err}"
    );
    // u32::MAX is no "none" marker: it is refused like any other non-class (and reads as
    // the i32 it would be, -1).
    let padded = indices(&[0, u32::MAX, 1, 2], &[4]);
    let err = message(x.softmax_cross_entropy(&padded).run());
    assert!(err.contains("target -1 at position 1"), "{err}");
    // i64 targets with PyTorch's -100 but another ignore index (or none): refused naming
    // both; an ignore index past i32 is refused too.
    let torch = Indices::from_i64(x.gpu(), &[0, -100, 1, 2], &[4]).unwrap();
    let err = message(x.softmax_cross_entropy(&torch).ignore_index(7).run());
    assert!(
        err.contains("target -100 at position 1") && err.contains("ignore index 7"),
        "{err}"
    );
    let err = message(
        x.softmax_cross_entropy(&targets)
            .ignore_index(1 << 40)
            .run(),
    );
    assert!(
        err.contains("ignore index 1099511627776 is outside"),
        "{err}"
    );
    let err = message(Indices::from_i64(x.gpu(), &[0, 1, -(1 << 33)], &[3]));
    assert!(
        err.contains("index -8589934592 at position 2 is outside i32"),
        "{err}"
    );

    // Targets of the wrong shape.
    let err = message(x.softmax_cross_entropy(&indices(&[0, 1, 2], &[3])).run());
    assert!(
        err.contains("[4, 3]") && err.contains("[3]") && err.contains("[4]"),
        "{err}"
    );
    // Logits of rank 1.
    let flat = upload(&[0.5; 3], &[3]);
    let err = message(flat.softmax_cross_entropy(&indices(&[0], &[1])).run());
    assert!(err.contains("[3]") && err.contains("axis 1"), "{err}");
    // Weights of the wrong shape.
    let weights = upload(&[1.0; 4], &[4]);
    let err = message(x.softmax_cross_entropy(&targets).weights(&weights).run());
    assert!(err.contains("[C] = [3]") && err.contains("[4]"), "{err}");
    // No classes.
    let none = upload(&[], &[2, 0]);
    let err = message(none.softmax_cross_entropy(&indices(&[0, 0], &[2])).run());
    assert!(
        err.contains("zero-sized") && err.contains("[2, 0]"),
        "{err}"
    );
    // The rows variant with the classes not on the last axis.
    let spatial = upload(&[0.5; 12], &[2, 3, 2]);
    let err = message(
        spatial
            .softmax_cross_entropy(&indices(&[0, 1, 2, 0], &[2, 2]))
            .variant(SoftmaxVariant::Rows)
            .run(),
    );
    assert!(
        err.contains("rows variant") && err.contains("stride 2"),
        "{err}"
    );
}
