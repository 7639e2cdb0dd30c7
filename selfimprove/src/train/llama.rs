//! A trainable Llama (and Qwen2: Llama with q/k/v biases) over a Hugging Face folder, the one mistral.rs loads.
//!
//! Every op here carries a gradient. candle's fast `rms_norm`, `softmax_last_dim`, `layer_norm` and
//! `rotary_emb::rope` have no backward pass (gradients would silently stop at them), so RMS norm, softmax and
//! rotary embeddings are written out from elementary ops. The arithmetic is Hugging Face's `LlamaForCausalLM`
//! (norms in f32, rotate-half rotary embeddings, causal attention scaled by 1/√head_dim, SiLU-gated MLP), which
//! mistral.rs also follows: the parity tests hold the two to the same logits.
//!
//! A forward pass takes each token's position and the segment it belongs to, so several short examples can be
//! packed into one row without seeing each other: every segment restarts at position 0 and attends only
//! within itself, which gives the same logits as running it alone.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, DType, Device, Layout, Shape, Tensor, Var, D};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::error::{Error, Result};

/// The shape of a Llama-family model, read from config.json.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    pub architecture: String,
    pub vocab: usize,
    pub hidden: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub context: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub tie_word_embeddings: bool,
    /// Mistral's and Qwen2's sliding attention window, where it is on: rows are kept within it (the trainer
    /// attends to the whole row).
    pub sliding_window: Option<usize>,
}

impl LlamaConfig {
    pub const ARCHITECTURES: [&'static str; 3] = ["LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"];

    pub fn read(folder: &Path) -> Result<Self> {
        let path = folder.join("config.json");
        let (config, _) = crate::model::read_config(folder)?;
        let number = |name: &str| -> Result<usize> {
            config[name]
                .as_u64()
                .map(|n| n as usize)
                .ok_or_else(|| Error::Invalid(format!("{}: field `{name}` is missing or not a number", path.display())))
        };
        let architecture = config["architectures"][0].as_str().unwrap_or("").to_string();
        if !Self::ARCHITECTURES.contains(&architecture.as_str()) {
            return Err(Error::Invalid(format!(
                "{}: architecture {architecture:?}: the trainer knows {:?}",
                path.display(),
                Self::ARCHITECTURES
            )));
        }
        if let Some(scaling) = config.get("rope_scaling").filter(|v| !v.is_null()) {
            return Err(Error::Invalid(format!(
                "{}: rope_scaling {scaling} is not supported by the trainer yet (plain rotary embeddings only)",
                path.display()
            )));
        }
        let (hidden, heads) = (number("hidden_size")?, number("num_attention_heads")?);
        Ok(LlamaConfig {
            architecture,
            vocab: number("vocab_size")?,
            hidden,
            intermediate: number("intermediate_size")?,
            layers: number("num_hidden_layers")?,
            heads,
            kv_heads: config["num_key_value_heads"].as_u64().map(|n| n as usize).unwrap_or(heads),
            head_dim: config["head_dim"].as_u64().map(|n| n as usize).unwrap_or(hidden / heads.max(1)),
            context: number("max_position_embeddings")?,
            rms_norm_eps: config["rms_norm_eps"].as_f64().unwrap_or(1e-6),
            rope_theta: config["rope_theta"].as_f64().unwrap_or(10_000.0),
            tie_word_embeddings: config["tie_word_embeddings"].as_bool().unwrap_or(false),
            sliding_window: match config["use_sliding_window"].as_bool() {
                Some(false) => None,
                _ => config["sliding_window"].as_u64().map(|n| n as usize),
            },
        })
    }

    /// Parameters counted from the shape (embeddings and head included).
    pub fn parameters(&self) -> usize {
        let (h, kv) = (self.hidden, self.kv_heads * self.head_dim);
        let q = self.heads * self.head_dim;
        let layer = h * q + 2 * h * kv + q * h + 3 * h * self.intermediate + 2 * h;
        let head = if self.tie_word_embeddings { 0 } else { self.vocab * h };
        self.vocab * h + self.layers * layer + h + head
    }
}

/// The linear modules LoRA can adapt, by their Hugging Face names.
pub const TARGET_MODULES: [&str; 7] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];

/// A low-rank update `scale · B·A` beside a frozen weight, with dropout on its input.
#[derive(Debug, Clone)]
pub struct LoraPair {
    /// `[rank, in]`, initialised uniform in ±1/√in (PEFT's default).
    pub a: Var,
    /// `[out, rank]`, initialised to zero, so training starts from the base model exactly.
    pub b: Var,
    pub scale: f64,
    pub dropout: f64,
}

/// A linear layer `x·Wᵀ (+ b)`, with an optional LoRA update.
#[derive(Debug, Clone)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub lora: Option<LoraPair>,
    /// The weight is not trained: its product skips the weight's gradient (see [`FrozenMatmul`]).
    pub frozen: bool,
}

/// `x · Wᵀ` for a weight that is not trained. candle's matrix product computes the gradient of both factors
/// in the backward pass; for a frozen weight that is a third of a linear layer's work (and a weight-sized
/// buffer) spent on nothing, which made LoRA cost as much as full training.
struct FrozenMatmul;

impl FrozenMatmul {
    fn bmnk(l1: &Layout, l2: &Layout) -> candle_core::Result<((usize, usize, usize, usize), Shape)> {
        let (m, k) = l1.shape().dims2()?;
        let (_, n) = l2.shape().dims2()?;
        Ok(((1, m, n, k), Shape::from((m, n))))
    }
}

impl CustomOp2 for FrozenMatmul {
    fn name(&self) -> &'static str {
        "frozen-matmul"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (bmnk, shape) = Self::bmnk(l1, l2)?;
        Ok((s1.matmul(s2, bmnk, l1, l2)?, shape))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let (bmnk, shape) = Self::bmnk(l1, l2)?;
        Ok((s1.matmul(s2, bmnk, l1, l2)?, shape))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        w_t: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((Some(grad.matmul(&w_t.t()?)?), None))
    }
}

/// `x · wᵀ` for 2-D `x`, skipping `w`'s gradient when it is frozen.
fn matmul_t(x: &Tensor, w: &Tensor, frozen: bool) -> Result<Tensor> {
    let w_t = w.t()?;
    Ok(if frozen { x.apply_op2(&w_t, FrozenMatmul)? } else { x.matmul(&w_t)? })
}

/// Dropout masks drawn from whetstone's own seeded stream (candle's CPU dropout cannot be seeded), so a
/// resumed run draws the same masks as an uninterrupted one.
pub struct Dropout {
    rng: Xoshiro256PlusPlus,
}

impl Dropout {
    pub fn new(seed: u64) -> Self {
        Dropout { rng: Xoshiro256PlusPlus::seed_from_u64(seed) }
    }

    fn apply(&mut self, x: &Tensor, p: f64) -> Result<Tensor> {
        let keep = 1.0 - p;
        let mask: Vec<f32> =
            (0..x.elem_count()).map(|_| if self.rng.gen::<f64>() < keep { (1.0 / keep) as f32 } else { 0.0 }).collect();
        let mask = Tensor::from_vec(mask, x.shape(), &Device::Cpu)?.to_device(x.device())?.to_dtype(x.dtype())?;
        Ok(x.mul(&mask)?)
    }
}

impl Linear {
    fn forward(&self, x: &Tensor, lora: bool, dropout: &mut Option<&mut Dropout>) -> Result<Tensor> {
        // One matrix product over all rows ([batch·time, in] × [in, out]) rather than one per batch row.
        let mut shape = x.dims().to_vec();
        let inp = shape.pop().unwrap_or(1);
        let x = x.reshape(((), inp))?;
        let mut y = matmul_t(&x, &self.weight, self.frozen)?;
        if let Some(b) = &self.bias {
            y = y.broadcast_add(b)?;
        }
        if let (true, Some(pair)) = (lora, &self.lora) {
            let input = match dropout {
                Some(d) if pair.dropout > 0.0 => d.apply(&x, pair.dropout)?,
                _ => x.clone(),
            };
            // Adapters are kept in f32 whatever the base's type (their updates are small next to bf16's steps).
            let low =
                input.to_dtype(pair.a.dtype())?.matmul(&pair.a.as_tensor().t()?)?.matmul(&pair.b.as_tensor().t()?)?;
            let low = (low * pair.scale)?.to_dtype(y.dtype())?;
            y = (y + low)?;
        }
        shape.push(y.dim(1)?);
        Ok(y.reshape(shape)?)
    }

    /// `W + scale · B·A`: the weight with the update folded in.
    pub fn merged_weight(&self) -> Result<Tensor> {
        match &self.lora {
            None => Ok(self.weight.clone()),
            Some(pair) => {
                let delta = (pair.b.as_tensor().matmul(pair.a.as_tensor())? * pair.scale)?;
                Ok((&self.weight + delta.to_dtype(self.weight.dtype())?)?)
            }
        }
    }
}

/// The type norms, softmaxes and adapters compute in: f32, or f64 for an f64 model (gradient checks).
pub fn at_least_f32(dtype: DType) -> DType {
    if dtype == DType::F64 {
        DType::F64
    } else {
        DType::F32
    }
}

/// RMS norm from elementary ops, in f32 as Hugging Face computes it.
fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    let dtype = x.dtype();
    let x = x.to_dtype(at_least_f32(dtype))?;
    let scale = (x.sqr()?.mean_keepdim(D::Minus1)? + eps)?.sqrt()?.recip()?;
    Ok(x.broadcast_mul(&scale)?.to_dtype(dtype)?.broadcast_mul(weight)?)
}

/// `[-x₂, x₁]` over the last dimension's halves.
fn rotate_half(x: &Tensor) -> Result<Tensor> {
    let half = x.dim(D::Minus1)? / 2;
    let x1 = x.narrow(D::Minus1, 0, half)?;
    let x2 = x.narrow(D::Minus1, half, half)?;
    Ok(Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?)
}

fn softmax(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?;
    let e = x.broadcast_sub(&max)?.exp()?;
    Ok(e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?)
}

#[derive(Debug, Clone)]
struct Block {
    input_norm: Tensor,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    post_norm: Tensor,
    gate: Linear,
    up: Linear,
    down: Linear,
}

impl Block {
    fn linears(&self) -> [(&'static str, &Linear); 7] {
        [
            ("self_attn.q_proj", &self.q),
            ("self_attn.k_proj", &self.k),
            ("self_attn.v_proj", &self.v),
            ("self_attn.o_proj", &self.o),
            ("mlp.gate_proj", &self.gate),
            ("mlp.up_proj", &self.up),
            ("mlp.down_proj", &self.down),
        ]
    }

    fn linears_mut(&mut self) -> [(&'static str, &mut Linear); 7] {
        [
            ("self_attn.q_proj", &mut self.q),
            ("self_attn.k_proj", &mut self.k),
            ("self_attn.v_proj", &mut self.v),
            ("self_attn.o_proj", &mut self.o),
            ("mlp.gate_proj", &mut self.gate),
            ("mlp.up_proj", &mut self.up),
            ("mlp.down_proj", &mut self.down),
        ]
    }
}

/// A batch for the forward pass: `[batch, time]` tokens, each token's position within its segment, and the
/// additive attention mask `[batch, 1, time, time]` (0 where a token may attend, a large negative elsewhere).
#[derive(Debug, Clone)]
pub struct Inputs {
    pub tokens: Tensor,
    pub positions: Tensor,
    pub mask: Tensor,
}

impl Inputs {
    /// From rows of tokens with each token's segment number (tokens attend to earlier tokens of their own
    /// segment only; padding is a segment of its own); positions restart at every segment.
    pub fn new(rows: &[Vec<u32>], segments: &[Vec<u32>], device: &Device, dtype: DType) -> Result<Self> {
        let (b, t) = (rows.len(), rows.first().map_or(0, Vec::len));
        let mut positions = Vec::with_capacity(b * t);
        let mut mask = vec![-1e9f32; b * t * t];
        for (r, seg) in segments.iter().enumerate() {
            let mut position = 0u32;
            for i in 0..t {
                position = if i > 0 && seg[i] == seg[i - 1] { position + 1 } else { 0 };
                positions.push(position);
                let start = i - position as usize;
                for j in start..=i {
                    mask[(r * t + i) * t + j] = 0.0;
                }
            }
        }
        let tokens: Vec<u32> = rows.iter().flatten().copied().collect();
        Ok(Inputs {
            tokens: Tensor::from_vec(tokens, (b, t), device)?,
            positions: Tensor::from_vec(positions, b * t, device)?,
            mask: Tensor::from_vec(mask, (b, 1, t, t), device)?.to_dtype(dtype)?,
        })
    }

    /// One unpacked sequence per row.
    pub fn causal(rows: &[Vec<u32>], device: &Device, dtype: DType) -> Result<Self> {
        let segments: Vec<Vec<u32>> = rows.iter().map(|r| vec![0; r.len()]).collect();
        Self::new(rows, &segments, device, dtype)
    }
}

/// The keys and values of the positions decoded so far, per layer, `[batch, kv_heads, time, head_dim]`: written
/// in place into buffers of `capacity` positions, so a step copies its own keys and values only.
#[derive(Debug, Clone)]
pub struct KvCache {
    capacity: usize,
    len: usize,
    layers: Vec<Option<(Tensor, Tensor)>>,
}

impl KvCache {
    /// A cache for sequences of at most `capacity` positions.
    pub fn new(capacity: usize) -> Self {
        KvCache { capacity, len: 0, layers: Vec::new() }
    }

    /// Positions held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Writes a layer's new keys and values after those held; returns all of them (views of the buffers).
    fn append(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let (b, heads, t, d) = k.dims4()?;
        if self.len + t > self.capacity {
            return Err(Error::Engine(format!(
                "the KV cache holds {} positions; {} more were asked for after {}",
                self.capacity, t, self.len
            )));
        }
        if self.layers.len() <= layer {
            self.layers.resize(layer + 1, None);
        }
        if self.layers[layer].is_none() {
            let buffer = || Tensor::zeros((b, heads, self.capacity, d), k.dtype(), k.device());
            self.layers[layer] = Some((buffer()?, buffer()?));
        }
        let (ck, cv) = self.layers[layer].as_ref().expect("made above");
        ck.slice_set(&k.contiguous()?, 2, self.len)?;
        cv.slice_set(&v.contiguous()?, 2, self.len)?;
        Ok((ck.narrow(2, 0, self.len + t)?, cv.narrow(2, 0, self.len + t)?))
    }

    /// Keeps the batch rows `rows`, in that order; a row may be taken more than once.
    pub fn select(&mut self, rows: &[u32]) -> Result<()> {
        for (k, v) in self.layers.iter_mut().flatten() {
            let index = Tensor::new(rows, k.device())?;
            *k = k.index_select(&index, 0)?;
            *v = v.index_select(&index, 0)?;
        }
        Ok(())
    }
}

/// How the trainable parameters are chosen.
#[derive(Debug, Clone, PartialEq)]
pub enum Trainable {
    /// Nothing: a frozen model (a reference or a teacher).
    Frozen,
    /// Every weight (pre-training a tiny model, full fine-tuning).
    Full,
    /// LoRA adapters on the named modules; the base stays frozen.
    Lora { targets: Vec<String>, rank: usize, alpha: f64, dropout: f64, seed: u64 },
}

/// The model: weights, rotary tables, and the trainable parameters by name.
pub struct Llama {
    pub config: LlamaConfig,
    pub device: Device,
    pub dtype: DType,
    embed: Tensor,
    blocks: Vec<Block>,
    norm: Tensor,
    lm_head: Tensor,
    cos: Tensor,
    sin: Tensor,
    /// Trainable parameters by their Hugging Face names (`….lora_A.weight` for adapters), in name order.
    pub trainable: BTreeMap<String, Var>,
}

impl Llama {
    /// Loads the folder's safetensors onto `device` in `dtype`.
    pub fn load(folder: &Path, device: &Device, dtype: DType, trainable: &Trainable) -> Result<Self> {
        let config = LlamaConfig::read(folder)?;
        let mut weights = BTreeMap::new();
        for file in &crate::folder::safetensors_files(folder)? {
            weights.extend(candle_core::safetensors::load(file, device)?);
        }
        Self::from_weights(config, weights, device, dtype, trainable)
    }

    pub fn from_weights(
        config: LlamaConfig,
        mut weights: BTreeMap<String, Tensor>,
        device: &Device,
        dtype: DType,
        trainable: &Trainable,
    ) -> Result<Self> {
        let mut vars = BTreeMap::new();
        let full = *trainable == Trainable::Full;
        let mut take = |name: &str, shape: &[usize]| -> Result<Tensor> {
            let t = weights.remove(name).ok_or_else(|| {
                Error::Invalid(format!("the weights have no tensor {name} (shape {shape:?}); is this a Llama folder?"))
            })?;
            if t.dims() != shape {
                return Err(Error::Invalid(format!(
                    "tensor {name} has shape {:?}; config.json implies {shape:?}",
                    t.dims()
                )));
            }
            let t = t.to_dtype(dtype)?;
            if full {
                let var = Var::from_tensor(&t)?;
                let t = var.as_tensor().clone();
                vars.insert(name.to_string(), var);
                return Ok(t);
            }
            Ok(t)
        };
        let c = &config;
        let (h, q_out, kv_out) = (c.hidden, c.heads * c.head_dim, c.kv_heads * c.head_dim);
        let biased = c.architecture == "Qwen2ForCausalLM";
        let embed = take("model.embed_tokens.weight", &[c.vocab, h])?;
        let mut blocks = Vec::with_capacity(c.layers);
        for l in 0..c.layers {
            let p = format!("model.layers.{l}");
            let mut linear = |name: &str, out: usize, inp: usize, bias: bool| -> Result<Linear> {
                let weight = take(&format!("{p}.{name}.weight"), &[out, inp])?;
                let bias = if bias { Some(take(&format!("{p}.{name}.bias"), &[out])?) } else { None };
                Ok(Linear { weight, bias, lora: None, frozen: !full })
            };
            let (q, k, v) = (
                linear("self_attn.q_proj", q_out, h, biased)?,
                linear("self_attn.k_proj", kv_out, h, biased)?,
                linear("self_attn.v_proj", kv_out, h, biased)?,
            );
            let o = linear("self_attn.o_proj", h, q_out, false)?;
            let gate = linear("mlp.gate_proj", c.intermediate, h, false)?;
            let up = linear("mlp.up_proj", c.intermediate, h, false)?;
            let down = linear("mlp.down_proj", h, c.intermediate, false)?;
            blocks.push(Block {
                input_norm: take(&format!("{p}.input_layernorm.weight"), &[h])?,
                q,
                k,
                v,
                o,
                post_norm: take(&format!("{p}.post_attention_layernorm.weight"), &[h])?,
                gate,
                up,
                down,
            });
        }
        let norm = take("model.norm.weight", &[h])?;
        let lm_head = if c.tie_word_embeddings { embed.clone() } else { take("lm_head.weight", &[c.vocab, h])? };
        // A weight this forward pass would not use (an MLP or output bias, say) is refused, not dropped.
        if let Some(unused) = weights.keys().find(|k| k.starts_with("model.")) {
            return Err(Error::Invalid(format!(
                "the weights hold {unused}, which the trainer's {} does not use (attention_bias or mlp_bias?)",
                c.architecture
            )));
        }

        // Rotary tables: inverse frequencies θ^(-2i/d), each angle twice (rotate-half layout).
        let half = c.head_dim / 2;
        // In f64, then rounded once: an f32 angle at position p is off by up to p·2⁻²⁴ radians.
        let inv: Vec<f64> = (0..half).map(|i| c.rope_theta.powf(-(2.0 * i as f64) / c.head_dim as f64)).collect();
        let mut angles = Vec::with_capacity(c.context * c.head_dim);
        for p in 0..c.context {
            for k in 0..c.head_dim {
                angles.push(p as f64 * inv[k % half]);
            }
        }
        let angles = Tensor::from_vec(angles, (c.context, c.head_dim), device)?;
        let (cos, sin) = (angles.cos()?.to_dtype(dtype)?, angles.sin()?.to_dtype(dtype)?);

        let mut model =
            Llama { config, device: device.clone(), dtype, embed, blocks, norm, lm_head, cos, sin, trainable: vars };
        if let Trainable::Lora { targets, rank, alpha, dropout, seed } = trainable {
            model.add_lora(targets, *rank, *alpha, *dropout, *seed)?;
        }
        Ok(model)
    }

    /// Adds fresh LoRA pairs on the target modules of every layer.
    fn add_lora(&mut self, targets: &[String], rank: usize, alpha: f64, dropout: f64, seed: u64) -> Result<()> {
        check_lora(targets, rank, alpha, dropout)?;
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let device = self.device.clone();
        for (l, block) in self.blocks.iter_mut().enumerate() {
            for (name, linear) in block.linears_mut() {
                let module = name.rsplit('.').next().unwrap_or(name);
                if !targets.iter().any(|t| t == module) {
                    continue;
                }
                let (out, inp) = linear.weight.dims2()?;
                let bound = 1.0 / (inp as f64).sqrt();
                let a: Vec<f32> = (0..rank * inp).map(|_| rng.gen_range(-bound..bound) as f32).collect();
                let dtype = at_least_f32(self.dtype);
                let a = Var::from_tensor(&Tensor::from_vec(a, (rank, inp), &device)?.to_dtype(dtype)?)?;
                let b = Var::zeros((out, rank), dtype, &device)?;
                let path = format!("model.layers.{l}.{name}");
                self.trainable.insert(format!("{path}.lora_A.weight"), a.clone());
                self.trainable.insert(format!("{path}.lora_B.weight"), b.clone());
                linear.lora = Some(LoraPair { a, b, scale: alpha / rank as f64, dropout });
            }
        }
        Ok(())
    }

    /// Sets the adapters' values from tensors named as in [`Llama::trainable`] (a saved adapter or checkpoint).
    pub fn set_trainable(&self, tensors: &BTreeMap<String, Tensor>) -> Result<()> {
        for (name, var) in &self.trainable {
            let t = tensors.get(name).ok_or_else(|| Error::Invalid(format!("no tensor {name} to restore")))?;
            if t.dims() != var.dims() {
                return Err(Error::Invalid(format!(
                    "tensor {name} has shape {:?}, expected {:?}",
                    t.dims(),
                    var.dims()
                )));
            }
            var.set(&t.to_device(&self.device)?.to_dtype(var.dtype())?)?;
        }
        Ok(())
    }

    /// Logits `[batch, time, vocab]`. `lora: false` leaves the adapters out (the frozen base, for a KL term);
    /// `dropout` is given while training.
    pub fn forward(&self, inputs: &Inputs, lora: bool, dropout: Option<&mut Dropout>) -> Result<Tensor> {
        self.forward_cached(inputs, lora, dropout, None)
    }

    /// [`Llama::forward`] for decoding: with `cache`, the keys and values of `inputs` are appended to it and
    /// the tokens attend to everything it holds (`inputs.mask` is then `[batch, 1, time, cached + time]`), and
    /// only the last position's logits are computed (`[batch, 1, vocab]`).
    pub fn forward_cached(
        &self,
        inputs: &Inputs,
        lora: bool,
        dropout: Option<&mut Dropout>,
        cache: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        let c = &self.config;
        let x = self.trunk(inputs, lora, dropout, cache)?;
        let (b, t, _) = x.dims3()?;
        let frozen =
            !self.trainable.contains_key("lm_head.weight") && !self.trainable.contains_key("model.embed_tokens.weight");
        Ok(matmul_t(&x.reshape((b * t, c.hidden))?, &self.lm_head, frozen)?.reshape((b, t, c.vocab))?)
    }

    /// The last layer's hidden states after the final norm, `[batch, time, hidden]`: what the vocabulary
    /// product reads, and what a reward model's head scores.
    pub fn hidden(&self, inputs: &Inputs, lora: bool, dropout: Option<&mut Dropout>) -> Result<Tensor> {
        self.trunk(inputs, lora, dropout, None)
    }

    /// Embedding, the layers and the final norm; with `cache`, the last position only (see `forward_cached`).
    fn trunk(
        &self,
        inputs: &Inputs,
        lora: bool,
        mut dropout: Option<&mut Dropout>,
        mut cache: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        let c = &self.config;
        let (b, t) = inputs.tokens.dims2()?;
        let mut x = self.embed.embedding(&inputs.tokens.flatten_all()?)?.reshape((b, t, c.hidden))?;
        let cos = self.cos.index_select(&inputs.positions, 0)?.reshape((b, 1, t, c.head_dim))?;
        let sin = self.sin.index_select(&inputs.positions, 0)?.reshape((b, 1, t, c.head_dim))?;
        let rope =
            |x: &Tensor| -> Result<Tensor> { Ok((x.broadcast_mul(&cos)? + rotate_half(x)?.broadcast_mul(&sin)?)?) };
        let scale = 1.0 / (c.head_dim as f64).sqrt();
        let repeats = c.heads / c.kv_heads;
        for (layer, block) in self.blocks.iter().enumerate() {
            let h = rms_norm(&x, &block.input_norm, c.rms_norm_eps)?;
            let heads = |y: Tensor, n: usize| -> Result<Tensor> {
                Ok(y.reshape((b, t, n, c.head_dim))?.transpose(1, 2)?.contiguous()?)
            };
            let q = rope(&heads(block.q.forward(&h, lora, &mut dropout)?, c.heads)?)?;
            let k = rope(&heads(block.k.forward(&h, lora, &mut dropout)?, c.kv_heads)?)?;
            let v = heads(block.v.forward(&h, lora, &mut dropout)?, c.kv_heads)?;
            let (k, v) = match cache.as_deref_mut() {
                Some(cache) => cache.append(layer, &k, &v)?,
                None => (k, v),
            };
            // Grouped-query attention without copying keys and values per query head: the `repeats` query heads
            // of a key/value head are stacked as rows of one matrix product.
            let time = k.dim(2)?;
            let q = q.reshape((b, c.kv_heads, repeats * t, c.head_dim))?;
            let scores = (q.matmul(&k.t()?)? * scale)?.reshape((b, c.heads, t, time))?.broadcast_add(&inputs.mask)?;
            let weights = softmax(&scores.to_dtype(at_least_f32(self.dtype))?)?.to_dtype(self.dtype)?;
            let attention = weights.reshape((b, c.kv_heads, repeats * t, time))?.matmul(&v)?;
            let attention = attention
                .reshape((b, c.heads, t, c.head_dim))?
                .transpose(1, 2)?
                .contiguous()?
                .reshape((b, t, c.heads * c.head_dim))?;
            x = (x + block.o.forward(&attention, lora, &mut dropout)?)?;
            let h = rms_norm(&x, &block.post_norm, c.rms_norm_eps)?;
            let gated =
                (block.gate.forward(&h, lora, &mut dropout)?.silu()? * block.up.forward(&h, lora, &mut dropout)?)?;
            x = (x + block.down.forward(&gated, lora, &mut dropout)?)?;
        }
        // Every layer wrote these positions: the cache holds them now. Decoding then needs the next token's logits
        // only: the vocabulary product is most of a step's work.
        let x = match cache {
            Some(cache) => {
                cache.len += t;
                x.narrow(1, t - 1, 1)?
            }
            None => x,
        };
        rms_norm(&x, &self.norm, c.rms_norm_eps)
    }

    /// Every weight in the Hugging Face layout, adapters merged in (f32 by default for writing a folder).
    pub fn merged_weights(&self) -> Result<BTreeMap<String, Tensor>> {
        let mut out = BTreeMap::new();
        out.insert("model.embed_tokens.weight".to_string(), self.embed.clone());
        for (l, block) in self.blocks.iter().enumerate() {
            let p = format!("model.layers.{l}");
            out.insert(format!("{p}.input_layernorm.weight"), block.input_norm.clone());
            out.insert(format!("{p}.post_attention_layernorm.weight"), block.post_norm.clone());
            for (name, linear) in block.linears() {
                out.insert(format!("{p}.{name}.weight"), linear.merged_weight()?);
                if let Some(bias) = &linear.bias {
                    out.insert(format!("{p}.{name}.bias"), bias.clone());
                }
            }
        }
        out.insert("model.norm.weight".to_string(), self.norm.clone());
        if !self.config.tie_word_embeddings {
            out.insert("lm_head.weight".to_string(), self.lm_head.clone());
        }
        // Detached copies: a Var's storage keeps changing while training goes on.
        out.into_iter().map(|(k, v)| Ok((k, v.detach().copy()?))).collect()
    }
}

/// Refuses LoRA settings that cannot work, naming what would.
pub fn check_lora(targets: &[String], rank: usize, alpha: f64, dropout: f64) -> Result<()> {
    if targets.is_empty() {
        return Err(Error::Invalid(format!("LoRA needs at least one target module, from {TARGET_MODULES:?}")));
    }
    if let Some(bad) = targets.iter().find(|t| !TARGET_MODULES.contains(&t.as_str())) {
        return Err(Error::Invalid(format!("unknown LoRA target module {bad:?}: use some of {TARGET_MODULES:?}")));
    }
    if rank == 0 {
        return Err(Error::Invalid("LoRA rank must be at least 1 (8 or 16 are common)".into()));
    }
    if !(alpha.is_finite() && alpha > 0.0) {
        return Err(Error::Invalid(format!("LoRA alpha {alpha} must be positive (often twice the rank)")));
    }
    if !(0.0..1.0).contains(&dropout) {
        return Err(Error::Invalid(format!("LoRA dropout {dropout} must be in [0, 1)")));
    }
    Ok(())
}
