//! The one progress bar of `whet`: drawn on stderr when stderr is a terminal, hidden otherwise, so that logs
//! and pipes get only the lines a person reads.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use whetstone::datasets::{Progress, RowProgress};
use whetstone::selfimprove::train::StepMetrics;

/// How often a bar reads the library's counters.
const POLL: Duration = Duration::from_millis(200);

pub struct Bar {
    bar: ProgressBar,
    terminal: bool,
}

impl Bar {
    fn styled(template: &str, message: impl Into<String>, visible: bool) -> Self {
        let terminal = std::io::stderr().is_terminal();
        let bar = if terminal && visible { ProgressBar::new(0) } else { ProgressBar::hidden() };
        bar.set_style(ProgressStyle::with_template(template).expect("valid template").progress_chars("=> "));
        bar.set_message(message.into());
        Bar { bar, terminal }
    }

    /// Input bytes read; shown once [`Bar::follow_bytes`] knows the input's size.
    pub fn bytes(what: impl Into<String>) -> Self {
        Self::styled("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}", what, false)
    }

    /// Rows a slow stage has finished, whose total is not known in advance.
    pub fn rows(what: impl Into<String>) -> Self {
        Self::styled("{spinner} {msg} {human_pos} rows, {per_sec}, {elapsed}", what, true)
    }

    /// Something that takes a while and has no count (loading a model); gone when dropped.
    pub fn spinner(what: impl Into<String>) -> Self {
        let b = Self::styled("{spinner} {msg}", what, true);
        b.bar.enable_steady_tick(POLL);
        b
    }

    /// Samples (or rows) of `total`, with the tokens per second the engine makes.
    pub fn samples(what: impl Into<String>, total: u64) -> Self {
        let b = Self::styled("{msg} [{bar:30}] {human_pos}/{human_len} eta {eta} · {prefix}", what, true);
        b.bar.set_length(total);
        b
    }

    /// Optimizer steps of a training run, with its loss; `{prefix}` says which run.
    pub fn steps(prefix: impl Into<String>) -> Self {
        let b = Self::styled("{prefix} [{bar:30}] step {pos}/{len} eta {eta} · {msg}", "", true);
        b.bar.set_prefix(prefix.into());
        b
    }

    /// Follows a reader's byte progress until the bar is finished.
    pub fn follow_bytes(&self, progress: Progress) {
        if !self.terminal {
            return;
        }
        self.bar.set_length(progress.total());
        self.bar.set_draw_target(ProgressDrawTarget::stderr());
        self.poll(move |bar| bar.set_position(progress.done()));
    }

    /// Follows a stage's finished rows until the bar is finished.
    pub fn follow_rows(&self, rows: RowProgress) {
        self.poll(move |bar| {
            bar.set_position(rows.done());
            bar.tick();
        });
    }

    /// Follows the engine's samples and tokens until the bar is finished.
    pub fn follow_samples(&self, counter: std::sync::Arc<whetstone::selfimprove::engine::generate::Counter>) {
        use std::sync::atomic::Ordering::Relaxed;
        let started = Instant::now();
        self.poll(move |bar| {
            bar.set_position(counter.samples.load(Relaxed));
            let per_s = counter.tokens.load(Relaxed) as f64 / started.elapsed().as_secs_f64().max(1e-9);
            bar.set_prefix(format!("{per_s:.0} tokens/s"));
        });
    }

    /// Reads a counter into the bar every [`POLL`] on a thread of its own, until the bar is finished.
    fn poll(&self, read: impl Fn(&ProgressBar) + Send + 'static) {
        if self.bar.is_hidden() {
            return;
        }
        let bar = self.bar.clone();
        std::thread::spawn(move || {
            while !bar.is_finished() {
                read(&bar);
                std::thread::sleep(POLL);
            }
        });
    }

    /// A training step: position, length and loss (`label` replaces the prefix when given).
    pub fn train_step(&self, label: Option<String>, m: &StepMetrics, steps: usize) {
        if let Some(label) = label {
            self.bar.set_prefix(label);
        }
        self.bar.set_length(steps as u64);
        self.bar.set_position(m.step as u64);
        let eval = m.eval_loss.map(|l| format!(", held-out {l:.3}")).unwrap_or_default();
        let pairs = m.pairs.map(|p| format!(" · pairs right {:.0}%", 100.0 * p.accuracy)).unwrap_or_default();
        self.bar
            .set_message(format!("loss {:.3}{eval}{pairs} · lr {:.1e} · {:.0} tokens/s", m.loss, m.lr, m.tokens_per_s));
    }

    /// Empties the bar between parts of a long run.
    pub fn reset(&self) {
        self.bar.set_length(0);
    }

    /// A line on stderr above the bar.
    pub fn line(&self, text: String) {
        if self.terminal {
            self.bar.suspend(|| eprintln!("{text}"));
        } else {
            eprintln!("{text}");
        }
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}
