//! The engine: a model folder loaded in mistral.rs, for generation and scoring, behind a blocking API that
//! Rust code, `whet` and notebooks call the same way.
//!
//! - Generation sends every (prompt, sample) as its own request, all in flight at once up to the engine's batch
//!   size (mistral.rs batches them). Each request carries a logits processor that draws its tokens from
//!   whetstone's seeded stream ([`crate::sampling`]) and records each token's log-probability; mistral.rs then
//!   only takes the one token left standing.
//! - Scoring asks for the raw logits of prompt + response in one forward pass (no generation, prefix cache off,
//!   so every position is computed) and applies [`crate::logprob`].
//!
//! On the CPU, Llama-family folders in f32 run on whetstone's own batched decoder ([`decoder`]). mistral.rs
//! 0.8.1's CPU attention for a decode step (`flash_attn_cpu_single_q` in mistralrs-core's
//! attention/backends/cpu.rs) keeps its per-tile scratch without a batch dimension, so in a batch of several
//! sequences every one gets the attention of the last: measured here, batched samples' log-probabilities were up
//! to 0.09 away from a forward pass over the same tokens, and exact (1e-7) one at a time. So where mistral.rs
//! runs on the CPU (GGUF files, bf16) it decodes one sequence at a time. The CUDA path does not use that code.
//!
//! Reproducible: the samples of a seed (they depend on the seed, the prompt id, the sample index and the
//! logits only), greedy output, scores. Not promised: bit-equal logits when the batch around a request
//! changes on a GPU, where kernels may reduce in another order; a sample drawn exactly at a boundary between
//! two tokens can then differ.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use mistralrs::{
    Constraint, CustomLogitsProcessor, GgufModelBuilder, MemoryGpuConfig, Model, ModelDType, NormalRequest,
    PagedAttentionMetaBuilder, Request, RequestMessage, Response, SamplingParams, StopTokens, Tensor, TextModelBuilder,
};

use crate::error::{Error, Result};
use crate::model::ModelFolder;
use crate::sampling::Sampling;

mod decoder;
pub mod generate;

pub use crate::prompt::{Prompt, PromptMode};

/// Where and how a model runs.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct EngineOptions {
    /// Run on the CPU even when whetstone was built with `cuda` and a GPU is present.
    pub cpu: bool,
    /// Sequences decoded together (mistral.rs on the CPU: 1, see above).
    pub max_batch: usize,
    /// Number format of the weights and activations: `f32`, `bf16`, `f16`, or `auto` (f32 on the CPU, where
    /// mistral.rs would pick bf16; bf16 on GPUs that have it).
    pub dtype: String,
    /// Let mistral.rs log what it does (loading, device, memory) to stderr.
    pub log: bool,
    /// Which engine runs the model ([`Backend`]); after loading, the one that does.
    pub backend: Backend,
    /// Paged attention (GPU only): the KV cache in fixed blocks. Off by default: mistral.rs 0.8.1's paged
    /// scheduler runs only the sequences of the shortest length at each step and preempts the others,
    /// freeing their cache (paged_attention/scheduler.rs, `bucket_and_preempt_sequences`), so prompts of
    /// different lengths are recomputed again and again. Its default scheduler lets the others wait instead.
    pub paged_attention: bool,
}

impl Default for EngineOptions {
    /// The CPU's options in a build without `cuda`, the GPU's in one with it.
    fn default() -> Self {
        Self::on(!cfg!(feature = "cuda"))
    }
}

/// What runs a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    /// whetstone's decoder on the CPU where it can run the model (a Llama or Qwen2 folder, f32), else mistral.rs.
    #[default]
    Auto,
    /// whetstone's own batched decoder ([`decoder`]): CPU, f32, Llama-family folders.
    Whetstone,
    /// mistral.rs: GPUs, GGUF files, bf16/f16, other architectures; on the CPU one sequence at a time.
    #[serde(rename = "mistral.rs")]
    MistralRs,
}

impl Backend {
    pub const NAMES: [&'static str; 3] = ["auto", "whetstone", "mistral.rs"];
}

impl EngineOptions {
    pub const DTYPES: [&'static str; 4] = ["auto", "f32", "bf16", "f16"];

    /// The defaults on the CPU (`cpu`) or the GPU: the batch a device decodes well.
    pub fn on(cpu: bool) -> Self {
        EngineOptions {
            cpu,
            max_batch: if cpu { 64 } else { 256 },
            dtype: "auto".into(),
            log: false,
            backend: Backend::Auto,
            paged_attention: false,
        }
    }

    fn model_dtype(&self) -> Result<ModelDType> {
        Ok(match self.dtype.as_str() {
            // bf16 on the CPU rounds a sequence's logits differently with every batch around it.
            "auto" if self.cpu => ModelDType::F32,
            "auto" => ModelDType::Auto,
            "f32" => ModelDType::F32,
            "bf16" => ModelDType::BF16,
            "f16" => ModelDType::F16,
            other => return Err(Error::Invalid(format!("unknown dtype {other:?}: use auto, f32, bf16 or f16"))),
        })
    }
}

/// One sample asked for: the prompt's tokens, the random stream and the most new tokens.
#[derive(Debug, Clone)]
pub struct Job {
    pub prompt_tokens: Arc<Vec<u32>>,
    pub stream: u64,
    pub max_tokens: usize,
}

/// One sample as generated.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub text: String,
    /// The tokens drawn, end-of-sequence token included when the model ended the response.
    pub tokens: Vec<u32>,
    /// Natural-log probability of each drawn token under the model ([`crate::logprob`]).
    pub log_probs: Vec<f64>,
    /// `stop` (end-of-sequence token or stop string), `length` (max tokens or the context's end).
    pub finish_reason: String,
}

/// A loaded model.
pub struct Engine {
    folder: ModelFolder,
    options: EngineOptions,
    prompts: crate::prompt::PromptTokenizer,
    loaded: Loaded,
    times: Arc<Timers>,
}

/// Where decoding time went, as far as whetstone sees it: seconds summed over the threads doing it (mistral.rs
/// draws several sequences' tokens at once), since the last [`Engine::take_decode_times`].
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DecodeTimes {
    /// Forward passes (whetstone's decoder; inside mistral.rs they are not seen).
    pub forward_seconds: f64,
    /// Copying each step's logits to the host.
    pub logits_to_host_seconds: f64,
    /// Drawing tokens from them ([`Sampling::choose`]).
    pub sampling_seconds: f64,
    /// Handing mistral.rs back a logits row that leaves only the drawn token (a copy to the device).
    pub to_device_seconds: f64,
    /// Tokens drawn.
    pub draws: u64,
}

/// The counters behind [`DecodeTimes`], in nanoseconds.
#[derive(Debug, Default)]
pub(crate) struct Timers {
    forward: AtomicU64,
    to_host: AtomicU64,
    sampling: AtomicU64,
    to_device: AtomicU64,
    draws: AtomicU64,
}

impl Timers {
    /// Adds the time since `since` to `counter`, and returns now.
    pub(crate) fn add(counter: &AtomicU64, since: std::time::Instant) -> std::time::Instant {
        let now = std::time::Instant::now();
        counter.fetch_add((now - since).as_nanos() as u64, Relaxed);
        now
    }

    fn take(&self) -> DecodeTimes {
        let seconds = |c: &AtomicU64| c.swap(0, Relaxed) as f64 * 1e-9;
        DecodeTimes {
            forward_seconds: seconds(&self.forward),
            logits_to_host_seconds: seconds(&self.to_host),
            sampling_seconds: seconds(&self.sampling),
            to_device_seconds: seconds(&self.to_device),
            draws: self.draws.swap(0, Relaxed),
        }
    }
}

/// The model in the engine that runs it.
enum Loaded {
    Whetstone(Box<decoder::Decoder>),
    MistralRs {
        model: Model,
        /// The folder as mistral.rs reads it, where config.json needed another layout
        /// ([`ModelFolder::engine_view`]).
        _view: Option<tempfile::TempDir>,
        // Declared last: dropped after the model, whose tasks run on it.
        runtime: tokio::runtime::Runtime,
    },
}

fn engine_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Engine(format!("{what}: {e}"))
}

/// A response of a kind the request does not ask for, named.
fn unexpected(what: &str, response: &Response) -> Error {
    let kind = match response {
        Response::Done(_) | Response::Chunk(_) | Response::ModelError(..) => "chat",
        Response::CompletionDone(_) | Response::CompletionChunk(_) | Response::CompletionModelError(..) => "completion",
        Response::Raw { .. } => "raw logits",
        Response::Embeddings { .. } => "embeddings",
        Response::ImageGeneration(_) | Response::Speech { .. } => "image or speech",
        Response::InternalError(_) | Response::ValidationError(_) => "error",
    };
    engine_error(what, format!("mistral.rs answered with a {kind} response; please report this"))
}

impl Loaded {
    /// The model in mistral.rs: a GGUF file through its GGUF loader, a folder (through a view where its config
    /// needs the older layout) through its text-model loader.
    fn mistral_rs(folder: &ModelFolder, options: &mut EngineOptions) -> Result<Self> {
        if options.cpu {
            // mistral.rs 0.8.1 decodes a CPU batch wrongly (see above).
            options.max_batch = 1;
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|e| engine_error("starting the async runtime", e))?;
        // The same settings for either builder (they share no trait).
        macro_rules! configured {
            ($builder:expr) => {{
                // The prefix cache is off: scoring needs the logits of every position, not a cached prefix's.
                let mut builder = $builder.with_prefix_cache_n(None).with_max_num_seqs(options.max_batch);
                if options.log {
                    builder = builder.with_logging();
                }
                if options.cpu {
                    builder = builder.with_force_cpu();
                } else if options.paged_attention {
                    // The KV cache of a whole batch in fixed blocks, in most of the GPU's memory.
                    let paged = PagedAttentionMetaBuilder::default()
                        .with_gpu_memory(MemoryGpuConfig::Utilization(0.85))
                        .build()
                        .map_err(|e| engine_error("paged attention", e))?;
                    builder = builder.with_paged_attn(paged);
                }
                runtime.block_on(builder.build())
            }};
        }
        let mut view = None;
        let built = if folder.gguf.is_some() {
            if options.dtype != "auto" {
                return Err(Error::Invalid(format!(
                    "{}: a GGUF file runs in its own quantised types; leave the dtype at auto (or import it with \
                     `whet model import` to run it as {})",
                    folder.path.display(),
                    options.dtype
                )));
            }
            let (dir, name) = match (folder.path.parent(), folder.path.file_name()) {
                (Some(dir), Some(name)) => (dir.to_string_lossy(), name.to_string_lossy()),
                _ => return Err(Error::Invalid(format!("{}: not a file name", folder.path.display()))),
            };
            let dir = if dir.is_empty() { ".".into() } else { dir };
            // The tokenizer whetstone built from the file's metadata, so decoding matches the prompts' encoding.
            let tokenizer = folder.files.join("tokenizer.json").to_string_lossy().to_string();
            configured!(GgufModelBuilder::new(dir, vec![name]).with_tokenizer_json(tokenizer))
        } else {
            view = folder.engine_view()?;
            let path = view.as_ref().map_or(folder.path.as_path(), |v| v.path()).to_string_lossy().to_string();
            configured!(TextModelBuilder::new(&path).with_dtype(options.model_dtype()?))
        };
        let model = built
            .map_err(|e| engine_error(&format!("{}: mistral.rs could not load the model", folder.path.display()), e))?;
        Ok(Loaded::MistralRs { model, _view: view, runtime })
    }
}

impl Engine {
    /// Loads a checked model: on whetstone's decoder or in mistral.rs ([`Backend`]).
    pub fn load(folder: ModelFolder, mut options: EngineOptions) -> Result<Self> {
        if options.max_batch == 0 {
            return Err(Error::Invalid("the engine's batch size must be at least 1".into()));
        }
        if options.paged_attention && options.cpu {
            return Err(Error::Invalid("paged attention runs on a GPU only; leave it off on the CPU".into()));
        }
        if !options.cpu && !cfg!(feature = "cuda") {
            return Err(Error::Invalid(
                "this whetstone was built without the `cuda` feature, so it runs on the CPU only; rebuild with \
                 `--features cuda` (see scripts/build-cuda.sh) or run on the CPU"
                    .into(),
            ));
        }
        let whetstone_can = match (options.cpu, matches!(options.dtype.as_str(), "auto" | "f32")) {
            (false, _) => Err("whetstone's decoder runs on the CPU only".to_string()),
            (true, false) => Err(format!("whetstone's decoder runs in f32, not {}", options.dtype)),
            (true, true) => decoder::unsupported(&folder).map_or(Ok(()), Err),
        };
        options.backend = match (options.backend, whetstone_can) {
            (Backend::Auto | Backend::Whetstone, Ok(())) => Backend::Whetstone,
            (Backend::Whetstone, Err(why)) => {
                return Err(Error::Invalid(format!("{}: {why}; use the mistral.rs engine", folder.path.display())))
            }
            (_, _) => Backend::MistralRs,
        };
        let loaded = match options.backend {
            Backend::Whetstone => Loaded::Whetstone(Box::new(decoder::Decoder::load(&folder)?)),
            _ => Loaded::mistral_rs(&folder, &mut options)?,
        };
        let prompts = crate::prompt::PromptTokenizer::new(&folder)?;
        Ok(Engine { folder, options, prompts, loaded, times: Default::default() })
    }

    pub fn folder(&self) -> &ModelFolder {
        &self.folder
    }

    pub fn options(&self) -> &EngineOptions {
        &self.options
    }

    /// Where decoding time went since the last call.
    pub fn take_decode_times(&self) -> DecodeTimes {
        self.times.take()
    }

    /// The tokens the model is given for `prompt` ([`crate::prompt`]: the chat template rendered as mistral.rs
    /// renders a chat request, or the text as it is); the trainer tokenizes its examples the same way.
    pub fn prompt_tokens(&self, prompt: &Prompt, mode: PromptMode) -> Result<Vec<u32>> {
        self.prompts.prompt_tokens(prompt, mode)
    }

    /// The tokens of a response as scored after its prompt: the text without special tokens, then the
    /// model's end-of-sequence token (a response is scored as "this text, then stop").
    pub fn response_tokens(&self, response: &str, mode: PromptMode) -> Result<Vec<u32>> {
        self.prompts.response_tokens(response, mode)
    }

    /// The tokens of text that continues a response begun in a prompt (a roll-out from a prefix of an answer).
    pub fn continuation_tokens(&self, text: &str) -> Result<Vec<u32>> {
        self.prompts.continuation_tokens(text)
    }

    /// Generates every job, `max_batch` in flight at a time (mistral.rs batches whatever is in flight:
    /// its own limit on sequences did not hold them back); results come back in the jobs' order.
    /// `on_done(tokens)` is called as each sample finishes, for progress.
    pub fn generate(
        &self,
        jobs: Vec<Job>,
        sampling: &Sampling,
        on_done: &(dyn Fn(usize) + Sync),
    ) -> Result<Vec<Sample>> {
        sampling.check()?;
        let (model, runtime) = match &self.loaded {
            Loaded::Whetstone(decoder) => {
                return decoder.generate(&jobs, sampling, self.options.max_batch, &self.times, on_done)
            }
            Loaded::MistralRs { model, runtime, .. } => (model, runtime),
        };
        let sampling = Arc::new(sampling.clone());
        let sender = model.inner().get_sender(None).map_err(|e| engine_error("the engine", e))?;
        let requests = futures::stream::iter(jobs).map(|job| {
            let sender = sender.clone();
            let sampling = sampling.clone();
            let times = self.times.clone();
            async move {
                let draw = Arc::new(SeededDraw {
                    sampling: sampling.clone(),
                    stream: job.stream,
                    drawn: Mutex::default(),
                    times: times.clone(),
                });
                let (tx, mut rx) = tokio::sync::mpsc::channel(1);
                let request = completion_request(
                    job.prompt_tokens.to_vec(),
                    SamplingParams {
                        max_len: Some(job.max_tokens),
                        stop_toks: (!sampling.stop.is_empty()).then(|| StopTokens::Seqs(sampling.stop.clone())),
                        // The draw leaves one token possible; temperature 0 makes mistral.rs take it by argmax
                        // rather than by its softmax, partial sort and weighted draw (its default is 1).
                        temperature: Some(0.0),
                        ..SamplingParams::deterministic()
                    },
                    tx,
                    Some(draw.clone() as Arc<dyn CustomLogitsProcessor>),
                );
                sender.send(request).await.map_err(|e| engine_error("the engine", e))?;
                let response =
                    rx.recv().await.ok_or_else(|| engine_error("the engine", "stopped without an answer"))?;
                let choice = match response {
                    Response::CompletionDone(done) => done.choices.into_iter().next(),
                    Response::CompletionModelError(e, _) => return Err(engine_error("generation", e)),
                    Response::InternalError(e) | Response::ValidationError(e) => {
                        return Err(engine_error("generation", e))
                    }
                    other => return Err(unexpected("generation", &other)),
                };
                let choice = choice.ok_or_else(|| engine_error("generation", "a response without a choice"))?;
                let (tokens, log_probs) = std::mem::take(&mut *draw.drawn.lock().expect("poisoned"));
                on_done(tokens.len());
                Ok(Sample { text: choice.text, tokens, log_probs, finish_reason: choice.finish_reason })
            }
        });
        runtime
            .block_on(requests.buffered(self.options.max_batch).collect::<Vec<Result<Sample>>>())
            .into_iter()
            .collect()
    }

    /// Natural-log probability of each response token after the prompt, from one forward pass over both.
    pub fn score(&self, prompt_tokens: &[u32], response_tokens: &[u32]) -> Result<Vec<f64>> {
        if prompt_tokens.is_empty() {
            return Err(Error::Invalid("an empty prompt gives the first response token nothing to follow".into()));
        }
        let logits = self.logits(&[prompt_tokens, response_tokens].concat())?;
        let vocab = logits.dim(1)?;
        let p = prompt_tokens.len();
        let rows = logits.narrow(0, p - 1, response_tokens.len())?.flatten_all()?.to_vec1::<f32>()?;
        Ok(crate::logprob::token_log_probs(&rows, vocab, response_tokens))
    }

    /// The raw logits `[tokens, vocab]` (f32, on the CPU) of every position of `tokens`, from one forward pass.
    pub fn logits(&self, tokens: &[u32]) -> Result<Tensor> {
        let (model, runtime) = match &self.loaded {
            Loaded::Whetstone(decoder) => return decoder.logits(tokens),
            Loaded::MistralRs { model, runtime, .. } => (model, runtime),
        };
        let sender = model.inner().get_sender(None).map_err(|e| engine_error("the engine", e))?;
        let (tx, mut rx) = tokio::sync::mpsc::channel(1);
        // No new tokens: the raw logits of every position, from the prompt pass.
        let params = SamplingParams { max_len: Some(0), ..SamplingParams::deterministic() };
        let request = completion_request(tokens.to_vec(), params, tx, None);
        let response = runtime.block_on(async {
            sender.send(request).await.map_err(|e| engine_error("the engine", e))?;
            rx.recv().await.ok_or_else(|| engine_error("the engine", "stopped without an answer"))
        })?;
        let logits = match response {
            Response::Raw { logits_chunks, .. } => logits_chunks,
            Response::InternalError(e) | Response::ValidationError(e) => return Err(engine_error("scoring", e)),
            Response::CompletionModelError(e, _) | Response::ModelError(e, _) => {
                return Err(engine_error("scoring", e))
            }
            other => return Err(unexpected("scoring", &other)),
        };
        let logits =
            Tensor::cat(&logits, 0)?.to_dtype(candle_core::DType::F32)?.to_device(&candle_core::Device::Cpu)?;
        let positions = logits.dim(0)?;
        if positions != tokens.len() {
            return Err(engine_error("scoring", format!("{positions} rows of logits for {} tokens", tokens.len())));
        }
        Ok(logits)
    }
}

/// A request over pre-tokenized input: for generation with a sample's logits processor, or, without one, for
/// the raw logits of scoring.
fn completion_request(
    tokens: Vec<u32>,
    sampling_params: SamplingParams,
    response: tokio::sync::mpsc::Sender<Response>,
    draw: Option<Arc<dyn CustomLogitsProcessor>>,
) -> Request {
    let score = draw.is_none();
    Request::Normal(Box::new(NormalRequest {
        messages: RequestMessage::CompletionTokens(tokens),
        sampling_params,
        response,
        return_logprobs: false,
        is_streaming: false,
        id: 0,
        constraint: Constraint::None,
        suffix: None,
        tools: None,
        tool_choice: None,
        logits_processors: draw.map(|d| vec![d]),
        return_raw_logits: score,
        web_search_options: None,
        model_id: None,
        truncate_sequence: false,
    }))
}

/// The logits processor of one sample: draws the token from the sample's stream, records it and its
/// log-probability, and leaves only that token possible.
struct SeededDraw {
    sampling: Arc<Sampling>,
    stream: u64,
    drawn: Mutex<(Vec<u32>, Vec<f64>)>,
    times: Arc<Timers>,
}

impl CustomLogitsProcessor for SeededDraw {
    fn apply(&self, logits: &Tensor, context: &[u32]) -> candle_core::Result<Tensor> {
        let started = std::time::Instant::now();
        let values = logits.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>()?;
        let copied = Timers::add(&self.times.to_host, started);
        let choice = self
            .sampling
            .choose(&values, self.stream, context.len())
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let drawn_at = Timers::add(&self.times.sampling, copied);
        self.times.draws.fetch_add(1, Relaxed);
        let mut drawn = self.drawn.lock().expect("poisoned");
        drawn.0.push(choice.token);
        drawn.1.push(choice.log_prob);
        let mut only = vec![f32::NEG_INFINITY; values.len()];
        only[choice.token as usize] = 0.0;
        let only = Tensor::from_vec(only, values.len(), logits.device());
        Timers::add(&self.times.to_device, drawn_at);
        only
    }
}

/// The model's greedy answer to each prompt (chat mode), at most `max_tokens` tokens.
pub fn greedy_answers<'a>(
    engine: &Engine,
    prompts: impl IntoIterator<Item = &'a str>,
    max_tokens: usize,
) -> Result<Vec<String>> {
    let sampling = crate::Sampling { temperature: 0.0, max_tokens, ..Default::default() };
    let jobs = prompts
        .into_iter()
        .map(|p| {
            let tokens = engine.prompt_tokens(&Prompt::Text(p.to_string()), PromptMode::Chat)?;
            Ok(Job { prompt_tokens: std::sync::Arc::new(tokens), stream: 0, max_tokens })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(engine.generate(jobs, &sampling, &|_| {})?.into_iter().map(|s| s.text).collect())
}
