//! One row of the record model, built from a source row by its [`Roles`], and collected into Arrow batches.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, ListBuilder, RecordBatch, StringArray, StringBuilder, StructBuilder};
use serde_json::{Map, Value};

use crate::error::{Position, RowError};
use crate::format::{Roles, SourceFormat};
use crate::schema;

/// One chat turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub role: String,
    pub content: String,
}

/// One row in the canonical layout (the core columns of [`schema::core_schema`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub id: String,
    pub source: String,
    pub prompt: String,
    pub response: Option<String>,
    pub messages: Option<Vec<Message>>,
    /// JSON object text of the source's other fields.
    pub meta: Option<String>,
}

/// The stable id of a row without one: 128-bit xxh3 of its content (not its file or position), in hex.
pub fn content_id(prompt: &str, response: Option<&str>, messages: Option<&[Message]>) -> String {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    // Separators that cannot occur in UTF-8 text keep ("ab","c") and ("a","bc") apart.
    h.update(prompt.as_bytes());
    h.update(&[0xff]);
    if let Some(r) = response {
        h.update(r.as_bytes());
    }
    h.update(&[0xfe]);
    for m in messages.unwrap_or_default() {
        h.update(m.role.as_bytes());
        h.update(&[0xff]);
        h.update(m.content.as_bytes());
        h.update(&[0xfe]);
    }
    format!("{:032x}", h.digest128())
}

/// Row `row`'s conversation from the `messages` column, when the batch has one and the row is a chat row.
pub fn messages_at(batch: &RecordBatch, row: usize) -> Option<Vec<Message>> {
    let list = batch.column_by_name(schema::MESSAGES)?.as_list_opt::<i32>()?;
    if !list.is_valid(row) {
        return None;
    }
    let turns = list.value(row);
    let turns = turns.as_struct();
    let (role, content): (&StringArray, &StringArray) = (turns.column(0).as_string(), turns.column(1).as_string());
    Some((0..turns.len()).map(|i| Message { role: role.value(i).into(), content: content.value(i).into() }).collect())
}

/// Where a source row sits, for error messages and the default `source`.
pub struct RowContext<'a> {
    pub path: &'a Path,
    pub position: Position,
    pub stem: &'a str,
}

impl RowContext<'_> {
    fn wrong_type(&self, field: Option<&str>, expected: &str, found: &Value) -> RowError {
        self.error(field, "wrong_type", format!("expected {expected}, found {}", type_name(found)))
    }

    fn missing(&self, field: Option<&str>, message: impl Into<String>) -> RowError {
        self.error(field, "missing_field", message)
    }

    fn error(&self, field: Option<&str>, kind: &'static str, message: impl Into<String>) -> RowError {
        RowError {
            path: self.path.to_path_buf(),
            position: self.position,
            field: field.map(str::to_string),
            kind,
            message: message.into(),
            row: None,
        }
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Takes the fields a row's roles read out of it; what is left becomes `meta`.
struct Fields<'a> {
    obj: Map<String, Value>,
    cx: &'a RowContext<'a>,
    roles: &'a Roles,
}

impl Fields<'_> {
    fn take(&mut self, name: Option<&str>) -> Option<Value> {
        self.obj.shift_remove(name?).filter(|v| !v.is_null())
    }

    fn string(&mut self, name: Option<&str>, required: bool) -> Result<Option<String>, RowError> {
        match self.take(name) {
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(self.cx.wrong_type(name, "a string", &other)),
            None if required => Err(self.cx.missing(
                name,
                format!("missing (rows of this file are {}); map another field with --map", self.roles.format),
            )),
            None => Ok(None),
        }
    }

    fn id(&mut self) -> Result<Option<String>, RowError> {
        let name = self.roles.id.clone();
        match self.take(Some(&name)) {
            Some(Value::String(s)) => Ok(Some(s)),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(other) => Err(self.cx.wrong_type(Some(&name), "a string or number", &other)),
            None => Ok(None),
        }
    }
}

fn role_name(role: &str) -> String {
    match role {
        "human" | "user" => "user".into(),
        "gpt" | "assistant" | "bot" | "model" | "chatgpt" => "assistant".into(),
        "system" => "system".into(),
        other => other.to_lowercase(),
    }
}

fn parse_messages(value: Value, field: &str, cx: &RowContext) -> Result<Vec<Message>, RowError> {
    let Value::Array(items) = value else {
        return Err(cx.wrong_type(Some(field), "an array of turns", &value));
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let turn = format!("{field}[{i}]");
        let Value::Object(mut obj) = item else {
            return Err(cx.wrong_type(Some(&turn), "an object", &item));
        };
        let role = match obj.shift_remove("role").or_else(|| obj.shift_remove("from")) {
            Some(Value::String(r)) => role_name(&r),
            Some(v) => return Err(cx.wrong_type(Some(&format!("{turn}.role")), "a string", &v)),
            None => return Err(cx.missing(Some(&format!("{turn}.role")), "missing (a turn needs `role` or `from`)")),
        };
        let content = match obj.shift_remove("content").or_else(|| obj.shift_remove("value")) {
            Some(Value::String(c)) => c,
            // An assistant turn that only calls tools has no text.
            Some(Value::Null) => String::new(),
            // OpenAI content parts: keep the text parts.
            Some(Value::Array(parts)) => {
                let mut text = Vec::new();
                for part in &parts {
                    match part.get("text").and_then(Value::as_str) {
                        Some(t) => text.push(t),
                        None => {
                            return Err(cx.error(
                                Some(&format!("{turn}.content")),
                                "wrong_type",
                                "content part without text (only text parts are supported)",
                            ))
                        }
                    }
                }
                text.join("\n")
            }
            Some(v) => return Err(cx.wrong_type(Some(&format!("{turn}.content")), "a string", &v)),
            None => {
                return Err(cx.missing(Some(&format!("{turn}.content")), "missing (a turn needs `content` or `value`)"))
            }
        };
        out.push(Message { role, content });
    }
    Ok(out)
}

/// prompt = the last user turn before the final assistant turn; response = that assistant turn, if last.
fn prompt_response_of(
    messages: &[Message],
    field: &str,
    cx: &RowContext,
) -> Result<(String, Option<String>), RowError> {
    let (response, head) = match messages.split_last() {
        Some((last, head)) if last.role == "assistant" => (Some(last.content.clone()), head),
        _ => (None, messages),
    };
    let prompt = head.iter().rev().find(|m| m.role == "user").map(|m| m.content.clone());
    match prompt {
        Some(p) => Ok((p, response)),
        None => Err(cx.missing(Some(field), "the conversation has no user turn")),
    }
}

fn join_input(prompt: String, input: Option<String>) -> String {
    match input {
        Some(input) if !input.is_empty() => format!("{prompt}\n\n{input}"),
        _ => prompt,
    }
}

/// Converts one source row (a JSON object) into records: one, or one per instance for Self-Instruct.
pub fn records_from_json(value: Value, roles: &Roles, cx: &RowContext, out: &mut Vec<Record>) -> Result<(), RowError> {
    let Value::Object(obj) = value else {
        return Err(cx.wrong_type(None, "a JSON object per row", &value));
    };
    let mut f = Fields { obj, cx, roles };
    let id = f.id()?;
    let source = f.string(Some(&roles.source), false)?.unwrap_or_else(|| cx.stem.to_string());
    let system = f.string(roles.system.as_deref(), false)?;

    // Self-Instruct: one row per instance.
    if let Some(field) = roles.instances.as_deref() {
        let instruction = f.string(roles.prompt.as_deref(), true)?.unwrap_or_default();
        let instances = match f.take(Some(field)) {
            Some(Value::Array(items)) if !items.is_empty() => items,
            Some(Value::Array(_)) => return Err(cx.missing(Some(field), "no instances")),
            Some(v) => return Err(cx.wrong_type(Some(field), "an array", &v)),
            None => return Err(cx.missing(Some(field), "missing")),
        };
        let meta = meta_of(f.obj, None);
        let many = instances.len() > 1;
        for (k, instance) in instances.into_iter().enumerate() {
            let name = format!("{field}[{k}]");
            let Value::Object(obj) = instance else {
                return Err(cx.wrong_type(Some(&name), "an object", &instance));
            };
            let inst_roles = Roles {
                input: Some("input".into()),
                response: Some("output".into()),
                instances: None,
                ..roles.clone()
            };
            let mut inst = Fields { obj, cx, roles: &inst_roles };
            let input = inst.string(Some("input"), false)?;
            let response = inst.string(Some("output"), true)?;
            let prompt = join_input(instruction.clone(), input);
            let id = match &id {
                Some(id) if many => format!("{id}-{k}"),
                Some(id) => id.clone(),
                None => content_id(&prompt, response.as_deref(), None),
            };
            out.push(Record { id, source: source.clone(), prompt, response, messages: None, meta: meta.clone() });
        }
        return Ok(());
    }

    let mut messages = match roles.messages.as_deref() {
        Some(field) => match f.take(Some(field)) {
            Some(v) => Some(parse_messages(v, field, cx)?),
            None if roles.prompt.is_none() => return Err(cx.missing(Some(field), "missing")),
            None => None,
        },
        None => None,
    };
    let (prompt, response) = if roles.prompt.is_some() {
        let prompt = f.string(roles.prompt.as_deref(), true)?.unwrap_or_default();
        let input = f.string(roles.input.as_deref(), false)?;
        let response = f.string(roles.response.as_deref(), roles.response_required)?;
        (join_input(prompt, input), response)
    } else {
        let field = roles.messages.as_deref().unwrap_or("messages");
        prompt_response_of(messages.as_deref().unwrap_or_default(), field, cx)?
    };

    // Alpaca/LLaMA-Factory multi-turn: history and system make it a conversation.
    let history = match roles.history.as_deref() {
        Some(field) => match f.take(Some(field)) {
            Some(Value::Array(pairs)) if !pairs.is_empty() => Some(history_turns(pairs, field, cx)?),
            Some(Value::Array(_)) | None => None,
            Some(v) => return Err(cx.wrong_type(Some(field), "an array of [user, assistant] pairs", &v)),
        },
        None => None,
    };
    if messages.is_none() && (history.is_some() || system.is_some()) && roles.format == SourceFormat::Alpaca {
        let mut turns = history.unwrap_or_default();
        turns.push(Message { role: "user".into(), content: prompt.clone() });
        if let Some(r) = &response {
            turns.push(Message { role: "assistant".into(), content: r.clone() });
        }
        messages = Some(turns);
    }
    if let (Some(turns), Some(system)) = (&mut messages, system) {
        if turns.first().map(|m| m.role != "system").unwrap_or(true) {
            turns.insert(0, Message { role: "system".into(), content: system });
        }
    }

    let meta_obj = match roles.meta.as_deref().and_then(|m| f.obj.shift_remove(m)) {
        Some(Value::Object(m)) => Some(m),
        Some(Value::Null) | None => None,
        Some(other) => {
            let name = roles.meta.as_deref();
            return Err(cx.wrong_type(name, "an object", &other));
        }
    };
    let meta = meta_of(f.obj, meta_obj);
    let id = id.unwrap_or_else(|| content_id(&prompt, response.as_deref(), messages.as_deref()));
    out.push(Record { id, source, prompt, response, messages, meta });
    Ok(())
}

fn history_turns(pairs: Vec<Value>, field: &str, cx: &RowContext) -> Result<Vec<Message>, RowError> {
    let mut turns = Vec::with_capacity(pairs.len() * 2);
    for (i, pair) in pairs.into_iter().enumerate() {
        match pair {
            Value::Array(p) if p.len() == 2 && p.iter().all(Value::is_string) => {
                for (role, text) in ["user", "assistant"].into_iter().zip(p) {
                    turns.push(Message { role: role.into(), content: text.as_str().unwrap_or_default().to_string() });
                }
            }
            other => {
                return Err(cx.wrong_type(
                    Some(&format!("{field}[{i}]")),
                    "a [user, assistant] pair of strings",
                    &other,
                ))
            }
        }
    }
    Ok(turns)
}

fn meta_of(rest: Map<String, Value>, base: Option<Map<String, Value>>) -> Option<String> {
    let mut meta = base.unwrap_or_default();
    meta.extend(rest);
    (!meta.is_empty()).then(|| Value::Object(meta).to_string())
}

/// Collects records into batches of the core schema.
pub struct RecordBatchBuilder {
    id: StringBuilder,
    source: StringBuilder,
    prompt: StringBuilder,
    response: StringBuilder,
    messages: ListBuilder<StructBuilder>,
    meta: StringBuilder,
    len: usize,
}

impl Default for RecordBatchBuilder {
    fn default() -> Self {
        Self::with_capacity(0)
    }
}

impl RecordBatchBuilder {
    pub fn with_capacity(rows: usize) -> Self {
        let turn = StructBuilder::from_fields(schema::message_fields(), 0);
        let item = match schema::messages_type() {
            arrow::datatypes::DataType::List(item) => item,
            _ => unreachable!("messages is a list"),
        };
        RecordBatchBuilder {
            id: StringBuilder::with_capacity(rows, rows * 32),
            source: StringBuilder::with_capacity(rows, rows * 16),
            prompt: StringBuilder::with_capacity(rows, 0),
            response: StringBuilder::with_capacity(rows, 0),
            messages: ListBuilder::new(turn).with_field(item),
            meta: StringBuilder::with_capacity(rows, 0),
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn push(&mut self, r: &Record) {
        self.id.append_value(&r.id);
        self.source.append_value(&r.source);
        self.prompt.append_value(&r.prompt);
        self.response.append_option(r.response.as_deref());
        match &r.messages {
            Some(turns) => {
                let values = self.messages.values();
                for m in turns {
                    values.field_builder::<StringBuilder>(0).expect("role").append_value(&m.role);
                    values.field_builder::<StringBuilder>(1).expect("content").append_value(&m.content);
                    values.append(true);
                }
                self.messages.append(true);
            }
            None => self.messages.append(false),
        }
        self.meta.append_option(r.meta.as_deref());
        self.len += 1;
    }

    pub fn finish(&mut self) -> RecordBatch {
        self.len = 0;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.id.finish()),
            Arc::new(self.source.finish()),
            Arc::new(self.prompt.finish()),
            Arc::new(self.response.finish()),
            Arc::new(self.messages.finish()),
            Arc::new(self.meta.finish()),
        ];
        RecordBatch::try_new(schema::core_schema(), columns).expect("builders follow the core schema")
    }
}
