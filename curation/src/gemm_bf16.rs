//! bfloat16 matrix products (the encoder at bf16 precision, k-means' assignments): `C = A · Bᵀ (+ bias)`, A's and B's values rounded
//! to bfloat16, sums in f32. AVX512-BF16's `vdpbf16ps` adds two products into each of 16 sums per instruction,
//! twice f32's rate. B (a linear layer's weights, or one head's keys or values) is packed in panels of 16 rows
//! whose values are paired along k: one step of the kernel loads 16 rows' pairs in a register and multiplies them
//! with one pair from each of 24 rows of A, broadcast from memory inside the instruction (`{1to16}`). A tile of
//! 12 rows × 32 columns, which broadcast each pair into a register for two instructions, ran at 150 GFLOPS on one
//! Zen 4 core against 200 for this one: the separate broadcasts took the vector units' slots. Single-threaded: the
//! callers run blocks side by side.

use crate::vector::bf16_round;

/// B's rows per panel: one 512-bit register of f32 sums.
const PANEL: usize = 16;
/// A's rows per kernel call: 24 sums and the panel's step of the 32 registers.
const TILE_ROWS: usize = 24;
/// A's rows per block: every panel passes over them while they sit in L2 (96 × 768 pairs = 288 KiB at most).
const BLOCK_ROWS: usize = 96;

/// Whether this processor has the products ([`gemm`] panics elsewhere).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512bf16");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Two values as one bfloat16 pair, the first in the low half (the order `vdpbf16ps` multiplies them in).
#[inline]
pub fn pair(first: f32, second: f32) -> u32 {
    bf16_round(first) as u32 | (bf16_round(second) as u32) << 16
}

/// The A side: `rows` rows of ⌈k/2⌉ bfloat16 pairs (an odd k ends with a 0).
#[derive(Default)]
pub struct Pairs {
    data: Vec<u32>,
    rows: usize,
    pairs: usize,
}

impl Pairs {
    /// `rows` rows of `k` values, row r at `src[r * stride..][..k]`.
    pub fn fill(&mut self, src: &[f32], rows: usize, k: usize, stride: usize) {
        self.fill_rows((0..rows).map(|r| &src[r * stride..r * stride + k]), k, None);
    }

    /// The given rows of `k` values each, less `centre` (k values) where given. With AVX512-BF16, 32 values per
    /// instruction (`vcvtne2ps2bf16`: the same rounding, except that subnormals become 0).
    pub fn fill_rows<'a>(&mut self, rows: impl ExactSizeIterator<Item = &'a [f32]>, k: usize, centre: Option<&[f32]>) {
        let pairs = k.div_ceil(2);
        let fast = available();
        let out = self.rows_mut(rows.len(), k);
        let mut centred = Vec::new();
        for (row, out) in rows.zip(out.chunks_exact_mut(pairs)) {
            assert_eq!(row.len(), k, "Pairs::fill_rows: a row of {} values, not {k}", row.len());
            let row = match centre {
                Some(centre) => {
                    centred.clear();
                    centred.extend(row.iter().zip(centre).map(|(x, c)| x - c));
                    centred.as_slice()
                }
                None => row,
            };
            #[cfg(target_arch = "x86_64")]
            if fast {
                // SAFETY: the processor has the features; `out` holds ⌈k/2⌉ pairs.
                unsafe { kernel::to_pairs(row, out) };
                continue;
            }
            let _ = fast;
            let (whole, odd) = row.split_at(k & !1);
            for (o, p) in out.iter_mut().zip(whole.chunks_exact(2)) {
                *o = pair(p[0], p[1]);
            }
            if let [last] = odd {
                out[k / 2] = pair(*last, 0.0);
            }
        }
    }

    /// Room for `rows` rows of `k` values, to be written as pairs (row-major, ⌈k/2⌉ per row).
    pub fn rows_mut(&mut self, rows: usize, k: usize) -> &mut [u32] {
        self.rows = rows;
        self.pairs = k.div_ceil(2);
        self.data.resize(rows * self.pairs, 0);
        &mut self.data
    }
}

/// The B side: `n` rows of k values in panels of 16 rows, each panel ⌈k/2⌉ steps of 16 pairs; rows past `n` and
/// the value past an odd k are 0.
#[derive(Default)]
pub struct Panels {
    data: Vec<u32>,
    n: usize,
    pairs: usize,
}

impl Panels {
    /// A row-major `n × k` matrix (a linear layer's weights: one row per output).
    pub fn new(weights: &[f32], n: usize, k: usize) -> Self {
        let mut panels = Panels::default();
        panels.fill(weights, n, k, k, 1);
        panels
    }

    /// The `n × k` matrix whose element (j, i) is `src[j * row_stride + i * col_stride]`: a head's keys are rows
    /// of the qkv buffer, its values (transposed) are columns of it.
    pub fn fill(&mut self, src: &[f32], n: usize, k: usize, row_stride: usize, col_stride: usize) {
        let pairs = k.div_ceil(2);
        let panels = n.div_ceil(PANEL);
        self.n = n;
        self.pairs = pairs;
        self.data.clear();
        self.data.resize(panels * pairs * PANEL, 0);
        let at = |j: usize, i: usize| if i < k { src[j * row_stride + i * col_stride] } else { 0.0 };
        for (p, panel) in self.data.chunks_exact_mut(pairs * PANEL).enumerate() {
            let rows = p * PANEL..((p + 1) * PANEL).min(n);
            for (q, step) in panel.chunks_exact_mut(PANEL).enumerate() {
                for (o, j) in step.iter_mut().zip(rows.clone()) {
                    *o = pair(at(j, 2 * q), at(j, 2 * q + 1));
                }
            }
        }
    }
}

/// `c[r * ldc + j] = a[r] · b[j] + bias[j]` for every row r of `a` and j < `b.rows()`; nothing else of `c` is
/// written. Panics where the processor lacks AVX512-BF16 ([`available`]) or the shapes do not match.
pub fn gemm(a: &Pairs, b: &Panels, bias: Option<&[f32]>, c: &mut [f32], ldc: usize) {
    let n = b.n;
    assert!(
        a.pairs == b.pairs
            && ldc >= n
            && bias.is_none_or(|b| b.len() == n)
            && (a.rows == 0 || c.len() >= (a.rows - 1) * ldc + n),
        "gemm: shapes do not match"
    );
    assert!(available(), "gemm: bfloat16 products need a processor with AVX512-BF16");
    if a.rows == 0 || n == 0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the features are there (above); the kernel reads `a.rows × pairs` pairs and whole panels, and writes
    // columns < n of rows < a.rows, which `c` holds (above).
    unsafe {
        kernel::gemm(&a.data, a.rows, a.pairs, &b.data, n, bias, c.as_mut_ptr(), ldc)
    }
}

/// `$f::<R>(args)` for R = `$rows` (1..=24): the tile's row count as a constant, so its sums stay in registers.
#[cfg(target_arch = "x86_64")]
macro_rules! by_rows {
    ($rows:expr, $f:ident($($arg:expr),*)) => {
        seq_macro::seq!(R in 1..=24 {
            match $rows {
                #(R => $f::<R>($($arg),*),)*
                _ => unreachable!("a tile has 1 to 24 rows"),
            }
        })
    };
}

#[cfg(target_arch = "x86_64")]
mod kernel {
    use super::{BLOCK_ROWS, PANEL, TILE_ROWS};
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx512f,avx512bf16")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn gemm(
        a: &[u32],
        rows: usize,
        pairs: usize,
        b: &[u32],
        n: usize,
        bias: Option<&[f32]>,
        c: *mut f32,
        ldc: usize,
    ) {
        for block in (0..rows).step_by(BLOCK_ROWS) {
            let block_end = (block + BLOCK_ROWS).min(rows);
            for p in 0..n.div_ceil(PANEL) {
                let col = p * PANEL;
                // The panel's columns that exist: all 16 but in the last panel.
                let mask = ((1u32 << (n - col).min(PANEL)) - 1) as __mmask16;
                let start = bias.map_or(_mm512_setzero_ps(), |b| _mm512_maskz_loadu_ps(mask, b.as_ptr().add(col)));
                let panel = b.as_ptr().add(p * pairs * PANEL);
                let mut r = block;
                while r < block_end {
                    let tile_rows = (block_end - r).min(TILE_ROWS);
                    let (a, c) = (a.as_ptr().add(r * pairs), c.add(r * ldc + col));
                    by_rows!(tile_rows, tile(a, pairs, panel, start, mask, c, ldc));
                    r += tile_rows;
                }
            }
        }
    }

    /// One row as bfloat16 pairs: `out` holds ⌈row.len()/2⌉ (an odd length ends with a 0).
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn to_pairs(row: &[f32], out: &mut [u32]) {
        let k = row.len();
        for at in (0..k).step_by(32) {
            let mask = |from: usize| -> __mmask16 { ((1u32 << k.saturating_sub(from).min(16)) - 1) as __mmask16 };
            let low = _mm512_maskz_loadu_ps(mask(at), row.as_ptr().add(at));
            let high = _mm512_maskz_loadu_ps(mask(at + 16), row.as_ptr().wrapping_add(at + 16));
            let pairs: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(high, low));
            let n = (k - at).min(32).div_ceil(2);
            _mm512_mask_storeu_epi32(out.as_mut_ptr().add(at / 2).cast(), ((1u32 << n) - 1) as __mmask16, pairs);
        }
    }

    /// `R` rows of A against one panel: sums start at the bias and stay in registers through all of k; each
    /// row's pair is the instruction's memory operand, broadcast to the 16 lanes as it is read.
    #[target_feature(enable = "avx512f,avx512bf16")]
    #[inline]
    unsafe fn tile<const R: usize>(
        a: *const u32,
        pairs: usize,
        panel: *const u32,
        start: __m512,
        mask: __mmask16,
        c: *mut f32,
        ldc: usize,
    ) {
        let mut sums = [start; R];
        for q in 0..pairs {
            let b: __m512bh = std::mem::transmute(_mm512_loadu_si512(panel.add(q * PANEL).cast()));
            for (r, sum) in sums.iter_mut().enumerate() {
                let x: __m512bh = std::mem::transmute(_mm512_set1_epi32(*a.add(r * pairs + q) as i32));
                *sum = _mm512_dpbf16_ps(*sum, b, x);
            }
        }
        for (r, sum) in sums.iter().enumerate() {
            _mm512_mask_storeu_ps(c.add(r * ldc), mask, *sum);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rounded(x: f32) -> f64 {
        f32::from_bits((bf16_round(x) as u32) << 16) as f64
    }

    /// Every shape the encoder uses and its edges (odd k, n past a panel, rows past a tile and a block, a bias,
    /// a wider ldc): the products of the rounded values, in f64, within f32's summation error.
    #[test]
    fn products_are_those_of_the_rounded_values() {
        if !available() {
            eprintln!("skipped: no AVX512-BF16 on this processor");
            return;
        }
        let mut seed = 1u64;
        let mut next = move || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((seed >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        };
        for &(m, n, k, ldc) in
            &[(1, 1, 1, 1), (13, 33, 7, 40), (97, 64, 384, 64), (110, 45, 33, 45), (5, 70, 64, 90), (30, 17, 50, 17)]
        {
            let a: Vec<f32> = (0..m * k).map(|_| next()).collect();
            let w: Vec<f32> = (0..n * k).map(|_| next()).collect();
            let bias: Vec<f32> = (0..n).map(|_| next()).collect();
            let mut pairs = Pairs::default();
            pairs.fill(&a, m, k, k);
            let panels = Panels::new(&w, n, k);
            let mut c = vec![f32::NAN; (m - 1) * ldc + n + 3];
            gemm(&pairs, &panels, Some(&bias), &mut c, ldc);
            for r in 0..m {
                for j in 0..ldc.min(c.len() - r * ldc) {
                    let got = c[r * ldc + j];
                    if j >= n {
                        assert!(got.is_nan(), "({m}, {n}, {k}): column {j} ≥ n was written");
                        continue;
                    }
                    let want =
                        bias[j] as f64 + (0..k).map(|i| rounded(a[r * k + i]) * rounded(w[j * k + i])).sum::<f64>();
                    assert!(
                        (got as f64 - want).abs() < 1e-5 * (k as f64).sqrt() + 1e-6,
                        "({m}, {n}, {k}) [{r}, {j}]: {got} against {want}"
                    );
                }
            }
            // The transposed fill reads the same matrix from its columns.
            let mut t = Panels::default();
            let wt: Vec<f32> = (0..k * n).map(|x| w[(x % n) * k + x / n]).collect();
            t.fill(&wt, n, k, 1, n);
            assert_eq!(t.data, panels.data, "({m}, {n}, {k}): transposed fill");
        }
    }
}
