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

/// The best and second best of squared distances, as distances (one square root each, not one per centroid).
fn best_in(squared: impl Iterator<Item = (u32, f32)>) -> GroupBest {
    let mut b = GroupBest { distance: f32::INFINITY, centroid: 0, second: f32::INFINITY };
    for (j, d) in squared {
        if d < b.distance {
            b.second = b.distance;
            (b.distance, b.centroid) = (d, j);
        } else if d < b.second {
            b.second = d;
        }
    }
    b.distance = b.distance.max(0.0).sqrt();
    b.second = b.second.max(0.0).sqrt();
    b
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
        let k = centroids.len() / dim;
        let t = self.groups.len();
        let c_norms = sq_norms(centroids, dim);
        let groups = &self.groups;
        let outs = self
            .labels
            .par_chunks_mut(ROWS_PER_PRODUCT)
            .zip(self.upper.par_chunks_mut(ROWS_PER_PRODUCT))
            .zip(self.lower.par_chunks_mut(ROWS_PER_PRODUCT * t))
            .zip(self.row_norms.par_chunks(ROWS_PER_PRODUCT));
        with_dots(data, dim, centroids, outs, |(((labels, upper), lower), norms), _, dots| {
            for ((((label, upper), lower), dots), &xn) in
                labels.iter_mut().zip(upper).zip(lower.chunks_mut(t)).zip(dots.chunks(k)).zip(norms)
            {
                let dist = |j: u32| xn - 2.0 * dots[j as usize] + c_norms[j as usize];
                // Each group's nearest goes to its lower bound; the nearest of all is the row's own, and its
                // group's bound is then the group's second nearest.
                let (mut home, mut own) = (0, GroupBest { distance: f32::INFINITY, centroid: 0, second: 0.0 });
                for (g, (lb, members)) in lower.iter_mut().zip(groups).enumerate() {
                    let best = best_in(members.iter().map(|&j| (j, dist(j))));
                    *lb = best.distance;
                    if best.distance < own.distance {
                        (home, own) = (g, best);
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
                let mut dots = vec![0f32; entries.len() * members.len()];
                dot_products(&rows, &cents, dim, &mut dots);
                entries
                    .iter()
                    .zip(dots.chunks(members.len()))
                    .map(|(&e, dots)| {
                        let xn = norms[checks[e as usize].0 as usize];
                        let best =
                            best_in(members.iter().zip(dots).map(|(&j, &d)| (j, xn - 2.0 * d + c_norms[j as usize])));
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
