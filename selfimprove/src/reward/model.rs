//! `rm:FOLDER`: a reward model that `whet train --objective reward` made scores each response: `reward` is
//! σ(score) in [0, 1], and the reason gives the raw score (a logit: differences between two answers are what
//! the model learned).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use super::{Candidate, Reward, Score};
use crate::error::{Error, Result};
use crate::folder::load_tensors;
use crate::prompt::{Prompt, PromptMode, PromptTokenizer};
use crate::train::data::example;
use crate::train::llama::{Llama, Trainable};
use crate::train::lora::{load_with_adapter, LoraSpec};
use crate::train::ranking::{scores, HEAD, HEAD_FILE};
use crate::train::read_record;
use crate::ModelFolder;

/// A reward model loaded for scoring (f32, on the CPU).
pub struct RewardModel {
    folder: PathBuf,
    model: Llama,
    head: Tensor,
    tokenizer: PromptTokenizer,
    mode: PromptMode,
}

/// Refuses a folder that is not a reward model, saying how to make one.
pub fn check_folder(folder: &Path) -> Result<()> {
    if folder.join(HEAD_FILE).is_file() {
        return Ok(());
    }
    Err(Error::Invalid(format!(
        "{}: not a reward model (no {HEAD_FILE}); train one with `whet train --objective reward`",
        folder.display()
    )))
}

impl RewardModel {
    pub fn load(folder: &Path) -> Result<Self> {
        check_folder(folder)?;
        let device = Device::Cpu;
        let adapter = folder.join("adapter_config.json").is_file();
        let record = read_record(folder)?;
        let mode = match record["config"]["prompt_mode"].as_str() {
            Some("raw") => PromptMode::Raw,
            _ => PromptMode::Chat,
        };
        let (model, tokenizer_folder) = if adapter {
            // The base as the trainer named it: as given, or beside the adapter.
            let named = PathBuf::from(LoraSpec::read(folder)?.base_model_name_or_path);
            let base = if named.exists() { named } else { folder.parent().unwrap_or(Path::new(".")).join(named) };
            (load_with_adapter(&base, folder, &device, DType::F32)?.0, base)
        } else {
            (Llama::load(folder, &device, DType::F32, &Trainable::Frozen)?, folder.to_path_buf())
        };
        let tokenizer = PromptTokenizer::new(&ModelFolder::open(&tokenizer_folder)?)?;
        let head = load_tensors(&folder.join(HEAD_FILE), &device)?
            .remove(HEAD)
            .ok_or_else(|| Error::Invalid(format!("{}: no tensor {HEAD}", folder.join(HEAD_FILE).display())))?;
        Ok(RewardModel { folder: folder.to_path_buf(), model, head, tokenizer, mode })
    }

    /// The raw score of `response` to `prompt`.
    pub fn score(&self, prompt: &Prompt, response: &str) -> Result<f64> {
        let e = example(&self.tokenizer, prompt, response, self.mode)?;
        if e.tokens.len() > self.model.config.context {
            return Err(Error::Invalid(format!(
                "prompt and response are {} tokens, longer than the reward model's context ({})",
                e.tokens.len(),
                self.model.config.context
            )));
        }
        let s = scores(&self.model, &self.head, &[e], &[vec![0]], None)?;
        Ok(s.to_vec1::<f32>()?[0] as f64)
    }
}

impl Reward for RewardModel {
    fn name(&self) -> String {
        format!("rm:{}", self.folder.display())
    }

    fn score(&self, candidate: &Candidate) -> Score {
        match RewardModel::score(self, &Prompt::Text(candidate.prompt.to_string()), candidate.response) {
            Ok(s) => Score { value: 1.0 / (1.0 + (-s).exp()), reason: format!("reward model score {s:.4}") },
            Err(e) => Score::fail(format!("the reward model could not score it: {e}")),
        }
    }
}
