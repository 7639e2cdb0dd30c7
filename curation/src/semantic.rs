//! Semantic deduplication (SemDeDup): rows whose embeddings lie within a cosine-similarity threshold of
//! each other form a group, found through an HNSW index (hnsw_rs); each group keeps its highest-quality
//! row (the `quality` column), else its first, and the others are dropped naming it in `dup_of`.

use std::path::Path;

use arrow::array::{AsArray, StringArray, UInt32Array};
use arrow::datatypes::Float32Type;
use hnsw_rs::prelude::{Distance, Hnsw};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use whetstone_datasets::{schema, Dropped, Manifest, Progress, ReadOptions, StageOutput, StageRun};

use crate::embed::embeddings_of;
use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SemanticOptions {
    /// Cosine similarity at or above which two rows are duplicates.
    pub threshold: f32,
    /// Neighbours looked at per row.
    pub neighbours: usize,
    /// HNSW search breadth (higher: better recall, slower).
    pub ef: usize,
}

impl Default for SemanticOptions {
    fn default() -> Self {
        SemanticOptions { threshold: 0.95, neighbours: 16, ef: 64 }
    }
}

/// 1 − cos for unit vectors, clamped at 0 (hnsw_rs's DistDot asserts on the rounding of identical vectors).
#[derive(Clone, Copy, Default)]
struct UnitCosine;

impl Distance<f32> for UnitCosine {
    fn eval(&self, a: &[f32], b: &[f32]) -> f32 {
        (1.0 - a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>()).max(0.0)
    }
}

/// Union-find over row indices, the smaller index as the root so groups are stable.
struct Groups(Vec<u32>);

impl Groups {
    fn root(&mut self, mut x: u32) -> u32 {
        while self.0[x as usize] != x {
            let parent = self.0[x as usize];
            self.0[x as usize] = self.0[parent as usize];
            x = parent;
        }
        x
    }
    fn join(&mut self, a: u32, b: u32) {
        let (ra, rb) = (self.root(a), self.root(b));
        if ra != rb {
            let (lo, hi) = (ra.min(rb), ra.max(rb));
            self.0[hi as usize] = lo;
        }
    }
}

/// Pairs of rows at or above the similarity threshold, found by an HNSW index built row by row (so the
/// same rows give the same graph) and searched in parallel.
pub fn similar_pairs(vectors: &[f32], dim: usize, opts: &SemanticOptions) -> Vec<(u32, u32)> {
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
    if !(opts.threshold > 0.0 && opts.threshold <= 1.0) {
        return Err(Error::Invalid(format!("threshold {}: give a cosine similarity in (0, 1]", opts.threshold)));
    }
    let run = StageRun {
        stage: "dedup",
        parameters: serde_json::json!({"method": "semantic", "index": "hnsw (M 16, ef_construction 100)", "options": opts}),
        input,
        output,
        format: None,
        read,
    };
    Ok(run.whole(on_progress, |batches| {
        let batch = crate::stages::one_batch(batches)?;
        let (vectors, dim) = embeddings_of(&batch)?;
        let n = batch.num_rows();
        let pairs = similar_pairs(vectors, dim, opts);
        let mut groups = Groups((0..n as u32).collect());
        for &(a, b) in &pairs {
            groups.join(a, b);
        }
        // Each group's keeper: the highest quality, else the first row.
        let quality = batch.column_by_name(schema::stage::QUALITY).and_then(|q| q.as_primitive_opt::<Float32Type>());
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
                let mut d = Dropped::new(&batch, row as usize, "semantic_duplicate", format!("cosine ≥ {} with {of}", opts.threshold))?;
                d.row[schema::stage::DUP_OF] = of.into();
                rejected.push(d);
            }
        }
        let kept = arrow::compute::take_record_batch(&batch, &UInt32Array::from(keep))?;
        let groups_with_duplicates = group_sizes.values().filter(|&&s| s > 1).count();
        Ok(StageOutput {
            batches: vec![kept],
            dropped: Default::default(),
            rejected,
            results: serde_json::json!({"similar_pairs": pairs.len(), "groups_with_duplicates": groups_with_duplicates}),
        })
    })?)
}
