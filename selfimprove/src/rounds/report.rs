//! What a run of rounds leaves for people: the per-round metrics as a dataset (`metrics.parquet`, and JSON
//! lines), a chart (`rounds.svg`) and a short report (`report.md`).

use std::path::Path;
use std::sync::Arc;

use crate::chart::{self, Axes, Line};
use crate::error::{Error, Result};

use super::{curve, RoundMetrics, RoundsConfig};

/// Rows of serialisable values as one Arrow batch (schema inferred from the values).
fn batch_of<T: serde::Serialize>(rows: &[T]) -> Result<arrow::array::RecordBatch> {
    let values: Vec<serde_json::Value> =
        rows.iter().map(serde_json::to_value).collect::<std::result::Result<_, _>>()?;
    let schema = arrow::json::reader::infer_json_schema_from_iterator(values.iter().map(Ok))?;
    let mut decoder = arrow::json::ReaderBuilder::new(Arc::new(schema)).build_decoder()?;
    decoder.serialize(&values)?;
    decoder.flush()?.ok_or_else(|| Error::Invalid("no rows to write".into()))
}

/// Writes rows as a Parquet dataset and as JSON lines, each atomically.
pub fn write_rows<T: serde::Serialize>(rows: &[T], parquet: &Path) -> Result<()> {
    let batch = batch_of(rows)?;
    let mut writer = whetstone_datasets::write::DatasetWriter::create(
        parquet,
        whetstone_datasets::write::OutputFormat::Parquet,
        batch.schema(),
    )?;
    writer.write(&batch)?;
    writer.finish()?;
    let lines: String =
        rows.iter().map(|r| serde_json::to_string(r).map(|l| l + "\n")).collect::<std::result::Result<_, _>>()?;
    Ok(whetstone_datasets::write::write_atomic(&parquet.with_extension("jsonl"), lines.as_bytes())?)
}

/// A line chart of one value per round for several runs (`series`: name, points in [0, 1]), in percent.
pub fn chart(title: &str, y: &str, series: &[(String, Vec<(usize, f64)>)]) -> Result<String> {
    chart_over(title, y, &[], series)
}

/// [`chart`] over named points on the x axis (`x_names[i]` labels x = i) instead of rounds.
pub fn chart_over(title: &str, y: &str, x_names: &[String], series: &[(String, Vec<(usize, f64)>)]) -> Result<String> {
    let last = series.iter().flat_map(|(_, p)| p.iter().map(|p| p.0)).max().unwrap_or(1).max(1);
    let x_label = |x: &f64| match x_names.get(x.round() as usize) {
        Some(name) => name.clone(),
        None => format!("{x:.0}"),
    };
    let axes = Axes {
        x: -0.2..last as f64 + 0.2,
        y: 0.0..100.0,
        x_desc: if x_names.is_empty() { "round" } else { "" },
        y_desc: y,
        x_ticks: Some((last + 1, &x_label)),
    };
    let lines: Vec<Line> = series
        .iter()
        .map(|(name, points)| Line {
            name: name.clone(),
            points: points.iter().map(|&(r, v)| (r as f64, 100.0 * v)).collect(),
            dots: Some(4),
        })
        .collect();
    chart::lines(title, &axes, &lines)
}

fn percent(v: f64) -> String {
    format!("{:.1}%", 100.0 * v)
}

/// The per-round table in Markdown.
pub fn markdown_table(rounds: &[RoundMetrics]) -> String {
    let mut t = String::from(
        "| round | held-out accuracy | samples | pass rate | kept | distinct | clusters covered | replay | train rows | predicted next gain |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
    );
    for m in rounds {
        let gain = m.predicted_gain.map_or("".into(), |g| format!("{:+.1} pts", 100.0 * g));
        if m.round == 0 {
            t.push_str(&format!("| 0 (base) | {} | | | | | | | | |\n", percent(m.held_out_accuracy)));
            continue;
        }
        t.push_str(&format!(
            "| {} | {} | {} | {} | {} ({}) | {} | {} | {} | {} | {} |\n",
            m.round,
            percent(m.held_out_accuracy),
            m.samples,
            percent(m.pass_rate),
            m.kept,
            percent(m.kept_fraction),
            percent(m.distinct),
            percent(m.diversity),
            m.replay_rows,
            m.train_rows,
            gain
        ));
    }
    t
}

/// Rewrites `metrics.parquet` (and `.jsonl`), `rounds.svg` and `report.md` in the round folder.
pub fn write(config: &RoundsConfig, rounds: &[RoundMetrics], stopped: Option<&str>) -> Result<()> {
    let out = &config.out;
    write_rows(rounds, &out.join("metrics.parquet"))?;
    let series = vec![
        ("held-out accuracy".to_string(), rounds.iter().map(|m| (m.round, m.held_out_accuracy)).collect()),
        ("sample pass rate".to_string(), rounds.iter().skip(1).map(|m| (m.round, m.pass_rate)).collect()),
    ];
    let svg = chart("self-improvement rounds", "percent", &series)?;
    whetstone_datasets::write::write_atomic(&out.join("rounds.svg"), svg.as_bytes())?;

    let first = rounds.first().map_or(0.0, |m| m.held_out_accuracy);
    let last = rounds.last().map_or(0.0, |m| m.held_out_accuracy);
    let points: Vec<(f64, f64)> = rounds.iter().map(|m| (m.round as f64, m.held_out_accuracy)).collect();
    let mut text = format!(
        "# Rounds: {}\n\nBase `{}`; {} rounds of {} prompts × {} samples, kept by `{}` (reward ≥ {}), rewards {:?}, \
         training: {} from the {} model; replay {:.0}% of each training set.\n\n",
        out.display(),
        config.base.display(),
        rounds.len().saturating_sub(1),
        if config.select.method == "all" { "all".to_string() } else { config.select.prompts.to_string() },
        config.generate.n,
        config.keep.by,
        config.keep.min_reward,
        config.reward,
        format!("{:?}", config.train.method).to_lowercase(),
        match config.from {
            super::TrainFrom::Previous => "previous round's",
            super::TrainFrom::Base => "base",
        },
        100.0 * config.replay_fraction,
    );
    text.push_str(&markdown_table(rounds));
    text.push_str(&format!(
        "\nHeld-out accuracy {} → {} ({:+.1} points) over {} rounds.\n",
        percent(first),
        percent(last),
        100.0 * (last - first),
        rounds.len().saturating_sub(1)
    ));
    if let Some(c) = curve::fit(&points) {
        text.push_str(&format!(
            "\nLearning curve: accuracy(r) ≈ {:.3} − {:.3}·e^(−{:.2}·r) (RMSE {:.3}); it levels off near {} and \
             predicts {:+.1} points from one more round.\n",
            c.a,
            c.b,
            c.c,
            c.rmse,
            percent(c.a),
            100.0 * c.next_gain((points.len() - 1) as f64)
        ));
    }
    if let Some(s) = stopped {
        text.push_str(&format!("\n{s}.\n"));
    }
    text.push_str(
        "\nFiles: `metrics.parquet` (one row per round), `rounds.svg`, and each round's steps under `round-<r>/`.\n",
    );
    whetstone_datasets::write::write_atomic(&out.join("report.md"), text.as_bytes())?;
    Ok(())
}
