//! SQL over datasets, with Apache DataFusion: whetstone inputs are tables ([`tables`]), whetstone's functions
//! are UDFs ([`functions`]), and a result prints, streams, or becomes a dataset with a manifest (`whet sql`).
//!
//! ```no_run
//! use whetstone_curation::sql::SqlSession;
//! let mut sql = SqlSession::new()?;
//! sql.register("t0", "../shared/data/t0-templates".as_ref(), Default::default())?;
//! let result = sql.query("SELECT source, count(*) AS n FROM t0 GROUP BY source ORDER BY n DESC")?;
//! # Ok::<(), whetstone_curation::Error>(())
//! ```

#[cfg(feature = "cluster")]
pub mod cluster;
pub mod curate;
pub mod functions;
pub mod tables;

use std::path::Path;
use std::time::SystemTime;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::error::DataFusionError;
use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};
use futures::StreamExt;
use whetstone_datasets::{DatasetWriter, Manifest, OutputFormat, ReadOptions};

use crate::error::{Error, Result};
use tables::{Source, Table};

/// A query's rows, in memory.
#[derive(Debug, Clone)]
pub struct QueryResult {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
}

impl QueryResult {
    pub fn rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

/// The first rows of a result, for a person to read, and how many there were in all.
#[derive(Debug, Clone)]
pub struct QueryHead {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    pub total_rows: u64,
}

/// A DataFusion session with whetstone's functions, the tables registered so far, and the runtime that
/// drives it (callers stay synchronous, as every other stage is).
pub struct SqlSession {
    ctx: SessionContext,
    runtime: tokio::runtime::Runtime,
    tables: Vec<Table>,
    /// Queries run on a cluster, whose executors read the tables themselves.
    remote: bool,
    scheduler: Option<String>,
}

/// The session settings whetstone runs DataFusion with: text stays `Utf8` (as whetstone writes it) rather
/// than DataFusion's `Utf8View`, so results write and read like any other dataset.
pub fn session_config() -> SessionConfig {
    let mut config = SessionConfig::new().with_information_schema(true);
    let options = config.options_mut();
    options.execution.parquet.schema_force_view_types = false;
    options.sql_parser.map_string_types_to_utf8view = false;
    config
}

/// Registers whetstone's UDFs and UDAFs with a session.
pub fn register_functions(ctx: &SessionContext) {
    for f in functions::scalar_functions() {
        ctx.register_udf(f);
    }
    for f in functions::aggregate_functions() {
        ctx.register_udaf(f);
    }
}

impl SqlSession {
    /// A session that runs queries in this process.
    pub fn new() -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("whetstone-sql")
            .build()
            .map_err(|e| Error::Invalid(format!("cannot start the query runtime: {e}")))?;
        Self::with_runtime(SessionContext::new_with_config(session_config()), runtime, None)
    }

    /// A session around a context and the runtime it was made on (a cluster's remote context);
    /// whetstone's functions are registered on it.
    fn with_runtime(ctx: SessionContext, runtime: tokio::runtime::Runtime, scheduler: Option<String>) -> Result<Self> {
        register_functions(&ctx);
        Ok(SqlSession { ctx, runtime, tables: Vec::new(), remote: scheduler.is_some(), scheduler })
    }

    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    pub fn tables(&self) -> &[Table] {
        &self.tables
    }

    /// Registers a file, folder or glob as table `name`, read as whetstone reads it (see [`tables`]).
    pub fn register(&mut self, name: &str, spec: &Path, read: ReadOptions) -> Result<()> {
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(Error::Invalid(format!(
                "table name {name:?}: use letters, digits and _ (it is written unquoted in the query)"
            )));
        }
        if self.tables.iter().any(|t| t.name == name) {
            return Err(Error::Invalid(format!("table {name} is named twice")));
        }
        let (table, source) = tables::open(name, spec, &read)?;
        match source {
            Source::Parquet => self.register_parquet_files(name, &table.files)?,
            Source::Reader(_) if self.remote => {
                return Err(Error::Invalid(format!(
                    "table {name}: on a cluster a table is Parquet every executor reads at the same path; {} is not \
                     (whet convert {} {name}.parquet makes one)",
                    spec.display(),
                    spec.display()
                )));
            }
            Source::Reader(provider) => {
                self.ctx.register_table(name, provider).map_err(|e| self.explain(e))?;
            }
        }
        self.tables.push(table);
        Ok(())
    }

    /// Parquet files as table `name`, read by DataFusion as they are (every executor reads them on a cluster).
    fn register_parquet_files(&self, name: &str, files: &[std::path::PathBuf]) -> Result<()> {
        let paths: Vec<String> = files.iter().map(|f| absolute(f)).collect::<Result<_>>()?;
        let df = self
            .runtime
            .block_on(self.ctx.read_parquet(paths, ParquetReadOptions::default()))
            .map_err(|e| self.explain(e))?;
        self.ctx.register_table(name, df.into_view()).map_err(|e| self.explain(e))?;
        Ok(())
    }

    /// Registers a Parquet file of whetstone's own making (a step's rows staged for the cluster) under `name`
    /// for as long as `work` runs.
    pub(crate) fn with_parquet<T>(
        &mut self,
        name: &str,
        file: &Path,
        work: impl FnOnce(&Self) -> Result<T>,
    ) -> Result<T> {
        self.register_parquet_files(name, &[file.to_path_buf()])?;
        let result = work(self);
        self.ctx.deregister_table(name).map_err(|e| self.explain(e))?;
        result
    }

    /// Where queries run: `df://HOST:PORT` of a cluster's scheduler, or None for this process.
    pub fn scheduler(&self) -> Option<&str> {
        self.scheduler.as_deref()
    }

    /// Runs a query and keeps every row in memory.
    pub fn query(&self, sql: &str) -> Result<QueryResult> {
        self.runtime.block_on(async {
            let df = self.ctx.sql(sql).await.map_err(|e| self.explain(e))?;
            let schema = plain_schema(df.schema().as_arrow());
            let batches = df.collect().await.map_err(|e| self.explain(e))?;
            let batches = batches.into_iter().map(|b| plain(b, &schema)).collect::<Result<_>>()?;
            Ok(QueryResult { schema, batches })
        })
    }

    /// Runs a query, keeping its first `keep` rows and counting the rest.
    pub fn query_head(&self, sql: &str, keep: usize) -> Result<QueryHead> {
        self.runtime.block_on(async {
            let df = self.ctx.sql(sql).await.map_err(|e| self.explain(e))?;
            let schema = plain_schema(df.schema().as_arrow());
            let mut stream = df.execute_stream().await.map_err(|e| self.explain(e))?;
            let (mut batches, mut total) = (Vec::new(), 0u64);
            while let Some(batch) = stream.next().await {
                let batch = batch.map_err(|e| self.explain(e))?;
                let have = total.min(keep as u64) as usize;
                if have < keep {
                    let take = (keep - have).min(batch.num_rows());
                    batches.push(plain(batch.slice(0, take), &schema)?);
                }
                total += batch.num_rows() as u64;
            }
            Ok(QueryHead { schema, batches, total_rows: total })
        })
    }

    /// Runs a query and writes its rows as a dataset (format from the extension), atomically, with a manifest
    /// naming the query, the tables and the rows each gave. A failed query leaves nothing under `output`.
    pub fn write(&self, sql: &str, output: &Path) -> Result<Manifest> {
        let started = SystemTime::now();
        let report = self.runtime.block_on(async {
            let df = self.ctx.sql(sql).await.map_err(|e| self.explain(e))?;
            let schema = plain_schema(df.schema().as_arrow());
            let mut stream = df.execute_stream().await.map_err(|e| self.explain(e))?;
            let mut writer = DatasetWriter::create(output, OutputFormat::from_path(output)?, schema.clone())?;
            while let Some(batch) = stream.next().await {
                writer.write(&plain(batch.map_err(|e| self.explain(e))?, &schema)?)?;
            }
            Ok::<_, Error>(writer.finish()?)
        })?;
        let (mut inputs, mut rejected) = (Vec::new(), whetstone_datasets::read::Rejections::default());
        for t in &self.tables {
            let reads = t.reads.lock().expect("not poisoned").clone();
            inputs.extend(reads.inputs);
            rejected.merge(reads.rejected);
        }
        let tables: serde_json::Map<String, serde_json::Value> =
            self.tables.iter().map(|t| (t.name.clone(), t.spec.display().to_string().into())).collect();
        let manifest =
            Manifest::of_query(serde_json::json!({"query": sql, "tables": tables}), inputs, report, rejected, started);
        manifest.write_beside(output)?;
        Ok(manifest)
    }

    /// DataFusion's error as a person should read it: the root cause, without the engine's wrapping, and what
    /// to do about the usual mistakes.
    fn explain(&self, e: DataFusionError) -> Error {
        explain(e, &self.tables.iter().map(|t| t.name.as_str()).collect::<Vec<_>>())
    }
}

/// An error from DataFusion, in whetstone's words where the cause is a common mistake.
pub fn explain(e: DataFusionError, tables: &[&str]) -> Error {
    let root = e.find_root();
    if let DataFusionError::External(inner) = root {
        return Error::Sql(inner.to_string());
    }
    let text = root.strip_backtrace();
    let known = if tables.is_empty() {
        "no tables are registered: name them with --table NAME=PATH".to_string()
    } else {
        format!("the tables are {} (--table NAME=PATH adds one)", tables.join(", "))
    };
    if let DataFusionError::SQL(parse, _) = root {
        return Error::Sql(format!(
            "syntax error in the query: {}",
            parse.to_string().trim_start_matches("sql parser error: ")
        ));
    }
    if text.contains("table '") && text.contains("not found") {
        let name = text.split('\'').nth(1).unwrap_or("?").trim_start_matches("datafusion.public.");
        return Error::Sql(format!("no table named {name}: {known}"));
    }
    let message = text
        .trim_start_matches("Error during planning: ")
        .trim_start_matches("Execution error: ")
        .trim_start_matches("Schema error: ");
    Error::Sql(message.to_string())
}

/// A schema with `Utf8View`/`BinaryView` columns as `Utf8`/`Binary`: whetstone's writers and readers use those.
fn plain_schema(schema: &Schema) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Utf8View => f.as_ref().clone().with_data_type(DataType::Utf8),
            DataType::BinaryView => f.as_ref().clone().with_data_type(DataType::Binary),
            _ => f.as_ref().clone(),
        })
        .collect();
    std::sync::Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

fn plain(batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    if batch.schema().fields() == schema.fields() {
        return Ok(batch);
    }
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| arrow::compute::cast(c, f.data_type()))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

fn absolute(path: &Path) -> Result<String> {
    let abs = std::path::absolute(path).map_err(|e| whetstone_datasets::Error::io(path, e))?;
    abs.to_str().map(str::to_string).ok_or_else(|| Error::Invalid(format!("{}: the path is not UTF-8", path.display())))
}
