//! Learning-rate schedules for training in rounds.
//!
//! Each run of the trainer starts its schedule afresh, so continuing from a trained model re-warms: "Simple
//! and Scalable Strategies to Continually Pre-train Large Language Models" (Ibrahim et al., 2024) finds that
//! re-warming and re-decaying the rate, with replay, matches training on all the data from scratch. The same
//! paper's "infinite" schedule, and warmup-stable-decay (WSD, "Beyond Cosine Decay"), hold the rate constant
//! for most of a run so that training can be continued without re-warming from a decayed rate.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The shape of the rate over a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Shape {
    /// The peak rate after warm-up, throughout.
    Constant,
    /// Warm-up, then a straight line down to the floor at the last step.
    Linear,
    /// Warm-up, then half a cosine down to the floor.
    Cosine,
    /// Warm-up, stable at the peak, then a straight decay to the floor over the last `decay` fraction of steps.
    Wsd,
    /// Warm-up, a cosine cool-down over the `cooldown` fraction of steps to `constant` × peak, constant, then
    /// an exponential anneal to the floor over the last `anneal` fraction.
    Infinite,
}

/// A schedule: peak rate, warm-up steps, floor (a fraction of the peak), shape and the shape's fractions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Schedule {
    pub lr: f64,
    pub warmup: usize,
    /// The lowest rate, as a fraction of `lr`.
    pub floor: f64,
    pub shape: Shape,
    /// WSD: the fraction of steps (after warm-up) spent decaying.
    pub decay: f64,
    /// Infinite: the fraction spent cooling down, the held rate (fraction of the peak), the fraction annealing.
    pub cooldown: f64,
    pub constant: f64,
    pub anneal: f64,
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule {
            lr: 1e-3,
            warmup: 0,
            floor: 0.1,
            shape: Shape::Cosine,
            decay: 0.2,
            cooldown: 0.2,
            constant: 0.5,
            anneal: 0.1,
        }
    }
}

impl Shape {
    pub const NAMES: [&'static str; 5] = ["constant", "linear", "cosine", "wsd", "infinite"];
}

impl Schedule {
    pub fn check(&self, steps: usize) -> Result<()> {
        let fraction = |name: &str, f: f64| {
            if (0.0..=1.0).contains(&f) {
                Ok(())
            } else {
                Err(Error::Invalid(format!("schedule {name} {f} must be a fraction in [0, 1]")))
            }
        };
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(Error::Invalid(format!("learning rate {} must be positive", self.lr)));
        }
        for (name, f) in [
            ("floor", self.floor),
            ("decay", self.decay),
            ("cooldown", self.cooldown),
            ("constant", self.constant),
            ("anneal", self.anneal),
        ] {
            fraction(name, f)?;
        }
        if self.shape == Shape::Infinite && !(self.constant > 0.0 && self.constant >= self.floor) {
            return Err(Error::Invalid(format!(
                "the infinite schedule's constant rate ({} of the peak) must be above 0 and at least the floor ({})",
                self.constant, self.floor
            )));
        }
        if self.cooldown + self.anneal > 1.0 {
            return Err(Error::Invalid("schedule cooldown + anneal must not exceed 1".into()));
        }
        if self.warmup > steps {
            return Err(Error::Invalid(format!("{} warm-up steps is more than the run's {steps} steps", self.warmup)));
        }
        Ok(())
    }

    /// The rate at `step` (0-based) of a run of `steps` optimizer steps.
    pub fn lr_at(&self, step: usize, steps: usize) -> f64 {
        let peak = self.lr;
        let floor = self.floor * peak;
        if step < self.warmup {
            return peak * (step + 1) as f64 / self.warmup as f64;
        }
        let span = steps.saturating_sub(self.warmup).max(1) as f64;
        // Progress through the part after warm-up, 0 at its first step and 1 at the run's last.
        let t = ((step - self.warmup) as f64 / (span - 1.0).max(1.0)).min(1.0);
        match self.shape {
            Shape::Constant => peak,
            Shape::Linear => peak + (floor - peak) * t,
            Shape::Cosine => floor + (peak - floor) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos()),
            Shape::Wsd => {
                let start = 1.0 - self.decay;
                if t <= start || self.decay == 0.0 {
                    peak
                } else {
                    peak + (floor - peak) * (t - start) / self.decay
                }
            }
            Shape::Infinite => {
                let held = self.constant * peak;
                let anneal_start = 1.0 - self.anneal;
                if t < self.cooldown {
                    held + (peak - held) * 0.5 * (1.0 + (std::f64::consts::PI * t / self.cooldown).cos())
                } else if t <= anneal_start || self.anneal == 0.0 {
                    held
                } else {
                    // Exponential from the held rate to the floor.
                    let u = (t - anneal_start) / self.anneal;
                    held * (floor.max(1e-12) / held).powf(u)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn curve(shape: Shape, warmup: usize, steps: usize) -> Vec<f64> {
        let s = Schedule { lr: 1.0, warmup, floor: 0.1, shape, ..Default::default() };
        s.check(steps).unwrap();
        (0..steps).map(|i| s.lr_at(i, steps)).collect()
    }

    #[test]
    fn warm_up_rises_to_the_peak_and_each_shape_ends_where_it_should() {
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
        for shape in Shape::NAMES.map(|n| serde_json::from_value::<Shape>(n.into()).unwrap()) {
            let c = curve(shape, 10, 110);
            assert!(close(c[0], 0.1) && close(c[9], 1.0), "{shape:?} warm-up: {:?}", &c[..10]);
            assert!(c[..10].windows(2).all(|w| w[0] < w[1]));
            assert!(c.iter().all(|&r| (0.1 - 1e-9..=1.0 + 1e-9).contains(&r)), "{shape:?} stays in [floor, peak]");
            let last = *c.last().unwrap();
            if shape == Shape::Constant {
                assert!(close(last, 1.0));
            } else {
                assert!(close(last, 0.1), "{shape:?} ends at the floor, not {last}");
                assert!(c[10..].windows(2).all(|w| w[1] <= w[0] + 1e-12), "{shape:?} never rises after warm-up");
            }
        }
        let cosine = curve(Shape::Cosine, 0, 101);
        assert!(close(cosine[50], 0.55), "half-way down a cosine: {}", cosine[50]);
        let wsd = curve(Shape::Wsd, 0, 101);
        assert!(close(wsd[80], 1.0) && close(wsd[90], 0.55), "WSD holds, then decays: {} {}", wsd[80], wsd[90]);
        let inf = curve(Shape::Infinite, 0, 101);
        assert!(
            close(inf[10], 0.75) && close(inf[50], 0.5) && close(inf[90], 0.5),
            "{} {} {}",
            inf[10],
            inf[50],
            inf[90]
        );
    }

    #[test]
    fn bad_schedules_are_refused() {
        let s = Schedule { warmup: 20, ..Default::default() };
        assert!(s.check(10).unwrap_err().to_string().contains("warm-up"));
        let s = Schedule { lr: 0.0, ..Default::default() };
        assert!(s.check(10).unwrap_err().to_string().contains("positive"));
        // An unknown shape in a settings file is refused, naming the shapes there are.
        assert!(serde_json::from_value::<Shape>("step".into()).unwrap_err().to_string().contains("cosine"));
        let s = Schedule { shape: Shape::Infinite, constant: 0.05, floor: 0.1, ..Default::default() };
        assert!(s.check(10).unwrap_err().to_string().contains("at least the floor"));
    }
}
