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
    #[cfg(target_arch = "x86_64")]
    if cols <= narrow::MAX_COLS && std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the processor has AVX-512; the shapes were checked above.
        return unsafe { narrow::dot_products(a, b, dim, out) };
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

/// Products with a few columns (k-means++ candidates) without gemm: gemm packs every block of rows before
/// multiplying, which with so few columns costs as much as the products. Each row is read once per 8 columns,
/// whose sums stay in registers. One row at a time: k-means++ streams a sample larger than the caches, and
/// tiles of 3 rows ran at half the rate there (24 against 47 GFLOPS per core on a 25 MiB sample, AMD EPYC), though
/// faster on rows in L2 (100 against 82).
#[cfg(target_arch = "x86_64")]
mod narrow {
    use std::arch::x86_64::*;

    pub const MAX_COLS: usize = 16;
    const TILE_COLS: usize = 8;

    /// `out = a · bᵀ` as `super::dot_products`; shapes checked by the caller.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn dot_products(a: &[f32], b: &[f32], dim: usize, out: &mut [f32]) {
        let (rows, cols) = (a.len() / dim, b.len() / dim);
        let tail: __mmask16 = ((1u32 << (dim % 16)) - 1) as u16;
        for c in (0..cols).step_by(TILE_COLS) {
            let b = b.as_ptr().add(c * dim);
            for r in 0..rows {
                let (a, out) = (a.as_ptr().add(r * dim), out.as_mut_ptr().add(r * cols + c));
                match cols - c {
                    1 => tile::<1>(a, b, dim, tail, out),
                    2 => tile::<2>(a, b, dim, tail, out),
                    3 => tile::<3>(a, b, dim, tail, out),
                    4 => tile::<4>(a, b, dim, tail, out),
                    5 => tile::<5>(a, b, dim, tail, out),
                    6 => tile::<6>(a, b, dim, tail, out),
                    7 => tile::<7>(a, b, dim, tail, out),
                    _ => tile::<TILE_COLS>(a, b, dim, tail, out),
                }
            }
        }
    }

    /// One row `a` against `C` rows from `b`, all `dim` long; the sums go to `out[..C]`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn tile<const C: usize>(a: *const f32, b: *const f32, dim: usize, tail: __mmask16, out: *mut f32) {
        let mut sums = [_mm512_setzero_ps(); C];
        let mut at = 0;
        while at + 16 <= dim {
            let x = _mm512_loadu_ps(a.add(at));
            for (c, sum) in sums.iter_mut().enumerate() {
                *sum = _mm512_fmadd_ps(x, _mm512_loadu_ps(b.add(c * dim + at)), *sum);
            }
            at += 16;
        }
        if tail != 0 {
            let x = _mm512_maskz_loadu_ps(tail, a.add(at));
            for (c, sum) in sums.iter_mut().enumerate() {
                *sum = _mm512_fmadd_ps(x, _mm512_maskz_loadu_ps(tail, b.add(c * dim + at)), *sum);
            }
        }
        for (c, &sum) in sums.iter().enumerate() {
            *out.add(c) = _mm512_reduce_add_ps(sum);
        }
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
        // Few columns (the AVX-512 tiles, where the processor has it: rows and columns past a tile, a dimension
        // past a 16-value step) and many (gemm).
        for (rows, cols, dim) in [(5, 3, 37), (7, 11, 48), (4, 16, 5), (6, 20, 37)] {
            let a: Vec<f32> = (0..rows * dim).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..cols * dim).map(|i| (i as f32 * 0.11).cos()).collect();
            let mut out = vec![f32::NAN; rows * cols];
            dot_products(&a, &b, dim, &mut out);
            for (i, x) in a.chunks(dim).enumerate() {
                for (j, y) in b.chunks(dim).enumerate() {
                    let want = dot(x, y);
                    assert!((out[i * cols + j] - want).abs() < 1e-4, "{rows}×{cols}, dim {dim}: ({i}, {j})");
                }
            }
        }
    }
}
