//! Comparing two engines' logits.

use ndarray::Array2;

/// `max |actual − expected| / max |expected|` over every element (shapes must match), printed with
/// its parts so a failing comparison shows how far off it was.
pub fn relative_max_diff(actual: &Array2<f32>, expected: &Array2<f32>) -> f32 {
    assert_eq!(actual.dim(), expected.dim());
    let max_abs_ref = expected.iter().fold(0f32, |a, &b| a.max(b.abs()));
    let max_diff = actual
        .iter()
        .zip(expected.iter())
        .fold(0f32, |a, (&x, &y)| a.max((x - y).abs()));
    eprintln!(
        "max |Δ| = {max_diff:e}, max |ref| = {max_abs_ref}, relative = {:e}",
        max_diff / max_abs_ref
    );
    max_diff / max_abs_ref
}
