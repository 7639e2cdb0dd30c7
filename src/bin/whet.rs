//! `whet`: the whetstone command line. Thin: parses arguments, draws progress and tables, calls the library.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};
use comfy_table::{presets::UTF8_FULL_CONDENSED, Cell, CellAlignment, ContentArrangement, Table};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;
use whetstone::curation::embed::{embed_dataset, TextField};
use whetstone::curation::pipeline::{
    pipeline_report_path, ClusterStep, DecontamStep, DedupMethod, DedupStep, EmbedStep, FilterStep, Pipeline,
    SelectStep, Step,
};
use whetstone::curation::select::{Budget, Method, WeightUpdate};
use whetstone::curation::semantic::SemanticIndex;
use whetstone::curation::stages::select_dataset;
use whetstone::datasets::{
    self, inspect::Inspection, ConvertOptions, FieldMap, OnError, OutputFormat, Progress, ReadOptions, RowProgress,
};
use whetstone::selfimprove::engine::{EngineOptions, PromptMode};
use whetstone::selfimprove::{make_tiny_model, Sampling, TinyLlama};

/// whetstone: build LLM fine-tuning datasets and improve models in rounds.
///
/// Inputs may be a file, a directory (every data file in it) or a glob. Formats are recognised from the
/// rows: Alpaca, prompt/completion, OpenAI messages, ShareGPT, GSM8K question/answer, Self-Instruct; in
/// JSONL (plain or .gz), JSON arrays, Parquet, Arrow IPC or CSV.
#[derive(Parser)]
#[command(name = "whet", version, max_term_width = 110)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum OnErrorArg {
    /// Stop at the first bad row, naming file, line and field.
    Fail,
    /// Skip bad rows; count them and record their reasons in the manifest.
    Skip,
}

impl From<OnErrorArg> for OnError {
    fn from(a: OnErrorArg) -> Self {
        match a {
            OnErrorArg::Fail => OnError::Fail,
            OnErrorArg::Skip => OnError::Skip,
        }
    }
}

#[derive(clap::Args)]
struct ReadArgs {
    /// Name the source field of a role, e.g. --map prompt=question --map response=answer.
    /// Roles: id, source, prompt, input, response, messages, system.
    #[arg(long = "map", value_name = "ROLE=FIELD")]
    map: Vec<String>,
    /// What to do with a row that cannot be read.
    #[arg(long, value_enum, default_value = "fail")]
    on_error: OnErrorArg,
}

impl ReadArgs {
    fn options(&self) -> Result<ReadOptions> {
        Ok(ReadOptions { map: FieldMap::parse(&self.map)?, on_error: self.on_error.into() })
    }
}

#[derive(clap::Args)]
struct EngineArgs {
    /// chat (through the model's chat template) or raw (the prompt text as it is).
    #[arg(long, default_value = "chat", value_parser = PromptMode::NAMES)]
    mode: String,
    /// Requests the engine batches at once (on the CPU: 1, around a mistral.rs 0.8.1 bug).
    #[arg(long, default_value_t = EngineOptions::default().max_batch)]
    batch: usize,
    /// Run on the CPU even in a build with the `cuda` feature.
    #[arg(long)]
    cpu: bool,
    /// auto (f32 on the CPU, bf16 on GPUs that have it), f32, bf16 or f16.
    #[arg(long, default_value = "auto", value_parser = EngineOptions::DTYPES)]
    dtype: String,
    /// Show mistral.rs's own log (loading, device, memory) on stderr.
    #[arg(long)]
    engine_log: bool,
    /// Paged attention on the GPU (off: mistral.rs 0.8.1's paged scheduler recomputes sequences whose
    /// length differs from the shortest one's at every step).
    #[arg(long)]
    paged_attention: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Describe a dataset: layout, columns, row count, samples, length statistics.
    Inspect {
        /// File, directory or glob.
        path: PathBuf,
        /// Print one JSON object instead of tables.
        #[arg(long)]
        json: bool,
        /// How many sample rows to show.
        #[arg(long, default_value_t = 3)]
        samples: usize,
        #[command(flatten)]
        read: ReadArgs,
    },
    /// Convert to a whetstone dataset (Parquet) or to the JSONL layouts trainers read.
    ///
    /// Writes OUT atomically and OUT.manifest.json beside it (inputs with hashes, rows in/out/rejected).
    Convert {
        /// File, directory or glob.
        input: PathBuf,
        /// Output file; its extension picks the format unless --format is given (.gz compresses JSONL).
        output: PathBuf,
        /// parquet (every column), arrow, jsonl (every column), alpaca (instruction/input/output) or
        /// messages ({"messages": [...]}, for TRL and Axolotl).
        #[arg(long, value_parser = OutputFormat::NAMES)]
        format: Option<String>,
        #[command(flatten)]
        read: ReadArgs,
    },
    /// Add an `embedding` column: a real sentence-embedding model, or fast TF-IDF feature hashing.
    Embed {
        /// File, directory or glob.
        input: PathBuf,
        /// Output file (.parquet keeps the embeddings as FixedSizeList<Float32, d>).
        output: PathBuf,
        /// `hashing` (model-free: word and character n-grams, TF-IDF, hashed), `minilm` (all-MiniLM-L6-v2,
        /// from $WHETSTONE_MINILM or .cache/models/all-MiniLM-L6-v2: run scripts/fetch-minilm.sh), or the
        /// path of a BERT model folder (config.json, model.safetensors, tokenizer.json).
        #[arg(long, default_value = "hashing")]
        embedder: String,
        /// Which text to embed: prompt, response or both.
        #[arg(long, default_value = "prompt", value_parser = ["prompt", "response", "both"])]
        text: String,
        /// Dimension of the hashing embedder.
        #[arg(long, default_value_t = EmbedStep::default().dim)]
        dim: usize,
        /// Seed of the hashing embedder's hash functions.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[command(flatten)]
        read: ReadArgs,
    },
    /// Cluster the embeddings with k-means (k-means++ seeding); adds a `cluster` column.
    Cluster {
        /// A dataset with an `embedding` column (see `whet embed`).
        input: PathBuf,
        output: PathBuf,
        /// Number of clusters.
        #[arg(long)]
        k: usize,
        #[arg(long, default_value_t = ClusterStep::default().max_iter)]
        max_iter: usize,
        /// Stop when the centroids move less than this, relative to the data's variance (0: run max-iter).
        #[arg(long, default_value_t = ClusterStep::default().tol)]
        tol: f64,
        /// Mini-batch k-means with batches of this many rows, reading the dataset in passes (max-iter counts
        /// passes): for datasets larger than memory. Without it, Lloyd's algorithm on every row in memory.
        #[arg(long, value_name = "ROWS")]
        mini_batch: Option<usize>,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[command(flatten)]
        read: ReadArgs,
    },
    /// Select a diverse subset under a budget; prints coverage metrics and writes the chosen rows.
    Select {
        /// A dataset with an `embedding` column (see `whet embed`).
        input: PathBuf,
        output: PathBuf,
        /// random (baseline), rs2 (a fresh random slice per --round), kmq (cluster-balanced, Diversify and
        /// Conquer), kcenter (farthest point) or deita (by --score, skipping near copies).
        #[arg(long, value_parser = whetstone::curation::select::Method::NAMES)]
        method: String,
        /// A count (e.g. 200) or a fraction of the rows (e.g. 0.005).
        #[arg(long)]
        budget: String,
        /// kmq: cluster with this k (default: the dataset's `cluster` column, else one cluster per row of budget).
        #[arg(long)]
        k: Option<usize>,
        /// A column whose values the selection should cover, e.g. `source`: reported in the metrics.
        #[arg(long)]
        label: Option<String>,
        /// kmq without a quality column: draw rows at random inside each cluster (the paper's code) instead
        /// of taking the rows nearest the cluster's centre.
        #[arg(long)]
        kmq_random: bool,
        /// kmq: 0 takes each cluster's most central rows; above 0 draws rows favouring the centre,
        /// with probability ∝ exp(cos / T).
        #[arg(long, default_value_t = SelectStep::default().kmq_temperature)]
        kmq_temperature: f32,
        /// rs2: the round whose slice to take.
        #[arg(long, default_value_t = 0)]
        round: usize,
        /// deita: the score column (default `quality`); iterative: last round's per-row score (default
        /// `reward`, e.g. the gold answer's reward minus the model's).
        #[arg(long)]
        score: Option<String>,
        /// iterative: the previous round's select manifest, whose cluster weights this round updates.
        #[arg(long)]
        weights_from: Option<PathBuf>,
        /// iterative: paper (w ← w·s/Σs, Diversify and Conquer Eq. 6) or softmax (the public code's variant).
        #[arg(long, default_value = "paper", value_parser = ["paper", "softmax"])]
        update: String,
        /// deita: the largest cosine similarity to an already selected row.
        #[arg(long, default_value_t = SelectStep::default().max_similarity)]
        max_similarity: f32,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[command(flatten)]
        read: ReadArgs,
    },
    /// Drop rows that fail heuristic quality filters; every dropped row is written with its reason.
    Filter {
        input: PathBuf,
        output: PathBuf,
        #[arg(long, default_value_t = FilterStep::default().min_prompt)]
        min_prompt: usize,
        #[arg(long, default_value_t = FilterStep::default().max_prompt)]
        max_prompt: usize,
        #[arg(long, default_value_t = FilterStep::default().min_response)]
        min_response: usize,
        #[arg(long, default_value_t = FilterStep::default().max_response)]
        max_response: usize,
        /// Largest share of repeated word 3-grams in a prompt or response.
        #[arg(long, default_value_t = FilterStep::default().max_repeated)]
        max_repeated: f64,
        /// Largest share of characters that are neither letters, digits nor whitespace.
        #[arg(long, default_value_t = FilterStep::default().max_symbols)]
        max_symbols: f64,
        /// Keep empty and refused responses.
        #[arg(long)]
        keep_refusals: bool,
        #[command(flatten)]
        read: ReadArgs,
    },
    /// Drop duplicates: exact (normalised text) or near (MinHash LSH); each dropped row names the kept row
    /// it duplicates (dup_of) in OUT.rejected.jsonl.
    Dedup {
        input: PathBuf,
        output: PathBuf,
        /// exact; minhash (near duplicates by word-shingle Jaccard similarity); or semantic (embedding
        /// cosine similarity through an HNSW index; needs an `embedding` column).
        #[arg(long, default_value = "exact", value_parser = ["exact", "minhash", "semantic"])]
        method: String,
        /// Similarity at which rows are duplicates: Jaccard for minhash (default 0.8), cosine for semantic
        /// (default 0.95).
        #[arg(long)]
        threshold: Option<f64>,
        /// minhash: words per shingle.
        #[arg(long, default_value_t = DedupStep::default().shingle)]
        shingle: usize,
        /// semantic: `clusters` compares rows inside k-means clusters (SemDeDup's way; each row also searches
        /// its next-nearest cluster); `hnsw` searches an HNSW graph (hnsw_rs).
        #[arg(long, default_value = "clusters", value_parser = ["clusters", "hnsw"])]
        index: String,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[command(flatten)]
        read: ReadArgs,
    },
    /// Drop rows that share a word n-gram with an evaluation set (e.g. GSM8K test against GSM8K train).
    Decontam {
        input: PathBuf,
        output: PathBuf,
        /// Evaluation set(s): file, directory or glob; repeat for several.
        #[arg(long = "eval", required = true)]
        eval: Vec<PathBuf>,
        /// n-gram length in words.
        #[arg(long, default_value_t = DecontamStep::default().n)]
        n: usize,
        #[command(flatten)]
        read: ReadArgs,
    },
    /// Run a pipeline of curation stages from a TOML file: each stage's output feeds the next.
    ///
    /// Intermediate datasets go to OUTPUT.stages/, each with its manifest; OUTPUT.pipeline.json lists them.
    /// See `whetstone_curation::pipeline` for the file's format, or examples/t0-curate.toml.
    Curate {
        /// The pipeline file (input, output, seed, [[stage]] tables).
        pipeline: PathBuf,
    },
    /// Show the first rows.
    Head {
        /// File, directory or glob.
        path: PathBuf,
        #[arg(short = 'n', long, default_value_t = 10)]
        rows: usize,
        /// Print JSON lines (every column) instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        read: ReadArgs,
    },
    /// Generate N samples per prompt with a model (mistral.rs): one output row per sample, with the prompt's
    /// id, the sample's index, token counts, finish reason, log-likelihood, generator and sampling parameters.
    ///
    /// Samples are drawn by whetstone from a stream per (seed, prompt id, sample): the same seed gives the
    /// same samples, however the prompts are batched.
    Generate {
        /// A Hugging Face model folder (config.json, tokenizer.json, *.safetensors), e.g. from `whet model tiny`.
        model: PathBuf,
        /// Prompts: file, directory or glob (the `prompt` column, or the conversation in `messages`).
        input: PathBuf,
        output: PathBuf,
        /// Samples per prompt.
        #[arg(short = 'n', long, default_value_t = Sampling::default().n)]
        n: usize,
        /// 0 is greedy.
        #[arg(long, default_value_t = Sampling::default().temperature)]
        temperature: f32,
        #[arg(long)]
        top_k: Option<usize>,
        #[arg(long, default_value_t = Sampling::default().top_p)]
        top_p: f32,
        /// New tokens per sample at most (fewer when the context fills up).
        #[arg(long, default_value_t = Sampling::default().max_tokens)]
        max_tokens: usize,
        /// A string that ends a sample (repeat for several); the model's end-of-sequence token always does.
        #[arg(long = "stop", value_name = "STRING")]
        stop: Vec<String>,
        #[command(flatten)]
        engine: EngineArgs,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[command(flatten)]
        read: ReadArgs,
    },
    /// Score each row's response under a model: per-token natural-log probabilities given the prompt,
    /// log-likelihood, mean log-prob and perplexity (the response is scored with the end-of-sequence token).
    Score {
        /// A Hugging Face model folder.
        model: PathBuf,
        /// Rows with a prompt (or messages) and a response.
        input: PathBuf,
        output: PathBuf,
        #[command(flatten)]
        engine: EngineArgs,
        #[command(flatten)]
        read: ReadArgs,
    },
    /// Score each row's response with verifiers: adds `reward` (the weighted sum) and `reward_reason`.
    ///
    /// The response is checked against the row's `reference` column (what `whet generate` writes: the prompt
    /// row's own answer).
    Reward {
        input: PathBuf,
        output: PathBuf,
        /// A reward: gsm8k (the final number), exact, exact-case, json, regex:PATTERN, or code (Python run
        /// against the row's tests in a sandbox); NAME=WEIGHT weighs it (repeat to combine).
        #[arg(long = "with", value_name = "REWARD", required = true)]
        with: Vec<String>,
        #[command(flatten)]
        read: ReadArgs,
    },
    /// LLM-as-judge: a model scores each row's response (given its prompt and reference) through a prompt
    /// template; adds `reward` (the score mapped onto 0–1) and `reward_reason` (the judge's reply).
    Judge {
        /// The judge: a Hugging Face model folder.
        model: PathBuf,
        input: PathBuf,
        output: PathBuf,
        /// A template file with {prompt}, {response} and {reference}; the default asks for 1–10.
        #[arg(long)]
        template: Option<PathBuf>,
        /// The lowest and highest score the template asks for.
        #[arg(long, value_delimiter = ',', value_name = "LOW,HIGH", default_values_t = [1.0, 10.0])]
        scale: Vec<f64>,
        /// New tokens of the judge's reply.
        #[arg(long, default_value_t = 8)]
        max_tokens: usize,
        #[command(flatten)]
        engine: EngineArgs,
        #[command(flatten)]
        read: ReadArgs,
    },
    /// Keep the samples a reward likes (after `whet reward`): best-of-n, top-k:K per prompt, threshold, or
    /// superbatch:SIZE (SuperHF: the best of each SIZE consecutive samples); dropped samples go to
    /// OUTPUT.rejected.jsonl with their reason. --pairs writes chosen/rejected pairs for DPO trainers.
    Keep {
        input: PathBuf,
        output: PathBuf,
        /// all, best-of-n, top-k:K, threshold or superbatch:SIZE.
        #[arg(long, default_value = "best-of-n")]
        by: String,
        /// Samples under this reward are dropped (by every filter but `all`).
        #[arg(long, default_value_t = 1.0)]
        min_reward: f64,
        /// Also write, per prompt, the best sample (chosen) and the worst (rejected) as JSONL.
        #[arg(long, value_name = "PAIRS.jsonl")]
        pairs: Option<PathBuf>,
        #[command(flatten)]
        read: ReadArgs,
    },
    /// Self-improvement rounds from CONFIG.toml: select prompts → generate → reward → keep → curate → mix
    /// with replay → train → merge → evaluate, per round, under OUT/round-<r>/. Started again after a stop
    /// (or kill -9), it redoes no finished step. Writes metrics.parquet, rounds.svg and report.md.
    Rounds { config: PathBuf },
    /// The whole loop on a synthetic task in a few minutes: word problems, a tiny model pre-trained from
    /// scratch, rounds of reward-filtered self-training and the same rounds without the filter (a control).
    Demo {
        /// Where everything goes (kept between runs: finished parts are skipped).
        #[arg(long, default_value = "out/demo-rounds")]
        out: PathBuf,
        /// A short version (about a minute): fewer problems, steps and rounds.
        #[arg(long)]
        quick: bool,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Benchmarks that measure what the stages do to a model.
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
    /// Train a model on candle: LoRA adapters (written in the PEFT layout) or all weights (a model folder),
    /// with the loss on response tokens. Settings come from CONFIG.toml (the fields of TrainConfig), and flags
    /// override them; a run stopped midway resumes from its last checkpoint when started again.
    Train(Box<TrainArgs>),
    /// Models made here (no weights can be downloaded on some machines).
    Model {
        #[command(subcommand)]
        command: ModelCommand,
    },
}

#[derive(clap::Args)]
struct TrainArgs {
    /// A TOML file of settings (base, data, out, method, [lora], [schedule], …); flags override it.
    config: Option<PathBuf>,
    /// The model folder to train (LoRA's base).
    #[arg(long)]
    base: Option<PathBuf>,
    /// Training rows (prompt and response, or conversations): file, folder or glob.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Held-out rows whose loss is measured before, every --eval-every steps, and after.
    #[arg(long)]
    eval: Option<PathBuf>,
    /// The output folder: an adapter (lora) or a model folder (full).
    #[arg(long)]
    out: Option<PathBuf>,
    /// lora or full.
    #[arg(long, value_parser = ["lora", "full"])]
    method: Option<String>,
    /// chat (through the chat template, as `whet generate` puts prompts) or raw.
    #[arg(long, value_parser = PromptMode::NAMES)]
    mode: Option<String>,
    /// LoRA rank.
    #[arg(long)]
    rank: Option<usize>,
    #[arg(long)]
    alpha: Option<f64>,
    #[arg(long)]
    lora_dropout: Option<f64>,
    /// LoRA target modules, comma-separated (q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj).
    #[arg(long, value_delimiter = ',')]
    targets: Option<Vec<String>>,
    /// Peak learning rate.
    #[arg(long)]
    lr: Option<f64>,
    #[arg(long)]
    warmup: Option<usize>,
    /// constant, linear, cosine, wsd or infinite.
    #[arg(long, value_parser = whetstone::selfimprove::train::schedule::Shape::NAMES)]
    schedule: Option<String>,
    #[arg(long)]
    epochs: Option<usize>,
    /// Optimizer steps (overrides epochs).
    #[arg(long)]
    steps: Option<usize>,
    /// Rows per micro-batch.
    #[arg(long)]
    batch: Option<usize>,
    /// Micro-batches per optimizer step.
    #[arg(long)]
    accumulation: Option<usize>,
    /// Tokens per training row (the model's context by default).
    #[arg(long)]
    max_len: Option<usize>,
    #[arg(long)]
    seed: Option<u64>,
    #[arg(long)]
    checkpoint_every: Option<usize>,
    #[arg(long)]
    eval_every: Option<usize>,
    /// Weight of KL(model ‖ base).
    #[arg(long)]
    kl_beta: Option<f64>,
    /// A teacher model folder for distillation (with --distill-alpha below 1).
    #[arg(long)]
    teacher: Option<PathBuf>,
    #[arg(long)]
    distill_alpha: Option<f64>,
    /// auto, f32 or bf16.
    #[arg(long)]
    dtype: Option<String>,
    /// Train on the CPU in a CUDA build.
    #[arg(long)]
    cpu: bool,
    /// What to do with a row that cannot be trained on (no response, too long): fail or skip.
    #[arg(long, value_enum)]
    on_error: Option<OnErrorArg>,
}

#[derive(Subcommand)]
enum ModelCommand {
    /// Merge a LoRA adapter (PEFT layout) into its base: a complete model folder for the next round's engine.
    Merge {
        /// The base model folder.
        base: PathBuf,
        /// The adapter folder (adapter_config.json, adapter_model.safetensors).
        adapter: PathBuf,
        /// The folder to create.
        out: PathBuf,
    },
    /// A tiny Llama model: a byte-level BPE tokenizer trained on the corpus, random weights from the seed,
    /// written as a Hugging Face folder (config.json, model.safetensors, tokenizer.json, …) that mistral.rs loads.
    Tiny {
        /// The folder to create (it must not exist).
        out: PathBuf,
        /// Texts for the tokenizer: datasets (prompt and response columns) or .txt files (lines).
        #[arg(long, required = true, num_args = 1..)]
        corpus: Vec<PathBuf>,
        #[arg(long, default_value_t = TinyLlama::default().vocab)]
        vocab: usize,
        #[arg(long, default_value_t = TinyLlama::default().layers)]
        layers: usize,
        #[arg(long, default_value_t = TinyLlama::default().hidden)]
        hidden: usize,
        #[arg(long, default_value_t = TinyLlama::default().heads)]
        heads: usize,
        /// Key/value heads (fewer than heads: grouped-query attention).
        #[arg(long, default_value_t = TinyLlama::default().kv_heads)]
        kv_heads: usize,
        /// Width of the MLP.
        #[arg(long, default_value_t = TinyLlama::default().intermediate)]
        intermediate: usize,
        /// Context length in tokens.
        #[arg(long, default_value_t = TinyLlama::default().context)]
        context: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Inspect { path, json, samples, read } => {
            let bar = ByteBar::new("reading");
            let found = datasets::inspect(&path, read.options()?, samples, |p| bar.follow(p))?;
            bar.finish();
            if json {
                println!("{}", inspection_json(&found));
            } else {
                print_inspection(&found);
            }
        }
        Command::Convert { input, output, format, read } => {
            let opts = ConvertOptions {
                format: format.as_deref().map(OutputFormat::parse).transpose()?,
                map: FieldMap::parse(&read.map)?,
                on_error: read.on_error.into(),
            };
            let bar = ByteBar::new("converting");
            let m = datasets::convert(&input, &output, &opts, |p| bar.follow(p))?;
            bar.finish();
            let mut t = table(&["inputs", "rows in", "rows out", "rejected", "output", "size", "seconds"]);
            t.add_row(vec![
                Cell::new(match m.inputs.iter().filter(|i| i.rows_in == 0).count() {
                    0 => m.inputs.len().to_string(),
                    empty => format!("{} ({empty} empty)", m.inputs.len()),
                }),
                num(m.rows.rows_in),
                num(m.rows.rows_out),
                num(m.rows.rows_rejected),
                Cell::new(format!("{} ({})", m.output.path.display(), m.output.format.name())),
                Cell::new(human_bytes(m.output.bytes)),
                Cell::new(format!("{:.2}", m.seconds)),
            ]);
            eprintln!("{t}");
            if m.rows.rows_rejected > 0 {
                let mut t = table(&["rejected because", "rows"]);
                for (reason, n) in &m.rejected.by_reason {
                    t.add_row(vec![Cell::new(reason), num(*n)]);
                }
                eprintln!("{t}");
                for e in m.rejected.examples.iter().take(5) {
                    eprintln!("  {e}");
                }
                if let Some(f) = &m.rejected.file {
                    eprintln!("rejected rows: {}", f.display());
                }
            }
            eprintln!("manifest: {}", datasets::write::manifest_path(&output).display());
        }
        Command::Embed { input, output, embedder, text, dim, seed, read } => {
            let step = EmbedStep { embedder, text: TextField::parse(&text)?, dim, seed: Some(seed) };
            let read = read.options()?;
            let embedder = step.embedder(&input, &read, seed)?;
            let bar = RowBar::new("embedding");
            let m = embed_dataset(&input, &output, embedder.as_ref(), step.text, read, |_, rows| bar.follow(rows))?;
            bar.finish();
            let mut t = table(&["rows", "embedder", "dim", "output", "seconds", "rows/s"]);
            t.add_row(vec![
                num(m.rows.rows_out),
                Cell::new(embedder.name()),
                num(embedder.dim() as u64),
                Cell::new(m.output.path.display()),
                Cell::new(format!("{:.1}", m.seconds)),
                Cell::new(format!("{:.0}", m.rows.rows_out as f64 / m.seconds.max(1e-9))),
            ]);
            eprintln!("{t}");
        }
        Command::Cluster { input, output, k, max_iter, tol, mini_batch, seed, read } => {
            let step = ClusterStep { k, max_iter, tol, seed: Some(seed), mini_batch };
            let bar = ByteBar::new(if mini_batch.is_some() { "labelling" } else { "reading" });
            let (m, model) = step.run(&input, &output, read.options()?, seed, |p| bar.follow(p))?;
            bar.finish();
            let mut sizes = model.sizes.clone();
            sizes.sort_unstable();
            let mut t = table(&[
                "rows",
                "k",
                "iterations",
                "converged",
                "inertia",
                "cluster sizes min / median / max",
                "seconds",
            ]);
            t.add_row(vec![
                num(m.rows.rows_out),
                num(k as u64),
                num(model.iterations as u64),
                Cell::new(model.converged),
                Cell::new(format!("{:.2}", model.inertia)),
                Cell::new(format!("{} / {} / {}", sizes[0], sizes[sizes.len() / 2], sizes[sizes.len() - 1])),
                Cell::new(format!("{:.1}", m.seconds)),
            ]);
            println!("{t}");
        }
        Command::Select {
            input,
            output,
            method,
            budget,
            k,
            label,
            round,
            score,
            weights_from,
            update,
            max_similarity,
            kmq_random,
            kmq_temperature,
            seed,
            read,
        } => {
            let step = SelectStep {
                method: Method::parse(&method)?,
                budget: Budget::parse(&budget)?,
                k,
                label,
                kmq_random,
                kmq_temperature,
                round,
                score,
                weights_from,
                update: if update == "softmax" { WeightUpdate::Softmax } else { WeightUpdate::Paper },
                max_similarity,
                seed: Some(seed),
            };
            let bar = ByteBar::new("reading");
            let (m, c) = select_dataset(&input, &output, &step.options(seed)?, read.options()?, |p| bar.follow(p))?;
            bar.finish();
            let mut t = table(&[
                "method",
                "selected",
                "of rows",
                "mean distance",
                "max distance",
                "cluster entropy",
                "labels covered",
            ]);
            t.add_row(vec![
                Cell::new(&method),
                num(c.selected as u64),
                num(c.rows as u64),
                Cell::new(format!("{:.4}", c.mean_distance)),
                Cell::new(format!("{:.4}", c.max_distance)),
                Cell::new(match (c.cluster_entropy, c.max_entropy) {
                    (Some(h), Some(max)) => format!("{h:.3} of {max:.3}"),
                    _ => "-".into(),
                }),
                Cell::new(match (c.labels_covered, c.labels_total) {
                    (Some(a), Some(b)) => format!("{a} of {b}"),
                    _ => "-".into(),
                }),
            ]);
            println!("{t}");
            eprintln!("manifest: {}", datasets::write::manifest_path(&m.output.path).display());
        }
        Command::Filter {
            input,
            output,
            min_prompt,
            max_prompt,
            min_response,
            max_response,
            max_repeated,
            max_symbols,
            keep_refusals,
            read,
        } => {
            let step = Step::Filter(FilterStep {
                min_prompt,
                max_prompt,
                min_response,
                max_response,
                max_repeated,
                max_symbols,
                keep_refusals,
            });
            let bar = ByteBar::new("filtering");
            let m = step.run(&input, &output, read.options()?, 0, |p| bar.follow(p))?;
            bar.finish();
            print_drops(&m);
        }
        Command::Dedup { input, output, method, threshold, shingle, index, seed, read } => {
            let method = match method.as_str() {
                "minhash" => DedupMethod::Minhash,
                "semantic" => DedupMethod::Semantic,
                _ => DedupMethod::Exact,
            };
            let index = if index == "hnsw" { SemanticIndex::Hnsw } else { SemanticIndex::Clusters };
            let step =
                Step::Dedup(DedupStep { method, threshold, shingle, index, seed: Some(seed), ..Default::default() });
            let bar = ByteBar::new("deduplicating");
            let m = step.run(&input, &output, read.options()?, seed, |p| bar.follow(p))?;
            bar.finish();
            print_drops(&m);
        }
        Command::Decontam { input, output, eval, n, read } => {
            let bar = ByteBar::new("decontaminating");
            let m =
                Step::Decontam(DecontamStep { eval, n }).run(&input, &output, read.options()?, 0, |p| bar.follow(p))?;
            bar.finish();
            print_drops(&m);
        }
        Command::Generate {
            model,
            input,
            output,
            n,
            temperature,
            top_k,
            top_p,
            max_tokens,
            stop,
            engine,
            seed,
            read,
        } => {
            let sampling = Sampling { n, temperature, top_k, top_p, max_tokens, stop, seed };
            llm::generate(&model, &input, &output, sampling, &engine, read.options()?)?;
        }
        Command::Score { model, input, output, engine, read } => {
            llm::score(&model, &input, &output, &engine, read.options()?)?;
        }
        Command::Train(args) => training::train(*args)?,
        Command::Rounds { config } => rounds::rounds(&config)?,
        Command::Demo { out, quick, seed } => rounds::demo(&out, quick, seed)?,
        Command::Bench { command: BenchCommand::Selection { out, quick, seeds, embedder } } => {
            rounds::bench_selection(&out, quick, seeds, &embedder)?
        }
        Command::Reward { input, output, with, read } => {
            use whetstone::selfimprove::reward::stage::{RewardSpec, RewardStep};
            let rewards = with.iter().map(|w| RewardSpec::parse(w)).collect::<Result<Vec<_>, _>>()?;
            let m = RewardStep { rewards }.run(&input, &output, read.options()?)?;
            let r = &m.results;
            let mut t = table(&["rows", "mean reward", "full reward", "reward"]);
            t.add_row(vec![
                num(r["rows"].as_u64().unwrap_or(0)),
                Cell::new(format!("{:.3}", r["mean_reward"].as_f64().unwrap_or(0.0))),
                num(r["full_reward"].as_u64().unwrap_or(0)),
                Cell::new(m.parameters["reward"].as_str().unwrap_or("")),
            ]);
            println!("{t}");
            let mut reasons: Vec<(&String, u64)> = r["reasons"]
                .as_object()
                .map(|o| o.iter().map(|(k, v)| (k, v.as_u64().unwrap_or(0))).collect())
                .unwrap_or_default();
            reasons.sort_by_key(|r| std::cmp::Reverse(r.1));
            let mut t = table(&["reason", "rows"]);
            for (reason, n) in reasons.into_iter().take(10) {
                t.add_row(vec![Cell::new(reason), num(n)]);
            }
            println!("{t}");
            print_drops(&m);
        }
        Command::Judge { model, input, output, template, scale, max_tokens, engine, read } => {
            if scale.len() != 2 {
                anyhow::bail!("--scale takes two numbers, LOW,HIGH (e.g. 1,10)");
            }
            llm::judge(
                &model,
                &input,
                &output,
                template.as_deref(),
                (scale[0], scale[1]),
                max_tokens,
                &engine,
                read.options()?,
            )?;
        }
        Command::Keep { input, output, by, min_reward, pairs, read } => {
            use whetstone::selfimprove::reward::filter::{pairs as write_pairs, Keep, KeepStep};
            let step = KeepStep { keep: Keep::parse(&by)?, min_reward };
            let m = step.run(&input, &output, read.options()?)?;
            let r = &m.results;
            let mut t = table(&["samples", "kept", "prompts", "prompts kept", "mean reward", "mean reward kept"]);
            let n = |k: &str| num(r[k].as_u64().unwrap_or(0));
            let f = |k: &str| Cell::new(format!("{:.3}", r[k].as_f64().unwrap_or(0.0)));
            t.add_row(vec![
                n("samples"),
                n("kept"),
                n("prompts"),
                n("prompts_with_a_kept_sample"),
                f("mean_reward_all"),
                f("mean_reward_kept"),
            ]);
            println!("{t}");
            print_drops(&m);
            if let Some(path) = pairs {
                let (written, without) = write_pairs(&input, &path, read.options()?)?;
                println!(
                    "{written} chosen/rejected pairs in {} ({without} prompts without two rewards)",
                    path.display()
                );
            }
        }
        Command::Model { command: ModelCommand::Merge { base, adapter, out } } => {
            whetstone::selfimprove::train::lora::merge(&base, &adapter, &out)?;
            println!("merged {} into {}: {}", adapter.display(), base.display(), out.display());
        }
        Command::Model {
            command:
                ModelCommand::Tiny { out, corpus, vocab, layers, hidden, heads, kv_heads, intermediate, context, seed },
        } => {
            let spec = TinyLlama { vocab, layers, hidden, heads, kv_heads, intermediate, context, seed };
            let made = make_tiny_model(&out, &corpus, &spec)?;
            let mut t = table(&["model", "value"]);
            t.add_row(vec![Cell::new("folder"), Cell::new(made.folder.display())]);
            t.add_row(vec![Cell::new("vocabulary"), num(made.vocab as u64)]);
            t.add_row(vec![Cell::new("parameters"), num(made.parameters as u64)]);
            t.add_row(vec![
                Cell::new("layers × hidden × heads"),
                Cell::new(format!("{} × {} × {} (head size {})", layers, hidden, heads, spec.head_dim())),
            ]);
            t.add_row(vec![Cell::new("corpus texts"), num(made.corpus_texts as u64)]);
            t.add_row(vec![Cell::new("seconds"), Cell::new(format!("{:.1}", made.seconds))]);
            println!("{t}");
        }
        Command::Curate { pipeline } => {
            let pipeline = Pipeline::load(&pipeline)?;
            let bar = std::cell::RefCell::new(None::<ByteBar>);
            let total = pipeline.stages.len();
            let report = pipeline.run(|i, step, progress| {
                if let Some(done) = bar.borrow_mut().take() {
                    done.finish();
                }
                let b = ByteBar::new_owned(format!("{}/{total} {}", i + 1, step.name()));
                b.follow(progress);
                *bar.borrow_mut() = Some(b);
            });
            if let Some(done) = bar.borrow_mut().take() {
                done.finish();
            }
            let report = report?;
            let mut t = table(&["#", "stage", "rows in", "kept", "dropped", "seconds", "output"]);
            for (i, s) in report.steps.iter().enumerate() {
                t.add_row(vec![
                    num(i as u64 + 1),
                    Cell::new(&s.stage),
                    num(s.rows_in),
                    num(s.rows_out),
                    num(s.rows_rejected),
                    Cell::new(format!("{:.1}", s.seconds)),
                    Cell::new(s.output.display()),
                ]);
            }
            println!("{t}");
            println!("pipeline report: {}", pipeline_report_path(&pipeline.output).display());
        }
        Command::Head { path, rows, json, read } => {
            let mut reader = datasets::DatasetReader::open(&path, read.options()?)?;
            let mut shown = Vec::new();
            for batch in reader.by_ref() {
                let batch = batch?;
                let take = batch.num_rows().min(rows - shown.len());
                shown.extend(datasets::inspect::batch_rows_json(&batch.slice(0, take))?);
                if shown.len() >= rows {
                    break;
                }
            }
            if json {
                for row in shown {
                    println!("{row}");
                }
            } else {
                println!("{}", rows_table(&shown, CELL_CHARS));
            }
        }
    }
    Ok(())
}

/// Rows in, kept and dropped by reason: what a filtering stage did.
fn print_drops(m: &datasets::Manifest) {
    let mut t = table(&["stage", "rows in", "kept", "dropped", "output"]);
    t.add_row(vec![
        Cell::new(&m.stage),
        num(m.rows.rows_in),
        num(m.rows.rows_out / m.rows.per_row),
        num(m.rows.rows_rejected),
        Cell::new(match m.rows.per_row {
            1 => m.output.path.display().to_string(),
            n => format!(
                "{} ({} rows, {n} per row kept)",
                m.output.path.display(),
                whetstone::notebook::thousands(m.rows.rows_out)
            ),
        }),
    ]);
    println!("{t}");
    if !m.rejected.by_reason.is_empty() {
        let mut t = table(&["dropped because", "rows"]);
        for (reason, n) in &m.rejected.by_reason {
            t.add_row(vec![Cell::new(reason), num(*n)]);
        }
        println!("{t}");
    }
    if let Some(f) = &m.rejected.file {
        println!("dropped rows, with reasons: {}", f.display());
    }
}

/// `whet generate` and `whet score`.
mod llm {
    use std::path::Path;
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use anyhow::Result;
    use comfy_table::Cell;
    use indicatif::{ProgressBar, ProgressStyle};
    use whetstone::datasets::{self, ReadOptions};
    use whetstone::notebook::thousands;
    use whetstone::selfimprove::engine::{Engine, EngineOptions, PromptMode};
    use whetstone::selfimprove::generate::{Counter, GenerateStep, ScoreStep};
    use whetstone::selfimprove::{ModelFolder, Sampling};

    use super::{num, print_drops, table, EngineArgs};

    fn load(model: &Path, args: &EngineArgs) -> Result<(Engine, PromptMode)> {
        let folder = ModelFolder::open(model)?;
        let cpu = args.cpu || EngineOptions::default().cpu;
        let options = EngineOptions {
            cpu,
            max_batch: args.batch,
            dtype: args.dtype.clone(),
            log: args.engine_log,
            paged_attention: args.paged_attention,
        };
        let spinner = ProgressBar::new_spinner();
        spinner.set_message(format!("loading {}", model.display()));
        spinner.enable_steady_tick(Duration::from_millis(200));
        let engine = Engine::load(folder, options);
        spinner.finish_and_clear();
        Ok((engine?, PromptMode::parse(&args.mode)?))
    }

    /// A bar over the work a run will do (`total` units), with tokens per second: drawn on stderr when it
    /// is a terminal.
    fn bar(what: &str, total: u64, counter: &std::sync::Arc<Counter>) -> ProgressBar {
        let bar = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            ProgressBar::new(total)
        } else {
            ProgressBar::hidden()
        };
        bar.set_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {human_pos}/{human_len} eta {eta} · {prefix}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_message(what.to_string());
        let (b, c) = (bar.clone(), counter.clone());
        let started = std::time::Instant::now();
        std::thread::spawn(move || {
            while !b.is_finished() {
                let tokens = c.tokens.load(Ordering::Relaxed);
                b.set_position(c.samples.load(Ordering::Relaxed));
                b.set_prefix(format!("{:.0} tokens/s", tokens as f64 / started.elapsed().as_secs_f64().max(1e-9)));
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        bar
    }

    fn rows_in(input: &Path, read: &ReadOptions) -> Result<u64> {
        let mut rows = 0;
        for batch in datasets::DatasetReader::open(input, read.clone())? {
            rows += batch?.num_rows() as u64;
        }
        Ok(rows)
    }

    pub fn generate(
        model: &Path,
        input: &Path,
        output: &Path,
        sampling: Sampling,
        args: &EngineArgs,
        read: ReadOptions,
    ) -> Result<()> {
        sampling.check()?;
        let (engine, mode) = load(model, args)?;
        let step = GenerateStep { sampling, mode };
        let counter = std::sync::Arc::new(Counter::default());
        let progress = bar("generating", rows_in(input, &read)? * step.sampling.n as u64, &counter);
        let m = step.run(&engine, input, output, read, &counter, |_, _| {});
        progress.finish_and_clear();
        let m = m?;
        let r = &m.results;
        let count = |k: &str| r[k].as_u64().unwrap_or(0);
        let mut t = table(&["prompts", "samples", "all distinct", "new tokens", "tokens/s", "finish", "seconds"]);
        let finish: Vec<String> = r["finish_reasons"]
            .as_object()
            .map(|o| o.iter().map(|(k, v)| format!("{k} {}", v)).collect())
            .unwrap_or_default();
        t.add_row(vec![
            num(count("prompts")),
            num(count("samples")),
            Cell::new(format!(
                "{} of {} prompts",
                thousands(count("prompts_with_all_samples_distinct")),
                thousands(count("prompts"))
            )),
            num(count("response_tokens")),
            Cell::new(format!("{:.0}", r["response_tokens_per_second"].as_f64().unwrap_or(0.0))),
            Cell::new(finish.join(", ")),
            Cell::new(format!("{:.1}", r["seconds"].as_f64().unwrap_or(0.0))),
        ]);
        println!("{t}");
        print_drops(&m);
        Ok(())
    }

    pub fn score(model: &Path, input: &Path, output: &Path, args: &EngineArgs, read: ReadOptions) -> Result<()> {
        let (engine, mode) = load(model, args)?;
        let counter = std::sync::Arc::new(Counter::default());
        let progress = bar("scoring", rows_in(input, &read)?, &counter);
        let m = ScoreStep { mode }.run(&engine, input, output, read, &counter, |_, _| {});
        progress.finish_and_clear();
        let m = m?;
        let mut t = table(&["rows scored", "tokens", "median mean log-prob", "median perplexity", "seconds"]);
        t.add_row(vec![
            num(m.rows.rows_out),
            num(m.results["response_tokens"].as_u64().unwrap_or(0)),
            Cell::new(format!("{:.3}", m.results["median_mean_log_prob"].as_f64().unwrap_or(f64::NAN))),
            Cell::new(format!("{:.1}", m.results["median_perplexity"].as_f64().unwrap_or(f64::NAN))),
            Cell::new(format!("{:.1}", m.seconds)),
        ]);
        println!("{t}");
        print_drops(&m);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub fn judge(
        model: &Path,
        input: &Path,
        output: &Path,
        template: Option<&Path>,
        scale: (f64, f64),
        max_tokens: usize,
        args: &EngineArgs,
        read: ReadOptions,
    ) -> Result<()> {
        use whetstone::selfimprove::reward::judge::JudgeStep;
        let (engine, mode) = load(model, args)?;
        let mut step = JudgeStep { scale, max_tokens, mode, ..Default::default() };
        if let Some(path) = template {
            step.template = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("{}: cannot read it: {e}", path.display()))?;
        }
        let m = step.run(&engine, input, output, read)?;
        let r = &m.results;
        let mut t = table(&["rows scored", "rows without a score", "mean reward (scored)", "seconds"]);
        t.add_row(vec![
            num(r["rows_scored"].as_u64().unwrap_or(0)),
            num(r["rows_without_a_score"].as_u64().unwrap_or(0)),
            Cell::new(format!("{:.3}", r["mean_reward_scored"].as_f64().unwrap_or(0.0))),
            Cell::new(format!("{:.1}", m.seconds)),
        ]);
        println!("{t}");
        print_drops(&m);
        Ok(())
    }
}

/// A progress bar over input bytes, drawn on stderr only when it is a terminal.
struct ByteBar {
    bar: ProgressBar,
}

impl ByteBar {
    fn new(what: &'static str) -> Self {
        Self::new_owned(what.to_string())
    }

    fn new_owned(what: String) -> Self {
        // Hidden until the input's size is known (see `follow`).
        let bar = ProgressBar::hidden();
        bar.set_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_message(what);
        ByteBar { bar }
    }

    fn follow(&self, progress: Progress) {
        if !std::io::stderr().is_terminal() {
            return;
        }
        let bar = self.bar.clone();
        bar.set_length(progress.total());
        bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        std::thread::spawn(move || {
            while !bar.is_finished() {
                bar.set_position(progress.done());
                std::thread::sleep(Duration::from_millis(100));
            }
        });
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// A progress bar over rows a slow stage has finished (the total is not known in advance).
struct RowBar {
    bar: ProgressBar,
}

impl RowBar {
    fn new(what: &'static str) -> Self {
        let bar = if std::io::stderr().is_terminal() { ProgressBar::new_spinner() } else { ProgressBar::hidden() };
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} {human_pos} rows, {per_sec}, {elapsed}")
                .expect("valid template"),
        );
        bar.set_message(what);
        RowBar { bar }
    }

    fn follow(&self, rows: RowProgress) {
        if self.bar.is_hidden() {
            return;
        }
        let bar = self.bar.clone();
        std::thread::spawn(move || {
            while !bar.is_finished() {
                bar.set_position(rows.done());
                bar.tick();
                std::thread::sleep(Duration::from_millis(200));
            }
        });
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED).set_content_arrangement(ContentArrangement::Dynamic).set_header(header.to_vec());
    t
}

fn num(n: u64) -> Cell {
    Cell::new(whetstone::notebook::thousands(n)).set_alignment(CellAlignment::Right)
}

fn human_bytes(b: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

/// How much of a text a table cell shows.
const CELL_CHARS: usize = 60;

/// Shortens text for a table cell: newlines shown as ⏎, long text cut with an ellipsis.
fn cell_text(v: &Value, width: usize) -> String {
    let s = match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    let flat: String = s.replace('\n', "⏎");
    if flat.chars().count() > width {
        let cut: String = flat.chars().take(width.saturating_sub(1)).collect();
        format!("{cut}…")
    } else {
        flat
    }
}

fn rows_table(rows: &[Value], width: usize) -> Table {
    let mut columns: Vec<String> = Vec::new();
    for row in rows {
        if let Value::Object(o) = row {
            for k in o.keys() {
                if !columns.contains(k) {
                    columns.push(k.clone());
                }
            }
        }
    }
    let header: Vec<&str> = columns.iter().map(String::as_str).collect();
    let mut t = table(&header);
    for row in rows {
        t.add_row(
            columns.iter().map(|c| Cell::new(cell_text(row.get(c).unwrap_or(&Value::Null), width))).collect::<Vec<_>>(),
        );
    }
    t
}

fn inspection_json(found: &Inspection) -> Value {
    let mut v = serde_json::to_value(found).expect("serialisable");
    // The short form people script against: {"rows", "format", "columns": [names]}, details after.
    let names: Vec<Value> = found.columns.iter().map(|c| Value::String(c.name.clone())).collect();
    if let Value::Object(o) = &mut v {
        let types = o.insert("columns".into(), Value::Array(names)).unwrap_or(Value::Null);
        o.insert("column_types".into(), types);
    }
    v
}

fn print_inspection(found: &Inspection) {
    let mut t = table(&["dataset", "format", "files", "rows", "with response", "conversations", "rejected"]);
    t.add_row(vec![
        Cell::new(found.path.display()),
        Cell::new(&found.format),
        num(found.files as u64),
        num(found.rows),
        num(found.with_response),
        num(found.conversations),
        num(found.rejected.total()),
    ]);
    println!("{t}");
    let mut t = table(&["column", "type", "nullable"]);
    for c in &found.columns {
        t.add_row(vec![Cell::new(&c.name), Cell::new(&c.data_type), Cell::new(if c.nullable { "yes" } else { "no" })]);
    }
    println!("{t}");
    let mut t = table(&["length", "unit", "min", "p50", "p90", "p99", "max", "mean"]);
    for (column, l) in &found.lengths {
        for (unit, d) in [("chars", l.chars), ("words", l.words)] {
            let mut row = vec![Cell::new(column), Cell::new(unit)];
            row.extend([d.min, d.p50, d.p90, d.p99, d.max].map(num));
            row.push(Cell::new(format!("{:.1}", d.mean)).set_alignment(CellAlignment::Right));
            t.add_row(row);
        }
    }
    println!("{t}");
    if !found.samples.is_empty() {
        println!("{}", rows_table(&found.samples, CELL_CHARS));
    }
    let empty: Vec<&Path> = found.inputs.iter().filter(|i| i.rows_in == 0).map(|i| i.path.as_path()).collect();
    if !empty.is_empty() {
        println!("{} empty file(s), e.g. {}", empty.len(), empty[0].display());
    }
}

/// `whet train`.
mod training {
    use anyhow::Result;
    use comfy_table::Cell;
    use indicatif::{ProgressBar, ProgressStyle};
    use whetstone::selfimprove::prompt::PromptMode;
    use whetstone::selfimprove::train::schedule::Shape;
    use whetstone::selfimprove::train::{train as run, Method, TrainConfig};

    use super::{table, TrainArgs};

    /// The settings: the file's, then each flag given.
    fn config(a: TrainArgs) -> Result<TrainConfig> {
        let mut c = match &a.config {
            Some(path) => TrainConfig::read(path)?,
            None => TrainConfig::default(),
        };
        macro_rules! set {
            ($($flag:ident => $field:expr),* $(,)?) => { $(if let Some(v) = a.$flag { $field = v; })* };
        }
        set!(base => c.base, data => c.data, out => c.out, rank => c.lora.r, alpha => c.lora.alpha,
             lora_dropout => c.lora.dropout, targets => c.lora.targets, lr => c.schedule.lr,
             warmup => c.schedule.warmup, epochs => c.epochs, batch => c.batch, accumulation => c.accumulation,
             seed => c.seed, checkpoint_every => c.checkpoint_every, eval_every => c.eval_every,
             kl_beta => c.kl_beta, distill_alpha => c.distill_alpha, dtype => c.dtype);
        // Settings that stay unset unless given.
        macro_rules! set_some {
            ($($flag:ident => $field:expr),* $(,)?) => { $(if a.$flag.is_some() { $field = a.$flag; })* };
        }
        set_some!(eval => c.eval, teacher => c.teacher, steps => c.steps, max_len => c.max_len);
        if let Some(on_error) = a.on_error {
            c.on_error = on_error.into();
        }
        if let Some(m) = a.method {
            c.method = if m == "full" { Method::Full } else { Method::Lora };
        }
        if let Some(m) = a.mode {
            c.prompt_mode = PromptMode::parse(&m)?;
        }
        if let Some(s) = a.schedule {
            c.schedule.shape = Shape::parse(&s)?;
        }
        c.cpu |= a.cpu;
        Ok(c)
    }

    pub fn train(args: TrainArgs) -> Result<()> {
        let config = config(args)?;
        let bar = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            ProgressBar::new(0)
        } else {
            ProgressBar::hidden()
        };
        bar.set_style(
            ProgressStyle::with_template("training [{bar:30}] step {pos}/{len} eta {eta} · {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        let report = run(&config, &mut |m, steps| {
            bar.set_length(steps as u64);
            bar.set_position(m.step as u64);
            let eval = m.eval_loss.map(|l| format!(", held-out {l:.3}")).unwrap_or_default();
            bar.set_message(format!("loss {:.3}{eval} · lr {:.1e} · {:.0} tokens/s", m.loss, m.lr, m.tokens_per_s));
            true
        });
        bar.finish_and_clear();
        let r = report?;
        let mut t = table(&["training", "value"]);
        let loss = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => format!("{a:.3} → {b:.3}"),
            _ => "–".into(),
        };
        let rows = [
            ("method", format!("{:?}", r.method).to_lowercase()),
            ("rows in / used / rejected", format!("{} / {} / {}", r.rows_in, r.examples, r.rejected.total())),
            ("trainable parameters", whetstone::notebook::thousands(r.trainable_parameters as u64)),
            (
                "optimizer steps",
                format!(
                    "{}{}",
                    r.steps,
                    if r.resumed_at > 0 { format!(" (resumed at {})", r.resumed_at) } else { String::new() }
                ),
            ),
            (
                "tokens / tokens per second",
                format!("{} / {:.0}", whetstone::notebook::thousands(r.tokens as u64), r.tokens_per_s),
            ),
            ("training loss, first → last step", loss(Some(r.first_loss), Some(r.final_loss))),
            ("held-out loss, before → after", loss(r.eval_loss_before, r.eval_loss_after)),
            ("held-out rows measured / skipped", format!("{} / {}", r.eval_examples, r.eval_rejected.total())),
            ("seconds", format!("{:.1}", r.seconds)),
            ("output", r.out.display().to_string()),
        ];
        for (k, v) in rows {
            t.add_row(vec![Cell::new(k), Cell::new(v)]);
        }
        println!("{t}");
        for (reason, n) in &r.rejected.by_reason {
            println!("rejected: {reason}: {}", whetstone::notebook::thousands(*n));
        }
        for (reason, n) in &r.eval_rejected.by_reason {
            println!("held-out rows skipped: {reason}: {}", whetstone::notebook::thousands(*n));
        }
        println!(
            "metrics: {} · loss curve: {}",
            r.out.join("metrics.jsonl").display(),
            r.out.join("loss.svg").display()
        );
        Ok(())
    }
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Does diversity selection pay? Selects the same number of rows from a synthetic multi-skill pool
    /// (imbalanced skills, near-copies) with random, rs2, kmq, kmq-random, iterative, kcenter, dedup+kmq and
    /// by-skill (an even split over the skill labels: the headroom); trains the same tiny model on each subset
    /// the same way; prints macro, worst-skill and rare-skill accuracy over seeds, and each method's difference
    /// from random at the same seed. Writes selection.md, selection.svg and results.parquet.
    Selection {
        /// Where everything goes (kept between runs: finished results are read back).
        #[arg(long, default_value = "out/bench-selection")]
        out: PathBuf,
        /// A short version (about a minute): every row of the table, too small to tell methods apart.
        #[arg(long)]
        quick: bool,
        /// Seeds (default: 3, or 1 with --quick).
        #[arg(long)]
        seeds: Option<usize>,
        /// `minilm` (all-MiniLM-L6-v2: run scripts/fetch-minilm.sh), `hashing`, or a BERT model folder.
        #[arg(long, default_value = "minilm")]
        embedder: String,
    },
}

mod rounds {
    use std::path::Path;

    use anyhow::Result;
    use comfy_table::Cell;
    use indicatif::{ProgressBar, ProgressStyle};
    use whetstone::selfimprove::rounds::demo::{self, DemoEvent, DemoSize};
    use whetstone::selfimprove::rounds::{run, Event, RoundMetrics, RoundsConfig};

    use super::{num, table};

    /// Progress on stderr: one line per step, a bar while training.
    struct Progress {
        bar: ProgressBar,
        terminal: bool,
    }

    impl Progress {
        fn new() -> Self {
            let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
            let bar = if terminal { ProgressBar::new(0) } else { ProgressBar::hidden() };
            bar.set_style(
                ProgressStyle::with_template("{prefix} [{bar:30}] step {pos}/{len} eta {eta} · {msg}")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            Progress { bar, terminal }
        }

        fn line(&self, text: String) {
            if self.terminal {
                self.bar.suspend(|| eprintln!("{text}"));
            } else {
                eprintln!("{text}");
            }
        }

        fn event(&self, label: &str, event: &Event) {
            match event {
                Event::Step { round, step } => {
                    self.bar.set_length(0);
                    self.line(format!("{label}round {round} · {step}"));
                }
                Event::Skipped { round, step } => self.line(format!("{label}round {round} · {step} (done earlier)")),
                Event::Train { round, metrics: m, steps } => {
                    self.bar.set_prefix(format!("{label}round {round} · training"));
                    self.bar.set_length(*steps as u64);
                    self.bar.set_position(m.step as u64);
                    self.bar.set_message(format!("loss {:.3} · {:.0} tokens/s", m.loss, m.tokens_per_s));
                    if m.step == *steps {
                        self.bar.set_length(0);
                    }
                }
                Event::Round(m) => self.line(format!(
                    "{label}round {} · held-out accuracy {:.1}%{}",
                    m.round,
                    100.0 * m.held_out_accuracy,
                    if m.round > 0 {
                        format!(" · pass rate {:.1}% · kept {} of {} samples", 100.0 * m.pass_rate, m.kept, m.samples)
                    } else {
                        String::new()
                    }
                )),
                Event::Stopped { round, predicted_gain } => self.line(format!(
                    "{label}stopping after round {round}: the learning curve predicts {:+.1} points next",
                    100.0 * predicted_gain
                )),
            }
        }
    }

    fn pct(v: f64) -> Cell {
        Cell::new(format!("{:.1}%", 100.0 * v))
    }

    fn print_rounds(rounds: &[RoundMetrics]) {
        let mut t = table(&[
            "round",
            "held-out accuracy",
            "samples",
            "pass rate",
            "kept",
            "distinct",
            "clusters covered",
            "train rows",
            "predicted next gain",
        ]);
        for m in rounds {
            let gain = m.predicted_gain.map_or(String::new(), |g| format!("{:+.1} pts", 100.0 * g));
            if m.round == 0 {
                t.add_row(vec![Cell::new("0 (base)"), pct(m.held_out_accuracy)]);
                continue;
            }
            t.add_row(vec![
                num(m.round as u64),
                pct(m.held_out_accuracy),
                num(m.samples),
                pct(m.pass_rate),
                num(m.kept),
                pct(m.distinct),
                pct(m.diversity),
                num(m.train_rows),
                Cell::new(gain),
            ]);
        }
        println!("{t}");
    }

    pub fn rounds(path: &Path) -> Result<()> {
        let config = RoundsConfig::read(path)?;
        let progress = Progress::new();
        let report = run(&config, &mut |e| progress.event("", &e));
        progress.bar.finish_and_clear();
        let report = report?;
        print_rounds(&report.rounds);
        if let Some(s) = &report.stopped_early {
            println!("{s}");
        }
        let out = &report.out;
        println!(
            "report: {} · metrics: {} · chart: {}",
            out.join("report.md").display(),
            out.join("metrics.parquet").display(),
            out.join("rounds.svg").display()
        );
        Ok(())
    }

    pub fn bench_selection(out: &Path, quick: bool, seeds: Option<usize>, embedder: &str) -> Result<()> {
        use whetstone::selfimprove::bench::selection::{self, BenchEvent, BenchSize};
        let mut size = if quick { BenchSize::quick() } else { BenchSize::full() };
        size.seeds = seeds.unwrap_or(size.seeds);
        let progress = Progress::new();
        let report = selection::run(out, &size, embedder, &mut |e| match e {
            BenchEvent::Part(part) => {
                progress.bar.set_length(0);
                progress.line(format!("bench selection · {part}"))
            }
            BenchEvent::Train { seed, method, metrics: m, steps } => {
                progress.bar.set_prefix(format!("seed {seed} · {method} · training"));
                progress.bar.set_length(steps as u64);
                progress.bar.set_position(m.step as u64);
                progress.bar.set_message(format!("loss {:.3} · {:.0} tokens/s", m.loss, m.tokens_per_s));
            }
            BenchEvent::Result(r) => progress.line(format!(
                "seed {} · {}: macro {:.1}% · worst {:.1}% ({}) · rare {:.1}%",
                r.seed,
                r.method,
                100.0 * r.macro_accuracy,
                100.0 * r.worst_accuracy,
                r.worst_skill,
                100.0 * r.rare_accuracy
            )),
        });
        progress.bar.finish_and_clear();
        let report = report?;
        let spread = |m: selection::MeanSd| Cell::new(format!("{:.1} ± {:.1}", 100.0 * m.mean, 100.0 * m.sd));
        let points = |m: selection::MeanSd| Cell::new(format!("{:+.1} ± {:.1}", 100.0 * m.mean, 100.0 * m.sd));
        let mut t = table(&[
            "method",
            "macro accuracy (%)",
            "worst skill (%)",
            "rare skills (%)",
            "macro vs random (pts)",
            "rare vs random (pts)",
        ]);
        for m in &report.summary {
            t.add_row(vec![
                Cell::new(&m.method),
                spread(m.macro_accuracy),
                spread(m.worst_accuracy),
                spread(m.rare_accuracy),
                points(m.macro_vs_random),
                points(m.rare_vs_random),
            ]);
        }
        println!("{t}");
        println!(
            "mean ± sd over {} seed(s); vs random: the difference at the same seed · {} rows selected of {} · {:.0} s · report: {} · chart: {} · raw: {}",
            report.size.seeds,
            (report.size.pool as f64 * report.size.budget).round(),
            report.size.pool,
            report.seconds,
            out.join("selection.md").display(),
            out.join("selection.svg").display(),
            out.join("results.parquet").display()
        );
        Ok(())
    }

    pub fn demo(out: &Path, quick: bool, seed: u64) -> Result<()> {
        let size = if quick { DemoSize::quick() } else { DemoSize::full() };
        let progress = Progress::new();
        let report = demo::run(out, &size, seed, &mut |e| match e {
            DemoEvent::Part(part) => progress.line(format!("demo · {part}")),
            DemoEvent::Pretrain { metrics: m, steps } => {
                progress.bar.set_prefix("pre-training");
                progress.bar.set_length(steps as u64);
                progress.bar.set_position(m.step as u64);
                progress.bar.set_message(format!("loss {:.3} · {:.0} tokens/s", m.loss, m.tokens_per_s));
            }
            DemoEvent::Rounds { control, event } => {
                progress.event(if control { "control · " } else { "filtered · " }, &event)
            }
        });
        progress.bar.finish_and_clear();
        let report = report?;
        let mut t = table(&["round", "held-out accuracy, reward-filtered", "control (no filter)"]);
        for (round, f, c) in report.table() {
            t.add_row(vec![num(round as u64), pct(f), c.map_or(Cell::new(""), pct)]);
        }
        println!("{t}");
        let (first, last) = (report.filtered.rounds.first(), report.filtered.rounds.last());
        if let (Some(a), Some(b)) = (first, last) {
            let control = report.control.rounds.last().map_or(0.0, |m| m.held_out_accuracy);
            println!(
                "reward-filtered rounds: {:.1}% → {:.1}% ({:+.1} points); control ends at {:.1}% · {:.0} s",
                100.0 * a.held_out_accuracy,
                100.0 * b.held_out_accuracy,
                100.0 * (b.held_out_accuracy - a.held_out_accuracy),
                100.0 * control,
                report.seconds
            );
        }
        println!(
            "report: {} · chart: {} · rounds: {}, {}",
            out.join("demo.md").display(),
            out.join("demo.svg").display(),
            out.join("filtered/report.md").display(),
            out.join("control/report.md").display()
        );
        Ok(())
    }
}
