use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use whetstone::curation::sql::SqlSession;
use whetstone::notebook::thousands;

use crate::args::ReadArgs;
use crate::table::{batches_table, drops, CELL_CHARS};

/// Ask SQL questions of datasets (Apache DataFusion). Each --table is a file, folder or glob, read as every
/// stage reads it; whetstone's functions are there too: xxh3(text), minhash(text [, threshold [, shingle [,
/// seed [, bands, rows]]]]), embed(text, 'minilm'|'hashing'|FOLDER), ngram_overlap(text, 'EVAL-SET' [, n]),
/// nearest(embedding, 'CENTROIDS.parquet'), nearest_distance(…), filter_reason(prompt, response [,
/// 'FILTER-SETTINGS-JSON']), exact_key(prompt, response) and the aggregate vector_sum(embedding).
///
/// Example: whet sql "SELECT source, count(*) AS n FROM t0 GROUP BY source ORDER BY n DESC" --table t0=t0.parquet
#[derive(clap::Args)]
pub struct Args {
    query: String,
    /// A table for the query: NAME=PATH (repeat for several).
    #[arg(long = "table", value_name = "NAME=PATH")]
    tables: Vec<String>,
    /// Write the result as a dataset (.parquet, .arrow, .jsonl, …) with a manifest holding the query and
    /// the rows each table gave, instead of printing it.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Rows printed; the rest are counted.
    #[arg(short = 'n', long, default_value_t = 20)]
    rows: usize,
    /// Run the query on a cluster (`whet cluster`): df://HOST:PORT of its scheduler.
    #[arg(long, value_name = "df://HOST:PORT")]
    cluster: Option<String>,
    #[command(flatten)]
    read: ReadArgs,
}

#[cfg(feature = "cluster")]
fn session(cluster: Option<&str>) -> Result<SqlSession> {
    Ok(match cluster {
        Some(url) => SqlSession::connect(url)?,
        None => SqlSession::new()?,
    })
}

#[cfg(not(feature = "cluster"))]
fn session(cluster: Option<&str>) -> Result<SqlSession> {
    if cluster.is_some() {
        bail!("this whet was built without clusters: build it with `cargo build --release --features cluster`");
    }
    Ok(SqlSession::new()?)
}

pub fn run(a: Args) -> Result<()> {
    let mut sql = session(a.cluster.as_deref())?;
    for t in &a.tables {
        let Some((name, path)) = t.split_once('=') else {
            bail!("--table {t}: give NAME=PATH, e.g. --table t0=out/t0.parquet");
        };
        sql.register(name, path.as_ref(), a.read.options()?).with_context(|| format!("table {name}"))?;
    }
    match &a.out {
        Some(out) => {
            let m = sql.write(&a.query, out)?;
            drops(&m)?;
        }
        None => {
            let head = sql.query_head(&a.query, a.rows)?;
            outln!("{}", batches_table(&head.schema, &head.batches, CELL_CHARS)?);
            let shown: usize = head.batches.iter().map(|b| b.num_rows()).sum();
            if (shown as u64) < head.total_rows {
                outln!(
                    "{} rows; the first {shown} shown (-n N shows more, --out FILE keeps them all)",
                    thousands(head.total_rows)
                );
            } else {
                outln!("{} rows", thousands(head.total_rows));
            }
        }
    }
    Ok(())
}
