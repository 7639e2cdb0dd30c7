//! whetstone's functions in SQL: scalar UDFs `xxh3`, `minhash`, `embed`, `ngram_overlap`, `nearest`,
//! `nearest_distance`, `filter_reason`, `exact_key`, and the aggregate `vector_sum`. Each computes what the stage of the same work computes, from the same code, so a
//! query and a stage agree row for row. Models, evaluation sets and centroids are named by literal strings
//! and loaded once per process (plans carry names, not data: a cluster's gRPC messages stay small).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::SystemTime;

use arrow::array::{
    Array, ArrayRef, AsArray, FixedSizeListArray, Float32Array, Float64Array, ListArray, StringArray, UInt32Array,
    UInt64Array,
};
use arrow::buffer::NullBuffer;
use arrow::datatypes::{DataType, Field, FieldRef, Float64Type, UInt64Type};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature, Volatility,
};
use datafusion::scalar::ScalarValue;
use rayon::prelude::*;
use whetstone_datasets::SpecialTokens;

use crate::decontam::EvalNgrams;
use crate::dedup::minhash::{MinHashOptions, MinHasher};
use crate::embed::{minilm_dir, Embedder, HashingEmbedder, Precision, SentenceEncoder};
use crate::filters::special_tokens::SpecialTokenMode;

/// The scalar functions, as a session or a cluster's function registry registers them.
pub fn scalar_functions() -> Vec<ScalarUDF> {
    vec![
        ScalarUDF::new_from_impl(Xxh3::new()),
        ScalarUDF::new_from_impl(MinHash::new()),
        ScalarUDF::new_from_impl(Embed::new()),
        ScalarUDF::new_from_impl(NgramOverlap::new()),
        ScalarUDF::new_from_impl(Nearest::new(false)),
        ScalarUDF::new_from_impl(Nearest::new(true)),
        ScalarUDF::new_from_impl(FilterReason::new()),
        ScalarUDF::new_from_impl(ExactKey::new()),
    ]
}

/// The aggregate functions.
pub fn aggregate_functions() -> Vec<AggregateUDF> {
    vec![AggregateUDF::new_from_impl(VectorSum::new())]
}

fn plan(message: String) -> DataFusionError {
    DataFusionError::Plan(message)
}

fn exec(message: String) -> DataFusionError {
    DataFusionError::Execution(message)
}

fn is_text(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null)
}

fn is_vector(t: &DataType) -> bool {
    match t {
        DataType::FixedSizeList(item, _) | DataType::List(item) | DataType::LargeList(item) => {
            matches!(item.data_type(), DataType::Float32 | DataType::Float64)
        }
        DataType::Null => true,
        _ => false,
    }
}

/// Checks argument count and types at planning, so a wrong call fails before any row is read, naming the
/// function's form and what was given.
fn check_args(form: &str, types: &[DataType], min: usize, kinds: &[(&str, fn(&DataType) -> bool)]) -> Result<()> {
    if types.len() < min || types.len() > kinds.len() {
        return Err(plan(format!("{form}: takes {} arguments, given {}", arity(min, kinds.len()), types.len())));
    }
    for (i, (t, (what, ok))) in types.iter().zip(kinds).enumerate() {
        if !ok(t) {
            return Err(plan(format!("{form}: argument {} is {t}; it takes {what}", i + 1)));
        }
    }
    Ok(())
}

fn arity(min: usize, max: usize) -> String {
    if min == max {
        min.to_string()
    } else {
        format!("{min} to {max}")
    }
}

fn is_number(t: &DataType) -> bool {
    t.is_numeric()
}

/// A text argument as a Utf8 array of `rows` rows.
fn texts(arg: &ColumnarValue, rows: usize) -> Result<StringArray> {
    let array = arg.clone().into_array(rows)?;
    let array = arrow::compute::cast(&array, &DataType::Utf8)?;
    Ok(array.as_string::<i32>().clone())
}

/// A literal argument (a model name, a file path) as text.
fn literal_text(form: &str, arg: Option<&ScalarValue>, what: &str) -> Result<String> {
    match arg {
        Some(ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) | ScalarValue::Utf8View(Some(s))) => {
            Ok(s.clone())
        }
        _ => Err(plan(format!("{form}: {what} must be a literal string such as '…', not a column or null"))),
    }
}

fn literal_of(arg: &ColumnarValue) -> Option<&ScalarValue> {
    match arg {
        ColumnarValue::Scalar(v) => Some(v),
        ColumnarValue::Array(_) => None,
    }
}

fn literal_number(form: &str, arg: Option<&ColumnarValue>, what: &str) -> Result<Option<f64>> {
    let Some(arg) = arg else { return Ok(None) };
    let value = literal_of(arg).and_then(|v| v.cast_to(&DataType::Float64).ok());
    match value {
        Some(ScalarValue::Float64(Some(v))) => Ok(Some(v)),
        _ => Err(exec(format!("{form}: {what} must be a literal number"))),
    }
}

/// Rows of vectors, as one row-major f32 buffer: `FixedSizeList` or `List` of f32 or f64.
fn vectors(form: &str, array: &ArrayRef) -> Result<(Vec<f32>, usize, Option<NullBuffer>)> {
    let fixed: FixedSizeListArray = match array.data_type() {
        DataType::FixedSizeList(_, _) => array.as_fixed_size_list().clone(),
        DataType::List(_) | DataType::LargeList(_) => {
            let lengths: Vec<usize> = (0..array.len())
                .filter(|&i| array.is_valid(i))
                .map(|i| match array.data_type() {
                    DataType::List(_) => array.as_list::<i32>().value_length(i) as usize,
                    _ => array.as_list::<i64>().value_length(i) as usize,
                })
                .collect();
            let dim = lengths.first().copied().unwrap_or(0);
            if let Some(other) = lengths.iter().find(|&&l| l != dim) {
                return Err(exec(format!("{form}: vectors of {dim} and {other} values in one column")));
            }
            let target = DataType::FixedSizeList(Arc::new(Field::new_list_field(DataType::Float32, true)), dim as i32);
            arrow::compute::cast(array, &target)?.as_fixed_size_list().clone()
        }
        DataType::Null => {
            return Ok((Vec::new(), 0, Some(NullBuffer::new_null(array.len()))));
        }
        other => return Err(exec(format!("{form}: the vectors are {other}; give a list of floats"))),
    };
    let dim = fixed.value_length() as usize;
    let values = fixed.values().slice(fixed.offset() * dim, fixed.len() * dim);
    let values = arrow::compute::cast(&values, &DataType::Float32)?;
    let values = values.as_primitive::<arrow::datatypes::Float32Type>();
    Ok((values.values().to_vec(), dim, fixed.nulls().cloned()))
}

fn valid(nulls: &Option<NullBuffer>, i: usize) -> bool {
    nulls.as_ref().is_none_or(|n| n.is_valid(i))
}

/// A file's identity for the caches: a rewritten file (a new k-means iteration's centroids) is loaded again.
fn file_key(path: &Path) -> Result<(PathBuf, Option<SystemTime>, u64)> {
    let meta = std::fs::metadata(path).map_err(|e| exec(format!("{}: {e}", path.display())))?;
    Ok((path.to_path_buf(), meta.modified().ok(), meta.len()))
}

// ---------------------------------------------------------------------------------------------------------

/// `xxh3(text)`: the 64-bit xxh3 hash of the text's UTF-8 bytes.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Xxh3 {
    signature: Signature,
}

impl Xxh3 {
    fn new() -> Self {
        Xxh3 { signature: Signature::any(1, Volatility::Immutable) }
    }
}

impl ScalarUDFImpl for Xxh3 {
    fn name(&self) -> &str {
        "xxh3"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, types: &[DataType]) -> Result<DataType> {
        check_args("xxh3(text)", types, 1, &[("text", is_text)])?;
        Ok(DataType::UInt64)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let texts = texts(&args.args[0], args.number_rows)?;
        let hashes: UInt64Array = texts.iter().map(|t| t.map(|t| xxhash_rust::xxh3::xxh3_64(t.as_bytes()))).collect();
        Ok(ColumnarValue::Array(Arc::new(hashes)))
    }
}

/// `minhash(text [, threshold [, shingle [, seed]]])`: the LSH band keys of the text's MinHash signature, as
/// `whet dedup --method minhash` computes them (same normalisation, permutations and bands): rows sharing a
/// key at the same position are candidate near-duplicates.
#[derive(Debug, PartialEq, Eq, Hash)]
struct MinHash {
    signature: Signature,
}

impl MinHash {
    fn new() -> Self {
        MinHash { signature: Signature::variadic_any(Volatility::Immutable) }
    }
}

const MINHASH_FORM: &str = "minhash(text [, threshold [, shingle [, seed [, bands, rows]]]])";

impl ScalarUDFImpl for MinHash {
    fn name(&self) -> &str {
        "minhash"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, types: &[DataType]) -> Result<DataType> {
        let number = ("a number", is_number as fn(&DataType) -> bool);
        check_args(MINHASH_FORM, types, 1, &[("text", is_text), number, number, number, number, number])?;
        if types.len() == 5 {
            return Err(plan(format!("{MINHASH_FORM}: give bands and rows together")));
        }
        Ok(DataType::List(Arc::new(Field::new_list_field(DataType::UInt64, true))))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let threshold = literal_number(MINHASH_FORM, args.args.get(1), "threshold")?.unwrap_or(0.8);
        let seed = literal_number(MINHASH_FORM, args.args.get(3), "seed")?.unwrap_or(0.0) as u64;
        let mut opts =
            MinHashOptions::for_threshold(threshold, seed).map_err(|e| exec(format!("{MINHASH_FORM}: {e}")))?;
        if let Some(shingle) = literal_number(MINHASH_FORM, args.args.get(2), "shingle")? {
            opts.shingle = shingle as usize;
        }
        if let Some(bands) = literal_number(MINHASH_FORM, args.args.get(4), "bands")? {
            opts.bands = bands as usize;
        }
        if let Some(rows) = literal_number(MINHASH_FORM, args.args.get(5), "rows")? {
            opts.rows = rows as usize;
        }
        let hasher = MinHasher::new(&opts).map_err(|e| exec(format!("{MINHASH_FORM}: {e}")))?;
        let texts = texts(&args.args[0], args.number_rows)?;
        let keys: Vec<Option<Vec<u64>>> = (0..texts.len())
            .into_par_iter()
            .map(|i| texts.is_valid(i).then(|| hasher.band_keys(&hasher.signature(texts.value(i)))))
            .collect();
        let list = ListArray::from_iter_primitive::<UInt64Type, _, _>(
            keys.into_iter().map(|k| k.map(|k| k.into_iter().map(Some))),
        );
        Ok(ColumnarValue::Array(Arc::new(list)))
    }
}

/// `filter_reason(prompt, response [, 'SETTINGS'])`: the name of the first quality filter the row fails, as
/// `whet filter` names it in its rejected rows (`length`, `repeated_ngrams`, …), or null when it passes all.
/// `SETTINGS` is a pipeline file's filter stage as JSON (`{"max_symbols": 0.3}`); omitted, the defaults.
#[derive(Debug, PartialEq, Eq, Hash)]
struct FilterReason {
    signature: Signature,
}

impl FilterReason {
    fn new() -> Self {
        FilterReason { signature: Signature::variadic_any(Volatility::Immutable) }
    }
}

const FILTER_FORM: &str = "filter_reason(prompt, response [, 'SETTINGS-JSON'])";

impl ScalarUDFImpl for FilterReason {
    fn name(&self) -> &str {
        "filter_reason"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, types: &[DataType]) -> Result<DataType> {
        check_args(FILTER_FORM, types, 2, &[("text", is_text), ("text", is_text), ("settings as JSON text", is_text)])?;
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let settings: crate::pipeline::FilterStep = match args.args.get(2) {
            None => Default::default(),
            Some(arg) => {
                let json = literal_text(FILTER_FORM, literal_of(arg), "the settings")?;
                serde_json::from_str(&json).map_err(|e| exec(format!("{FILTER_FORM}: the settings: {e}")))?
            }
        };
        let filters = settings.filters();
        // With special-token strings stripped or rejected, a row holding one is the stage's to change or drop.
        let special = (settings.special_tokens != SpecialTokenMode::Keep).then(SpecialTokens::known);
        let prompts = texts(&args.args[0], args.number_rows)?;
        let responses = texts(&args.args[1], args.number_rows)?;
        let reasons: Vec<Option<&str>> = (0..prompts.len())
            .into_par_iter()
            .map(|i| {
                let row = crate::filters::Row {
                    id: "",
                    prompt: if prompts.is_valid(i) { prompts.value(i) } else { "" },
                    response: responses.is_valid(i).then(|| responses.value(i)),
                };
                let marked = special.as_ref().is_some_and(|s| {
                    s.first(row.prompt).is_some() || row.response.is_some_and(|r| s.first(r).is_some())
                });
                if marked {
                    return Some(crate::filters::special_tokens::REASON);
                }
                filters.iter().find(|f| f.check(&row).is_some()).map(|f| f.name())
            })
            .collect();
        Ok(ColumnarValue::Array(Arc::new(StringArray::from(reasons))))
    }
}

/// `exact_key(prompt, response)`: the 16-byte key rows share when `whet dedup --method exact` takes them for
/// duplicates (xxh3-128 of the normalised texts).
#[derive(Debug, PartialEq, Eq, Hash)]
struct ExactKey {
    signature: Signature,
}

impl ExactKey {
    fn new() -> Self {
        ExactKey { signature: Signature::any(2, Volatility::Immutable) }
    }
}

impl ScalarUDFImpl for ExactKey {
    fn name(&self) -> &str {
        "exact_key"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, types: &[DataType]) -> Result<DataType> {
        check_args("exact_key(prompt, response)", types, 2, &[("text", is_text), ("text", is_text)])?;
        Ok(DataType::FixedSizeBinary(16))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let prompts = texts(&args.args[0], args.number_rows)?;
        let responses = texts(&args.args[1], args.number_rows)?;
        let keys: Vec<Option<[u8; 16]>> = (0..prompts.len())
            .into_par_iter()
            .map(|i| {
                prompts.is_valid(i).then(|| {
                    let response = responses.is_valid(i).then(|| responses.value(i));
                    crate::dedup::exact::exact_key(prompts.value(i), response).to_le_bytes()
                })
            })
            .collect();
        let array = arrow::array::FixedSizeBinaryArray::try_from_sparse_iter_with_size(keys.into_iter(), 16)?;
        Ok(ColumnarValue::Array(Arc::new(array)))
    }
}

/// `embed(text, model)`: sentence embeddings, `FixedSizeList<Float32, d>` as `whet embed` writes them.
/// `model` is `minilm` (all-MiniLM-L6-v2, found as `whet embed` finds it), a BERT model folder, or `hashing`:
/// the hashing embedder with every IDF weight 1 (a scalar function sees one batch, never the corpus that
/// `whet embed --embedder hashing` fits its IDF on), 512 dimensions, seed 0.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Embed {
    signature: Signature,
}

impl Embed {
    fn new() -> Self {
        Embed { signature: Signature::any(2, Volatility::Immutable) }
    }
}

const EMBED_FORM: &str = "embed(text, 'minilm' | 'hashing' | 'MODEL-FOLDER')";

static EMBEDDERS: LazyLock<Mutex<HashMap<String, Arc<dyn Embedder>>>> = LazyLock::new(Default::default);

/// The embedder a name means, loaded on first use and kept for the process.
fn embedder(name: &str) -> Result<Arc<dyn Embedder>> {
    let mut loaded = EMBEDDERS.lock().expect("not poisoned");
    if let Some(e) = loaded.get(name) {
        return Ok(e.clone());
    }
    let fail = |e: crate::Error| exec(format!("{EMBED_FORM}: {e}"));
    let e: Arc<dyn Embedder> = match name {
        "hashing" => Arc::new(HashingEmbedder::fit(std::iter::empty(), 512, 0).map_err(fail)?),
        "minilm" => {
            let dir = minilm_dir(Path::new(".")).ok_or_else(|| {
                exec(format!(
                    "{EMBED_FORM}: no all-MiniLM-L6-v2 model: run scripts/fetch-minilm.sh, set WHETSTONE_MINILM, or \
                     name a model folder"
                ))
            })?;
            Arc::new(SentenceEncoder::load(&dir, Precision::F32).map_err(fail)?)
        }
        dir => Arc::new(SentenceEncoder::load(Path::new(dir), Precision::F32).map_err(fail)?),
    };
    loaded.insert(name.to_string(), e.clone());
    Ok(e)
}

fn embedding_type(dim: usize) -> DataType {
    DataType::FixedSizeList(Arc::new(Field::new("item", DataType::Float32, false)), dim as i32)
}

impl ScalarUDFImpl for Embed {
    fn name(&self) -> &str {
        "embed"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Err(DataFusionError::Internal("embed's type comes from return_field_from_args".into()))
    }
    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let types: Vec<DataType> = args.arg_fields.iter().map(|f| f.data_type().clone()).collect();
        check_args(EMBED_FORM, &types, 2, &[("text", is_text), ("a model name", is_text)])?;
        let model = literal_text(EMBED_FORM, args.scalar_arguments[1], "the model")?;
        // Loading here (at planning) both finds the dimension and reports a missing model before any row.
        let dim = embedder(&model)?.dim();
        Ok(Arc::new(Field::new(self.name(), embedding_type(dim), true)))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let model = literal_text(EMBED_FORM, literal_of(&args.args[1]), "the model")?;
        let embedder = embedder(&model)?;
        let dim = embedder.dim();
        let texts = texts(&args.args[0], args.number_rows)?;
        let present: Vec<&str> = texts.iter().flatten().collect();
        let vectors = embedder.embed(&present).map_err(|e| exec(format!("{EMBED_FORM}: {e}")))?;
        // Null texts get null rows (zeros underneath); the others take their vectors in order.
        let mut values = vec![0f32; texts.len() * dim];
        let mut next = vectors.chunks(dim);
        for i in 0..texts.len() {
            if texts.is_valid(i) {
                values[i * dim..(i + 1) * dim].copy_from_slice(next.next().expect("one vector per text"));
            }
        }
        let item = Arc::new(Field::new("item", DataType::Float32, false));
        let array = FixedSizeListArray::try_new(
            item,
            dim as i32,
            Arc::new(Float32Array::from(values)),
            texts.nulls().cloned(),
        )?;
        Ok(ColumnarValue::Array(Arc::new(array)))
    }
}

/// `ngram_overlap(text, 'EVAL-SET' [, n])`: the share of the text's lower-cased word n-grams (n = 13 by
/// default, as `whet decontam`) found in the evaluation set's prompts and responses. Above 0 means
/// `whet decontam` would drop a row with this text.
#[derive(Debug, PartialEq, Eq, Hash)]
struct NgramOverlap {
    signature: Signature,
}

impl NgramOverlap {
    fn new() -> Self {
        NgramOverlap { signature: Signature::variadic_any(Volatility::Immutable) }
    }
}

const NGRAM_FORM: &str = "ngram_overlap(text, 'EVAL-SET' [, n])";

type EvalKey = ((PathBuf, Option<SystemTime>, u64), usize);
static EVAL_SETS: LazyLock<Mutex<HashMap<EvalKey, Arc<EvalNgrams>>>> = LazyLock::new(Default::default);

fn eval_set(path: &str, n: usize) -> Result<Arc<EvalNgrams>> {
    let key = (file_key(Path::new(path)).map_err(|e| exec(format!("{NGRAM_FORM}: {e}")))?, n);
    let mut loaded = EVAL_SETS.lock().expect("not poisoned");
    if let Some(e) = loaded.get(&key) {
        return Ok(e.clone());
    }
    let e = Arc::new(EvalNgrams::load(&[PathBuf::from(path)], n).map_err(|e| exec(format!("{NGRAM_FORM}: {e}")))?);
    loaded.insert(key, e.clone());
    Ok(e)
}

impl ScalarUDFImpl for NgramOverlap {
    fn name(&self) -> &str {
        "ngram_overlap"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, types: &[DataType]) -> Result<DataType> {
        check_args(NGRAM_FORM, types, 2, &[("text", is_text), ("a file path", is_text), ("a number", is_number)])?;
        Ok(DataType::Float64)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let path = literal_text(NGRAM_FORM, literal_of(&args.args[1]), "the evaluation set")?;
        let n = literal_number(NGRAM_FORM, args.args.get(2), "n")?.unwrap_or(13.0);
        if n < 1.0 {
            return Err(exec(format!("{NGRAM_FORM}: n must be at least 1")));
        }
        let eval = eval_set(&path, n as usize)?;
        let texts = texts(&args.args[0], args.number_rows)?;
        let shares: Vec<Option<f64>> =
            (0..texts.len()).into_par_iter().map(|i| texts.is_valid(i).then(|| eval.overlap(texts.value(i)))).collect();
        Ok(ColumnarValue::Array(Arc::new(Float64Array::from(shares))))
    }
}

/// `nearest(embedding, 'CENTROIDS')`: the index of the nearest centroid (squared Euclidean distance, ties to
/// the lower index, as `whet kmeans` assigns). The centroids file is Parquet with an `embedding` column, one
/// row per centroid in index order (what the k-means driver writes each iteration).
/// `nearest_distance(embedding, 'CENTROIDS')`: the squared distance to that centroid, as Float64 (summed, the
/// inertia; against one zero centroid, the squared norm).
#[derive(Debug, PartialEq, Eq, Hash)]
struct Nearest {
    signature: Signature,
    distance: bool,
}

impl Nearest {
    fn new(distance: bool) -> Self {
        Nearest { signature: Signature::any(2, Volatility::Immutable), distance }
    }

    fn form(&self) -> &'static str {
        match self.distance {
            false => NEAREST_FORM,
            true => "nearest_distance(embedding, 'CENTROIDS.parquet')",
        }
    }
}

const NEAREST_FORM: &str = "nearest(embedding, 'CENTROIDS.parquet')";

/// Centroids, row-major, and their dimension.
type Centroids = Arc<(Vec<f32>, usize)>;
static CENTROIDS: LazyLock<Mutex<HashMap<(PathBuf, Option<SystemTime>, u64), Centroids>>> =
    LazyLock::new(Default::default);

/// Reads a centroids file: Parquet with an `embedding` column of float vectors.
pub fn read_centroids(path: &Path) -> crate::Result<(Vec<f32>, usize)> {
    use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let bad = |m: String| crate::Error::Invalid(format!("{}: {m}", path.display()));
    let file = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.build())
        .map_err(|e| bad(format!("not a readable Parquet file: {e}")))?;
    let (mut all, mut dim) = (Vec::new(), 0);
    for batch in reader {
        let batch = batch?;
        let column = batch.column_by_name("embedding").ok_or_else(|| bad("no `embedding` column".into()))?;
        let (values, d, nulls) = vectors("centroids", column).map_err(|e| bad(e.to_string()))?;
        if nulls.is_some_and(|n| n.null_count() > 0) {
            return Err(bad("a centroid is null".into()));
        }
        dim = d;
        all.extend(values);
    }
    if all.is_empty() {
        return Err(bad("no centroids".into()));
    }
    Ok((all, dim))
}

fn centroids(path: &str) -> Result<Centroids> {
    let key = file_key(Path::new(path)).map_err(|e| exec(format!("{NEAREST_FORM}: {e}")))?;
    let mut loaded = CENTROIDS.lock().expect("not poisoned");
    if let Some(c) = loaded.get(&key) {
        return Ok(c.clone());
    }
    let c = Arc::new(read_centroids(Path::new(path)).map_err(|e| exec(format!("{NEAREST_FORM}: {e}")))?);
    loaded.insert(key, c.clone());
    Ok(c)
}

impl ScalarUDFImpl for Nearest {
    fn name(&self) -> &str {
        match self.distance {
            false => "nearest",
            true => "nearest_distance",
        }
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, types: &[DataType]) -> Result<DataType> {
        check_args(self.form(), types, 2, &[("a vector (a list of floats)", is_vector), ("a file path", is_text)])?;
        Ok(if self.distance { DataType::Float64 } else { DataType::UInt32 })
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let form = self.form();
        let path = literal_text(form, literal_of(&args.args[1]), "the centroids file")?;
        let centroids = centroids(&path)?;
        let (centroids, c_dim) = (&centroids.0, centroids.1);
        let array = args.args[0].clone().into_array(args.number_rows)?;
        let (data, dim, nulls) = vectors(form, &array)?;
        if nulls.as_ref().is_some_and(|n| n.null_count() == n.len()) {
            return Ok(ColumnarValue::Array(match self.distance {
                false => Arc::new(UInt32Array::new_null(array.len())),
                true => Arc::new(Float64Array::new_null(array.len())),
            }));
        }
        if dim != c_dim {
            return Err(exec(format!("{form}: the vectors have {dim} values, the centroids in {path} {c_dim}")));
        }
        let (labels, distances) = crate::cluster::assign(&data, dim, centroids).map_err(|e| exec(e.to_string()))?;
        Ok(ColumnarValue::Array(match self.distance {
            false => Arc::new(UInt32Array::new(labels.into(), nulls)),
            true => Arc::new(Float64Array::new(distances.iter().map(|&d| d as f64).collect(), nulls)),
        }))
    }
}

/// `vector_sum(embedding)`: the element-wise sum of a group's vectors, in f64 (`List<Float64>`); with
/// `count(*)` it gives the new centroids of a k-means iteration.
#[derive(Debug, PartialEq, Eq, Hash)]
struct VectorSum {
    signature: Signature,
}

impl VectorSum {
    fn new() -> Self {
        VectorSum { signature: Signature::any(1, Volatility::Immutable) }
    }
}

const VECTOR_SUM_FORM: &str = "vector_sum(embedding)";

fn sum_type() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(DataType::Float64, true)))
}

impl AggregateUDFImpl for VectorSum {
    fn name(&self) -> &str {
        "vector_sum"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, types: &[DataType]) -> Result<DataType> {
        check_args(VECTOR_SUM_FORM, types, 1, &[("a vector (a list of floats)", is_vector)])?;
        Ok(sum_type())
    }
    fn accumulator(&self, _: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(VectorSumAccumulator { sum: Vec::new() }))
    }
    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![Arc::new(Field::new(format!("{}[sum]", args.name), sum_type(), true))])
    }
}

#[derive(Debug)]
struct VectorSumAccumulator {
    /// Empty until the first vector.
    sum: Vec<f64>,
}

impl VectorSumAccumulator {
    fn add(&mut self, v: impl ExactSizeIterator<Item = f64>) -> Result<()> {
        if self.sum.is_empty() {
            self.sum = vec![0.0; v.len()];
        } else if self.sum.len() != v.len() {
            return Err(exec(format!(
                "{VECTOR_SUM_FORM}: vectors of {} and {} values in one group",
                self.sum.len(),
                v.len()
            )));
        }
        self.sum.iter_mut().zip(v).for_each(|(s, x)| *s += x);
        Ok(())
    }

    fn value(&self) -> ScalarValue {
        let row = (!self.sum.is_empty()).then(|| self.sum.iter().map(|&v| Some(v)));
        ScalarValue::List(Arc::new(ListArray::from_iter_primitive::<Float64Type, _, _>(vec![row])))
    }
}

impl Accumulator for VectorSumAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let (data, dim, nulls) = vectors(VECTOR_SUM_FORM, &values[0])?;
        for i in 0..values[0].len() {
            if valid(&nulls, i) && dim > 0 {
                self.add(data[i * dim..(i + 1) * dim].iter().map(|&v| v as f64))?;
            }
        }
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let sums = states[0].as_list::<i32>();
        for i in 0..sums.len() {
            if sums.is_valid(i) {
                let v = sums.value(i);
                self.add(v.as_primitive::<Float64Type>().values().iter().copied())?;
            }
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![self.value()])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(self.value())
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.sum.capacity() * std::mem::size_of::<f64>()
    }
}
