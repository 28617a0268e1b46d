//! The graph: every op's backward rule against finite differences of an f64 CPU forward,
//! the plan's memory reuse, determinism, and an MLP that learns XOR.

mod common;

use common::{
    assert_close, assert_gradient, broadcast_reference, gpu, numeric_gradient, weighted_sum,
};
use shadergrad::graph::{AttentionSpec, CrossEntropySpec, Feed, GemmSpec, Graph, Var};
use shadergrad::kernels::attention::{
    attention_cpu, AttentionCpuInputs, AttentionDims, AttentionSettings, CpuMask, MaskKind,
};
use shadergrad::kernels::contiguous_strides;
use shadergrad::kernels::conv::{conv_cpu, max_pool1d_cpu, ConvGeometry};
use shadergrad::kernels::gather::gather_cpu;
use shadergrad::kernels::random::keep_mask;
use shadergrad::rng::Rng;
use shadergrad::AttentionSettingsBuilder;
use shadergrad::{
    AttentionVariant, Binary, Conv1d, Conv2d, Gpu, Indices, MaxPool1d, Reduce, Unary,
};

/// f64 values as the f32 a parameter starts from.
fn to_f32(x: &[f64]) -> Vec<f32> {
    x.iter().map(|&v| v as f32).collect()
}

/// Builds `forward` over parameters of the given shapes, takes L = Σ w ⊙ y with fixed random
/// weights w, and checks dL/dparameter from the plan against central differences of
/// `reference` (the same function in f64 on the CPU) at the same point.
fn check_op(
    what: &str,
    shapes: &[&[usize]],
    forward: impl Fn(&mut Graph, &[Var]) -> Var,
    reference: impl Fn(&[Vec<f64>]) -> Vec<f64>,
) {
    check_op_with_indices(what, shapes, &[], |g, p, _| forward(g, p), reference);
}

/// [`check_op`] with u32 inputs besides the parameters: each (shape, values) is an index
/// input fed with those values, handed to `forward` after the parameters (`reference`
/// knows the values itself).
fn check_op_with_indices(
    what: &str,
    shapes: &[&[usize]],
    indices: &[(&[usize], &[u32])],
    forward: impl Fn(&mut Graph, &[Var], &[Var]) -> Var,
    reference: impl Fn(&[Vec<f64>]) -> Vec<f64>,
) {
    let mut rng = Rng::new(what.len() as u64 * 7919);
    let values: Vec<Vec<f64>> = shapes
        .iter()
        .map(|s| {
            (0..s.iter().product::<usize>())
                .map(|_| f64::from(rng.uniform(-1.5, 1.5)))
                .collect()
        })
        .collect();
    // Evaluate the reference at the f32-rounded point the GPU sees.
    let values: Vec<Vec<f64>> = values
        .iter()
        .map(|v| to_f32(v).iter().map(|&x| f64::from(x)).collect())
        .collect();
    let mut g = Graph::new(gpu());
    let params: Vec<Var> = shapes
        .iter()
        .enumerate()
        .map(|(i, s)| {
            g.parameter(&format!("p{i}"), s, to_f32(&values[i]))
                .unwrap()
        })
        .collect();
    let index_inputs: Vec<Var> = indices
        .iter()
        .enumerate()
        .map(|(i, (shape, _))| g.input_indices(&format!("i{i}"), shape))
        .collect();
    let y = forward(&mut g, &params, &index_inputs);
    let n: usize = g.shape(y).iter().product();
    let weights: Vec<f64> = (0..n).map(|_| f64::from(rng.uniform(-1.0, 1.0))).collect();
    let w = g
        .constant(to_f32(&weights), g.shape(y).to_vec().as_slice())
        .unwrap();
    let weighted = g.mul(y, w).unwrap();
    let flat = g.reshape(weighted, &[n]).unwrap();
    let loss = g.sum(flat, 0, false).unwrap();
    let grads = g.backward(loss).unwrap();
    let grad_vars: Vec<Var> = params.iter().map(|&p| grads.of(p).unwrap()).collect();
    let mut outputs = vec![loss];
    outputs.extend(&grad_vars);
    let mut plan = g.compile(&outputs).unwrap();
    let feeds: Vec<Feed> = index_inputs
        .iter()
        .zip(indices)
        .map(|(&var, (_, values))| Feed::u32(var, values))
        .collect();
    plan.run(&feeds, &[]).unwrap();
    for (i, &grad) in grad_vars.iter().enumerate() {
        let analytic = plan.read(grad).unwrap();
        let numeric = numeric_gradient(&values[i], 1e-4, |x| {
            let mut args = values.clone();
            args[i] = x.to_vec();
            weighted_sum(&weights, &reference(&args))
        });
        // f32 kernels against f64 differences (h = 1e-4, error ~1e-8 · |f'''|): the f32
        // rounding of sums of a few dozen terms of magnitude ≲ 3 dominates, ≲ 1e-5.
        assert_gradient(
            &format!("{what}: d/d p{i}"),
            &analytic,
            &numeric,
            1e-4,
            1e-4,
        );
    }
}

fn matmul_ref(a: &[f64], b: &[f64], m: usize, k: usize, n: usize, ta: bool, tb: bool) -> Vec<f64> {
    let mut out = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            out[i * n + j] = (0..k)
                .map(|l| {
                    let av = if ta { a[l * m + i] } else { a[i * k + l] };
                    let bv = if tb { b[j * k + l] } else { b[l * n + j] };
                    av * bv
                })
                .sum();
        }
    }
    out
}

/// Reads `x` of `shape` at every coordinate of `out` (numpy broadcasting).
fn broadcast_ref(x: &[f64], shape: &[usize], out: &[usize]) -> Vec<f64> {
    let strides = contiguous_strides(shape);
    let lead = out.len() - shape.len();
    let n: usize = out.iter().product();
    (0..n)
        .map(|mut i| {
            let mut at = 0;
            for axis in (0..out.len()).rev() {
                let coord = i % out[axis];
                i /= out[axis];
                if axis >= lead && shape[axis - lead] != 1 {
                    at += coord * strides[axis - lead];
                }
            }
            x[at]
        })
        .collect()
}

#[test]
fn matmul_backward_for_every_transpose_and_bias() {
    let (m, k, n) = (3, 5, 4);
    for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
        let a_shape = if ta { [k, m] } else { [m, k] };
        let b_shape = if tb { [n, k] } else { [k, n] };
        // Alone, and followed by a ReLU that compile fuses into it.
        for relu in [false, true] {
            check_op(
                &format!("matmul ta={ta} tb={tb} relu={relu}"),
                &[&a_shape, &b_shape, &[n]],
                |g, p| {
                    let product = g
                        .gemm(
                            p[0],
                            p[1],
                            GemmSpec {
                                transpose_a: ta,
                                transpose_b: tb,
                                bias: Some(p[2]),
                            },
                        )
                        .unwrap();
                    if relu {
                        g.relu(product).unwrap()
                    } else {
                        product
                    }
                },
                |x| {
                    let y = matmul_ref(&x[0], &x[1], m, k, n, ta, tb);
                    let biased = y.iter().enumerate().map(|(i, v)| v + x[2][i % n]);
                    biased.map(|v| if relu { v.max(0.0) } else { v }).collect()
                },
            );
        }
    }
}

#[test]
fn a_relu_between_two_matmuls_has_the_gradient_of_the_unfused_ops() {
    // The backward's dh = dy·W2ᵀ is read only by relu', so it is fused too.
    let (rows, inner, hidden, cols) = (3, 5, 4, 2);
    check_op(
        "x·W1 + b1, relu, ·W2",
        &[&[rows, inner], &[inner, hidden], &[hidden], &[hidden, cols]],
        |g, p| {
            let product = g.gemm(p[0], p[1], GemmSpec::new().bias(p[2])).unwrap();
            let h = g.relu(product).unwrap();
            g.matmul(h, p[3]).unwrap()
        },
        |x| {
            let z = matmul_ref(&x[0], &x[1], rows, inner, hidden, false, false);
            let h: Vec<f64> = z
                .iter()
                .enumerate()
                .map(|(i, v)| (v + x[2][i % hidden]).max(0.0))
                .collect();
            matmul_ref(&h, &x[3], rows, hidden, cols, false, false)
        },
    );
}

#[test]
fn compile_fuses_each_relu_and_relu_gradient_into_the_matmul_it_alone_reads() {
    let (rows, inner, hidden, cols) = (6, 9, 7, 5);
    let mut rng = Rng::new(5);
    let mut g = Graph::new(gpu());
    let x = g.input("x", &[rows, inner]);
    let w1 = g
        .parameter("w1", &[inner, hidden], rng.vec(inner * hidden, -1.0, 1.0))
        .unwrap();
    let b1 = g
        .parameter("b1", &[hidden], rng.vec(hidden, -1.0, 1.0))
        .unwrap();
    let w2 = g
        .parameter("w2", &[hidden, cols], rng.vec(hidden * cols, -1.0, 1.0))
        .unwrap();
    let product = g.gemm(x, w1, GemmSpec::new().bias(b1)).unwrap();
    let h = g.relu(product).unwrap();
    let y = g.matmul(h, w2).unwrap();
    let flat = g.reshape(y, &[rows * cols]).unwrap();
    let loss = g.sum(flat, 0, false).unwrap();
    let grads = g.backward(loss).unwrap();
    let mut outputs = vec![loss, h];
    outputs.extend([w1, b1, w2].map(|p| grads.of(p).unwrap()));
    let mut fused = g.compile(&outputs).unwrap();
    // The products asked for as outputs must be written, so neither is fused: the forward
    // product, and the backward's dh = dy·W2ᵀ (the gradient of h).
    let kept = [product, grads.of(h).unwrap()];
    let mut apart = g.compile(&[outputs.as_slice(), &kept].concat()).unwrap();
    assert_eq!(fused.dispatch_count() + 2, apart.dispatch_count());
    let features = rng.vec(rows * inner, -1.0, 1.0);
    fused.run(&[Feed::f32(x, &features)], &[]).unwrap();
    apart.run(&[Feed::f32(x, &features)], &[]).unwrap();
    for &v in &outputs {
        assert_eq!(
            fused.read(v).unwrap(),
            apart.read(v).unwrap(),
            "fused and apart differ"
        );
    }
    let wide = |v: &[f32]| v.iter().map(|&x| f64::from(x)).collect::<Vec<f64>>();
    let (w_values, b_values) = (
        wide(&fused.read(w1).unwrap()),
        wide(&fused.read(b1).unwrap()),
    );
    let expected: Vec<f32> = matmul_ref(
        &wide(&features),
        &w_values,
        rows,
        inner,
        hidden,
        false,
        false,
    )
    .iter()
    .enumerate()
    .map(|(i, v)| (v + b_values[i % hidden]).max(0.0) as f32)
    .collect();
    let fused_h = fused.read(h).unwrap();
    assert_close("relu(x·w1 + b1) fused", &fused_h, &expected, 1e-5, 1e-5);
    assert!(fused_h.contains(&0.0) && fused_h.iter().any(|&v| v > 0.0));
}

#[test]
fn unary_backward() {
    for f in [
        Unary::Tanh,
        Unary::Sigmoid,
        Unary::Exp,
        Unary::Neg,
        Unary::Scale(-1.7),
        Unary::Gelu,
        Unary::Silu,
        // Integer powers of negative values too.
        Unary::Pow(2.0),
        Unary::Pow(3.0),
        // Away from the kink at 0 and the bounds (the points are fixed by the seed).
        Unary::Abs,
        Unary::Clamp {
            min: -0.6,
            max: 0.8,
        },
    ] {
        check_op(
            &format!("{f:?}"),
            &[&[3, 7]],
            |g, p| g.map(p[0], f).unwrap(),
            |x| x[0].iter().map(|&v| f.apply(v)).collect(),
        );
    }
    // relu and log away from their kinks and poles.
    check_op(
        "relu",
        &[&[2, 9]],
        |g, p| {
            let shifted = g.scale(p[0], 1.0).unwrap();
            g.relu(shifted).unwrap()
        },
        |x| x[0].iter().map(|&v| v.max(0.0)).collect(),
    );
    check_op(
        "log",
        &[&[11]],
        |g, p| {
            let e = g.map(p[0], Unary::Exp).unwrap();
            g.map(e, Unary::Log).unwrap()
        },
        |x| x[0].clone(),
    );
    // √ and non-integer powers on positive values: of eˣ ∈ (0.22, 4.5).
    for f in [
        Unary::Sqrt,
        Unary::Pow(2.5),
        Unary::Pow(-0.5),
        Unary::Pow(-2.0),
    ] {
        check_op(
            &format!("{f:?} of exp"),
            &[&[3, 5]],
            |g, p| {
                let e = g.map(p[0], Unary::Exp).unwrap();
                g.map(e, f).unwrap()
            },
            |x| x[0].iter().map(|&v| f.apply(v.exp())).collect(),
        );
    }
}

#[test]
fn new_unary_builders_record_their_ops_and_check_constants() {
    let mut g = Graph::new(gpu());
    let x = g.parameter("x", &[4], vec![-2.0, -0.5, 0.0, 3.0]).unwrap();
    let ys = [
        g.gelu(x).unwrap(),
        g.silu(x).unwrap(),
        g.abs(x).unwrap(),
        g.pow(x, 3.0).unwrap(),
        g.clamp(x, -1.0, 1.0).unwrap(),
    ];
    let e = g.map(x, Unary::Exp).unwrap();
    let root = g.sqrt(e).unwrap();
    let mut plan = g.compile(&[ys.as_slice(), &[root]].concat()).unwrap();
    plan.run(&[], &[]).unwrap();
    let xs = [-2.0f64, -0.5, 0.0, 3.0];
    for (y, f) in ys.iter().zip([
        Unary::Gelu,
        Unary::Silu,
        Unary::Abs,
        Unary::Pow(3.0),
        Unary::Clamp {
            min: -1.0,
            max: 1.0,
        },
    ]) {
        let expected: Vec<f32> = xs.iter().map(|&v| f.apply(v) as f32).collect();
        assert_close(
            &format!("{f:?}"),
            &plan.read(*y).unwrap(),
            &expected,
            1e-6,
            1e-7,
        );
    }
    let expected: Vec<f32> = xs.iter().map(|&v| v.exp().sqrt() as f32).collect();
    assert_close("sqrt", &plan.read(root).unwrap(), &expected, 1e-6, 0.0);
    // Bad constants fail when the op is added, naming the values.
    let err = g.clamp(x, 1.0, -1.0).unwrap_err().to_string();
    assert!(err.contains("min = 1") && err.contains("max = -1"), "{err}");
    let err = g.clamp(x, f32::NAN, 1.0).unwrap_err().to_string();
    assert!(err.contains("NaN"), "{err}");
    for p in [f32::NAN, f32::INFINITY] {
        let err = g.pow(x, p).unwrap_err().to_string();
        assert!(err.contains("pow") && err.contains(&p.to_string()), "{err}");
    }
    let err = g
        .zip(x, x, Binary::ClampGrad { min: 2.0, max: 1.0 })
        .unwrap_err()
        .to_string();
    assert!(err.contains("min = 2"), "{err}");
}

#[test]
fn dropout_backward_is_the_same_mask_and_scale_on_dy() {
    let seed = 2024u32;
    let p = 0.3f32;
    let mask = keep_mask(seed, 0, 6 * 8, p).unwrap();
    assert!(mask.iter().any(|&k| k) && mask.iter().any(|&k| !k));
    let scale = 1.0 / (1.0 - f64::from(p));
    check_op_with_indices(
        "dropout",
        &[&[6, 8]],
        &[(&[1], &[seed])],
        |g, p_vars, i| g.dropout(p_vars[0], p, i[0]).unwrap(),
        |x| {
            x[0].iter()
                .zip(&mask)
                .map(|(&v, &keep)| if keep { v * scale } else { 0.0 })
                .collect()
        },
    );
}

/// The gradient of a max goes where the maximum was taken, shared equally among ties (as
/// PyTorch's `amax`), and a mask of equal elements passes none.
#[test]
fn max_gradient_goes_to_the_maximum_shared_among_ties() {
    let mut g = Graph::new(gpu());
    let x = g
        .parameter(
            "x",
            &[2, 4],
            vec![1.0, 3.0, 3.0, 2.0, -1.0, -5.0, -0.5, -2.0],
        )
        .unwrap();
    let m = g.reduce(x, Reduce::Max, 1, false).unwrap();
    let loss = g.sum_all(m).unwrap();
    let grads = g.backward(loss).unwrap();
    let dx = grads.of(x).unwrap();
    let mut plan = g.compile(&[m, dx]).unwrap();
    plan.run(&[], &[]).unwrap();
    assert_eq!(plan.read(m).unwrap(), [3.0, -0.5]);
    assert_eq!(
        plan.read(dx).unwrap(),
        [0.0, 0.5, 0.5, 0.0, 0.0, 0.0, 1.0, 0.0]
    );
    let mut g = Graph::new(gpu());
    let a = g.parameter("a", &[3], vec![1.0, 2.0, 3.0]).unwrap();
    let b = g.constant(vec![1.0, 0.0, 3.0], &[3]).unwrap();
    let mask = g.zip(a, b, Binary::Equal).unwrap();
    let weighted = g.mul(mask, a).unwrap();
    let loss = g.sum_all(weighted).unwrap();
    let da = g.backward(loss).unwrap().of(a).unwrap();
    let mut plan = g.compile(&[mask, da]).unwrap();
    plan.run(&[], &[]).unwrap();
    assert_eq!(plan.read(mask).unwrap(), [1.0, 0.0, 1.0]);
    // d(mask·a)/da = mask: the mask itself passes no gradient.
    assert_eq!(plan.read(da).unwrap(), [1.0, 0.0, 1.0]);
}

#[test]
fn binary_backward_with_broadcasting() {
    let cases: [(&[usize], &[usize]); 4] = [
        (&[3, 4], &[3, 4]),
        (&[3, 4], &[4]),
        (&[3, 1], &[1, 5]),
        (&[2, 3, 4], &[3, 1]),
    ];
    for (a, b) in cases {
        for op in [Binary::Add, Binary::Sub, Binary::Mul, Binary::Div] {
            let out = {
                let rank = a.len().max(b.len());
                let pad = |s: &[usize]| [vec![1; rank - s.len()], s.to_vec()].concat();
                pad(a)
                    .iter()
                    .zip(pad(b))
                    .map(|(&x, y)| x.max(y))
                    .collect::<Vec<usize>>()
            };
            check_op(
                &format!("{op:?} {a:?} {b:?}"),
                &[a, b],
                |g, p| {
                    // Keep the divisor away from 0: 2 + tanh(b) ∈ (1, 3).
                    let rhs = if op == Binary::Div {
                        let t = g.tanh(p[1]).unwrap();
                        let two = g.constant(vec![2.0], &[1]).unwrap();
                        g.add(t, two).unwrap()
                    } else {
                        p[1]
                    };
                    g.zip(p[0], rhs, op).unwrap()
                },
                |x| {
                    let av = broadcast_ref(&x[0], a, &out);
                    let rhs: Vec<f64> = if op == Binary::Div {
                        x[1].iter().map(|v| 2.0 + v.tanh()).collect()
                    } else {
                        x[1].clone()
                    };
                    let bv = broadcast_ref(&rhs, b, &out);
                    av.iter().zip(&bv).map(|(&p, &q)| op.apply(p, q)).collect()
                },
            );
        }
    }
}

#[test]
fn reduce_broadcast_permute_reshape_backward() {
    let shape = [3usize, 4, 5];
    let strides = contiguous_strides(&shape);
    for axis in 0..3 {
        for op in [Reduce::Sum, Reduce::Mean, Reduce::Max] {
            check_op(
                &format!("{op:?} axis {axis}"),
                &[&shape],
                |g, p| g.reduce(p[0], op, axis as isize, false).unwrap(),
                |x| {
                    let mut out = Vec::new();
                    let others: Vec<usize> = (0..3).filter(|&a| a != axis).collect();
                    for i in 0..shape[others[0]] {
                        for j in 0..shape[others[1]] {
                            let along = (0..shape[axis]).map(|l| {
                                let mut c = [0; 3];
                                c[others[0]] = i;
                                c[others[1]] = j;
                                c[axis] = l;
                                x[0][c[0] * strides[0] + c[1] * strides[1] + c[2]]
                            });
                            out.push(match op {
                                Reduce::Sum => along.sum(),
                                Reduce::Mean => along.sum::<f64>() / shape[axis] as f64,
                                Reduce::Max => along.fold(f64::NEG_INFINITY, f64::max),
                            });
                        }
                    }
                    out
                },
            );
        }
    }
    check_op(
        "broadcast_to",
        &[&[3, 1]],
        |g, p| g.broadcast_to(p[0], &[2, 3, 4]).unwrap(),
        |x| broadcast_ref(&x[0], &[3, 1], &[2, 3, 4]),
    );
    check_op(
        "sum_to",
        &[&[2, 3, 4]],
        |g, p| g.sum_to(p[0], &[3, 1]).unwrap(),
        |x| {
            (0..3)
                .map(|j| {
                    (0..2)
                        .flat_map(|i| (0..4).map(move |k| (i, k)))
                        .map(|(i, k)| x[0][i * 12 + j * 4 + k])
                        .sum()
                })
                .collect()
        },
    );
    check_op(
        "permute",
        &[&[2, 3, 4]],
        |g, p| g.permute(p[0], &[2, 0, 1]).unwrap(),
        |x| {
            let mut out = Vec::new();
            for k in 0..4 {
                for i in 0..2 {
                    for j in 0..3 {
                        out.push(x[0][i * 12 + j * 4 + k]);
                    }
                }
            }
            out
        },
    );
    check_op(
        "reshape",
        &[&[2, 6]],
        |g, p| {
            let r = g.reshape(p[0], &[3, 4]).unwrap();
            g.tanh(r).unwrap()
        },
        |x| x[0].iter().map(|v| v.tanh()).collect(),
    );
}

fn softmax_ref(row: &[f64]) -> Vec<f64> {
    let max = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = row.iter().map(|v| (v - max).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

/// Cross-entropy summed and per row (PyTorch's `reduction="sum"` and `"none"`), one row
/// ignored: the loss and, through random weights on each output, the logits' gradient.
#[test]
fn cross_entropy_sum_and_per_row_and_their_backward() {
    let targets = [2u32, 0, 99, 4];
    let row_losses = |x: &[Vec<f64>]| -> Vec<f64> {
        x[0].chunks(5)
            .zip(targets)
            .map(|(r, t)| {
                if t == 99 {
                    0.0
                } else {
                    -softmax_ref(r)[t as usize].ln()
                }
            })
            .collect()
    };
    // The values themselves.
    let init: Vec<f64> = (0..20)
        .map(|i| ((i * 37 % 17) as f64 - 8.0) / 5.0)
        .collect();
    let x: Vec<f64> = to_f32(&init).iter().map(|&v| f64::from(v)).collect();
    let mut g = Graph::new(gpu());
    let logits = g.parameter("logits", &[4, 5], to_f32(&init)).unwrap();
    let labels = g.input_indices("labels", &[4]);
    let per_row = g
        .cross_entropy_with(logits, labels, CrossEntropySpec::per_row().ignore(99))
        .unwrap();
    let total = g
        .cross_entropy_with(logits, labels, CrossEntropySpec::sum().ignore(99))
        .unwrap();
    let mut plan = g.compile(&[per_row, total]).unwrap();
    plan.run(&[Feed::u32(labels, &targets)], &[]).unwrap();
    let want = row_losses(&[x]);
    let got = plan.fetch(per_row).unwrap();
    assert_eq!(got.shape, vec![4]);
    for (g, w) in got.data.iter().zip(&want) {
        assert!(
            (f64::from(*g) - w).abs() < 1e-5,
            "{:?} vs {want:?}",
            got.data
        );
    }
    let sum: f64 = want.iter().sum();
    assert!((f64::from(plan.read(total).unwrap()[0]) - sum).abs() < 1e-5);

    for (name, spec) in [
        ("sum", CrossEntropySpec::sum().ignore(99)),
        ("per row", CrossEntropySpec::per_row().ignore(99)),
    ] {
        check_op_with_indices(
            &format!("cross_entropy {name}"),
            &[&[4, 5]],
            &[(&[4], &targets)],
            |g, p, i| g.cross_entropy_with(p[0], i[0], spec).unwrap(),
            |x| {
                let rows = row_losses(x);
                if spec == CrossEntropySpec::sum().ignore(99) {
                    vec![rows.iter().sum()]
                } else {
                    rows
                }
            },
        );
    }
}

/// Softmax along an axis other than the last (moved there and back by permutes): [2, 3, 4]
/// along axis 1, each of the 2·4 columns of 3 normalised.
#[test]
fn softmax_along_a_middle_axis_and_its_backward() {
    for log in [false, true] {
        check_op(
            &format!("softmax along axis 1, log={log}"),
            &[&[2, 3, 4]],
            |g, p| {
                if log {
                    g.log_softmax(p[0], 1).unwrap()
                } else {
                    g.softmax(p[0], -2).unwrap()
                }
            },
            |x| {
                let mut out = vec![0.0; 24];
                for b in 0..2 {
                    for j in 0..4 {
                        let column: Vec<f64> = (0..3).map(|i| x[0][b * 12 + i * 4 + j]).collect();
                        for (i, v) in softmax_ref(&column).into_iter().enumerate() {
                            out[b * 12 + i * 4 + j] = if log { v.ln() } else { v };
                        }
                    }
                }
                out
            },
        );
    }
}

#[test]
fn softmax_and_cross_entropy_backward() {
    for log in [false, true] {
        check_op(
            &format!("softmax log={log}"),
            &[&[3, 5]],
            |g, p| {
                if log {
                    g.log_softmax(p[0], -1).unwrap()
                } else {
                    g.softmax(p[0], -1).unwrap()
                }
            },
            |x| {
                x[0].chunks(5)
                    .flat_map(|r| {
                        softmax_ref(r)
                            .into_iter()
                            .map(|v| if log { v.ln() } else { v })
                    })
                    .collect()
            },
        );
    }
    // Cross-entropy against fixed targets, one row ignored: the mean over the other three.
    let targets = [2u32, 0, 99, 4];
    let mut g = Graph::new(gpu());
    let init: Vec<f64> = (0..20)
        .map(|i| ((i * 37 % 17) as f64 - 8.0) / 5.0)
        .collect();
    let logits = g.parameter("logits", &[4, 5], to_f32(&init)).unwrap();
    let labels = g.input_indices("labels", &[4]);
    let loss = g
        .cross_entropy_with(logits, labels, CrossEntropySpec::mean().ignore(99))
        .unwrap();
    let grads = g.backward(loss).unwrap();
    let dlogits = grads.of(logits).unwrap();
    let mut plan = g.compile(&[loss, dlogits]).unwrap();
    plan.run(&[Feed::u32(labels, &targets)], &[]).unwrap();
    let x: Vec<f64> = to_f32(&init).iter().map(|&v| f64::from(v)).collect();
    let ce = |x: &[f64]| {
        let rows: Vec<f64> = x
            .chunks(5)
            .zip(targets)
            .filter(|(_, t)| *t != 99)
            .map(|(r, t)| -softmax_ref(r)[t as usize].ln())
            .collect();
        rows.iter().sum::<f64>() / rows.len() as f64
    };
    let loss_value = plan.read(loss).unwrap()[0];
    assert!(
        (f64::from(loss_value) - ce(&x)).abs() < 1e-5,
        "{loss_value} vs {}",
        ce(&x)
    );
    let numeric = numeric_gradient(&x, 1e-4, ce);
    assert_gradient(
        "cross_entropy",
        &plan.read(dlogits).unwrap(),
        &numeric,
        1e-4,
        1e-5,
    );
    // A target out of range is refused before it reaches the GPU.
    let err = plan
        .run(&[Feed::u32(labels, &[0, 5, 1, 1])], &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("index 5 at position 1")
            && err.contains("expected 0..5 or the ignore value 99"),
        "{err}"
    );
}

#[test]
fn shape_errors_name_the_op_and_the_shapes() {
    let mut g = Graph::new(gpu());
    let a = g.input("a", &[2, 3]);
    let b = g.input("b", &[4, 5]);
    let err = g.matmul(a, b).unwrap_err().to_string();
    assert!(
        err.contains("matmul") && err.contains("[2, 3]") && err.contains("[4, 5]"),
        "{err}"
    );
    let err = g.add(a, b).unwrap_err().to_string();
    assert!(err.contains("[2, 3]") && err.contains("[4, 5]"), "{err}");
    let err = g.reshape(a, &[5]).unwrap_err().to_string();
    assert!(err.contains("reshape") && err.contains("[5]"), "{err}");
    let labels = g.input_indices("labels", &[2]);
    assert!(g.tanh(labels).is_err());
    // A derivative op has no gradient of its own (no second derivatives): asking says so.
    let w = g.parameter("w", &[2, 3], vec![0.5; 6]).unwrap();
    let d = g.zip(w, w, Binary::TanhGrad).unwrap();
    let loss = g.sum_all(d).unwrap();
    let err = g.backward(loss).unwrap_err().to_string();
    assert!(
        err.contains("second derivatives") && err.contains("no gradient"),
        "{err}"
    );
    // An input has no gradient.
    let x = g.input("x", &[3]);
    let y = g.mul(x, x).unwrap();
    let s = g.sum(y, 0, false).unwrap();
    assert!(g.backward(s).is_err());
}

/// A tanh MLP from 2 features to 2 classes over a batch of `batch`, with `hidden` layers
/// of `width`: (x, labels, loss, (parameter, gradient) pairs, logits).
fn mlp(
    g: &mut Graph,
    seed: u64,
    batch: usize,
    hidden: usize,
    width: usize,
) -> (Var, Var, Var, Vec<(Var, Var)>, Var) {
    let mut rng = Rng::new(seed);
    let x = g.input("x", &[batch, 2]);
    let labels = g.input_indices("labels", &[batch]);
    let mut h = x;
    let mut fan_in = 2;
    for layer in 0..=hidden {
        let fan_out = if layer == hidden { 2 } else { width };
        let bound = (6.0 / (fan_in + fan_out) as f32).sqrt();
        let w = g
            .parameter(
                &format!("w{layer}"),
                &[fan_in, fan_out],
                rng.vec(fan_in * fan_out, -bound, bound),
            )
            .unwrap();
        let b = g
            .parameter(&format!("b{layer}"), &[fan_out], vec![0.0; fan_out])
            .unwrap();
        let z = g.gemm(h, w, GemmSpec::new().bias(b)).unwrap();
        h = if layer == hidden {
            z
        } else {
            g.tanh(z).unwrap()
        };
        fan_in = fan_out;
    }
    let loss = g.cross_entropy(h, labels).unwrap();
    let grads = g.backward(loss).unwrap();
    (x, labels, loss, grads.parameters(), h)
}

const XOR_X: [f32; 8] = [0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0];
const XOR_Y: [u32; 4] = [0, 1, 1, 0];

#[test]
fn an_mlp_learns_xor_to_100_percent_with_plain_sgd() {
    let mut g = Graph::new(gpu());
    let (x, labels, loss, params, logits) = mlp(&mut g, 3, 4, 1, 8);
    let outputs: Vec<Var> = [loss, logits]
        .into_iter()
        .chain(params.iter().map(|&(_, grad)| grad))
        .collect();
    let mut plan = g.compile(&outputs).unwrap();
    let feeds = [Feed::f32(x, &XOR_X), Feed::u32(labels, &XOR_Y)];
    // θ ← θ − α∇J on the host, to test the graph alone (the GPU optimizers are tested apart).
    let mut values: Vec<Vec<f32>> = params.iter().map(|&(p, _)| plan.read(p).unwrap()).collect();
    let mut first = None;
    for _ in 0..300 {
        plan.run(&feeds, &[]).unwrap();
        first.get_or_insert(plan.read(loss).unwrap()[0]);
        for (i, &(p, grad)) in params.iter().enumerate() {
            let g = plan.read(grad).unwrap();
            for (v, d) in values[i].iter_mut().zip(g) {
                *v -= 0.5 * d;
            }
            gpu().write(plan.tensor(p).unwrap().buffer(), &values[i]);
        }
    }
    plan.run(&feeds, &[]).unwrap();
    let last = plan.read(loss).unwrap()[0];
    assert!(last < 0.05, "loss went from {first:?} to {last}");
    let predictions: Vec<u32> = plan
        .read(logits)
        .unwrap()
        .chunks(2)
        .map(|row| u32::from(row[1] > row[0]))
        .collect();
    assert_eq!(predictions, XOR_Y, "all four XOR cases right");
}

#[test]
fn the_same_seed_gives_the_same_loss_bits() {
    let run = || {
        let mut g = Graph::new(gpu());
        let (x, labels, loss, params, _) = mlp(&mut g, 11, 4, 2, 16);
        let outputs: Vec<Var> = std::iter::once(loss)
            .chain(params.iter().map(|&(_, grad)| grad))
            .collect();
        let mut plan = g.compile(&outputs).unwrap();
        plan.run(&[Feed::f32(x, &XOR_X), Feed::u32(labels, &XOR_Y)], &[])
            .unwrap();
        let mut bits: Vec<u32> = plan
            .read(loss)
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect();
        for (_, grad) in params {
            bits.extend(plan.read(grad).unwrap().iter().map(|v| v.to_bits()));
        }
        bits
    };
    assert_eq!(run(), run());
}

#[test]
fn a_deep_mlp_shares_memory_between_dead_intermediates() {
    let mut g = Graph::new(gpu());
    // Activations of 256 × 64 dwarf the gradients of the 64 × 64 weights, which the
    // optimizer needs and so keep buffers of their own.
    let (_, _, loss, params, _) = mlp(&mut g, 5, 256, 12, 64);
    let outputs: Vec<Var> = std::iter::once(loss)
        .chain(params.iter().map(|&(_, grad)| grad))
        .collect();
    let plan = g.compile(&outputs).unwrap();
    let memory = plan.memory();
    println!(
        "peak {} bytes, naive {} bytes",
        memory.peak_bytes, memory.naive_bytes
    );
    assert!(
        memory.peak_bytes * 2 < memory.naive_bytes,
        "peak {} bytes is not well below the naive {} bytes",
        memory.peak_bytes,
        memory.naive_bytes
    );
}

#[test]
fn a_plan_saves_and_loads_its_parameters_by_name() {
    use shadergrad::checkpoint::{load, save_tensors};
    use shadergrad::nn::{Activation, Mlp, Parameters};
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("graph-checkpoint");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("mlp.safetensors");
    let build = |sizes: &[usize], seed: u64| {
        let mut g = Graph::new(gpu());
        let x = g.input("x", &[3, sizes[0]]);
        let mlp = Mlp::new(&Parameters::new(gpu(), seed), sizes, Activation::Tanh).unwrap();
        let y = mlp.forward(&mut g, x).unwrap();
        g.compile(&[y]).unwrap()
    };
    let trained = build(&[4, 6, 3], 1);
    save_tensors(
        &path,
        &trained.parameters(),
        &serde_json::json!({"sizes": [4, 6, 3]}),
    )
    .unwrap();
    let checkpoint = load(&path).unwrap();

    let mut fresh = build(&[4, 6, 3], 2);
    assert_ne!(
        fresh.parameters()[0].1.to_vec().unwrap(),
        trained.parameters()[0].1.to_vec().unwrap()
    );
    fresh.load_parameters(&checkpoint).unwrap();
    for ((name, a), (_, b)) in fresh.parameters().iter().zip(trained.parameters()) {
        assert_eq!(a.to_vec().unwrap(), b.to_vec().unwrap(), "{name}");
    }
    // Optimizer state saved beside the parameters is left to the optimizer.
    let mut tensors = trained.parameters();
    let moment = trained.parameters()[0].1.clone();
    tensors.push(("optimizer.0.exp_avg", &moment));
    save_tensors(&path, &tensors, &serde_json::json!({})).unwrap();
    fresh.load_parameters(&load(&path).unwrap()).unwrap();
    let mut other = build(&[4, 7, 3], 2);
    let err = other.load_parameters(&checkpoint).unwrap_err().to_string();
    assert!(
        err.contains("layers.0.weight") && err.contains("[7, 4]"),
        "{err}"
    );
}

#[test]
fn layer_norm_backward() {
    let (rows, d) = (3, 7);
    check_op(
        "layer_norm",
        &[&[rows, d], &[d], &[d]],
        |g, p| g.layer_norm(p[0], p[1], p[2], 1e-5).unwrap(),
        |x| {
            let mut out = Vec::new();
            for row in x[0].chunks(d) {
                let mean = row.iter().sum::<f64>() / d as f64;
                let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / d as f64;
                let rstd = 1.0 / (var + 1e-5).sqrt();
                out.extend(
                    row.iter()
                        .enumerate()
                        .map(|(c, v)| (v - mean) * rstd * x[1][c] + x[2][c]),
                );
            }
            out
        },
    );
}

#[test]
fn embedding_backward_regroups_the_ids_of_every_run() {
    let (vocab, dim) = (7, 5);
    let mut rng = Rng::new(17);
    let table_init: Vec<f64> = (0..vocab * dim)
        .map(|_| f64::from(rng.uniform(-1.0, 1.0)))
        .collect();
    let table_init: Vec<f64> = to_f32(&table_init).iter().map(|&v| f64::from(v)).collect();
    let weights: Vec<f64> = (0..2 * 3 * dim)
        .map(|_| f64::from(rng.uniform(-1.0, 1.0)))
        .collect();
    let mut g = Graph::new(gpu());
    let table = g
        .parameter("table", &[vocab, dim], to_f32(&table_init))
        .unwrap();
    let ids = g.input_indices("ids", &[2, 3]);
    let rows = g.embedding(table, ids).unwrap();
    let activated = g.tanh(rows).unwrap();
    let w = g.constant(to_f32(&weights), &[2, 3, dim]).unwrap();
    let weighted = g.mul(activated, w).unwrap();
    let flat = g.reshape(weighted, &[2 * 3 * dim]).unwrap();
    let loss = g.sum(flat, 0, false).unwrap();
    let grads = g.backward(loss).unwrap();
    let dtable = grads.of(table).unwrap();
    assert!(grads.of(ids).is_err(), "integer ids have no gradient");
    let mut plan = g.compile(&[loss, dtable]).unwrap();
    // Two batches of ids, with repeats: the grouping must follow each feed.
    for batch in [[3u32, 0, 3, 6, 3, 1], [2, 2, 2, 5, 0, 2]] {
        plan.run(&[Feed::u32(ids, &batch)], &[]).unwrap();
        let numeric = numeric_gradient(&table_init, 1e-4, |t| {
            let y: Vec<f64> = batch
                .iter()
                .flat_map(|&id| {
                    t[id as usize * dim..(id as usize + 1) * dim]
                        .iter()
                        .map(|v| v.tanh())
                })
                .collect();
            weighted_sum(&weights, &y)
        });
        // Each row's gradient sums at most 4 terms below 1: f32 rounding ≲ 1e-6.
        assert_gradient(
            &format!("embedding {batch:?}"),
            &plan.read(dtable).unwrap(),
            &numeric,
            1e-4,
            1e-5,
        );
    }
    let err = plan
        .run(&[Feed::u32(ids, &[0, 1, 2, 7, 0, 0])], &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("index 7 at position 3") && err.contains("expected 0..7"),
        "{err}"
    );
}

#[test]
fn gather_on_a_middle_axis_regroups_the_ids_of_every_run() {
    let (shape, ids_shape) = ([3, 5, 2], [2, 3]);
    let mut rng = Rng::new(23);
    let data_init: Vec<f64> = (0..30).map(|_| f64::from(rng.uniform(-1.0, 1.0))).collect();
    let data_init: Vec<f64> = to_f32(&data_init).iter().map(|&v| f64::from(v)).collect();
    let out_len = 3 * 6 * 2;
    let weights: Vec<f64> = (0..out_len)
        .map(|_| f64::from(rng.uniform(-1.0, 1.0)))
        .collect();
    let mut g = Graph::new(gpu());
    let data = g.parameter("data", &shape, to_f32(&data_init)).unwrap();
    let ids = g.input_indices("ids", &ids_shape);
    // Axis −2 is the middle axis 1: [3, 5, 2] by ids [2, 3] gives [3, 2, 3, 2].
    let picked = g.gather(data, -2, ids).unwrap();
    assert_eq!(g.shape(picked), [3, 2, 3, 2]);
    let activated = g.tanh(picked).unwrap();
    let w = g.constant(to_f32(&weights), &[3, 2, 3, 2]).unwrap();
    let weighted = g.mul(activated, w).unwrap();
    let flat = g.reshape(weighted, &[out_len]).unwrap();
    let loss = g.sum(flat, 0, false).unwrap();
    let grads = g.backward(loss).unwrap();
    let ddata = grads.of(data).unwrap();
    let mut plan = g.compile(&[loss, ddata]).unwrap();
    // Two sets of ids with repeats (and entries no id picks): the grouping must follow
    // each feed.
    for batch in [[4u32, 0, 4, 2, 4, 1], [3, 3, 0, 3, 3, 0]] {
        plan.run(&[Feed::u32(ids, &batch)], &[]).unwrap();
        let forward = |x: &[f64]| -> Vec<f64> {
            gather_cpu(x, &shape, 1, &batch)
                .iter()
                .map(|v| v.tanh())
                .collect()
        };
        let numeric = numeric_gradient(&data_init, 1e-4, |x| weighted_sum(&weights, &forward(x)));
        // Each entry's gradient sums at most 4 terms below 1: f32 rounding ≲ 1e-6.
        assert_gradient(
            &format!("gather {batch:?}"),
            &plan.read(ddata).unwrap(),
            &numeric,
            1e-4,
            1e-5,
        );
        let loss_value = f64::from(plan.read(loss).unwrap()[0]);
        let expected = weighted_sum(&weights, &forward(&data_init));
        assert!(
            (loss_value - expected).abs() < 1e-5,
            "{loss_value} vs {expected}"
        );
    }
    let err = plan
        .run(&[Feed::u32(ids, &[0, 1, 2, 5, 0, 0])], &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("index 5 at position 3") && err.contains("expected 0..5"),
        "{err}"
    );
    let err = g.gather(data, 3, ids).unwrap_err().to_string();
    assert!(err.contains("gather"), "{err}");
    let err = g.embedding(data, ids).unwrap_err().to_string();
    assert!(
        err.contains("embedding") && err.contains("[3, 5, 2]"),
        "{err}"
    );
}

#[test]
fn slice_and_concat_backward() {
    check_op(
        "slice",
        &[&[3, 7, 2]],
        |g, p| g.slice(p[0], 1, 2, -1).unwrap(),
        |x| {
            let mut out = Vec::new();
            for i in 0..3 {
                for j in 2..6 {
                    out.extend_from_slice(&x[0][(i * 7 + j) * 2..(i * 7 + j) * 2 + 2]);
                }
            }
            out
        },
    );
    check_op(
        "concat",
        &[&[2, 3, 4], &[2, 1, 4], &[2, 5, 4]],
        |g, p| {
            let t = g.tanh(p[1]).unwrap();
            g.concat(&[p[0], t, p[2]], 1).unwrap()
        },
        |x| {
            let mut out = Vec::new();
            for i in 0..2 {
                out.extend_from_slice(&x[0][i * 12..(i + 1) * 12]);
                out.extend(x[1][i * 4..(i + 1) * 4].iter().map(|v| v.tanh()));
                out.extend_from_slice(&x[2][i * 20..(i + 1) * 20]);
            }
            out
        },
    );
}

/// f32 values widened to f64, exactly.
fn wide(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| f64::from(v)).collect()
}

/// The f64 reference of `Graph::conv1d`: x [N, C, L], weight [O, C, k].
fn conv1d_ref(
    x: &[f64],
    x_shape: [usize; 3],
    weight: &[f64],
    w_shape: [usize; 3],
    bias: Option<&[f64]>,
    options: Conv1d,
) -> Vec<f64> {
    let geometry = ConvGeometry::new("conv1d_ref", &x_shape, &w_shape, options.into()).unwrap();
    conv_cpu(x, weight, bias, &geometry)
}

#[test]
fn conv1d_backward_with_stride_padding_and_bias() {
    // Odd sizes everywhere. Stride 2 with pads 2 and 1 over L = 9: windows share one tap,
    // the first two windows start on padding, and the last pad is never reached.
    let strided = Conv1d {
        stride: 2,
        pad_left: 2,
        pad_right: 1,
    };
    for (options, bias) in [(strided, true), (Conv1d::default(), false)] {
        let (x_shape, w_shape) = ([3, 5, 9], [7, 5, 3]);
        let mut shapes: Vec<&[usize]> = vec![&x_shape, &w_shape];
        if bias {
            shapes.push(&[7]);
        }
        // Every gradient element sums at most 21 terms (dx: O·⌈k/stride⌉, dw and db:
        // N·L_out) of values below 1.5 times loss weights below 1: f32 rounding ≲ 1e-5,
        // within check_op's tolerance.
        check_op(
            &format!("conv1d {options:?} bias={bias}"),
            &shapes,
            |g, p| g.conv1d(p[0], p[1], p.get(2).copied(), options).unwrap(),
            |x| {
                conv1d_ref(
                    &x[0],
                    x_shape,
                    &x[1],
                    w_shape,
                    x.get(2).map(Vec::as_slice),
                    options,
                )
            },
        );
    }
}

#[test]
fn conv1d_forward_matches_the_reference() {
    let options = Conv1d {
        stride: 2,
        pad_left: 1,
        pad_right: 2,
    };
    let mut rng = Rng::new(23);
    let (x_init, w_init, b_init) = (
        rng.vec(2 * 3 * 8, -1.0, 1.0),
        rng.vec(4 * 3 * 3, -1.0, 1.0),
        rng.vec(4, -1.0, 1.0),
    );
    let mut g = Graph::new(gpu());
    let x = g.input("x", &[2, 3, 8]);
    let w = g.parameter("w", &[4, 3, 3], w_init.clone()).unwrap();
    let b = g.parameter("b", &[4], b_init.clone()).unwrap();
    let y = g.conv1d(x, w, Some(b), options).unwrap();
    assert_eq!(g.shape(y), [2, 4, 5]);
    let mut plan = g.compile(&[y]).unwrap();
    plan.run(&[Feed::f32(x, &x_init)], &[]).unwrap();
    let expected = conv1d_ref(
        &wide(&x_init),
        [2, 3, 8],
        &wide(&w_init),
        [4, 3, 3],
        Some(&wide(&b_init)),
        options,
    );
    // Sums of 9 products below 1 and a bias: f32 rounding ≲ 1e-6.
    assert_close(
        "conv1d forward",
        &plan.read(y).unwrap(),
        &to_f32(&expected),
        1e-5,
        1e-5,
    );
}

#[test]
fn max_over_time_backward_and_its_positions() {
    let (n, c, len) = (2, 3, 7);
    let mut rng = Rng::new(29);
    // A shuffled ramp with steps of 0.01: moving one value by h = 1e-4 never changes which
    // is the maximum, so the finite differences see the same piecewise-linear branch.
    let mut ramp: Vec<f32> = (0..n * c * len).map(|i| i as f32 * 0.01 - 0.2).collect();
    for i in (1..ramp.len()).rev() {
        ramp.swap(i, rng.below(i + 1));
    }
    let init = wide(&ramp);
    let weights = wide(&rng.vec(n * c, -1.0, 1.0));
    let reference = |x: &[f64]| -> (Vec<f64>, Vec<u32>) {
        x.chunks(len)
            .map(|row| {
                let best = (0..len).fold(0, |best, l| if row[l] > row[best] { l } else { best });
                (row[best], best as u32)
            })
            .unzip()
    };

    let mut g = Graph::new(gpu());
    let x = g.parameter("x", &[n, c, len], to_f32(&init)).unwrap();
    let (maxima, positions) = g.max_over_time_with_positions(x).unwrap();
    assert_eq!(g.shape(maxima), [n, c]);
    let w = g.constant(to_f32(&weights), &[n, c]).unwrap();
    let weighted = g.mul(maxima, w).unwrap();
    let flat = g.reshape(weighted, &[n * c]).unwrap();
    let loss = g.sum(flat, 0, false).unwrap();
    let grads = g.backward(loss).unwrap();
    let dx = grads.of(x).unwrap();
    assert!(grads.of(positions).is_err(), "positions have no gradient");
    let mut plan = g.compile(&[loss, dx, positions]).unwrap();
    plan.run(&[], &[]).unwrap();
    let (expected_maxima, expected_positions) = reference(&init);
    assert_eq!(plan.read_indices(positions).unwrap(), expected_positions);
    let numeric = numeric_gradient(&init, 1e-4, |x| weighted_sum(&weights, &reference(x).0));
    // dy copied to one position per row, zeros elsewhere: exact in f32, and the differences
    // of a linear branch are exact up to f64 rounding.
    assert_gradient(
        "max_over_time",
        &plan.read(dx).unwrap(),
        &numeric,
        1e-6,
        1e-7,
    );

    // Compiled for the maxima alone, the positions are still written (into a buffer of
    // their own) though nothing reads them.
    let mut forward = g.compile(&[maxima]).unwrap();
    forward.run(&[], &[]).unwrap();
    assert_eq!(forward.read(maxima).unwrap(), to_f32(&expected_maxima));
}

#[test]
fn conv_and_pooling_shape_errors_name_the_op_and_the_shapes() {
    let mut g = Graph::new(gpu());
    let x = g.input("x", &[2, 4, 9]);
    let w = g.input("w", &[5, 3, 3]);
    let err = g
        .conv1d(x, w, None, Conv1d::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("conv1d") && err.contains("[2, 4, 9]") && err.contains("[5, 3, 3]"),
        "{err}"
    );
    let w = g.input("w4", &[5, 4, 3]);
    let b = g.input("b", &[4]);
    let err = g
        .conv1d(x, w, Some(b), Conv1d::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("conv1d") && err.contains("[4]") && err.contains("[5]"),
        "{err}"
    );
    let flat = g.input("flat", &[2, 9]);
    let err = g.max_over_time(flat).unwrap_err().to_string();
    assert!(
        err.contains("max_over_time") && err.contains("[2, 9]"),
        "{err}"
    );
}

/// The f64 reference of `Graph::conv2d`: x [N, C, H, W], weight [O, C, kh, kw].
fn conv2d_ref(
    x: &[f64],
    x_shape: [usize; 4],
    weight: &[f64],
    w_shape: [usize; 4],
    bias: Option<&[f64]>,
    options: Conv2d,
) -> Vec<f64> {
    let geometry = ConvGeometry::new("conv2d_ref", &x_shape, &w_shape, options).unwrap();
    conv_cpu(x, weight, bias, &geometry)
}

/// Each axis its own stride and asymmetric pads, over odd sizes. H = 7, kh = 3, stride 2,
/// pads 1 (top) and 2 (bottom): 4 rows of windows, each sharing a row with the next, the
/// first starting on padding and the last ending on it. W = 9, kw = 3, stride 3, pads 2
/// (left) and 0: 3 windows side by side, the first starting on padding, and the last two
/// columns never read (their gradient is 0).
const STRIDED_2D: Conv2d = Conv2d {
    stride: [2, 3],
    pads: [1, 2, 2, 0],
};

#[test]
fn conv2d_backward_with_strides_asymmetric_padding_and_bias() {
    for (options, bias) in [(STRIDED_2D, true), (Conv2d::default(), false)] {
        let (x_shape, w_shape) = ([2, 3, 7, 9], [5, 3, 3, 3]);
        let mut shapes: Vec<&[usize]> = vec![&x_shape, &w_shape];
        if bias {
            shapes.push(&[5]);
        }
        // The loss is linear in each parameter, so the central differences are exact up to
        // f64 rounding. Every gradient element sums at most 70 terms (dw and db unstrided:
        // N·OH·OW = 2·5·7; dx: O·kh·kw = 45) of values below 1.5 times loss weights below
        // 1, whose f32 rounding stays near 1e-5, within check_op's tolerance.
        check_op(
            &format!("conv2d {options:?} bias={bias}"),
            &shapes,
            |g, p| g.conv2d(p[0], p[1], p.get(2).copied(), options).unwrap(),
            |x| {
                conv2d_ref(
                    &x[0],
                    x_shape,
                    &x[1],
                    w_shape,
                    x.get(2).map(Vec::as_slice),
                    options,
                )
            },
        );
    }
}

#[test]
fn conv2d_forward_matches_the_reference() {
    let mut rng = Rng::new(31);
    let (x_init, w_init, b_init) = (
        rng.vec(2 * 3 * 7 * 9, -1.0, 1.0),
        rng.vec(5 * 3 * 3 * 3, -1.0, 1.0),
        rng.vec(5, -1.0, 1.0),
    );
    let mut g = Graph::new(gpu());
    let x = g.input("x", &[2, 3, 7, 9]);
    let w = g.parameter("w", &[5, 3, 3, 3], w_init.clone()).unwrap();
    let b = g.parameter("b", &[5], b_init.clone()).unwrap();
    let y = g.conv2d(x, w, Some(b), STRIDED_2D).unwrap();
    assert_eq!(g.shape(y), [2, 5, 4, 3]);
    let mut plan = g.compile(&[y]).unwrap();
    plan.run(&[Feed::f32(x, &x_init)], &[]).unwrap();
    let expected = conv2d_ref(
        &wide(&x_init),
        [2, 3, 7, 9],
        &wide(&w_init),
        [5, 3, 3, 3],
        Some(&wide(&b_init)),
        STRIDED_2D,
    );
    // Sums of 27 products below 1 and a bias: f32 rounding ≲ 1e-6.
    assert_close(
        "conv2d forward",
        &plan.read(y).unwrap(),
        &to_f32(&expected),
        1e-5,
        1e-5,
    );
}

#[test]
fn max_pool1d_backward_sums_the_windows_an_input_wins() {
    // Windows of 3 at stride 2 overlap by one position; pads 1 and 2 over L = 9 give 5
    // windows, the first starting on padding, the last ending on it.
    let options = MaxPool1d {
        kernel: 3,
        stride: 2,
        pad_left: 1,
        pad_right: 2,
    };
    let (n, c, len, out_len) = (2, 3, 9, 5);
    let rows = n * c;
    let mut rng = Rng::new(37);
    // A shuffled ramp with steps of 0.01: moving one value by h = 1e-4 never changes which
    // is a window's maximum, so the finite differences see the same linear branch.
    let mut values: Vec<f32> = (0..rows * len).map(|i| i as f32 * 0.01 - 0.2).collect();
    for i in (1..values.len()).rev() {
        values.swap(i, rng.below(i + 1));
    }
    // In each row, one position shared by two windows (an odd one) rises above the rest of
    // the row: the maximum of both, its gradient the sum of theirs.
    let shared = |row: usize| 1 + 2 * (row % 4);
    for row in 0..rows {
        values[row * len + shared(row)] += 1.0;
    }
    let init = wide(&values);
    let weights = wide(&rng.vec(rows * out_len, -1.0, 1.0));
    let reference = |x: &[f64]| max_pool1d_cpu(x, rows, len, &options).unwrap();
    let (expected_maxima, expected_positions) = reference(&init);
    for (row, positions) in expected_positions.chunks(out_len).enumerate() {
        let wins = positions.iter().filter(|&&p| p as usize == shared(row));
        assert_eq!(
            wins.count(),
            2,
            "row {row} must have a maximum of two windows"
        );
    }

    let mut g = Graph::new(gpu());
    let x = g.parameter("x", &[n, c, len], values).unwrap();
    let (maxima, positions) = g.max_pool1d_with_positions(x, options).unwrap();
    assert_eq!(g.shape(maxima), [n, c, out_len]);
    let w = g.constant(to_f32(&weights), &[n, c, out_len]).unwrap();
    let weighted = g.mul(maxima, w).unwrap();
    let flat = g.reshape(weighted, &[rows * out_len]).unwrap();
    let loss = g.sum(flat, 0, false).unwrap();
    let grads = g.backward(loss).unwrap();
    let dx = grads.of(x).unwrap();
    assert!(grads.of(positions).is_err(), "positions have no gradient");
    let mut plan = g.compile(&[loss, dx, maxima, positions]).unwrap();
    plan.run(&[], &[]).unwrap();
    assert_eq!(plan.read_indices(positions).unwrap(), expected_positions);
    assert_eq!(plan.read(maxima).unwrap(), to_f32(&expected_maxima));
    let numeric = numeric_gradient(&init, 1e-4, |x| weighted_sum(&weights, &reference(x).0));
    // dx sums at most two loss weights per position, exact to within one f32 rounding of
    // values below 2; the differences of a linear branch are exact up to f64 rounding.
    assert_gradient("max_pool1d", &plan.read(dx).unwrap(), &numeric, 1e-6, 1e-6);
}

#[test]
fn conv2d_and_max_pool1d_shape_errors_name_the_op_and_the_shapes() {
    let mut g = Graph::new(gpu());
    let sequence = g.input("sequence", &[2, 4, 9]);
    let w = g.input("w", &[5, 4, 3, 3]);
    let err = g
        .conv2d(sequence, w, None, Conv2d::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("conv2d") && err.contains("[2, 4, 9]") && err.contains("[5, 4, 3, 3]"),
        "{err}"
    );
    let image = g.input("image", &[2, 3, 6, 6]);
    let err = g
        .conv2d(image, w, None, Conv2d::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("conv2d") && err.contains("[2, 3, 6, 6]") && err.contains("[5, 4, 3, 3]"),
        "{err}"
    );
    let err = g
        .max_pool1d(image, MaxPool1d::new(2))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("max_pool1d") && err.contains("[2, 3, 6, 6]"),
        "{err}"
    );
    let err = g
        .max_pool1d(sequence, MaxPool1d::new(10))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("max_pool1d") && err.contains("10") && err.contains("9 positions"),
        "{err}"
    );
}

#[test]
fn a_text_cnn_compiles_and_its_loss_falls_with_plain_sgd() {
    // embedding → [N, C, L] → conv1d → relu → max over time → linear → cross-entropy, on
    // sequences labelled by whether token 1 occurs in them.
    let (vocab, dim, len, batch, filters, classes) = (6, 4, 7, 8, 5, 2);
    let mut rng = Rng::new(31);
    let mut ids = Vec::with_capacity(batch * len);
    let mut labels = Vec::with_capacity(batch);
    for row in 0..batch {
        let mut sequence: Vec<u32> = (0..len).map(|_| 2 + rng.below(vocab - 2) as u32).collect();
        if row % 2 == 1 {
            sequence[rng.below(len)] = 1;
        }
        labels.push((row % 2) as u32);
        ids.extend(sequence);
    }
    let mut g = Graph::new(gpu());
    let table = g
        .parameter("table", &[vocab, dim], rng.vec(vocab * dim, -0.5, 0.5))
        .unwrap();
    let conv_w = g
        .parameter(
            "conv.weight",
            &[filters, dim, 3],
            rng.vec(filters * dim * 3, -0.5, 0.5),
        )
        .unwrap();
    let conv_b = g
        .parameter("conv.bias", &[filters], vec![0.0; filters])
        .unwrap();
    let out_w = g
        .parameter(
            "out.weight",
            &[filters, classes],
            rng.vec(filters * classes, -0.5, 0.5),
        )
        .unwrap();
    let out_b = g
        .parameter("out.bias", &[classes], vec![0.0; classes])
        .unwrap();
    let tokens = g.input_indices("ids", &[batch, len]);
    let targets = g.input_indices("labels", &[batch]);
    let embedded = g.embedding(table, tokens).unwrap();
    let channels_first = g.permute(embedded, &[0, 2, 1]).unwrap();
    let same = Conv1d {
        stride: 1,
        pad_left: 1,
        pad_right: 1,
    };
    let windows = g
        .conv1d(channels_first, conv_w, Some(conv_b), same)
        .unwrap();
    let activated = g.relu(windows).unwrap();
    let pooled = g.max_over_time(activated).unwrap();
    let logits = g.gemm(pooled, out_w, GemmSpec::new().bias(out_b)).unwrap();
    let loss = g.cross_entropy(logits, targets).unwrap();
    let params = g.backward(loss).unwrap().parameters();
    assert_eq!(params.len(), 5, "every parameter gets a gradient");
    let outputs: Vec<Var> = std::iter::once(loss)
        .chain(params.iter().map(|&(_, grad)| grad))
        .collect();
    let mut plan = g.compile(&outputs).unwrap();
    let feeds = [Feed::u32(tokens, &ids), Feed::u32(targets, &labels)];
    let mut values: Vec<Vec<f32>> = params.iter().map(|&(p, _)| plan.read(p).unwrap()).collect();
    let mut losses = Vec::new();
    for _ in 0..20 {
        plan.run(&feeds, &[]).unwrap();
        losses.push(plan.read(loss).unwrap()[0]);
        for (i, &(p, grad)) in params.iter().enumerate() {
            for (v, d) in values[i].iter_mut().zip(plan.read(grad).unwrap()) {
                *v -= 0.5 * d;
            }
            gpu().write(plan.tensor(p).unwrap().buffer(), &values[i]);
        }
    }
    println!("losses {losses:?}");
    assert!(
        losses.iter().all(|l| l.is_finite()) && losses[19] < 0.5 * losses[0],
        "the loss did not fall by half: {losses:?}"
    );
}

/// The shape of a batched operand: `batch` + `matrix`, or the matrix alone when shared.
fn batched_shape(batch: &[usize], matrix: [usize; 2], shared: bool) -> Vec<usize> {
    if shared {
        matrix.to_vec()
    } else {
        batch.iter().chain(&matrix).copied().collect()
    }
}

#[test]
fn batched_matmul_backward_with_shared_operands() {
    let (m, k, n) = (3, 5, 4);
    let batch = [2usize, 3];
    let batches: usize = batch.iter().product();
    // Both batched; B shared (its gradient one product over the stacked rows of A, or a sum
    // over the batches when A is transposed); A shared (a sum over the batches).
    for (a_shared, b_shared) in [(false, false), (false, true), (true, false)] {
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let a_shape = batched_shape(&batch, if ta { [k, m] } else { [m, k] }, a_shared);
            let b_shape = batched_shape(&batch, if tb { [n, k] } else { [k, n] }, b_shared);
            // Each gradient of a shared operand sums 6 batches' products of ≤ 5 terms below
            // 1.5²: f32 rounding ≲ 1e-5, within check_op's tolerance.
            check_op(
                &format!("batched matmul a_shared={a_shared} b_shared={b_shared} ta={ta} tb={tb}"),
                &[&a_shape, &b_shape, &[n]],
                |g, p| {
                    g.gemm(
                        p[0],
                        p[1],
                        GemmSpec {
                            transpose_a: ta,
                            transpose_b: tb,
                            bias: Some(p[2]),
                        },
                    )
                    .unwrap()
                },
                |x| {
                    // Batch i's matrix of an operand: the shared one, or its i-th slice.
                    let slice = |x: &[f64], shared: bool, i: usize| {
                        if shared {
                            x.to_vec()
                        } else {
                            let size = x.len() / batches;
                            x[i * size..(i + 1) * size].to_vec()
                        }
                    };
                    (0..batches)
                        .flat_map(|i| {
                            let a = slice(&x[0], a_shared, i);
                            let b = slice(&x[1], b_shared, i);
                            matmul_ref(&a, &b, m, k, n, ta, tb)
                        })
                        .enumerate()
                        .map(|(i, v)| v + x[2][i % n])
                        .collect()
                },
            );
        }
    }
    let mut g = Graph::new(gpu());
    let a = g.input("a", &[2, 3, 4, 5]);
    let b = g.input("b", &[3, 5, 6]);
    let err = g.matmul(a, b).unwrap_err().to_string();
    assert!(
        err.contains("matmul") && err.contains("[2, 3, 4, 5]") && err.contains("batch axes"),
        "{err}"
    );
}

/// One attention case for [`attention_backward`]: sizes, settings, key lengths and a mask
/// (its kind, shape and values).
struct AttentionCase {
    dims: AttentionDims,
    settings: AttentionSettings,
    key_lengths: Option<Vec<u32>>,
    mask: Option<(MaskKind, Vec<usize>, Vec<f32>)>,
}

impl AttentionCase {
    /// (B, H, Hkv, Lq, Lk, D, Dv), no masks, the default scale.
    fn new(
        (batch, heads, kv_heads): (usize, usize, usize),
        (q_len, k_len): (usize, usize),
        (head_dim, value_dim): (usize, usize),
    ) -> AttentionCase {
        AttentionCase {
            dims: AttentionDims {
                batch,
                heads,
                kv_heads,
                q_len,
                k_len,
                head_dim,
                value_dim,
            },
            settings: AttentionSettings::default(),
            key_lengths: None,
            mask: None,
        }
    }

    fn label(&self) -> String {
        format!(
            "attention {:?} {:?} key lengths {:?} mask {:?}",
            self.dims, self.settings, self.key_lengths, self.mask
        )
    }
}

/// Checks dQ, dK and dV of `g.attention` against finite differences of the f64 reference
/// of the attention kernels, through the unfused kernels and through the fused ones.
fn attention_backward(case: &AttentionCase) {
    for variant in [AttentionVariant::Unfused, AttentionVariant::Fused] {
        attention_backward_through(case, variant);
    }
}

fn attention_backward_through(case: &AttentionCase, variant: AttentionVariant) {
    let d = &case.dims;
    let q = [d.batch, d.heads, d.q_len, d.head_dim];
    let k = [d.batch, d.kv_heads, d.k_len, d.head_dim];
    let v = [d.batch, d.kv_heads, d.k_len, d.value_dim];
    let lengths = case.key_lengths.as_deref();
    let batch = [d.batch];
    let indices: Vec<(&[usize], &[u32])> = lengths.map(|l| (&batch[..], l)).into_iter().collect();
    let mask_values: Option<Vec<f64>> = case
        .mask
        .as_ref()
        .map(|(_, _, values)| values.iter().map(|&v| f64::from(v)).collect());
    let cpu_mask =
        case.mask
            .as_ref()
            .zip(mask_values.as_deref())
            .map(|((kind, shape, _), values)| CpuMask {
                kind: *kind,
                values,
                shape,
            });
    // The chain is three f32 products of ≤ 4 terms around the softmax backward (and the
    // softcap's tanh), each off by a few ε of magnitudes ≲ 10: ≲ 1e-5, within check_op's
    // tolerance.
    check_op_with_indices(
        &format!("{variant:?} {}", case.label()),
        &[&q, &k, &v],
        &indices,
        |g, p, ids| {
            let mut spec = AttentionSpec {
                settings: case.settings,
                key_lengths: ids.first().copied(),
                ..AttentionSpec::default()
            }
            .variant(variant);
            if let Some((kind, shape, values)) = &case.mask {
                let mask = g.constant(values.clone(), shape).unwrap();
                spec = spec.mask(*kind, mask);
            }
            g.attention_with(p[0], p[1], p[2], &spec).unwrap()
        },
        |x| {
            let inputs = AttentionCpuInputs {
                dims: case.dims,
                q: &x[0],
                k: &x[1],
                v: &x[2],
                key_lengths: lengths,
                mask: cpu_mask,
            };
            attention_cpu(&inputs, &case.settings).output
        },
    );
}

#[test]
fn attention_backward_with_each_mask_and_grouped_heads() {
    // No masks, Lq ≠ Lk, D not a multiple of 4.
    attention_backward(&AttentionCase::new((2, 2, 2), (3, 4), (3, 2)));
    // Causal over Lq = Lk, two query heads sharing one key/value head, a given scale.
    let mut causal = AttentionCase::new((1, 2, 1), (4, 4), (3, 3));
    causal.settings.causal = true;
    causal.settings.scale = Some(0.7);
    attention_backward(&causal);
    // Key lengths: some keys padded, a batch with none (its rows are 0, so are their
    // gradients), one longer than Lk (all kept); grouped heads again.
    let mut padded = AttentionCase::new((3, 2, 1), (2, 4), (2, 3));
    padded.key_lengths = Some(vec![3, 0, 9]);
    attention_backward(&padded);
}

#[test]
fn attention_backward_with_a_mask_tensor_a_window_and_a_softcap() {
    // An additive mask [H, Lq, Lk] broadcast over the batches: finite biases, and −∞ at
    // two keys, one of them masking the whole first row of head 1.
    let mut additive = AttentionCase::new((2, 2, 1), (3, 4), (3, 2));
    let mut rng = Rng::new(31);
    let mut bias: Vec<f32> = (0..2 * 3 * 4).map(|_| rng.uniform(-2.0, 2.0)).collect();
    bias[1] = f32::NEG_INFINITY;
    bias[12..16].fill(f32::NEG_INFINITY);
    additive.mask = Some((MaskKind::Additive, vec![2, 3, 4], bias));
    attention_backward(&additive);
    // A boolean mask [B, 1, 1, Lk] (key padding as a tensor) with causal masking.
    let mut boolean = AttentionCase::new((2, 2, 2), (4, 4), (2, 3));
    boolean.settings.causal = true;
    let keep = [1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0];
    boolean.mask = Some((MaskKind::Boolean, vec![2, 1, 1, 4], keep.to_vec()));
    attention_backward(&boolean);
    // A softcap below the scores' reach (so tanh bends them), alone and with a sliding
    // window of one key back and none forward.
    let mut capped = AttentionCase::new((2, 2, 1), (3, 5), (4, 2));
    capped.settings.softcap = Some(0.8);
    capped.settings.scale = Some(0.9);
    attention_backward(&capped);
    capped.settings.window_left = Some(1);
    capped.settings.window_right = Some(0);
    attention_backward(&capped);
}

#[test]
fn attention_mask_errors_name_the_op_and_the_shapes() {
    let mut g = Graph::new(gpu());
    let q = g.input("q", &[2, 2, 3, 4]);
    let k = g.input("k", &[2, 1, 5, 4]);
    let v = g.input("v", &[2, 1, 5, 4]);
    let mask = g.input("mask", &[3, 4]);
    let spec = AttentionSpec::default().mask(MaskKind::Additive, mask);
    let err = g.attention_with(q, k, v, &spec).unwrap_err().to_string();
    assert!(
        err.contains("attention") && err.contains("[3, 4]") && err.contains("[2, 2, 3, 5]"),
        "{err}"
    );
    let learned = g.parameter("bias", &[3, 5], vec![0.0; 15]).unwrap();
    let spec = AttentionSpec::default().mask(MaskKind::Additive, learned);
    let err = g.attention_with(q, k, v, &spec).unwrap_err().to_string();
    assert!(err.contains("no gradient"), "{err}");
    let spec = AttentionSpec::default().softcap(-1.0);
    let err = g.attention_with(q, k, v, &spec).unwrap_err().to_string();
    assert!(err.contains("softcap"), "{err}");
}

/// Training through the fused kernels gives the unfused kernels' loss and gradients, with
/// every mask and grouped heads; the default rule picks the unfused kernels on a CPU
/// adapter.
#[test]
fn attention_training_through_the_fused_kernels_matches_the_unfused() {
    let (batch, heads, kv_heads, q_len, k_len, head_dim) = (2, 4, 2, 33, 37, 17);
    let run = |variant: Option<AttentionVariant>| {
        let mut rng = Rng::new(78);
        let mut g = Graph::new(gpu());
        let q_shape = [batch, heads, q_len, head_dim];
        let kv_shape = [batch, kv_heads, k_len, head_dim];
        let q = g.parameter("q", &q_shape, rng.vec(q_shape.iter().product(), -1.0, 1.0));
        let k = g.parameter(
            "k",
            &kv_shape,
            rng.vec(kv_shape.iter().product(), -1.0, 1.0),
        );
        let v = g.parameter(
            "v",
            &kv_shape,
            rng.vec(kv_shape.iter().product(), -1.0, 1.0),
        );
        let (q, k, v) = (q.unwrap(), k.unwrap(), v.unwrap());
        let lengths = g.input_indices("lengths", &[batch]);
        let bias_values = rng.vec(q_len * k_len, -1.0, 1.0);
        let bias = g.constant(bias_values, &[q_len, k_len]).unwrap();
        let mut spec = AttentionSpec::default()
            .causal(true)
            .window(Some(20), None)
            .softcap(2.0)
            .key_lengths(lengths)
            .mask(MaskKind::Additive, bias);
        spec.variant = variant;
        let out = g.attention_with(q, k, v, &spec).unwrap();
        let weights = g.constant(
            rng.vec(batch * heads * q_len * head_dim, -1.0, 1.0),
            &q_shape,
        );
        let weighted = g.mul(out, weights.unwrap()).unwrap();
        let flat = g
            .reshape(weighted, &[batch * heads * q_len * head_dim])
            .unwrap();
        let loss = g.sum(flat, 0, false).unwrap();
        let grads = g.backward(loss).unwrap();
        let (dq, dk, dv) = (
            grads.of(q).unwrap(),
            grads.of(k).unwrap(),
            grads.of(v).unwrap(),
        );
        let mut plan = g.compile(&[loss, dq, dk, dv]).unwrap();
        plan.run(&[Feed::u32(lengths, &[37, 20])], &[]).unwrap();
        [loss, dq, dk, dv].map(|var| plan.read(var).unwrap())
    };
    let unfused = run(Some(AttentionVariant::Unfused));
    let fused = run(Some(AttentionVariant::Fused));
    // Both recompute the same f32 sums in other orders (P from the log-sum-exp, dS without
    // the rowsum pass): sums of ≤ 37·2 terms of magnitude ≤ 2, a few hundred ε apart.
    for (name, (a, b)) in ["loss", "dQ", "dK", "dV"]
        .iter()
        .zip(fused.iter().zip(&unfused))
    {
        assert_close(
            &format!("{name} through the fused kernels"),
            a,
            b,
            1e-4,
            1e-4,
        );
    }
    assert_eq!(
        run(None),
        unfused,
        "the rule picks the unfused kernels on a CPU adapter"
    );
}

/// With Lq = 0 the output is empty but dK and dV are not: they must be written (zeros).
#[test]
fn attention_without_queries_gives_zero_key_and_value_gradients() {
    for variant in [AttentionVariant::Unfused, AttentionVariant::Fused] {
        attention_without_queries(variant);
    }
}

fn attention_without_queries(variant: AttentionVariant) {
    let mut g = Graph::new(gpu());
    let q = g.input("q", &[1, 2, 0, 3]);
    let k = g.parameter("k", &[1, 1, 4, 3], vec![0.5; 12]).unwrap();
    let v = g.parameter("v", &[1, 1, 4, 2], vec![0.5; 8]).unwrap();
    let spec = AttentionSpec::default().causal(true).variant(variant);
    let out = g.attention_with(q, k, v, &spec).unwrap();
    let flat = g.reshape(out, &[0]).unwrap();
    let loss = g.sum(flat, 0, false).unwrap();
    let grads = g.backward(loss).unwrap();
    let (dk, dv) = (grads.of(k).unwrap(), grads.of(v).unwrap());
    let mut plan = g.compile(&[loss, dk, dv]).unwrap();
    // Fresh buffers read 0: dirty the gradients' so that only a write of zeros passes.
    gpu().write(plan.tensor(dk).unwrap().buffer(), &[9.0f32; 12]);
    gpu().write(plan.tensor(dv).unwrap().buffer(), &[9.0f32; 8]);
    plan.run(&[], &[]).unwrap();
    assert_eq!(plan.read(loss).unwrap(), [0.0]);
    assert_eq!(plan.read(dk).unwrap(), [0.0; 12]);
    assert_eq!(plan.read(dv).unwrap(), [0.0; 8]);
}

/// Writes `value` over every element of a plan's persistent value, so that only a kernel
/// that writes it passes a check of zeros (fresh buffers read 0).
fn dirty(plan: &shadergrad::graph::Plan, var: Var, value: f32) {
    let tensor = plan.tensor(var).unwrap();
    tensor
        .gpu()
        .write(tensor.buffer(), &vec![value; tensor.numel()]);
}

/// A device of its own whose pool holds small storage buffers filled with `dirt` (64 u32),
/// which the plan's small buffers then start from: a value that is read before anything
/// writes it reads the dirt (fresh buffers read 0, which would hide it).
fn device_with_dirty_pool(dirt: &[u32]) -> Gpu {
    let gpu = Gpu::default_adapter().unwrap();
    let dirty: Vec<Indices> = (0..64)
        .map(|_| Indices::from_slice(&gpu, dirt, &[dirt.len()]).unwrap())
        .collect();
    gpu.wait().unwrap();
    drop(dirty);
    gpu
}

/// Layer norm over zero rows: dx is empty, but dgain and dbias are not: they are zeros.
#[test]
fn layer_norm_over_no_rows_gives_zero_gain_and_bias_gradients() {
    let d = 5;
    let mut g = Graph::new(gpu());
    let x = g.input("x", &[0, d]);
    let gain = g.parameter("gain", &[d], vec![1.0; d]).unwrap();
    let bias = g.parameter("bias", &[d], vec![0.0; d]).unwrap();
    let y = g.layer_norm(x, gain, bias, 1e-5).unwrap();
    let flat = g.reshape(y, &[0]).unwrap();
    let loss = g.sum(flat, 0, false).unwrap();
    let grads = g.backward(loss).unwrap();
    let (dgain, dbias) = (grads.of(gain).unwrap(), grads.of(bias).unwrap());
    let mut plan = g.compile(&[loss, dgain, dbias]).unwrap();
    for _ in 0..2 {
        dirty(&plan, dgain, 9.0);
        dirty(&plan, dbias, 9.0);
        plan.run(&[Feed::f32(x, &[])], &[]).unwrap();
        assert_eq!(plan.read(loss).unwrap(), [0.0]);
        assert_eq!(plan.read(dgain).unwrap(), vec![0.0; d]);
        assert_eq!(plan.read(dbias).unwrap(), vec![0.0; d]);
    }
}

/// An embedding of no ids: the table's gradient is zeros, whether or not the empty ids are
/// fed.
#[test]
fn embedding_of_no_ids_gives_a_zero_table_gradient() {
    let (vocab, dim) = (4, 3);
    // An unwritten grouping would read position 6 under id 0, and dy's entries 18..21 as 9.
    let mut dirt = vec![0u32; 64];
    dirt[1..5].fill(1);
    dirt[5] = 6;
    dirt[18..21].fill(9.0f32.to_bits());
    let gpu = device_with_dirty_pool(&dirt);
    let mut g = Graph::new(&gpu);
    let table = g
        .parameter("table", &[vocab, dim], vec![0.5; vocab * dim])
        .unwrap();
    let ids = g.input_indices("ids", &[2, 0]);
    let rows = g.embedding(table, ids).unwrap();
    let flat = g.reshape(rows, &[0]).unwrap();
    let loss = g.sum(flat, 0, false).unwrap();
    let grads = g.backward(loss).unwrap();
    let dtable = grads.of(table).unwrap();
    let mut plan = g.compile(&[loss, dtable]).unwrap();
    for feeds in [&[][..], &[Feed::u32(ids, &[])]] {
        plan.run(feeds, &[]).unwrap();
        assert_eq!(plan.read(loss).unwrap(), [0.0]);
        assert_eq!(plan.read(dtable).unwrap(), vec![0.0; vocab * dim]);
    }
}

/// A cross-entropy over no rows: loss 0 (no NaN from the mean of nothing), whether or not
/// the empty inputs are fed.
#[test]
fn cross_entropy_over_no_rows_is_zero() {
    // NaN wherever the loss's kernels would read a value nobody wrote.
    let gpu = device_with_dirty_pool(&[f32::NAN.to_bits(); 64]);
    let mut g = Graph::new(&gpu);
    let x = g.input("x", &[0, 3]);
    let w = g.parameter("w", &[3, 4], vec![0.5; 12]).unwrap();
    let targets = g.input_indices("targets", &[0]);
    let logits = g.matmul(x, w).unwrap();
    let loss = g.cross_entropy(logits, targets).unwrap();
    let grads = g.backward(loss).unwrap();
    let dw = grads.of(w).unwrap();
    let mut plan = g.compile(&[loss, dw]).unwrap();
    for feeds in [&[][..], &[Feed::f32(x, &[]), Feed::u32(targets, &[])]] {
        dirty(&plan, loss, f32::NAN);
        dirty(&plan, dw, 9.0);
        plan.run(feeds, &[]).unwrap();
        assert_eq!(plan.read(loss).unwrap(), [0.0]);
        assert_eq!(plan.read(dw).unwrap(), [0.0; 12]);
    }
}

#[test]
fn plans_of_two_graphs_over_one_parameter_train_one_set_of_weights() {
    use shadergrad::graph::Parameter;
    // Two graphs of different batch sizes over one weight: y = x·w, loss = Σ y.
    let gpu = gpu();
    let weight = Parameter::new(gpu, "w", &[2, 2], &[1.0, 2.0, 3.0, 4.0]).unwrap();
    let mut plans = Vec::new();
    for rows in [1, 3] {
        let mut g = Graph::new(gpu);
        let x = g.input("x", &[rows, 2]);
        let w = g.param(&weight).unwrap();
        let y = g.matmul(x, w).unwrap();
        let y_rows = g.sum(y, 0, false).unwrap();
        let loss = g.sum(y_rows, 0, false).unwrap();
        let dw = g.backward(loss).unwrap().of(w).unwrap();
        let plan = g.compile(&[y, loss, dw]).unwrap();
        plans.push((plan, x, y));
    }
    let (small, x, y) = &mut plans[0];
    small.run(&[Feed::f32(*x, &[1.0, 1.0])], &[]).unwrap();
    assert_close(
        "y of the first plan",
        &small.read(*y).unwrap(),
        &[4.0, 6.0],
        0.0,
        0.0,
    );
    // dL/dw = Σ_rows xᵀ: each entry of row i is Σ x[:, i].
    assert_close(
        "gradient written into the parameter's gradient tensor",
        &weight.gradient().unwrap().to_vec().unwrap(),
        &[1.0, 1.0, 1.0, 1.0],
        0.0,
        0.0,
    );
    // An update of the shared weight is seen by the other plan.
    weight.set(&[0.0, 1.0, 1.0, 0.0]).unwrap();
    let (large, x, y) = &mut plans[1];
    large
        .run(&[Feed::f32(*x, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0])], &[])
        .unwrap();
    assert_close(
        "y of the second plan",
        &large.read(*y).unwrap(),
        &[2.0, 1.0, 4.0, 3.0, 6.0, 5.0],
        0.0,
        0.0,
    );
    assert_close(
        "gradient of the second plan",
        &weight.gradient().unwrap().to_vec().unwrap(),
        &[9.0, 9.0, 12.0, 12.0],
        0.0,
        0.0,
    );
    let err = weight.set(&[0.0; 3]).unwrap_err().to_string();
    assert!(err.contains("\"w\"") && err.contains("[2, 2]"), "{err}");

    // A value other than a parameter may be bound to a tensor of its shape only.
    let mut g = Graph::new(gpu);
    let x = g.input("x", &[3, 2]);
    let other = shadergrad::Tensor::zeros(gpu, &[2, 2]).unwrap();
    let err = g
        .compile_with(&[x], &[(x, &other)])
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("[3, 2]") && err.contains("[2, 2]"), "{err}");
}

#[test]
fn recurrent_backward_for_every_cell_direction_and_padding() {
    use shadergrad::graph::RecurrentSpec;
    use shadergrad::kernels::recurrent::{
        recurrent_forward_cpu, CellKind, RecurrentCpu, RecurrentShape,
    };
    let (steps, batch, hidden) = (3, 3, 2);
    let lengths = [3u32, 0, 2];
    for kind in CellKind::ALL {
        for reverse in [false, true] {
            let lstm = kind == CellKind::Lstm;
            let gated = kind.gates() * hidden;
            let (gx_shape, r_shape, bias_shape) = ([steps, batch, gated], [hidden, gated], [gated]);
            let mut shapes: Vec<&[usize]> = vec![&gx_shape, &r_shape, &bias_shape, &[3, 2]];
            if lstm {
                shapes.push(&[3, 2]);
            }
            let shape = RecurrentShape {
                kind,
                steps,
                batch,
                hidden,
                reverse,
            };
            check_op_with_indices(
                &format!("recurrent {kind:?} reverse {reverse}"),
                &shapes,
                &[(&[batch], &lengths)],
                |g, p, i| {
                    let spec = RecurrentSpec {
                        kind,
                        reverse,
                        lengths: Some(i[0]),
                        c0: p.get(4).copied(),
                    };
                    let out = g.recurrent(p[0], p[1], p[2], p[3], &spec).unwrap();
                    let mut parts = vec![
                        out.sequence,
                        g.reshape(out.last, &[1, batch, hidden]).unwrap(),
                    ];
                    if let Some(cell) = out.last_cell {
                        parts.push(g.reshape(cell, &[1, batch, hidden]).unwrap());
                    }
                    g.concat(&parts, 0).unwrap()
                },
                |v| {
                    let cpu = RecurrentCpu {
                        gx: v[0].clone(),
                        r: v[1].clone(),
                        r_bias: v[2].clone(),
                        h0: v[3].clone(),
                        c0: v.get(4).cloned(),
                        lengths: Some(lengths.to_vec()),
                        peepholes: None,
                    };
                    let out = recurrent_forward_cpu(&cpu, &shape);
                    let slot = |values: &[f64], s: usize| {
                        values[s * batch * hidden..(s + 1) * batch * hidden].to_vec()
                    };
                    let mut y: Vec<f64> = (0..steps)
                        .flat_map(|t| slot(&out.states, shape.output_slot(t)))
                        .collect();
                    y.extend(slot(&out.states, shape.final_slot()));
                    if let Some(cells) = &out.cells {
                        y.extend(slot(cells, shape.final_slot()));
                    }
                    y
                },
            );
        }
    }
}

/// PyTorch's mse_loss with each reduction: values and gradients (of prediction and target)
/// against finite differences of the f64 definition.
#[test]
fn mse_loss_backward_for_every_reduction() {
    use shadergrad::LossReduction;
    let shape: &[usize] = &[3, 5];
    let squares = |x: &[Vec<f64>]| -> Vec<f64> {
        x[0].iter()
            .zip(&x[1])
            .map(|(p, t)| (p - t).powi(2))
            .collect()
    };
    check_op(
        "mse_loss none",
        &[shape, shape],
        |g, p| g.mse_loss(p[0], p[1], LossReduction::None).unwrap(),
        squares,
    );
    check_op(
        "mse_loss sum",
        &[shape, shape],
        |g, p| g.mse_loss(p[0], p[1], LossReduction::Sum).unwrap(),
        |x| vec![squares(x).iter().sum()],
    );
    check_op(
        "mse_loss mean",
        &[shape, shape],
        |g, p| g.mse_loss(p[0], p[1], LossReduction::Mean).unwrap(),
        |x| vec![squares(x).iter().sum::<f64>() / 15.0],
    );
    let mut g = Graph::new(gpu());
    let a = g.input("a", &[3, 5]);
    let b = g.input("b", &[5, 3]);
    let err = g
        .mse_loss(a, b, LossReduction::Mean)
        .unwrap_err()
        .to_string();
    assert!(err.contains("[3, 5]") && err.contains("[5, 3]"), "{err}");
}

/// PyTorch's binary_cross_entropy_with_logits: the stable form's values and gradients (of
/// the logits and the targets) against finite differences of the plain definition
/// −[y·log σ(x) + (1 − y)·log(1 − σ(x))]; and no overflow at logits of ±100.
#[test]
fn binary_cross_entropy_with_logits_backward_and_large_logits() {
    use shadergrad::LossReduction;
    let shape: &[usize] = &[4, 3];
    let losses = |x: &[Vec<f64>]| -> Vec<f64> {
        x[0].iter()
            .zip(&x[1])
            .map(|(&logit, &y)| {
                let p = 1.0 / (1.0 + (-logit).exp());
                -(y * p.ln() + (1.0 - y) * (1.0 - p).ln())
            })
            .collect()
    };
    check_op(
        "bce none",
        &[shape, shape],
        |g, p| {
            g.binary_cross_entropy_with_logits(p[0], p[1], LossReduction::None)
                .unwrap()
        },
        losses,
    );
    check_op(
        "bce mean",
        &[shape, shape],
        |g, p| {
            g.binary_cross_entropy_with_logits(p[0], p[1], LossReduction::Mean)
                .unwrap()
        },
        |x| vec![losses(x).iter().sum::<f64>() / 12.0],
    );
    let mut g = Graph::new(gpu());
    let logits = g.input("logits", &[4]);
    let targets = g.input("targets", &[4]);
    let loss = g
        .binary_cross_entropy_with_logits(logits, targets, LossReduction::None)
        .unwrap();
    let mut plan = g.compile(&[loss]).unwrap();
    plan.run(
        &[
            Feed::f32(logits, &[100.0, -100.0, 100.0, -100.0]),
            Feed::f32(targets, &[1.0, 0.0, 0.0, 1.0]),
        ],
        &[],
    )
    .unwrap();
    let values = plan.read(loss).unwrap();
    assert_close(
        "confident logits",
        &values,
        &[0.0, 0.0, 100.0, 100.0],
        1e-6,
        1e-6,
    );
}

/// `select` against finite differences: a fixed mask broadcast against both branches
/// (the gradient reaches each branch where it was picked, summed where it was broadcast);
/// select(a > b, a, b) = max(a, b), and select(a < b, a, b) = min past four axes; shapes
/// that do not broadcast are refused naming all three.
#[test]
fn select_backward_with_broadcasting() {
    let mask = [1.0, 0.0, -0.0, 2.5, 0.0, -1.0, 1.0, 0.0];
    let out = [2, 3, 4];
    check_op(
        "select",
        &[&[3, 1], &[4]],
        |g, p| {
            let condition = g.constant(mask.to_vec(), &[2, 1, 4]).unwrap();
            g.select(condition, p[0], p[1]).unwrap()
        },
        |x| {
            let c = broadcast_ref(&mask.map(f64::from), &[2, 1, 4], &out);
            let a = broadcast_ref(&x[0], &[3, 1], &out);
            let b = broadcast_ref(&x[1], &[4], &out);
            (0..c.len())
                .map(|i| if c[i] != 0.0 { a[i] } else { b[i] })
                .collect()
        },
    );
    let (a, b): (&[usize], &[usize]) = (&[2, 3], &[3]);
    check_op(
        "select as max",
        &[a, b],
        |g, p| {
            let condition = g.greater(p[0], p[1]).unwrap();
            g.select(condition, p[0], p[1]).unwrap()
        },
        |x| broadcast_reference(&x[0], a, &x[1], b, f64::max),
    );
    let (a5, b5): (&[usize], &[usize]) = (&[2, 3, 2, 2, 3], &[3]);
    check_op(
        "rank-5 select as min",
        &[a5, b5],
        |g, p| {
            let condition = g.less(p[0], p[1]).unwrap();
            g.select(condition, p[0], p[1]).unwrap()
        },
        |x| broadcast_reference(&x[0], a5, &x[1], b5, f64::min),
    );
    let mut g = Graph::new(gpu());
    let c = g.input("c", &[2, 3]);
    let a = g.input("a", &[4]);
    let b = g.input("b", &[]);
    let err = g.select(c, a, b).unwrap_err().to_string();
    assert!(
        err.contains("[2, 3]") && err.contains("[4]") && err.contains("[]"),
        "{err}"
    );
    let labels = g.input_indices("labels", &[2, 3]);
    let err = g.select(labels, c, c).unwrap_err().to_string();
    assert!(err.contains("select"), "{err}");
}

/// Broadcasting past four axes, where the axes coalesce into four: values and gradients
/// against finite differences of numpy's rule; a pattern that needs five axes is refused.
#[test]
fn broadcasting_past_rank_four_coalesces_axes() {
    let (a5, b5): (&[usize], &[usize]) = (&[2, 3, 2, 2, 3], &[3]);
    check_op(
        "rank-5 add",
        &[a5, b5],
        |g, p| g.add(p[0], p[1]).unwrap(),
        |x| broadcast_reference(&x[0], a5, &x[1], b5, |a, b| a + b),
    );
    let (a6, b6): (&[usize], &[usize]) = (&[2, 3, 1, 1, 2, 2], &[1, 1, 2, 3, 1, 1]);
    check_op(
        "rank-6 mul",
        &[a6, b6],
        |g, p| g.mul(p[0], p[1]).unwrap(),
        |x| broadcast_reference(&x[0], a6, &x[1], b6, |a, b| a * b),
    );
    let mut g = Graph::new(gpu());
    let a = g.input("a", &[2, 1, 3, 1, 2]);
    let b = g.input("b", &[1, 4, 3, 2, 1]);
    let err = g.add(a, b).unwrap_err().to_string();
    assert!(
        err.contains("more than 4 axes") && err.contains("[1, 4, 3, 2, 1]"),
        "{err}"
    );
    // Broadcast along axis 1 only: the other axes merge, and the result keeps its rank.
    let c = g.input("c", &[2, 5, 3, 1, 2]);
    let sum = g.add(a, c).unwrap();
    assert_eq!(g.shape(sum), &[2, 5, 3, 1, 2]);
    // Shapes that do not broadcast at all are refused, naming both.
    let d = g.input("d", &[2, 5, 3, 1, 3]);
    let err = g.add(a, d).unwrap_err().to_string();
    assert!(
        err.contains("[2, 1, 3, 1, 2]") && err.contains("[2, 5, 3, 1, 3]"),
        "{err}"
    );
}

#[test]
fn write_at_writes_into_a_bound_cache_that_keeps_its_contents_between_runs() {
    use shadergrad::kernels::copy::write_at_cpu;
    let gpu = gpu();
    let mut rng = Rng::new(41);
    // Odd shapes, each axis written along: the first, a middle one, the last.
    for (shape, axis, entries) in [
        (vec![5, 3, 2], 0usize, 2usize),
        (vec![3, 7, 5], 1, 1),
        (vec![2, 3, 4, 9], 2, 3),
        (vec![4, 6], 1, 2),
    ] {
        let start: Vec<f32> = (0..shape.iter().product::<usize>())
            .map(|_| rng.uniform(-1.0, 1.0))
            .collect();
        let cache_tensor = shadergrad::Tensor::from_slice(gpu, &start, &shape).unwrap();
        let mut update_shape = shape.clone();
        update_shape[axis] = entries;
        let mut g = Graph::new(gpu);
        let cache = g.input("cache", &shape);
        let update = g.input("update", &update_shape);
        let position = g.input_indices("position", &[1]);
        let written = g.write_at(cache, update, axis as isize, position).unwrap();
        // Read through an op, as a decoder's attention reads its cache.
        let doubled = g.scale(written, 2.0).unwrap();
        let mut plan = g
            .compile_with(&[doubled], &[(cache, &cache_tensor)])
            .unwrap();
        let mut expected = start.clone();
        for position_value in [shape[axis] - entries, 0, 1] {
            let values: Vec<f32> = (0..update_shape.iter().product::<usize>())
                .map(|_| rng.uniform(-1.0, 1.0))
                .collect();
            plan.run(
                &[
                    Feed::f32(update, &values),
                    Feed::u32(position, &[position_value as u32]),
                ],
                &[],
            )
            .unwrap();
            expected = write_at_cpu(&expected, &shape, &values, axis, position_value);
            let what = format!("{shape:?} axis {axis} at {position_value}");
            assert_close(&what, &cache_tensor.to_vec().unwrap(), &expected, 0.0, 0.0);
            let twice: Vec<f32> = expected.iter().map(|v| 2.0 * v).collect();
            assert_close(&what, &plan.read(doubled).unwrap(), &twice, 0.0, 0.0);
        }
        // No room for the update past the end of the axis.
        let err = plan
            .run(
                &[
                    Feed::f32(update, &vec![0.0; update_shape.iter().product()]),
                    Feed::u32(position, &[(shape[axis] - entries + 1) as u32]),
                ],
                &[],
            )
            .unwrap_err()
            .to_string();
        assert!(err.contains("out of range"), "{err}");
    }
}

#[test]
fn write_at_refuses_a_computed_cache_a_stale_read_a_bad_update_and_a_gradient() {
    let gpu = gpu();
    let mut g = Graph::new(gpu);
    let cache = g.input("cache", &[2, 4, 3]);
    let update = g.input("update", &[2, 1, 3]);
    let position = g.input_indices("position", &[1]);
    let computed = g.scale(cache, 1.0).unwrap();
    let err = g
        .write_at(computed, update, 1, position)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("computed") && err.contains("[2, 4, 3]"),
        "{err}"
    );
    for (i, wrong) in [[2, 1, 4], [1, 1, 3], [2, 5, 3]].into_iter().enumerate() {
        let bad = g.input(&format!("bad{i}"), &wrong);
        let err = g.write_at(cache, bad, 1, position).unwrap_err().to_string();
        assert!(err.contains(&format!("{wrong:?}")), "{err}");
    }
    // A reshape made before the write sees the old storage: refused after it, as is the cache.
    let flat = g.reshape(cache, &[24]).unwrap();
    let written = g.write_at(cache, update, 1, position).unwrap();
    for stale in [cache, flat] {
        let err = g.scale(stale, 1.0).unwrap_err().to_string();
        assert!(err.contains("overwritten in place"), "{err}");
    }
    // A second write goes into the same storage, through the first one's result.
    let again = g.write_at(written, update, 1, position).unwrap();
    assert_eq!(g.shape(again), &[2, 4, 3]);

    let mut g = Graph::new(gpu);
    let cache = g.input("cache", &[2, 3]);
    let w = g.parameter("w", &[2, 1], vec![1.0, 2.0]).unwrap();
    let position = g.input_indices("position", &[1]);
    let written = g.write_at(cache, w, 1, position).unwrap();
    let loss = g.sum(written, 1, false).unwrap();
    let loss = g.sum(loss, 0, false).unwrap();
    let err = g.backward(loss).unwrap_err().to_string();
    assert!(
        err.contains("write_at") && err.contains("no gradient"),
        "{err}"
    );
}

#[test]
fn a_rank_zero_value_broadcast_against_one_element_gets_its_gradient() {
    // A sum over every axis is rank 0; times a [1] value it broadcasts to [1], and its
    // gradient comes back through a sum_to that only drops an axis of size 1.
    let gpu = gpu();
    let mut g = Graph::new(gpu);
    let w = g.parameter("w", &[2], vec![3.0, 5.0]).unwrap();
    let total = g.sum(w, 0, false).unwrap();
    let scale = g.input("scale", &[1]);
    let y = g.mul(total, scale).unwrap();
    assert_eq!((g.shape(total), g.shape(y)), (&[][..], &[1][..]));
    let grads = g.backward(y).unwrap();
    let gw = grads.of(w).unwrap();
    let mut plan = g.compile(&[y, gw]).unwrap();
    plan.run(&[Feed::f32(scale, &[0.25])], &[]).unwrap();
    assert_eq!(plan.read(y).unwrap(), [2.0]);
    assert_eq!(plan.read(gw).unwrap(), [0.25, 0.25]);
}

#[test]
fn top_k_picks_each_rows_largest_entries_the_lower_index_first_among_equals() {
    use shadergrad::kernels::top_k::{top_k_cpu, MAX_K};
    let gpu = gpu();
    let mut rng = Rng::new(43);
    for (shape, k) in [
        (vec![3, 1], 1usize),
        (vec![2, 17], 4),
        (vec![5, 300], 16),
        (vec![3, 18], MAX_K),
        (vec![2, 3, 1001], 7),
        (vec![2, 700], MAX_K),
        (vec![70, 39], 6),
        (vec![1, 16], 16),
    ] {
        let cols = *shape.last().unwrap();
        // Few distinct values, so that ties are everywhere.
        let x: Vec<f32> = (0..shape.iter().product::<usize>())
            .map(|_| rng.below(9) as f32 - 4.0)
            .collect();
        let mut g = Graph::new(gpu);
        let input = g.input("x", &shape);
        let (values, indices) = g.top_k(input, k).unwrap();
        let mut out_shape = shape.clone();
        *out_shape.last_mut().unwrap() = k;
        assert_eq!(
            (g.shape(values), g.shape(indices)),
            (&out_shape[..], &out_shape[..])
        );
        let mut plan = g.compile(&[values, indices]).unwrap();
        plan.run(&[Feed::f32(input, &x)], &[]).unwrap();
        let expected = top_k_cpu(&x, cols, k);
        let expected_indices: Vec<u32> = expected.iter().flatten().map(|&(i, _)| i).collect();
        let expected_values: Vec<f32> = expected.iter().flatten().map(|&(_, v)| v).collect();
        assert_eq!(
            plan.read_indices(indices).unwrap(),
            expected_indices,
            "{shape:?} k {k}"
        );
        assert_eq!(
            plan.read(values).unwrap(),
            expected_values,
            "{shape:?} k {k}"
        );
    }
    let mut g = Graph::new(gpu);
    let x = g.input("x", &[2, 20]);
    for k in [0, MAX_K + 1] {
        let err = g.top_k(x, k).unwrap_err().to_string();
        assert!(
            err.contains(&format!("k {k}")) && err.contains("[2, 20]"),
            "{err}"
        );
    }
    let narrow = g.input("narrow", &[2, 3]);
    let err = g.top_k(narrow, 4).unwrap_err().to_string();
    assert!(err.contains("k 4") && err.contains("[2, 3]"), "{err}");
    let w = g.parameter("w", &[2, 20], vec![0.5; 40]).unwrap();
    let (values, _) = g.top_k(w, 2).unwrap();
    let loss = g.sum(values, 1, false).unwrap();
    let loss = g.sum(loss, 0, false).unwrap();
    let err = g.backward(loss).unwrap_err().to_string();
    assert!(
        err.contains("top_k") && err.contains("no gradient"),
        "{err}"
    );
}
