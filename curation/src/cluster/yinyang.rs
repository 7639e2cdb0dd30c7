//! Lloyd iterations that skip most distance computations: Yinyang k-means (Ding et al., ICML 2015).
//!
//! Centroids are split into groups once. Every row keeps an upper bound on the distance to its centroid and,
//! per group, a lower bound on the distance to the group's other centroids. When the centroids move, the
//! bounds move by the shifts (triangle inequality); a row is looked at again only where a group's lower bound
//! falls below its upper bound, and then only that group's centroids are compared, in one matrix product per
//! group. The assignment equals plain Lloyd's (up to float rounding in near ties): the same inertia in
//! fewer operations once the centroids settle.
//!
//! On processors with AVX512-BF16 the products are bfloat16's (`gemm_bf16`: about twice f32's rate), and exact
//! where they decide: a bfloat16 product is within [`bf16_error`]`·‖x‖·‖c‖` of x·c, so every centroid whose
//! rounded distance lies within twice that of the best is measured again in f32 (a few per row), and lower
//! bounds are lowered by it. Labels are then those of f32 distances, and bounds stay bounds (a little looser).

use std::cell::RefCell;

use rayon::prelude::*;

use super::{fit, mean, sq_norms, with_dots, KMeansOptions};
use crate::error::Result;
use crate::gemm_bf16::{self, gemm, Pairs, Panels};
use crate::vector::{dot_products, sq_distance, ROWS_PER_PRODUCT};

/// Centroids per group: bigger groups give looser bounds but better-shaped matrix products.
const GROUP_SIZE: usize = 32;
/// Past this share of (row, group) pairs to look into, a full pass is cheaper (measured on T0 embeddings:
/// a group's narrow product with gathered rows runs at about a quarter of the full product's rate).
const FULL_PASS_SHARE: f64 = 0.25;
/// Rows per chunk of a step: the rows a chunk looks at again are gathered from it while it sits in L2.
const ROWS_PER_CHUNK: usize = 512;
/// e such that |x·c − x̃·c̃| ≤ e·‖x‖·‖c‖ for x̃, c̃ rounded to bfloat16 and summed in f32 over `dim` values:
/// 8 significant bits put each value within 2⁻⁸ of itself, so each product within 2·2⁻⁸ + 2⁻¹⁶ of its own
/// (Cauchy–Schwarz sums that over the row), and each of the `dim` f32 additions adds at most 2⁻²⁴ more.
/// (Subnormal values count as 0 in `vdpbf16ps`; embeddings hold none worth counting.)
fn bf16_error(dim: usize) -> f32 {
    (2.0f32.powi(-7) + 2.0f32.powi(-16) + (dim + 2) as f32 * 2.0f32.powi(-24)) * 1.01
}

/// A block of rows' labels, upper bounds, lower bounds and squared norms.
type Block<'a> = (((&'a mut [u32], &'a mut [f32]), &'a mut [f32]), &'a [f32]);

thread_local! {
    /// Each thread's rows as bfloat16 pairs and their products, kept across blocks.
    static BF16_SCRATCH: RefCell<(Pairs, Vec<f32>)> = RefCell::default();
}

pub(super) struct Bounds {
    /// Products in bfloat16 (with f32 re-checks) rather than f32.
    bf16: bool,
    /// Full passes run so far (the tests check that both kinds of step ran).
    #[cfg(test)]
    full_passes: usize,
    /// The group of each centroid, and each group's centroids.
    group_of: Vec<u32>,
    groups: Vec<Vec<u32>>,
    pub labels: Vec<u32>,
    /// At least the distance (not squared) from each row to its centroid.
    pub upper: Vec<f32>,
    /// Row-major `rows × groups`: at most the distance to any other centroid of the group.
    lower: Vec<f32>,
    /// Squared norms of the rows, less `centre` where there is one.
    row_norms: Vec<f32>,
    /// bfloat16 products are of rows and centroids less the rows' mean: their error grows with the norms, and
    /// distances do not change (data far from the origin had every centroid within the error of the nearest).
    centre: Option<Vec<f32>>,
}

/// One row's best centroid in a group, and the distance to the group's second best.
#[derive(Clone, Copy)]
struct GroupBest {
    distance: f32,
    centroid: u32,
    second: f32,
}

/// What a row learnt from one group: the nearest of the centroids that may beat its own, by f32 distance
/// (`exact`, infinite where the products left none to measure), and lower bounds: `first_lower` on the distance
/// to every centroid of the group, `second_lower` on the distance to every one but `first` (the one the products
/// rank first).
#[derive(Clone, Copy)]
struct Checked {
    exact: f32,
    exact_centroid: u32,
    first: u32,
    first_lower: f32,
    second_lower: f32,
}

impl Checked {
    /// From f32 products: everything exact.
    fn of(best: GroupBest) -> Self {
        Checked {
            exact: best.distance,
            exact_centroid: best.centroid,
            first: best.centroid,
            first_lower: best.distance,
            second_lower: best.second,
        }
    }

    /// The lower bound for the group once the row's centroid is `label`.
    fn lower(&self, label: u32) -> f32 {
        if self.first == label {
            self.second_lower
        } else {
            self.first_lower
        }
    }
}

/// The error bound of a row's squared distances from bfloat16 products (2·e·‖x‖·‖c‖ for the largest centroid
/// norm, e = `error`), plus the f32 rounding of the norms' sums and of ‖x‖² − 2x·c + ‖c‖².
fn bf16_slack(error: f32, dim: usize, x_sq_norm: f32, max_c_sq_norm: f32) -> f32 {
    2.0 * error * (x_sq_norm * max_c_sq_norm).sqrt() + (dim + 8) as f32 * 2.0f32.powi(-24) * (x_sq_norm + max_c_sq_norm)
}

/// Rows less `centre` (a copy), or the rows themselves.
fn centred<'a>(rows: &'a [f32], dim: usize, centre: Option<&[f32]>) -> std::borrow::Cow<'a, [f32]> {
    match centre {
        Some(centre) => rows.chunks(dim).flat_map(|r| r.iter().zip(centre).map(|(x, c)| x - c)).collect(),
        None => rows.into(),
    }
}

/// Squared norms of rows less `centre` (where given).
fn centred_norms(rows: &[f32], dim: usize, centre: Option<&[f32]>) -> Vec<f32> {
    match centre {
        Some(centre) => rows.par_chunks(dim).map(|r| sq_distance(r, centre)).collect(),
        None => sq_norms(rows, dim),
    }
}

/// A lower bound from a distance measured up to `slack` in its square.
fn lowered(distance: f32, slack: f32) -> f32 {
    (distance * distance - slack).max(0.0).sqrt()
}

/// The nearest of `candidates` (centroid ids whose rounded distance may beat `within²`) by f32 distance to `x`.
fn nearest_exact(x: &[f32], centroids: &[f32], candidates: impl Iterator<Item = u32>) -> (f32, u32) {
    let dim = x.len();
    candidates
        .map(|j| (sq_distance(x, &centroids[j as usize * dim..(j as usize + 1) * dim]), j))
        .fold((f32::INFINITY, 0), |best, c| if c.0 < best.0 { c } else { best })
}

/// Lanes of [`best_of_lanes`]: 16 running best and second-best pairs, so the loop vectorises.
const LANES: usize = 16;

/// The best and second best of one row's squared distances `xn − 2·dot + norm` to a group's centroids (their
/// products with the row side by side, and their norms), as distances (one square root each, not one per
/// centroid); `centroid` is the position of the first best in the group, as a sequential scan finds them. On
/// AVX-512 in its registers (the full pass had spent a tenth of its time here in scalar SSE); elsewhere
/// branch-free in 16 lanes.
fn best_of(xn: f32, dots: &[f32], norms: &[f32]) -> GroupBest {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the processor has the features the function was compiled for.
        return unsafe { best_of_avx512(xn, dots, norms) };
    }
    best_of_lanes(xn, dots, norms)
}

/// [`best_of`] in AVX-512 registers, 16 distances at a time: the smallest, the first position holding it, then the
/// smallest of the others (the second best, equal to the best where two tie) — the sequential scan's answer.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn best_of_avx512(xn: f32, dots: &[f32], norms: &[f32]) -> GroupBest {
    use std::arch::x86_64::*;
    let n = dots.len().min(norms.len());
    let (inf, xn, two) = (_mm512_set1_ps(f32::INFINITY), _mm512_set1_ps(xn), _mm512_set1_ps(2.0));
    // The squared distances at `at..at + 16` (infinity past the end), as `xn − 2·dot + norm` rounds them.
    let squared = |at: usize| -> __m512 {
        let valid: __mmask16 = if n - at >= 16 { !0 } else { ((1u32 << (n - at)) - 1) as u16 };
        let dot = _mm512_maskz_loadu_ps(valid, dots.as_ptr().add(at));
        let norm = _mm512_maskz_loadu_ps(valid, norms.as_ptr().add(at));
        _mm512_mask_blend_ps(valid, inf, _mm512_add_ps(_mm512_sub_ps(xn, _mm512_mul_ps(two, dot)), norm))
    };
    let mut lowest = inf;
    for at in (0..n).step_by(16) {
        lowest = _mm512_min_ps(lowest, squared(at));
    }
    let best = _mm512_reduce_min_ps(lowest);
    let target = _mm512_set1_ps(best);
    let mut position = 0;
    for at in (0..n).step_by(16) {
        let hits = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(squared(at), target);
        if hits != 0 {
            position = at + hits.trailing_zeros() as usize;
            break;
        }
    }
    let mut others = inf;
    for at in (0..n).step_by(16) {
        let mut d = squared(at);
        if (at..at + 16).contains(&position) {
            d = _mm512_mask_mov_ps(d, 1 << (position - at), inf);
        }
        others = _mm512_min_ps(others, d);
    }
    let second = _mm512_reduce_min_ps(others);
    GroupBest { distance: best.max(0.0).sqrt(), centroid: position as u32, second: second.max(0.0).sqrt() }
}

/// [`best_of`] in 16 lanes, each keeping its own best and second best (`second = min(second, max(best, d))`),
/// merged at the end; min and max are exact, so the result is the sequential scan's.
#[inline(always)]
fn best_of_lanes(xn: f32, dots: &[f32], norms: &[f32]) -> GroupBest {
    debug_assert_eq!(dots.len(), norms.len());
    // `a < b` selects rather than `f32::min`: no NaN here, and the comparison is one instruction.
    let lower = |a: f32, b: f32| if a < b { a } else { b };
    let higher = |a: f32, b: f32| if a < b { b } else { a };
    let squared = |dot: f32, norm: f32| xn - 2.0 * dot + norm;
    let (mut best, mut second) = ([f32::INFINITY; LANES], [f32::INFINITY; LANES]);
    let mut take = |l: usize, d: f32| {
        second[l] = lower(second[l], higher(best[l], d));
        best[l] = lower(best[l], d);
    };
    let (dc, nc) = (dots.chunks_exact(LANES), norms.chunks_exact(LANES));
    let (dr, nr) = (dc.remainder(), nc.remainder());
    for (dots, norms) in dc.zip(nc) {
        for l in 0..LANES {
            take(l, squared(dots[l], norms[l]));
        }
    }
    for (l, (&dot, &norm)) in dr.iter().zip(nr).enumerate() {
        take(l, squared(dot, norm));
    }
    let (mut b, mut s) = (f32::INFINITY, f32::INFINITY);
    for l in 0..LANES {
        s = lower(lower(s, higher(b, best[l])), second[l]);
        b = lower(b, best[l]);
    }
    let at = dots.iter().zip(norms).position(|(&dot, &norm)| squared(dot, norm) == b).unwrap_or(0);
    GroupBest { distance: b.max(0.0).sqrt(), centroid: at as u32, second: s.max(0.0).sqrt() }
}

impl Bounds {
    /// Groups the centroids (k-means on the centroids themselves) and computes every label and bound (a full
    /// pass); `bf16`: from bfloat16 products (where the processor has them) with f32 re-checks.
    pub fn new(data: &[f32], dim: usize, centroids: &[f32], seed: u64, bf16: bool) -> Result<Self> {
        let k = centroids.len() / dim;
        let t = (k / GROUP_SIZE).max(1);
        let group_of = if t == 1 {
            vec![0; k]
        } else {
            fit(centroids, dim, &KMeansOptions { max_iter: 5, tol: 0.0, ..KMeansOptions::new(t, seed) }, bf16)?.1
        };
        let mut groups = vec![Vec::new(); t];
        group_of.iter().enumerate().for_each(|(j, &g)| groups[g as usize].push(j as u32));
        let n = data.len() / dim;
        let bf16 = bf16 && gemm_bf16::available();
        let centre = bf16.then(|| mean(data, dim));
        let mut b = Bounds {
            bf16,
            #[cfg(test)]
            full_passes: 0,
            group_of,
            groups,
            labels: vec![0; n],
            upper: vec![0.0; n],
            lower: vec![0.0; n * t],
            row_norms: match &centre {
                Some(centre) => data.par_chunks(dim).map(|x| sq_distance(x, centre)).collect(),
                None => sq_norms(data, dim),
            },
            centre,
        };
        b.full_pass(data, dim, centroids)?;
        Ok(b)
    }

    /// Every distance, by blocked matrix products: labels exact, bounds exact (f32) or a little loose (bf16).
    fn full_pass(&mut self, data: &[f32], dim: usize, centroids: &[f32]) -> Result<()> {
        #[cfg(test)]
        {
            self.full_passes += 1;
        }
        let t = self.groups.len();
        // The centroids in group order, so that each group's products with a row lie side by side.
        let order: Vec<u32> = self.groups.concat();
        let grouped: Vec<f32> =
            order.iter().flat_map(|&j| centroids[j as usize * dim..(j as usize + 1) * dim].iter().copied()).collect();
        let c_norms = centred_norms(&grouped, dim, self.centre.as_deref());
        let spans: Vec<(usize, usize)> = self
            .groups
            .iter()
            .scan(0, |start, g| {
                *start += g.len();
                Some((*start - g.len(), *start))
            })
            .collect();
        let max_c_norm = c_norms.iter().fold(0f32, |m, &n| m.max(n));
        let (k, error) = (order.len(), bf16_error(dim));
        // One row from its products with every centroid (in group order): the nearest, and each group's bound.
        let settle = |x: &[f32],
                      xn: f32,
                      dots: &[f32],
                      slack: Option<f32>,
                      row: (&mut u32, &mut f32, &mut [f32]),
                      firsts: &mut Vec<Checked>| {
            let (label, upper, lower) = row;
            firsts.clear();
            let mut best = f32::INFINITY;
            for &(start, end) in &spans {
                let mut b = best_of(xn, &dots[start..end], &c_norms[start..end]);
                b.centroid += start as u32;
                best = best.min(b.distance);
                firsts.push(Checked::of(b));
            }
            let (distance, own) = if let Some(slack) = slack {
                // Every centroid whose rounded distance is within twice the error of the best, measured in f32.
                let within = best * best + 2.0 * slack;
                let candidates = (0..k as u32).filter(|&j| xn - 2.0 * dots[j as usize] + c_norms[j as usize] <= within);
                let (d, j) = nearest_exact(x, &grouped, candidates);
                (d.max(0.0).sqrt(), j)
            } else {
                let home = firsts.iter().min_by(|a, b| a.exact.total_cmp(&b.exact)).map_or(0, |c| c.exact_centroid);
                (best, home)
            };
            for (lb, c) in lower.iter_mut().zip(firsts.iter()) {
                *lb = slack.map_or(c.lower(own), |slack| lowered(c.lower(own), slack));
            }
            *label = order[own as usize];
            *upper = distance;
        };
        // A block of rows from its products: f32's (no slack) or bfloat16's.
        let bf16 = self.bf16;
        let settle_block = |rows: &[f32], dots: &[f32], (((labels, upper), lower), norms): Block| {
            let mut firsts = Vec::with_capacity(t);
            for (((((label, upper), lower), dots), &xn), x) in labels
                .iter_mut()
                .zip(upper)
                .zip(lower.chunks_mut(t))
                .zip(dots.chunks(k))
                .zip(norms)
                .zip(rows.chunks(dim))
            {
                let slack = bf16.then(|| bf16_slack(error, dim, xn, max_c_norm));
                settle(x, xn, dots, slack, (label, upper, lower), &mut firsts);
            }
        };
        let outs = self
            .labels
            .par_chunks_mut(ROWS_PER_PRODUCT)
            .zip(self.upper.par_chunks_mut(ROWS_PER_PRODUCT))
            .zip(self.lower.par_chunks_mut(ROWS_PER_PRODUCT * t))
            .zip(self.row_norms.par_chunks(ROWS_PER_PRODUCT));
        if !bf16 {
            with_dots(data, dim, &grouped, outs, |out, rows, dots| settle_block(rows, dots, out));
            return Ok(());
        }
        let centre = self.centre.as_deref();
        let panels = Panels::new(&centred(&grouped, dim, centre), k, dim);
        data.par_chunks(ROWS_PER_PRODUCT * dim).zip(outs).for_each(|(rows, out)| {
            BF16_SCRATCH.with_borrow_mut(|(pairs, dots)| {
                let n = rows.len() / dim;
                pairs.fill_rows(rows.chunks(dim), dim, centre);
                dots.resize(n * k, 0.0);
                gemm(pairs, &panels, None, dots, k);
                settle_block(rows, dots, out);
            })
        });
        Ok(())
    }

    /// Moves the centroids from `old` to `new` and brings labels and bounds up to date.
    pub fn step(&mut self, data: &[f32], dim: usize, old: &[f32], new: &[f32]) -> Result<()> {
        let t = self.groups.len();
        let shift: Vec<f32> =
            old.par_chunks(dim).zip(new.par_chunks(dim)).map(|(a, b)| sq_distance(a, b).sqrt()).collect();
        // A little slack so that float rounding never lets a bound overtake the truth.
        let group_shift: Vec<f32> = self
            .groups
            .iter()
            .map(|g| g.iter().map(|&j| shift[j as usize]).fold(0.0, f32::max) * 1.0001 + 1e-6)
            .collect();

        // 1. Bounds follow the shifts; rows whose bounds still decide are done. The others list the groups
        //    they must look into: (row, group), in row order.
        let checks: Vec<Vec<(u32, u32)>> = self
            .labels
            .par_chunks(ROWS_PER_CHUNK)
            .zip(self.upper.par_chunks_mut(ROWS_PER_CHUNK))
            .zip(self.lower.par_chunks_mut(ROWS_PER_CHUNK * t))
            .enumerate()
            .map(|(chunk, ((labels, upper), lower))| {
                let mut checks = Vec::new();
                for (i, ((&a, u), lower)) in labels.iter().zip(upper.iter_mut()).zip(lower.chunks_mut(t)).enumerate() {
                    *u += shift[a as usize] * 1.0001 + 1e-6;
                    let mut global = f32::INFINITY;
                    for (lb, &s) in lower.iter_mut().zip(&group_shift) {
                        *lb -= s;
                        global = global.min(*lb);
                    }
                    if *u <= global {
                        continue;
                    }
                    let row = chunk * ROWS_PER_CHUNK + i;
                    *u = sq_distance(&data[row * dim..(row + 1) * dim], &new[a as usize * dim..(a as usize + 1) * dim])
                        .sqrt();
                    if *u <= global {
                        continue;
                    }
                    checks.extend((0..t).filter(|&g| lower[g] < *u).map(|g| (row as u32, g as u32)));
                }
                checks
            })
            .collect();
        // Early on most rows look into most groups: one full product is then cheaper than many narrow ones.
        let total: usize = checks.iter().map(Vec::len).sum();
        if total as f64 > FULL_PASS_SHARE * (self.labels.len() * t) as f64 {
            return self.full_pass(data, dim, new);
        }
        if total == 0 {
            return Ok(());
        }

        // 2. Chunk by chunk, one matrix product per group: its centroids against the chunk's rows that must look
        //    into it (gathered from the chunk, which stays in cache).
        let c_norms = centred_norms(new, dim, self.centre.as_deref());
        let centre = self.centre.as_deref();
        let max_c_norm = c_norms.iter().fold(0f32, |m, &n| m.max(n));
        let (bf16, error) = (self.bf16, bf16_error(dim));
        let groups: Vec<(Vec<f32>, Vec<f32>, Panels)> = self
            .groups
            .par_iter()
            .map(|members| {
                let cents: Vec<f32> = members
                    .iter()
                    .flat_map(|&j| new[j as usize * dim..(j as usize + 1) * dim].iter().copied())
                    .collect();
                let norms = members.iter().map(|&j| c_norms[j as usize]).collect();
                let panels = if bf16 {
                    Panels::new(&centred(&cents, dim, centre), members.len(), dim)
                } else {
                    Panels::default()
                };
                (cents, norms, panels)
            })
            .collect();
        let (groups, group_of, members_of) = (&groups, &self.group_of, &self.groups);
        self.labels
            .par_chunks_mut(ROWS_PER_CHUNK)
            .zip(self.upper.par_chunks_mut(ROWS_PER_CHUNK))
            .zip(self.lower.par_chunks_mut(ROWS_PER_CHUNK * t))
            .zip(self.row_norms.par_chunks(ROWS_PER_CHUNK))
            .zip(checks.par_iter())
            .enumerate()
            .for_each(|(chunk, ((((labels, upper), lower), norms), checks))| {
                if checks.is_empty() {
                    return;
                }
                let first_row = chunk * ROWS_PER_CHUNK;
                let x_of = |row: u32| &data[row as usize * dim..(row as usize + 1) * dim];
                let mut by_group: Vec<Vec<u32>> = vec![Vec::new(); t];
                for (i, &(_, g)) in checks.iter().enumerate() {
                    by_group[g as usize].push(i as u32);
                }
                // Every entry is filled below; a missed one would neither win nor loosen a bound too little.
                let none =
                    Checked { exact: f32::INFINITY, exact_centroid: 0, first: 0, first_lower: 0.0, second_lower: 0.0 };
                let mut results = vec![none; checks.len()];
                for (g, entries) in by_group.iter().enumerate().filter(|(_, e)| !e.is_empty()) {
                    let (members, (cents, member_norms, panels)) = (&members_of[g], &groups[g]);
                    let settle = |e: u32, dots: &[f32]| {
                        let row = checks[e as usize].0;
                        let local = row as usize - first_row;
                        let xn = norms[local];
                        let mut best = best_of(xn, dots, member_norms);
                        best.centroid = members[best.centroid as usize];
                        if !bf16 {
                            return Checked::of(best);
                        }
                        // Rounded products: the centroids that may beat the row's own (f32) distance or the group's
                        // best, measured again; bounds lowered by the error.
                        let slack = bf16_slack(error, dim, xn, max_c_norm);
                        let u = upper[local];
                        let within = (best.distance * best.distance + 2.0 * slack).min(u * u + slack);
                        let candidates = members
                            .iter()
                            .zip(dots.iter().zip(member_norms))
                            .filter(|(_, (&dot, &cn))| xn - 2.0 * dot + cn <= within)
                            .map(|(&j, _)| j);
                        let (exact, exact_centroid) = nearest_exact(x_of(row), new, candidates);
                        Checked {
                            exact: exact.max(0.0).sqrt(),
                            exact_centroid,
                            first: best.centroid,
                            first_lower: lowered(best.distance, slack),
                            second_lower: lowered(best.second, slack),
                        }
                    };
                    let rows = entries.iter().map(|&e| x_of(checks[e as usize].0));
                    if bf16 {
                        BF16_SCRATCH.with_borrow_mut(|(pairs, dots)| {
                            pairs.fill_rows(rows, dim, centre);
                            dots.resize(entries.len() * members.len(), 0.0);
                            gemm(pairs, panels, None, dots, members.len());
                            for (&e, dots) in entries.iter().zip(dots.chunks(members.len())) {
                                results[e as usize] = settle(e, dots);
                            }
                        });
                    } else {
                        let gathered: Vec<f32> = rows.flatten().copied().collect();
                        let mut dots = vec![0f32; entries.len() * members.len()];
                        dot_products(&gathered, cents, dim, &mut dots);
                        for (&e, dots) in entries.iter().zip(dots.chunks(members.len())) {
                            results[e as usize] = settle(e, dots);
                        }
                    }
                }

                // 3. Each looked-at row takes the nearest centroid found and new bounds for the groups it saw.
                let mut start = 0;
                while start < checks.len() {
                    let row = checks[start].0 as usize;
                    let local = row - first_row;
                    let end = start + checks[start..].iter().take_while(|c| c.0 as usize == row).count();
                    let (old_label, old_distance) = (labels[local], upper[local]);
                    let (mut label, mut distance) = (old_label, old_distance);
                    for r in &results[start..end] {
                        if r.exact < distance {
                            (label, distance) = (r.exact_centroid, r.exact);
                        }
                    }
                    let lower = &mut lower[local * t..(local + 1) * t];
                    let old_group = group_of[old_label as usize];
                    let mut saw_old_group = false;
                    for (&(_, g), r) in checks[start..end].iter().zip(&results[start..end]) {
                        // The group's nearest other than the row's own centroid.
                        lower[g as usize] = r.lower(label);
                        saw_old_group |= g == old_group;
                    }
                    if label != old_label && !saw_old_group {
                        lower[old_group as usize] = lower[old_group as usize].min(old_distance);
                    }
                    labels[local] = label;
                    upper[local] = distance;
                    start = end;
                }
            });
        Ok(())
    }

    /// Exact squared distances of the rows to their centroids.
    pub fn distances(&self, data: &[f32], dim: usize, centroids: &[f32]) -> Vec<f32> {
        data.par_chunks(dim)
            .zip(self.labels.par_iter())
            .map(|(x, &a)| sq_distance(x, &centroids[a as usize * dim..(a as usize + 1) * dim]))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_xoshiro::Xoshiro256PlusPlus;

    /// After the first pass and after every step, on data far from the origin (where bfloat16's error, which grows
    /// with the norms, is largest against the distances) and of an odd dimension: each label is the nearest
    /// centroid by f32 distance, each upper bound is at least that distance, and each lower bound is at most the
    /// distance to every other centroid of its group. With f32 products, and with bfloat16's where the processor
    /// has them.
    #[test]
    fn labels_are_nearest_and_bounds_hold() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(5);
        let (n, dim, k) = (3000, 23, 96);
        let centres: Vec<f32> = (0..30 * dim).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let data: Vec<f32> =
            (0..n * dim).map(|i| 3.0 + centres[(i / dim % 30) * dim + i % dim] + rng.gen_range(-0.5..0.5)).collect();
        for bf16 in [false, crate::gemm_bf16::available()] {
            let mut centroids: Vec<f32> = data[..k * dim].to_vec();
            let mut bounds = Bounds::new(&data, dim, &centroids, 1, bf16).unwrap();
            let steps = 12;
            for _ in 0..steps {
                check_bounds(&bounds, &data, dim, &centroids);
                let dists: Vec<f32> = bounds.upper.iter().map(|u| u * u).collect();
                let new = super::super::update(&data, dim, k, &bounds.labels, &dists, &centroids);
                bounds.step(&data, dim, &centroids, &new).unwrap();
                centroids = new;
            }
            check_bounds(&bounds, &data, dim, &centroids);
            let full = bounds.full_passes;
            assert!(full > 1 && full < 1 + steps, "bf16 {bf16}: {full} full passes in {steps} steps: both kinds ran");
        }
    }

    /// Asserts the invariants up to f32's rounding of ‖x‖² − 2x·c + ‖c‖² (which the f32 products' bounds carry
    /// too: far from the origin it is larger than the distances' own rounding).
    fn check_bounds(b: &Bounds, data: &[f32], dim: usize, centroids: &[f32]) {
        let t = b.groups.len();
        let max_c = centroids.chunks(dim).map(crate::vector::sq_norm).fold(0f32, f32::max);
        for (row, x) in data.chunks(dim).enumerate() {
            let tol = 32.0 * 2f32.powi(-24) * (crate::vector::sq_norm(x) + max_c);
            let d: Vec<f32> = centroids.chunks(dim).map(|c| sq_distance(x, c)).collect();
            let label = b.labels[row] as usize;
            let nearest = d.iter().copied().fold(f32::INFINITY, f32::min);
            assert!(d[label] <= nearest + tol, "row {row}: label {label} at {} > {nearest}", d[label]);
            let upper = b.upper[row];
            assert!(upper * upper >= d[label] - tol, "row {row}: upper {upper} < {}", d[label].sqrt());
            for (g, members) in b.groups.iter().enumerate() {
                let other = members
                    .iter()
                    .filter(|&&j| j as usize != label)
                    .map(|&j| d[j as usize])
                    .fold(f32::INFINITY, f32::min);
                let lower = b.lower[row * t + g];
                assert!(lower * lower <= other + tol, "row {row}, group {g}: lower {lower} > {}", other.sqrt());
            }
        }
    }

    #[test]
    fn best_of_is_the_sequential_scan() {
        // Groups shorter and longer than the lanes, with ties between the best and the second best.
        for len in [0, 1, 5, 16, 17, 32, 37] {
            for tie in [false, true] {
                let dots: Vec<f32> = (0..len).map(|i| ((i * 7919) % 23) as f32 * 0.01).collect();
                let mut norms: Vec<f32> = (0..len).map(|i| 1.0 + ((i * 104729) % 17) as f32 * 0.003).collect();
                let xn = 1.5;
                let squared: Vec<f32> = dots.iter().zip(&norms).map(|(&d, &n)| xn - 2.0 * d + n).collect();
                if tie && len > 1 {
                    // Two centroids at the smallest distance: the first is the best, the second its equal.
                    let at = squared.iter().enumerate().min_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
                    let other = (at + len / 2 + 1) % len;
                    norms[other] = squared[at] - xn + 2.0 * dots[other];
                }
                let squared: Vec<f32> = dots.iter().zip(&norms).map(|(&d, &n)| xn - 2.0 * d + n).collect();
                let (mut best, mut at, mut second) = (f32::INFINITY, 0, f32::INFINITY);
                for (j, &d) in squared.iter().enumerate() {
                    if d < best {
                        (second, best, at) = (best, d, j);
                    } else if d < second {
                        second = d;
                    }
                }
                for got in [best_of(xn, &dots, &norms), best_of_lanes(xn, &dots, &norms)] {
                    assert_eq!(got.centroid as usize, at, "len {len}, tie {tie}");
                    assert_eq!(got.distance, best.max(0.0).sqrt(), "len {len}, tie {tie}");
                    assert_eq!(got.second, second.max(0.0).sqrt(), "len {len}, tie {tie}");
                }
                if tie && len > 1 {
                    assert!(squared.iter().filter(|&&d| d == best).count() >= 2 && second == best, "len {len}: no tie");
                }
            }
        }
    }
}
