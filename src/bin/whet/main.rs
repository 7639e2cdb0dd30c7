//! `whet`: the whetstone command line. Thin: each command in `commands/` is its arguments and a `run` that
//! calls the library; this file parses and dispatches, and prints an error with its causes.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// `println!` for commands: a line on stdout, whose failure (a closed pipe) returns from the command.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::table::out(format_args!($($arg)*))?
    };
}

mod args;
mod commands;
mod progress;
mod table;

use commands::*;

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

// Each command's help is the doc comment of its `Args`, in its own file.
#[derive(Subcommand)]
enum Command {
    Inspect(inspect::Args),
    Convert(convert::Args),
    Embed(embed::Args),
    Kmeans(kmeans::Args),
    Cluster(cluster::Args),
    Select(select::Args),
    Filter(filter::Args),
    Dedup(dedup::Args),
    Decontam(decontam::Args),
    Curate(curate::Args),
    Head(head::Args),
    Sql(sql::Args),
    Generate(generate::Args),
    Score(score::Args),
    Order(order::Args),
    Reward(reward::Args),
    Judge(judge::Args),
    Keep(keep::Args),
    Rounds(rounds::Args),
    Demo(demo::Args),
    Bench(bench::Args),
    Train(Box<train::Args>),
    Model(model::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let done = match cli.command {
        Command::Inspect(a) => inspect::run(a),
        Command::Convert(a) => convert::run(a),
        Command::Embed(a) => embed::run(a),
        Command::Kmeans(a) => kmeans::run(a),
        Command::Cluster(a) => cluster::run(a),
        Command::Select(a) => select::run(a),
        Command::Filter(a) => filter::run(a),
        Command::Dedup(a) => dedup::run(a),
        Command::Decontam(a) => decontam::run(a),
        Command::Curate(a) => curate::run(a),
        Command::Head(a) => head::run(a),
        Command::Sql(a) => sql::run(a),
        Command::Generate(a) => generate::run(a),
        Command::Score(a) => score::run(a),
        Command::Order(a) => order::run(a),
        Command::Reward(a) => reward::run(a),
        Command::Judge(a) => judge::run(a),
        Command::Keep(a) => keep::run(a),
        Command::Rounds(a) => rounds::run(a),
        Command::Demo(a) => demo::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Train(a) => train::run(*a),
        Command::Model(a) => model::run(a),
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away (`whet head … | head -1`): nothing more to say to it.
        Err(e) if broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", with_causes(&e));
            ExitCode::FAILURE
        }
    }
}

fn broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
}

/// The error and each cause its message does not already say (library errors often quote their source).
fn with_causes(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text = format!("{text}: {cause}");
        }
    }
    text
}
