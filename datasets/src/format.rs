//! The layouts fine-tuning data comes in, recognised from a row's field names, and the explicit field
//! mapping (`--map prompt=question`) that overrides recognition.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A source layout. Recognised per file from its first row's fields (see [`detect`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceFormat {
    /// `instruction`, optional `input`, `output` (optional `system`, `history`): Stanford Alpaca, LLaMA-Factory.
    Alpaca,
    /// `prompt`, `completion`: OpenAI legacy fine-tuning, T0 / Self-Instruct training files.
    PromptCompletion,
    /// `prompt`, optional `response`, `messages`, `meta`: whetstone's own JSONL layout and prompt-only lists.
    PromptResponse,
    /// OpenAI chat `messages: [{role, content}]` (TRL, Axolotl `chat_template`).
    Messages,
    /// ShareGPT `conversations: [{from, value}]` with `human`/`gpt` roles.
    ShareGpt,
    /// GSM8K-style `question`, `answer`.
    QuestionAnswer,
    /// Self-Instruct `instruction`, `instances: [{input, output}]`: one row per instance.
    SelfInstruct,
    /// Fields named by the user's `--map`.
    Mapped,
    /// A whetstone dataset (Parquet/Arrow with the canonical columns), passed through as is.
    Whetstone,
}

impl SourceFormat {
    pub fn name(self) -> &'static str {
        match self {
            SourceFormat::Alpaca => "alpaca",
            SourceFormat::PromptCompletion => "prompt-completion",
            SourceFormat::PromptResponse => "prompt-response",
            SourceFormat::Messages => "messages",
            SourceFormat::ShareGpt => "sharegpt",
            SourceFormat::QuestionAnswer => "question-answer",
            SourceFormat::SelfInstruct => "self-instruct",
            SourceFormat::Mapped => "mapped",
            SourceFormat::Whetstone => "whetstone",
        }
    }
}

impl fmt::Display for SourceFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A user's explicit mapping from canonical roles to source field names, e.g. `prompt=question`.
/// Roles left out are recognised as usual.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldMap {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// Extra context appended to the prompt after a blank line (Alpaca's `input`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
}

impl FieldMap {
    pub const ROLES: [&'static str; 7] = ["id", "source", "prompt", "input", "response", "messages", "system"];

    /// Parses `role=field` pairs as given on the command line.
    pub fn parse<S: AsRef<str>>(pairs: &[S]) -> Result<Self> {
        let mut map = FieldMap::default();
        for pair in pairs {
            let pair = pair.as_ref();
            let Some((role, field)) = pair.split_once('=').filter(|(r, f)| !r.is_empty() && !f.is_empty()) else {
                return Err(Error::Usage(format!(
                    "--map {pair:?}: expected ROLE=FIELD, e.g. --map prompt=question (roles: {})",
                    Self::ROLES.join(", ")
                )));
            };
            let slot = match role {
                "id" => &mut map.id,
                "source" => &mut map.source,
                "prompt" => &mut map.prompt,
                "input" => &mut map.input,
                "response" => &mut map.response,
                "messages" => &mut map.messages,
                "system" => &mut map.system,
                _ => {
                    return Err(Error::Usage(format!(
                        "--map {pair:?}: unknown role {role:?} (roles: {})",
                        Self::ROLES.join(", ")
                    )))
                }
            };
            *slot = Some(field.to_string());
        }
        Ok(map)
    }

    pub fn is_empty(&self) -> bool {
        *self == FieldMap::default()
    }
}

/// Which source field plays which canonical role in one file, after recognition and the user's mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roles {
    pub format: SourceFormat,
    pub id: String,
    pub source: String,
    pub prompt: Option<String>,
    pub input: Option<String>,
    pub response: Option<String>,
    /// Whether rows without `response` are errors (true for every layout that has answers).
    pub response_required: bool,
    pub messages: Option<String>,
    pub system: Option<String>,
    /// Alpaca/LLaMA-Factory `history: [[user, assistant], …]`.
    pub history: Option<String>,
    /// Self-Instruct `instances`.
    pub instances: Option<String>,
    /// A field holding a JSON object of extra fields (whetstone's own `meta`).
    pub meta: Option<String>,
}

impl Roles {
    fn new(format: SourceFormat) -> Self {
        Roles {
            format,
            id: "id".into(),
            source: "source".into(),
            prompt: None,
            input: None,
            response: None,
            response_required: true,
            messages: None,
            system: None,
            history: None,
            instances: None,
            meta: None,
        }
    }

    /// Every source field this mapping reads; the rest go to `meta`.
    pub fn used_fields(&self) -> Vec<&str> {
        let mut used = vec![self.id.as_str(), self.source.as_str()];
        for f in [
            &self.prompt,
            &self.input,
            &self.response,
            &self.messages,
            &self.system,
            &self.history,
            &self.instances,
            &self.meta,
        ]
        .into_iter()
        .flatten()
        {
            used.push(f);
        }
        used
    }
}

/// Recognises the layout of a file from the field names of its first row, then applies `map`.
/// Fails with the fields it saw and the `--map` that would fix it.
pub fn detect(fields: &[&str], map: &FieldMap) -> std::result::Result<Roles, String> {
    let has = |name: &str| fields.contains(&name);
    let s = |name: &str| Some(name.to_string());
    let mut roles = if map.prompt.is_some() || map.messages.is_some() {
        let mut r = Roles::new(SourceFormat::Mapped);
        r.response_required = false;
        r
    } else if has("instruction") && has("instances") {
        Roles { instances: s("instances"), prompt: s("instruction"), ..Roles::new(SourceFormat::SelfInstruct) }
    } else if has("instruction") && has("output") {
        Roles {
            prompt: s("instruction"),
            input: s("input"),
            response: s("output"),
            system: s("system"),
            history: s("history"),
            ..Roles::new(SourceFormat::Alpaca)
        }
    } else if has("messages") && !has("prompt") {
        Roles { messages: s("messages"), system: s("system"), ..Roles::new(SourceFormat::Messages) }
    } else if has("conversations") {
        Roles { messages: s("conversations"), system: s("system"), ..Roles::new(SourceFormat::ShareGpt) }
    } else if has("prompt") && has("completion") {
        Roles { prompt: s("prompt"), response: s("completion"), ..Roles::new(SourceFormat::PromptCompletion) }
    } else if has("prompt") {
        Roles {
            prompt: s("prompt"),
            response: s("response"),
            response_required: false,
            messages: s("messages"),
            meta: s("meta"),
            ..Roles::new(SourceFormat::PromptResponse)
        }
    } else if has("question") && has("answer") {
        Roles { prompt: s("question"), response: s("answer"), ..Roles::new(SourceFormat::QuestionAnswer) }
    } else {
        return Err(format!(
            "cannot tell the layout from the fields [{}]; name them, e.g. --map prompt=FIELD --map response=FIELD",
            fields.join(", ")
        ));
    };
    let FieldMap { id, source, prompt, input, response, messages, system } = map.clone();
    if let Some(f) = id {
        roles.id = f;
    }
    if let Some(f) = source {
        roles.source = f;
    }
    for (slot, value) in [
        (&mut roles.prompt, prompt),
        (&mut roles.input, input),
        (&mut roles.response, response),
        (&mut roles.messages, messages),
        (&mut roles.system, system),
    ] {
        if value.is_some() {
            *slot = value;
        }
    }
    Ok(roles)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_the_common_layouts() {
        let m = FieldMap::default();
        let f = |fields: &[&str]| detect(fields, &m).unwrap().format;
        assert_eq!(f(&["instruction", "input", "output"]), SourceFormat::Alpaca);
        assert_eq!(f(&["prompt", "completion"]), SourceFormat::PromptCompletion);
        assert_eq!(f(&["id", "source", "prompt", "response", "meta"]), SourceFormat::PromptResponse);
        assert_eq!(f(&["messages"]), SourceFormat::Messages);
        assert_eq!(f(&["id", "conversations"]), SourceFormat::ShareGpt);
        assert_eq!(f(&["question", "answer"]), SourceFormat::QuestionAnswer);
        assert_eq!(f(&["id", "instruction", "instances"]), SourceFormat::SelfInstruct);
        let err = detect(&["text", "label"], &m).unwrap_err();
        assert!(err.contains("[text, label]") && err.contains("--map"), "{err}");
    }

    #[test]
    fn a_map_overrides_recognition() {
        let m = FieldMap::parse(&["prompt=text", "response=label"]).unwrap();
        let roles = detect(&["text", "label"], &m).unwrap();
        assert_eq!(roles.format, SourceFormat::Mapped);
        assert_eq!(roles.prompt.as_deref(), Some("text"));
        let m = FieldMap::parse(&["id=uid"]).unwrap();
        let roles = detect(&["uid", "question", "answer"], &m).unwrap();
        assert_eq!((roles.format, roles.id.as_str()), (SourceFormat::QuestionAnswer, "uid"));
        assert!(FieldMap::parse(&["bogus=x"]).unwrap_err().to_string().contains("unknown role"));
        assert!(FieldMap::parse(&["prompt"]).unwrap_err().to_string().contains("ROLE=FIELD"));
    }
}
