//! The convert stage: any input layout and container to a whetstone dataset in any output layout.
//! Reading, mapping and writing overlap: the writer runs on its own thread behind a short queue.

use std::path::{Path, PathBuf};
use std::sync::mpsc::sync_channel;
use std::time::SystemTime;

use arrow::array::RecordBatch;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::format::FieldMap;
use crate::manifest::Manifest;
use crate::read::{DatasetReader, OnError, Progress, ReadOptions};
use crate::write::{DatasetWriter, OutputFormat, OutputReport, RejectedWriter};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ConvertOptions {
    /// Output layout; `None` takes it from the output's file name.
    pub format: Option<OutputFormat>,
    pub map: FieldMap,
    pub on_error: OnError,
}

/// Converts `input` (file, directory or glob) to `output`, writes the manifest beside it, and returns it.
/// `on_progress` is called once with the reader's progress handle (for a progress bar).
pub fn convert(
    input: &Path,
    output: &Path,
    opts: &ConvertOptions,
    on_progress: impl FnOnce(Progress),
) -> Result<Manifest> {
    let started = SystemTime::now();
    let format = match opts.format {
        Some(f) => f,
        None => OutputFormat::from_path(output)?,
    };
    let mut reader = DatasetReader::open(input, ReadOptions { map: opts.map.clone(), on_error: opts.on_error })?;
    if reader.inputs().iter().any(|p| same_file(p, output)) {
        return Err(Error::Usage(format!(
            "{}: the output would overwrite an input; choose another name",
            output.display()
        )));
    }
    on_progress(reader.progress());
    let (output_report, rejected_file) = write_stream(&mut reader, output, format)?;
    let mut rejected = reader.rejections().clone();
    rejected.file = rejected_file;
    let parameters = serde_json::json!({
        "input": input,
        "output": output,
        "format": format,
        "map": opts.map,
        "on_error": opts.on_error,
    });
    let manifest = Manifest::new("convert", parameters, reader.reports().to_vec(), output_report, rejected, started)?;
    manifest.write_beside(output)?;
    Ok(manifest)
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Writes every batch of `reader` to `path` on a writer thread, and the rows it rejected to
/// `<path>.rejected.jsonl` (returned when there are any). On any error the partial outputs are removed.
pub fn write_stream(
    reader: &mut DatasetReader,
    path: &Path,
    format: OutputFormat,
) -> Result<(OutputReport, Option<PathBuf>)> {
    let mut rejected = RejectedWriter::beside(path);
    let (tx, rx) = sync_channel::<RecordBatch>(4);
    let path_buf: PathBuf = path.to_path_buf();
    std::thread::scope(|scope| {
        let writer = scope.spawn(move || -> Result<Option<DatasetWriter>> {
            let mut writer: Option<DatasetWriter> = None;
            for batch in rx {
                let w = match &mut writer {
                    Some(w) => w,
                    None => writer.insert(DatasetWriter::create(&path_buf, format, batch.schema())?),
                };
                w.write(&batch)?;
            }
            Ok(writer)
        });
        let mut read_error = None;
        while let Some(batch) = reader.next() {
            if let Err(e) = rejected.write(&reader.take_rejected()) {
                read_error = Some(e);
                break;
            }
            match batch {
                Ok(b) => {
                    if tx.send(b).is_err() {
                        break; // the writer failed: its error is reported below
                    }
                }
                Err(e) => {
                    read_error = Some(e);
                    break;
                }
            }
        }
        drop(tx);
        if read_error.is_none() {
            read_error = rejected.write(&reader.take_rejected()).err();
        }
        let written = writer.join().map_err(|_| Error::Usage("internal error: the writer thread panicked".into()))?;
        if let Some(e) = read_error {
            return Err(e); // dropping the unfinished writer removes its temporary file
        }
        let writer = match written? {
            Some(w) => w,
            None => DatasetWriter::create(path, format, reader.schema())?,
        };
        Ok((writer.finish()?, rejected.finish()?))
    })
}
