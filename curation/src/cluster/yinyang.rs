//! Lloyd iterations that skip most distance computations: Yinyang k-means (Ding et al., ICML 2015).
//!
//! Centroids are split into groups once. Every row keeps an upper bound on the distance to its centroid and,
//! per group, a lower bound on the distance to the group's other centroids. When the centroids move, the
//! bounds move by the shifts (triangle inequality); a row is looked at again only where a group's lower bound
//! falls below its upper bound, and then only that group's centroids are compared, in one matrix product per
//! group. The assignment equals plain Lloyd's (up to float rounding in near ties): the same inertia in
//! fewer operations once the centroids settle.

use rayon::prelude::*;

use super::{kmeans, sq_norms, with_dots, KMeansOptions};
use crate::error::Result;
use crate::vector::{dot_products, sq_distance, ROWS_PER_PRODUCT};

/// Centroids per group: bigger groups give looser bounds but better-shaped matrix products.
const GROUP_SIZE: usize = 32;
/// Past this share of (row, group) pairs to look into, a full pass is cheaper (measured on T0 embeddings:
/// a group's narrow product with gathered rows runs at about a quarter of the full product's rate).
const FULL_PASS_SHARE: f64 = 0.25;
/// Rows per chunk of the per-row bound updates.
const ROWS_PER_CHUNK: usize = 1024;

pub(super) struct Bounds {
    /// The group of each centroid, and each group's centroids.
    group_of: Vec<u32>,
    groups: Vec<Vec<u32>>,
    pub labels: Vec<u32>,
    /// At least the distance (not squared) from each row to its centroid.
    pub upper: Vec<f32>,
    /// Row-major `rows × groups`: at most the distance to any other centroid of the group.
    lower: Vec<f32>,
    row_norms: Vec<f32>,
}

/// One row's best centroid in a group, and the distance to the group's second best.
#[derive(Clone, Copy)]
struct GroupBest {
    distance: f32,
    centroid: u32,
    second: f32,
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
    /// Groups the centroids (k-means on the centroids themselves) and computes every bound exactly.
    pub fn new(data: &[f32], dim: usize, centroids: &[f32], seed: u64) -> Result<Self> {
        let k = centroids.len() / dim;
        let t = (k / GROUP_SIZE).max(1);
        let group_of = if t == 1 {
            vec![0; k]
        } else {
            kmeans(centroids, dim, &KMeansOptions { max_iter: 5, tol: 0.0, ..KMeansOptions::new(t, seed) })?.1
        };
        let mut groups = vec![Vec::new(); t];
        group_of.iter().enumerate().for_each(|(j, &g)| groups[g as usize].push(j as u32));
        let n = data.len() / dim;
        let mut b = Bounds {
            group_of,
            groups,
            labels: vec![0; n],
            upper: vec![0.0; n],
            lower: vec![0.0; n * t],
            row_norms: sq_norms(data, dim),
        };
        b.full_pass(data, dim, centroids)?;
        Ok(b)
    }

    /// Every distance, by blocked matrix products: labels and bounds exact.
    fn full_pass(&mut self, data: &[f32], dim: usize, centroids: &[f32]) -> Result<()> {
        let t = self.groups.len();
        // The centroids in group order, so that each group's products with a row lie side by side.
        let order: Vec<u32> = self.groups.concat();
        let grouped: Vec<f32> =
            order.iter().flat_map(|&j| centroids[j as usize * dim..(j as usize + 1) * dim].iter().copied()).collect();
        let c_norms = sq_norms(&grouped, dim);
        let spans: Vec<(usize, usize)> = self
            .groups
            .iter()
            .scan(0, |start, g| {
                *start += g.len();
                Some((*start - g.len(), *start))
            })
            .collect();
        let outs = self
            .labels
            .par_chunks_mut(ROWS_PER_PRODUCT)
            .zip(self.upper.par_chunks_mut(ROWS_PER_PRODUCT))
            .zip(self.lower.par_chunks_mut(ROWS_PER_PRODUCT * t))
            .zip(self.row_norms.par_chunks(ROWS_PER_PRODUCT));
        with_dots(data, dim, &grouped, outs, |(((labels, upper), lower), norms), _, dots| {
            for ((((label, upper), lower), dots), &xn) in
                labels.iter_mut().zip(upper).zip(lower.chunks_mut(t)).zip(dots.chunks(order.len())).zip(norms)
            {
                // Each group's nearest goes to its lower bound; the nearest of all is the row's own, and its
                // group's bound is then the group's second nearest.
                let (mut home, mut own) = (0, GroupBest { distance: f32::INFINITY, centroid: 0, second: 0.0 });
                for (g, (lb, &(start, end))) in lower.iter_mut().zip(&spans).enumerate() {
                    let best = best_of(xn, &dots[start..end], &c_norms[start..end]);
                    *lb = best.distance;
                    if best.distance < own.distance {
                        (home, own) = (g, best);
                        own.centroid = order[start + best.centroid as usize];
                    }
                }
                *label = own.centroid;
                *upper = own.distance;
                lower[home] = own.second;
            }
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
        let checks: Vec<(u32, u32)> = checks.into_iter().flatten().collect();
        // Early on most rows look into most groups: one full product is then cheaper than many narrow ones.
        if checks.len() as f64 > FULL_PASS_SHARE * (self.labels.len() * t) as f64 {
            return self.full_pass(data, dim, new);
        }
        if checks.is_empty() {
            return Ok(());
        }

        // 2. One matrix product per group: its centroids against the rows that must look into it.
        let mut by_group: Vec<Vec<u32>> = vec![Vec::new(); t];
        for (i, &(_, g)) in checks.iter().enumerate() {
            by_group[g as usize].push(i as u32);
        }
        let c_norms = sq_norms(new, dim);
        let norms = &self.row_norms;
        let found: Vec<Vec<(u32, GroupBest)>> = by_group
            .par_iter()
            .enumerate()
            .flat_map_iter(|(g, entries)| entries.chunks(ROWS_PER_PRODUCT).map(move |block| (g, block)))
            .map(|(g, entries)| -> Vec<(u32, GroupBest)> {
                let members = &self.groups[g];
                let mut rows: Vec<f32> = Vec::with_capacity(entries.len() * dim);
                for &e in entries {
                    let r = checks[e as usize].0 as usize;
                    rows.extend_from_slice(&data[r * dim..(r + 1) * dim]);
                }
                let mut cents: Vec<f32> = Vec::with_capacity(members.len() * dim);
                for &j in members {
                    cents.extend_from_slice(&new[j as usize * dim..(j as usize + 1) * dim]);
                }
                let member_norms: Vec<f32> = members.iter().map(|&j| c_norms[j as usize]).collect();
                let mut dots = vec![0f32; entries.len() * members.len()];
                dot_products(&rows, &cents, dim, &mut dots);
                entries
                    .iter()
                    .zip(dots.chunks(members.len()))
                    .map(|(&e, dots)| {
                        let mut best = best_of(norms[checks[e as usize].0 as usize], dots, &member_norms);
                        best.centroid = members[best.centroid as usize];
                        (e, best)
                    })
                    .collect()
            })
            .collect();
        let mut results = vec![GroupBest { distance: 0.0, centroid: 0, second: 0.0 }; checks.len()];
        for (e, best) in found.into_iter().flatten() {
            results[e as usize] = best;
        }

        // 3. Each looked-at row takes the nearest centroid found and new bounds for the groups it saw.
        let mut start = 0;
        while start < checks.len() {
            let row = checks[start].0 as usize;
            let end = start + checks[start..].iter().take_while(|c| c.0 as usize == row).count();
            let (old_label, old_distance) = (self.labels[row], self.upper[row]);
            let (mut label, mut distance) = (old_label, old_distance);
            for r in &results[start..end] {
                if r.distance < distance {
                    (label, distance) = (r.centroid, r.distance);
                }
            }
            let lower = &mut self.lower[row * t..(row + 1) * t];
            let old_group = self.group_of[old_label as usize];
            let mut saw_old_group = false;
            for (&(_, g), r) in checks[start..end].iter().zip(&results[start..end]) {
                // The group's nearest other than the row's own centroid.
                lower[g as usize] = if r.centroid == label { r.second } else { r.distance };
                saw_old_group |= g == old_group;
            }
            if label != old_label && !saw_old_group {
                lower[old_group as usize] = lower[old_group as usize].min(old_distance);
            }
            self.labels[row] = label;
            self.upper[row] = distance;
            start = end;
        }
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
