//! Dense-vector kernels written so the compiler vectorises them: 16 independent lanes, summed at the end
//! (a plain sum of products stays scalar, because float addition is not reassociated). On x86-64 processors
//! with AVX2 and FMA (checked at run time) a copy compiled for them runs instead. Products of many rows with
//! many rows go to gemm ([`dot_products`]), with few columns to AVX-512 kernels of their own; [`Bf16Rows`]
//! multiplies rows rounded to bfloat16.

use rayon::prelude::*;

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
/// the callers' own buffers (no copies) on the calling thread: callers run blocks of rows side by side. With at
/// most 16 columns on a processor with AVX-512, a kernel of its own (`narrow`) instead.
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

/// `$tile::<C>(args…)` for `C` = `$width` columns, at most 8 (the kernels' tiles): one copy of each tile width.
#[cfg(target_arch = "x86_64")]
macro_rules! by_width {
    ($width:expr, $tile:ident($($arg:expr),*)) => {
        match $width {
            1 => $tile::<1>($($arg),*),
            2 => $tile::<2>($($arg),*),
            3 => $tile::<3>($($arg),*),
            4 => $tile::<4>($($arg),*),
            5 => $tile::<5>($($arg),*),
            6 => $tile::<6>($($arg),*),
            7 => $tile::<7>($($arg),*),
            _ => $tile::<8>($($arg),*),
        }
    };
}

/// Products with a few columns (k-means++ candidates) without gemm: gemm packs every block of rows before
/// multiplying, which with so few columns costs as much as the products. Each row is read once per 8 columns,
/// whose sums stay in registers. One row at a time: k-means++ streams a sample larger than the caches, and
/// tiles of 3 rows ran at half the rate there (24 against 47 GFLOPS per core on a 24 MiB sample, AMD EPYC), though
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
                by_width!(cols - c, tile(a, b, dim, tail, out))
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

/// Rows rounded to bfloat16 (f32's range, 8 significant bits), for products whose last digits do not matter
/// (k-means++'s draws): on processors with AVX512-BF16 one instruction makes twice the products of f32's over
/// half the bytes. Rows are padded with zeros to a multiple of 32 values.
pub struct Bf16Rows {
    values: Vec<u16>,
    stride: usize,
}

impl Bf16Rows {
    /// `rows` (row-major, `dim` columns) rounded to the nearest bfloat16; `None` where the processor cannot
    /// multiply bfloat16 (then use the f32 products).
    pub fn new(rows: &[f32], dim: usize) -> Option<Self> {
        #[cfg(target_arch = "x86_64")]
        if dim > 0
            && std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bf16")
        {
            let stride = dim.next_multiple_of(bf16::STEP);
            let mut values = vec![0u16; rows.len() / dim * stride];
            values.par_chunks_mut(stride).zip(rows.par_chunks(dim)).for_each(|(out, row)| {
                out.iter_mut().zip(row).for_each(|(o, &x)| *o = bf16_round(x));
            });
            return Some(Bf16Rows { values, stride });
        }
        let _ = (rows, dim);
        None
    }

    pub fn len(&self) -> usize {
        self.values.len() / self.stride
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The given rows, in that order.
    pub fn pick(&self, rows: &[usize]) -> Bf16Rows {
        let values = rows.iter().flat_map(|&r| &self.values[r * self.stride..(r + 1) * self.stride]).copied().collect();
        Bf16Rows { values, stride: self.stride }
    }

    /// `out = self[rows] · otherᵀ`, row-major `rows.len() × other.len()`.
    pub fn dot_products(&self, rows: std::ops::Range<usize>, other: &Bf16Rows, out: &mut [f32]) {
        assert!(
            self.stride == other.stride
                && rows.start <= rows.end
                && rows.end <= self.len()
                && out.len() == rows.len() * other.len(),
            "Bf16Rows::dot_products: shapes do not match"
        );
        self.products(&self.values[rows.start * self.stride..rows.end * self.stride], &other.values, out);
    }

    /// Each row's product with itself, exactly as `dot_products` computes it (each column has its own sums), so
    /// a row's distance to itself comes out 0.
    pub fn sq_norms(&self) -> Vec<f32> {
        self.values
            .par_chunks(self.stride)
            .map(|row| {
                let mut out = [0f32];
                self.products(row, row, &mut out);
                out[0]
            })
            .collect()
    }

    /// `out = a · bᵀ` for whole rows of this stride; `out` holds exactly their products.
    fn products(&self, a: &[u16], b: &[u16], out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `new` made rows only where the processor has AVX512-BF16; the callers pass whole rows of
        // `self.stride` and an `out` of rows × columns.
        unsafe {
            bf16::dot_products(a, b, self.stride, out)
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (a, b, out);
            unreachable!("Bf16Rows exist only on x86-64 processors with AVX512-BF16")
        }
    }
}

/// The nearest bfloat16 (ties to even), as its bits; a NaN stays a NaN.
pub(crate) fn bf16_round(x: f32) -> u16 {
    if x.is_nan() {
        return 0x7fc0;
    }
    let bits = x.to_bits();
    (bits.wrapping_add(0x7fff + ((bits >> 16) & 1)) >> 16) as u16
}

#[cfg(target_arch = "x86_64")]
mod bf16 {
    use std::arch::x86_64::*;

    /// Values per step: one 512-bit register of bfloat16.
    pub const STEP: usize = 32;
    const TILE_COLS: usize = 8;

    /// `out = a · bᵀ` for rows of `stride` (a multiple of STEP) bfloat16 values.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn dot_products(a: &[u16], b: &[u16], stride: usize, out: &mut [f32]) {
        let (rows, cols) = (a.len() / stride, b.len() / stride);
        for c in (0..cols).step_by(TILE_COLS) {
            let b = b.as_ptr().add(c * stride);
            for r in 0..rows {
                let (a, out) = (a.as_ptr().add(r * stride), out.as_mut_ptr().add(r * cols + c));
                by_width!(cols - c, tile(a, b, stride, out))
            }
        }
    }

    /// One row `a` against `C` rows from `b`: `out[..C]`.
    #[target_feature(enable = "avx512f,avx512bf16")]
    #[inline]
    unsafe fn tile<const C: usize>(a: *const u16, b: *const u16, stride: usize, out: *mut f32) {
        let load = |p: *const u16| -> __m512bh { std::mem::transmute(_mm512_loadu_si512(p.cast())) };
        let mut sums = [_mm512_setzero_ps(); C];
        for at in (0..stride).step_by(STEP) {
            let x = load(a.add(at));
            for (c, sum) in sums.iter_mut().enumerate() {
                *sum = _mm512_dpbf16_ps(*sum, x, load(b.add(c * stride + at)));
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

    #[test]
    fn bf16_products_are_those_of_the_rounded_rows() {
        assert_eq!(bf16_round(1.0), 0x3f80);
        assert_eq!(bf16_round(f32::from_bits(0x3f80_8000)), 0x3f80, "a tie goes to even");
        assert_eq!(bf16_round(f32::from_bits(0x3f81_8000)), 0x3f82, "a tie goes to even");
        assert_eq!(bf16_round(f32::from_bits(0x3f80_8001)), 0x3f81);
        assert_eq!(bf16_round(f32::NAN) & 0x7fc0, 0x7fc0);
        assert_eq!(bf16_round(f32::MAX), 0x7f80, "past the largest bfloat16: infinity");
        let (rows, cols, dim) = (7, 11, 45);
        let a: Vec<f32> = (0..rows * dim).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..cols * dim).map(|i| (i as f32 * 0.11).cos()).collect();
        let (Some(low_a), Some(low_b)) = (Bf16Rows::new(&a, dim), Bf16Rows::new(&b, dim)) else {
            return; // no AVX512-BF16 here: callers use the f32 products, and this test checks nothing
        };
        let rounded = |v: &[f32]| -> Vec<f64> {
            v.iter().map(|&x| f32::from_bits((bf16_round(x) as u32) << 16) as f64).collect()
        };
        let (ra, rb) = (rounded(&a), rounded(&b));
        let mut out = vec![f32::NAN; 3 * cols];
        low_a.dot_products(2..5, &low_b, &mut out);
        for i in 0..3 {
            for j in 0..cols {
                let want: f64 = (0..dim).map(|d| ra[(i + 2) * dim + d] * rb[j * dim + d]).sum();
                assert!((out[i * cols + j] as f64 - want).abs() < 1e-5, "({i}, {j}): {} vs {want}", out[i * cols + j]);
            }
        }
        // A row's product with itself as a product with several columns computes it.
        let norms = low_a.sq_norms();
        let mut wide = vec![f32::NAN; 11];
        low_a.dot_products(4..5, &low_a.pick(&[0, 1, 2, 3, 5, 6, 0, 1, 2, 4, 3]), &mut wide);
        assert_eq!(norms[4], wide[9]);
        assert!(norms[4] > 0.0);
        assert_eq!(low_a.pick(&[6, 1]).len(), 2);
    }
}
