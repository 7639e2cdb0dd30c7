//! Sentence embeddings: a real BERT-family model on candle ([`SentenceEncoder`]), or a fast model-free
//! TF-IDF feature-hashing embedder ([`HashingEmbedder`]). Both give L2-normalised vectors, so a dot
//! product is a cosine similarity.

mod bert;
mod bert_bf16;
mod hashing;

use std::path::{Path, PathBuf};

use std::sync::Arc;

use arrow::array::{Array, AsArray, FixedSizeListArray, Float32Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Float32Type, Schema};
use candle_core::{Device, Tensor};
use rayon::prelude::*;
use tokenizers::{Tokenizer, TruncationParams};
use whetstone_datasets::{run_stage, schema, DatasetReader, Manifest, Progress, ReadOptions, RowProgress, Rows, Stage};

pub use bert::{Bert, BertConfig};
pub use bert_bf16::Bf16Bert;
pub use hashing::HashingEmbedder;

use crate::error::{Error, Result};

/// Turns texts into L2-normalised vectors of a fixed dimension.
pub trait Embedder: Send + Sync {
    /// What made the vectors (model folder and content hash, or hashing parameters), for manifests.
    fn name(&self) -> &str;
    fn dim(&self) -> usize;
    /// Embeds `texts`: row-major `texts.len() × dim`.
    fn embed(&self, texts: &[&str]) -> Result<Vec<f32>>;
}

/// Where the all-MiniLM-L6-v2 folder is: `WHETSTONE_MINILM`, else `.cache/models/all-MiniLM-L6-v2` under the
/// workspace (where `scripts/fetch-minilm.sh` unpacks it). `None` when neither holds a model.
pub fn minilm_dir(workspace: &Path) -> Option<PathBuf> {
    let dir = std::env::var_os("WHETSTONE_MINILM")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join(".cache/models/all-MiniLM-L6-v2"));
    dir.join("model.safetensors").exists().then_some(dir)
}

/// The precision of a BERT encoder's products.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// candle's f32 model: sentence-transformers' embeddings to six digits.
    #[default]
    F32,
    /// Products of values rounded to bfloat16 ([`Bf16Bert`]; processors with AVX512-BF16 only): faster, at a
    /// cosine to f32's a little below 1.
    Bf16,
}

impl Precision {
    pub const NAMES: [&'static str; 2] = ["f32", "bf16"];
}

enum Model {
    F32(Bert),
    Bf16(Bf16Bert),
}

impl Model {
    fn config(&self) -> &BertConfig {
        match self {
            Model::F32(bert) => &bert.config,
            Model::Bf16(bert) => &bert.config,
        }
    }
}

/// A sentence-transformers model: BERT, mean pooling over the tokens, L2 normalisation.
pub struct SentenceEncoder {
    model: Model,
    tokenizer: Tokenizer,
    max_tokens: usize,
    name: String,
}

/// Tokens per forward pass: texts are sorted by length and batched up to this many (padded) tokens.
const TOKENS_PER_BATCH: usize = 1024;

impl SentenceEncoder {
    /// Loads a model folder: `config.json`, `model.safetensors`, `tokenizer.json` (and, when present,
    /// sentence-transformers' `sentence_bert_config.json` for the maximum sequence length).
    pub fn load(dir: &Path, precision: Precision) -> Result<Self> {
        let model = match precision {
            Precision::F32 => Model::F32(Bert::load(dir, &Device::Cpu)?),
            Precision::Bf16 => Model::Bf16(Bf16Bert::load(dir)?),
        };
        let config = model.config();
        let tokenizer_path = dir.join("tokenizer.json");
        let mut tokenizer = Tokenizer::from_file(&tokenizer_path)
            .map_err(|e| Error::model(&tokenizer_path, format!("cannot load the tokenizer: {e}")))?;
        let max_tokens = std::fs::read_to_string(dir.join("sentence_bert_config.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v["max_seq_length"].as_u64())
            .map(|n| n as usize)
            .unwrap_or(config.max_position_embeddings)
            .min(config.max_position_embeddings);
        tokenizer
            .with_truncation(Some(TruncationParams { max_length: max_tokens, ..Default::default() }))
            .map_err(|e| Error::model(&tokenizer_path, format!("cannot set truncation: {e}")))?
            .with_padding(None);
        // The weights' content hash names the model in manifests; streamed, not read into memory again.
        let weights = dir.join("model.safetensors");
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        let mut file = std::fs::File::open(&weights).map_err(|e| Error::model(&weights, e.to_string()))?;
        let mut block = vec![0u8; 1 << 20];
        loop {
            let n = std::io::Read::read(&mut file, &mut block).map_err(|e| Error::model(&weights, e.to_string()))?;
            if n == 0 {
                break;
            }
            hasher.update(&block[..n]);
        }
        let kind = match precision {
            Precision::F32 => "bert",
            Precision::Bf16 => "bert-bf16",
        };
        let folder = dir.file_name().and_then(|n| n.to_str()).unwrap_or("model");
        let name = format!("{kind}:{folder}#{:016x}", hasher.digest());
        Ok(SentenceEncoder { model, tokenizer, max_tokens, name })
    }

    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// Token ids with the special tokens, truncated to [`Self::max_tokens`].
    pub fn token_ids(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>> {
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| Error::Invalid(format!("tokenizer failed: {e}")))?;
        Ok(encodings.into_iter().map(|e| e.get_ids().to_vec()).collect())
    }

    /// One batch's embeddings, row-major.
    fn embed_batch(&self, ids: &[&[u32]]) -> Result<Vec<f32>> {
        let bert = match &self.model {
            Model::F32(bert) => bert,
            Model::Bf16(bert) => {
                let mut out = vec![0f32; ids.len() * self.model.config().hidden_size];
                bert.embed(ids, &mut out)?;
                return Ok(out);
            }
        };
        let len = ids.iter().map(|i| i.len()).max().unwrap_or(0).max(1);
        let mut flat = vec![0u32; ids.len() * len];
        let mut mask = vec![0u32; ids.len() * len];
        for (row, tokens) in ids.iter().enumerate() {
            flat[row * len..row * len + tokens.len()].copy_from_slice(tokens);
            mask[row * len..row * len + tokens.len()].fill(1);
        }
        let device = bert.device();
        let ids = Tensor::from_vec(flat, (ids.len(), len), device)?;
        let mask = Tensor::from_vec(mask, (ids.dims()[0], len), device)?;
        let hidden = bert.forward(&ids, &mask)?;
        Ok(Bert::mean_pool_normalised(&hidden, &mask)?.flatten_all()?.to_vec1()?)
    }
}

impl Embedder for SentenceEncoder {
    fn name(&self) -> &str {
        &self.name
    }

    fn dim(&self) -> usize {
        self.model.config().hidden_size
    }

    /// Length-bucketed: sorted by token count so a batch pads little, batched by a token budget.
    fn embed(&self, texts: &[&str]) -> Result<Vec<f32>> {
        let ids = self.token_ids(texts)?;
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&i| ids[i].len());
        let mut batches = Vec::new();
        let mut start = 0;
        while start < order.len() {
            let mut end = start + 1;
            while end < order.len() && ids[order[end]].len() * (end + 1 - start) <= TOKENS_PER_BATCH {
                end += 1;
            }
            batches.push(&order[start..end]);
            start = end;
        }
        // Batches run side by side: candle's element-wise ops are single-threaded, its matmuls are not.
        let vectors = batches
            .par_iter()
            .map(|rows| self.embed_batch(&rows.iter().map(|&i| ids[i].as_slice()).collect::<Vec<_>>()))
            .collect::<Result<Vec<_>>>()?;
        let dim = self.dim();
        let mut out = vec![0f32; ids.len() * dim];
        for (rows, vectors) in batches.iter().zip(vectors) {
            for (&row, vector) in rows.iter().zip(vectors.chunks_exact(dim)) {
                out[row * dim..(row + 1) * dim].copy_from_slice(vector);
            }
        }
        Ok(out)
    }
}

/// Which text of a row is embedded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TextField {
    /// The prompt (the instruction): what selection by topic or skill looks at.
    #[default]
    Prompt,
    Response,
    /// Prompt, a blank line, then the response (if any).
    Both,
}

impl TextField {
    pub const NAMES: [&'static str; 3] = ["prompt", "response", "both"];

    /// The texts of a batch; a null response is the empty text.
    pub fn texts(self, batch: &RecordBatch) -> Result<Vec<String>> {
        let column = |name: &str| -> Result<&StringArray> {
            batch
                .column_by_name(name)
                .and_then(|c| c.as_string_opt::<i32>())
                .ok_or_else(|| Error::Invalid(format!("the dataset has no text column {name:?}")))
        };
        Ok(match self {
            TextField::Prompt => {
                let p = column(schema::PROMPT)?;
                (0..batch.num_rows()).map(|i| get(p, i).to_string()).collect()
            }
            TextField::Response => {
                let r = column(schema::RESPONSE)?;
                (0..batch.num_rows()).map(|i| get(r, i).to_string()).collect()
            }
            TextField::Both => {
                let (p, r) = (column(schema::PROMPT)?, column(schema::RESPONSE)?);
                (0..batch.num_rows())
                    .map(|i| match get(r, i) {
                        "" => get(p, i).to_string(),
                        resp => format!("{}\n\n{resp}", get(p, i)),
                    })
                    .collect()
            }
        })
    }
}

fn get(a: &StringArray, i: usize) -> &str {
    if a.is_valid(i) {
        a.value(i)
    } else {
        ""
    }
}

/// Sets (or replaces) the `embedding` column: `FixedSizeList<Float32, dim>`, one vector per row.
pub fn with_embedding(batch: RecordBatch, vectors: Vec<f32>, dim: usize) -> Result<RecordBatch> {
    let field = schema::columns::field(schema::columns::EMBEDDING, dim as i32).expect("a stage column");
    let DataType::FixedSizeList(item, _) = field.data_type() else { unreachable!("embedding is a fixed-size list") };
    let column = FixedSizeListArray::try_new(item.clone(), dim as i32, Arc::new(Float32Array::from(vectors)), None)?;
    let mut fields: Vec<Field> = batch.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
    let mut columns = batch.columns().to_vec();
    match fields.iter().position(|f| f.name() == schema::columns::EMBEDDING) {
        Some(i) => {
            fields[i] = field;
            columns[i] = Arc::new(column);
        }
        None => {
            fields.push(field);
            columns.push(Arc::new(column));
        }
    }
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?)
}

/// The `embedding` column of a batch as a row-major slice, with its dimension; fails clearly when the column
/// is missing or mistyped, or a vector is null or not finite.
pub fn embeddings_of(batch: &RecordBatch) -> Result<(&[f32], usize)> {
    embeddings_at(batch, 0)
}

/// All the embeddings of a stream of batches in one row-major buffer, and the other columns in one batch.
/// Each batch's vectors are copied out as it arrives and the batch let go, so memory holds one copy.
pub fn embeddings_concat(
    batches: &mut dyn Iterator<Item = whetstone_datasets::Result<RecordBatch>>,
) -> Result<(Vec<f32>, usize, RecordBatch)> {
    let mut vectors: Vec<f32> = Vec::new();
    let mut dim = 0;
    let mut others = Vec::new();
    for batch in batches {
        let batch = batch?;
        let (values, d) = embeddings_at(&batch, vectors.len().checked_div(dim).unwrap_or(0))?;
        if dim != 0 && d != dim {
            return Err(Error::Invalid(format!("embeddings of dimension {d} after {dim}: one dimension per dataset")));
        }
        dim = d;
        // Large buffers grow by remapping pages (glibc's realloc on mmap'd blocks): no copy, no double peak.
        vectors.extend_from_slice(values);
        let schema = batch.schema();
        let keep: Vec<usize> =
            (0..schema.fields().len()).filter(|&i| schema.field(i).name() != schema::columns::EMBEDDING).collect();
        // A deep copy of the small columns, so no batch keeps its decoded row group alive.
        let small = batch.project(&keep)?;
        others.push(arrow::compute::concat_batches(&small.schema(), [&small])?);
    }
    let Some(first) = others.first() else { return Err(Error::Invalid("the dataset has no rows".into())) };
    let others = arrow::compute::concat_batches(&first.schema(), &others)?;
    Ok((vectors, dim, others))
}

/// [`embeddings_of`] for a batch whose first row is row `offset` of the dataset (for the row numbers in errors).
fn embeddings_at(batch: &RecordBatch, offset: usize) -> Result<(&[f32], usize)> {
    let column = batch
        .column_by_name(schema::columns::EMBEDDING)
        .ok_or_else(|| Error::Invalid("the dataset has no `embedding` column: run `whet embed` on it first".into()))?;
    let list = column.as_fixed_size_list_opt().ok_or_else(|| {
        Error::Invalid(format!("the `embedding` column is {}, not a fixed-size list of floats", column.data_type()))
    })?;
    let dim = list.value_length() as usize;
    let values = list.values().as_primitive_opt::<Float32Type>().ok_or_else(|| {
        Error::Invalid(format!("the `embedding` column holds {}, not Float32", list.values().data_type()))
    })?;
    if let Some(row) = (0..list.len()).find(|&i| list.is_null(i)) {
        return Err(Error::Invalid(format!("row {} has no embedding (null)", offset + row)));
    }
    let start = list.offset() * dim;
    let flat = &values.values()[start..start + list.len() * dim];
    if let Some(at) = flat.iter().position(|v| !v.is_finite()) {
        return Err(Error::Invalid(format!(
            "row {} has a non-finite embedding value ({})",
            offset + at / dim,
            flat[at]
        )));
    }
    Ok((flat, dim))
}

/// The embed stage: adds an `embedding` column computed from `text` by `embedder`.
pub fn embed_dataset(
    input: &Path,
    output: &Path,
    embedder: &dyn Embedder,
    text: TextField,
    read: ReadOptions,
    on_progress: impl FnOnce(Progress, RowProgress),
) -> Result<Manifest> {
    Ok(run_stage(&Embedding { embedder, text }, input, output, read, on_progress)?.manifest)
}

struct Embedding<'a> {
    embedder: &'a dyn Embedder,
    text: TextField,
}

impl Stage for Embedding<'_> {
    type Results = ();
    type Error = Error;

    fn name(&self) -> &str {
        "embed"
    }

    fn parameters(&self) -> serde_json::Value {
        serde_json::json!({"embedder": self.embedder.name(), "dim": self.embedder.dim(), "text": self.text})
    }

    fn run(&self, rows: &mut Rows) -> Result<()> {
        let dim = self.embedder.dim();
        Ok(rows.map(|batch| {
            let texts = self.text.texts(&batch)?;
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            Ok(with_embedding(batch, self.embedder.embed(&refs)?, dim)?)
        })?)
    }
}

impl HashingEmbedder {
    /// Fits the IDF weights on the texts of a dataset (one streaming pass).
    pub fn fit_dataset(input: &Path, read: ReadOptions, text: TextField, dim: usize, seed: u64) -> Result<Self> {
        let mut texts = Vec::new();
        let mut fitter = hashing::DocumentFrequencies::new(dim, seed)?;
        for batch in DatasetReader::open(input, read)? {
            texts.clear();
            texts.extend(text.texts(&batch?)?);
            fitter.add(texts.iter().map(String::as_str));
        }
        Ok(fitter.finish())
    }
}
