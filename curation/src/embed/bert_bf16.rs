//! The encoder of bert.rs at bfloat16 precision, on buffers of its own: the linear layers and attention's two
//! products multiply values rounded to bfloat16 (gemm_bf16.rs: AVX512-BF16, twice f32's products per instruction); the
//! residual stream, LayerNorm, softmax, GELU and pooling stay f32. A batch is its sequences' tokens one after
//! another, without padding: each sequence attends over its own rows. One thread per batch.

use std::cell::RefCell;
use std::path::Path;

use candle_core::{Device, Shape};
use candle_nn::VarBuilder;

use super::bert::{open, BertConfig};
use crate::error::{Error, Result};
use crate::gemm_bf16::{self as gemm, gemm, Pairs, Panels};

struct Norm {
    weight: Vec<f32>,
    bias: Vec<f32>,
    eps: f32,
}

struct Linear {
    weights: Panels,
    bias: Vec<f32>,
}

struct Layer {
    /// Query, key and value in one product: rows `0..h` are the queries', `h..2h` the keys', `2h..3h` the values'.
    qkv: Linear,
    attention_out: Linear,
    attention_norm: Norm,
    intermediate: Linear,
    output: Linear,
    output_norm: Norm,
}

pub struct Bf16Bert {
    word: Vec<f32>,
    position: Vec<f32>,
    /// Token type 0's row: one segment throughout.
    token_type: Vec<f32>,
    norm: Norm,
    layers: Vec<Layer>,
    pub config: BertConfig,
}

/// One thread's buffers, kept across batches.
#[derive(Default)]
struct Scratch {
    x: Vec<f32>,
    qkv: Vec<f32>,
    context: Vec<f32>,
    inner: Vec<f32>,
    sum: Vec<f32>,
    a: Pairs,
    queries: Pairs,
    keys: Panels,
    values: Panels,
    scores: Vec<f32>,
    weights: Pairs,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::default();
}

fn tensor(vb: &VarBuilder, shape: impl Into<Shape>, name: &str) -> candle_core::Result<Vec<f32>> {
    vb.get(shape, name)?.flatten_all()?.to_vec1::<f32>()
}

impl Norm {
    fn load(vb: &VarBuilder, c: &BertConfig) -> candle_core::Result<Self> {
        let h = c.hidden_size;
        Ok(Norm { weight: tensor(vb, h, "weight")?, bias: tensor(vb, h, "bias")?, eps: c.layer_norm_eps as f32 })
    }
}

impl Linear {
    /// The layers under `names`, their outputs stacked in that order.
    fn load(vb: &VarBuilder, names: &[&str], n: usize, k: usize) -> candle_core::Result<Self> {
        let (mut weights, mut bias) = (Vec::new(), Vec::new());
        for name in names {
            let layer = vb.pp(*name);
            weights.extend(tensor(&layer, (n, k), "weight")?);
            bias.extend(tensor(&layer, n, "bias")?);
        }
        Ok(Linear { weights: Panels::new(&weights, n * names.len(), k), bias })
    }
}

impl Layer {
    fn load(vb: VarBuilder, c: &BertConfig) -> candle_core::Result<Self> {
        let (h, i) = (c.hidden_size, c.intermediate_size);
        let attention = vb.pp("attention");
        Ok(Layer {
            qkv: Linear::load(&attention.pp("self"), &["query", "key", "value"], h, h)?,
            attention_out: Linear::load(&attention.pp("output"), &["dense"], h, h)?,
            attention_norm: Norm::load(&attention.pp("output").pp("LayerNorm"), c)?,
            intermediate: Linear::load(&vb.pp("intermediate"), &["dense"], i, h)?,
            output: Linear::load(&vb.pp("output"), &["dense"], h, i)?,
            output_norm: Norm::load(&vb.pp("output").pp("LayerNorm"), c)?,
        })
    }
}

impl Bf16Bert {
    /// Loads a model folder as [`super::Bert::load`] does; an error where the processor lacks AVX512-BF16.
    pub fn load(dir: &Path) -> Result<Self> {
        if !gemm::available() {
            return Err(Error::Invalid(
                "bf16 precision needs a processor with AVX512-BF16, and this one has none: use f32".into(),
            ));
        }
        let (config, vb, weights) = open(dir, &Device::Cpu)?;
        let c = &config;
        if c.hidden_size % c.num_attention_heads != 0 {
            return Err(Error::model(&weights, "hidden_size is not a multiple of num_attention_heads"));
        }
        let load = || -> candle_core::Result<_> {
            let e = vb.pp("embeddings");
            let token_types = tensor(&e, (c.type_vocab_size, c.hidden_size), "token_type_embeddings.weight")?;
            Ok((
                tensor(&e, (c.vocab_size, c.hidden_size), "word_embeddings.weight")?,
                tensor(&e, (c.max_position_embeddings, c.hidden_size), "position_embeddings.weight")?,
                token_types[..c.hidden_size].to_vec(),
                Norm::load(&e.pp("LayerNorm"), c)?,
                (0..c.num_hidden_layers)
                    .map(|i| Layer::load(vb.pp("encoder").pp("layer").pp(i), c))
                    .collect::<candle_core::Result<Vec<_>>>()?,
            ))
        };
        let (word, position, token_type, norm, layers) =
            load().map_err(|e| Error::model(&weights, format!("not a BERT checkpoint: {e}")))?;
        Ok(Bf16Bert { word, position, token_type, norm, layers, config })
    }

    /// Mean-pooled, L2-normalised embeddings of token sequences (with their special tokens): `out` holds
    /// `sequences.len() × hidden_size`.
    pub fn embed(&self, sequences: &[&[u32]], out: &mut [f32]) -> Result<()> {
        let c = &self.config;
        assert_eq!(out.len(), sequences.len() * c.hidden_size, "Bf16Bert::embed: out has the wrong length");
        for tokens in sequences {
            if tokens.is_empty() {
                return Err(Error::Invalid("a sequence without tokens (not even [CLS] and [SEP])".into()));
            }
            if tokens.len() > c.max_position_embeddings {
                return Err(Error::Invalid(format!(
                    "a sequence of {} tokens is longer than the model's {} positions",
                    tokens.len(),
                    c.max_position_embeddings
                )));
            }
            if let Some(id) = tokens.iter().find(|&&id| id as usize >= c.vocab_size) {
                return Err(Error::Invalid(format!("token id {id} is outside the vocabulary of {}", c.vocab_size)));
            }
        }
        SCRATCH.with_borrow_mut(|s| {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `load` checked that the processor has AVX512-BF16 (and so AVX-512F).
            unsafe {
                self.forward(sequences, out, s)
            }
            #[cfg(not(target_arch = "x86_64"))]
            unreachable!("Bf16Bert loads only on x86-64 processors with AVX512-BF16: {:?}", (out.len(), s.x.len()))
        });
        Ok(())
    }

    /// Compiled for AVX-512 so the element-wise loops (inlined into it) run 16 lanes wide.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn forward(&self, sequences: &[&[u32]], out: &mut [f32], s: &mut Scratch) {
        let c = &self.config;
        let (h, inner) = (c.hidden_size, c.intermediate_size);
        let rows: usize = sequences.iter().map(|t| t.len()).sum();
        s.x.resize(rows * h, 0.0);
        s.qkv.resize(rows * 3 * h, 0.0);
        s.context.resize(rows * h, 0.0);
        s.inner.resize(rows * inner, 0.0);
        s.sum.resize(rows * h, 0.0);

        let tokens = sequences.iter().flat_map(|t| t.iter().enumerate());
        for (x, (position, &id)) in s.x.chunks_exact_mut(h).zip(tokens) {
            let (word, pos) = (&self.word[id as usize * h..][..h], &self.position[position * h..][..h]);
            for (((x, w), p), t) in x.iter_mut().zip(word).zip(pos).zip(&self.token_type) {
                *x = w + p + t;
            }
            layer_norm(x, &self.norm);
        }

        for layer in &self.layers {
            s.a.fill(&s.x, rows, h, h);
            gemm(&s.a, &layer.qkv.weights, Some(&layer.qkv.bias), &mut s.qkv, 3 * h);
            self.attention(sequences, s);
            s.a.fill(&s.context, rows, h, h);
            gemm(&s.a, &layer.attention_out.weights, Some(&layer.attention_out.bias), &mut s.sum, h);
            add_and_norm(&mut s.x, &s.sum, &layer.attention_norm);
            s.a.fill(&s.x, rows, h, h);
            gemm(&s.a, &layer.intermediate.weights, Some(&layer.intermediate.bias), &mut s.inner, inner);
            if c.hidden_act == "gelu" {
                s.inner.iter_mut().for_each(|v| *v = gelu_erf(*v));
            } else {
                s.inner.iter_mut().for_each(|v| *v = gelu_tanh(*v));
            }
            s.a.fill(&s.inner, rows, inner, inner);
            gemm(&s.a, &layer.output.weights, Some(&layer.output.bias), &mut s.sum, h);
            add_and_norm(&mut s.x, &s.sum, &layer.output_norm);
        }

        let mut start = 0;
        for (tokens, out) in sequences.iter().zip(out.chunks_exact_mut(h)) {
            out.fill(0.0);
            for x in s.x[start * h..(start + tokens.len()) * h].chunks_exact(h) {
                out.iter_mut().zip(x).for_each(|(o, x)| *o += x);
            }
            let mean = 1.0 / tokens.len().max(1) as f32;
            let norm = (sum_of(out, |v| v * v) * mean * mean).sqrt().max(1e-12);
            out.iter_mut().for_each(|o| *o *= mean / norm);
            start += tokens.len();
        }
    }

    /// Self-attention of each sequence over its own rows of `s.qkv`, head by head, into `s.context`.
    #[inline(always)]
    fn attention(&self, sequences: &[&[u32]], s: &mut Scratch) {
        let c = &self.config;
        let (h, heads) = (c.hidden_size, c.num_attention_heads);
        let (dh, stride) = (h / heads, 3 * h);
        let scale = 1.0 / (dh as f32).sqrt();
        let mut start = 0;
        for t in sequences.iter().map(|t| t.len()) {
            for head in 0..heads {
                let at = start * stride + head * dh;
                s.queries.fill(&s.qkv[at..], t, dh, stride);
                s.keys.fill(&s.qkv[at + h..], t, dh, stride, 1);
                s.scores.resize(t * t, 0.0);
                gemm(&s.queries, &s.keys, None, &mut s.scores, t);
                let weights = s.weights.rows_mut(t, t);
                for (scores, weights) in s.scores.chunks_exact_mut(t).zip(weights.chunks_exact_mut(t.div_ceil(2))) {
                    softmax_pairs(scores, scale, weights);
                }
                // The values, transposed: row d of the product's right side is dimension d over the tokens.
                s.values.fill(&s.qkv[at + 2 * h..], dh, t, 1, stride);
                gemm(&s.weights, &s.values, None, &mut s.context[start * h + head * dh..], h);
            }
            start += t;
        }
    }
}

/// Σ f(v) in 16 independent lanes (so the loop vectorises).
#[inline(always)]
fn sum_of(v: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut lanes = [0f32; 16];
    let chunks = v.chunks_exact(16);
    let tail: f32 = chunks.remainder().iter().map(|&x| f(x)).sum();
    for chunk in chunks {
        for (l, &x) in lanes.iter_mut().zip(chunk) {
            *l += f(x);
        }
    }
    lanes.iter().sum::<f32>() + tail
}

#[inline(always)]
fn layer_norm(x: &mut [f32], norm: &Norm) {
    let n = x.len() as f32;
    let mean = sum_of(x, |v| v) / n;
    let variance = sum_of(x, |v| (v - mean) * (v - mean)) / n;
    let scale = 1.0 / (variance + norm.eps).sqrt();
    for ((x, w), b) in x.iter_mut().zip(&norm.weight).zip(&norm.bias) {
        *x = (*x - mean) * scale * w + b;
    }
}

/// `x = LayerNorm(x + y)`, row by row: the residual connection.
#[inline(always)]
fn add_and_norm(x: &mut [f32], y: &[f32], norm: &Norm) {
    let h = norm.weight.len();
    for (x, y) in x.chunks_exact_mut(h).zip(y.chunks_exact(h)) {
        x.iter_mut().zip(y).for_each(|(x, y)| *x += y);
        layer_norm(x, norm);
    }
}

/// softmax(scale · scores) as bfloat16 pairs (a 0 after an odd count); `scores` is overwritten.
#[inline(always)]
fn softmax_pairs(scores: &mut [f32], scale: f32, out: &mut [u32]) {
    let mut lanes = [f32::NEG_INFINITY; 16];
    let chunks = scores.chunks_exact(16);
    let tail = chunks.remainder().iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    for chunk in chunks {
        for (l, &x) in lanes.iter_mut().zip(chunk) {
            *l = l.max(x);
        }
    }
    let max = lanes.iter().fold(tail, |m, &x| m.max(x));
    scores.iter_mut().for_each(|x| *x = exp((*x - max) * scale));
    let inverse = 1.0 / sum_of(scores, |v| v);
    let (whole, odd) = scores.split_at(scores.len() & !1);
    for (o, p) in out.iter_mut().zip(whole.chunks_exact(2)) {
        *o = gemm::pair(p[0] * inverse, p[1] * inverse);
    }
    if let [last] = odd {
        out[whole.len() / 2] = gemm::pair(last * inverse, 0.0);
    }
}

/// eˣ to about 2 × 10⁻⁷ relative (a degree-6 polynomial on x − n·ln 2, times 2ⁿ), branch-free so loops
/// vectorise; below −87 it gives 2⁻¹²⁶·e⁻⁰ rather than 0 (harmless in a softmax after its maximum is taken off).
#[inline(always)]
fn exp(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.0, 88.0);
    let n = (x * std::f32::consts::LOG2_E).round_ties_even();
    let r = n.mul_add(-LN2_LO, n.mul_add(-LN2_HI, x));
    let p = r.mul_add(1.0 / 720.0, 1.0 / 120.0);
    let p = p.mul_add(r, 1.0 / 24.0);
    let p = p.mul_add(r, 1.0 / 6.0);
    let p = p.mul_add(r, 0.5);
    let p = p.mul_add(r, 1.0);
    let p = p.mul_add(r, 1.0);
    p * f32::from_bits(((n as i32 + 127) << 23) as u32)
}

/// erf to 5 × 10⁻⁷ (Abramowitz and Stegun 7.1.26: 1.5 × 10⁻⁷, plus f32 rounding of 1 − …).
#[inline(always)]
fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / 0.327_591_1f32.mul_add(a, 1.0);
    let p = 1.061_405_4f32.mul_add(t, -1.453_152);
    let p = p.mul_add(t, 1.421_413_8);
    let p = p.mul_add(t, -0.284_496_74);
    let p = p.mul_add(t, 0.254_829_6);
    let y = 1.0 - p * t * exp(-a * a);
    y.copysign(x)
}

/// GELU with the exact (erf) form: BERT's `gelu`.
#[inline(always)]
fn gelu_erf(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// GELU's tanh form (`gelu_new`, `gelu_pytorch_tanh`).
#[inline(always)]
fn gelu_tanh(x: f32) -> f32 {
    let y = 0.797_884_6 * x.mul_add(0.044_715 * x * x, x);
    // tanh y = 1 − 2 / (e^{2y} + 1); e^{2y} saturates to ∞ or 0 cleanly at the clamp.
    0.5 * x * (2.0 - 2.0 / (exp(2.0 * y) + 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_erf_and_gelu_match_the_library() {
        for i in -2000..=2000 {
            let x = i as f32 / 40.0;
            let want = (x as f64).exp();
            assert!(((exp(x) as f64 - want) / want).abs() < 4e-7, "exp({x}): {} against {want}", exp(x));
            let want = libm_erf(x as f64);
            assert!((erf(x) as f64 - want).abs() < 5e-7, "erf({x}): {} against {want}", erf(x));
            let tanh = 0.5 * x as f64 * (1.0 + (0.7978845608 * (x as f64 + 0.044715 * (x as f64).powi(3))).tanh());
            assert!((gelu_tanh(x) as f64 - tanh).abs() < 1e-5 * (1.0 + x.abs() as f64), "gelu_tanh({x})");
        }
        assert!(exp(-1000.0) < 1e-37 && exp(1000.0).is_finite());
    }

    /// erf by its Taylor series (|x| ≤ 3) or 1 − its continued fraction's tail: f64 reference to 1e-12.
    fn libm_erf(x: f64) -> f64 {
        let a = x.abs();
        let y = if a < 3.0 {
            let (mut term, mut sum, mut n) = (a, a, 0.0);
            while term.abs() > 1e-17 {
                n += 1.0;
                term *= -a * a / n;
                sum += term / (2.0 * n + 1.0);
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        } else {
            let mut f = 0.0;
            for k in (1..60).rev() {
                f = k as f64 / 2.0 / (a + f);
            }
            1.0 - (-a * a).exp() / std::f64::consts::PI.sqrt() / (a + f)
        };
        y.copysign(x)
    }
}
