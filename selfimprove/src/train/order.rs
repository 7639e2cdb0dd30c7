//! The order in which the trainer sees its examples (SFT), and `whet order`, the stage that writes a dataset
//! in an order for a later run to follow.
//!
//! - `random`: each epoch a shuffle that is a function of the seed and the epoch (what training always did).
//! - `file`: the rows' own order, every epoch (a dataset `whet order` wrote).
//! - `easy-to-hard` (self-paced, "Cyclical Curriculum Learning", "Instruction Tuning with Human
//!   Curriculum"): at the start of each epoch and every `order_every` steps, the examples the epoch has not yet
//!   seen are measured by the model as it is now (mean loss of their response tokens) and taken lowest first.
//! - `skill-it` (Skill-it, Chen et al. 2023, its online mixture with no skills graph): skills are the values
//!   of a label column (a source, or the `cluster` that `whet kmeans` writes). Every `order_every` steps the
//!   held-out loss of each skill is measured; skill `s` is then drawn with weight
//!   `left_s · exp(η · Σ of its last three held-out losses)`, where `left_s` is how many of its examples the
//!   epoch has still to show (so the prior is the data's own mixture). Weights and losses are logged at each
//!   update (`order.jsonl`).
//!
//! Every order keeps epochs whole: each example is seen once per epoch; an order changes only which come
//! first. The state of the curriculum is in the trainer's checkpoints, so a stopped run resumes exactly.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Array, Float64Array};
use arrow::datatypes::{DataType, Field};
use candle_core::{DType, Device};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::{Deserialize, Serialize};
use whetstone_datasets::{Reordering, Rows, Stage};

use super::data::{epoch_order, example, Batching, Example, Step};
use super::llama::{Llama, Trainable};
use crate::error::{Error, Result};
use crate::prompt::{row_prompt, row_response, PromptMode, PromptTokenizer};
use crate::ModelFolder;

/// The order of a run's examples.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Order {
    #[default]
    Random,
    File,
    EasyToHard,
    SkillIt,
}

impl Order {
    pub const NAMES: [&'static str; 4] = ["random", "file", "easy-to-hard", "skill-it"];

    pub fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    /// Whether the order is decided as the model learns (measured by it).
    pub fn adaptive(self) -> bool {
        matches!(self, Order::EasyToHard | Order::SkillIt)
    }
}

/// Held-out losses summed over this many of skill-it's last updates (its window).
pub const SKILL_IT_WINDOW: usize = 3;

/// A skill at an update of skill-it's weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkillWeight {
    pub skill: String,
    /// Examples of the skill the epoch has still to show.
    pub left: usize,
    /// Mean held-out loss (nats per response token).
    pub held_out_loss: f64,
    /// The chance that the next example drawn is of this skill.
    pub weight: f64,
}

/// One re-ordering, as `order.jsonl` records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderUpdate {
    /// The optimizer steps done before it.
    pub step: usize,
    /// The epoch it orders (1: the first).
    pub epoch: u64,
    /// Examples it put in order (easy-to-hard: those the epoch has still to show).
    pub ordered: usize,
    /// Seconds spent measuring.
    pub seconds: f64,
    /// skill-it: each skill's weight and held-out loss.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skills: Vec<SkillWeight>,
    /// easy-to-hard: the lowest, median and highest example loss.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub losses: Option<[f64; 3]>,
}

/// Where a curriculum is: saved in checkpoints.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OrderState {
    /// Epochs started.
    pub epochs: u64,
    /// The current epoch's examples not yet trained on, in the order they come (skill-it: in the order they
    /// come within each skill).
    pub queue: Vec<usize>,
    /// skill-it: the held-out loss of each skill at each update.
    pub history: Vec<Vec<f64>>,
    pub updates: Vec<OrderUpdate>,
}

/// Skills of the training and held-out examples: indices into `names`.
#[derive(Debug, Clone, PartialEq)]
pub struct Skills {
    pub names: Vec<String>,
    pub train: Vec<usize>,
    pub held_out: Vec<usize>,
}

impl Skills {
    /// From each example's label. Every skill of the training examples needs held-out examples (its loss
    /// weighs it); held-out examples of skills not trained on are left out.
    pub fn new(train: &[String], held_out: &[String]) -> Result<Skills> {
        let names: Vec<String> = train.iter().cloned().collect::<std::collections::BTreeSet<_>>().into_iter().collect();
        let index = |label: &String| names.binary_search(label).ok();
        let held: Vec<usize> = held_out.iter().map(|l| index(l).unwrap_or(usize::MAX)).collect();
        if let Some(missing) = names.iter().enumerate().find(|(i, _)| !held.contains(i)) {
            return Err(Error::Invalid(format!(
                "skill-it: skill {:?} has training rows but no held-out rows to measure it by; add some to `eval`",
                missing.1
            )));
        }
        Ok(Skills { train: train.iter().map(|l| index(l).expect("a training label")).collect(), held_out: held, names })
    }
}

/// What a curriculum asks the model to measure.
pub enum Measure<'a> {
    /// The mean loss of each of these training examples.
    Examples(&'a [usize]),
    /// The mean loss of each skill's held-out examples, in [`Skills::names`] order.
    Skills,
}

/// Decides each optimizer step's examples as training goes, for an adaptive [`Order`].
pub struct Curriculum<'a> {
    pub order: Order,
    pub examples: &'a [Example],
    pub skills: Option<&'a Skills>,
    pub batching: Batching,
    pub seed: u64,
    /// Steps between re-orderings (at least 1).
    pub every: usize,
    /// skill-it's η.
    pub eta: f64,
    pub state: OrderState,
}

impl Curriculum<'_> {
    /// The examples of step `step` (counted from 0), re-ordering first where it is due; `measure` runs the
    /// model as it is now.
    pub fn next_step(&mut self, step: usize, measure: &mut dyn FnMut(Measure) -> Result<Vec<f64>>) -> Result<Step> {
        let n = self.examples.len();
        let new_epoch = self.state.queue.is_empty();
        if new_epoch {
            self.state.queue = epoch_order(n, self.seed, self.state.epochs);
            self.state.epochs += 1;
        }
        let due = step % self.every == 0;
        match self.order {
            Order::EasyToHard if due || new_epoch => self.hardest_last(step, measure)?,
            Order::SkillIt if due => self.weigh_skills(step, measure)?,
            _ => {}
        }
        let Batching { batch, accumulation, max_len, packing } = self.batching;
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(super::step_seed(self.seed ^ 0x5eed_0fde_5c0d_e0ff, step));
        let mut rows: Vec<Vec<usize>> = Vec::new();
        let mut used = 0;
        while !self.state.queue.is_empty() {
            let at = match self.order {
                Order::SkillIt => self.draw_skill(&mut rng),
                _ => 0,
            };
            let i = self.state.queue[at];
            let len = self.examples[i].tokens.len();
            let full = rows.len() == batch * accumulation;
            match rows.last_mut() {
                Some(row) if packing && used + len <= max_len => {
                    row.push(i);
                    used += len;
                }
                _ if full => break,
                _ => {
                    rows.push(vec![i]);
                    used = len;
                }
            }
            self.state.queue.remove(at);
        }
        let done = (n - self.state.queue.len()) as f64 / n.max(1) as f64;
        Ok(Step {
            micro_batches: rows.chunks(batch).map(|c| c.to_vec()).collect(),
            epoch: (self.state.epochs - 1) as f64 + done,
        })
    }

    /// easy-to-hard: the epoch's remaining examples by the model's loss on them, lowest first (ties keep
    /// their shuffled order; an example that cannot be measured goes last).
    fn hardest_last(&mut self, step: usize, measure: &mut dyn FnMut(Measure) -> Result<Vec<f64>>) -> Result<()> {
        let started = Instant::now();
        let losses = measure(Measure::Examples(&self.state.queue))?;
        let scored = lowest_loss_first(&self.state.queue, &losses);
        let losses = spread(&scored);
        self.state.queue = scored.into_iter().map(|s| s.0).collect();
        self.state.updates.push(OrderUpdate {
            step,
            epoch: self.state.epochs,
            ordered: self.state.queue.len(),
            seconds: started.elapsed().as_secs_f64(),
            skills: vec![],
            losses,
        });
        Ok(())
    }

    /// How many examples of each skill the epoch has still to show.
    fn left(&self) -> Vec<usize> {
        let skills = self.skills.expect("skill-it has skills");
        let mut left = vec![0; skills.names.len()];
        self.state.queue.iter().for_each(|&i| left[skills.train[i]] += 1);
        left
    }

    /// Each skill's draw weight now: examples left × exp(η × its last held-out losses summed), normalised.
    fn weights(&self) -> Vec<f64> {
        let left = self.left();
        let start = self.state.history.len().saturating_sub(SKILL_IT_WINDOW);
        let recent = &self.state.history[start..];
        // In log space, shifted by the largest exponent, so large losses do not overflow.
        let logits: Vec<f64> = (0..left.len())
            .map(|s| {
                let sum: f64 = recent.iter().map(|losses| losses[s]).sum();
                if left[s] == 0 {
                    f64::NEG_INFINITY
                } else {
                    (left[s] as f64).ln() + self.eta * sum
                }
            })
            .collect();
        let top = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let raw: Vec<f64> = logits.iter().map(|l| if l.is_finite() { (l - top).exp() } else { 0.0 }).collect();
        let total: f64 = raw.iter().sum();
        raw.iter().map(|w| w / total.max(f64::MIN_POSITIVE)).collect()
    }

    /// skill-it: measures each skill's held-out loss and logs the weights it gives.
    fn weigh_skills(&mut self, step: usize, measure: &mut dyn FnMut(Measure) -> Result<Vec<f64>>) -> Result<()> {
        let started = Instant::now();
        let losses = measure(Measure::Skills)?;
        self.state.history.push(losses.clone());
        let (left, weights) = (self.left(), self.weights());
        let names = &self.skills.expect("skill-it has skills").names;
        let skills = (0..names.len())
            .map(|s| SkillWeight {
                skill: names[s].clone(),
                left: left[s],
                held_out_loss: losses[s],
                weight: weights[s],
            })
            .collect();
        self.state.updates.push(OrderUpdate {
            step,
            epoch: self.state.epochs,
            ordered: self.state.queue.len(),
            seconds: started.elapsed().as_secs_f64(),
            skills,
            losses: None,
        });
        Ok(())
    }

    /// skill-it: the queue position of the next example, of a skill drawn by weight.
    fn draw_skill(&self, rng: &mut Xoshiro256PlusPlus) -> usize {
        let skills = self.skills.expect("skill-it has skills");
        let weights = self.weights();
        let mut u: f64 = rng.gen::<f64>();
        let mut skill = weights.iter().rposition(|&w| w > 0.0).unwrap_or(0);
        for (s, w) in weights.iter().enumerate() {
            if u < *w {
                skill = s;
                break;
            }
            u -= w;
        }
        self.state.queue.iter().position(|&i| skills.train[i] == skill).unwrap_or(0)
    }
}

/// The column `whet order --by easy-to-hard` writes: the model's mean loss on the row's response tokens
/// (null where the row could not be measured).
pub const ORDER_LOSS: &str = "order_loss";

/// `whet order`: writes a dataset in the order a later `whet train --order file` follows.
#[derive(Debug, Clone)]
pub struct OrderStage {
    pub by: Order,
    /// The model whose loss orders the rows (easy-to-hard).
    pub model: Option<PathBuf>,
    pub seed: u64,
    pub mode: PromptMode,
    /// Rows per forward pass while measuring.
    pub batch: usize,
}

/// What `whet order` found.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OrderResults {
    pub rows: usize,
    /// easy-to-hard: rows measured, and rows that could not be (no response, longer than the model's
    /// context), which go last in their input order.
    pub measured: usize,
    pub unmeasured: usize,
    /// easy-to-hard: the lowest, median and highest loss.
    pub losses: Option<[f64; 3]>,
}

impl OrderStage {
    fn check(&self) -> Result<()> {
        match (self.by, &self.model) {
            (Order::Random, _) | (Order::EasyToHard, Some(_)) => Ok(()),
            (Order::EasyToHard, None) => {
                Err(Error::Invalid("easy-to-hard orders rows by a model's loss on them: give --model".into()))
            }
            (Order::File, _) => Err(Error::Invalid(
                "file keeps the rows' order: there is nothing to write (whet order writes random or easy-to-hard)"
                    .into(),
            )),
            (Order::SkillIt, _) => Err(Error::Invalid(
                "skill-it decides the order while training: use `whet train --order skill-it` (whet order writes \
                 random or easy-to-hard)"
                    .into(),
            )),
        }
    }

    /// The model's loss on each row (NaN where it cannot be measured).
    fn losses(&self, model_dir: &Path, batch: &arrow::array::RecordBatch) -> Result<Vec<f64>> {
        let folder = ModelFolder::open(model_dir)?;
        let model_dir = super::unquantised(&folder, model_dir)?;
        let tokenizer = PromptTokenizer::new(&folder)?;
        let shape = super::llama::LlamaConfig::read(&model_dir)?;
        let model = Llama::load(&model_dir, &Device::Cpu, DType::F32, &Trainable::Frozen)?;
        let mut examples = Vec::new();
        let mut at = Vec::new();
        for row in 0..batch.num_rows() {
            let Some(response) = row_response(batch, row).filter(|r| !r.is_empty()) else { continue };
            let e = example(&tokenizer, &row_prompt(batch, row), &response, self.mode)?;
            if e.tokens.len() <= shape.context {
                examples.push(e);
                at.push(row);
            }
        }
        let which: Vec<usize> = (0..examples.len()).collect();
        let sums = super::example_losses(&model, &examples, &which, self.batch, shape.context, false)?;
        let mut losses = vec![f64::NAN; batch.num_rows()];
        for (row, (sum, count)) in at.into_iter().zip(sums) {
            losses[row] = if count > 0.0 { sum / count } else { f64::NAN };
        }
        Ok(losses)
    }
}

impl Stage for OrderStage {
    type Results = OrderResults;
    type Error = Error;

    fn name(&self) -> &str {
        "order"
    }

    fn parameters(&self) -> serde_json::Value {
        serde_json::json!({
            "by": self.by.name(),
            "model": self.model.as_ref().map(|m| m.display().to_string()),
            "seed": self.seed,
            "mode": self.mode,
        })
    }

    fn run(&self, rows: &mut Rows) -> Result<OrderResults> {
        self.check()?;
        let mut results = OrderResults::default();
        rows.reorder(|all| {
            let n = all.num_rows();
            results.rows = n;
            let shuffled = epoch_order(n, self.seed, 0);
            let Some(model) = self.model.as_ref().filter(|_| self.by == Order::EasyToHard) else {
                return Ok(Reordering { order: shuffled.iter().map(|&r| r as u32).collect(), columns: vec![] });
            };
            let losses = self.losses(model, all)?;
            let scored = lowest_loss_first(&(0..n).collect::<Vec<_>>(), &losses);
            let order: Vec<usize> = scored.iter().map(|s| s.0).collect();
            results.measured = losses.iter().filter(|l| l.is_finite()).count();
            results.unmeasured = n - results.measured;
            results.losses = spread(&scored);
            let column = Float64Array::from(
                order.iter().map(|&r| losses[r].is_finite().then_some(losses[r])).collect::<Vec<_>>(),
            );
            Ok(Reordering {
                order: order.iter().map(|&r| r as u32).collect(),
                columns: vec![(Field::new(ORDER_LOSS, DataType::Float64, true), Arc::new(column) as Arc<dyn Array>)],
            })
        })?;
        Ok(results)
    }
}

/// The rows' skills for skill-it: column `column`'s values as text, one per row (nulls are an error).
pub(crate) fn labels_of(
    batch: &arrow::array::RecordBatch,
    column: &str,
    input: &Path,
) -> Result<arrow::array::StringArray> {
    let Some(values) = batch.column_by_name(column) else {
        let mut names: Vec<String> = batch.schema().fields().iter().map(|f| f.name().clone()).collect();
        names.sort();
        return Err(Error::Invalid(format!(
            "{}: no column {column:?} to take skills from (columns: {})",
            input.display(),
            names.join(", ")
        )));
    };
    let text = arrow::compute::cast(values, &DataType::Utf8)?;
    Ok(arrow::array::AsArray::as_string::<i32>(&text).clone())
}

/// `items` with their `losses` (one each), lowest loss first: ties keep their order, and an item that could not
/// be measured (a loss that is not finite) goes last.
fn lowest_loss_first(items: &[usize], losses: &[f64]) -> Vec<(usize, f64)> {
    let mut scored: Vec<(usize, f64)> = items.iter().copied().zip(losses.iter().copied()).collect();
    scored.sort_by(|a, b| match (a.1.is_finite(), b.1.is_finite()) {
        (true, true) => a.1.total_cmp(&b.1),
        (x, y) => y.cmp(&x),
    });
    scored
}

/// The lowest, median and highest measured loss of [`lowest_loss_first`]'s order.
fn spread(scored: &[(usize, f64)]) -> Option<[f64; 3]> {
    let finite: Vec<f64> = scored.iter().map(|s| s.1).filter(|l| l.is_finite()).collect();
    (!finite.is_empty()).then(|| [finite[0], finite[finite.len() / 2], finite[finite.len() - 1]])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(n: usize) -> Example {
        Example { tokens: (0..n as u32).collect(), prompt_len: 1 }
    }

    fn curriculum<'a>(order: Order, examples: &'a [Example], skills: Option<&'a Skills>) -> Curriculum<'a> {
        Curriculum {
            order,
            examples,
            skills,
            batching: Batching { batch: 2, accumulation: 1, max_len: 8, packing: false },
            seed: 3,
            every: 2,
            eta: 1.0,
            state: OrderState::default(),
        }
    }

    #[test]
    fn easy_to_hard_takes_the_lowest_loss_first_and_shows_each_example_once_an_epoch() {
        let examples: Vec<Example> = (0..6).map(|i| ex(2 + i)).collect();
        let mut c = curriculum(Order::EasyToHard, &examples, None);
        // The loss of example i is 10 - i: the longest examples are the "easiest".
        let mut measure = |m: Measure| -> Result<Vec<f64>> {
            Ok(match m {
                Measure::Examples(w) => w.iter().map(|&i| 10.0 - i as f64).collect(),
                Measure::Skills => unreachable!(),
            })
        };
        let mut seen = Vec::new();
        for step in 0..3 {
            seen.extend(c.next_step(step, &mut measure).unwrap().micro_batches.concat().concat());
        }
        assert_eq!(seen, vec![5, 4, 3, 2, 1, 0]);
        let next = c.next_step(3, &mut measure).unwrap();
        assert_eq!(next.micro_batches.concat().concat(), vec![5, 4], "a new epoch starts over, measured again");
        assert!((next.epoch - (1.0 + 2.0 / 6.0)).abs() < 1e-12);
        let updates: Vec<usize> = c.state.updates.iter().map(|u| u.step).collect();
        assert_eq!(updates, vec![0, 2, 3], "at the start, every 2 steps, and at each new epoch");
        assert_eq!(c.state.updates[0].losses, Some([5.0, 8.0, 10.0]));
    }

    #[test]
    fn skill_it_weighs_skills_by_examples_left_and_recent_held_out_loss() {
        let examples: Vec<Example> = (0..8).map(|_| ex(3)).collect();
        let labels: Vec<String> = ["a", "b", "a", "b", "a", "b", "a", "b"].map(String::from).to_vec();
        let skills = Skills::new(&labels, &["a".into(), "b".into()]).unwrap();
        let mut c = curriculum(Order::SkillIt, &examples, Some(&skills));
        let mut calls = 0;
        let mut measure = |m: Measure| -> Result<Vec<f64>> {
            assert!(matches!(m, Measure::Skills));
            calls += 1;
            Ok(vec![0.0, 2.0])
        };
        let first = c.next_step(0, &mut measure).unwrap();
        assert_eq!(first.micro_batches.concat().concat().len(), 2);
        let u = &c.state.updates[0];
        // 4 examples each left: weights ∝ 4·e^0 and 4·e^2.
        assert!((u.skills[1].weight - 1.0 / (1.0 + (-2f64).exp())).abs() < 1e-12, "{u:?}");
        assert!((u.skills.iter().map(|s| s.weight).sum::<f64>() - 1.0).abs() < 1e-12);
        for step in 1..4 {
            c.next_step(step, &mut measure).unwrap();
        }
        assert!(c.state.queue.is_empty(), "8 examples, 2 a step: the epoch is over");
        c.next_step(4, &mut measure).unwrap();
        assert_eq!(calls, 3, "measured at steps 0, 2 and 4");
        c.state.history.push(vec![0.0, 0.0]);
        c.state.history.push(vec![0.0, 0.0]);
        c.state.history.push(vec![0.0, 0.0]);
        let (w, left) = (c.weights(), c.left());
        let prior = left[0] as f64 / left[1] as f64;
        assert!((w[0] / w[1] - prior).abs() < 1e-12, "losses older than the window no longer count: {w:?}");
        assert!(Skills::new(&labels, &["a".into()]).is_err(), "skill b has nothing held out");
    }
}
