//! The indexing family: gather (ONNX Gather) and the embedding lookup with their
//! deterministic scatter-add backward (`shaders/gather.wgsl`), and slice, concat and split
//! with their backward, which extend the strided copies (`shaders/copy.wgsl`).
//!
//! Forward passes are pure copies, so the GPU must match the CPU reference bit for bit.
//! Every backward is checked against central finite differences of the f64 CPU reference.
//! These ops are linear, so central differences are exact up to f64 rounding (about
//! 1e-12 here, whatever h): the tolerances only have to cover the f32 rounding of the GPU,
//! which is none for slice and concat (copies of dy) and the rounding of f32 sums for the
//! scatter-add of gather.

mod common;

use common::{assert_gradient, assert_within, gpu, numeric_gradient, weighted_sum};
use shadergrad::kernels::copy::{
    concat_cpu, permute_cpu, region_copy_dispatch, slice_backward_dispatch, slice_cpu, CopyRegion,
};
use shadergrad::kernels::gather::{
    gather_backward_cpu, gather_backward_dispatch, gather_cpu, gather_dispatch, gather_shape,
};
use shadergrad::rng::Rng;
use shadergrad::{GroupedPositions, Indices, Tensor};

/// f32 epsilon as f64.
const EPS: f64 = f32::EPSILON as f64;

fn upload(data: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_slice(gpu(), data, shape).unwrap()
}

fn upload_ids(ids: &[u32], shape: &[usize]) -> Indices {
    Indices::from_slice(gpu(), ids, shape).unwrap()
}

fn random_ids(rng: &mut Rng, n: usize, below: usize) -> Vec<u32> {
    (0..n).map(|_| rng.below(below) as u32).collect()
}

fn to_f64(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| f64::from(v)).collect()
}

fn bits(x: &[f32]) -> Vec<u32> {
    x.iter().map(|v| v.to_bits()).collect()
}

/// The largest number of times one id occurs.
fn most_repeats(ids: &[u32]) -> usize {
    let mut counts = std::collections::HashMap::new();
    for id in ids {
        *counts.entry(id).or_insert(0) += 1;
    }
    counts.into_values().max().unwrap_or(0)
}

/// Tolerance of an f32 sum of at most `terms` values of magnitude ≤ `magnitude`, against
/// the exact sum: the classic bound (terms − 1)·ε·Σ|v|, plus half an ulp for rounding the
/// exact reference to f32.
fn f32_sum_tolerance(terms: usize, magnitude: f64) -> f64 {
    let total = terms as f64 * magnitude;
    (terms.saturating_sub(1) as f64 + 0.5) * EPS * total + 1e-30
}

// ------------------------------------------------------------------------------- gather

#[test]
fn gather_matches_reference_on_odd_shapes_and_every_axis() {
    let mut rng = Rng::new(11);
    let data_shapes: [&[usize]; 6] = [
        &[1],
        &[7],
        &[3, 5],
        &[2, 3, 5],
        &[3, 1, 5, 7],
        &[2, 3, 1, 5, 7], // rank 5: gather has no rank limit
    ];
    let index_shapes: [&[usize]; 4] = [&[], &[1], &[5], &[2, 3]];
    for shape in data_shapes {
        let x = rng.vec(shape.iter().product(), -1.0, 1.0);
        let gx = upload(&x, shape);
        for axis in 0..shape.len() {
            for index_shape in index_shapes {
                let ids = random_ids(&mut rng, index_shape.iter().product(), shape[axis]);
                let got = gx
                    .gather(axis as isize, &upload_ids(&ids, index_shape))
                    .unwrap();
                assert_eq!(got.shape(), &gather_shape(shape, axis, index_shape)[..]);
                assert_eq!(
                    bits(&got.to_vec().unwrap()),
                    bits(&gather_cpu(&x, shape, axis, &ids)),
                    "data {shape:?} axis {axis} indices {index_shape:?}"
                );
            }
        }
    }
    // Negative axes count from the end; no indices give an empty axis.
    let x = rng.vec(2 * 3 * 5, -1.0, 1.0);
    let got = upload(&x, &[2, 3, 5])
        .gather(-2, &upload_ids(&[2, 0], &[2]))
        .unwrap();
    assert_eq!(
        got.to_vec().unwrap(),
        gather_cpu(&x, &[2, 3, 5], 1, &[2, 0])
    );
    let empty = upload(&x, &[2, 3, 5])
        .gather(1, &upload_ids(&[], &[0]))
        .unwrap();
    assert_eq!(empty.shape(), &[2, 0, 5]);
}

#[test]
fn embedding_with_a_large_vocabulary() {
    let mut rng = Rng::new(12);
    let (vocab, dim) = (10_007, 33);
    let table = rng.vec(vocab * dim, -1.0, 1.0);
    let mut ids = random_ids(&mut rng, 13 * 37, vocab);
    ids[0] = 0;
    ids[1] = (vocab - 1) as u32;
    ids[2] = ids[3]; // a repeat
    let gids = upload_ids(&ids, &[13, 37]);
    let rows = upload(&table, &[vocab, dim]).embedding(&gids).unwrap();
    assert_eq!(rows.shape(), &[13, 37, dim]);
    assert_eq!(
        bits(&rows.to_vec().unwrap()),
        bits(&gather_cpu(&table, &[vocab, dim], 0, &ids))
    );

    let dy = rng.vec(ids.len() * dim, -1.0, 1.0);
    let dtable = upload(&dy, &[13, 37, dim])
        .embedding_backward(&gids, vocab)
        .unwrap();
    assert_eq!(dtable.shape(), &[vocab, dim]);
    let expected = gather_backward_cpu(&dy, &[vocab, dim], 0, &ids);
    let tolerance = f32_sum_tolerance(most_repeats(&ids), 1.0);
    assert_within(
        "embedding backward V=10007 D=33",
        &dtable.to_vec().unwrap(),
        &expected,
        |_| tolerance,
    );
}

#[test]
fn embedding_large_case_spans_a_folded_grid() {
    // More than 65535 workgroups of 256 in the forward (the grid folds into y), and a
    // backward where each row sums about 260 positions.
    let mut rng = Rng::new(13);
    let (vocab, dim, tokens) = (1000, 64, 262_147);
    let table = rng.vec(vocab * dim, -1.0, 1.0);
    let ids = random_ids(&mut rng, tokens, vocab);
    let gids = upload_ids(&ids, &[tokens]);
    let rows = upload(&table, &[vocab, dim]).embedding(&gids).unwrap();
    assert!(tokens * dim > 65_535 * 256);
    assert!(rows.to_vec().unwrap() == gather_cpu(&table, &[vocab, dim], 0, &ids));

    let dy = rng.vec(tokens * dim, -1.0, 1.0);
    let dtable = upload(&dy, &[tokens, dim])
        .embedding_backward(&gids, vocab)
        .unwrap();
    let expected = gather_backward_cpu(&dy, &[vocab, dim], 0, &ids);
    let tolerance = f32_sum_tolerance(most_repeats(&ids), 1.0);
    assert_within(
        "embedding backward, 262147 tokens",
        &dtable.to_vec().unwrap(),
        &expected,
        |_| tolerance,
    );
}

/// The scatter-add sums each id's positions in increasing order, so the result is the
/// same on every run: here bit for bit twice, and equal to the sequential f32 sum in that
/// order on the CPU. Many repeats of few ids make any reordering visible.
#[test]
fn scatter_add_is_deterministic() {
    let mut rng = Rng::new(14);
    let (vocab, dim, tokens) = (7, 33, 5000);
    let ids = random_ids(&mut rng, tokens, vocab);
    // Magnitudes spread over several decades so that the sum depends on its order.
    let dy: Vec<f32> = (0..tokens * dim)
        .map(|_| rng.uniform(-1.0, 1.0) * 10f32.powi(rng.below(6) as i32 - 3))
        .collect();
    let gids = upload_ids(&ids, &[tokens]);
    let gdy = upload(&dy, &[tokens, dim]);
    let first = gdy
        .embedding_backward(&gids, vocab)
        .unwrap()
        .to_vec()
        .unwrap();
    let second = gdy
        .embedding_backward(&gids, vocab)
        .unwrap()
        .to_vec()
        .unwrap();
    assert_eq!(bits(&first), bits(&second), "two runs differ");

    let mut sequential = vec![0.0f32; vocab * dim];
    for (k, &id) in ids.iter().enumerate() {
        for c in 0..dim {
            sequential[id as usize * dim + c] += dy[k * dim + c];
        }
    }
    assert_eq!(bits(&first), bits(&sequential), "not the sequential order");
}

/// Every span (columns per invocation: 1 on GPUs, more on CPU-like adapters) gives the
/// same bits, forward and backward: a span changes which invocation handles an element,
/// never the order of its sum. Spans that do and do not divide the row, and past it.
#[test]
fn every_span_gives_the_same_bits() {
    let mut rng = Rng::new(17);
    let (shape, axis, index_shape) = ([3usize, 11, 37], 1, [5usize, 7]);
    let x = rng.vec(shape.iter().product(), -1.0, 1.0);
    let ids = random_ids(&mut rng, 35, shape[axis]);
    let out_shape = gather_shape(&shape, axis, &index_shape);
    let dy = rng.vec(out_shape.iter().product(), -1.0, 1.0);
    let (gx, gdy) = (upload(&x, &shape), upload(&dy, &out_shape));
    let gids = upload_ids(&ids, &index_shape);
    let groups = GroupedPositions::new(gpu(), &ids, shape[axis]).unwrap();
    let expected_y = bits(&gather_cpu(&x, &shape, axis, &ids));
    let mut first_dx: Option<Vec<u32>> = None;
    for span in [1, 3, 16, 37, 256] {
        let y = Tensor::zeros(gpu(), &out_shape).unwrap();
        let dx = Tensor::zeros(gpu(), &shape).unwrap();
        let forward = gather_dispatch(&gx, &gids, &y, axis, Some(span)).unwrap();
        let backward = gather_backward_dispatch(&gdy, &groups, &dx, axis, Some(span)).unwrap();
        gpu().submit(&[], &[forward, backward]).unwrap();
        assert_eq!(
            bits(&y.to_vec().unwrap()),
            expected_y,
            "forward, span {span}"
        );
        let dx = bits(&dx.to_vec().unwrap());
        match &first_dx {
            None => first_dx = Some(dx),
            Some(first) => assert_eq!(&dx, first, "backward, span {span}"),
        }
    }
}

/// Rows no id picks are written as zeros, even when the output's pooled buffer held NaN.
#[test]
fn rows_no_id_picks_get_zero_gradient() {
    let (vocab, dim) = (11, 5);
    let poisoned = Tensor::full(gpu(), &[vocab, dim], f32::NAN).unwrap();
    poisoned.to_vec().unwrap();
    drop(poisoned);
    let ids = [3u32, 3, 9];
    let dy = vec![1.0f32; ids.len() * dim];
    let dtable = upload(&dy, &[ids.len(), dim])
        .embedding_backward(&upload_ids(&ids, &[3]), vocab)
        .unwrap()
        .to_vec()
        .unwrap();
    for row in 0..vocab {
        let expected = match row {
            3 => 2.0,
            9 => 1.0,
            _ => 0.0,
        };
        assert!(
            dtable[row * dim..(row + 1) * dim]
                .iter()
                .all(|&v| v == expected),
            "row {row}: {:?}",
            &dtable[row * dim..(row + 1) * dim]
        );
    }
    // No ids at all: the whole gradient is zero.
    let none = upload(&[], &[0, dim])
        .embedding_backward(&upload_ids(&[], &[0]), vocab)
        .unwrap();
    assert_eq!(none.to_vec().unwrap(), vec![0.0; vocab * dim]);
}

#[test]
fn gather_backward_matches_finite_differences() {
    let mut rng = Rng::new(15);
    let cases: [(&[usize], usize, &[usize]); 5] = [
        (&[7, 3], 0, &[9]),
        (&[2, 5, 3], 1, &[2, 4]),
        (&[3, 2, 7], 2, &[6]),
        (&[1], 0, &[]),
        (&[4, 1, 3], 0, &[3, 1]),
    ];
    for (shape, axis, index_shape) in cases {
        let x = to_f64(&rng.vec(shape.iter().product(), -1.0, 1.0));
        let ids = random_ids(&mut rng, index_shape.iter().product(), shape[axis]);
        let out_shape = gather_shape(shape, axis, index_shape);
        let w = rng.vec(out_shape.iter().product(), -1.0, 1.0);
        let numeric = numeric_gradient(&x, 1e-3, |x| {
            weighted_sum(&to_f64(&w), &gather_cpu(x, shape, axis, &ids))
        });
        let analytic = upload(&w, &out_shape)
            .gather_backward(&upload_ids(&ids, index_shape), axis as isize, shape)
            .unwrap()
            .to_vec()
            .unwrap();
        // Each element is an f32 sum of at most most_repeats(ids) weights of |w| < 1;
        // the finite differences of this linear map are exact to ~1e-12.
        let atol = f32_sum_tolerance(most_repeats(&ids), 1.0) + 1e-9;
        assert_gradient(
            &format!("gather backward {shape:?} axis {axis} indices {index_shape:?}"),
            &analytic,
            &numeric,
            0.0,
            atol,
        );
    }
}

#[test]
fn embedding_backward_matches_finite_differences() {
    let mut rng = Rng::new(16);
    let (vocab, dim) = (13, 7);
    let table = to_f64(&rng.vec(vocab * dim, -1.0, 1.0));
    let ids = [4u32, 0, 12, 4, 4, 7, 0, 11];
    let w = rng.vec(ids.len() * dim, -1.0, 1.0);
    let numeric = numeric_gradient(&table, 1e-3, |t| {
        weighted_sum(&to_f64(&w), &gather_cpu(t, &[vocab, dim], 0, &ids))
    });
    let analytic = upload(&w, &[2, 4, dim])
        .embedding_backward(&upload_ids(&ids, &[2, 4]), vocab)
        .unwrap()
        .to_vec()
        .unwrap();
    // Id 4 occurs 3 times: sums of 3 f32 weights; rows never used must be exactly 0.
    assert_gradient(
        "embedding backward",
        &analytic,
        &numeric,
        0.0,
        f32_sum_tolerance(3, 1.0) + 1e-9,
    );
}

#[test]
fn gather_and_embedding_refuse_bad_ids_axes_and_shapes() {
    let table = upload(&[0.0; 12], &[4, 3]);
    let err = table
        .embedding(&upload_ids(&[1, 2, 0, 4, 3, 9], &[2, 3]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("id 4 at position [1, 0]") && err.contains("a table of 4 rows"),
        "{err}"
    );
    let err = table
        .gather(1, &upload_ids(&[0, 3], &[2]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("id 3 at position [1]") && err.contains("axis 1 of size 3"),
        "{err}"
    );
    let err = upload(&[0.0; 6], &[2, 3])
        .embedding_backward(&upload_ids(&[0, 5], &[2]), 4)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("embedding_backward") && err.contains("id 5 at position [1]"),
        "{err}"
    );
    let err = upload(&[0.0; 6], &[2, 3])
        .gather_backward(&upload_ids(&[0, 7], &[2]), 0, &[4, 3])
        .unwrap_err()
        .to_string();
    assert!(err.contains("id 7 at position [1]"), "{err}");

    let err = table
        .gather(2, &upload_ids(&[0], &[1]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("axis 2") && err.contains("rank 2"), "{err}");
    let err = table
        .gather(-3, &upload_ids(&[0], &[1]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("axis -3"), "{err}");
    let err = upload(&[0.0; 4], &[4])
        .embedding(&upload_ids(&[0], &[1]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("rank 2") && err.contains("[4]"), "{err}");

    // A gradient of the wrong shape names both shapes.
    let err = upload(&[0.0; 6], &[3, 2])
        .gather_backward(&upload_ids(&[0, 1], &[2]), 0, &[4, 3])
        .unwrap_err()
        .to_string();
    assert!(err.contains("[3, 2]") && err.contains("[2, 3]"), "{err}");
    let err = upload(&[0.0; 6], &[6])
        .embedding_backward(&upload_ids(&[0, 1], &[2]), 4)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("[6]") && err.contains("ids.shape + [dim]"),
        "{err}"
    );
}

// -------------------------------------------------------------------------------- slice

/// (shape, axis, start, end) with Python-style negative bounds, and the resolved bounds.
fn resolve(shape: &[usize], axis: isize, start: isize, end: isize) -> (usize, usize, usize) {
    let axis = axis.rem_euclid(shape.len() as isize) as usize;
    let n = shape[axis] as isize;
    let bound = |b: isize| if b < 0 { b + n } else { b } as usize;
    (axis, bound(start), bound(end))
}

#[test]
fn slice_matches_reference_on_odd_shapes() {
    let mut rng = Rng::new(21);
    let cases: [(&[usize], isize, isize, isize); 10] = [
        (&[1], 0, 0, 1),
        (&[7], 0, 2, 5),
        (&[7], 0, -3, 7),
        (&[3, 5], 1, 1, 4),
        (&[3, 5], 0, 2, 2), // empty
        (&[2, 3, 5], 1, 0, 3),
        (&[2, 3, 5], -1, -4, -1),
        (&[3, 1, 5, 7], 3, 5, 7),
        (&[2, 3, 1, 5, 7], 3, 1, 4), // rank 5
        (&[2, 3, 1, 5, 7], 0, 1, 2),
    ];
    for (shape, axis, start, end) in cases {
        let x = rng.vec(shape.iter().product(), -1.0, 1.0);
        let got = upload(&x, shape).slice(axis, start, end).unwrap();
        let (a, s, e) = resolve(shape, axis, start, end);
        let mut out_shape = shape.to_vec();
        out_shape[a] = e - s;
        assert_eq!(got.shape(), &out_shape[..]);
        assert_eq!(
            got.to_vec().unwrap(),
            slice_cpu(&x, shape, a, s, e),
            "{shape:?} axis {axis} {start}..{end}"
        );
    }
}

#[test]
fn slice_large_case() {
    let (rows, cols) = (1031, 2053);
    let x: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
    let got = upload(&x, &[rows, cols]).slice(1, 7, -11).unwrap();
    assert_eq!(got.shape(), &[rows, cols - 18]);
    assert!(got.to_vec().unwrap() == slice_cpu(&x, &[rows, cols], 1, 7, cols - 11));
}

#[test]
fn slice_backward_matches_finite_differences() {
    let mut rng = Rng::new(22);
    let cases: [(&[usize], isize, isize, isize); 5] = [
        (&[7], 0, 2, 5),
        (&[3, 5], 1, -4, -1),
        (&[2, 3, 5], 1, 1, 3),
        (&[3, 1, 5, 7], 0, 0, 2),
        (&[2, 3, 1, 5, 2], 3, 2, 5),
    ];
    for (shape, axis, start, end) in cases {
        let (a, s, e) = resolve(shape, axis, start, end);
        let x = to_f64(&rng.vec(shape.iter().product(), -1.0, 1.0));
        let mut out_shape = shape.to_vec();
        out_shape[a] = e - s;
        let w = rng.vec(out_shape.iter().product(), -1.0, 1.0);
        let numeric = numeric_gradient(&x, 1e-3, |x| {
            weighted_sum(&to_f64(&w), &slice_cpu(x, shape, a, s, e))
        });
        let analytic = upload(&w, &out_shape)
            .slice_backward(shape, axis, start, end)
            .unwrap()
            .to_vec()
            .unwrap();
        // The GPU copies the f32 weights exactly and writes exact zeros elsewhere; the
        // finite differences of this linear map are exact to ~1e-12.
        assert_gradient(
            &format!("slice backward {shape:?} axis {axis} {start}..{end}"),
            &analytic,
            &numeric,
            0.0,
            1e-9,
        );
    }
}

#[test]
fn slice_backward_writes_zeros_over_a_reused_buffer() {
    let poisoned = Tensor::full(gpu(), &[3, 7], f32::NAN).unwrap();
    poisoned.to_vec().unwrap();
    drop(poisoned);
    let dx = upload(&[1.0; 6], &[3, 2])
        .slice_backward(&[3, 7], 1, 3, 5)
        .unwrap()
        .to_vec()
        .unwrap();
    let expected: Vec<f32> = (0..21)
        .map(|i| if (3..5).contains(&(i % 7)) { 1.0 } else { 0.0 })
        .collect();
    assert_eq!(dx, expected);
}

/// Every span (elements of a row per invocation: 1 on GPUs, more on CPU-like adapters)
/// gives the same copy: a slice on the innermost and a middle axis, a transpose, and the
/// backward of a slice, with spans that do and do not divide the rows, and pass them.
#[test]
fn every_copy_span_gives_the_same_result() {
    let mut rng = Rng::new(23);
    let shape = [3usize, 5, 37];
    let x = rng.vec(shape.iter().product(), -1.0, 1.0);
    let gx = upload(&x, &shape);
    for span in [1, 3, 16, 64, 256] {
        for (axis, start, end) in [(2, 4, 33), (1, 1, 4)] {
            let region = CopyRegion::slice(&shape, axis, start, end);
            let mut out_shape = shape.to_vec();
            out_shape[axis] = end - start;
            let y = Tensor::zeros(gpu(), &out_shape).unwrap();
            let dispatch = region_copy_dispatch(&gx, &y, &region, Some(span)).unwrap();
            gpu().submit(&[], &[dispatch]).unwrap();
            assert_eq!(
                y.to_vec().unwrap(),
                slice_cpu(&x, &shape, axis, start, end),
                "slice axis {axis}, span {span}"
            );

            let dx = Tensor::full(gpu(), &shape, f32::NAN).unwrap();
            let dispatch = slice_backward_dispatch(&y, &dx, axis, start, Some(span)).unwrap();
            gpu().submit(&[], &[dispatch]).unwrap();
            let expected = upload(&y.to_vec().unwrap(), &out_shape)
                .slice_backward(&shape, axis as isize, start as isize, end as isize)
                .unwrap();
            assert_eq!(
                dx.to_vec().unwrap(),
                expected.to_vec().unwrap(),
                "slice backward axis {axis}, span {span}"
            );
        }
        // Transpose of the last two axes: x strides [185, 37, 1] permuted to [185, 1, 37].
        let transpose = CopyRegion {
            shape: [1, 3, 37, 5],
            in_offset: 0,
            in_strides: [0, 185, 1, 37],
            out_offset: 0,
            out_strides: [0, 185, 5, 1],
        };
        let y = Tensor::zeros(gpu(), &[3, 37, 5]).unwrap();
        let dispatch = region_copy_dispatch(&gx, &y, &transpose, Some(span)).unwrap();
        gpu().submit(&[], &[dispatch]).unwrap();
        assert_eq!(
            y.to_vec().unwrap(),
            permute_cpu(&x, &shape, &[0, 2, 1]),
            "transpose, span {span}"
        );
    }
}

#[test]
fn slice_refuses_bad_axes_and_bounds() {
    let x = upload(&[0.0; 15], &[3, 5]);
    let cases: [(isize, isize, isize, &[&str]); 6] = [
        (2, 0, 1, &["axis 2", "rank 2"]),
        (-3, 0, 1, &["axis -3"]),
        (1, 0, 6, &["end 6", "axis 1 of size 5", "[3, 5]"]),
        (1, -6, 2, &["start -6", "axis 1 of size 5"]),
        (0, 4, 5, &["start 4", "axis 0 of size 3"]),
        (1, 3, 1, &["start 3 comes after end 1"]),
    ];
    for (axis, start, end, needles) in cases {
        let err = x.slice(axis, start, end).unwrap_err().to_string();
        assert!(needles.iter().all(|n| err.contains(n)), "{err}");
    }
    let err = upload(&[0.0; 6], &[3, 2])
        .slice_backward(&[3, 5], 1, 1, 4)
        .unwrap_err()
        .to_string();
    assert!(err.contains("[3, 2]") && err.contains("[3, 3]"), "{err}");
    let err = upload(&[0.0; 6], &[3, 2])
        .slice_backward(&[3, 5], 1, 1, 9)
        .unwrap_err()
        .to_string();
    assert!(err.contains("end 9"), "{err}");
}

// ------------------------------------------------------------------------------- concat

#[test]
fn concat_matches_reference_on_odd_shapes() {
    let mut rng = Rng::new(31);
    // (the shape of the parts with the concat axis marked 0, axis, the parts' sizes on it)
    let cases: [(&[usize], isize, &[usize]); 7] = [
        (&[0], 0, &[1]),
        (&[0], 0, &[3, 1, 5]),
        (&[3, 0], 1, &[2, 0, 5]), // an empty part
        (&[0, 5], 0, &[1, 2]),
        (&[2, 0, 5], -2, &[3, 7, 1]),
        (&[3, 1, 5, 0], 3, &[2, 5]),
        (&[2, 3, 1, 0, 7], 3, &[1, 4, 2]), // rank 5
    ];
    for (template, axis, sizes) in cases {
        let a = axis.rem_euclid(template.len() as isize) as usize;
        let shapes: Vec<Vec<usize>> = sizes
            .iter()
            .map(|&n| {
                let mut shape = template.to_vec();
                shape[a] = n;
                shape
            })
            .collect();
        let data: Vec<Vec<f32>> = shapes
            .iter()
            .map(|s| rng.vec(s.iter().product(), -1.0, 1.0))
            .collect();
        let tensors: Vec<Tensor> = data
            .iter()
            .zip(&shapes)
            .map(|(d, s)| upload(d, s))
            .collect();
        let refs: Vec<&Tensor> = tensors.iter().collect();
        let got = Tensor::concat(&refs, axis).unwrap();
        let mut out_shape = template.to_vec();
        out_shape[a] = sizes.iter().sum();
        assert_eq!(got.shape(), &out_shape[..]);
        let parts: Vec<(&[f32], &[usize])> = data
            .iter()
            .zip(&shapes)
            .map(|(d, s)| (d.as_slice(), s.as_slice()))
            .collect();
        assert_eq!(
            got.to_vec().unwrap(),
            concat_cpu(&parts, a),
            "{template:?} axis {axis} sizes {sizes:?}"
        );
    }
}

#[test]
fn concat_large_case() {
    let mut rng = Rng::new(32);
    let (rows, widths) = (1031, [1000, 7, 1046]);
    let data: Vec<Vec<f32>> = widths
        .iter()
        .map(|w| rng.vec(rows * w, -1.0, 1.0))
        .collect();
    let tensors: Vec<Tensor> = data
        .iter()
        .zip(widths)
        .map(|(d, w)| upload(d, &[rows, w]))
        .collect();
    let got = Tensor::concat(&tensors.iter().collect::<Vec<_>>(), 1).unwrap();
    let shapes: Vec<[usize; 2]> = widths.iter().map(|&w| [rows, w]).collect();
    let parts: Vec<(&[f32], &[usize])> = data
        .iter()
        .zip(&shapes)
        .map(|(d, s)| (d.as_slice(), s.as_slice()))
        .collect();
    assert!(got.to_vec().unwrap() == concat_cpu(&parts, 1));
}

/// The backward of concat is `split` of the gradient.
#[test]
fn concat_backward_matches_finite_differences() {
    let mut rng = Rng::new(33);
    let cases: [(&[usize], usize, &[usize]); 4] = [
        (&[0], 0, &[3, 1, 5]),
        (&[3, 0], 1, &[2, 0, 5]),
        (&[2, 0, 5], 1, &[3, 7, 1]),
        (&[2, 3, 1, 0, 2], 3, &[1, 4, 2]),
    ];
    for (template, axis, sizes) in cases {
        let shapes: Vec<Vec<usize>> = sizes
            .iter()
            .map(|&n| {
                let mut shape = template.to_vec();
                shape[axis] = n;
                shape
            })
            .collect();
        let lengths: Vec<usize> = shapes.iter().map(|s| s.iter().product()).collect();
        // All parts flattened into one input vector, cut back into parts by `lengths`.
        let x = to_f64(&rng.vec(lengths.iter().sum(), -1.0, 1.0));
        let concat_of = |x: &[f64]| {
            let mut rest = x;
            let mut parts = Vec::new();
            for (len, shape) in lengths.iter().zip(&shapes) {
                let (part, tail) = rest.split_at(*len);
                parts.push((part, shape.as_slice()));
                rest = tail;
            }
            concat_cpu(&parts, axis)
        };
        let mut out_shape = template.to_vec();
        out_shape[axis] = sizes.iter().sum();
        let w = rng.vec(out_shape.iter().product(), -1.0, 1.0);
        let numeric = numeric_gradient(&x, 1e-3, |x| weighted_sum(&to_f64(&w), &concat_of(x)));
        let grads = upload(&w, &out_shape).split(axis as isize, sizes).unwrap();
        let mut analytic = Vec::new();
        for (grad, shape) in grads.iter().zip(&shapes) {
            assert_eq!(grad.shape(), &shape[..]);
            analytic.extend(grad.to_vec().unwrap());
        }
        // Slices of the f32 weights, copied exactly; differences exact to ~1e-12.
        assert_gradient(
            &format!("concat backward {template:?} axis {axis} sizes {sizes:?}"),
            &analytic,
            &numeric,
            0.0,
            1e-9,
        );
    }
}

#[test]
fn concat_and_split_refuse_mismatched_shapes_and_bad_axes() {
    let a = upload(&[0.0; 6], &[2, 3]);
    let b = upload(&[0.0; 8], &[4, 2]);
    let err = Tensor::concat(&[&a, &b], 1).unwrap_err().to_string();
    assert!(
        err.contains("[2, 3]") && err.contains("[4, 2]") && err.contains("part 1"),
        "{err}"
    );
    let c = upload(&[0.0; 6], &[2, 3, 1]);
    let err = Tensor::concat(&[&a, &c], 0).unwrap_err().to_string();
    assert!(err.contains("[2, 3]") && err.contains("[2, 3, 1]"), "{err}");
    let err = Tensor::concat(&[&a, &a], 2).unwrap_err().to_string();
    assert!(err.contains("axis 2"), "{err}");
    let err = Tensor::concat(&[], 0).unwrap_err().to_string();
    assert!(err.contains("at least one"), "{err}");

    let err = a.split(1, &[1, 1]).unwrap_err().to_string();
    assert!(
        err.contains("[1, 1]") && err.contains("add up to 2") && err.contains("has 3"),
        "{err}"
    );
    let err = a.split(-3, &[2]).unwrap_err().to_string();
    assert!(err.contains("axis -3"), "{err}");
}
