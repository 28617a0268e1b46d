//! The datasets: the built-in 2-D tasks, CSV files, the split, batching and standardisation.
//! Every claim is checked against a computation made here, not by the code under test.

use std::path::{Path, PathBuf};

use shadergrad::data::points::{BuiltinTask, Circles, Spirals, Xor, MAX_LABEL};
use shadergrad::data::{Dataset, LastBatch, Standardizer};
use shadergrad::Error;

const SEEDS: [u64; 3] = [1, 42, 2024];

/// A fresh folder for one test's files.
fn scratch(test: &str) -> PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("data-{test}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Solves the square system `a x = b` (row-major `a`) by Gaussian elimination with partial
/// pivoting, for every column of `b` (`size × columns`) at once.
fn solve(mut a: Vec<f64>, mut b: Vec<f64>, size: usize, columns: usize) -> Vec<f64> {
    for pivot in 0..size {
        let best = (pivot..size)
            .max_by(|&r, &s| {
                a[r * size + pivot]
                    .abs()
                    .total_cmp(&a[s * size + pivot].abs())
            })
            .unwrap();
        for k in 0..size {
            a.swap(pivot * size + k, best * size + k);
        }
        for k in 0..columns {
            b.swap(pivot * columns + k, best * columns + k);
        }
        for row in pivot + 1..size {
            let factor = a[row * size + pivot] / a[pivot * size + pivot];
            for k in pivot..size {
                a[row * size + k] -= factor * a[pivot * size + k];
            }
            for k in 0..columns {
                b[row * columns + k] -= factor * b[pivot * columns + k];
            }
        }
    }
    for row in (0..size).rev() {
        for k in 0..columns {
            let known: f64 = (row + 1..size)
                .map(|j| a[row * size + j] * b[j * columns + k])
                .sum();
            b[row * columns + k] = (b[row * columns + k] - known) / a[row * size + row];
        }
    }
    b
}

/// The accuracy, on `data` itself, of the best least-squares linear classifier: one-hot targets
/// regressed on the features and a constant, the class with the largest output predicted.
/// Fitting and scoring on the same points favours the classifier, so a low score means no
/// linear boundary separates the classes.
fn least_squares_accuracy(data: &Dataset) -> f64 {
    let size = data.dim + 1;
    let inputs = |i: usize| data.row(i).iter().map(|&x| f64::from(x)).chain([1.0]);
    let mut gram = vec![0.0; size * size];
    let mut moments = vec![0.0; size * data.classes];
    for i in 0..data.n {
        let x: Vec<f64> = inputs(i).collect();
        for r in 0..size {
            for c in 0..size {
                gram[r * size + c] += x[r] * x[c];
            }
            moments[r * data.classes + data.labels[i] as usize] += x[r];
        }
    }
    let weights = solve(gram, moments, size, data.classes);
    let correct = (0..data.n)
        .filter(|&i| {
            let x: Vec<f64> = inputs(i).collect();
            let score = |class: usize| {
                (0..size)
                    .map(|r| x[r] * weights[r * data.classes + class])
                    .sum::<f64>()
            };
            let predicted = (0..data.classes).max_by(|&a, &b| score(a).total_cmp(&score(b)));
            predicted == Some(data.labels[i] as usize)
        })
        .count();
    correct as f64 / data.n as f64
}

/// The accuracy on `test` of predicting each point's class as that of its nearest `train` point.
fn nearest_neighbour_accuracy(train: &Dataset, test: &Dataset) -> f64 {
    let distance =
        |a: &[f32], b: &[f32]| -> f32 { a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum() };
    let correct = (0..test.n)
        .filter(|&i| {
            let nearest = (0..train.n)
                .min_by(|&a, &b| {
                    distance(train.row(a), test.row(i))
                        .total_cmp(&distance(train.row(b), test.row(i)))
                })
                .unwrap();
            train.labels[nearest] == test.labels[i]
        })
        .count();
    correct as f64 / test.n as f64
}

/// Checks what every built-in task promises, for several seeds.
fn check_task(name: &str, generate: impl Fn(u64) -> Dataset, classes: usize, per_class: usize) {
    for seed in SEEDS {
        let data = generate(seed);
        assert_eq!(
            (data.n, data.dim, data.classes),
            (classes * per_class, 2, classes),
            "{name}"
        );
        assert_eq!(data.features.len(), data.n * 2, "{name}");
        assert_eq!(data.labels.len(), data.n, "{name}");
        assert!(data.features.iter().all(|x| x.is_finite()), "{name}");
        let mut counts = vec![0; classes];
        for &label in &data.labels {
            counts[label as usize] += 1;
        }
        assert_eq!(counts, vec![per_class; classes], "{name}: balanced classes");
        assert_eq!(
            generate(seed),
            data,
            "{name}: the same seed gives the same data"
        );
        assert_ne!(
            generate(seed + 1).features,
            data.features,
            "{name}: another seed, other data"
        );

        let linear = least_squares_accuracy(&data);
        assert!(
            linear < 0.7,
            "{name} (seed {seed}): a linear classifier reaches {linear}"
        );
        let (train, test) = data.split(0.8, seed).unwrap();
        let nearest = nearest_neighbour_accuracy(&train, &test);
        assert!(
            nearest > 0.95,
            "{name} (seed {seed}): 1-NN reaches only {nearest}"
        );
    }
}

#[test]
fn spirals_are_learnable_but_not_linearly_separable() {
    check_task(
        "spirals",
        |seed| Spirals::default().generate(seed).unwrap(),
        3,
        100,
    );
    // Two arms need a whole turn: over the default 4 rad a line separates 79% of them.
    for (classes, sweep) in [(2, std::f32::consts::TAU), (5, 4.0)] {
        let spirals = Spirals {
            classes,
            points_per_class: 150,
            sweep,
            ..Spirals::default()
        };
        check_task(
            "spirals",
            |seed| spirals.generate(seed).unwrap(),
            classes,
            150,
        );
    }
}

#[test]
fn spiral_arms_wind_out_from_the_centre() {
    // Point i of an arm lies at radius (i + 1) / n (the noise only turns it); its angle is
    // the arm's start 2πk/K plus sweep × radius, up to the noise (4σ = 0.8 rad).
    let spirals = Spirals::default();
    let data = spirals.generate(5).unwrap();
    let n = spirals.points_per_class;
    for i in 0..data.n {
        let (x, y) = (f64::from(data.row(i)[0]), f64::from(data.row(i)[1]));
        let radius = ((i % n) + 1) as f64 / n as f64;
        assert!(((x * x + y * y).sqrt() - radius).abs() < 1e-5, "point {i}");
        let class = data.labels[i] as f64;
        let expected = std::f64::consts::TAU * class / 3.0 + 4.0 * radius;
        let turn = (y.atan2(x) - expected).rem_euclid(std::f64::consts::TAU);
        let off = turn.min(std::f64::consts::TAU - turn);
        assert!(off < 0.8, "point {i} is {off} rad off its arm");
    }
}

#[test]
fn xor_is_learnable_but_not_linearly_separable() {
    check_task("xor", |seed| Xor::default().generate(seed).unwrap(), 2, 100);
    // The label is the XOR of the signs, but for the rare point pushed across an axis.
    let data = Xor::default().generate(3).unwrap();
    let agreeing = (0..data.n)
        .filter(|&i| {
            let (x, y) = (data.row(i)[0], data.row(i)[1]);
            u32::from((x > 0.0) != (y > 0.0)) == data.labels[i]
        })
        .count();
    assert!(agreeing >= data.n - 2, "{agreeing} of {}", data.n);
}

#[test]
fn circles_are_learnable_but_not_linearly_separable() {
    check_task(
        "circles",
        |seed| Circles::default().generate(seed).unwrap(),
        2,
        100,
    );
    let data = Circles::default().generate(3).unwrap();
    for (class, ring) in [(0, 1.0), (1, 0.5)] {
        let radii: Vec<f32> = (0..data.n)
            .filter(|&i| data.labels[i] == class)
            .map(|i| data.row(i)[0].hypot(data.row(i)[1]))
            .collect();
        let mean = radii.iter().sum::<f32>() / radii.len() as f32;
        assert!(
            (mean - ring).abs() < 0.03,
            "class {class}: mean radius {mean}"
        );
    }
}

#[test]
fn builtin_tasks_by_name() {
    let spirals = "spirals"
        .parse::<BuiltinTask>()
        .unwrap()
        .generate(20, 9)
        .unwrap();
    let expected = Spirals {
        points_per_class: 20,
        ..Spirals::default()
    };
    assert_eq!(spirals, expected.generate(9).unwrap());
    assert_eq!("xor".parse::<BuiltinTask>().unwrap(), BuiltinTask::Xor);
    assert_eq!(
        "circles".parse::<BuiltinTask>().unwrap(),
        BuiltinTask::Circles
    );
    let error = "moons".parse::<BuiltinTask>().unwrap_err().to_string();
    assert!(
        error.contains("\"moons\"") && error.contains("spirals, xor, circles"),
        "{error}"
    );
}

#[test]
fn bad_task_parameters_are_errors() {
    let cases: Vec<(Result<Dataset, Error>, &str)> = vec![
        (
            Spirals {
                classes: 1,
                ..Spirals::default()
            }
            .generate(0),
            "classes must be at least 2, got 1",
        ),
        (
            Spirals {
                noise: f32::NAN,
                ..Spirals::default()
            }
            .generate(0),
            "noise must be a finite standard deviation",
        ),
        (
            Xor {
                points_per_class: 0,
                ..Xor::default()
            }
            .generate(0),
            "points_per_class must be at least 1, got 0",
        ),
        (
            Xor {
                spread: -1.0,
                ..Xor::default()
            }
            .generate(0),
            "spread must be",
        ),
        (
            Circles {
                inner_radius: 1.5,
                ..Circles::default()
            }
            .generate(0),
            "inner_radius must lie strictly between 0 and the outer radius 1, got 1.5",
        ),
    ];
    for (result, expected) in cases {
        let error = result.unwrap_err().to_string();
        assert!(error.contains(expected), "{error:?} lacks {expected:?}");
    }
}

/// A dataset whose first feature is each example's own number, so it can be traced through
/// splits and batches; labels cycle through 3 classes.
fn numbered(n: usize) -> Dataset {
    let features = (0..n).flat_map(|i| [i as f32, -(i as f32)]).collect();
    let labels = (0..n).map(|i| (i % 3) as u32).collect();
    Dataset::new(features, labels, 2, 3).unwrap()
}

fn ids(data: &Dataset) -> Vec<usize> {
    (0..data.n).map(|i| data.row(i)[0] as usize).collect()
}

#[test]
fn the_split_puts_every_example_in_exactly_one_part_per_class_fraction() {
    let data = numbered(100); // classes of 34, 33 and 33 examples
    let (train, test) = data.split(0.8, 11).unwrap();
    let mut seen: Vec<usize> = ids(&train).into_iter().chain(ids(&test)).collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..100).collect::<Vec<_>>());
    for part in [&train, &test] {
        for i in 0..part.n {
            let id = part.row(i)[0] as usize;
            assert_eq!(part.row(i), data.row(id));
            assert_eq!(part.labels[i], data.labels[id]);
        }
    }
    // round(0.8 × 34) = 27, round(0.8 × 33) = 26.
    assert_eq!(train.class_counts(), vec![27, 26, 26]);
    assert_eq!(test.class_counts(), vec![7, 7, 7]);
    // Classes interleave in both parts rather than coming in blocks.
    assert_ne!(train.labels[..27], vec![0; 27][..]);

    assert_eq!(data.split(0.8, 11).unwrap(), (train.clone(), test));
    let (other, _) = data.split(0.8, 12).unwrap();
    assert_ne!(ids(&other), ids(&train));
}

#[test]
fn a_bad_split_is_an_error() {
    let data = numbered(10);
    for fraction in [0.0, 1.0, -0.5, 1.5, f64::NAN] {
        let error = data.split(fraction, 0).unwrap_err().to_string();
        assert!(error.contains("strictly between 0 and 1"), "{error}");
    }
    let error = data.split(0.01, 0).unwrap_err().to_string();
    assert!(
        error.contains("leaves 0 for training and 10 for testing"),
        "{error}"
    );
}

#[test]
fn shuffling_permutes_the_rows() {
    let mut data = numbered(50);
    data.shuffle(3).unwrap();
    let mut order = ids(&data);
    assert_ne!(order, (0..50).collect::<Vec<_>>());
    for (&label, &id) in data.labels.iter().zip(&order) {
        assert_eq!(label, (id % 3) as u32);
    }
    order.sort_unstable();
    assert_eq!(order, (0..50).collect::<Vec<_>>());
}

/// The example numbers of every real row of every batch of one epoch, batch by batch.
fn epoch_ids(data: &Dataset, size: usize, last: LastBatch, epoch: u64) -> Vec<Vec<usize>> {
    data.batches(size, last, 5, epoch)
        .unwrap()
        .map(|batch| {
            let rows: Vec<usize> = (0..batch.real())
                .map(|r| batch.features[r * 2] as usize)
                .collect();
            assert_eq!(rows, batch.indices);
            for (r, &i) in batch.indices.iter().enumerate() {
                assert_eq!(batch.labels[r], data.labels[i]);
                assert_eq!(batch.features[r * 2 + 1], -(i as f32));
            }
            rows
        })
        .collect()
}

#[test]
fn each_epoch_covers_every_example_once_in_a_new_order() {
    let data = numbered(23);
    for epoch in 0..4 {
        let keep = epoch_ids(&data, 5, LastBatch::Keep, epoch);
        assert_eq!(
            keep.iter().map(Vec::len).collect::<Vec<_>>(),
            [5, 5, 5, 5, 3]
        );
        let mut all: Vec<usize> = keep.concat();
        all.sort_unstable();
        assert_eq!(all, (0..23).collect::<Vec<_>>());

        // Dropping keeps the same order but for the 3 left over.
        let drop = epoch_ids(&data, 5, LastBatch::Drop, epoch);
        assert_eq!(drop, keep[..4]);
    }
    assert_eq!(
        epoch_ids(&data, 5, LastBatch::Keep, 1),
        epoch_ids(&data, 5, LastBatch::Keep, 1)
    );
    assert_ne!(
        epoch_ids(&data, 5, LastBatch::Keep, 1),
        epoch_ids(&data, 5, LastBatch::Keep, 2)
    );
    let other_seed: Vec<usize> = data
        .batches(5, LastBatch::Keep, 6, 1)
        .unwrap()
        .flat_map(|batch| batch.indices)
        .collect();
    assert_ne!(other_seed, epoch_ids(&data, 5, LastBatch::Keep, 1).concat());
}

#[test]
fn padding_fills_the_last_batch_to_the_fixed_shape() {
    let data = numbered(23);
    let batches: Vec<_> = data
        .batches(5, LastBatch::Pad { label: 99 }, 5, 0)
        .unwrap()
        .collect();
    assert_eq!(batches.len(), 5);
    assert!(batches
        .iter()
        .all(|batch| batch.rows() == 5 && batch.features.len() == 10));
    let last = &batches[4];
    assert_eq!(last.real(), 3);
    assert_eq!(last.labels[3..], [99, 99]);
    assert_eq!(last.features[6..], [0.0; 4]);
    let real: Vec<usize> = batches
        .iter()
        .flat_map(|batch| batch.indices.clone())
        .collect();
    assert_eq!(real, epoch_ids(&data, 5, LastBatch::Keep, 0).concat());
}

#[test]
fn batch_counts_agree_with_the_iterators() {
    let data = numbered(23);
    for size in [1, 4, 5, 22, 23] {
        for last in [
            LastBatch::Drop,
            LastBatch::Keep,
            LastBatch::Pad { label: 0 },
        ] {
            let batches = data.batches(size, last, 0, 0).unwrap();
            let expected = match last {
                LastBatch::Drop => 23 / size,
                _ => 23usize.div_ceil(size),
            };
            assert_eq!(batches.len(), expected, "size {size} {last:?}");
            assert_eq!(data.batch_count(size, last), expected);
            assert_eq!(batches.count(), expected);
        }
    }
    let in_order: Vec<usize> = data
        .batches_in_order(10, LastBatch::Keep)
        .unwrap()
        .flat_map(|batch| batch.indices)
        .collect();
    assert_eq!(in_order, (0..23).collect::<Vec<_>>());

    let error = data
        .batches(0, LastBatch::Keep, 0, 0)
        .unwrap_err()
        .to_string();
    assert!(error.contains("at least 1"), "{error}");
    let error = data
        .batches(24, LastBatch::Drop, 0, 0)
        .unwrap_err()
        .to_string();
    assert!(error.contains("23 examples make no batch of 24"), "{error}");
    assert_eq!(
        data.batches(24, LastBatch::Pad { label: 0 }, 0, 0)
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn an_inconsistent_dataset_is_an_error_not_a_panic() {
    let error = Dataset::new(vec![1.0; 5], vec![0, 1], 2, 2)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("need 4 features and 2 labels, found 5 and 2"),
        "{error}"
    );
    let error = Dataset::new(vec![1.0; 4], vec![0, 2], 2, 2)
        .unwrap_err()
        .to_string();
    assert!(error.contains("example 1 has label 2"), "{error}");
    let mut broken = numbered(6);
    broken.n = 7;
    assert!(broken.batches(2, LastBatch::Keep, 0, 0).is_err());
    assert!(broken.split(0.5, 0).is_err());
    assert!(numbered(6).subset(&[6]).is_err());
    let empty = Dataset::new(Vec::new(), Vec::new(), 2, 2).unwrap();
    let error = empty
        .batches(4, LastBatch::Keep, 0, 0)
        .unwrap_err()
        .to_string();
    assert!(error.contains("the dataset has no examples"), "{error}");
    assert!(Standardizer::fit(&empty).is_err());
}

#[test]
fn standardisation_uses_the_training_statistics_everywhere() {
    let data = Spirals::default().generate(8).unwrap();
    let (mut train, mut test) = data.split(0.75, 8).unwrap();
    let (raw_train, raw_test) = (train.clone(), test.clone());
    let scaler = Standardizer::fit(&train).unwrap();
    scaler.transform(&mut train).unwrap();
    scaler.transform(&mut test).unwrap();
    for feature in 0..2 {
        let column =
            |d: &Dataset| -> Vec<f64> { (0..d.n).map(|i| f64::from(d.row(i)[feature])).collect() };
        let raw = column(&raw_train);
        let mean = raw.iter().sum::<f64>() / raw.len() as f64;
        let std = (raw.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / raw.len() as f64).sqrt();
        assert!((f64::from(scaler.mean[feature]) - mean).abs() < 1e-6);
        assert!((f64::from(scaler.std[feature]) - std).abs() < 1e-6);

        let scaled = column(&train);
        let scaled_mean = scaled.iter().sum::<f64>() / scaled.len() as f64;
        let scaled_var = scaled
            .iter()
            .map(|x| (x - scaled_mean).powi(2))
            .sum::<f64>()
            / scaled.len() as f64;
        assert!(scaled_mean.abs() < 1e-5 && (scaled_var - 1.0).abs() < 1e-4);
        // The test split is mapped with the training statistics, not its own.
        for (&before, &after) in column(&raw_test).iter().zip(&column(&test)) {
            assert!((after - (before - mean) / std).abs() < 1e-5);
        }
    }
}

#[test]
fn a_constant_feature_is_only_centred() {
    let mut data = Dataset::new(vec![5.0, 1.0, 5.0, 3.0], vec![0, 1], 2, 2).unwrap();
    let scaler = Standardizer::fit(&data).unwrap();
    assert_eq!(
        (scaler.mean.clone(), scaler.std.clone()),
        (vec![5.0, 2.0], vec![1.0, 1.0])
    );
    scaler.transform(&mut data).unwrap();
    assert_eq!(data.features, [0.0, -1.0, 0.0, 1.0]);
    let mut three = Dataset::new(vec![1.0; 3], vec![0], 3, 1).unwrap();
    let error = scaler.transform(&mut three).unwrap_err().to_string();
    assert!(
        error.contains("statistics of 2 features cannot transform examples of 3"),
        "{error}"
    );
}

fn read(dir: &Path, name: &str, contents: &[u8]) -> Result<Dataset, Error> {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    Dataset::from_csv(&path).map(|parsed| parsed.contents)
}

#[test]
fn csv_files_with_and_without_a_header() {
    let dir = scratch("csv-good");
    let expected =
        Dataset::new(vec![0.5, -1.25, 3.0, 1e-3, -2.0, 4.0], vec![1, 0, 3], 2, 4).unwrap();
    let files: [&[u8]; 5] = [
        b"0.5,-1.25,1\n3,1e-3,0\n-2,4,3\n",
        b"x, y , label\n\n0.5 , -1.25,  1\n  3,\t1e-3,0\n\n-2,4,3.0",
        b"\xEF\xBB\xBFx,y,label\r\n0.5,-1.25,1\r\n3,0.001,0\r\n-2,4,3\r\n",
        b"\n\n0.5,-1.25,+1\n3,1E-3,0\n-2.0,4.0,3\n\n\n",
        b"feature one,feature two,class\n0.5,-1.25,1\n3,.001,0\n-2,4,3\n",
    ];
    for (number, contents) in files.iter().enumerate() {
        let data = read(&dir, &format!("good{number}.csv"), contents).unwrap();
        assert_eq!(data, expected, "file {number}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn every_csv_error_names_the_file_and_line() {
    let dir = scratch("csv-bad");
    let max = MAX_LABEL.to_string();
    let too_large = format!("1,2,0\n1,2,{}\n", MAX_LABEL + 1);
    let cases: Vec<(&[u8], String)> = vec![
        (b"", "the file is empty".into()),
        (b"\n  \n\n", "the file is empty".into()),
        (b"x,y,label\n\n", "has a header but no data rows".into()),
        (
            b"1,2,0\n3,abc,1\n",
            r#"line 2: field 2 ("abc") is not a number"#.into(),
        ),
        (
            b"1,2,0\n\n3,4\n",
            "line 3: 2 fields, expected 3 as on line 1 (the first data row)".into(),
        ),
        (
            b"1,2,0\n3,4,5,1\n",
            "line 2: 4 fields, expected 3 as on line 1".into(),
        ),
        (
            b"x,y,label\n1,2,0\n1,2,-1\n",
            r#"line 3: the label "-1" (field 3) is negative"#.into(),
        ),
        (
            b"1,2,1.5\n",
            r#"line 1: the label "1.5" (field 3) is not a whole number"#.into(),
        ),
        (
            b"1,2,cat\n",
            r#"line 1: the label "cat" (field 3) is not a number"#.into(),
        ),
        (
            b"1,2,\n",
            r#"line 1: the label "" (field 3) is empty"#.into(),
        ),
        (
            too_large.as_bytes(),
            format!(
                "line 2: the label \"{}\" (field 3) is above the largest label allowed, {max}",
                MAX_LABEL + 1
            ),
        ),
        (
            b"1,2,0\n1,nan,0\n",
            r#"line 2: field 2 ("nan") is not a finite f32"#.into(),
        ),
        (
            b"1,2,0\n\n\ninf,2,0\n",
            r#"line 4: field 1 ("inf") is not a finite f32"#.into(),
        ),
        (
            b"1e40,2,0\n",
            r#"line 1: field 1 ("1e40") is not a finite f32"#.into(),
        ),
        (b"1,,0\n", r#"line 1: field 2 ("") is empty"#.into()),
        (
            b"a,b\n1,2,0\n",
            "line 1: the header has 2 fields but the first data row (line 2) has 3".into(),
        ),
        (
            b"5\n6\n",
            "line 1: 1 field; expected the features then the label".into(),
        ),
        (
            b"x,y,label\nx,y,label\n",
            r#"line 2: field 1 ("x") is not a number"#.into(),
        ),
        (b"1,2,0\n1,\xff,0\n", "line 2: not UTF-8 text".into()),
    ];
    for (number, (contents, expected)) in cases.iter().enumerate() {
        let name = format!("bad{number}.csv");
        let error = read(&dir, &name, contents).unwrap_err();
        assert!(matches!(error, Error::Format { .. }), "{error:?}");
        let message = error.to_string();
        let prefix = format!("{}: ", dir.join(&name).display());
        assert!(
            message.starts_with(&prefix),
            "{message:?} does not start with the path"
        );
        assert!(
            message.contains(expected.as_str()),
            "{message:?} lacks {expected:?}"
        );
    }
    let missing = dir.join("missing.csv");
    let error = Dataset::from_csv(&missing).unwrap_err();
    assert!(
        matches!(&error, Error::Io { path, .. } if path == &missing),
        "{error:?}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn written_csv_reads_back_exactly_and_atomically() {
    let dir = scratch("csv-roundtrip");
    let data = Spirals::default().generate(4).unwrap();
    let path = dir.join("spirals.csv");
    data.write_csv(&path).unwrap();
    assert_eq!(Dataset::from_csv(&path).unwrap().contents, data);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("x0,x1,label\n"), "{}", &text[..40]);
    assert_eq!(text.lines().count(), 301);
    let entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(entries, ["spirals.csv"], "no temporary file is left behind");
    let error = data
        .write_csv(dir.join("no-such-folder/spirals.csv"))
        .unwrap_err();
    assert!(matches!(error, Error::Io { .. }), "{error:?}");
    let _ = std::fs::remove_dir_all(dir);
}
