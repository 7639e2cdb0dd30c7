//! Principal component analysis of embeddings, for looking at them in two dimensions.
//!
//! The covariance matrix (dim × dim) is one matrix product (candle's GEMM); its leading eigenvectors come from
//! power iteration with deflation, started from seeded random vectors, so a seed gives the same projection.

use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use rayon::prelude::*;

use crate::error::{Error, Result};

/// The fitted projection.
#[derive(Debug, Clone)]
pub struct Pca {
    pub dim: usize,
    pub mean: Vec<f32>,
    /// Row-major `components × dim`, unit length, the first explaining the most variance.
    pub components: Vec<f32>,
    /// Variance along each component, and in total: their ratio is the share each explains.
    pub variances: Vec<f64>,
    pub total_variance: f64,
}

const MAX_ITERATIONS: usize = 1000;

/// Fits `components` principal components of `data` (row-major, `dim` columns).
pub fn pca(data: &[f32], dim: usize, components: usize, seed: u64) -> Result<Pca> {
    if dim == 0 || !data.len().is_multiple_of(dim) {
        return Err(Error::Invalid(format!("{} values do not make rows of dimension {dim}", data.len())));
    }
    let n = data.len() / dim;
    if n < 2 || components == 0 || components > dim {
        return Err(Error::Invalid(format!(
            "PCA needs at least 2 rows and 1 ≤ components ≤ {dim} (got {n} rows, {components} components)"
        )));
    }
    let mut mean = vec![0f64; dim];
    for row in data.chunks(dim) {
        for (m, &x) in mean.iter_mut().zip(row) {
            *m += x as f64;
        }
    }
    let mean: Vec<f32> = mean.iter().map(|m| (m / n as f64) as f32).collect();
    let centred: Vec<f32> =
        data.par_chunks(dim).flat_map_iter(|row| row.iter().zip(&mean).map(|(x, m)| x - m)).collect();
    let x = Tensor::from_vec(centred, (n, dim), &Device::Cpu)?;
    let cov: Vec<f32> = x.t()?.matmul(&x)?.flatten_all()?.to_vec1()?;
    let mut cov: Vec<f64> = cov.iter().map(|&c| c as f64 / (n - 1) as f64).collect();
    let total_variance = (0..dim).map(|i| cov[i * dim + i]).sum();

    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let (mut vectors, mut variances) = (Vec::with_capacity(components * dim), Vec::with_capacity(components));
    for _ in 0..components {
        let mut v: Vec<f64> = (0..dim).map(|_| rng.gen::<f64>() - 0.5).collect();
        normalise(&mut v);
        for _ in 0..MAX_ITERATIONS {
            let mut next = multiply(&cov, &v);
            if normalise(&mut next) == 0.0 {
                break; // no variance left
            }
            let change: f64 = next.iter().zip(&v).map(|(a, b)| (a - b).abs()).sum();
            v = next;
            if change < 1e-10 {
                break;
            }
        }
        // The sign of an eigenvector is arbitrary: fix it so the largest coordinate is positive.
        let largest = v.iter().copied().fold(0f64, |a, b| if b.abs() > a.abs() { b } else { a });
        if largest < 0.0 {
            v.iter_mut().for_each(|x| *x = -*x);
        }
        let variance: f64 = multiply(&cov, &v).iter().zip(&v).map(|(a, b)| a * b).sum();
        for i in 0..dim {
            for j in 0..dim {
                cov[i * dim + j] -= variance * v[i] * v[j];
            }
        }
        variances.push(variance.max(0.0));
        vectors.extend(v.iter().map(|&x| x as f32));
    }
    Ok(Pca { dim, mean, components: vectors, variances, total_variance })
}

fn multiply(m: &[f64], v: &[f64]) -> Vec<f64> {
    m.chunks(v.len()).map(|row| row.iter().zip(v).map(|(a, b)| a * b).sum()).collect()
}

fn normalise(v: &mut [f64]) -> f64 {
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    norm
}

impl Pca {
    /// Each row's coordinates along the components: row-major `rows × components`.
    pub fn project(&self, data: &[f32]) -> Result<Vec<f32>> {
        if !data.len().is_multiple_of(self.dim) {
            return Err(Error::Invalid(format!("{} values do not make rows of dimension {}", data.len(), self.dim)));
        }
        Ok(data
            .par_chunks(self.dim)
            .flat_map_iter(|row| {
                self.components
                    .chunks(self.dim)
                    .map(move |c| row.iter().zip(&self.mean).zip(c).map(|((x, m), c)| (x - m) * c).sum::<f32>())
            })
            .collect())
    }

    /// The share of the total variance each component explains.
    pub fn explained(&self) -> Vec<f64> {
        self.variances.iter().map(|v| v / self.total_variance.max(f64::MIN_POSITIVE)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_axes_of_an_elongated_cloud_whatever_the_seed() {
        // Points along (1, 1, 0)/√2 with spread 10, along (1, −1, 0)/√2 with spread 1, and a little noise on z.
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(7);
        let s = std::f32::consts::FRAC_1_SQRT_2;
        let data: Vec<f32> = (0..2000)
            .flat_map(|_| {
                let (a, b, z) = (rng.gen::<f32>() - 0.5, rng.gen::<f32>() - 0.5, rng.gen::<f32>() - 0.5);
                let (a, b, z) = (a * 10.0, b, z * 0.1);
                [5.0 + s * (a + b), -3.0 + s * (a - b), z]
            })
            .collect();
        let fit = pca(&data, 3, 2, 0).unwrap();
        let first = &fit.components[0..3];
        assert!((first[0] - s).abs() < 1e-2 && (first[1] - s).abs() < 1e-2 && first[2].abs() < 1e-3, "{first:?}");
        let second = &fit.components[3..6];
        assert!((second[0].abs() - s).abs() < 2e-2 && (second[0] + second[1]).abs() < 2e-2, "{second:?}");
        let explained = fit.explained();
        assert!(explained[0] > 0.95 && explained[1] > 0.005 && explained[0] + explained[1] < 1.0, "{explained:?}");
        assert!((fit.mean[0] - 5.0).abs() < 0.2 && (fit.mean[1] + 3.0).abs() < 0.2);
        // Same answer from another seed (signs are fixed), and projections are centred.
        let other = pca(&data, 3, 2, 99).unwrap();
        for (a, b) in fit.components.iter().zip(&other.components) {
            assert!((a - b).abs() < 1e-4);
        }
        let projected = fit.project(&data).unwrap();
        assert_eq!(projected.len(), 2000 * 2);
        let mean_first: f32 = projected.chunks(2).map(|p| p[0]).sum::<f32>() / 2000.0;
        assert!(mean_first.abs() < 1e-3, "{mean_first}");
    }

    #[test]
    fn refuses_what_it_cannot_fit() {
        assert!(pca(&[1.0, 2.0, 3.0], 2, 1, 0).is_err());
        assert!(pca(&[1.0, 2.0], 2, 1, 0).is_err(), "one row");
        assert!(pca(&[1.0, 2.0, 3.0, 4.0], 2, 3, 0).is_err(), "more components than dimensions");
    }
}
