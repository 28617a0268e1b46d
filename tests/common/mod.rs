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
