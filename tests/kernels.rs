//! Every kernel against its CPU reference, on odd shapes: 1, primes, sizes that are not
//! multiples of the tile or workgroup, and one large case per family.

mod common;

use common::{assert_close, assert_within, broadcast_reference, gpu};
use shadergrad::kernels::copy::permute_cpu;
use shadergrad::kernels::elementwise::{binary_cpu, erf, erfc, select_cpu, unary_cpu};
use shadergrad::kernels::matmul::{
    gemm_cpu, gemm_dispatch, CLayout, Epilogue, GemmOperands, GemmShape,
};
use shadergrad::kernels::reduce::reduce_cpu;
use shadergrad::rng::Rng;
use shadergrad::{Binary, Error, MatmulVariant, Reduce, ReduceVariant, Tensor, Unary};

/// f32 epsilon as f64.
const EPS: f64 = f32::EPSILON as f64;

fn upload(data: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_slice(gpu(), data, shape).unwrap()
}

// ------------------------------------------------------------------------------ matmul

/// The relative error of each product a·b from a variant's rounding of its inputs: none for
/// the f32 variants; the f16 one rounds each input to f16 (relative error 2⁻¹¹), so a·b is
/// off by up to about 2⁻¹⁰·|a·b|, and 2⁻⁹ leaves room for the units' accumulation.
fn input_rounding(variant: MatmulVariant) -> f64 {
    if variant.is_f32() {
        0.0
    } else {
        2f64.powi(-9)
    }
}

/// What a product adds to op(A)·op(B): β·C of this shape, a bias, and last a fused ReLU or
/// a ReLU's gradient (kept where a random output of the ReLU, about half positive, is).
#[derive(Clone, Copy, Default)]
struct EpilogueCase<'a> {
    c: Option<&'a [usize]>,
    bias: bool,
    relu: bool,
    relu_grad: bool,
}

/// One product on the GPU against the f64 reference. Tolerance: the standard forward error
/// bound of a K-term f32 dot product, γ = (K+2)·ε times Σ|α·a·b| + |β·c| + |bias| for each
/// element (computed by running the reference on absolute values), so it scales with K and
/// with the magnitudes that actually met, and is far below any real indexing mistake.
#[allow(clippy::too_many_arguments)]
fn check_gemm(
    seed: u64,
    batch: usize,
    (m, n, k): (usize, usize, usize),
    trans_a: bool,
    trans_b: bool,
    shared_b: bool,
    epilogue: EpilogueCase,
    variant: MatmulVariant,
) {
    let EpilogueCase {
        c: c_shape,
        bias: with_bias,
        relu,
        relu_grad,
    } = epilogue;
    let b_cols = if trans_b { k } else { n };
    let outside_contract = match variant {
        MatmulVariant::BlockedVec4 => trans_b || !b_cols.is_multiple_of(4),
        MatmulVariant::NtVec4 => trans_a || !trans_b || !k.is_multiple_of(4),
        MatmulVariant::Subgroup | MatmulVariant::CoopF16 => !variant.available(gpu()),
        MatmulVariant::TiledVec4 => {
            !n.is_multiple_of(4) || !k.is_multiple_of(4) || (trans_a && !m.is_multiple_of(4))
        }
        MatmulVariant::Blocked | MatmulVariant::Tiled => false,
    };
    if outside_contract {
        return; // covered by matmul_variants_refuse_layouts_they_lack
    }
    let mut rng = Rng::new(seed);
    let a_shape: Vec<usize> = if trans_a {
        vec![batch, k, m]
    } else {
        vec![batch, m, k]
    };
    let b_matrix = if trans_b { vec![n, k] } else { vec![k, n] };
    let b_shape: Vec<usize> = if shared_b {
        b_matrix.clone()
    } else {
        [vec![batch], b_matrix].concat()
    };
    let a = rng.vec(a_shape.iter().product(), -1.0, 1.0);
    let b = rng.vec(b_shape.iter().product(), -1.0, 1.0);
    let (alpha, beta) = (0.75, -1.5);
    let c_data = c_shape.map(|s| rng.vec(s.iter().product(), -1.0, 1.0));
    let bias = with_bias.then(|| rng.vec(n, -1.0, 1.0));
    let relu_output = relu_grad.then(|| rng.vec(batch * m * n, -1.0, 1.0));

    let (ga, gb) = (upload(&a, &a_shape), upload(&b, &b_shape));
    let gc = c_shape.map(|s| upload(c_data.as_ref().unwrap(), s));
    let gbias = bias.as_ref().map(|v| upload(v, &[n]));
    let grelu_output = relu_output.as_ref().map(|v| upload(v, &[batch, m, n]));
    let fused = match (&grelu_output, relu) {
        (Some(relu_output), _) => Epilogue::ReluGrad { relu_output },
        (None, true) => Epilogue::Relu,
        (None, false) => Epilogue::Plain,
    };
    let mut gemm = ga
        .gemm(&gb)
        .trans_a(trans_a)
        .trans_b(trans_b)
        .alpha(alpha)
        .epilogue(fused)
        .variant(variant);
    if let Some(c) = &gc {
        gemm = gemm.c(c, beta);
    }
    if let Some(bias) = &gbias {
        gemm = gemm.bias(bias);
    }
    let out = gemm.run().unwrap();
    assert_eq!(out.shape(), &[batch, m, n]);

    let shape = GemmShape {
        a_batch_stride: m * k,
        b_batch_stride: if shared_b { 0 } else { k * n },
        ..GemmShape::contiguous(batch, (m, n, k), trans_a, trans_b)
    };
    let layout = c_shape.map(|s| match s.len() {
        3 => CLayout {
            batch_stride: m * n,
            row_stride: n,
            col_stride: 1,
        },
        _ => {
            let (rows, cols) = (s[0], s[1]);
            CLayout {
                batch_stride: 0,
                row_stride: if rows == 1 { 0 } else { cols },
                col_stride: usize::from(cols != 1),
            }
        }
    });
    let c_ref = c_data.as_deref().zip(layout);
    let mut expected = gemm_cpu(&a, &b, c_ref, bias.as_deref(), &shape, alpha, beta);
    if relu {
        expected.iter_mut().for_each(|v| *v = v.max(0.0));
    }
    if let Some(h) = &relu_output {
        let gated = expected.iter().zip(h);
        expected = gated
            .map(|(&v, &h)| if h > 0.0 { v } else { 0.0 })
            .collect();
    }
    let abs = |v: &[f32]| v.iter().map(|x| x.abs()).collect::<Vec<f32>>();
    let (a_abs, b_abs) = (abs(&a), abs(&b));
    let c_abs = c_data.as_deref().map(abs);
    let bias_abs = bias.as_deref().map(abs);
    let magnitude = gemm_cpu(
        &a_abs,
        &b_abs,
        c_abs.as_deref().zip(layout),
        bias_abs.as_deref(),
        &shape,
        alpha,
        beta.abs(),
    );
    let what = format!(
        "gemm {variant:?} batch {batch} m{m} n{n} k{k} tA {trans_a} tB {trans_b} shared_b {shared_b} C {c_shape:?} bias {with_bias} relu {relu} relu_grad {relu_grad}"
    );
    assert_within(&what, &out.to_vec().unwrap(), &expected, |i| {
        (input_rounding(variant) + (k as f64 + 2.0) * EPS) * f64::from(magnitude[i]) + 1e-30
    });
}

#[test]
fn matmul_matches_reference_on_odd_shapes() {
    let shapes = [
        (1, 1, 1),
        (1, 7, 3),
        (5, 1, 2),
        (13, 17, 19),
        (33, 31, 29),
        (64, 64, 64),
        (67, 65, 1),
        (13, 17, 20),
        (5, 7, 128),
        (1, 33, 4),
        // Not multiples of the subgroup kernel's 32×32 tile, with N, K (and M) multiples of
        // 4 so that it reads vec4s, and a 10-column output layer's products.
        (37, 44, 12),
        (36, 68, 20),
        (100, 36, 4),
        (128, 10, 36),
        (36, 256, 10),
        // Across the wide tiled kernel's 128×128 tiles and 8-step K slices, rows whole vec4s.
        (132, 136, 20),
        (260, 132, 12),
    ];
    let mut seed = 0;
    for variant in MatmulVariant::ALL {
        for &(m, n, k) in &shapes {
            for (trans_a, trans_b) in [(false, false), (true, false), (false, true), (true, true)] {
                seed += 1;
                // Every third product with a fused ReLU: each transpose pair meets it in turn.
                let epilogue = EpilogueCase {
                    relu: seed % 3 == 0,
                    ..EpilogueCase::default()
                };
                check_gemm(
                    seed,
                    1,
                    (m, n, k),
                    trans_a,
                    trans_b,
                    false,
                    epilogue,
                    variant,
                );
            }
        }
    }
}

#[test]
fn matmul_batched_with_c_and_bias() {
    for variant in MatmulVariant::ALL {
        // Each batch its own B, C the full output, and a bias. Some with a fused ReLU or a
        // ReLU's gradient (the odd shapes below have more ReLUs).
        check_gemm(
            1,
            3,
            (19, 23, 17),
            false,
            true,
            false,
            EpilogueCase {
                c: Some(&[3, 19, 23]),
                bias: true,
                relu: true,
                ..EpilogueCase::default()
            },
            variant,
        );
        // One B shared by every batch, C a row vector broadcast over rows.
        check_gemm(
            2,
            5,
            (7, 70, 11),
            true,
            false,
            true,
            EpilogueCase {
                c: Some(&[1, 70]),
                ..EpilogueCase::default()
            },
            variant,
        );
        // C a column broadcast over columns, and a scalar C.
        check_gemm(
            3,
            2,
            (66, 9, 5),
            false,
            false,
            false,
            EpilogueCase {
                c: Some(&[66, 1]),
                bias: true,
                relu_grad: true,
                ..EpilogueCase::default()
            },
            variant,
        );
        check_gemm(
            4,
            1,
            (3, 4, 5),
            true,
            true,
            false,
            EpilogueCase {
                c: Some(&[1, 1]),
                ..EpilogueCase::default()
            },
            variant,
        );
        // Where the subgroup kernel reads vec4s: batches of A (transposed or not) against
        // their own B or a shared one, C broadcast over rows and over columns, a bias.
        check_gemm(
            5,
            3,
            (37, 44, 12),
            false,
            false,
            false,
            EpilogueCase {
                c: Some(&[1, 44]),
                bias: true,
                relu: true,
                ..EpilogueCase::default()
            },
            variant,
        );
        check_gemm(
            6,
            2,
            (36, 40, 8),
            true,
            false,
            true,
            EpilogueCase {
                c: Some(&[36, 1]),
                bias: true,
                relu_grad: true,
                ..EpilogueCase::default()
            },
            variant,
        );
        check_gemm(
            7,
            3,
            (37, 44, 12),
            false,
            true,
            true,
            EpilogueCase {
                bias: true,
                relu_grad: true,
                ..EpilogueCase::default()
            },
            variant,
        );
        check_gemm(
            8,
            2,
            (36, 40, 8),
            true,
            true,
            false,
            EpilogueCase::default(),
            variant,
        );
    }
}

#[test]
fn matmul_vec4_variant_on_aligned_odd_shapes() {
    // N a multiple of 4 but not of the 128-column tile; M and K odd.
    let shapes = [
        (1, 4, 1),
        (3, 8, 5),
        (13, 20, 19),
        (9, 132, 7),
        (67, 260, 33),
    ];
    for (i, &(m, n, k)) in shapes.iter().enumerate() {
        for trans_a in [false, true] {
            check_gemm(
                40 + i as u64,
                1,
                (m, n, k),
                trans_a,
                false,
                false,
                EpilogueCase::default(),
                MatmulVariant::BlockedVec4,
            );
        }
    }
    check_gemm(
        50,
        3,
        (11, 12, 13),
        true,
        false,
        true,
        EpilogueCase {
            c: Some(&[1, 12]),
            bias: true,
            ..EpilogueCase::default()
        },
        MatmulVariant::BlockedVec4,
    );
    check_gemm(
        51,
        2,
        (10, 16, 3),
        false,
        false,
        false,
        EpilogueCase {
            c: Some(&[2, 10, 16]),
            ..EpilogueCase::default()
        },
        MatmulVariant::BlockedVec4,
    );
    check_gemm(
        52,
        1,
        (21, 8, 6),
        false,
        false,
        false,
        EpilogueCase {
            c: Some(&[21, 1]),
            bias: true,
            ..EpilogueCase::default()
        },
        MatmulVariant::BlockedVec4,
    );
}

#[test]
fn matmul_variants_refuse_layouts_they_lack() {
    let a = upload(&[1.0; 6], &[2, 3]);
    let b = upload(&[1.0; 15], &[3, 5]);
    let err = a
        .gemm(&b)
        .variant(MatmulVariant::BlockedVec4)
        .run()
        .unwrap_err()
        .to_string();
    assert!(err.contains("multiple of 4"), "{err}");
    let bt = upload(&[1.0; 12], &[4, 3]);
    assert!(a
        .gemm(&bt)
        .trans_b(true)
        .variant(MatmulVariant::BlockedVec4)
        .run()
        .is_err());
    // The A·Bᵀ kernel wants B transposed and K (here 3) a multiple of 4.
    let err = a
        .gemm(&bt)
        .trans_b(true)
        .variant(MatmulVariant::NtVec4)
        .run()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("nt-vec4") && err.contains("K a multiple of 4"),
        "{err}"
    );
    // Without matrix units (lavapipe has none) the f16 cooperative-matrix kernel says so.
    if !MatmulVariant::CoopF16.available(gpu()) {
        let err = a
            .gemm(&b)
            .variant(MatmulVariant::CoopF16)
            .run()
            .unwrap_err()
            .to_string();
        assert!(err.contains("cooperative matrices"), "{err}");
    }
    // The wide tiled kernel wants whole vec4 rows: N (here 5) a multiple of 4.
    let err = a
        .gemm(&b)
        .variant(MatmulVariant::TiledVec4)
        .run()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("tiled-vec4") && err.contains("N and K multiples of 4"),
        "{err}"
    );
}

/// K, A's offset, and the (trans_a, trans_b) layouts to try with them.
type OffsetCase = (usize, usize, &'static [(bool, bool)]);

/// Products that read slices of larger tensors and write into the middle of another, as a
/// recurrence does with one time step: every variant, with A transposed or not, and the
/// elements around the written slice left as they were.
#[test]
fn matmul_reads_and_writes_at_offsets() {
    let gpu = gpu();
    let mut rng = Rng::new(77);
    let (m, n) = (5, 12);
    let sentinel = -7.0;
    for variant in MatmulVariant::ALL {
        // Offsets of B and the output are multiples of 4, so the vec4 variant takes them
        // too; the A·Bᵀ kernel wants A's offset and K multiples of 4 as well.
        let all_layouts: &[(bool, bool)] =
            &[(false, false), (false, true), (true, false), (true, true)];
        let cases: Vec<OffsetCase> = match variant {
            MatmulVariant::NtVec4 => vec![(8, 4, &[(false, true)])],
            // The subgroup kernel reads vec4s where K and A's offset are multiples of 4 too
            // (and M, here 5, for a transposed A), and gathers floats elsewhere: each way.
            MatmulVariant::Subgroup if variant.available(gpu) => {
                vec![(8, 4, all_layouts), (7, 3, all_layouts)]
            }
            MatmulVariant::Subgroup => continue,
            MatmulVariant::CoopF16 if !variant.available(gpu) => continue,
            // Whole vec4 rows only: M (5) rules out a transposed A.
            MatmulVariant::TiledVec4 => vec![(8, 4, &[(false, false), (false, true)])],
            _ => vec![(7, 3, &[(false, false), (true, false)])],
        };
        let (b_offset, out_offset) = (8, 20);
        for (k, a_offset, layouts) in cases {
            let a = rng.vec(a_offset + m * k + 2, -1.0, 1.0);
            let b = rng.vec(b_offset + k * n + 5, -1.0, 1.0);
            for &(trans_a, trans_b) in layouts {
                let shape = GemmShape {
                    a_offset,
                    b_offset,
                    out_offset,
                    ..GemmShape::contiguous(1, (m, n, k), trans_a, trans_b)
                };
                let (ga, gb) = (upload(&a, &[a.len()]), upload(&b, &[b.len()]));
                let out_len = out_offset + m * n + 9;
                let out = upload(&vec![sentinel; out_len], &[out_len]);
                let operands = GemmOperands {
                    a: &ga,
                    b: &gb,
                    c: None,
                    bias: None,
                    out: &out,
                    epilogue: Epilogue::Plain,
                };
                let dispatch = gemm_dispatch(&operands, &shape, 1.0, 0.0, variant).unwrap();
                gpu.submit(&[], &[dispatch]).unwrap();
                let got = out.to_vec().unwrap();
                let expected = gemm_cpu(&a, &b, None, None, &shape, 1.0, 0.0);
                let what = format!("gemm at offsets, {variant:?}, trans_a {trans_a}");
                // A K-term f32 dot product of values in [-1, 1]: error below (K+2)·ε·K, plus
                // the inputs' rounding.
                let tolerance = (input_rounding(variant) + (k as f64 + 2.0) * EPS) * k as f64;
                assert_within(
                    &what,
                    &got[out_offset..out_offset + m * n],
                    &expected,
                    |_| tolerance,
                );
                assert!(
                    got[..out_offset]
                        .iter()
                        .chain(&got[out_offset + m * n..])
                        .all(|&v| v == sentinel),
                    "{what}: wrote outside its slice"
                );
            }
        }
    }
}

#[test]
fn matmul_refuses_offsets_past_the_end_or_misaligned_for_vec4() {
    let a = upload(&[1.0; 10], &[10]);
    let b = upload(&[1.0; 16], &[16]);
    let out = upload(&[0.0; 16], &[16]);
    let mut shape = GemmShape {
        a_offset: 3,
        ..GemmShape::contiguous(1, (2, 4, 4), false, false)
    };
    let operands = GemmOperands {
        a: &a,
        b: &b,
        c: None,
        bias: None,
        out: &out,
        epilogue: Epilogue::Plain,
    };
    // A needs elements 3..11 of its 10.
    let err = gemm_dispatch(&operands, &shape, 1.0, 0.0, MatmulVariant::Blocked)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("A (shape [10])") && err.contains("11"),
        "{err}"
    );
    shape.a_offset = 0;
    shape.out_offset = 2;
    assert!(!MatmulVariant::BlockedVec4.supports(gpu(), &shape));
    let err = gemm_dispatch(&operands, &shape, 1.0, 0.0, MatmulVariant::BlockedVec4)
        .unwrap_err()
        .to_string();
    assert!(err.contains("offsets"), "{err}");
}

#[test]
fn matmul_large_case() {
    for variant in MatmulVariant::ALL {
        // N ragged, then whole vec4 rows for the variants that need them.
        for n in [263, 264] {
            check_gemm(
                9,
                1,
                (257, n, 252),
                false,
                variant == MatmulVariant::NtVec4,
                false,
                EpilogueCase {
                    bias: true,
                    ..EpilogueCase::default()
                },
                variant,
            );
        }
    }
}

#[test]
fn matmul_with_empty_inner_dimension_is_beta_c_plus_bias() {
    let c = upload(&[1.0, 2.0, 3.0, 4.0], &[2, 2]);
    let bias = upload(&[10.0, 20.0], &[2]);
    let a = upload(&[], &[2, 0]);
    let b = upload(&[], &[0, 2]);
    let out = a.gemm(&b).c(&c, 2.0).bias(&bias).run().unwrap();
    assert_eq!(out.to_vec().unwrap(), vec![12.0, 24.0, 16.0, 28.0]);
}

#[test]
fn numpy_matmul_promotes_vectors_and_broadcasts_batches() {
    let mut rng = Rng::new(5);
    let a = rng.vec(3 * 4 * 5, -1.0, 1.0);
    let b = rng.vec(2 * 5 * 6, -1.0, 1.0);
    // [3,1,4,5] @ [2,5,6] -> [3,2,4,6]
    let out = upload(&a, &[3, 1, 4, 5])
        .matmul(&upload(&b, &[2, 5, 6]))
        .unwrap();
    assert_eq!(out.shape(), &[3, 2, 4, 6]);
    let got = out.to_vec().unwrap();
    for i in 0..3 {
        for j in 0..2 {
            for r in 0..4 {
                for c in 0..6 {
                    let expected: f32 = (0..5)
                        .map(|l| a[(i * 4 + r) * 5 + l] * b[(j * 5 + l) * 6 + c])
                        .sum();
                    let actual = got[((i * 2 + j) * 4 + r) * 6 + c];
                    assert!(
                        (actual - expected).abs() < 1e-5,
                        "[{i},{j},{r},{c}] {actual} vs {expected}"
                    );
                }
            }
        }
    }
    // Vector · matrix and matrix · vector drop the vector's axis.
    let v = upload(&[1.0, 2.0], &[2]);
    let m = upload(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
    let vm = v.matmul(&m).unwrap();
    assert_eq!(
        (vm.shape(), vm.to_vec().unwrap()),
        (&[3][..], vec![9.0, 12.0, 15.0])
    );
    let w = upload(&[1.0, 0.0, -1.0], &[3]);
    let mv = m.matmul(&w).unwrap();
    assert_eq!(
        (mv.shape(), mv.to_vec().unwrap()),
        (&[2][..], vec![-2.0, -2.0])
    );
}

// ------------------------------------------------------------------------- elementwise

/// Tolerance of a unary op: WGSL allows exp and log an error of a few ULP (3 + 2|x| for
/// exp), and tanh and sigmoid here are built from exp; 8 ULP relative plus an absolute
/// 2⁻²³ for results near zero covers all of them on |x| ≤ 4 with margin, while a wrong
/// formula misses by orders of magnitude.
///
/// The new ops: GELU's Φ is an erfc of relative error ~1e-7 built from exp and exp2, SiLU a
/// sigmoid times x, √ has 3 ULP in Vulkan; an integer power is ~|p| roundings, a
/// non-integer one exp2(p·log₂x), so exp2's 3 + 2|a| ULP plus log₂'s error times |p|.
fn unary_tolerance(op: Unary, x: f32, expected: f32) -> f64 {
    let ulps = match op {
        Unary::Exp => 3.0 + 2.0 * f64::from(x.abs()),
        Unary::Tanh | Unary::Sigmoid | Unary::Log | Unary::Silu => 8.0,
        Unary::Gelu => 16.0,
        Unary::Sqrt => 3.0,
        Unary::Pow(p) if p == p.round() => 2.0 + f64::from(p.abs()),
        Unary::Pow(p) => {
            let exponent = f64::from(p) * f64::from(x.abs()).log2();
            8.0 + 2.0 * exponent.abs() + 8.0 * f64::from(p.abs())
        }
        _ => 0.0,
    };
    ulps * EPS * f64::from(expected.abs()) + if ulps > 0.0 { EPS } else { 0.0 }
}

#[test]
fn unary_ops_match_reference() {
    let ops = [
        Unary::Tanh,
        Unary::Relu,
        Unary::Sigmoid,
        Unary::Exp,
        Unary::Log,
        Unary::Neg,
        Unary::Scale(-2.5),
        Unary::Gelu,
        Unary::Silu,
        Unary::Sqrt,
        Unary::Abs,
        Unary::Pow(2.0),
        Unary::Pow(3.0),
        Unary::Pow(-2.0),
        Unary::Pow(0.5),
        Unary::Pow(-1.5),
        Unary::Clamp {
            min: -1.0,
            max: 2.5,
        },
    ];
    let mut rng = Rng::new(11);
    for shape in [
        vec![1],
        vec![7],
        vec![256],
        vec![257],
        vec![3, 5, 7],
        vec![2, 3, 5, 11],
        // Multiples of 4, which CPU adapters run four elements per invocation.
        vec![4],
        vec![12, 1028],
    ] {
        let n = shape.iter().product();
        for op in ops {
            let (low, high) = match op {
                Unary::Log | Unary::Sqrt => (1e-3, 4.0),
                Unary::Pow(p) if p != p.round() => (1e-3, 4.0),
                // Away from the pole at 0.
                Unary::Pow(p) if p < 0.0 => (0.25, 4.0),
                _ => (-4.0, 4.0),
            };
            let x = rng.vec(n, low, high);
            let y = upload(&x, &shape).map(op).unwrap();
            assert_eq!(y.shape(), &shape[..]);
            let expected = unary_cpu(&x, op);
            assert_within(
                &format!("{op:?} {shape:?}"),
                &y.to_vec().unwrap(),
                &expected,
                |i| unary_tolerance(op, x[i], expected[i]),
            );
        }
    }
}

#[test]
fn tanh_and_sigmoid_saturate_without_nan() {
    let x = [-1e4f32, -90.0, -20.0, 0.0, 20.0, 90.0, 1e4];
    let t = upload(&x, &[7]);
    assert_eq!(
        t.tanh().unwrap().to_vec().unwrap(),
        vec![-1.0, -1.0, -1.0, 0.0, 1.0, 1.0, 1.0]
    );
    let s = t.sigmoid().unwrap().to_vec().unwrap();
    assert!(
        s.iter().all(|v| v.is_finite() && (0.0..=1.0).contains(v)),
        "{s:?}"
    );
    assert_eq!((s[0], s[3], s[6]), (0.0, 0.5, 1.0));
}

#[test]
fn erf_and_erfc_match_mpmath() {
    // (x, erf x, erfc x): mpmath at 30 digits, rounded to f64.
    let cases = [
        (-3.0, -0.9999779095030014, 1.9999779095030015),
        (-1.0, -0.8427007929497149, 1.8427007929497148),
        (-0.25, -0.27632639016823696, 1.276326390168237),
        (0.0, 0.0, 1.0),
        (0.001, 0.0011283787909692365, 0.9988716212090307),
        (0.5, 0.5204998778130465, 0.4795001221869535),
        (1.0, 0.8427007929497149, 0.15729920705028513),
        (2.0, 0.9953222650189527, 0.004677734981047266),
        (2.4999, 0.9995928300996666, 0.0004071699003334514),
        (2.5, 0.999593047982555, 0.0004069520174449589),
        (3.0, 0.9999779095030014, 2.209049699858544e-05),
        (5.0, 0.9999999999984626, 1.537459794428035e-12),
        (9.0, 1.0, 4.13703174651381e-37),
        (15.0, 1.0, 7.212994172451207e-100),
        (26.0, 1.0, 5.663192408856143e-296),
    ];
    let relative = |got: f64, want: f64| {
        if want == 0.0 {
            got.abs()
        } else {
            (got / want - 1.0).abs()
        }
    };
    for (x, erf_x, erfc_x) in cases {
        // erf: a few f64 ULP. erfc: 1 − erf below 2.5 loses up to log₁₀(1/erfc(2.5)) ≈ 3.4
        // digits (≲ 3e-13); the continued fraction beyond is at f64 precision.
        assert!(relative(erf(x), erf_x) < 1e-15, "erf({x}) = {}", erf(x));
        assert!(relative(erfc(x), erfc_x) < 1e-12, "erfc({x}) = {}", erfc(x));
    }
    // The two pieces meet at 2.5 without a step.
    let (below, at) = (erfc(2.5 - 1e-12), erfc(2.5));
    assert!((below / at - 1.0).abs() < 1e-10, "{below} vs {at}");
}

/// The largest relative error of `got` against `want` (f64), in units of f32's ε, over
/// values whose expected magnitude is at least f32's smallest normal, and where it is.
fn max_relative_error(got: &[f32], want: &[f64]) -> (f64, usize) {
    let mut worst = (0.0, 0);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        if w.abs() < f64::from(f32::MIN_POSITIVE) {
            continue;
        }
        let error = (f64::from(g) / w - 1.0).abs() / EPS;
        if error > worst.0 {
            worst = (error, i);
        }
    }
    worst
}

fn to_f32(x: &[f64]) -> Vec<f32> {
    x.iter().map(|&v| v as f32).collect()
}

#[test]
fn gelu_keeps_relative_precision_in_the_tail() {
    // x = −13 … 13 in steps of 1/128 (exact in f32), besides odd values: in the lower tail
    // GELU(x) = x·Φ(x) is tiny (−8e-38 at x = −13) where 1 + erf(x/√2) would cancel to 0.
    let mut x: Vec<f32> = (-13 * 128..=13 * 128).map(|i| i as f32 / 128.0).collect();
    x.extend([-12.99, -7.77, -5.5, -1e-3, -1e-20, 1e-20, 1e-3, 0.0, -0.0]);
    let gx = upload(&x, &[x.len()]);
    let y = gx.gelu().unwrap().to_vec().unwrap();
    let want: Vec<f64> = x.iter().map(|&v| Unary::Gelu.apply(f64::from(v))).collect();
    let (worst, at) = max_relative_error(&y, &want);
    println!(
        "gelu: max relative error {worst:.2} ε ({:.2e}) at x = {} (|x| ≤ 13)",
        worst * EPS,
        x[at]
    );
    // 5 ε measured on lavapipe (the erfc fit's 1.05e-7 is about 1 of them).
    assert!(worst <= 8.0, "gelu: {worst} ε at x = {}", x[at]);
    // Its derivative, from x, over the same range: Φ(x) + x·φ(x).
    let ones = upload(&vec![1.0; x.len()], &[x.len()]);
    let dy = gx.gelu_backward(&ones).unwrap().to_vec().unwrap();
    let dwant: Vec<f64> = x
        .iter()
        .map(|&v| Binary::GeluGrad.apply(f64::from(v), 1.0))
        .collect();
    let (dworst, dat) = max_relative_error(&dy, &dwant);
    println!(
        "gelu': max relative error {dworst:.2} ε at x = {} (where it is {:e})",
        x[dat], dwant[dat]
    );
    // Φ + x·φ crosses 0 near x = −0.75, where the two terms cancel: there the bound is on
    // the terms' magnitude (|x|·φ ≤ 0.25), elsewhere it is relative.
    assert_within("gelu'", &dy, &to_f32(&dwant), |i| {
        let terms = f64::from(x[i]).abs() * 0.4 * (-0.5 * f64::from(x[i]).powi(2)).exp();
        32.0 * EPS * (dwant[i].abs() + terms)
    });
}

#[test]
fn gelu_and_silu_are_stable_for_large_inputs() {
    let x = [-1e30f32, -1e4, -100.0, -20.0, 0.0, 20.0, 100.0, 1e4, 1e30];
    let t = upload(&x, &[x.len()]);
    for (name, y) in [("gelu", t.gelu()), ("silu", t.silu())] {
        let y = y.unwrap().to_vec().unwrap();
        assert!(y.iter().all(|v| v.is_finite()), "{name}: {y:?}");
        // x for large positive x, 0 for large negative x.
        for (i, &v) in x.iter().enumerate() {
            if v >= 100.0 {
                assert_eq!(y[i], v, "{name}({v})");
            } else if v <= -100.0 {
                assert_eq!(y[i], 0.0, "{name}({v})");
            }
        }
        assert_eq!(y[4], 0.0, "{name}(0)");
    }
    // Their derivatives: 0 and 1 far out, ½ at 0, no NaN.
    let ones = upload(&[1.0; 9], &[9]);
    for (name, d) in [
        ("gelu'", t.gelu_backward(&ones)),
        ("silu'", t.silu_backward(&ones)),
    ] {
        let d = d.unwrap().to_vec().unwrap();
        assert_eq!(
            (d[0], d[1], d[7], d[8]),
            (0.0, 0.0, 1.0, 1.0),
            "{name}: {d:?}"
        );
        assert_eq!(d[4], 0.5, "{name}(0)");
    }
}

#[test]
fn pow_follows_pytorch_for_signs_zero_and_integer_exponents() {
    let x = [-3.0f32, -2.0, -1.5, -1.0, -0.0, 0.0, 0.5, 1.0, 2.0, 8.0];
    let t = upload(&x, &[x.len()]);
    for p in [
        0.0f32,
        1.0,
        2.0,
        3.0,
        4.0,
        -1.0,
        -2.0,
        0.5,
        -0.5,
        1.0 / 3.0,
        2.5,
    ] {
        let got = t.pow(p).unwrap().to_vec().unwrap();
        let want = unary_cpu(&x, Unary::Pow(p));
        for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
            let ok = if w.is_nan() {
                g.is_nan()
            } else if w.is_infinite() {
                // 0 to a negative power: ∞ (the sign of −0 need not survive).
                g.is_infinite() && x[i] == 0.0
            } else {
                (f64::from(g) - f64::from(w)).abs() <= 8.0 * EPS * f64::from(w.abs())
            };
            assert!(ok, "{}^{p}: got {g}, expected {w}", x[i]);
        }
    }
    // Integer exponents are exact on small integers, whatever the sign.
    let cube = t.pow(3.0).unwrap().to_vec().unwrap();
    assert_eq!((cube[0], cube[1], cube[8]), (-27.0, -8.0, 8.0));
    let square = t.pow(2.0).unwrap().to_vec().unwrap();
    assert_eq!((square[0], square[2], square[9]), (9.0, 2.25, 64.0));
    // x⁰ = 1 everywhere, 0 included; a non-integer power of a negative number is NaN.
    assert!(t
        .pow(0.0)
        .unwrap()
        .to_vec()
        .unwrap()
        .iter()
        .all(|&v| v == 1.0));
    let root = t.pow(0.5).unwrap().to_vec().unwrap();
    assert!(root[..4].iter().all(|v| v.is_nan()), "{root:?}");
    assert_eq!((root[5], root[9]), (0.0, 8f32.sqrt()));
    // The largest odd exponent f32 holds keeps the sign; past 2²⁴ every exponent is even.
    let ones = upload(&[-1.0, 1.0], &[2]);
    let odd = ones.pow(16_777_215.0).unwrap().to_vec().unwrap();
    assert_eq!(odd, vec![-1.0, 1.0]);
    let even = ones.pow(33_554_432.0).unwrap().to_vec().unwrap();
    assert_eq!(even, vec![1.0, 1.0]);
}

#[test]
fn clamp_keeps_its_bounds_and_nan() {
    let x = [-5.0f32, -1.0, -0.999, 0.0, 2.0, 2.001, 1e30, f32::NAN];
    let t = upload(&x, &[x.len()]);
    let y = t.clamp(-1.0, 2.0).unwrap().to_vec().unwrap();
    assert_eq!(&y[..7], &[-1.0, -1.0, -0.999, 0.0, 2.0, 2.0, 2.0]);
    assert!(y[7].is_nan(), "clamp(NaN) = {}", y[7]);
    // min = max is allowed: a constant.
    let c = t.clamp(0.5, 0.5).unwrap().to_vec().unwrap();
    assert!(c[..7].iter().all(|&v| v == 0.5));
    // The gradient passes on [min, max], bounds included (torch.clamp's backward).
    let dy = upload(&[3.0; 8], &[8]);
    let g = t.clamp_backward(-1.0, 2.0, &dy).unwrap().to_vec().unwrap();
    assert_eq!(g, vec![0.0, 3.0, 3.0, 3.0, 3.0, 0.0, 0.0, 0.0]);
}

#[test]
fn abs_sqrt_and_pow_gradients_at_their_special_points() {
    let x = upload(&[-2.0, -0.0, 0.0, 3.0], &[4]);
    let dy = upload(&[1.5; 4], &[4]);
    // sign(0) = 0, as PyTorch.
    assert_eq!(
        x.abs_backward(&dy).unwrap().to_vec().unwrap(),
        vec![-1.5, 0.0, 0.0, 1.5]
    );
    // p = 0: the gradient is 0 everywhere, even at x = 0 (PyTorch); p = 1: dy.
    assert_eq!(
        x.pow_backward(0.0, &dy).unwrap().to_vec().unwrap(),
        vec![0.0; 4]
    );
    assert_eq!(
        x.pow_backward(1.0, &dy).unwrap().to_vec().unwrap(),
        vec![1.5; 4]
    );
    // 3x²·dy, negative x included.
    assert_eq!(
        x.pow_backward(3.0, &dy).unwrap().to_vec().unwrap(),
        vec![18.0, 0.0, 0.0, 40.5]
    );
    // √'s from its output: dy/(2y), ∞ at y = 0 like PyTorch's.
    let y = upload(&[0.0, 2.0], &[2]);
    let d = y
        .sqrt_backward(&upload(&[1.0, 1.0], &[2]))
        .unwrap()
        .to_vec()
        .unwrap();
    assert_eq!(d, vec![f32::INFINITY, 0.25]);
}

#[test]
fn bad_constants_are_errors_naming_the_values() {
    let t = upload(&[1.0, 2.0], &[2]);
    let message = |r: Result<Tensor, Error>| match r {
        Err(e @ Error::InvalidArgument { .. }) => e.to_string(),
        other => panic!("expected InvalidArgument, got {other:?}"),
    };
    let m = message(t.clamp(2.0, 1.0));
    assert!(
        m.contains("clamp") && m.contains("min = 2") && m.contains("max = 1"),
        "{m}"
    );
    let m = message(t.clamp(f32::NAN, 1.0));
    assert!(m.contains("min = NaN"), "{m}");
    let m = message(t.clamp(0.0, f32::NAN));
    assert!(m.contains("max = NaN"), "{m}");
    for p in [f32::INFINITY, f32::NEG_INFINITY, f32::NAN] {
        let m = message(t.pow(p));
        assert!(m.contains("pow") && m.contains(&p.to_string()), "{m}");
    }
    // The gradient ops check theirs too.
    let m = message(t.clamp_backward(1.0, -1.0, &t));
    assert!(m.contains("min = 1") && m.contains("max = -1"), "{m}");
    let m = message(t.pow_backward(f32::NAN, &t));
    assert!(m.contains("NaN"), "{m}");
}

#[test]
fn unary_large_case_spans_a_folded_grid() {
    // More than 65535 workgroups of 256: the grid folds into y.
    let n = 65_536 * 256 + 3;
    let x: Vec<f32> = (0..n).map(|i| (i % 97) as f32 - 48.0).collect();
    let y = upload(&x, &[n]).relu().unwrap().to_vec().unwrap();
    assert_eq!(y, unary_cpu(&x, Unary::Relu));
}

/// The masks (equal, greater, less) against the CPU reference, broadcasting, on values
/// with ties; and `select` over every broadcasting pattern the kernel takes, its condition
/// read as nonzero from the bits (NaN is true, −0 is false).
#[test]
fn masks_and_select_match_reference() {
    let cases: [(&[usize], &[usize], &[usize]); 7] = [
        (&[7], &[7], &[7]),
        (&[1031], &[1031], &[1031]),
        (&[3, 1], &[1, 5], &[]),
        (&[2, 3, 5, 7], &[3, 1, 7], &[7]),
        (&[], &[2, 3], &[3]),
        (&[4, 1, 1], &[1, 3, 1], &[1, 1, 2]),
        (&[0, 3], &[3], &[1]),
    ];
    let mut rng = Rng::new(21);
    // Values on a coarse grid, so that ties occur.
    let mut grid =
        |n: usize| -> Vec<f32> { (0..n).map(|_| (rng.uniform(-3.0, 3.0)).round()).collect() };
    for (c_shape, a_shape, b_shape) in cases {
        let c = grid(c_shape.iter().product());
        let a = grid(a_shape.iter().product());
        let b = grid(b_shape.iter().product());
        for op in [Binary::Equal, Binary::Greater, Binary::Less] {
            let out = upload(&a, a_shape).zip(&upload(&b, b_shape), op).unwrap();
            let (expected, shape) = binary_cpu(&a, a_shape, &b, b_shape, op).unwrap();
            assert_eq!(out.shape(), &shape[..]);
            assert_eq!(
                out.to_vec().unwrap(),
                expected,
                "{op:?} {a_shape:?} {b_shape:?}"
            );
        }
        let mut condition = c.clone();
        if let Some(first) = condition.first_mut() {
            *first = f32::NAN;
        }
        if condition.len() > 1 {
            condition[1] = -0.0;
        }
        let out = Tensor::select(
            &upload(&condition, c_shape),
            &upload(&a, a_shape),
            &upload(&b, b_shape),
        )
        .unwrap();
        let (expected, shape) =
            select_cpu((&condition, c_shape), (&a, a_shape), (&b, b_shape)).unwrap();
        assert_eq!(
            out.shape(),
            &shape[..],
            "{c_shape:?} {a_shape:?} {b_shape:?}"
        );
        assert_eq!(
            out.to_vec().unwrap(),
            expected,
            "{c_shape:?} {a_shape:?} {b_shape:?}"
        );
    }
    // The CPU reference itself: NaN selects on_true, −0 on_false.
    let (picked, _) = select_cpu(
        (&[f32::NAN, -0.0, 2.0], &[3]),
        (&[1.0, 1.0, 1.0], &[3]),
        (&[5.0], &[1]),
    )
    .unwrap();
    assert_eq!(picked, [1.0, 5.0, 1.0]);
}

#[test]
fn select_refuses_shapes_that_do_not_broadcast() {
    let c = upload(&[1.0; 6], &[2, 3]);
    let a = upload(&[1.0; 4], &[4]);
    let b = upload(&[0.0], &[]);
    let message = Tensor::select(&c, &a, &b).unwrap_err().to_string();
    assert!(
        message.contains("condition [2, 3], on_true [4] and on_false []"),
        "{message}"
    );
}

/// Eager ops past four axes: operands whose axes coalesce into four broadcast (the kernel
/// runs on free reshapes), derivative ops of one shape run, `select` too; a pattern that
/// needs five axes is refused naming the shapes.
#[test]
fn eager_elementwise_ops_past_rank_four() {
    let mut rng = Rng::new(12);
    let to_f64 = |v: &[f32]| v.iter().map(|&x| f64::from(x)).collect::<Vec<f64>>();
    let cases: [(&[usize], &[usize]); 3] = [
        (&[2, 3, 2, 2, 3], &[3]),
        (&[2, 3, 1, 1, 2, 2], &[1, 1, 2, 3, 1, 1]),
        (&[1, 2, 1, 3, 1], &[2, 1, 1, 1, 3, 1]),
    ];
    for (a_shape, b_shape) in cases {
        let a = rng.vec(a_shape.iter().product(), -2.0, 2.0);
        let b = rng.vec(b_shape.iter().product(), -2.0, 2.0);
        let (ga, gb) = (upload(&a, a_shape), upload(&b, b_shape));
        let product = ga.mul(&gb).unwrap();
        let expected =
            broadcast_reference(&to_f64(&a), a_shape, &to_f64(&b), b_shape, |x, y| x * y);
        let expected: Vec<f32> = expected.iter().map(|&v| v as f32).collect();
        assert_eq!(
            product.to_vec().unwrap(),
            expected,
            "{a_shape:?} · {b_shape:?}"
        );
        let rank = a_shape.len().max(b_shape.len());
        assert_eq!(product.shape().len(), rank);
        // select(a > b, a, b) = max(a, b).
        let mask = ga.greater(&gb).unwrap();
        let max = Tensor::select(&mask, &ga, &gb).unwrap();
        let expected = broadcast_reference(&to_f64(&a), a_shape, &to_f64(&b), b_shape, f64::max);
        let expected: Vec<f32> = expected.iter().map(|&v| v as f32).collect();
        assert_eq!(
            max.to_vec().unwrap(),
            expected,
            "max {a_shape:?} {b_shape:?}"
        );
    }
    // A derivative op over two tensors of one rank-5 shape.
    let x = rng.vec(2 * 3 * 2 * 2 * 3, -2.0, 2.0);
    let dy = rng.vec(x.len(), -1.0, 1.0);
    let shape = [2, 3, 2, 2, 3];
    let grad = upload(&x, &shape)
        .zip(&upload(&dy, &shape), Binary::ReluGrad)
        .unwrap();
    assert_eq!(grad.shape(), shape);
    let (expected, _) = binary_cpu(&x, &[x.len()], &dy, &[x.len()], Binary::ReluGrad).unwrap();
    assert_eq!(grad.to_vec().unwrap(), expected);

    let a = upload(&[0.0; 12], &[2, 1, 3, 1, 2]);
    let b = upload(&[0.0; 24], &[1, 4, 3, 2, 1]);
    let message = a.add(&b).unwrap_err().to_string();
    assert!(
        message.contains("more than 4 axes") && message.contains("[1, 4, 3, 2, 1]"),
        "{message}"
    );
    let c = upload(&[0.0; 90], &[2, 5, 3, 1, 3]);
    let message = a.add(&c).unwrap_err().to_string();
    assert!(
        message.contains("[2, 1, 3, 1, 2]") && message.contains("[2, 5, 3, 1, 3]"),
        "{message}"
    );
}

#[test]
fn binary_ops_broadcast_like_numpy() {
    let cases: [(&[usize], &[usize]); 13] = [
        (&[1], &[1]),
        // A single value against a multiple of 4 elements: four per invocation on CPU
        // adapters, the value read once.
        (&[1032], &[1]),
        (&[3, 4], &[]),
        (&[2, 8], &[1, 1]),
        (&[7], &[7]),
        // Same shapes of a multiple of 4 elements: four per invocation on CPU adapters.
        (&[4], &[4]),
        (&[3, 260], &[3, 260]),
        (&[3, 4, 5], &[5]),
        (&[3, 1], &[1, 4]),
        (&[13, 1], &[13, 17]),
        (&[2, 3, 5, 7], &[3, 1, 7]),
        (&[], &[2, 3]),
        (&[1031], &[1]),
    ];
    let mut rng = Rng::new(3);
    for (a_shape, b_shape) in cases {
        for op in [Binary::Add, Binary::Sub, Binary::Mul, Binary::Div] {
            let a = rng.vec(a_shape.iter().product(), -2.0, 2.0);
            let b: Vec<f32> = rng.vec(b_shape.iter().product(), 0.5, 2.0);
            let out = upload(&a, a_shape).zip(&upload(&b, b_shape), op).unwrap();
            let (expected, shape) = binary_cpu(&a, a_shape, &b, b_shape, op).unwrap();
            assert_eq!(out.shape(), &shape[..]);
            // One f32 rounding of an exact-input operation: half an ULP of the result.
            assert_close(
                &format!("{op:?} {a_shape:?} {b_shape:?}"),
                &out.to_vec().unwrap(),
                &expected,
                EPS,
                0.0,
            );
        }
    }
}

#[test]
fn activation_derivatives_match_reference() {
    let mut rng = Rng::new(8);
    // [4, 3]: a multiple of 4, four elements per invocation on CPU adapters.
    for shape in [vec![1], vec![5, 7], vec![259], vec![4, 3]] {
        let n: usize = shape.iter().product();
        let x = rng.vec(n, -3.0, 3.0);
        let dy = rng.vec(n, -1.0, 1.0);
        let (gx, gdy) = (upload(&x, &shape), upload(&dy, &shape));
        let y_tanh = unary_cpu(&x, Unary::Tanh);
        let y_sigmoid = unary_cpu(&x, Unary::Sigmoid);
        let cases = [
            (
                Binary::TanhGrad,
                upload(&y_tanh, &shape).tanh_backward(&gdy).unwrap(),
                &y_tanh,
            ),
            (Binary::ReluGrad, gx.relu_backward(&gdy).unwrap(), &x),
            (
                Binary::SigmoidGrad,
                upload(&y_sigmoid, &shape).sigmoid_backward(&gdy).unwrap(),
                &y_sigmoid,
            ),
            (Binary::AbsGrad, gx.abs_backward(&gdy).unwrap(), &x),
            (
                Binary::ClampGrad {
                    min: -1.0,
                    max: 0.5,
                },
                gx.clamp_backward(-1.0, 0.5, &gdy).unwrap(),
                &x,
            ),
        ];
        for (op, got, forward) in cases {
            let (expected, _) = binary_cpu(forward, &shape, &dy, &shape, op).unwrap();
            // Two or three f32 roundings of values below 1 in magnitude.
            assert_close(
                &format!("{op:?} {shape:?}"),
                &got.to_vec().unwrap(),
                &expected,
                4.0 * EPS,
                EPS,
            );
        }
        // The derivatives built from exp, exp2 and log2 (GELU's Φ and φ, SiLU's σ, the
        // powers): a few dozen ULP of terms of magnitude ≲ 10 (3·x² at |x| ≤ 3 for pow 3).
        let positive: Vec<f32> = x.iter().map(|v| v.abs() + 0.1).collect();
        let gpos = upload(&positive, &shape);
        let y_sqrt = unary_cpu(&positive, Unary::Sqrt);
        let cases = [
            (Binary::GeluGrad, gx.gelu_backward(&gdy).unwrap(), &x),
            (Binary::SiluGrad, gx.silu_backward(&gdy).unwrap(), &x),
            (
                Binary::SqrtGrad,
                upload(&y_sqrt, &shape).sqrt_backward(&gdy).unwrap(),
                &y_sqrt,
            ),
            (
                Binary::PowGrad(3.0),
                gx.pow_backward(3.0, &gdy).unwrap(),
                &x,
            ),
            (
                Binary::PowGrad(-2.0),
                gpos.pow_backward(-2.0, &gdy).unwrap(),
                &positive,
            ),
            (
                Binary::PowGrad(1.5),
                gpos.pow_backward(1.5, &gdy).unwrap(),
                &positive,
            ),
        ];
        for (op, got, forward) in cases {
            let (expected, _) = binary_cpu(forward, &shape, &dy, &shape, op).unwrap();
            assert_close(
                &format!("{op:?} {shape:?}"),
                &got.to_vec().unwrap(),
                &expected,
                64.0 * EPS,
                16.0 * EPS,
            );
        }
    }
}

#[test]
fn derivatives_agree_with_finite_differences_of_the_forward_kernels() {
    // d/dx f(x) ≈ (f(x+h) − f(x−h)) / 2h, with the forward values from the GPU kernels.
    let x: Vec<f32> = vec![-2.5, -1.0, -0.3, 0.4, 1.1, 2.0];
    let h = 1e-2f32;
    let shifted = |d: f32| upload(&x.iter().map(|v| v + d).collect::<Vec<_>>(), &[6]);
    let ones = upload(&[1.0; 6], &[6]);
    let (plus, minus, at) = (shifted(h), shifted(-h), upload(&x, &[6]));
    for (name, forward, backward) in [
        ("tanh", Unary::Tanh, Binary::TanhGrad),
        ("sigmoid", Unary::Sigmoid, Binary::SigmoidGrad),
        ("relu", Unary::Relu, Binary::ReluGrad),
        ("gelu", Unary::Gelu, Binary::GeluGrad),
        ("silu", Unary::Silu, Binary::SiluGrad),
        ("abs", Unary::Abs, Binary::AbsGrad),
        ("pow 3", Unary::Pow(3.0), Binary::PowGrad(3.0)),
        ("pow -1", Unary::Pow(-1.0), Binary::PowGrad(-1.0)),
        (
            "clamp",
            Unary::Clamp {
                min: -1.5,
                max: 1.5,
            },
            Binary::ClampGrad {
                min: -1.5,
                max: 1.5,
            },
        ),
    ] {
        let fp = plus.map(forward).unwrap().to_vec().unwrap();
        let fm = minus.map(forward).unwrap().to_vec().unwrap();
        let numeric: Vec<f32> = fp
            .iter()
            .zip(&fm)
            .map(|(p, m)| (p - m) / (2.0 * h))
            .collect();
        // The derivatives that take the forward input rather than its output.
        let from_input = matches!(
            backward,
            Binary::ReluGrad
                | Binary::GeluGrad
                | Binary::SiluGrad
                | Binary::AbsGrad
                | Binary::PowGrad(_)
                | Binary::ClampGrad { .. }
        );
        let saved = if from_input {
            at.clone()
        } else {
            at.map(forward).unwrap()
        };
        let analytic = saved.zip(&ones, backward).unwrap().to_vec().unwrap();
        // Central differences err by h²·|f'''|/6 ≲ 1e-4 here, plus f32 cancellation ~1e-5
        // (pow −1: |f'''| = 6/|x|⁴ ≤ 740 at x = −0.3, so h²·|f'''|/6 ≈ 1e-2 of |f'| ≈ 11).
        let rtol = if forward == Unary::Pow(-1.0) {
            2e-3
        } else {
            0.0
        };
        assert_close(name, &analytic, &numeric, rtol, 5e-4);
    }
    // √ and non-integer powers on positive x.
    let x: Vec<f32> = vec![0.3, 0.7, 1.1, 2.0, 3.5];
    let shifted = |d: f32| upload(&x.iter().map(|v| v + d).collect::<Vec<_>>(), &[5]);
    let ones = upload(&[1.0; 5], &[5]);
    let (plus, minus, at) = (shifted(h), shifted(-h), upload(&x, &[5]));
    for (name, forward, backward) in [
        ("sqrt", Unary::Sqrt, Binary::SqrtGrad),
        ("pow 2.5", Unary::Pow(2.5), Binary::PowGrad(2.5)),
        ("pow -0.5", Unary::Pow(-0.5), Binary::PowGrad(-0.5)),
    ] {
        let fp = plus.map(forward).unwrap().to_vec().unwrap();
        let fm = minus.map(forward).unwrap().to_vec().unwrap();
        let numeric: Vec<f32> = fp
            .iter()
            .zip(&fm)
            .map(|(p, m)| (p - m) / (2.0 * h))
            .collect();
        // √'s derivative takes its output, the powers' their input.
        let saved = if backward == Binary::SqrtGrad {
            at.map(forward).unwrap()
        } else {
            at.clone()
        };
        let analytic = saved.zip(&ones, backward).unwrap().to_vec().unwrap();
        // h²·|f'''|/6 relative to |f'| stays below 1e-3 at x ≥ 0.3.
        assert_close(name, &analytic, &numeric, 1e-3, 5e-4);
    }
}

// ------------------------------------------------------------------------------ reduce

#[test]
fn reductions_match_reference_on_every_axis() {
    let mut rng = Rng::new(21);
    for shape in [
        vec![1],
        vec![7, 1],
        vec![3, 5, 7],
        vec![2, 3, 5, 11],
        vec![5, 3001],
        vec![1031, 3],
    ] {
        let n: usize = shape.iter().product();
        let x = rng.vec(n, -1.0, 1.0);
        let gx = upload(&x, &shape);
        for axis in 0..shape.len() {
            for op in [Reduce::Sum, Reduce::Max, Reduce::Mean] {
                for variant in [ReduceVariant::Strided, ReduceVariant::Rows] {
                    if variant == ReduceVariant::Rows && axis + 1 != shape.len() {
                        continue; // the rows variant reduces the innermost axis only
                    }
                    let got = gx.reduce_with(op, axis, true, variant).unwrap();
                    let mut out_shape = shape.clone();
                    out_shape[axis] = 1;
                    assert_eq!(got.shape(), &out_shape[..]);
                    let expected = reduce_cpu(&x, &shape, axis, op);
                    // Summing L values of magnitude ≤ 1 in f32 in any order errs by ≤ L·ε·Σ|x| ≤ L²·ε.
                    let len = shape[axis] as f64;
                    assert_close(
                        &format!("{op:?} {variant:?} {shape:?} axis {axis}"),
                        &got.to_vec().unwrap(),
                        &expected,
                        0.0,
                        len * len * EPS,
                    );
                }
            }
        }
    }
}

#[test]
fn reductions_over_empty_axes_follow_onnx() {
    let x = upload(&[], &[2, 0, 4]);
    let sum = x.sum(1, true).unwrap();
    assert_eq!(
        (sum.shape(), sum.to_vec().unwrap()),
        (&[2, 1, 4][..], vec![0.0; 8])
    );
    let max = x.max(-2, false).unwrap();
    assert_eq!(max.shape(), &[2, 4]);
    assert!(max
        .to_vec()
        .unwrap()
        .iter()
        .all(|v| *v == f32::NEG_INFINITY));
    // Reducing a non-empty axis of an empty tensor gives an empty tensor.
    assert_eq!(x.sum(2, true).unwrap().shape(), &[2, 0, 1]);
}

// -------------------------------------------------------------------- copy / transpose

fn permutations(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![vec![]];
    }
    let mut out = Vec::new();
    for p in permutations(n - 1) {
        for i in 0..n {
            let mut q = p.clone();
            q.insert(i, n - 1);
            out.push(q);
        }
    }
    out
}

#[test]
fn permute_matches_reference_for_every_permutation() {
    let mut rng = Rng::new(4);
    for shape in [
        vec![1],
        vec![7, 1],
        vec![3, 5],
        vec![2, 3, 5],
        vec![3, 1, 5, 7],
        vec![2, 3, 5, 7],
    ] {
        let x = rng.vec(shape.iter().product(), -1.0, 1.0);
        let gx = upload(&x, &shape);
        for perm in permutations(shape.len()) {
            let got = gx.permute(&perm).unwrap();
            let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
            assert_eq!(got.shape(), &out_shape[..]);
            assert_eq!(
                got.to_vec().unwrap(),
                permute_cpu(&x, &shape, &perm),
                "{shape:?} {perm:?}"
            );
        }
    }
}

#[test]
fn transpose_large_case_and_negative_axes() {
    let (rows, cols) = (1031, 2053);
    let x: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
    let t = upload(&x, &[rows, cols]).transpose(-1, -2).unwrap();
    assert_eq!(t.shape(), &[cols, rows]);
    assert_eq!(t.to_vec().unwrap(), permute_cpu(&x, &[rows, cols], &[1, 0]));
}

#[test]
fn broadcast_to_and_copy() {
    let x = upload(&[1.0, 2.0, 3.0], &[3, 1]);
    let b = x.broadcast_to(&[2, 3, 2]).unwrap();
    assert_eq!(
        b.to_vec().unwrap(),
        vec![1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0]
    );
    let c = b.copy().unwrap();
    assert_eq!(c.to_vec().unwrap(), b.to_vec().unwrap());
    assert!(x.broadcast_to(&[2, 2]).is_err());
}

use shadergrad::gpu::Autotune;

/// A device of its own, so that its tuning settings do not reach other tests.
fn own_device() -> shadergrad::Gpu {
    shadergrad::Gpu::default_adapter().expect("an adapter")
}

#[test]
fn the_autotuner_times_a_new_class_once_and_remembers_it_on_disk() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("autotune");
    let _ = std::fs::remove_dir_all(&dir);
    let file = dir.join("tuning.json");
    let shape = GemmShape::contiguous(1, (40, 36, 12), false, false);
    let gpu = own_device();
    // A library device tunes only when asked: it opens with the fixed rules, writing nothing.
    assert!(!gpu.autotune());
    assert_eq!(gpu.tuning_file(), None);
    gpu.set_autotune(Autotune::File(file.clone()));
    let picked = MatmulVariant::choose(&gpu, &shape);
    assert!(picked.supports(&gpu, &shape));
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let choices = saved["choices"].as_object().unwrap();
    assert_eq!(choices.len(), 1, "{saved}");
    let (class, variant) = choices.iter().next().unwrap();
    assert!(class.contains("m64 n64 k16"), "{class}");
    // The class names the version of the shaders it was tuned for.
    assert!(class.starts_with("matmul@"), "{class}");
    assert_eq!(variant, picked.name());
    assert!(saved["adapter"]["name"].is_string());

    // Another device reads the file: a choice written there is what it uses.
    let edited =
        serde_json::json!({ "adapter": saved["adapter"], "choices": { class.clone(): "tiled" } });
    std::fs::write(&file, edited.to_string()).unwrap();
    let other = own_device();
    other.set_autotune(Autotune::File(file.clone()));
    assert_eq!(MatmulVariant::choose(&other, &shape), MatmulVariant::Tiled);
    // The same class, another size within it.
    let similar = GemmShape { m: 33, ..shape };
    assert_eq!(
        MatmulVariant::choose(&other, &similar),
        MatmulVariant::Tiled
    );

    // Off: the fixed rule, whatever the file says.
    other.set_autotune(Autotune::Off);
    assert_eq!(
        MatmulVariant::choose(&other, &shape),
        MatmulVariant::rule(&other, &shape)
    );

    // A corrupt file is only a cache: it counts as empty.
    std::fs::write(&file, "{ not json").unwrap();
    let third = own_device();
    third.set_autotune(Autotune::File(file.clone()));
    assert!(MatmulVariant::choose(&third, &shape).supports(&third, &shape));
}

/// No adapter here has matrix units (lavapipe reports no cooperative matrices), so the
/// cooperative-matrix kernel is checked as far as a CPU can: its WGSL parses, validates
/// and translates to SPIR-V for every layout the launcher specializes it to. On an adapter
/// with the units, `check_gemm` runs it against the reference like every other variant.
#[test]
fn the_cooperative_matrix_kernel_translates_to_spirv_for_every_layout() {
    use naga::valid::{Capabilities, ShaderStages, SubgroupOperationSet, ValidationFlags};
    let source = shadergrad::kernels::matmul::COOP_SHADER.wgsl;
    let module = naga::front::wgsl::parse_str(source)
        .unwrap_or_else(|e| panic!("{}", e.emit_to_string(source)));
    let info = naga::valid::Validator::new(
        ValidationFlags::all(),
        Capabilities::COOPERATIVE_MATRIX | Capabilities::SHADER_FLOAT16 | Capabilities::SUBGROUP,
    )
    .subgroup_stages(ShaderStages::COMPUTE)
    .subgroup_operations(SubgroupOperationSet::all())
    .validate(&module)
    .unwrap_or_else(|e| panic!("{}", e.emit_to_string(source)));
    let flag = |b: bool| f64::from(u8::from(b));
    for layout in 0..16u8 {
        let mut constants = naga::back::PipelineConstants::default();
        for (bit, name) in ["TRANS_A", "TRANS_B", "HAS_C", "HAS_BIAS"]
            .iter()
            .enumerate()
        {
            constants.insert(name.to_string(), flag(layout & (1 << bit) != 0));
        }
        let entry = (naga::ShaderStage::Compute, "matmul_coop");
        let (module, info) = naga::back::pipeline_constants::process_overrides(
            &module,
            &info,
            Some(entry),
            &constants,
        )
        .unwrap();
        let words = naga::back::spv::write_vec(
            &module,
            &info,
            &naga::back::spv::Options::default(),
            Some(&naga::back::spv::PipelineOptions {
                shader_stage: naga::ShaderStage::Compute,
                entry_point: "matmul_coop".to_string(),
            }),
        )
        .unwrap_or_else(|e| panic!("layout {layout:04b}: {e}"));
        assert_eq!(words[0], 0x0723_0203, "SPIR-V magic number");
    }
}

#[test]
fn top_k_variants_match_the_cpu_reference_on_rows_full_of_ties() {
    use shadergrad::kernels::top_k::{top_k_cpu, top_k_dispatch, TopKVariant, MAX_K};
    use shadergrad::Indices;
    let gpu = gpu();
    let mut rng = Rng::new(47);
    for variant in TopKVariant::ALL {
        for (rows, cols, k) in [
            (3, 1, 1),
            (70, 39, 6),
            (5, 300, 16),
            (2, 1001, 7),
            (2, 700, MAX_K),
        ] {
            let x: Vec<f32> = (0..rows * cols)
                .map(|_| rng.below(9) as f32 - 4.0)
                .collect();
            let input = Tensor::from_slice(gpu, &x, &[rows, cols]).unwrap();
            let values = Tensor::zeros(gpu, &[rows, k]).unwrap();
            let indices = Indices::from_slice(gpu, &vec![0; rows * k], &[rows, k]).unwrap();
            let dispatch = top_k_dispatch(&input, &values, &indices, k, Some(variant)).unwrap();
            gpu.submit(&[], &[dispatch]).unwrap();
            let expected = top_k_cpu(&x, cols, k);
            let what = format!("{variant:?} [{rows}, {cols}] k {k}");
            let expected_indices: Vec<u32> = expected.iter().flatten().map(|&(i, _)| i).collect();
            let expected_values: Vec<f32> = expected.iter().flatten().map(|&(_, v)| v).collect();
            assert_eq!(indices.to_vec().unwrap(), expected_indices, "{what}");
            assert_eq!(values.to_vec().unwrap(), expected_values, "{what}");
        }
    }
}
