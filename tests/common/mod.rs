//! Helpers shared by the integration tests.
#![allow(dead_code)] // each test binary uses its own subset

use std::sync::OnceLock;

use shadergrad::Gpu;

/// One device for the whole test binary (opening one costs tens of milliseconds).
pub fn gpu() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| {
        Gpu::default_adapter().expect("a GPU adapter (run scripts/setup-lavapipe.sh)")
    })
}

/// Asserts |actual − expected| ≤ tolerance[i] element by element, naming the first miss.
pub fn assert_within(
    what: &str,
    actual: &[f32],
    expected: &[f32],
    tolerance: impl Fn(usize) -> f64,
) {
    assert_eq!(actual.len(), expected.len(), "{what}: lengths differ");
    for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        let error = (f64::from(a) - f64::from(e)).abs();
        let allowed = tolerance(i);
        assert!(
            error <= allowed || (a.is_nan() && e.is_nan()) || a == e,
            "{what}: element {i} is {a}, expected {e} (error {error:e} > tolerance {allowed:e})"
        );
    }
}

/// Asserts |actual − expected| ≤ atol + rtol·|expected| element by element.
pub fn assert_close(what: &str, actual: &[f32], expected: &[f32], rtol: f64, atol: f64) {
    assert_within(what, actual, expected, |i| {
        atol + rtol * f64::from(expected[i]).abs()
    });
}

/// Central finite differences of a scalar function, in f64:
/// ∂f/∂xᵢ ≈ (f(x + h·eᵢ) − f(x − h·eᵢ)) / 2h.
pub fn numeric_gradient(x: &[f64], h: f64, f: impl Fn(&[f64]) -> f64) -> Vec<f64> {
    let mut probe = x.to_vec();
    (0..x.len())
        .map(|i| {
            probe[i] = x[i] + h;
            let plus = f(&probe);
            probe[i] = x[i] - h;
            let minus = f(&probe);
            probe[i] = x[i];
            (plus - minus) / (2.0 * h)
        })
        .collect()
}

/// The scalar a gradient check differentiates: L = Σ wᵢ·yᵢ with fixed random weights w.
/// Its gradient with respect to y is w, so a backward kernel fed dL/dy = w must return
/// dL/dx, which `numeric_gradient` of `x ↦ weighted_sum(w, forward(x))` approximates.
pub fn weighted_sum(weights: &[f64], y: &[f64]) -> f64 {
    assert_eq!(
        weights.len(),
        y.len(),
        "weights and outputs differ in length"
    );
    weights.iter().zip(y).map(|(w, v)| w * v).sum()
}

/// Asserts a GPU gradient (f32) equals the f64 finite-difference one within
/// atol + rtol·|numeric| per element, and that it does not vanish: its largest element must
/// exceed 100·atol, so a kernel that writes zeros (or nothing) cannot pass.
pub fn assert_gradient(what: &str, analytic: &[f32], numeric: &[f64], rtol: f64, atol: f64) {
    assert_eq!(analytic.len(), numeric.len(), "{what}: lengths differ");
    let largest = numeric.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    assert!(largest > 100.0 * atol, "{what}: the numeric gradient vanishes (max |g| = {largest:e}); pick inputs where it does not");
    for (i, (&a, &n)) in analytic.iter().zip(numeric).enumerate() {
        let error = (f64::from(a) - n).abs();
        let allowed = atol + rtol * n.abs();
        assert!(
            error <= allowed,
            "{what}: gradient element {i} is {a}, finite differences give {n} (error {error:e} > {allowed:e})"
        );
    }
}

/// Asserts that `fields` of the one-line metrics file `ours` are within 1e-5 (relative) of
/// those in `theirs`: a resumed run (`what`) against the run an older build's own resume
/// gave.
pub fn assert_metrics_match(
    what: &str,
    ours: &std::path::Path,
    theirs: &std::path::Path,
    fields: &[&str],
) {
    let line = |path: &std::path::Path| -> serde_json::Value {
        serde_json::from_str(std::fs::read_to_string(path).unwrap().trim()).unwrap()
    };
    let (ours, theirs) = (line(ours), line(theirs));
    for field in fields {
        let (a, b) = (
            ours[field].as_f64().unwrap(),
            theirs[field].as_f64().unwrap(),
        );
        assert!(
            (a - b).abs() <= 1e-5 * b.abs(),
            "{what}: {field} {a} after resuming, {b} in the build before"
        );
    }
}

/// numpy's broadcast of `op` over `a` and `b` (any rank), in f64: the reference of the
/// cases past rank 4.
pub fn broadcast_reference(
    a: &[f64],
    a_shape: &[usize],
    b: &[f64],
    b_shape: &[usize],
    op: impl Fn(f64, f64) -> f64,
) -> Vec<f64> {
    let rank = a_shape.len().max(b_shape.len());
    let padded = |s: &[usize]| -> Vec<usize> {
        std::iter::repeat_n(1, rank - s.len())
            .chain(s.iter().copied())
            .collect()
    };
    let (pa, pb) = (padded(a_shape), padded(b_shape));
    let out: Vec<usize> = pa.iter().zip(&pb).map(|(&x, &y)| x.max(y)).collect();
    let index = |shape: &[usize], coords: &[usize]| -> usize {
        shape
            .iter()
            .zip(coords)
            .fold(0, |i, (&d, &c)| i * d + if d == 1 { 0 } else { c })
    };
    let n: usize = out.iter().product();
    (0..n)
        .map(|flat| {
            let mut coords = vec![0; rank];
            let mut rest = flat;
            for axis in (0..rank).rev() {
                coords[axis] = rest % out[axis];
                rest /= out[axis];
            }
            op(a[index(&pa, &coords)], b[index(&pb, &coords)])
        })
        .collect()
}

/// Distinct strings over "abcdef" of 1 to 5 letters, each with its reverse.
pub fn reverse_pairs(count: usize, seed: u64) -> Vec<shadergrad::data::text::Pair> {
    let mut rng = shadergrad::rng::Rng::new(seed);
    let mut seen = std::collections::HashSet::new();
    let mut pairs = Vec::new();
    while pairs.len() < count {
        let len = 1 + rng.below(5);
        let source: String = (0..len)
            .map(|_| (b'a' + rng.below(6) as u8) as char)
            .collect();
        if seen.insert(source.clone()) {
            let target = source.chars().rev().collect();
            pairs.push(shadergrad::data::text::Pair { source, target });
        }
    }
    pairs
}

/// The largest |a − b| over every parameter of two checkpoints (their optimizer state
/// left out), and the largest |a|.
pub fn parameter_distance(a: &std::path::Path, b: &std::path::Path) -> (f32, f32) {
    let (a, b) = (
        shadergrad::checkpoint::load(a).unwrap(),
        shadergrad::checkpoint::load(b).unwrap(),
    );
    let (mut distance, mut largest) = (0.0f32, 0.0f32);
    let mut compared = 0;
    for tensor in a
        .tensors
        .iter()
        .filter(|t| !t.name.starts_with("optimizer."))
    {
        let other = b.tensors.iter().find(|t| t.name == tensor.name).unwrap();
        for (x, y) in tensor.as_f32().unwrap().iter().zip(other.as_f32().unwrap()) {
            distance = distance.max((x - y).abs());
            largest = largest.max(x.abs());
            compared += 1;
        }
    }
    assert!(compared > 300, "compared {compared} numbers");
    (distance, largest)
}
