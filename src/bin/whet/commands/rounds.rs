use std::path::PathBuf;

use anyhow::Result;
use comfy_table::Cell;
use whetstone::selfimprove::rounds::{run as run_rounds, Event, RoundMetrics, RoundsConfig};

use crate::progress::Bar;
use crate::table::{num, pct, table};

/// Self-improvement rounds from CONFIG.toml: select prompts → generate → reward → keep → curate → mix
/// with replay → train → merge → evaluate, per round, under OUT/round-<r>/. Started again after a stop
/// (or kill -9), it redoes no finished step. Writes metrics.parquet, rounds.svg and report.md.
#[derive(clap::Args)]
pub struct Args {
    config: PathBuf,
}

pub fn run(a: Args) -> Result<()> {
    let config = RoundsConfig::read(&a.config)?;
    let bar = Bar::steps("");
    let report = run_rounds(&config, &mut |e| show(&bar, "", &e));
    bar.finish();
    let report = report?;
    print_rounds(&report.rounds)?;
    if let Some(s) = &report.stopped_early {
        outln!("{s}");
    }
    let out = &report.out;
    outln!(
        "report: {} · metrics: {} · chart: {}",
        out.join("report.md").display(),
        out.join("metrics.parquet").display(),
        out.join("rounds.svg").display()
    );
    Ok(())
}

/// A rounds event on stderr: a line per step, the bar while training. `label` says which run (demo arms).
pub fn show(bar: &Bar, label: &str, event: &Event) {
    match event {
        Event::Step { round, step } => {
            bar.reset();
            bar.line(format!("{label}round {round} · {step}"));
        }
        Event::Skipped { round, step } => bar.line(format!("{label}round {round} · {step} (done earlier)")),
        Event::Train { round, metrics, steps } => {
            bar.train_step(Some(format!("{label}round {round} · training")), metrics, *steps);
            if metrics.step == *steps {
                bar.reset();
            }
        }
        Event::Round(m) => bar.line(format!(
            "{label}round {} · held-out accuracy {:.1}%{}",
            m.round,
            100.0 * m.held_out_accuracy,
            if m.round > 0 {
                format!(" · pass rate {:.1}% · kept {} of {} samples", 100.0 * m.pass_rate, m.kept, m.samples)
            } else {
                String::new()
            }
        )),
        Event::Stopped { round, predicted_gain } => bar.line(format!(
            "{label}stopping after round {round}: the learning curve predicts {:+.1} points next",
            100.0 * predicted_gain
        )),
    }
}

fn print_rounds(rounds: &[RoundMetrics]) -> Result<()> {
    let dpo = rounds.iter().any(|m| m.dpo_accuracy.is_some());
    let mut header = vec![
        "round",
        "held-out accuracy",
        "samples",
        "pass rate",
        "kept",
        "distinct",
        "clusters covered",
        "train rows",
    ];
    if dpo {
        header.push("DPO pairs (last step right)");
    }
    let first_error = rounds.iter().any(|m| m.first_error_seconds > 0.0);
    if first_error {
        header.push("first-error roll-outs (s)");
    }
    header.push("predicted next gain");
    let mut t = table(&header);
    for m in rounds {
        let gain = m.predicted_gain.map_or(String::new(), |g| format!("{:+.1} pts", 100.0 * g));
        if m.round == 0 {
            t.add_row(vec![Cell::new("0 (base)"), pct(m.held_out_accuracy)]);
            continue;
        }
        let mut row = vec![
            num(m.round as u64),
            pct(m.held_out_accuracy),
            num(m.samples),
            pct(m.pass_rate),
            num(m.kept),
            pct(m.distinct),
            pct(m.diversity),
            num(m.train_rows),
        ];
        if dpo {
            let right = m.dpo_accuracy.map_or(String::new(), |a| format!(" ({:.0}%)", 100.0 * a));
            row.push(Cell::new(format!("{}{right}", m.dpo_pairs)));
        }
        if first_error {
            row.push(Cell::new(format!("{} ({:.0})", m.first_error_rollouts, m.first_error_seconds)));
        }
        row.push(Cell::new(gain));
        t.add_row(row);
    }
    outln!("{t}");
    Ok(())
}
