//! The conv family against its f64 CPU references: the convolution forward (both variants)
//! on odd shapes, every gradient against finite differences, max pooling and its backward,
//! and the errors for bad shapes and options.

mod common;

use common::{assert_gradient, assert_within, gpu, numeric_gradient, weighted_sum};
use shadergrad::kernels::conv::{conv_cpu, max_pool1d_cpu, ConvGeometry};
use shadergrad::rng::Rng;
use shadergrad::{Conv1d, Conv2d, ConvVariant, Error, MaxPool1d, Tensor};

/// f32 epsilon as f64.
const EPS: f64 = f32::EPSILON as f64;

fn upload(data: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_slice(gpu(), data, shape).unwrap()
}

fn wide(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| f64::from(x)).collect()
}

fn abs(v: &[f64]) -> Vec<f64> {
    v.iter().map(|x| x.abs()).collect()
}

// ------------------------------------------------------------------------ forward

/// One convolution (rank 3 or 4 by `x_shape`) on the GPU with `variant` (or the default
/// rule) against the f64 reference. Tolerance: the forward error bound of a K-term f32 dot
/// product plus the bias, γ = (K+2)·ε times Σ|w·x| + |b| per element (the reference run on
/// absolute values), with K = C·KH·KW. A wrong tap or padding is off by a whole term.
fn check_forward(
    seed: u64,
    x_shape: &[usize],
    w_shape: &[usize],
    options: Conv2d,
    with_bias: bool,
    variant: Option<ConvVariant>,
) {
    let mut rng = Rng::new(seed);
    let x = rng.vec(x_shape.iter().product(), -1.0, 1.0);
    let w = rng.vec(w_shape.iter().product(), -1.0, 1.0);
    let b = rng.vec(w_shape[0], -1.0, 1.0);
    let (gx, gw, gb) = (
        upload(&x, x_shape),
        upload(&w, w_shape),
        upload(&b, &[b.len()]),
    );
    let bias = with_bias.then_some(&gb);
    let y = match (variant, x_shape.len()) {
        (Some(variant), _) => gx.conv_with(&gw, bias, options, variant),
        (None, 3) => gx.conv1d(
            &gw,
            bias,
            Conv1d {
                stride: options.stride[1],
                pad_left: options.pads[1],
                pad_right: options.pads[3],
            },
        ),
        (None, _) => gx.conv2d(&gw, bias, options),
    }
    .unwrap();

    let g = ConvGeometry::new("test", x_shape, w_shape, options).unwrap();
    let expected_shape: Vec<usize> = if x_shape.len() == 3 {
        vec![g.batch, g.out_channels, g.out_w]
    } else {
        g.output_shape().to_vec()
    };
    let what = format!("conv {x_shape:?} * {w_shape:?} {options:?} bias {with_bias} {variant:?}");
    assert_eq!(y.shape(), expected_shape, "{what}");
    let b64 = wide(&b);
    let expected = conv_cpu(&wide(&x), &wide(&w), with_bias.then_some(&b64[..]), &g);
    let b_abs = abs(&b64);
    let magnitude = conv_cpu(
        &abs(&wide(&x)),
        &abs(&wide(&w)),
        with_bias.then_some(&b_abs[..]),
        &g,
    );
    let terms = g.weight_row() as f64 + 2.0;
    let expected32: Vec<f32> = expected.iter().map(|&v| v as f32).collect();
    assert_within(&what, &y.to_vec().unwrap(), &expected32, |i| {
        terms * EPS * magnitude[i] + 1e-30
    });
}

/// Stride and pads of a sequence, as [`Conv2d`] (what `conv_with` takes).
fn seq(stride: usize, pad_left: usize, pad_right: usize) -> Conv2d {
    Conv1d {
        stride,
        pad_left,
        pad_right,
    }
    .into()
}

/// The 1-D cases: (x N×C×L, weight O×C×k, options).
fn sequence_cases() -> Vec<([usize; 3], [usize; 3], Conv2d)> {
    vec![
        // L = 1 and k = 1.
        ([2, 3, 1], [4, 3, 1], seq(1, 0, 0)),
        // k = 1 over primes.
        ([3, 5, 7], [11, 5, 1], seq(1, 0, 0)),
        // Primes, "same" padding.
        ([2, 7, 13], [5, 7, 3], seq(1, 1, 1)),
        // k > L, made to fit by padding; asymmetric pads.
        ([2, 3, 2], [3, 3, 5], seq(1, 2, 1)),
        ([1, 2, 3], [2, 2, 6], seq(2, 3, 2)),
        // Stride > 1, including stride > k (inputs that no window reads).
        ([3, 4, 17], [9, 4, 4], seq(3, 2, 0)),
        ([2, 3, 19], [3, 3, 2], seq(5, 0, 1)),
        // Tiles of 16 channels × 8 columns: channels and columns that do not fill them.
        ([2, 10, 131], [33, 10, 3], seq(1, 1, 0)),
        ([1, 17, 65], [9, 17, 5], seq(2, 2, 2)),
    ]
}

#[test]
fn conv1d_matches_reference_on_odd_shapes() {
    let variants = [
        None,
        Some(ConvVariant::Direct),
        Some(ConvVariant::Im2colGemm),
    ];
    let mut seed = 0;
    for (x, w, options) in sequence_cases() {
        for variant in variants {
            for with_bias in [false, true] {
                seed += 1;
                check_forward(seed, &x, &w, options, with_bias, variant);
            }
        }
    }
}

#[test]
fn conv2d_matches_reference_on_odd_shapes() {
    let cases: [([usize; 4], [usize; 4], Conv2d); 5] = [
        ([1, 1, 1, 1], [1, 1, 1, 1], Conv2d::default()),
        (
            [2, 3, 7, 5],
            [5, 3, 3, 2],
            Conv2d {
                stride: [2, 1],
                pads: [1, 0, 2, 1],
            },
        ),
        // A kernel taller than the image, made to fit by padding.
        (
            [1, 2, 2, 5],
            [3, 2, 4, 3],
            Conv2d {
                stride: [1, 2],
                pads: [1, 1, 1, 0],
            },
        ),
        // 9 columns: a tile and one column; 19 channels: a tile and 3.
        (
            [2, 19, 9, 9],
            [19, 19, 3, 3],
            Conv2d {
                stride: [1, 1],
                pads: [1, 1, 1, 1],
            },
        ),
        (
            [3, 2, 13, 11],
            [4, 2, 5, 3],
            Conv2d {
                stride: [3, 2],
                pads: [0, 2, 1, 0],
            },
        ),
    ];
    let mut seed = 100;
    for (x, w, options) in cases {
        for variant in [
            None,
            Some(ConvVariant::Direct),
            Some(ConvVariant::Im2colGemm),
        ] {
            seed += 1;
            check_forward(seed, &x, &w, options, true, variant);
        }
    }
}

#[test]
fn conv_large_text_cnn_case() {
    // A text-CNN window: 16 sentences of 127 words, 64-wide embeddings, 100 trigram filters.
    for variant in ConvVariant::ALL {
        check_forward(
            200,
            &[16, 64, 127],
            &[100, 64, 3],
            seq(1, 1, 1),
            true,
            Some(variant),
        );
    }
}

#[test]
fn conv_over_no_channels_is_the_bias() {
    let x = upload(&[], &[2, 0, 5]);
    let w = upload(&[], &[3, 0, 2]);
    let b = upload(&[0.5, -1.0, 2.0], &[3]);
    for variant in ConvVariant::ALL {
        let y = x.conv_with(&w, Some(&b), seq(1, 0, 0), variant).unwrap();
        assert_eq!(y.shape(), [2, 3, 4]);
        let expected: Vec<f32> = (0..2)
            .flat_map(|_| [0.5f32, -1.0, 2.0].map(|v| [v; 4]))
            .flatten()
            .collect();
        assert_eq!(y.to_vec().unwrap(), expected, "{variant:?}");
    }
    // And an empty batch gives an empty output.
    let empty = upload(&[], &[0, 3, 5]);
    let w = upload(&[0.0; 6], &[1, 3, 2]);
    assert_eq!(
        empty.conv1d(&w, None, Conv1d::default()).unwrap().shape(),
        [0, 1, 4]
    );
}

#[test]
fn conv_is_deterministic() {
    let mut rng = Rng::new(7);
    let x = upload(&rng.vec(2 * 9 * 70, -1.0, 1.0), &[2, 9, 70]);
    let w = upload(&rng.vec(10 * 9 * 3, -1.0, 1.0), &[10, 9, 3]);
    let dy = upload(&rng.vec(2 * 10 * 68, -1.0, 1.0), &[2, 10, 68]);
    let options = Conv1d::default();
    let run = || {
        let y = x.conv1d(&w, None, options).unwrap().to_vec().unwrap();
        let grads = x.conv1d_backward(&w, &dy, options, true).unwrap();
        let bits =
            |t: &Tensor| -> Vec<u32> { t.to_vec().unwrap().iter().map(|v| v.to_bits()).collect() };
        (
            y.iter().map(|v| v.to_bits()).collect::<Vec<u32>>(),
            bits(&grads.input),
            bits(&grads.weight),
            bits(grads.bias.as_ref().unwrap()),
        )
    };
    assert_eq!(run(), run());
}

// ------------------------------------------------------------------------ backward

/// Every gradient of one convolution against central differences of the f64 reference.
///
/// The loss L = Σ r·y is linear in each of x, w and b, so the differences are exact up to
/// f64 rounding (~1e-16/h); what remains is the f32 accumulation of the GPU kernels, at
/// most (terms + 2)·ε·Σ|terms| ≲ 1e-5 here for values in [−1, 1] and under 100 terms:
/// rtol 1e-4 with atol 2e-5 covers it and catches any wrong or missing term.
fn check_backward(seed: u64, x_shape: &[usize], w_shape: &[usize], options: Conv2d) {
    let mut rng = Rng::new(seed);
    let g = ConvGeometry::new("test", x_shape, w_shape, options).unwrap();
    let x = rng.vec(x_shape.iter().product(), -1.0, 1.0);
    let w = rng.vec(w_shape.iter().product(), -1.0, 1.0);
    let b = rng.vec(g.out_channels, -1.0, 1.0);
    let y_len: usize = g.output_shape().iter().product();
    let r = rng.vec(y_len, -1.0, 1.0);
    let y_shape: Vec<usize> = if x_shape.len() == 3 {
        vec![g.batch, g.out_channels, g.out_w]
    } else {
        g.output_shape().to_vec()
    };

    let (gx, gw, gr) = (
        upload(&x, x_shape),
        upload(&w, w_shape),
        upload(&r, &y_shape),
    );
    let grads = if x_shape.len() == 3 {
        let options = Conv1d {
            stride: options.stride[1],
            pad_left: options.pads[1],
            pad_right: options.pads[3],
        };
        gx.conv1d_backward(&gw, &gr, options, true)
    } else {
        gx.conv2d_backward(&gw, &gr, options, true)
    }
    .unwrap();
    assert_eq!(grads.input.shape(), x_shape);
    assert_eq!(grads.weight.shape(), w_shape);

    let (x64, w64, b64, r64) = (wide(&x), wide(&w), wide(&b), wide(&r));
    let h = 1e-3;
    let what = format!("{x_shape:?} * {w_shape:?} {options:?}");
    let dx = numeric_gradient(&x64, h, |x| {
        weighted_sum(&r64, &conv_cpu(x, &w64, Some(&b64), &g))
    });
    assert_gradient(
        &format!("dx {what}"),
        &grads.input.to_vec().unwrap(),
        &dx,
        1e-4,
        2e-5,
    );
    let dw = numeric_gradient(&w64, h, |w| {
        weighted_sum(&r64, &conv_cpu(&x64, w, Some(&b64), &g))
    });
    assert_gradient(
        &format!("dw {what}"),
        &grads.weight.to_vec().unwrap(),
        &dw,
        1e-4,
        2e-5,
    );
    let db = numeric_gradient(&b64, h, |b| {
        weighted_sum(&r64, &conv_cpu(&x64, &w64, Some(b), &g))
    });
    assert_gradient(
        &format!("db {what}"),
        &grads.bias.unwrap().to_vec().unwrap(),
        &db,
        1e-4,
        2e-5,
    );
}

#[test]
fn conv1d_gradients_match_finite_differences() {
    check_backward(1, &[2, 3, 11], &[4, 3, 3], seq(1, 1, 1));
    // Stride 2 with one-sided padding.
    check_backward(2, &[2, 9, 7], &[10, 9, 2], seq(2, 1, 0));
    // Channels past a 16-channel tile on both sides, 11 columns (8 + 3), 34 weight columns.
    check_backward(7, &[1, 17, 11], &[18, 17, 2], seq(1, 1, 0));
    // A kernel wider than the input, made to fit by padding.
    check_backward(3, &[1, 2, 3], &[3, 2, 5], seq(1, 2, 2));
    // Stride 3 > k = 2: some inputs meet no window and get a zero gradient.
    check_backward(4, &[1, 2, 10], &[3, 2, 2], seq(3, 0, 0));
    // L = 1, k = 1.
    check_backward(5, &[3, 2, 1], &[2, 2, 1], seq(1, 0, 0));
    // 67 positions: 8 tiles of 8 columns and 3.
    check_backward(6, &[1, 1, 67], &[2, 1, 3], seq(1, 0, 2));
}

#[test]
fn conv2d_gradients_match_finite_differences() {
    check_backward(
        11,
        &[2, 2, 5, 4],
        &[3, 2, 3, 2],
        Conv2d {
            stride: [2, 1],
            pads: [1, 0, 1, 1],
        },
    );
    check_backward(
        12,
        &[1, 3, 4, 6],
        &[2, 3, 2, 3],
        Conv2d {
            stride: [1, 3],
            pads: [0, 2, 1, 0],
        },
    );
}

// ------------------------------------------------------------------------ pooling

fn check_pool(seed: u64, shape: [usize; 3], options: MaxPool1d) {
    let mut rng = Rng::new(seed);
    let x = rng.vec(shape.iter().product(), -1.0, 1.0);
    let (y, argmax) = upload(&x, &shape).max_pool1d(options).unwrap();
    let (expected, expected_argmax) =
        max_pool1d_cpu(&wide(&x), shape[0] * shape[1], shape[2], &options).unwrap();
    let out_len = options.out_len("test", shape[2]).unwrap();
    assert_eq!(y.shape(), [shape[0], shape[1], out_len]);
    assert_eq!(argmax.shape(), y.shape());
    // A maximum is one of the inputs: exact.
    let expected32: Vec<f32> = expected.iter().map(|&v| v as f32).collect();
    assert_eq!(y.to_vec().unwrap(), expected32, "{shape:?} {options:?}");
    assert_eq!(
        argmax.to_vec().unwrap(),
        expected_argmax,
        "{shape:?} {options:?}"
    );
}

fn pool(kernel: usize, stride: usize, pad_left: usize, pad_right: usize) -> MaxPool1d {
    MaxPool1d {
        kernel,
        stride,
        pad_left,
        pad_right,
    }
}

#[test]
fn max_pool1d_matches_reference() {
    check_pool(1, [1, 1, 1], pool(1, 1, 0, 0));
    check_pool(2, [2, 3, 7], pool(2, 1, 0, 0));
    check_pool(3, [3, 5, 13], pool(3, 2, 1, 2));
    check_pool(4, [2, 2, 5], pool(5, 1, 2, 2));
    check_pool(5, [1, 7, 31], pool(4, 5, 3, 0));
    check_pool(6, [4, 67, 257], pool(3, 3, 1, 1));
}

#[test]
fn max_over_time_matches_reference() {
    let mut rng = Rng::new(9);
    for shape in [[1, 1, 1], [3, 5, 7], [2, 300, 131]] {
        let x = rng.vec(shape.iter().product(), -1.0, 1.0);
        let (y, argmax) = upload(&x, &shape).max_over_time().unwrap();
        assert_eq!(y.shape(), [shape[0], shape[1]]);
        assert_eq!(argmax.shape(), [shape[0], shape[1]]);
        let (expected, positions) = max_pool1d_cpu(
            &wide(&x),
            shape[0] * shape[1],
            shape[2],
            &MaxPool1d::new(shape[2]),
        )
        .unwrap();
        let expected32: Vec<f32> = expected.iter().map(|&v| v as f32).collect();
        assert_eq!(y.to_vec().unwrap(), expected32, "{shape:?}");
        assert_eq!(argmax.to_vec().unwrap(), positions, "{shape:?}");
    }
}

#[test]
fn pooling_ties_go_to_the_first_maximum_and_nan_propagates() {
    let nan = f32::NAN;
    let x = [
        1.0, 3.0, 3.0, 2.0, 3.0, // tie: position 1
        -1.0, -1.0, -1.0, -1.0, -1.0, // all equal: position 0
        0.0, nan, 5.0, nan, 1.0, // NaN beats numbers; the first NaN wins
        nan, 9.0, 1.0, 2.0, 3.0, // a leading NaN stays
    ];
    let (y, argmax) = upload(&x, &[2, 2, 5]).max_over_time().unwrap();
    let y = y.to_vec().unwrap();
    assert_eq!(&y[..2], [3.0, -1.0]);
    assert!(y[2].is_nan() && y[3].is_nan(), "{y:?}");
    assert_eq!(argmax.to_vec().unwrap(), [1, 0, 1, 0]);
    let (_, positions) = max_pool1d_cpu(&wide(&x), 4, 5, &MaxPool1d::new(5)).unwrap();
    assert_eq!(positions, [1, 0, 1, 0]);
}

/// Inputs with no near-ties: a shuffled ramp with steps of 0.01, so that moving one value
/// by h = 1e-4 never changes which is the maximum.
fn distinct_values(rng: &mut Rng, n: usize) -> Vec<f32> {
    let mut values: Vec<f32> = (0..n).map(|i| i as f32 * 0.01 - 1.0).collect();
    for i in (1..n).rev() {
        values.swap(i, rng.below(i + 1));
    }
    values
}

/// Pooling is piecewise linear, and away from ties exact under central differences; the
/// GPU sums at most kernel/stride f32 values of dy per position: rtol 1e-5, atol 1e-6.
#[test]
fn max_pool_gradients_match_finite_differences() {
    let mut rng = Rng::new(12);
    let h = 1e-4;
    for (shape, options) in [
        ([2, 3, 11], pool(3, 1, 1, 1)), // overlapping windows: a position can win several
        ([1, 4, 13], pool(2, 3, 1, 0)), // gaps: positions no window covers
        ([3, 2, 6], pool(4, 2, 2, 3)),
    ] {
        let x = distinct_values(&mut rng, shape.iter().product());
        let (y, argmax) = upload(&x, &shape).max_pool1d(options).unwrap();
        let r = rng.vec(y.numel(), -1.0, 1.0);
        let dx = upload(&r, y.shape())
            .max_pool1d_backward(&argmax, shape[2], options)
            .unwrap();
        assert_eq!(dx.shape(), shape);
        let rows = shape[0] * shape[1];
        let numeric = numeric_gradient(&wide(&x), h, |x| {
            weighted_sum(
                &wide(&r),
                &max_pool1d_cpu(x, rows, shape[2], &options).unwrap().0,
            )
        });
        assert_gradient(
            &format!("max_pool1d {shape:?} {options:?}"),
            &dx.to_vec().unwrap(),
            &numeric,
            1e-5,
            1e-6,
        );
    }

    for shape in [[1, 1, 1], [2, 5, 9]] {
        let x = distinct_values(&mut rng, shape.iter().product());
        let (y, argmax) = upload(&x, &shape).max_over_time().unwrap();
        let r = rng.vec(y.numel(), -1.0, 1.0);
        let dx = upload(&r, y.shape())
            .max_over_time_backward(&argmax, shape[2])
            .unwrap();
        let rows = shape[0] * shape[1];
        let numeric = numeric_gradient(&wide(&x), h, |x| {
            let over_time = MaxPool1d::new(shape[2]);
            weighted_sum(
                &wide(&r),
                &max_pool1d_cpu(x, rows, shape[2], &over_time).unwrap().0,
            )
        });
        // dy copied to one position per row: exact.
        assert_gradient(
            &format!("max_over_time {shape:?}"),
            &dx.to_vec().unwrap(),
            &numeric,
            1e-6,
            1e-7,
        );
    }
}

// ------------------------------------------------------------------------ errors

fn message(result: Result<impl std::fmt::Debug, Error>) -> String {
    result.unwrap_err().to_string()
}

#[test]
fn bad_convolutions_are_errors_naming_the_values() {
    let x = upload(&[0.0; 6], &[1, 2, 3]);
    let wide_kernel = upload(&[0.0; 20], &[2, 2, 5]);
    let err = message(x.conv1d(&wide_kernel, None, Conv1d::default()));
    assert!(
        err.contains("5 wide") && err.contains("3 + pads 0 + 0 = 3"),
        "{err}"
    );
    // Padding makes it fit.
    let fits = Conv1d {
        stride: 1,
        pad_left: 1,
        pad_right: 1,
    };
    assert_eq!(
        x.conv1d(&wide_kernel, None, fits).unwrap().shape(),
        [1, 2, 1]
    );

    let other_channels = upload(&[0.0; 6], &[2, 3, 1]);
    let err = x
        .conv1d(&other_channels, None, Conv1d::default())
        .unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
    let err = err.to_string();
    assert!(
        err.contains("2 channels") && err.contains("expects 3"),
        "{err}"
    );

    let w = upload(&[0.0; 4], &[2, 2, 1]);
    let zero_stride = Conv1d {
        stride: 0,
        ..Conv1d::default()
    };
    let err = message(x.conv1d(&w, None, zero_stride));
    assert!(err.contains("stride along L is 0"), "{err}");
    let err = message(x.conv2d(
        &upload(&[0.0; 4], &[2, 2, 1, 1]),
        None,
        Conv2d {
            stride: [0, 1],
            pads: [0; 4],
        },
    ));
    assert!(err.contains("rank 4"), "{err}");
    let image = upload(&[0.0; 6], &[1, 2, 3, 1]);
    let err = message(image.conv2d(
        &upload(&[0.0; 4], &[2, 2, 1, 1]),
        None,
        Conv2d {
            stride: [0, 1],
            pads: [0; 4],
        },
    ));
    assert!(err.contains("stride along H is 0"), "{err}");

    let bad_bias = upload(&[0.0; 3], &[3]);
    let err = message(x.conv1d(&w, Some(&bad_bias), Conv1d::default()));
    assert!(
        err.contains("[3]") && err.contains("2 values, one per output channel"),
        "{err}"
    );

    let err = message(x.conv1d(&upload(&[0.0; 4], &[2, 2]), None, Conv1d::default()));
    assert!(err.contains("[1, 2, 3]") && err.contains("[2, 2]"), "{err}");

    let no_taps = upload(&[], &[2, 2, 0]);
    let err = x.conv1d(&no_taps, None, Conv1d::default()).unwrap_err();
    assert!(matches!(err, Error::ZeroSized { .. }), "{err}");
    let no_steps = upload(&[], &[1, 2, 0]);
    let err = no_steps.conv1d(&w, None, Conv1d::default()).unwrap_err();
    assert!(matches!(err, Error::ZeroSized { .. }), "{err}");

    let wrong_dy = upload(&[0.0; 4], &[1, 2, 2]);
    let err = message(x.conv1d_backward(&w, &wrong_dy, Conv1d::default(), true));
    assert!(
        err.contains("[1, 2, 2]") && err.contains("[1, 2, 3]"),
        "{err}"
    );
}

#[test]
fn bad_poolings_are_errors_naming_the_values() {
    let x = upload(&[0.0; 6], &[1, 2, 3]);
    let err = message(x.max_pool1d(pool(0, 1, 0, 0)));
    assert!(err.contains("kernel 0"), "{err}");
    let err = message(x.max_pool1d(pool(2, 0, 0, 0)));
    assert!(err.contains("stride 0"), "{err}");
    let err = message(x.max_pool1d(pool(2, 1, 2, 0)));
    assert!(
        err.contains("pads 2+0") && err.contains("kernel 2"),
        "{err}"
    );
    let err = message(x.max_pool1d(pool(5, 1, 0, 1)));
    assert!(
        err.contains("window of 5") && err.contains("3 positions"),
        "{err}"
    );
    let err = message(upload(&[0.0; 6], &[2, 3]).max_pool1d(MaxPool1d::new(1)));
    assert!(err.contains("[2, 3]") && err.contains("rank 3"), "{err}");

    let empty = upload(&[], &[2, 3, 0]);
    let err = empty.max_over_time().unwrap_err();
    assert!(matches!(err, Error::ZeroSized { .. }), "{err}");
    let err = message(upload(&[0.0; 2], &[2]).max_over_time());
    assert!(err.contains("[2]"), "{err}");

    let (y, argmax) = x.max_over_time().unwrap();
    let err = message(y.max_over_time_backward(&argmax, 0));
    assert!(err.contains("no time steps"), "{err}");
    let other = upload(&[0.0; 2], &[2, 1]);
    let err = message(other.max_over_time_backward(&argmax, 3));
    assert!(err.contains("[2, 1]") && err.contains("[1, 2]"), "{err}");
    let (y, argmax) = x.max_pool1d(MaxPool1d::new(2)).unwrap();
    let err = message(y.max_pool1d_backward(&argmax, 4, MaxPool1d::new(2)));
    assert!(err.contains("4 positions pool to 3"), "{err}");
}
