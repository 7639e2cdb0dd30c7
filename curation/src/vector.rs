//! Dense-vector kernels written so the compiler vectorises them: 16 independent lanes, summed at the end
//! (a plain sum of products stays scalar, because float addition is not reassociated).

const LANES: usize = 16;

#[inline]
fn lanes(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut acc = [0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(&x, &y)| f(x, y)).sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..LANES {
            acc[l] += f(x[l], y[l]);
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// a · b
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    lanes(a, b, |x, y| x * y)
}

/// ‖a − b‖²
#[inline]
pub fn sq_distance(a: &[f32], b: &[f32]) -> f32 {
    lanes(a, b, |x, y| (x - y) * (x - y))
}

/// ‖a‖²
#[inline]
pub fn sq_norm(a: &[f32]) -> f32 {
    lanes(a, a, |x, _| x * x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agree_with_the_plain_sums() {
        let a: Vec<f32> = (0..37).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..37).map(|i| (i as f32 * 0.11).cos()).collect();
        let plain_dot: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        let plain_sq: f32 = a.iter().zip(&b).map(|(x, y)| (x - y) * (x - y)).sum();
        assert!((dot(&a, &b) - plain_dot).abs() < 1e-4);
        assert!((sq_distance(&a, &b) - plain_sq).abs() < 1e-4);
        assert!((sq_norm(&a) - dot(&a, &a)).abs() < 1e-4);
    }
}
