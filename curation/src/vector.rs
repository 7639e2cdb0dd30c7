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

/// `out[j] = ‖x − cⱼ‖²` for the rows cⱼ of `rows` (row-major, `x.len()` columns): each exactly as
/// [`sq_distance`] computes it (the same lanes, in the same order), with `x` read once for up to eight rows at a
/// time, whose sums stay in registers. k-means++'s greedy seeding weighs its candidates with it.
pub fn sq_distances(x: &[f32], rows: &[f32], out: &mut [f32]) {
    assert_eq!(rows.len(), x.len() * out.len(), "{} rows of {} columns", out.len(), x.len());
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx512f") && has!("fma") {
            // SAFETY: the processor has the features the function was compiled for.
            return unsafe { sq_distances_avx512(x, rows, out) };
        }
        if has!("avx2") && has!("fma") {
            // SAFETY: as above.
            return unsafe { sq_distances_avx2(x, rows, out) };
        }
    }
    distances_in_groups(x, rows, out, |x, y, acc| acc + (x - y) * (x - y));
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn sq_distances_avx512(x: &[f32], rows: &[f32], out: &mut [f32]) {
    distances_in_groups(x, rows, out, |x, y, acc| (x - y).mul_add(x - y, acc));
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn sq_distances_avx2(x: &[f32], rows: &[f32], out: &mut [f32]) {
    distances_in_groups(x, rows, out, |x, y, acc| (x - y).mul_add(x - y, acc));
}

#[inline(always)]
fn distances_in_groups(x: &[f32], rows: &[f32], out: &mut [f32], step: impl Fn(f32, f32, f32) -> f32 + Copy) {
    let dim = x.len();
    let (mut rows, mut out) = (rows, out);
    while !out.is_empty() {
        let m = match out.len() {
            8.. => group::<8>(x, rows, out, step),
            4.. => group::<4>(x, rows, out, step),
            2.. => group::<2>(x, rows, out, step),
            _ => group::<1>(x, rows, out, step),
        };
        (rows, out) = (&rows[m * dim..], &mut out[m..]);
    }
}

/// The first `M` of `out`, each row's lanes as [`lanes`] keeps them; returns `M`.
#[inline(always)]
fn group<const M: usize>(x: &[f32], rows: &[f32], out: &mut [f32], step: impl Fn(f32, f32, f32) -> f32) -> usize {
    let dim = x.len();
    let mut acc = [[0f32; LANES]; M];
    let whole = dim / LANES * LANES;
    for at in (0..whole).step_by(LANES) {
        let xs = &x[at..at + LANES];
        for (j, acc) in acc.iter_mut().enumerate() {
            let ys = &rows[j * dim + at..j * dim + at + LANES];
            for l in 0..LANES {
                acc[l] = step(xs[l], ys[l], acc[l]);
            }
        }
    }
    for (j, acc) in acc.iter().enumerate() {
        let tail = x[whole..].iter().zip(&rows[j * dim + whole..(j + 1) * dim]).fold(0.0, |t, (&a, &b)| step(a, b, t));
        out[j] = acc.iter().sum::<f32>() + tail;
    }
    M
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
    fn grouped_distances_are_the_pairwise_ones_bit_for_bit() {
        // 3 + 16 lanes' worth and a tail, against 1 to 13 rows: every group size and a remainder.
        for dim in [3, 16, 37, 384] {
            let x: Vec<f32> = (0..dim).map(|i| (i as f32 * 0.37).sin()).collect();
            for m in 1..14 {
                let rows: Vec<f32> = (0..m * dim).map(|i| (i as f32 * 0.11).cos()).collect();
                let mut out = vec![0f32; m];
                sq_distances(&x, &rows, &mut out);
                let pairwise: Vec<f32> = rows.chunks(dim).map(|r| sq_distance(&x, r)).collect();
                assert_eq!(out, pairwise, "dim {dim}, {m} rows");
            }
        }
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
