//! JSON text (JSONL, JSON arrays, gzip): read by a background thread in blocks of whole lines, parsed in
//! parallel with rayon into canonical record batches.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::mpsc::SyncSender;
use std::sync::Arc;

use arrow::array::RecordBatch;
use rayon::prelude::*;
use serde_json::Value;

use super::inputs::HashingReader;
use crate::error::{Error, Position, RowError};
use crate::format::Roles;
use crate::record::{records_from_json, RecordBatchBuilder, RowContext};

/// What the JSON reading thread sends: blocks of whole lines, or a whole JSON array, then the file's hash.
pub(super) enum Piece {
    Lines { data: Vec<u8>, first_line: u64 },
    Array(Vec<u8>),
    End { bytes: u64, xxh3_128: String },
    Failed(Error),
}

const BLOCK: usize = 8 << 20;

pub(super) fn read_json_file(path: PathBuf, gzip: bool, progress: Arc<AtomicU64>, tx: SyncSender<Piece>) {
    let fail = |tx: &SyncSender<Piece>, e: Error| {
        let _ = tx.send(Piece::Failed(e));
    };
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) => return fail(&tx, Error::io(&path, e)),
    };
    let hashing = HashingReader { inner: file, hasher: Default::default(), bytes: 0, progress };
    enum Decoded<R: Read> {
        Plain(R),
        Gzip(Box<flate2::read::MultiGzDecoder<BufReader<R>>>),
    }
    let mut reader = if gzip {
        Decoded::Gzip(Box::new(flate2::read::MultiGzDecoder::new(BufReader::with_capacity(1 << 20, hashing))))
    } else {
        Decoded::Plain(hashing)
    };
    let mut next_line = 1u64;
    let mut carry = Vec::new();
    let mut first = true;
    loop {
        let mut buf = std::mem::take(&mut carry);
        let want = (BLOCK.saturating_sub(buf.len()) as u64).max(1 << 16);
        let got = match &mut reader {
            Decoded::Plain(r) => r.take(want).read_to_end(&mut buf),
            Decoded::Gzip(r) => r.take(want).read_to_end(&mut buf),
        };
        let n = match got {
            Ok(n) => n,
            Err(e) if gzip => {
                // read_to_end keeps what it read before the error: name the line the damage starts in.
                let line = next_line + memchr::memchr_iter(b'\n', &buf).count() as u64;
                return fail(&tx, Error::file(&path, format!("corrupt gzip data at line {line}: {e}")));
            }
            Err(e) => return fail(&tx, Error::io(&path, e)),
        };
        let eof = n == 0;
        if first {
            if buf.starts_with(b"\xEF\xBB\xBF") {
                buf.drain(..3);
            }
            match buf.iter().find(|b| !b.is_ascii_whitespace()) {
                None if !eof => {
                    carry = buf;
                    continue;
                }
                Some(b'[') => {
                    let read = match &mut reader {
                        Decoded::Plain(r) => r.read_to_end(&mut buf),
                        Decoded::Gzip(r) => r.read_to_end(&mut buf),
                    };
                    if let Err(e) = read {
                        return fail(&tx, Error::file(&path, format!("read failed: {e}")));
                    }
                    if tx.send(Piece::Array(buf)).is_err() {
                        return;
                    }
                    break;
                }
                _ => first = false,
            }
        }
        if eof {
            if !buf.is_empty() && tx.send(Piece::Lines { data: buf, first_line: next_line }).is_err() {
                return;
            }
            break;
        }
        let Some(last_nl) = memchr::memrchr(b'\n', &buf) else {
            carry = buf; // one line longer than a block: keep reading
            continue;
        };
        carry = buf.split_off(last_nl + 1);
        let lines = memchr::memchr_iter(b'\n', &buf).count() as u64;
        if tx.send(Piece::Lines { data: buf, first_line: next_line }).is_err() {
            return;
        }
        next_line += lines;
    }
    let hashing = match reader {
        Decoded::Plain(r) => r,
        Decoded::Gzip(r) => r.into_inner().into_inner(),
    };
    let _ = tx.send(Piece::End { bytes: hashing.bytes, xxh3_128: format!("{:032x}", hashing.hasher.digest128()) });
}

/// One source row as JSON text (not yet checked to be UTF-8) with its position.
pub(super) type RowText<'a> = (Position, &'a [u8]);

/// Parsed rows: batches with the errors of the rows left out of them, in input order.
pub(super) type Parsed = Vec<(RecordBatch, Vec<RowError>)>;

/// Blocks parsed at once; each is at most [`BLOCK`] bytes.
pub(super) const IN_FLIGHT: usize = 3;

/// The non-blank lines of a block, numbered.
pub(super) fn split_lines(data: &[u8], first_line: u64) -> Vec<RowText<'_>> {
    let mut texts = Vec::new();
    let mut start = 0;
    for (line, end) in (first_line..).zip(memchr::memchr_iter(b'\n', data).chain(std::iter::once(data.len()))) {
        let raw = &data[start..end.max(start)];
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        if !raw.iter().all(u8::is_ascii_whitespace) {
            texts.push((Position::Line(line), raw));
        }
        start = end + 1;
    }
    texts
}

/// Parses rows and maps them by `roles`, in parallel chunks; a row that fails becomes a [`RowError`].
pub(super) fn parse_rows(texts: &[RowText], roles: Option<&Roles>, path: &Path, stem: &str) -> Parsed {
    const ROWS_PER_TASK: usize = 4096;
    texts
        .par_chunks(ROWS_PER_TASK)
        .map(|chunk| {
            let mut builder = RecordBatchBuilder::with_capacity(chunk.len());
            let mut errors = Vec::new();
            let mut records = Vec::with_capacity(1);
            for (position, text) in chunk {
                let cx = RowContext { path, position: *position, stem };
                let error = |kind, message| RowError {
                    path: path.to_path_buf(),
                    position: *position,
                    field: None,
                    kind,
                    message,
                    row: None,
                };
                let row = std::str::from_utf8(text)
                    .map_err(|e| {
                        error("invalid_utf8", format!("invalid UTF-8 at byte {} of the row", e.valid_up_to() + 1))
                    })
                    .and_then(|t| serde_json::from_str::<Value>(t).map_err(|e| error("invalid_json", json_error(&e))))
                    .and_then(|value| match roles {
                        Some(roles) => records_from_json(value, roles, &cx, &mut records),
                        None => Err(error("wrong_type", "expected a JSON object per row".into())),
                    });
                match row {
                    Ok(()) => records.drain(..).for_each(|r| builder.push(&r)),
                    Err(mut e) => {
                        e.row = Some(String::from_utf8_lossy(text).into_owned());
                        errors.push(e)
                    }
                }
            }
            (builder.finish(), errors)
        })
        .collect()
}

fn json_error(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let what = text.rsplit_once(" at line ").map(|(w, _)| w).unwrap_or(&text);
    format!("invalid JSON at column {}: {what}", e.column())
}
