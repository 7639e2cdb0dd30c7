//! The select stage (`whet select`): a subset under a budget, by any of the selection methods, with its
//! coverage measured.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray, UInt32Array};
use arrow::datatypes::{Field, Float32Type, UInt32Type};
use whetstone_datasets::{run_stage, schema, DatasetReader, Manifest, Progress, ReadOptions, Rows, Selection, Stage};

use super::{
    coverage, deita, iterative, kcenter, kmq, random, rs2, update_weights, Budget, Coverage, Method, WeightUpdate,
    Within,
};
use crate::cluster::stage::stage_field;
use crate::cluster::{kmeans, KMeansOptions};
use crate::embed::embeddings_concat;
use crate::error::{Error, Result};

/// What the select stage found: its manifest's `results`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SelectResults {
    #[serde(flatten)]
    pub coverage: Coverage,
    /// iterative: the weights this round gave each cluster, which the next round updates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_weights: Option<BTreeMap<u32, f64>>,
}

/// The `cluster` column, if the dataset has one.
fn clusters_of(batch: &RecordBatch) -> Result<Option<Vec<u32>>> {
    let Some(c) = batch.column_by_name(schema::columns::CLUSTER) else { return Ok(None) };
    let c = c
        .as_primitive_opt::<UInt32Type>()
        .ok_or_else(|| Error::Invalid(format!("the `cluster` column is {}, not UInt32", c.data_type())))?;
    if c.null_count() > 0 {
        return Err(Error::Invalid("the `cluster` column has nulls: run `whet kmeans` again".into()));
    }
    Ok(Some(c.values().to_vec()))
}

/// A column as text per row (any type, cast), for labels such as `source`.
fn labels_of(batch: &RecordBatch, name: &str) -> Result<Vec<String>> {
    let column = batch.column_by_name(name).ok_or_else(|| {
        let names: Vec<String> = batch.schema().fields().iter().map(|f| f.name().clone()).collect();
        Error::Invalid(format!("no column {name:?} to use as a label (columns: {})", names.join(", ")))
    })?;
    let text = arrow::compute::cast(column, &arrow::datatypes::DataType::Utf8)?;
    let text: &StringArray = text.as_string();
    Ok((0..text.len()).map(|i| if text.is_valid(i) { text.value(i).to_string() } else { String::new() }).collect())
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SelectOptions {
    pub method: Method,
    pub budget: Budget,
    pub seed: u64,
    /// kMQ's clusters: k-means with this k; `None` uses the dataset's `cluster` column, or k = the budget.
    pub k: Option<usize>,
    /// A column whose distinct values the selection should cover (e.g. `source`), for the metrics.
    pub label: Option<String>,
    /// rs2: which round's slice to take.
    #[serde(default)]
    pub round: usize,
    /// deita: the score column (default `quality`) and the largest cosine similarity to a taken row.
    #[serde(default)]
    pub score: Option<String>,
    #[serde(default = "default_max_similarity")]
    pub max_similarity: f32,
    /// iterative: the previous round's cluster weights (uniform when absent) and how they are updated.
    #[serde(default)]
    pub previous_weights: Option<BTreeMap<u32, f64>>,
    #[serde(default)]
    pub update: WeightUpdate,
    /// kmq without a quality column: draw at random inside a cluster (the paper's code) instead of taking
    /// the rows nearest the cluster's centre.
    #[serde(default)]
    pub kmq_random: bool,
    /// kmq's central draw: 0 takes the most central rows; above 0 favours them by softmax(cos / T).
    #[serde(default = "default_kmq_temperature")]
    pub kmq_temperature: f32,
}

/// Chosen on T0 with MiniLM embeddings, budget 0.5% (scripts/kmq-vs-random.sh): the most central rows alone
/// cover the space best but fewer templates; random draws cover templates but less space. Over seeds 0–9,
/// T = 0.1 kept the mean distance 5.9–10.3% under random's at every seed (−7.6% on average) and covered 137.5
/// templates on average to random's 135.2; T = 0.2 and 0.3 covered more templates but fell under 5% on seeds
/// 5–9, which were not looked at when T was first chosen.
pub const DEFAULT_KMQ_TEMPERATURE: f32 = 0.1;

fn default_kmq_temperature() -> f32 {
    DEFAULT_KMQ_TEMPERATURE
}

fn default_max_similarity() -> f32 {
    0.9
}

impl SelectOptions {
    pub fn new(method: Method, budget: Budget, seed: u64) -> Self {
        SelectOptions {
            method,
            budget,
            seed,
            k: None,
            label: None,
            round: 0,
            score: None,
            max_similarity: default_max_similarity(),
            previous_weights: None,
            update: WeightUpdate::default(),
            kmq_random: false,
            kmq_temperature: DEFAULT_KMQ_TEMPERATURE,
        }
    }
}

/// A score column by name, with nulls for unscored rows (non-finite values are refused).
fn scores_of_nullable(batch: &RecordBatch, name: &str) -> Result<Vec<Option<f32>>> {
    let column = batch.column_by_name(name).ok_or_else(|| {
        Error::Invalid(format!("no score column {name:?}: iterative selection weighs clusters by last round's scores"))
    })?;
    let cast = arrow::compute::cast(column, &arrow::datatypes::DataType::Float32)?;
    let values = cast.as_primitive::<Float32Type>();
    if let Some(row) = (0..values.len()).find(|&i| values.is_valid(i) && !values.value(i).is_finite()) {
        return Err(Error::Invalid(format!("row {row}: score {} is not finite", values.value(row))));
    }
    Ok((0..values.len()).map(|i| values.is_valid(i).then(|| values.value(i))).collect())
}

/// A Float32 score column by name.
fn scores_of(batch: &RecordBatch, name: &str) -> Result<Vec<f32>> {
    let column = batch
        .column_by_name(name)
        .ok_or_else(|| Error::Invalid(format!("no score column {name:?}: deita ranks rows by a score")))?;
    let cast = arrow::compute::cast(column, &arrow::datatypes::DataType::Float32)?;
    let values = cast.as_primitive::<Float32Type>();
    if values.null_count() > 0 || values.values().iter().any(|v| !v.is_finite()) {
        return Err(Error::Invalid(format!("the score column {name:?} has missing or non-finite values")));
    }
    Ok(values.values().to_vec())
}

/// The select stage: writes the chosen rows with `cluster` (when known) and `selected_by`; the manifest
/// counts the rows not selected and holds the coverage metrics.
pub fn select_dataset(
    input: &Path,
    output: &Path,
    opts: &SelectOptions,
    read: ReadOptions,
    on_progress: impl FnOnce(Progress),
) -> Result<(Manifest, Coverage)> {
    let done = run_stage(opts, input, output, read, |p, _| on_progress(p))?;
    Ok((done.manifest, done.results.coverage))
}

impl Stage for SelectOptions {
    type Results = SelectResults;
    type Error = Error;

    fn name(&self) -> &str {
        "select"
    }

    fn parameters(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("serialisable")
    }

    fn run(&self, rows: &mut Rows) -> Result<SelectResults> {
        let opts = self;
        if let Some(label) = &opts.label {
            // Checked up front, against every column (the stage itself reads only the ones it needs).
            let mut reader = DatasetReader::open(rows.input(), rows.read_options().clone())?;
            let columns = match reader.next() {
                Some(first) => first?.schema(),
                None => reader.schema(),
            };
            if columns.index_of(label).is_err() {
                let names: Vec<&str> = columns.fields().iter().map(|f| f.name().as_str()).collect();
                return Err(Error::Invalid(format!(
                    "no column {label:?} to use as a label (columns: {})",
                    names.join(", ")
                )));
            }
        }
        let mut measured = None;
        let score = opts.score.as_deref().unwrap_or(match opts.method {
            Method::Iterative => schema::columns::REWARD,
            _ => schema::columns::QUALITY,
        });
        let mut columns = vec![
            schema::columns::EMBEDDING,
            schema::columns::CLUSTER,
            schema::columns::QUALITY,
            schema::columns::ROUND,
            score,
        ];
        columns.extend(opts.label.as_deref());
        rows.whole_columns(&columns, |batches| {
            let (data, dim, batch) = embeddings_concat(batches)?;
            let data = data.as_slice();
            let rows = batch.num_rows();
            let budget = opts.budget.rows(rows)?;
            let labels = opts.label.as_deref().map(|l| labels_of(&batch, l)).transpose()?;
            let mut clusters = clusters_of(&batch)?;
            if opts.method == Method::Kmq && (clusters.is_none() || opts.k.is_some()) {
                let k = opts.k.unwrap_or(budget).min(rows);
                clusters = Some(kmeans(data, dim, &KMeansOptions::plain(k, opts.seed))?.1);
            }
            let mut new_weights = None;
            let picks = match opts.method {
                Method::Random => random(rows, budget, opts.seed),
                Method::Rs2 => rs2(rows, budget, opts.round, opts.seed),
                Method::Deita => {
                    let scores = scores_of(&batch, score)?;
                    deita(data, dim, &scores, budget, opts.max_similarity)
                }
                Method::Kcenter => kcenter(data, dim, budget, opts.seed),
                Method::Iterative => {
                    let clusters = clusters.as_deref().ok_or_else(|| {
                        Error::Invalid("iterative selection needs a `cluster` column: run `whet kmeans` first".into())
                    })?;
                    let scores = scores_of_nullable(&batch, score)?;
                    let mut sums: BTreeMap<u32, (f64, u64)> = BTreeMap::new();
                    for (row, s) in scores.iter().enumerate() {
                        if let Some(s) = s {
                            let e = sums.entry(clusters[row]).or_default();
                            (e.0, e.1) = (e.0 + *s as f64, e.1 + 1);
                        }
                    }
                    let means: BTreeMap<u32, f64> = sums.into_iter().map(|(c, (s, n))| (c, s / n as f64)).collect();
                    // Round one starts from uniform weights over every cluster (an unscored one counts as average).
                    let all: std::collections::BTreeSet<u32> = clusters.iter().copied().collect();
                    let uniform: BTreeMap<u32, f64> = all.iter().map(|&c| (c, 1.0 / all.len() as f64)).collect();
                    let mut weights =
                        update_weights(Some(opts.previous_weights.as_ref().unwrap_or(&uniform)), &means, opts.update)?;
                    for &c in clusters {
                        weights.entry(c).or_insert(0.0); // a cluster unknown to last round's weights gets none
                    }
                    // Rows chosen in an earlier round (a non-null `round`) are not chosen again.
                    let available: Vec<bool> = match batch.column_by_name(schema::columns::ROUND) {
                        Some(r) => (0..rows).map(|i| r.is_null(i)).collect(),
                        None => vec![true; rows],
                    };
                    let picks = iterative(clusters, &available, &weights, budget, opts.seed);
                    new_weights = Some(weights);
                    picks
                }
                Method::Kmq => {
                    let quality = batch
                        .column_by_name(schema::columns::QUALITY)
                        .and_then(|q| q.as_primitive_opt::<Float32Type>());
                    let quality = quality.map(|q| q.values().to_vec());
                    let within = if opts.kmq_random {
                        Within::Random
                    } else {
                        Within::Central { embeddings: data, dim, temperature: opts.kmq_temperature }
                    };
                    kmq(clusters.as_deref().expect("clustered above"), budget, quality.as_deref(), within, opts.seed)?
                }
            };
            let mut picks = picks;
            picks.sort_by_key(|p| p.row); // written in input order
            let rows_picked: Vec<usize> = picks.iter().map(|p| p.row).collect();
            let metrics = coverage(data, dim, &rows_picked, clusters.as_deref(), labels.as_deref(), opts.seed)?;
            let mut added: Vec<(Field, ArrayRef)> = Vec::new();
            if let Some(c) = &clusters {
                let picked: Vec<u32> = rows_picked.iter().map(|&r| c[r]).collect();
                added.push((stage_field(schema::columns::CLUSTER), Arc::new(UInt32Array::from(picked))));
            }
            if opts.method == Method::Iterative {
                let round = UInt32Array::from(vec![opts.round as u32; picks.len()]);
                added.push((stage_field(schema::columns::ROUND), Arc::new(round)));
            }
            let reasons = StringArray::from(picks.iter().map(|p| p.reason.as_str()).collect::<Vec<_>>());
            added.push((stage_field(schema::columns::SELECTED_BY), Arc::new(reasons)));
            measured = Some(SelectResults { coverage: metrics, cluster_weights: new_weights });
            Ok(Selection {
                keep: rows_picked.iter().map(|&r| r as u32).collect(),
                columns: added,
                dropped: [("not_selected".to_string(), (rows - rows_picked.len()) as u64)].into(),
                rejected: Vec::new(),
            })
        })?;
        Ok(measured.expect("the stage ran"))
    }
}
