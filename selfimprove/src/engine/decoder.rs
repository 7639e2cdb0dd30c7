//! Batched decoding on the CPU with whetstone's own Llama: the trainer's forward pass (held to transformers'
//! and mistral.rs's logits by the parity tests) plus a KV cache.
//!
//! mistral.rs 0.8.1 decodes a CPU batch wrongly (see the engine's notes), so on the CPU it can only run one
//! sequence at a time, which leaves a 2-core machine mostly idle on a model of 135 M parameters. Here a batch of
//! sequences goes through each layer's matrix products together:
//! - jobs are sorted by prompt length and cut into batches, each prompt left-padded to the batch's longest
//!   (padding masked out, positions counted from each prompt's first token);
//! - one forward pass over the padded prompts (each distinct prompt once, its cache then copied to its samples)
//!   fills the cache, then one pass per new token;
//! - a sequence that ends leaves the batch, and its rows leave the cache.
//!
//! Tokens are drawn exactly as through mistral.rs: [`Sampling::choose`] on each sequence's logits, from its own
//! stream, at its position, so samples stay functions of (seed, prompt, sample index).

use std::sync::atomic::Ordering::Relaxed;

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};
use crate::model::ModelFolder;
use crate::sampling::Sampling;
use crate::train::llama::{Inputs, KvCache, Llama, LlamaConfig, Trainable};

use super::{Job, Sample, Timers};

/// Masked attention weight: large enough to vanish after the softmax, finite so a row of padding stays finite.
const MASKED: f32 = -1e9;

pub(crate) struct Decoder {
    model: Llama,
    tokenizer: tokenizers::Tokenizer,
    eos: Vec<u32>,
}

/// Why the decoder cannot run a folder (mistral.rs then does), or `None` when it can.
pub(crate) fn unsupported(folder: &ModelFolder) -> Option<String> {
    if folder.gguf.is_some() {
        return Some("a GGUF file runs on mistral.rs's quantised kernels".into());
    }
    match LlamaConfig::read(&folder.path) {
        Err(e) => Some(e.to_string()),
        // The decoder attends to the whole sequence; mistral.rs applies the window.
        Ok(c) if c.sliding_window.is_some_and(|w| w < c.context) => {
            Some(format!("its attention is a sliding window of {} tokens", c.sliding_window.unwrap_or(0)))
        }
        Ok(_) => None,
    }
}

/// One sequence being decoded.
struct Running {
    job: usize,
    /// Padding before the prompt in the batch.
    pad: usize,
    prompt: usize,
    sample: Sample,
}

impl Decoder {
    pub fn load(folder: &ModelFolder) -> Result<Self> {
        let model = Llama::load(&folder.path, &Device::Cpu, DType::F32, &Trainable::Frozen)?;
        Ok(Decoder { model, tokenizer: folder.tokenizer.clone(), eos: folder.eos.clone() })
    }

    /// The logits `[tokens, vocab]` of every position of `tokens`, from one forward pass.
    pub fn logits(&self, tokens: &[u32]) -> Result<Tensor> {
        let inputs = Inputs::causal(&[tokens.to_vec()], &Device::Cpu, DType::F32)?;
        Ok(self.model.forward(&inputs, false, None)?.squeeze(0)?)
    }

    /// Generates every job, `batch` sequences at a time; results in the jobs' order. `on_done(tokens)` as each
    /// sample ends.
    pub fn generate(
        &self,
        jobs: &[Job],
        sampling: &Sampling,
        batch: usize,
        times: &Timers,
        on_done: &(dyn Fn(usize) + Sync),
    ) -> Result<Vec<Sample>> {
        if jobs.iter().any(|j| j.prompt_tokens.is_empty()) {
            return Err(Error::Invalid("an empty prompt gives the first token nothing to follow".into()));
        }
        let mut order: Vec<usize> = (0..jobs.len()).collect();
        order.sort_by_key(|&j| jobs[j].prompt_tokens.len());
        let mut samples: Vec<Option<Sample>> = vec![None; jobs.len()];
        for chunk in order.chunks(batch.max(1)) {
            for (job, sample) in self.generate_batch(jobs, chunk, sampling, times, on_done)? {
                samples[job] = Some(sample);
            }
        }
        Ok(samples.into_iter().map(|s| s.expect("every job decoded")).collect())
    }

    fn generate_batch(
        &self,
        jobs: &[Job],
        chunk: &[usize],
        sampling: &Sampling,
        times: &Timers,
        on_done: &(dyn Fn(usize) + Sync),
    ) -> Result<Vec<(usize, Sample)>> {
        let longest = chunk.iter().map(|&j| jobs[j].prompt_tokens.len()).max().unwrap_or(0);
        let mut running: Vec<Running> = chunk
            .iter()
            .map(|&job| {
                let prompt = jobs[job].prompt_tokens.len();
                let sample =
                    Sample { text: String::new(), tokens: vec![], log_probs: vec![], finish_reason: String::new() };
                Running { job, pad: longest - prompt, prompt, sample }
            })
            .collect();

        // Each distinct prompt once (a prompt's samples are neighbours: jobs are sorted by length, stably), then its
        // cache rows copied out to its samples.
        let mut distinct: Vec<usize> = Vec::with_capacity(running.len());
        let mut owner: Vec<u32> = Vec::with_capacity(running.len());
        for (r, run) in running.iter().enumerate() {
            let same =
                distinct.last().is_some_and(|&d| jobs[running[d].job].prompt_tokens == jobs[run.job].prompt_tokens);
            if !same {
                distinct.push(r);
            }
            owner.push(distinct.len() as u32 - 1);
        }
        // The prompts, left-padded: a token attends to the prompt's tokens up to itself; padding to itself.
        let (u, t) = (distinct.len(), longest);
        let mut tokens = Vec::with_capacity(u * t);
        let mut positions = Vec::with_capacity(u * t);
        let mut mask = vec![MASKED; u * t * t];
        for (r, run) in distinct.iter().map(|&d| &running[d]).enumerate() {
            tokens.extend(std::iter::repeat_n(0, run.pad));
            tokens.extend(jobs[run.job].prompt_tokens.iter());
            for i in 0..t {
                positions.push(i.saturating_sub(run.pad) as u32);
                let first = if i < run.pad { i } else { run.pad };
                mask[(r * t + i) * t + first..=(r * t + i) * t + i].fill(0.0);
            }
        }
        let device = Device::Cpu;
        let prompts = Inputs {
            tokens: Tensor::from_vec(tokens, (u, t), &device)?,
            positions: Tensor::from_vec(positions, u * t, &device)?,
            mask: Tensor::from_vec(mask, (u, 1, t, t), &device)?,
        };
        let capacity = longest + chunk.iter().map(|&j| jobs[j].max_tokens).max().unwrap_or(0);
        let mut cache = KvCache::new(capacity);
        let started = std::time::Instant::now();
        let mut logits = self.model.forward_cached(&prompts, false, None, Some(&mut cache))?;
        if u < running.len() {
            cache.select(&owner)?;
            logits = logits.index_select(&Tensor::new(owner.as_slice(), &device)?, 0)?;
        }
        let mut computed = Timers::add(&times.forward, started);
        let mut done = Vec::with_capacity(running.len());
        loop {
            let rows = running.len();
            let logits_rows = logits.squeeze(1)?.to_vec2::<f32>()?;
            let mut drawing = Timers::add(&times.to_host, computed);
            let mut kept = Vec::with_capacity(running.len());
            for (row, (mut run, logits)) in std::mem::take(&mut running).into_iter().zip(logits_rows).enumerate() {
                let job = &jobs[run.job];
                let position = run.prompt + run.sample.tokens.len();
                let choice = sampling.choose(&logits, job.stream, position)?;
                drawing = Timers::add(&times.sampling, drawing);
                times.draws.fetch_add(1, Relaxed);
                run.sample.tokens.push(choice.token);
                run.sample.log_probs.push(choice.log_prob);
                match self.finished(&mut run.sample, sampling, job.max_tokens)? {
                    true => {
                        on_done(run.sample.tokens.len());
                        done.push((run.job, run.sample));
                    }
                    false => {
                        kept.push(row as u32);
                        running.push(run);
                    }
                }
            }
            if running.is_empty() {
                return Ok(done);
            }
            if kept.len() < rows {
                cache.select(&kept)?;
            }
            // The next step: each sequence's last token, at its position, attending to its own cached tokens.
            let (b, cached) = (running.len(), cache.len());
            let mut mask = vec![0f32; b * (cached + 1)];
            for (r, run) in running.iter().enumerate() {
                mask[r * (cached + 1)..r * (cached + 1) + run.pad].fill(MASKED);
            }
            let last: Vec<u32> = running.iter().map(|r| *r.sample.tokens.last().expect("a token")).collect();
            let positions: Vec<u32> = running.iter().map(|r| (r.prompt + r.sample.tokens.len() - 1) as u32).collect();
            let inputs = Inputs {
                tokens: Tensor::from_vec(last, (b, 1), &device)?,
                positions: Tensor::from_vec(positions, b, &device)?,
                mask: Tensor::from_vec(mask, (b, 1, 1, cached + 1), &device)?,
            };
            let started = std::time::Instant::now();
            logits = self.model.forward_cached(&inputs, false, None, Some(&mut cache))?;
            computed = Timers::add(&times.forward, started);
        }
    }

    /// Whether `sample` ends with its last token (an end-of-sequence token, a stop string, or the most tokens
    /// allowed); sets its text and finish reason when it does.
    fn finished(&self, sample: &mut Sample, sampling: &Sampling, max_tokens: usize) -> Result<bool> {
        let tokens = &sample.tokens;
        let ended = self.eos.contains(tokens.last().expect("a token"));
        if !ended && sampling.stop.is_empty() && tokens.len() < max_tokens {
            return Ok(false);
        }
        let shown = if ended { &tokens[..tokens.len() - 1] } else { &tokens[..] };
        let text = self.tokenizer.decode(shown, true).map_err(|e| Error::Tokenizer(e.to_string()))?;
        let (text, reason) = match sampling.stop.iter().filter_map(|s| text.find(s.as_str())).min() {
            _ if ended => (text, "stop"),
            Some(at) => (text[..at].to_string(), "stop"),
            None if tokens.len() >= max_tokens => (text, "length"),
            None => return Ok(false),
        };
        sample.text = text;
        sample.finish_reason = reason.into();
        Ok(true)
    }
}
