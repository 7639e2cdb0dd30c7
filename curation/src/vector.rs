//! Dense-vector kernels written so the compiler vectorises them: 16 independent lanes, summed at the end
//! (a plain sum of products stays scalar, because float addition is not reassociated). On x86-64 processors
//! with AVX2 and FMA (checked at run time) a copy compiled for them runs instead. Products of many rows with
//! many rows go to gemm ([`dot_products`]).

const LANES: usize = 16;

#[inline(always)]
fn lanes(a: &[f32], b: &[f32], step: impl Fn(f32, f32, f32) -> f32) -> f32 {
    let mut acc = [0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail = ca.remainder().iter().zip(cb.remainder()).fold(0.0, |t, (&x, &y)| step(x, y, t));
    for (x, y) in ca.zip(cb) {
        for l in 0..LANES {
            acc[l] = step(x[l], y[l], acc[l]);
        }
    }
    acc.iter().sum::<f32>() + tail
}

macro_rules! kernel {
    ($(#[$doc:meta])* $name:ident, $fast:ident, |$x:ident, $y:ident, $acc:ident| $plain:expr, $fused:expr) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn $fast(a: &[f32], b: &[f32]) -> f32 {
            lanes(a, b, |$x, $y, $acc| $fused)
        }

        $(#[$doc])*
        #[inline]
        pub fn $name(a: &[f32], b: &[f32]) -> f32 {
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                // SAFETY: the processor has the features the function was compiled for.
                return unsafe { $fast(a, b) };
            }
            lanes(a, b, |$x, $y, $acc| $plain)
        }
    };
}

kernel!(
    /// a · b
    dot, dot_avx2, |x, y, acc| acc + x * y, x.mul_add(y, acc)
);
kernel!(
    /// ‖a − b‖²
    sq_distance, sq_distance_avx2, |x, y, acc| acc + (x - y) * (x - y), (x - y).mul_add(x - y, acc)
);

/// ‖a‖²
#[inline]
pub fn sq_norm(a: &[f32]) -> f32 {
    dot(a, a)
}

/// Rows per block of [`dot_products`] when a caller runs blocks side by side: a block's products against a
/// thousand centroids (2 MiB) stay in one core's L2 cache while the caller reads them.
pub const ROWS_PER_PRODUCT: usize = 512;

/// `out = a · bᵀ`: `a` is `rows × dim` and `b` is `cols × dim`, both row-major; `out` is `rows × cols`. gemm on
/// the callers' own buffers (no copies) on the calling thread: callers run blocks of rows side by side.
pub fn dot_products(a: &[f32], b: &[f32], dim: usize, out: &mut [f32]) {
    let (rows, cols) = (a.len() / dim.max(1), b.len() / dim.max(1));
    assert!(
        a.len() == rows * dim && b.len() == cols * dim && rows.checked_mul(cols) == Some(out.len()),
        "dot_products: {} and {} values are not rows of dimension {dim} for a {}-value product",
        a.len(),
        b.len(),
        out.len()
    );
    if rows == 0 || cols == 0 {
        return;
    }
    // SAFETY: the shapes and strides describe exactly the three slices, checked above; `out` is not read.
    unsafe {
        gemm::gemm(
            rows,
            cols,
            dim,
            out.as_mut_ptr(),
            1,
            cols as isize,
            false,
            a.as_ptr(),
            1,
            dim as isize,
            b.as_ptr(),
            dim as isize,
            1,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
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

    #[test]
    fn dot_products_are_the_row_by_row_dots() {
        let dim = 37;
        let a: Vec<f32> = (0..5 * dim).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..3 * dim).map(|i| (i as f32 * 0.11).cos()).collect();
        let mut out = vec![f32::NAN; 15];
        dot_products(&a, &b, dim, &mut out);
        for (i, x) in a.chunks(dim).enumerate() {
            for (j, y) in b.chunks(dim).enumerate() {
                assert!((out[i * 3 + j] - dot(x, y)).abs() < 1e-4, "({i}, {j})");
            }
        }
    }
}
