//! k-means over embeddings: k-means++ seeding, then Lloyd iterations. The first assignment is a blocked
//! matrix product (‖x‖² − 2x·c + ‖c‖²) on gemm, a block of rows per core; later ones skip the rows and centroid
//! groups that distance bounds rule out (Yinyang k-means, `yinyang`), with the same result as plain Lloyd.

use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use yinyang::Bounds;

mod linfa_api;
mod minibatch;
pub mod stage;
mod yinyang;

use crate::vector::{dot_products, sq_distance, sq_norm, Bf16Rows, ROWS_PER_PRODUCT};
pub use minibatch::kmeans_minibatch;
pub use stage::{cluster_dataset, cluster_dataset_streaming, label_dataset, ClusterResults};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct KMeansOptions {
    pub k: usize,
    pub max_iter: usize,
    /// Stop when the centroids move less than this (sum of squared shifts over the data's total variance).
    pub tol: f64,
    pub seed: u64,
    #[serde(default)]
    pub seeding: Seeding,
}

/// How k-means++ picks each next centroid.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Seeding {
    /// The best of 2 + ln k candidates (scikit-learn's): the lowest inertia.
    #[default]
    Greedy,
    /// One candidate per step: more centroids in sparse regions, which selection by cluster is for (with greedy
    /// seeds, kMQ's picks in `whet bench selection --quick` were spread over fewer skills than random's).
    Plain,
}

impl KMeansOptions {
    pub fn new(k: usize, seed: u64) -> Self {
        KMeansOptions { k, max_iter: 25, tol: 1e-4, seed, seeding: Seeding::Greedy }
    }

    /// Plain k-means++ seeds ([`Seeding::Plain`]): clusters to select from or to search in.
    pub fn plain(k: usize, seed: u64) -> Self {
        KMeansOptions { seeding: Seeding::Plain, ..Self::new(k, seed) }
    }
}

/// A fitted k-means: centroids (row-major `k × dim`), sizes, and the fit's inertia.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KMeans {
    pub k: usize,
    pub dim: usize,
    #[serde(skip)]
    pub centroids: Vec<f32>,
    pub sizes: Vec<u64>,
    /// Sum of squared distances from each row to its centroid.
    pub inertia: f64,
    pub iterations: usize,
    pub converged: bool,
}

/// The arithmetic of k-means++'s distances to candidates: see [`seed_plus_plus`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Precision {
    Bf16,
    F32,
}

/// k-means++ seeds from at most this many rows per cluster (and at least SEED_MIN_POINTS rows): greedy seeding on
/// 16 rows per cluster ends 0.1–2.4% above scikit-learn's inertia (seeded from every row) on the benchmark's
/// cases, on 32 level with it.
const SEED_POINTS_PER_CLUSTER: usize = 16;
const SEED_MIN_POINTS: usize = 8_192;

/// Mean squared distance of the rows from their mean.
fn variance(data: &[f32], dim: usize) -> f64 {
    let n = (data.len() / dim) as f64;
    let (sum, sq) = sums_and_squares(data, dim);
    sq / n - sum.iter().map(|s| (s / n).powi(2)).sum::<f64>()
}

/// The mean row (f64 sums).
fn mean(data: &[f32], dim: usize) -> Vec<f32> {
    let n = (data.len() / dim) as f64;
    sums_and_squares(data, dim).0.iter().map(|s| (s / n) as f32).collect()
}

/// Each column's sum, and the sum of every value squared (f64).
fn sums_and_squares(data: &[f32], dim: usize) -> (Vec<f64>, f64) {
    data.par_chunks(dim)
        .fold(
            || (vec![0f64; dim], 0f64),
            |(mut sum, mut sq), r| {
                sum.iter_mut().zip(r).for_each(|(s, &v)| *s += v as f64);
                sq += r.iter().map(|&v| (v as f64).powi(2)).sum::<f64>();
                (sum, sq)
            },
        )
        .reduce(
            || (vec![0f64; dim], 0f64),
            |(mut a, qa), (b, qb)| {
                a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                (a, qa + qb)
            },
        )
}

fn check(data: &[f32], dim: usize, k: usize) -> Result<usize> {
    if dim == 0 || !data.len().is_multiple_of(dim) {
        return Err(Error::Invalid(format!("{} values are not rows of dimension {dim}", data.len())));
    }
    let n = data.len() / dim;
    if k == 0 {
        return Err(Error::Invalid("k must be at least 1".into()));
    }
    if k > n {
        return Err(Error::Invalid(format!("k = {k} clusters but only {n} rows: choose k ≤ {n}")));
    }
    if let Some(at) = data.iter().position(|v| !v.is_finite()) {
        return Err(Error::Invalid(format!("row {} has a non-finite value ({})", at / dim, data[at])));
    }
    Ok(n)
}

fn sq_norms(m: &[f32], dim: usize) -> Vec<f32> {
    m.par_chunks(dim).map(sq_norm).collect()
}

/// Blocks of rows and their dot products with every centroid (`rows × k`), side by side on every core:
/// `each(out, rows, dots)` for each block of at most ROWS_PER_PRODUCT rows, with `outs` yielding the caller's
/// per-block outputs in block order.
pub(crate) fn with_dots<O: Send>(
    data: &[f32],
    dim: usize,
    centroids: &[f32],
    outs: impl IndexedParallelIterator<Item = O>,
    each: impl Fn(O, &[f32], &[f32]) + Sync + Send,
) {
    let k = centroids.len() / dim;
    data.par_chunks(ROWS_PER_PRODUCT * dim).zip(outs).for_each_init(Vec::new, |dots: &mut Vec<f32>, (rows, out)| {
        dots.resize(rows.len() / dim * k, 0.0);
        dot_products(rows, centroids, dim, dots);
        each(out, rows, dots);
    });
}

/// Rows and centroids of one dimension, and at least one centroid.
fn check_shapes(data: &[f32], dim: usize, centroids: &[f32]) -> Result<()> {
    if dim == 0 || !data.len().is_multiple_of(dim) || !centroids.len().is_multiple_of(dim) || centroids.is_empty() {
        return Err(Error::Invalid(format!(
            "{} row values and {} centroid values are not rows of dimension {dim} with at least one centroid",
            data.len(),
            centroids.len()
        )));
    }
    Ok(())
}

/// The nearest centroid of every row and the squared distance to it.
pub fn assign(data: &[f32], dim: usize, centroids: &[f32]) -> Result<(Vec<u32>, Vec<f32>)> {
    check_shapes(data, dim, centroids)?;
    let c_norms = sq_norms(centroids, dim);
    let n = data.len() / dim;
    let mut labels = vec![0u32; n];
    let mut dists = vec![0f32; n];
    let outs = labels.par_chunks_mut(ROWS_PER_PRODUCT).zip(dists.par_chunks_mut(ROWS_PER_PRODUCT));
    with_dots(data, dim, centroids, outs, |(labels, dists), rows, dots| {
        let k = c_norms.len();
        for (((label, dist), dots), x) in labels.iter_mut().zip(dists).zip(dots.chunks(k)).zip(rows.chunks(dim)) {
            let (mut best, mut best_d) = (0usize, f32::INFINITY);
            for (j, (&dot, &cn)) in dots.iter().zip(&c_norms).enumerate() {
                let d = cn - 2.0 * dot;
                if d < best_d {
                    (best, best_d) = (j, d);
                }
            }
            *label = best as u32;
            *dist = (sq_norm(x) + best_d).max(0.0);
        }
    });
    Ok((labels, dists))
}

/// The `p` nearest centroids of every row, nearest first: row-major `rows × p`.
pub fn nearest_centroids(data: &[f32], dim: usize, centroids: &[f32], p: usize) -> Result<Vec<u32>> {
    check_shapes(data, dim, centroids)?;
    let k = centroids.len() / dim;
    let p = p.clamp(1, k);
    let c_norms = sq_norms(centroids, dim);
    let mut nearest = vec![0u32; data.len() / dim * p];
    with_dots(data, dim, centroids, nearest.par_chunks_mut(ROWS_PER_PRODUCT * p), |nearest, _, dots| {
        for (nearest, row) in nearest.chunks_mut(p).zip(dots.chunks(k)) {
            // Insertion into the p best so far (p is small).
            let mut best: Vec<(f32, u32)> = Vec::with_capacity(p + 1);
            for (j, (&dot, &cn)) in row.iter().zip(&c_norms).enumerate() {
                let d = cn - 2.0 * dot;
                if best.len() < p || d < best[p - 1].0 {
                    let at = best.partition_point(|&(b, _)| b <= d);
                    best.insert(at, (d, j as u32));
                    best.truncate(p);
                }
            }
            nearest.iter_mut().zip(&best).for_each(|(n, &(_, j))| *n = j);
        }
    });
    Ok(nearest)
}

/// Greedy k-means++ seeding (scikit-learn's): each next centroid is the best of `2 + ln k` candidate rows drawn
/// with probability proportional to their squared distance from the nearest centroid so far, best being the
/// one that leaves the smallest sum of those distances. Plain k-means++ (one candidate) ended 1.6–7% higher in
/// inertia after 20 Lloyd iterations on T0. Distances to candidates are ‖x‖² + ‖c‖² − 2x·c, as `assign` computes
/// them: rounded unlike the subtracted form (a row on a centroid may keep a tiny distance), which chose the
/// same seeds on T0 and in the unit test.
///
/// With `Precision::Bf16` (greedy seeding) and a processor with AVX512-BF16, the distances to candidates are
/// those of the rows rounded to bfloat16: each step streams the whole sample, and this reads half the bytes with
/// twice the products per instruction. The draws and choices are k-means++'s on slightly moved points and the
/// seeds are rows of `data`: other seeds than f32's, of the same quality (the unit test compares potentials).
/// A processor without it seeds in f32, so the same seed gives other clusters there.
fn seed_plus_plus(
    data: &[f32],
    dim: usize,
    k: usize,
    seeding: Seeding,
    precision: Precision,
    rng: &mut Xoshiro256PlusPlus,
) -> Vec<f32> {
    let n = data.len() / dim;
    let trials = match seeding {
        Seeding::Greedy => 2 + (k as f64).ln() as usize,
        Seeding::Plain => 1,
    };
    let mut centroids = Vec::with_capacity(k * dim);
    let first = rng.gen_range(0..n);
    centroids.extend_from_slice(&data[first * dim..(first + 1) * dim]);
    let mut closest: Vec<f32> = data.par_chunks(dim).map(|r| sq_distance(r, &centroids[..dim])).collect();
    let bf16_rows = match precision {
        Precision::Bf16 => Bf16Rows::new(data, dim),
        Precision::F32 => None,
    };
    let norms = match &bf16_rows {
        Some(rows) => rows.sq_norms(),
        None => sq_norms(data, dim),
    };
    let mut to_candidates = vec![0f32; n * trials];
    let mut cumulative = vec![0f64; n];
    for _ in 1..k {
        let mut total = 0f64;
        for (c, &d) in cumulative.iter_mut().zip(&closest) {
            total += d as f64;
            *c = total;
        }
        let candidates: Vec<usize> = (0..trials)
            .map(|_| match total > 0.0 {
                true => {
                    let target = rng.gen::<f64>() * total;
                    cumulative.partition_point(|&c| c < target).min(n - 1)
                }
                false => rng.gen_range(0..n), // every row sits on a centroid: any row will do
            })
            .collect();
        let rows: Vec<f32> = candidates.iter().flat_map(|&i| data[i * dim..(i + 1) * dim].iter().copied()).collect();
        let candidate_norms: Vec<f32> = candidates.iter().map(|&i| norms[i]).collect();
        let bf16_candidates = bf16_rows.as_ref().map(|rows| rows.pick(&candidates));
        // Each block's sum of the distances left by each candidate; summed in block order, so the choice is
        // the same on any number of threads. Every row against every candidate, as ‖x‖² + ‖c‖² − 2x·c from one
        // product of the block with the candidates: half the arithmetic of subtracting first, which bounded
        // this loop. (The triangle inequality, tried before, skipped almost no row on embeddings.)
        let mut left = vec![vec![0f64; trials]; n.div_ceil(ROWS_PER_PRODUCT)];
        to_candidates
            .par_chunks_mut(ROWS_PER_PRODUCT * trials)
            .zip(data.par_chunks(ROWS_PER_PRODUCT * dim))
            .zip(closest.par_chunks(ROWS_PER_PRODUCT))
            .zip(norms.par_chunks(ROWS_PER_PRODUCT))
            .zip(left.par_iter_mut())
            .enumerate()
            .for_each(|(block, ((((to, x), closest), norms), left))| {
                match (&bf16_rows, &bf16_candidates) {
                    (Some(rows), Some(candidates)) => {
                        let start = block * ROWS_PER_PRODUCT;
                        rows.dot_products(start..start + closest.len(), candidates, to)
                    }
                    _ => dot_products(x, &rows, dim, to),
                }
                for ((to, &own), &norm) in to.chunks_mut(trials).zip(closest).zip(norms) {
                    for ((t, left), &c_norm) in to.iter_mut().zip(left.iter_mut()).zip(&candidate_norms) {
                        *t = (norm + c_norm - 2.0 * *t).max(0.0).min(own);
                        *left += *t as f64;
                    }
                }
            });
        let sums: Vec<f64> = (0..trials).map(|j| left.iter().map(|l| l[j]).sum()).collect();
        let best = (0..trials).min_by(|&a, &b| sums[a].total_cmp(&sums[b])).unwrap_or(0);
        closest.par_iter_mut().zip(to_candidates.par_chunks(trials)).for_each(|(d, to)| *d = d.min(to[best]));
        centroids.extend_from_slice(&rows[best * dim..(best + 1) * dim]);
    }
    centroids
}

/// Fits k-means to `data` (row-major, `dim` columns). Returns the model and each row's cluster.
pub fn kmeans(data: &[f32], dim: usize, opts: &KMeansOptions) -> Result<(KMeans, Vec<u32>)> {
    fit(data, dim, opts, crate::gemm_bf16::available())
}

/// [`kmeans`], its distances from bfloat16 products (with f32 re-checks) or from f32 products.
fn fit(data: &[f32], dim: usize, opts: &KMeansOptions, bf16: bool) -> Result<(KMeans, Vec<u32>)> {
    let n = check(data, dim, opts.k)?;
    let k = opts.k;
    let mut centroids = initial_centroids(n, dim, opts, |picked| {
        Ok(match picked {
            Some(rows) => rows.iter().flat_map(|&r| data[r * dim..(r + 1) * dim].iter().copied()).collect(),
            None => data.to_vec(),
        })
    })?;
    // Total variance, for a scale-free tolerance (as scikit-learn does); not needed with tol = 0.
    let variance = if opts.tol > 0.0 { variance(data, dim) } else { 0.0 };
    let mut iterations = 0;
    let mut converged = false;
    let mut bounds = Bounds::new(data, dim, &centroids, opts.seed, bf16)?;
    // Each cluster's sum and count, kept up to date from the rows that change cluster (after the first
    // iterations, few do) rather than summed again over every row.
    let (mut sums, mut counts) = cluster_sums(data, dim, k, &bounds.labels);
    let mut before = Vec::new();
    while iterations < opts.max_iter {
        iterations += 1;
        // Upper bounds stand in for the distances: they are needed only to refill an emptied cluster.
        let approx: Vec<f32> = bounds.upper.iter().map(|u| u * u).collect();
        let updated = means(data, dim, &sums, &counts, &bounds.labels, &approx, &centroids);
        let shift: f64 = updated.iter().zip(&centroids).map(|(a, b)| ((a - b) as f64).powi(2)).sum();
        before.clone_from(&bounds.labels);
        bounds.step(data, dim, &centroids, &updated)?;
        let moved: Vec<usize> = (0..n).filter(|&row| before[row] != bounds.labels[row]).collect();
        if moved.len() > n / 8 {
            // Early on many rows move: summing again runs on every core.
            (sums, counts) = cluster_sums(data, dim, k, &bounds.labels);
        } else {
            for row in moved {
                let x = &data[row * dim..(row + 1) * dim];
                let (from, to) = (before[row] as usize, bounds.labels[row] as usize);
                sums[from * dim..(from + 1) * dim].iter_mut().zip(x).for_each(|(s, &v)| *s -= v as f64);
                sums[to * dim..(to + 1) * dim].iter_mut().zip(x).for_each(|(s, &v)| *s += v as f64);
                counts[from] -= 1;
                counts[to] += 1;
                if counts[from] == 0 {
                    // No rounding residue left behind in an emptied cluster.
                    sums[from * dim..(from + 1) * dim].fill(0.0);
                }
            }
        }
        centroids = updated;
        if shift <= opts.tol * variance.max(f64::MIN_POSITIVE) {
            converged = true;
            break;
        }
    }
    let dists = bounds.distances(data, dim, &centroids);
    let labels = bounds.labels;
    let mut sizes = vec![0u64; k];
    labels.iter().for_each(|&l| sizes[l as usize] += 1);
    let inertia = dists.iter().map(|&d| d as f64).sum();
    Ok((KMeans { k, dim, centroids, sizes, inertia, iterations, converged }, labels))
}

/// k-means++ seeds for `n` rows of dimension `dim`. k-means++ makes one pass over its points per centroid, so it
/// runs on a sample of SEED_POINTS_PER_CLUSTER × k rows (all rows when fewer): at k = 1024 on T0 that is still
/// half of the fit, and fewer rows cost inertia (README, k-means). `rows(Some(picked))` gives those rows' vectors in that order,
/// `rows(None)` every row's; a caller whose rows live elsewhere (on a cluster) fetches only those.
pub fn initial_centroids(
    n: usize,
    dim: usize,
    opts: &KMeansOptions,
    rows: impl FnOnce(Option<&[usize]>) -> Result<Vec<f32>>,
) -> Result<Vec<f32>> {
    if opts.k == 0 || opts.k > n {
        return Err(Error::Invalid(format!("k = {} clusters but {n} rows: choose 1 ≤ k ≤ {n}", opts.k)));
    }
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(opts.seed);
    let sample_rows = n.min((SEED_POINTS_PER_CLUSTER * opts.k).max(SEED_MIN_POINTS));
    let points = if sample_rows < n {
        rows(Some(&rand::seq::index::sample(&mut rng, n, sample_rows).into_vec()))?
    } else {
        rows(None)?
    };
    if points.len() != sample_rows * dim {
        return Err(Error::Invalid(format!(
            "k-means++ asked for {sample_rows} rows and got {}",
            points.len() / dim.max(1)
        )));
    }
    // Plain seeds (selection, semantic dedup) are cheap, one candidate per step: they stay f32.
    let precision = match opts.seeding {
        Seeding::Greedy => Precision::Bf16,
        Seeding::Plain => Precision::F32,
    };
    Ok(seed_plus_plus(&points, dim, opts.k, opts.seeding, precision, &mut rng))
}

/// New centroids from every row (plain Lloyd's, the tests' reference): see [`means`].
#[cfg(test)]
fn update(data: &[f32], dim: usize, k: usize, labels: &[u32], dists: &[f32], old: &[f32]) -> Vec<f32> {
    let (sums, counts) = cluster_sums(data, dim, k, labels);
    means(data, dim, &sums, &counts, labels, dists, old)
}

/// Each cluster's sum of rows (f64) and count of rows.
fn cluster_sums(data: &[f32], dim: usize, k: usize, labels: &[u32]) -> (Vec<f64>, Vec<u64>) {
    data.par_chunks(dim * 1024)
        .zip(labels.par_chunks(1024))
        .fold(
            || (vec![0f64; k * dim], vec![0u64; k]),
            |(mut sums, mut counts), (rows, labels)| {
                for (r, &l) in rows.chunks(dim).zip(labels) {
                    let l = l as usize;
                    counts[l] += 1;
                    sums[l * dim..(l + 1) * dim].iter_mut().zip(r).for_each(|(s, &v)| *s += v as f64);
                }
                (sums, counts)
            },
        )
        .reduce(
            || (vec![0f64; k * dim], vec![0u64; k]),
            |(mut a, mut ca), (b, cb)| {
                a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                ca.iter_mut().zip(&cb).for_each(|(x, y)| *x += y);
                (a, ca)
            },
        )
}

/// New centroids: the clusters' means from their sums and counts. An emptied cluster takes the row farthest
/// from its centroid (by `dists`; deterministic), so k clusters stay k.
fn means(
    data: &[f32],
    dim: usize,
    sums: &[f64],
    counts: &[u64],
    labels: &[u32],
    dists: &[f32],
    old: &[f32],
) -> Vec<f32> {
    let k = counts.len();
    let mut centroids = old.to_vec();
    let empty = counts.iter().filter(|&&c| c == 0).count();
    let mut far: Vec<usize> = Vec::new();
    if empty > 0 {
        far = (0..labels.len()).collect();
        let nth = empty.min(far.len() - 1);
        far.select_nth_unstable_by(nth, |&a, &b| dists[b].total_cmp(&dists[a]).then(a.cmp(&b)));
        far.truncate(empty);
        far.sort_by(|&a, &b| dists[b].total_cmp(&dists[a]).then(a.cmp(&b)));
    }
    let mut far = far.into_iter();
    for c in 0..k {
        let row = &mut centroids[c * dim..(c + 1) * dim];
        if counts[c] > 0 {
            row.iter_mut().zip(&sums[c * dim..(c + 1) * dim]).for_each(|(x, s)| *x = (s / counts[c] as f64) as f32);
        } else if let Some(i) = far.next() {
            row.copy_from_slice(&data[i * dim..(i + 1) * dim]);
        }
    }
    centroids
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blobs(seed: u64) -> (Vec<f32>, Vec<u32>) {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let centers = [[0.0f32, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]];
        let mut data = Vec::new();
        let mut truth = Vec::new();
        for i in 0..2000 {
            let c = i % 4;
            data.push(centers[c][0] + rng.gen_range(-1.0..1.0));
            data.push(centers[c][1] + rng.gen_range(-1.0..1.0));
            truth.push(c as u32);
        }
        (data, truth)
    }

    #[test]
    fn finds_separated_clusters_and_is_deterministic() {
        let (data, truth) = blobs(1);
        let (model, labels) = kmeans(&data, 2, &KMeansOptions::new(4, 7)).unwrap();
        assert!(model.converged);
        assert_eq!(model.sizes.iter().sum::<u64>(), 2000);
        // Every true blob maps to one cluster.
        for c in 0..4 {
            let mut seen: Vec<u32> = labels.iter().zip(&truth).filter(|(_, &t)| t == c).map(|(&l, _)| l).collect();
            seen.dedup();
            assert_eq!(seen.len(), 1, "blob {c} split across clusters");
        }
        assert!(model.inertia / 2000.0 < 1.0, "{}", model.inertia);
        let (again, labels2) = kmeans(&data, 2, &KMeansOptions::new(4, 7)).unwrap();
        assert_eq!((labels, model.centroids), (labels2, again.centroids), "same seed, same result");
    }

    #[test]
    fn bounds_skip_work_but_not_results() {
        // Yinyang's pruned iterations against plain Lloyd (every distance, every iteration) from the same start.
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(3);
        let (n, dim, k) = (6000, 24, 200);
        let centres: Vec<f32> = (0..40 * dim).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let data: Vec<f32> =
            (0..n * dim).map(|i| centres[(i / dim % 40) * dim + i % dim] + rng.gen_range(-0.4..0.4)).collect();
        let opts = KMeansOptions { max_iter: 15, tol: 0.0, ..KMeansOptions::new(k, 9) };
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(opts.seed);
        let sample = n.min((SEED_POINTS_PER_CLUSTER * k).max(SEED_MIN_POINTS));
        assert_eq!(sample, n, "the reference seeds from every row");
        let mut centroids = seed_plus_plus(&data, dim, k, opts.seeding, Precision::Bf16, &mut rng); // as `kmeans` seeds greedily
        let (mut plain, mut dists) = assign(&data, dim, &centroids).unwrap();
        for _ in 0..opts.max_iter {
            centroids = update(&data, dim, k, &plain, &dists, &centroids);
            (plain, dists) = assign(&data, dim, &centroids).unwrap();
        }
        let inertia: f64 = dists.iter().map(|&d| d as f64).sum();
        // f32 products everywhere; bfloat16 products with f32 re-checks where the processor has them.
        for bf16 in [false, crate::gemm_bf16::available()] {
            let (model, labels) = fit(&data, dim, &opts, bf16).unwrap();
            let same = labels.iter().zip(&plain).filter(|(a, b)| a == b).count();
            assert!(same as f64 >= 0.999 * n as f64, "bf16 {bf16}: {same} of {n} rows agree");
            assert!(((model.inertia - inertia) / inertia).abs() < 1e-4, "bf16 {bf16}: {} vs {inertia}", model.inertia);
        }
    }

    #[test]
    fn greedy_seeds_are_the_same_on_any_number_of_threads_and_beat_plain_ones() {
        // More rows than one block of products, so the candidates' sums come from several blocks.
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(5);
        let (n, dim, k) = (3 * ROWS_PER_PRODUCT + 17, 16, 40);
        let centres: Vec<f32> = (0..60 * dim).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let data: Vec<f32> =
            (0..n * dim).map(|i| centres[(i / dim % 60) * dim + i % dim] + rng.gen_range(-0.3..0.3)).collect();
        let seeds = |threads: usize, precision: Precision| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let mut rng = Xoshiro256PlusPlus::seed_from_u64(11);
            pool.install(|| seed_plus_plus(&data, dim, k, Seeding::Greedy, precision, &mut rng))
        };
        let one = seeds(1, Precision::F32);
        assert_eq!(one.len(), k * dim);
        assert_eq!(one, seeds(3, Precision::F32), "the seeds depend on the threads");
        let low = seeds(1, Precision::Bf16);
        assert_eq!(low, seeds(3, Precision::Bf16), "bfloat16 seeds depend on the threads");
        // The same seeds as the plain definition: every candidate against every row, no skipped rows.
        let row = |i: usize| &data[i * dim..(i + 1) * dim];
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(11);
        let trials = 2 + (k as f64).ln() as usize;
        let first = rng.gen_range(0..n);
        let mut reference = row(first).to_vec();
        let mut closest: Vec<f32> = (0..n).map(|i| sq_distance(row(i), row(first))).collect();
        while reference.len() < k * dim {
            let cumulative: Vec<f64> = closest
                .iter()
                .scan(0f64, |total, &d| {
                    *total += d as f64;
                    Some(*total)
                })
                .collect();
            let total = cumulative[n - 1];
            let candidates: Vec<usize> = (0..trials)
                .map(|_| {
                    let target = rng.gen::<f64>() * total;
                    cumulative.partition_point(|&c| c < target).min(n - 1)
                })
                .collect();
            let left = |j: usize| -> f64 {
                (0..n).map(|i| sq_distance(row(i), row(candidates[j])).min(closest[i]) as f64).sum()
            };
            let best = (0..trials).min_by(|&a, &b| left(a).total_cmp(&left(b))).unwrap();
            closest.iter_mut().enumerate().for_each(|(i, d)| *d = d.min(sq_distance(row(i), row(candidates[best]))));
            reference.extend_from_slice(row(candidates[best]));
        }
        assert_eq!(one, reference, "greedy seeds differ from the plain definition's");
        // Lower potential than plain k-means++ (one candidate per step) on average.
        let potential = |c: &[f32]| assign(&data, dim, c).unwrap().1.iter().map(|&d| d as f64).sum::<f64>();
        let plain = (0..8)
            .map(|s| {
                let mut rng = Xoshiro256PlusPlus::seed_from_u64(s);
                potential(&seed_plus_plus(&data, dim, k, Seeding::Plain, Precision::F32, &mut rng))
            })
            .sum::<f64>()
            / 8.0;
        assert!(potential(&one) < 0.95 * plain, "greedy {} vs plain {plain}", potential(&one));
        // Distances of bfloat16-rounded rows seed as well (without AVX512-BF16 they are the f32 seeds: nothing to check).
        let (low, exact) = (potential(&low), potential(&one));
        assert!(low < 0.95 * plain && (low - exact).abs() < 0.02 * exact, "bfloat16 {low} vs f32 {exact}");
    }

    #[test]
    fn emptied_clusters_are_reseeded() {
        // Many clusters over few distinct points: Lloyd empties some; each is refilled from the farthest rows.
        let (data, _) = blobs(4);
        let (model, _) = kmeans(&data, 2, &KMeansOptions { max_iter: 10, ..KMeansOptions::new(300, 1) }).unwrap();
        assert_eq!(model.sizes.len(), 300);
        assert!(model.sizes.iter().all(|&s| s > 0), "{:?}", model.sizes);
    }

    #[test]
    fn bad_parameters_are_explained() {
        let (data, _) = blobs(2);
        let e = kmeans(&data, 2, &KMeansOptions::new(5000, 0)).unwrap_err().to_string();
        assert!(e.contains("k = 5000") && e.contains("2000 rows"), "{e}");
        assert!(kmeans(&data, 3, &KMeansOptions::new(2, 0)).unwrap_err().to_string().contains("dimension 3"));
        let mut nan = data.clone();
        nan[11] = f32::NAN;
        assert!(kmeans(&nan, 2, &KMeansOptions::new(2, 0)).unwrap_err().to_string().contains("row 5"));
    }
}
