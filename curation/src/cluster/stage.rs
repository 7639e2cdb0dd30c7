//! The cluster stage (`whet kmeans`): k-means over the embeddings adds a `cluster` column, in memory
//! (Lloyd) or over the dataset read in passes (mini-batch).

use std::path::Path;
use std::sync::Arc;

use arrow::array::UInt32Array;
use arrow::datatypes::Field;
use serde_json::json;
use whetstone_datasets::stage::with_column;
use whetstone_datasets::{run_stage, schema, DatasetReader, Manifest, Progress, ReadOptions, Rows, Selection, Stage};

use super::{assign, kmeans, kmeans_minibatch, KMeans, KMeansOptions};
use crate::embed::{embeddings_concat, embeddings_of};
use crate::error::{Error, Result};

/// What the cluster stage found: its manifest's `results`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClusterResults {
    pub inertia: f64,
    pub iterations: usize,
    pub converged: bool,
    pub fit_seconds: f64,
    pub rows: u64,
    pub dim: usize,
    pub sizes: Vec<u64>,
}

impl ClusterResults {
    fn of(model: &KMeans, fit_seconds: f64, rows: u64, dim: usize) -> Self {
        ClusterResults {
            inertia: model.inertia,
            iterations: model.iterations,
            converged: model.converged,
            fit_seconds,
            rows,
            dim,
            sizes: model.sizes.clone(),
        }
    }
}

/// The cluster stage for datasets larger than memory: mini-batch k-means over the embeddings read in passes
/// (see [`kmeans_minibatch`]), then one more pass that labels every row and measures the inertia.
pub fn cluster_dataset_streaming(
    input: &Path,
    output: &Path,
    opts: &KMeansOptions,
    batch: usize,
    read: ReadOptions,
    on_progress: impl FnOnce(Progress),
) -> Result<(Manifest, KMeans)> {
    let done = run_stage(&MiniBatchClustering { opts, batch }, input, output, read, |p, _| on_progress(p))?;
    Ok((done.manifest, done.results.model))
}

/// A clustering: what the manifest keeps of it, and the model itself for the caller.
#[derive(serde::Serialize)]
struct Clustered {
    #[serde(flatten)]
    results: ClusterResults,
    #[serde(skip)]
    model: KMeans,
}

struct MiniBatchClustering<'a> {
    opts: &'a KMeansOptions,
    batch: usize,
}

impl Stage for MiniBatchClustering<'_> {
    type Results = Clustered;
    type Error = Error;

    fn name(&self) -> &str {
        "cluster"
    }

    fn parameters(&self) -> serde_json::Value {
        let o = self.opts;
        json!({"algorithm": "kmeans++/mini-batch", "k": o.k, "max_iter": o.max_iter, "tol": o.tol, "seed": o.seed,
            "mini_batch": self.batch})
    }

    fn run(&self, rows: &mut Rows) -> Result<Clustered> {
        let (input, read) = (rows.input(), rows.read_options().clone());
        let fit = std::time::Instant::now();
        let pass = || -> Result<_> {
            let reader = DatasetReader::open(input, read.clone())?;
            Ok(reader.map(|b| -> Result<(Vec<f32>, usize)> {
                let b = b?;
                let (data, dim) = embeddings_of(&b)?;
                Ok((data.to_vec(), dim))
            }))
        };
        let mut model = kmeans_minibatch(pass, self.opts, self.batch)?;
        let fit_seconds = fit.elapsed().as_secs_f64();
        let (mut sizes, mut inertia) = (vec![0u64; self.opts.k], 0f64);
        rows.map(|batch| {
            let (data, dim) = embeddings_of(&batch)?;
            if dim != model.dim {
                return Err(format!("embeddings of dimension {dim}, but the model was fitted on {}", model.dim).into());
            }
            let (labels, dists) = assign(data, dim, &model.centroids)?;
            labels.iter().for_each(|&l| sizes[l as usize] += 1);
            inertia += dists.iter().map(|&d| d as f64).sum::<f64>();
            Ok(with_column(&batch, stage_field(schema::columns::CLUSTER), Arc::new(UInt32Array::from(labels)))?)
        })?;
        (model.sizes, model.inertia) = (sizes, inertia);
        let labelled = model.sizes.iter().sum();
        Ok(Clustered { results: ClusterResults::of(&model, fit_seconds, labelled, model.dim), model })
    }
}

/// The cluster stage: k-means over the embeddings; adds `cluster`.
pub fn cluster_dataset(
    input: &Path,
    output: &Path,
    opts: &KMeansOptions,
    read: ReadOptions,
    on_progress: impl FnOnce(Progress),
) -> Result<(Manifest, KMeans)> {
    let done = run_stage(&Clustering(opts), input, output, read, |p, _| on_progress(p))?;
    Ok((done.manifest, done.results.model))
}

struct Clustering<'a>(&'a KMeansOptions);

impl Stage for Clustering<'_> {
    type Results = Clustered;
    type Error = Error;

    fn name(&self) -> &str {
        "cluster"
    }

    fn parameters(&self) -> serde_json::Value {
        lloyd_parameters(self.0)
    }

    fn run(&self, rows: &mut Rows) -> Result<Clustered> {
        let mut fitted = None;
        rows.whole_columns(&[schema::columns::EMBEDDING], |batches| {
            let (data, dim, batch) = embeddings_concat(batches)?;
            let fit = std::time::Instant::now();
            let (model, labels) = kmeans(&data, dim, self.0)?;
            let results = ClusterResults::of(&model, fit.elapsed().as_secs_f64(), batch.num_rows() as u64, dim);
            fitted = Some(Clustered { results, model });
            Ok(Selection {
                keep: (0..labels.len() as u32).collect(),
                columns: vec![(stage_field(schema::columns::CLUSTER), Arc::new(UInt32Array::from(labels)))],
                ..Default::default()
            })
        })?;
        Ok(fitted.expect("the stage ran"))
    }
}

fn lloyd_parameters(o: &KMeansOptions) -> serde_json::Value {
    json!({"algorithm": "kmeans++/lloyd", "k": o.k, "max_iter": o.max_iter, "tol": o.tol, "seed": o.seed,
        "seeding": o.seeding})
}

/// The cluster stage for a model fitted elsewhere (Lloyd's iterations on a cluster, `whet curate --cluster`):
/// writes each row with its label, `labels[i]` for the i-th row read.
pub fn label_dataset(
    input: &Path,
    output: &Path,
    opts: &KMeansOptions,
    model: KMeans,
    labels: &[u32],
    fit_seconds: f64,
    read: ReadOptions,
    on_progress: impl FnOnce(Progress),
) -> Result<(Manifest, KMeans)> {
    let stage = Labelling { opts, model, labels, fit_seconds };
    let done = run_stage(&stage, input, output, read, |p, _| on_progress(p))?;
    Ok((done.manifest, done.results.model))
}

struct Labelling<'a> {
    opts: &'a KMeansOptions,
    model: KMeans,
    labels: &'a [u32],
    fit_seconds: f64,
}

impl Stage for Labelling<'_> {
    type Results = Clustered;
    type Error = Error;

    fn name(&self) -> &str {
        "cluster"
    }

    fn parameters(&self) -> serde_json::Value {
        lloyd_parameters(self.opts)
    }

    fn run(&self, rows: &mut Rows) -> Result<Clustered> {
        let mut at = 0;
        rows.map(|batch| {
            let n = batch.num_rows();
            let Some(labels) = self.labels.get(at..at + n) else {
                return Err(format!("the input has more rows than the {} labelled", self.labels.len()).into());
            };
            at += n;
            Ok(with_column(
                &batch,
                stage_field(schema::columns::CLUSTER),
                Arc::new(UInt32Array::from(labels.to_vec())),
            )?)
        })?;
        if at != self.labels.len() {
            return Err(Error::Invalid(format!("{} rows labelled, but the input has {at}", self.labels.len())));
        }
        let m = &self.model;
        Ok(Clustered { results: ClusterResults::of(m, self.fit_seconds, at as u64, m.dim), model: m.clone() })
    }
}

/// The field of one of the typed stage columns (`cluster`, `round`, …).
pub(crate) fn stage_field(name: &str) -> Field {
    schema::columns::field(name, 0).expect("a stage column")
}
