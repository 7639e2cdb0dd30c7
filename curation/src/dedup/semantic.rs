//! Semantic deduplication (SemDeDup, Abbas et al. 2023): rows whose embeddings lie within a cosine-similarity
//! threshold of each other form a group; each group keeps its highest-quality row (the `quality` column), else
//! its first, and the others are dropped naming it in `dup_of`. Pairs are found as SemDeDup does, inside
//! k-means clusters (each row also searching its next-nearest clusters), or through an HNSW index (hnsw_rs).

use std::path::Path;

use arrow::array::{AsArray, StringArray};
use arrow::datatypes::Float32Type;
use hnsw_rs::prelude::{Distance, Hnsw};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use whetstone_datasets::{run_stage, schema, Manifest, Progress, ReadOptions, Rows, Selection, Stage};

use candle_core::{Device, Tensor};

use crate::cluster::{kmeans, nearest_centroids, KMeansOptions};
use crate::dedup::Groups;
use crate::embed::embeddings_concat;
use crate::error::{Error, Result};
use crate::vector::dot;

/// What semantic dedup found: its manifest's `results`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SemanticResults {
    /// Pairs at or above the threshold.
    pub similar_pairs: u64,
    /// Groups of near-copies (one row of each kept).
    pub groups_with_duplicates: u64,
}

/// How similar pairs are found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SemanticIndex {
    /// SemDeDup's own way: k-means (k ≈ √rows), then every row compared exactly with the rows of its
    /// `probes` nearest clusters (one matrix product per cluster). Deterministic for a seed, and parallel.
    Clusters,
    /// An HNSW graph (hnsw_rs), built row by row (so the same rows give the same graph) and searched for
    /// each row's `neighbours` nearest rows.
    Hnsw,
}

impl SemanticIndex {
    pub const NAMES: [&'static str; 2] = ["clusters", "hnsw"];
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SemanticOptions {
    /// Cosine similarity at or above which two rows are duplicates.
    pub threshold: f32,
    pub index: SemanticIndex,
    /// clusters: how many (default √rows), and how many nearest clusters each row is compared within.
    pub clusters: Option<usize>,
    pub probes: usize,
    /// hnsw: neighbours looked at per row, and the search breadth (higher: better recall, slower).
    pub neighbours: usize,
    pub ef: usize,
    /// clusters: the k-means seed.
    pub seed: u64,
}

impl Default for SemanticOptions {
    fn default() -> Self {
        SemanticOptions {
            threshold: 0.95,
            index: SemanticIndex::Clusters,
            clusters: None,
            probes: 2,
            neighbours: 16,
            ef: 64,
            seed: 0,
        }
    }
}

/// 1 − cos for unit vectors, clamped at 0 (hnsw_rs's DistDot asserts on the rounding of identical vectors).
#[derive(Clone, Copy, Default)]
struct UnitCosine;

impl Distance<f32> for UnitCosine {
    fn eval(&self, a: &[f32], b: &[f32]) -> f32 {
        (1.0 - dot(a, b)).max(0.0)
    }
}

/// Pairs of rows (lower index first, sorted, each once) at or above the similarity threshold.
pub fn similar_pairs(vectors: &[f32], dim: usize, opts: &SemanticOptions) -> Result<Vec<(u32, u32)>> {
    let mut pairs = match opts.index {
        SemanticIndex::Clusters => clustered_pairs(vectors, dim, opts)?,
        SemanticIndex::Hnsw => hnsw_pairs(vectors, dim, opts),
    };
    pairs.iter_mut().for_each(|(a, b)| (*a, *b) = ((*a).min(*b), (*a).max(*b)));
    pairs.sort_unstable();
    pairs.dedup();
    Ok(pairs)
}

/// Rows of each query block compared with a cluster's rows at once.
const QUERY_BLOCK: usize = 2048;

fn clustered_pairs(vectors: &[f32], dim: usize, opts: &SemanticOptions) -> Result<Vec<(u32, u32)>> {
    let n = vectors.len() / dim;
    let k = opts.clusters.unwrap_or((n as f64).sqrt().round() as usize).clamp(1, n);
    let probes = opts.probes.clamp(1, k);
    // A partition, not a fit: a few Lloyd steps place the boundaries well enough for the probes to cover.
    // Plain seeds: a partition to search in, where greedy seeding's lower inertia costs time and buys no recall
    // that was measured.
    let (model, _) = kmeans(vectors, dim, &KMeansOptions { max_iter: 10, ..KMeansOptions::plain(k, opts.seed) })?;
    let nearest = nearest_centroids(vectors, dim, &model.centroids, probes)?;
    let mut members = vec![Vec::new(); k];
    let mut queries = vec![Vec::new(); k];
    for (row, near) in nearest.chunks(probes).enumerate() {
        members[near[0] as usize].push(row as u32);
        near.iter().for_each(|&c| queries[c as usize].push(row as u32));
    }
    let gather = |rows: &[u32]| -> Vec<f32> {
        rows.iter().flat_map(|&r| vectors[r as usize * dim..(r as usize + 1) * dim].iter().copied()).collect()
    };
    let blocks: Vec<(usize, &[u32])> = (0..k)
        .flat_map(|c| queries[c].chunks(QUERY_BLOCK).map(move |q| (c, q)))
        .filter(|(c, _)| !members[*c].is_empty())
        .collect();
    let found: Vec<Vec<(u32, u32)>> = blocks
        .into_par_iter()
        .map(|(c, query)| -> Result<Vec<(u32, u32)>> {
            let member = &members[c];
            let q = Tensor::from_vec(gather(query), (query.len(), dim), &Device::Cpu)?;
            let m = Tensor::from_vec(gather(member), (member.len(), dim), &Device::Cpu)?;
            let sims: Vec<f32> = q.matmul(&m.t()?)?.flatten_all()?.to_vec1()?;
            Ok(sims
                .chunks(member.len())
                .zip(query)
                .flat_map(|(row, &i)| {
                    row.iter()
                        .zip(member)
                        .filter(move |(&s, &j)| s >= opts.threshold && j != i)
                        .map(move |(_, &j)| (i, j))
                })
                .collect())
        })
        .collect::<Result<_>>()?;
    Ok(found.into_iter().flatten().collect())
}

/// HNSW search: each row's neighbours within the threshold.
fn hnsw_pairs(vectors: &[f32], dim: usize, opts: &SemanticOptions) -> Vec<(u32, u32)> {
    let n = vectors.len() / dim;
    let layers = 16.min(((n.max(2) as f64).ln() / (16f64).ln()).ceil() as usize + 1).max(1);
    let index: Hnsw<f32, UnitCosine> = Hnsw::new(16, n, layers, 100, UnitCosine);
    for (i, v) in vectors.chunks(dim).enumerate() {
        index.insert_slice((v, i));
    }
    let max_distance = 1.0 - opts.threshold;
    let k = opts.neighbours.min(n);
    vectors
        .par_chunks(dim)
        .enumerate()
        .flat_map_iter(|(i, v)| {
            index
                .search(v, k, opts.ef.max(k))
                .into_iter()
                .filter(move |nb| nb.d_id != i && nb.distance <= max_distance)
                .map(move |nb| (i as u32, nb.d_id as u32))
        })
        .collect()
}

/// The semantic dedup stage (whole dataset: it needs every embedding).
pub fn dedup_semantic(
    input: &Path,
    output: &Path,
    opts: &SemanticOptions,
    read: ReadOptions,
    on_progress: impl FnOnce(Progress),
) -> Result<Manifest> {
    Ok(run_stage(opts, input, output, read, |bytes, _| on_progress(bytes))?.manifest)
}

impl Stage for SemanticOptions {
    type Results = SemanticResults;
    type Error = Error;

    fn name(&self) -> &str {
        "dedup"
    }

    fn parameters(&self) -> serde_json::Value {
        serde_json::json!({"method": "semantic", "options": self})
    }

    fn run(&self, rows: &mut Rows) -> Result<SemanticResults> {
        let opts = self;
        if !(opts.threshold > 0.0 && opts.threshold <= 1.0) {
            return Err(Error::Invalid(format!("threshold {}: give a cosine similarity in (0, 1]", opts.threshold)));
        }
        let columns = [schema::columns::EMBEDDING, schema::ID, schema::columns::QUALITY];
        let mut found = SemanticResults::default();
        rows.whole_columns(&columns, |batches| {
            let (vectors, dim, batch) = embeddings_concat(batches)?;
            let n = batch.num_rows();
            let pairs = similar_pairs(&vectors, dim, opts)?;
            let mut groups = Groups::new(n);
            for &(a, b) in &pairs {
                groups.join(a, b);
            }
            // Each group's keeper: the highest quality, else the first row.
            let quality =
                batch.column_by_name(schema::columns::QUALITY).and_then(|q| q.as_primitive_opt::<Float32Type>());
            let mut keeper: Vec<u32> = (0..n as u32).collect();
            for row in 0..n as u32 {
                let root = groups.root(row) as usize;
                let current = keeper[root];
                let better = match quality {
                    Some(q) => q.value(row as usize) > q.value(current as usize),
                    None => false,
                };
                if better {
                    keeper[root] = row;
                }
            }
            let ids: &StringArray = batch.column_by_name(schema::ID).expect("core column").as_string();
            let mut keep = Vec::new();
            let mut rejected = Vec::new();
            let mut group_sizes = std::collections::HashMap::<u32, u32>::new();
            for row in 0..n as u32 {
                let root = groups.root(row);
                *group_sizes.entry(root).or_default() += 1;
                let kept = keeper[root as usize];
                if kept == row {
                    keep.push(row);
                } else {
                    let of = ids.value(kept as usize).to_string();
                    let detail = format!("cosine ≥ {} with {of}", opts.threshold);
                    rejected.push((row, "semantic_duplicate".to_string(), detail, Some(of)));
                }
            }
            found = SemanticResults {
                similar_pairs: pairs.len() as u64,
                groups_with_duplicates: group_sizes.values().filter(|&&s| s > 1).count() as u64,
            };
            Ok(Selection { keep, rejected, ..Default::default() })
        })?;
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Unit vectors around 40 directions, some rows near copies of others.
    fn vectors(n: usize, dim: usize) -> Vec<f32> {
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(5);
        let centres: Vec<Vec<f32>> = (0..40).map(|_| (0..dim).map(|_| rng.gen_range(-1.0..1.0)).collect()).collect();
        let mut out = Vec::new();
        for i in 0..n {
            let noise = if i % 7 == 0 { 0.02 } else { 0.6 };
            let v: Vec<f32> = centres[i % 40].iter().map(|c| c + rng.gen_range(-noise..noise)).collect();
            let norm = crate::vector::sq_norm(&v).sqrt();
            out.extend(v.iter().map(|x| x / norm));
        }
        out
    }

    #[test]
    fn clustered_search_finds_the_pairs_brute_force_finds() {
        let (n, dim) = (3000, 48);
        let v = vectors(n, dim);
        let opts = SemanticOptions { threshold: 0.9, ..Default::default() };
        let mut truth = Vec::new();
        for i in 0..n {
            for j in i + 1..n {
                if dot(&v[i * dim..(i + 1) * dim], &v[j * dim..(j + 1) * dim]) >= opts.threshold {
                    truth.push((i as u32, j as u32));
                }
            }
        }
        assert!(truth.len() > 1000, "{} pairs", truth.len());
        let found = similar_pairs(&v, dim, &opts).unwrap();
        let hits = found.iter().filter(|p| truth.binary_search(p).is_ok()).count();
        assert_eq!(hits, found.len(), "every pair found is a true pair");
        assert!(hits as f64 >= 0.99 * truth.len() as f64, "{hits} of {}", truth.len());
        assert_eq!(found, similar_pairs(&v, dim, &opts).unwrap(), "deterministic");
        let one_cluster = SemanticOptions { clusters: Some(1), ..opts };
        assert_eq!(similar_pairs(&v, dim, &one_cluster).unwrap(), truth, "one cluster is brute force");
    }
}
