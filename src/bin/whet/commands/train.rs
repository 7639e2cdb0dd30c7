use std::path::PathBuf;

use anyhow::Result;
use comfy_table::Cell;
use whetstone::datasets::OnError;
use whetstone::notebook::thousands;
use whetstone::selfimprove::prompt::PromptMode;
use whetstone::selfimprove::train::order::Order;
use whetstone::selfimprove::train::preference::PairMetrics;
use whetstone::selfimprove::train::schedule::Shape;
use whetstone::selfimprove::train::{train, Method, Objective, TrainConfig};

use crate::args::one_of;
use crate::progress::Bar;
use crate::table::table;

/// Train a model on candle: LoRA adapters (written in the PEFT layout) or all weights (a model folder),
/// on responses (sft: the loss on response tokens) or on chosen/rejected pairs (dpo). Settings come from CONFIG.toml (the fields of TrainConfig), and flags
/// override them; a run stopped midway resumes from its last checkpoint when started again.
#[derive(clap::Args)]
pub struct Args {
    /// A TOML file of settings (base, data, out, method, [lora], [schedule], …); flags override it.
    config: Option<PathBuf>,
    /// The model folder to train (LoRA's base).
    #[arg(long)]
    base: Option<PathBuf>,
    /// Training rows (prompt and response, or conversations): file, folder or glob; for dpo a pairs file
    /// (JSONL: prompt, chosen, rejected, as `whet keep --pairs` writes it).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Held-out rows (dpo: pairs) whose loss is measured before, every --eval-every steps, and after.
    #[arg(long)]
    eval: Option<PathBuf>,
    /// The output folder: an adapter (lora) or a model folder (full).
    #[arg(long)]
    out: Option<PathBuf>,
    /// lora or full.
    #[arg(long, value_parser = one_of::<Method>(&Method::NAMES))]
    method: Option<Method>,
    /// sft (learn the responses) or dpo (prefer chosen to rejected answers).
    #[arg(long, value_parser = one_of::<Objective>(&Objective::NAMES))]
    objective: Option<Objective>,
    /// DPO's β (0.1 by default).
    #[arg(long)]
    beta: Option<f64>,
    /// DPO: weight of the chosen answers' cross-entropy added to the loss (RPO).
    #[arg(long)]
    rpo_alpha: Option<f64>,
    /// chat (through the chat template, as `whet generate` puts prompts) or raw.
    #[arg(long, value_parser = one_of::<PromptMode>(&PromptMode::NAMES))]
    mode: Option<PromptMode>,
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
    #[arg(long, value_parser = one_of::<Shape>(&Shape::NAMES))]
    schedule: Option<Shape>,
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
    #[arg(long, value_parser = one_of::<OnError>(&OnError::NAMES))]
    on_error: Option<OnError>,
    /// The order examples come in: random, file (the rows' order, as `whet order` wrote them), easy-to-hard
    /// (the model's own loss, measured again as it learns) or skill-it (skills weighed by held-out loss).
    #[arg(long, value_parser = one_of::<Order>(&Order::NAMES))]
    order: Option<Order>,
    /// skill-it: the column of --data and --eval naming each row's skill (a source, or `cluster`).
    #[arg(long)]
    skill_column: Option<String>,
    /// easy-to-hard and skill-it: steps between re-orderings (a tenth of the run by default).
    #[arg(long)]
    order_every: Option<usize>,
    /// skill-it's η (0.5 by default).
    #[arg(long)]
    skill_it_eta: Option<f64>,
}

/// The settings: the file's, then each flag given.
fn config(a: Args) -> Result<TrainConfig> {
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
         kl_beta => c.kl_beta, distill_alpha => c.distill_alpha, dtype => c.dtype, on_error => c.on_error,
         method => c.method, objective => c.objective, beta => c.beta, rpo_alpha => c.rpo_alpha, mode => c.prompt_mode, schedule => c.schedule.shape,
         order => c.order, order_every => c.order_every, skill_it_eta => c.skill_it_eta);
    // Settings that stay unset unless given.
    macro_rules! set_some {
        ($($flag:ident => $field:expr),* $(,)?) => { $(if a.$flag.is_some() { $field = a.$flag; })* };
    }
    set_some!(eval => c.eval, teacher => c.teacher, steps => c.steps, max_len => c.max_len,
              skill_column => c.skill_column);
    c.cpu |= a.cpu;
    Ok(c)
}

pub fn run(a: Args) -> Result<()> {
    let config = config(a)?;
    let bar = Bar::steps("training");
    let report = train(&config, &mut |m, steps| {
        bar.train_step(None, m, steps);
        true
    });
    bar.finish();
    let r = report?;
    let mut t = table(&["training", "value"]);
    let loss = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => format!("{a:.3} → {b:.3}"),
        _ => "–".into(),
    };
    let resumed = if r.resumed_at > 0 { format!(" (resumed at {})", r.resumed_at) } else { String::new() };
    let pairs =
        |m: Option<PairMetrics>| m.map_or("–".into(), |m| format!("{:.0}% / {:+.3}", 100.0 * m.accuracy, m.margin));
    let mut rows = vec![
        ("method", format!("{:?}, {:?}", r.method, r.objective).to_lowercase()),
        ("rows in / used / rejected", format!("{} / {} / {}", r.rows_in, r.examples, r.rejected.total())),
        ("trainable parameters", thousands(r.trainable_parameters as u64)),
        ("optimizer steps", format!("{}{resumed}", r.steps)),
        ("tokens / tokens per second", format!("{} / {:.0}", thousands(r.tokens as u64), r.tokens_per_s)),
        ("training loss, first → last step", loss(Some(r.first_loss), Some(r.final_loss))),
        ("held-out loss, before → after", loss(r.eval_loss_before, r.eval_loss_after)),
        ("held-out rows measured / skipped", format!("{} / {}", r.eval_examples, r.eval_rejected.total())),
        (
            "order",
            match r.order_updates {
                0 => r.order.name().to_string(),
                n => format!("{} ({n} re-orderings, {:.1} s measuring)", r.order.name(), r.order_seconds),
            },
        ),
        ("held-out pairs: accuracy / margin, before", pairs(r.eval_pairs_before)),
        ("held-out pairs: accuracy / margin, after", pairs(r.eval_pairs_after)),
        ("seconds", format!("{:.1}", r.seconds)),
        ("output", r.out.display().to_string()),
    ];
    if r.objective == Objective::Sft {
        rows.retain(|(k, _)| !k.starts_with("held-out pairs"));
    }
    for (k, v) in rows {
        t.add_row(vec![Cell::new(k), Cell::new(v)]);
    }
    outln!("{t}");
    if let Some(u) = r.last_order_update.as_ref().filter(|u| !u.skills.is_empty()) {
        let mut t = table(&["skill", "examples left", "held-out loss", "weight"]);
        for s in &u.skills {
            t.add_row(vec![
                Cell::new(&s.skill),
                Cell::new(s.left),
                Cell::new(format!("{:.3}", s.held_out_loss)),
                Cell::new(format!("{:.3}", s.weight)),
            ]);
        }
        outln!("skill-it's last update (step {}, epoch {}):\n{t}", u.step, u.epoch);
    }
    for (reason, n) in &r.rejected.by_reason {
        outln!("rejected: {reason}: {}", thousands(*n));
    }
    for (reason, n) in &r.eval_rejected.by_reason {
        outln!("held-out rows skipped: {reason}: {}", thousands(*n));
    }
    outln!("metrics: {} · loss curve: {}", r.out.join("metrics.jsonl").display(), r.out.join("loss.svg").display());
    if r.order_updates > 0 {
        outln!("re-orderings: {}", r.out.join(whetstone::selfimprove::train::ORDER_LOG).display());
    }
    Ok(())
}
