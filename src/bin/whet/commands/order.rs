use std::path::PathBuf;

use anyhow::Result;
use comfy_table::Cell;
use whetstone::datasets::{run_stage, Done};
use whetstone::selfimprove::prompt::PromptMode;
use whetstone::selfimprove::train::order::{Order, OrderStage};

use crate::args::{one_of, ReadArgs};
use crate::table::{drops, num, table};

/// Write the rows in an order for training to follow (`whet train --order file`): random (a seeded shuffle)
/// or easy-to-hard (a model's mean loss on each row's response, lowest first, written as `order_loss`; rows
/// it cannot measure go last). skill-it decides as the model learns: `whet train --order skill-it`.
#[derive(clap::Args)]
pub struct Args {
    input: PathBuf,
    output: PathBuf,
    /// random or easy-to-hard.
    #[arg(long, value_parser = one_of::<Order>(&Order::NAMES))]
    by: Order,
    /// The model folder whose loss orders the rows (easy-to-hard).
    #[arg(long)]
    model: Option<PathBuf>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// chat (through the chat template, as training puts prompts) or raw.
    #[arg(long, value_parser = one_of::<PromptMode>(&PromptMode::NAMES), default_value = "chat")]
    mode: PromptMode,
    /// Rows per forward pass while measuring.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    #[command(flatten)]
    read: ReadArgs,
}

pub fn run(a: Args) -> Result<()> {
    let stage = OrderStage { by: a.by, model: a.model, seed: a.seed, mode: a.mode, batch: a.batch };
    let Done { manifest: m, results: r } = run_stage(&stage, &a.input, &a.output, a.read.options()?, |_, _| {})?;
    let mut t = table(&["rows", "order", "measured", "not measured (last)", "loss: lowest / median / highest"]);
    t.add_row(vec![
        num(r.rows as u64),
        Cell::new(a.by.name()),
        num(r.measured as u64),
        num(r.unmeasured as u64),
        Cell::new(r.losses.map_or("–".into(), |[lo, mid, hi]| format!("{lo:.3} / {mid:.3} / {hi:.3}"))),
    ]);
    outln!("{t}");
    drops(&m)?;
    Ok(())
}
