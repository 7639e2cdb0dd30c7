//! Generation and scoring as dataset stages: `whet generate` and `whet score`.
//!
//! - [`GenerateStep`] writes N rows per prompt row: the sample as `response`, the prompt row's own response
//!   as `reference`, and `prompt_id`, `sample`, token counts, `response_token_ids` (as drawn), `finish_reason`,
//!   `log_likelihood` (of the drawn tokens), `generator` (model folder + content hash) and `sampling` (the
//!   parameters, JSON).
//! - [`ScoreStep`] adds the response's per-token log-probabilities given the prompt, their sum, mean and
//!   perplexity (one definition: [`crate::logprob`]).
//!
//! A prompt that leaves no room in the model's context is an error naming the row, or with `--on-error skip`
//! a dropped row with reason `prompt_too_long`.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{
    Array, ArrayRef, AsArray, Float32Builder, Float64Array, ListBuilder, RecordBatch, StringArray, UInt32Array,
    UInt32Builder,
};
use whetstone_datasets::schema::{self, columns};
use whetstone_datasets::stage::with_column;
use whetstone_datasets::{messages_at, Dropped, Message, OnError, Record, Rows, Stage};

use crate::engine::{Engine, Job, PromptMode, Sample};
use crate::error::{Error, Result};
use crate::logprob::SequenceScore;
use crate::prompt::{prompt_turns, row_prompt};
use crate::sampling::Sampling;

/// What `whet generate` measured: its manifest's `results`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GenerateResults {
    pub prompts: u64,
    pub samples: u64,
    pub prompt_tokens: u64,
    pub response_tokens: u64,
    pub seconds: f64,
    pub response_tokens_per_second: f64,
    /// Distinct sample texts, summed over prompts.
    pub distinct_samples: u64,
    pub prompts_with_all_samples_distinct: u64,
    pub samples_per_prompt: usize,
    pub finish_reasons: std::collections::BTreeMap<String, u64>,
    /// Where the decoding time went (zeros in a manifest written before it was recorded, which a resumed run
    /// reads).
    #[serde(default)]
    pub decode_times: crate::engine::DecodeTimes,
}

/// What `whet score` measured: its manifest's `results`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ScoreResults {
    pub rows_scored: u64,
    pub response_tokens: u64,
    /// `None` when no row was scored.
    pub median_mean_log_prob: Option<f64>,
    pub median_perplexity: Option<f64>,
    pub seconds: f64,
}

/// Samples and tokens finished so far, for a progress bar with a rate.
#[derive(Debug, Default)]
pub struct Counter {
    pub samples: AtomicU64,
    pub tokens: AtomicU64,
}

/// `whet generate`: N samples per prompt row.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct GenerateStep {
    pub sampling: Sampling,
    pub mode: PromptMode,
}

/// `whet score`: the log-likelihood of each row's response given its prompt.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ScoreStep {
    pub mode: PromptMode,
}

fn strings<'a>(batch: &'a RecordBatch, name: &str) -> &'a StringArray {
    batch.column_by_name(name).expect("core column").as_string()
}

/// A row that cannot be processed: with `OnError::Skip` dropped with `reason`, else an error naming the input,
/// the row (counted from 1 over the whole input), its id and the field.
#[allow(clippy::too_many_arguments)]
fn refuse_row(
    on_error: OnError,
    batch: &RecordBatch,
    row: usize,
    rows_before: u64,
    input: &Path,
    field: &str,
    reason: &str,
    detail: String,
) -> Result<Dropped> {
    match on_error {
        OnError::Skip => Ok(Dropped::new(batch, row, reason, detail)?),
        OnError::Fail => Err(Error::Invalid(format!(
            "{}: row {} (id {}), field {field}: {detail}; skip such rows with --on-error skip",
            input.display(),
            rows_before + row as u64 + 1,
            strings(batch, schema::ID).value(row)
        ))),
    }
}

/// Tokenizes every prompt of `batch`; rows whose prompt leaves fewer than `room` tokens of context are
/// dropped (with `OnError::Skip`) or an error naming the row.
struct Prompts {
    /// (row, tokens) of the rows kept.
    kept: Vec<(usize, Arc<Vec<u32>>)>,
    dropped: Vec<Dropped>,
}

fn tokenize_prompts(
    engine: &Engine,
    batch: &RecordBatch,
    mode: PromptMode,
    room: usize,
    on_error: OnError,
    input: &Path,
    rows_before: u64,
) -> Result<Prompts> {
    let context = engine.folder().context;
    let mut prompts = Prompts { kept: Vec::new(), dropped: Vec::new() };
    for row in 0..batch.num_rows() {
        let tokens = engine.prompt_tokens(&row_prompt(batch, row), mode)?;
        if tokens.len() + room <= context {
            prompts.kept.push((row, Arc::new(tokens)));
            continue;
        }
        let detail = format!(
            "the prompt is {} tokens; the model's context is {context}, which leaves no room for {room} more; \
             shorten it",
            tokens.len()
        );
        prompts.dropped.push(refuse_row(
            on_error,
            batch,
            row,
            rows_before,
            input,
            "prompt",
            "prompt_too_long",
            detail,
        )?);
    }
    Ok(prompts)
}

/// The rows of `batch` at `rows` (repeats allowed) with the core columns rebuilt from `records` and the
/// batch's other columns carried along.
fn rows_with_records(batch: &RecordBatch, rows: &[u32], records: &[Record]) -> Result<RecordBatch> {
    let taken = arrow::compute::take_record_batch(batch, &UInt32Array::from(rows.to_vec()))?;
    let mut builder = whetstone_datasets::record::RecordBatchBuilder::with_capacity(records.len());
    records.iter().for_each(|r| builder.push(r));
    let mut out = builder.finish();
    for (field, column) in taken.schema().fields().iter().zip(taken.columns()) {
        if !schema::CORE_COLUMNS.contains(&field.name().as_str()) {
            out = with_column(&out, field.as_ref().clone(), column.clone())?;
        }
    }
    Ok(out)
}

fn record_of(batch: &RecordBatch, row: usize) -> Record {
    let text = |name| {
        let column = strings(batch, name);
        column.is_valid(row).then(|| column.value(row).to_string())
    };
    Record {
        id: text(schema::ID).unwrap_or_default(),
        source: text(schema::SOURCE).unwrap_or_default(),
        prompt: text(schema::PROMPT).unwrap_or_default(),
        response: text(schema::RESPONSE),
        messages: messages_at(batch, row),
        meta: text(schema::META),
    }
}

/// A step run by a model ([`GenerateStep`], [`ScoreStep`], the judge) with the engine that runs it and the
/// counter a progress bar reads: the [`Stage`] that `run_stage` runs.
pub struct OnEngine<'a, S> {
    pub step: &'a S,
    pub engine: &'a Engine,
    pub counter: &'a Counter,
}

/// What every model-run stage's parameters say: the model folder, its hash, the prompt mode and the engine.
fn engine_parameters(engine: &Engine, mode: PromptMode) -> serde_json::Value {
    let folder = engine.folder();
    serde_json::json!({"model": folder.path, "model_format": folder.format(), "model_xxh3": folder.xxh3, "mode": mode,
        "engine": engine.options()})
}

fn column(name: &str, array: ArrayRef) -> (arrow::datatypes::Field, ArrayRef) {
    (columns::field(name, 0).expect("a stage column"), array)
}

impl GenerateStep {
    fn sample_rows(
        &self,
        batch: &RecordBatch,
        kept: &[(usize, Arc<Vec<u32>>)],
        samples: &[Sample],
        generator: &str,
        sampling_json: &str,
    ) -> Result<RecordBatch> {
        let n = self.sampling.n;
        let mut rows = Vec::with_capacity(samples.len());
        let mut records = Vec::with_capacity(samples.len());
        let mut prompt_ids = Vec::with_capacity(samples.len());
        for ((row, _), samples) in kept.iter().zip(samples.chunks(n)) {
            let prompt_row = record_of(batch, *row);
            for (k, sample) in samples.iter().enumerate() {
                rows.push(*row as u32);
                prompt_ids.push(prompt_row.id.clone());
                let messages = prompt_row.messages.as_ref().map(|turns| {
                    let mut turns = prompt_turns(turns.clone());
                    turns.push(Message { role: "assistant".into(), content: sample.text.clone() });
                    turns
                });
                records.push(Record {
                    id: format!("{}#{k}", prompt_row.id),
                    response: Some(sample.text.clone()),
                    messages,
                    ..prompt_row.clone()
                });
            }
        }
        let mut out = rows_with_records(batch, &rows, &records)?;
        let each = |f: &dyn Fn(&Sample) -> u32| UInt32Array::from_iter_values(samples.iter().map(f));
        let mut columns = vec![
            column(columns::PROMPT_ID, Arc::new(StringArray::from(prompt_ids))),
            column(
                columns::SAMPLE,
                Arc::new(UInt32Array::from_iter_values((0..samples.len()).map(|i| (i % n) as u32))),
            ),
            column(
                columns::PROMPT_TOKENS,
                Arc::new(UInt32Array::from_iter_values(
                    kept.iter().flat_map(|(_, t)| std::iter::repeat_n(t.len() as u32, n)),
                )),
            ),
            column(columns::RESPONSE_TOKENS, Arc::new(each(&|s| s.tokens.len() as u32))),
            column(columns::RESPONSE_TOKEN_IDS, {
                let mut ids = ListBuilder::new(UInt32Builder::new());
                samples.iter().for_each(|s| ids.append_value(s.tokens.iter().map(|&t| Some(t))));
                Arc::new(ids.finish())
            }),
            column(
                columns::FINISH_REASON,
                Arc::new(StringArray::from_iter_values(samples.iter().map(|s| s.finish_reason.as_str()))),
            ),
            column(
                columns::LOG_LIKELIHOOD,
                Arc::new(Float64Array::from_iter_values(samples.iter().map(|s| s.log_probs.iter().sum::<f64>()))),
            ),
            column(
                columns::GENERATOR,
                Arc::new(StringArray::from_iter_values(std::iter::repeat_n(generator, samples.len()))),
            ),
            column(
                columns::SAMPLING,
                Arc::new(StringArray::from_iter_values(std::iter::repeat_n(sampling_json, samples.len()))),
            ),
        ];
        if batch.column_by_name(columns::REFERENCE).is_none() {
            let gold = strings(batch, schema::RESPONSE);
            let taken = arrow::compute::take(gold, &UInt32Array::from(rows.clone()), None)?;
            columns.insert(0, column(columns::REFERENCE, taken));
        }
        for (field, array) in columns {
            out = with_column(&out, field, array)?;
        }
        Ok(out)
    }
}

/// What a generation run measured, for the manifest's results.
#[derive(Default)]
struct Totals {
    prompts: u64,
    samples: u64,
    prompt_tokens: u64,
    response_tokens: u64,
    all_distinct: u64,
    distinct: u64,
    finish: std::collections::BTreeMap<String, u64>,
}

impl Totals {
    fn add(&mut self, kept: &[(usize, Arc<Vec<u32>>)], samples: &[Sample], n: usize) {
        for ((_, prompt), group) in kept.iter().zip(samples.chunks(n)) {
            let texts: std::collections::HashSet<&str> = group.iter().map(|s| s.text.as_str()).collect();
            self.prompts += 1;
            self.distinct += texts.len() as u64;
            self.all_distinct += (texts.len() == group.len()) as u64;
            self.prompt_tokens += (prompt.len() * group.len()) as u64;
        }
        for s in samples {
            self.samples += 1;
            self.response_tokens += s.tokens.len() as u64;
            *self.finish.entry(s.finish_reason.clone()).or_default() += 1;
        }
    }

    fn results(&self, seconds: f64, n: usize, decode_times: crate::engine::DecodeTimes) -> GenerateResults {
        GenerateResults {
            prompts: self.prompts,
            samples: self.samples,
            prompt_tokens: self.prompt_tokens,
            response_tokens: self.response_tokens,
            seconds,
            response_tokens_per_second: self.response_tokens as f64 / seconds.max(1e-9),
            distinct_samples: self.distinct,
            prompts_with_all_samples_distinct: self.all_distinct,
            samples_per_prompt: n,
            finish_reasons: self.finish.clone(),
            decode_times,
        }
    }
}

impl Stage for OnEngine<'_, GenerateStep> {
    type Results = GenerateResults;
    type Error = Error;

    fn name(&self) -> &str {
        "generate"
    }

    fn parameters(&self) -> serde_json::Value {
        let mut parameters = engine_parameters(self.engine, self.step.mode);
        parameters["sampling"] = serde_json::to_value(&self.step.sampling).expect("serialisable");
        parameters
    }

    fn run(&self, rows: &mut Rows) -> Result<GenerateResults> {
        let (step, engine, counter, input) = (self.step, self.engine, self.counter, rows.input());
        step.sampling.check()?;
        let on_error = rows.read_options().on_error;
        let n = step.sampling.n;
        let generator = engine.folder().generator();
        let sampling_json = serde_json::to_string(&step.sampling)?;
        let mut totals = Totals::default();
        engine.take_decode_times();
        let started = Instant::now();
        let mut rows_before = 0u64;
        rows.expand(n as u64, |batch| {
            let prompts = tokenize_prompts(engine, &batch, step.mode, 1, on_error, input, rows_before)?;
            rows_before += batch.num_rows() as u64;
            let context = engine.folder().context;
            let ids = strings(&batch, schema::ID);
            let jobs: Vec<Job> = prompts
                .kept
                .iter()
                .flat_map(|(row, tokens)| {
                    (0..n as u32).map(move |k| Job {
                        prompt_tokens: tokens.clone(),
                        stream: step.sampling.stream(ids.value(*row), k),
                        max_tokens: step.sampling.max_tokens.min(context - tokens.len()),
                    })
                })
                .collect();
            let samples = engine.generate(jobs, &step.sampling, &|tokens| {
                counter.samples.fetch_add(1, Ordering::Relaxed);
                counter.tokens.fetch_add(tokens as u64, Ordering::Relaxed);
            })?;
            totals.add(&prompts.kept, &samples, n);
            let out = step.sample_rows(&batch, &prompts.kept, &samples, &generator, &sampling_json)?;
            Ok((out, prompts.dropped))
        })?;
        Ok(totals.results(started.elapsed().as_secs_f64(), n, engine.take_decode_times()))
    }
}

impl Stage for OnEngine<'_, ScoreStep> {
    type Results = ScoreResults;
    type Error = Error;

    fn name(&self) -> &str {
        "score"
    }

    fn parameters(&self) -> serde_json::Value {
        engine_parameters(self.engine, self.step.mode)
    }

    fn run(&self, rows: &mut Rows) -> Result<ScoreResults> {
        let (step, engine, counter, input) = (self.step, self.engine, self.counter, rows.input());
        let on_error = rows.read_options().on_error;
        let context = engine.folder().context;
        let mut rows_before = 0u64;
        let mut tokens_scored = 0u64;
        let (mut mean_log_probs, mut perplexities) = (Vec::new(), Vec::new());
        let started = Instant::now();
        rows.filter(|batch| {
            let responses = strings(&batch, schema::RESPONSE);
            let prompts = tokenize_prompts(engine, &batch, step.mode, 0, on_error, input, rows_before)?;
            let mut kept = Vec::with_capacity(prompts.kept.len());
            let mut dropped = prompts.dropped;
            let mut scores = Vec::new();
            let mut token_lists = ListBuilder::new(Float32Builder::new());
            let mut prompt_lengths = Vec::new();
            // A row whose response cannot be scored, refused with `reason`.
            let refuse = |row: usize, reason: &str, detail: String| {
                refuse_row(on_error, &batch, row, rows_before, input, "response", reason, detail)
            };
            for (row, prompt) in &prompts.kept {
                if responses.is_null(*row) {
                    dropped.push(refuse(*row, "no_response", "the row has no response to score".to_string())?);
                    continue;
                }
                let response = engine.response_tokens(responses.value(*row), step.mode)?;
                if prompt.len() + response.len() > context {
                    let detail = format!(
                        "prompt and response are {} + {} tokens; the model's context is {context}",
                        prompt.len(),
                        response.len()
                    );
                    dropped.push(refuse(*row, "too_long", detail)?);
                    continue;
                }
                let log_probs = engine.score(prompt, &response)?;
                token_lists.append_value(log_probs.iter().map(|&l| Some(l as f32)));
                let score = SequenceScore::of(&log_probs);
                mean_log_probs.push(score.mean_log_prob);
                perplexities.push(score.perplexity);
                scores.push(score);
                prompt_lengths.push(prompt.len() as u32);
                kept.push(*row as u32);
                tokens_scored += response.len() as u64;
                counter.samples.fetch_add(1, Ordering::Relaxed);
                counter.tokens.fetch_add((prompt.len() + response.len()) as u64, Ordering::Relaxed);
            }
            rows_before += batch.num_rows() as u64;
            let mut out = arrow::compute::take_record_batch(&batch, &UInt32Array::from(kept))?;
            let f64s = |f: fn(&SequenceScore) -> f64| Arc::new(Float64Array::from_iter_values(scores.iter().map(f)));
            for (field, array) in [
                column(columns::PROMPT_TOKENS, Arc::new(UInt32Array::from(prompt_lengths)) as ArrayRef),
                column(
                    columns::RESPONSE_TOKENS,
                    Arc::new(UInt32Array::from_iter_values(scores.iter().map(|s| s.tokens as u32))),
                ),
                column(columns::LOG_LIKELIHOOD, f64s(|s| s.log_likelihood)),
                column(columns::MEAN_LOG_PROB, f64s(|s| s.mean_log_prob)),
                column(columns::PERPLEXITY, f64s(|s| s.perplexity)),
                column(columns::TOKEN_LOG_PROBS, Arc::new(token_lists.finish())),
            ] {
                out = with_column(&out, field, array)?;
            }
            Ok((out, dropped))
        })?;
        Ok(ScoreResults {
            rows_scored: mean_log_probs.len() as u64,
            response_tokens: tokens_scored,
            median_mean_log_prob: median(&mut mean_log_probs),
            median_perplexity: median(&mut perplexities),
            seconds: started.elapsed().as_secs_f64(),
        })
    }
}

/// The middle value (the upper one of an even count); `None` when there are none.
fn median(values: &mut [f64]) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied()
}
