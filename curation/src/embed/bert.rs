//! A BERT encoder on candle, as sentence-transformers' models use it (all-MiniLM-L6-v2 and kin):
//! embeddings → N × (self-attention, feed-forward), post-LayerNorm, exact (erf) GELU. Inference only.

use std::path::Path;

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{embedding, layer_norm, linear, Embedding, LayerNorm, Linear, VarBuilder};
use serde::Deserialize;

use crate::error::{Error, Result};

/// The fields of a Hugging Face `config.json` that the encoder needs.
#[derive(Debug, Clone, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "gelu")]
    pub hidden_act: String,
    pub max_position_embeddings: usize,
    #[serde(default = "two")]
    pub type_vocab_size: usize,
    #[serde(default = "eps")]
    pub layer_norm_eps: f64,
}

fn gelu() -> String {
    "gelu".into()
}
fn two() -> usize {
    2
}
fn eps() -> f64 {
    1e-12
}

struct Embeddings {
    word: Embedding,
    position: Embedding,
    token_type: Embedding,
    norm: LayerNorm,
}

impl Embeddings {
    fn load(vb: VarBuilder, c: &BertConfig) -> candle_core::Result<Self> {
        Ok(Embeddings {
            word: embedding(c.vocab_size, c.hidden_size, vb.pp("word_embeddings"))?,
            position: embedding(c.max_position_embeddings, c.hidden_size, vb.pp("position_embeddings"))?,
            token_type: embedding(c.type_vocab_size, c.hidden_size, vb.pp("token_type_embeddings"))?,
            norm: layer_norm(c.hidden_size, c.layer_norm_eps, vb.pp("LayerNorm"))?,
        })
    }

    /// `ids`: [batch, tokens] → [batch, tokens, hidden]. One segment: token type 0 throughout.
    fn forward(&self, ids: &Tensor) -> candle_core::Result<Tensor> {
        let (_, len) = ids.dims2()?;
        let positions = Tensor::arange(0u32, len as u32, ids.device())?;
        let types = positions.zeros_like()?;
        let x = self
            .word
            .forward(ids)?
            .broadcast_add(&self.position.forward(&positions)?)?
            .broadcast_add(&self.token_type.forward(&types)?)?;
        self.norm.forward(&x)
    }
}

struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    attention_out: Linear,
    attention_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    output_norm: LayerNorm,
    heads: usize,
    exact_gelu: bool,
}

impl Layer {
    fn load(vb: VarBuilder, c: &BertConfig) -> candle_core::Result<Self> {
        let h = c.hidden_size;
        let attention = vb.pp("attention");
        Ok(Layer {
            query: linear(h, h, attention.pp("self").pp("query"))?,
            key: linear(h, h, attention.pp("self").pp("key"))?,
            value: linear(h, h, attention.pp("self").pp("value"))?,
            attention_out: linear(h, h, attention.pp("output").pp("dense"))?,
            attention_norm: layer_norm(h, c.layer_norm_eps, attention.pp("output").pp("LayerNorm"))?,
            intermediate: linear(h, c.intermediate_size, vb.pp("intermediate").pp("dense"))?,
            output: linear(c.intermediate_size, h, vb.pp("output").pp("dense"))?,
            output_norm: layer_norm(h, c.layer_norm_eps, vb.pp("output").pp("LayerNorm"))?,
            heads: c.num_attention_heads,
            exact_gelu: c.hidden_act == "gelu",
        })
    }

    /// `x`: [batch, tokens, hidden]; `mask_bias`: [batch, 1, 1, tokens], 0 for tokens, −∞-ish for padding.
    fn forward(&self, x: &Tensor, mask_bias: &Tensor) -> candle_core::Result<Tensor> {
        let (b, t, h) = x.dims3()?;
        let head_dim = h / self.heads;
        let split = |y: Tensor| y.reshape((b, t, self.heads, head_dim))?.transpose(1, 2)?.contiguous();
        let q = split(self.query.forward(x)?)?;
        let k = split(self.key.forward(x)?)?;
        let v = split(self.value.forward(x)?)?;
        let scores = (q.matmul(&k.t()?)? / (head_dim as f64).sqrt())?.broadcast_add(mask_bias)?;
        let weights = candle_nn::ops::softmax_last_dim(&scores)?;
        let context = weights.matmul(&v)?.transpose(1, 2)?.reshape((b, t, h))?;
        let x = self.attention_norm.forward(&(x + self.attention_out.forward(&context)?)?)?;
        let inner = self.intermediate.forward(&x)?;
        let inner = if self.exact_gelu { inner.gelu_erf()? } else { inner.gelu()? };
        self.output_norm.forward(&(x + self.output.forward(&inner)?)?)
    }
}

/// A model folder's config, its weights (mapped, f32) under the names without a `bert.` prefix, and the weights'
/// path for errors.
pub fn open(dir: &Path, device: &Device) -> Result<(BertConfig, VarBuilder<'static>, std::path::PathBuf)> {
    let config_path = dir.join("config.json");
    let text = std::fs::read_to_string(&config_path)
        .map_err(|e| Error::model(&config_path, format!("cannot read the model config: {e}")))?;
    let config: BertConfig =
        serde_json::from_str(&text).map_err(|e| Error::model(&config_path, format!("not a BERT config: {e}")))?;
    let weights = dir.join("model.safetensors");
    if !weights.exists() {
        return Err(Error::model(&weights, "missing: a BERT folder needs model.safetensors"));
    }
    // SAFETY: the file is mapped read-only and not modified while the model lives.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&weights], DType::F32, device)? };
    // Some checkpoints prefix every weight with `bert.`.
    let vb = if vb.contains_tensor("embeddings.word_embeddings.weight") { vb } else { vb.pp("bert") };
    Ok((config, vb, weights))
}

/// The encoder: token ids in, last hidden states out.
pub struct Bert {
    embeddings: Embeddings,
    layers: Vec<Layer>,
    pub config: BertConfig,
    device: Device,
}

impl Bert {
    /// Loads `config.json` and `model.safetensors` from a Hugging Face model folder.
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let (config, vb, weights) = open(dir, device)?;
        let embeddings = Embeddings::load(vb.pp("embeddings"), &config)
            .map_err(|e| Error::model(&weights, format!("not a BERT checkpoint: {e}")))?;
        let layers = (0..config.num_hidden_layers)
            .map(|i| Layer::load(vb.pp("encoder").pp("layer").pp(i), &config))
            .collect::<candle_core::Result<Vec<_>>>()
            .map_err(|e| Error::model(&weights, format!("not a BERT checkpoint: {e}")))?;
        Ok(Bert { embeddings, layers, config, device: device.clone() })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// `ids`, `mask`: [batch, tokens] (u32; mask 1 for tokens, 0 for padding) → [batch, tokens, hidden].
    pub fn forward(&self, ids: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
        let (b, t) = mask.dims2()?;
        let mask_bias = ((mask.to_dtype(DType::F32)? - 1.0)? * 1e9)?.reshape((b, 1, 1, t))?;
        let mut x = self.embeddings.forward(ids)?;
        for layer in &self.layers {
            x = layer.forward(&x, &mask_bias)?;
        }
        Ok(x)
    }

    /// Mean of the hidden states over the real tokens (the mask), then L2-normalised: [batch, hidden].
    pub fn mean_pool_normalised(hidden: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
        let counts = mask.sum(1)?.clamp(1e-9, f64::MAX)?;
        let mean = summed.broadcast_div(&counts)?;
        let norm = mean.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
        mean.broadcast_div(&norm)
    }
}
