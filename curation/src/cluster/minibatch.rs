//! Mini-batch k-means (Sculley, WWW 2010) for embeddings read as a stream, in passes: memory holds one block
//! of rows, a sample and the centroids, never the dataset. The first pass draws a uniform sample (reservoir)
//! and k-means fits it; each later pass moves every centroid toward the rows assigned to it, mini-batch by
//! mini-batch, with a per-centroid step of 1 / (rows it has seen), so each centroid is the running mean of
//! its rows.

use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use super::{assign, kmeans, KMeans, KMeansOptions, SEED_MIN_POINTS, SEED_POINTS_PER_CLUSTER};
use crate::error::{Error, Result};

/// Fits k-means to the rows that `pass()` yields (row-major blocks of `dim` columns), calling it once per
/// pass: one to sample and count, then up to `opts.max_iter` passes of mini-batches of `batch` rows. The
/// model's inertia and sizes are those of the last pass (the centroids moved during it).
pub fn kmeans_minibatch<I>(mut pass: impl FnMut() -> Result<I>, opts: &KMeansOptions, batch: usize) -> Result<KMeans>
where
    I: Iterator<Item = Result<(Vec<f32>, usize)>>,
{
    let k = opts.k;
    if k == 0 || batch == 0 {
        return Err(Error::Invalid("k and the mini-batch size must each be at least 1".into()));
    }
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(opts.seed);
    // Pass 0: count the rows and keep a uniform sample of them (reservoir sampling, Algorithm R).
    let capacity = (SEED_POINTS_PER_CLUSTER * k).max(SEED_MIN_POINTS);
    let mut sample: Vec<f32> = Vec::new();
    let (mut rows, mut dim) = (0usize, 0usize);
    for block in pass()? {
        let (block, d) = block?;
        if dim == 0 {
            dim = d;
        } else if d != dim {
            return Err(Error::Invalid(format!("embeddings of dimension {d} after {dim}: one dimension per dataset")));
        }
        for row in block.chunks(dim) {
            if rows < capacity {
                sample.extend_from_slice(row);
            } else {
                let at = rng.gen_range(0..=rows);
                if at < capacity {
                    sample[at * dim..(at + 1) * dim].copy_from_slice(row);
                }
            }
            rows += 1;
        }
    }
    if rows == 0 {
        return Err(Error::Invalid("the dataset has no rows".into()));
    }
    if k > rows {
        return Err(Error::Invalid(format!("k = {k} clusters but only {rows} rows: choose k ≤ {rows}")));
    }
    let variance = super::variance(&sample, dim);
    // Start from k-means on the sample, each centroid counting the sample rows it holds: the passes then
    // refine a sound start instead of chasing the order the rows come in (files are often sorted by topic).
    let (start, _) = kmeans(&sample, dim, opts)?;
    drop(sample);
    let mut centroids = start.centroids;
    let mut counts = start.sizes;
    let (mut iterations, mut converged) = (0, false);
    let (mut sizes, mut inertia) = (vec![0u64; k], 0f64);
    while iterations < opts.max_iter.max(1) {
        iterations += 1;
        let before = centroids.clone();
        sizes.iter_mut().for_each(|s| *s = 0);
        inertia = 0.0;
        for block in pass()? {
            let (block, _) = block?;
            for mini in block.chunks(batch * dim) {
                let (labels, dists) = assign(mini, dim, &centroids)?;
                inertia += dists.iter().map(|&d| d as f64).sum::<f64>();
                let mut sums = vec![0f64; k * dim];
                let mut seen = vec![0u64; k];
                for (row, &l) in mini.chunks(dim).zip(&labels) {
                    let l = l as usize;
                    seen[l] += 1;
                    sums[l * dim..(l + 1) * dim].iter_mut().zip(row).for_each(|(s, &v)| *s += v as f64);
                }
                for c in (0..k).filter(|&c| seen[c] > 0) {
                    counts[c] += seen[c];
                    sizes[c] += seen[c];
                    // c ← c + (Σx − m·c) / count: the running mean of every row this centroid has taken.
                    let rate = 1.0 / counts[c] as f64;
                    let centroid = &mut centroids[c * dim..(c + 1) * dim];
                    for (x, s) in centroid.iter_mut().zip(&sums[c * dim..(c + 1) * dim]) {
                        *x += ((s - seen[c] as f64 * *x as f64) * rate) as f32;
                    }
                }
            }
        }
        let shift: f64 = centroids.iter().zip(&before).map(|(a, b)| ((a - b) as f64).powi(2)).sum();
        if shift <= opts.tol * variance.max(f64::MIN_POSITIVE) {
            converged = true;
            break;
        }
    }
    Ok(KMeans { k, dim, centroids, sizes, inertia, iterations, converged })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_over_blocks_match_lloyd_on_the_whole() {
        // Rows spread through a cube, sorted along one axis as topic-sorted files are; more rows than the
        // sample holds.
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(2);
        let (n, dim) = (40_000, 8);
        let mut rows: Vec<Vec<f32>> = (0..n).map(|_| (0..dim).map(|_| rng.gen_range(0.0..1.0)).collect()).collect();
        rows.sort_by(|a, b| a[0].total_cmp(&b[0]));
        let data: Vec<f32> = rows.concat();
        let opts = KMeansOptions { max_iter: 5, tol: 0.0, ..KMeansOptions::new(40, 1) };
        let pass = || -> Result<_> { Ok(data.chunks(3000 * dim).map(|b| Ok((b.to_vec(), dim)))) };
        let model = kmeans_minibatch(pass, &opts, 512).unwrap();
        let (_, dists) = assign(&data, dim, &model.centroids).unwrap();
        let inertia: f64 = dists.iter().map(|&d| d as f64).sum();
        let (lloyd, _) = kmeans(&data, dim, &opts).unwrap();
        assert!(inertia <= lloyd.inertia * 1.02, "mini-batch {inertia} vs Lloyd {}", lloyd.inertia);
        assert_eq!(model.sizes.iter().sum::<u64>(), n as u64);
        let again = kmeans_minibatch(pass, &opts, 512).unwrap();
        assert_eq!(again.centroids, model.centroids, "same seed, same model");
        let e = kmeans_minibatch(pass, &KMeansOptions::new(n + 1, 0), 512).unwrap_err().to_string();
        assert!(e.contains("only 40000 rows"), "{e}");
    }
}
