//! AdamW (Loshchilov & Hutter) with decoupled weight decay, gradient clipping by global norm, and state that
//! a checkpoint saves and restores exactly (candle-nn's optimizer keeps its moments private).

use std::collections::BTreeMap;

use candle_core::{DType, Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Decoupled weight decay, applied to matrices (not to norms' gains or biases).
    pub weight_decay: f64,
    /// Largest global gradient norm; larger gradients are scaled down to it. 0 turns clipping off.
    pub max_grad_norm: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0, max_grad_norm: 1.0 }
    }
}

/// The optimizer: first and second moments per parameter (f32, whatever the parameters' type) and the step.
pub struct AdamW {
    pub config: AdamWConfig,
    pub step: usize,
    moments: BTreeMap<String, (Tensor, Tensor)>,
}

impl AdamW {
    pub fn new(config: AdamWConfig, params: &BTreeMap<String, Var>) -> Result<Self> {
        let mut moments = BTreeMap::new();
        for (name, var) in params {
            let zeros = Tensor::zeros(var.shape(), DType::F32, var.device())?;
            moments.insert(name.clone(), (zeros.clone(), zeros));
        }
        Ok(AdamW { config, step: 0, moments })
    }

    /// Global L2 norm of the gradients.
    pub fn grad_norm(grads: &BTreeMap<String, Tensor>) -> Result<f64> {
        let mut sum = 0f64;
        for g in grads.values() {
            sum += g.to_dtype(DType::F32)?.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
        }
        Ok(sum.sqrt())
    }

    /// One step at rate `lr`: clips, updates the moments and the parameters. Returns the gradient norm
    /// before clipping.
    pub fn step(&mut self, params: &BTreeMap<String, Var>, grads: &BTreeMap<String, Tensor>, lr: f64) -> Result<f64> {
        let c = self.config;
        let norm = Self::grad_norm(grads)?;
        if !norm.is_finite() {
            return Err(Error::Invalid(format!(
                "the gradient norm is {norm} at step {}: training diverged; lower the learning rate",
                self.step + 1
            )));
        }
        let clip = if c.max_grad_norm > 0.0 && norm > c.max_grad_norm { c.max_grad_norm / norm } else { 1.0 };
        self.step += 1;
        let t = self.step as i32;
        let (correction1, correction2) = (1.0 - c.beta1.powi(t), 1.0 - c.beta2.powi(t));
        for (name, var) in params {
            let Some(g) = grads.get(name) else { continue };
            let g = (g.to_dtype(DType::F32)? * clip)?;
            let (m, v) = self.moments.get_mut(name).expect("a moment for every parameter");
            *m = ((&*m * c.beta1)? + (&g * (1.0 - c.beta1))?)?;
            *v = ((&*v * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
            let update = ((&*m / correction1)? / ((&*v / correction2)?.sqrt()? + c.eps)?)?;
            let mut theta = var.as_tensor().to_dtype(DType::F32)?;
            if c.weight_decay > 0.0 && var.rank() >= 2 {
                theta = (theta * (1.0 - lr * c.weight_decay))?;
            }
            let theta = (theta - (update * lr)?)?;
            var.set(&theta.to_dtype(var.dtype())?)?;
        }
        Ok(norm)
    }

    /// The moments as named tensors (`<name>.m`, `<name>.v`), for a checkpoint.
    pub fn state(&self) -> BTreeMap<String, Tensor> {
        let mut out = BTreeMap::new();
        for (name, (m, v)) in &self.moments {
            out.insert(format!("{name}.m"), m.clone());
            out.insert(format!("{name}.v"), v.clone());
        }
        out
    }

    /// Restores the moments saved by [`AdamW::state`] and the step count.
    pub fn restore(&mut self, state: &BTreeMap<String, Tensor>, step: usize) -> Result<()> {
        for (name, (m, v)) in self.moments.iter_mut() {
            let get = |suffix: &str| {
                state
                    .get(&format!("{name}.{suffix}"))
                    .cloned()
                    .ok_or_else(|| Error::Invalid(format!("the checkpoint's optimizer state has no {name}.{suffix}")))
            };
            *m = get("m")?.to_device(m.device())?;
            *v = get("v")?.to_device(v.device())?;
        }
        self.step = step;
        Ok(())
    }
}
