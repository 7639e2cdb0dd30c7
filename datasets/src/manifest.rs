//! The manifest beside every written dataset: which stage made it, with what parameters, from which inputs
//! (paths and content hashes), and where every input row went. Rows in = rows out + rows rejected, always.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::read::{InputReport, Rejections};
use crate::write::{manifest_path, write_atomic, OutputReport};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowCounts {
    #[serde(rename = "in")]
    pub rows_in: u64,
    #[serde(rename = "out")]
    pub rows_out: u64,
    #[serde(rename = "rejected")]
    pub rows_rejected: u64,
    /// Rows written for each input row kept: 1, except where a stage writes several rows per input row
    /// (generation: N samples per prompt). Then rows in = rows out / per_row + rows rejected.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub per_row: u64,
    /// Rows out are a SQL query's result (grouped, joined, computed), not the rows in less the rejected
    /// ones, so rows in = rows out + rows rejected does not apply; `rejected` counts rows that could not be
    /// read. The query is in the parameters.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub query: bool,
}

fn one() -> u64 {
    1
}

fn is_one(n: &u64) -> bool {
    *n == 1
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// whetstone version that wrote it.
    pub whetstone: String,
    pub stage: String,
    pub parameters: serde_json::Value,
    pub inputs: Vec<InputReport>,
    pub output: OutputReport,
    pub rows: RowCounts,
    /// Rejected rows by reason, with the first messages.
    pub rejected: Rejections,
    /// What the stage found or measured (k-means inertia, selection coverage, …).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub results: serde_json::Value,
    pub started_unix: f64,
    pub seconds: f64,
}

impl Manifest {
    /// Builds the manifest of a stage that writes `per_row` rows for each input row it keeps (1 but for
    /// generation), and checks that rows in = rows out / per_row + rows rejected.
    pub fn new(
        stage: &str,
        parameters: serde_json::Value,
        inputs: Vec<InputReport>,
        output: OutputReport,
        rejected: Rejections,
        started: SystemTime,
        per_row: u64,
    ) -> Result<Self> {
        let rows = RowCounts {
            rows_in: inputs.iter().map(|i| i.rows_in).sum(),
            rows_out: output.rows,
            rows_rejected: rejected.total(),
            per_row,
            query: false,
        };
        if per_row == 0
            || !rows.rows_out.is_multiple_of(per_row)
            || rows.rows_in != rows.rows_out / per_row + rows.rows_rejected
        {
            return Err(Error::Internal(format!(
                "{} rows in but {} out ({per_row} per row kept) and {} rejected",
                rows.rows_in, rows.rows_out, rows.rows_rejected
            )));
        }
        Ok(Manifest::assemble(stage, parameters, inputs, output, rows, rejected, started))
    }

    fn assemble(
        stage: &str,
        parameters: serde_json::Value,
        inputs: Vec<InputReport>,
        output: OutputReport,
        rows: RowCounts,
        rejected: Rejections,
        started: SystemTime,
    ) -> Self {
        Manifest {
            whetstone: env!("CARGO_PKG_VERSION").to_string(),
            stage: stage.to_string(),
            parameters,
            inputs,
            output,
            rows,
            rejected,
            results: serde_json::Value::Null,
            started_unix: started.duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0),
            seconds: started.elapsed().map(|d| d.as_secs_f64()).unwrap_or(0.0),
        }
    }

    /// The manifest of a SQL query's result: rows in are the rows its tables gave, rows out the result's.
    pub fn of_query(
        parameters: serde_json::Value,
        inputs: Vec<InputReport>,
        output: OutputReport,
        rejected: Rejections,
        started: SystemTime,
    ) -> Self {
        let rows = RowCounts {
            rows_in: inputs.iter().map(|i| i.rows_in).sum(),
            rows_out: output.rows,
            rows_rejected: rejected.total(),
            per_row: 1,
            query: true,
        };
        Manifest::assemble("sql", parameters, inputs, output, rows, rejected, started)
    }

    /// What the stage found, as the type it wrote them with (`manifest.results::<RewardResults>()?`): a
    /// renamed or missing field is an error here, never a silent zero.
    pub fn results<T: DeserializeOwned>(&self) -> Result<T> {
        T::deserialize(&self.results).map_err(|e| {
            Error::Usage(format!(
                "the results of this {} manifest (whetstone {}) are not what this whetstone reads: {e}",
                self.stage, self.whetstone
            ))
        })
    }

    /// Records what the stage found.
    pub fn set_results(&mut self, results: &impl Serialize) {
        self.results = serde_json::to_value(results).expect("stage results serialise to JSON");
    }

    /// Writes `<data>.manifest.json` beside the dataset, atomically.
    pub fn write_beside(&self, data: &Path) -> Result<()> {
        let path = manifest_path(data);
        let mut text = serde_json::to_vec_pretty(self)?;
        text.push(b'\n');
        write_atomic(&path, &text)
    }

    /// Reads the manifest beside a dataset file.
    pub fn read_beside(data: &Path) -> Result<Self> {
        Self::read(&manifest_path(data))
    }

    /// Reads a manifest file.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        serde_json::from_slice(&text).map_err(|e| Error::file(path, format!("not a whetstone manifest: {e}")))
    }
}
