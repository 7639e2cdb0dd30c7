//! Special-token strings in text: a model's control tokens written out as characters ("mesophilic
//! organisms<|endoftext|>"). 212 of T0's 220 template files end every response with one; scraped chats and model
//! outputs carry `<|im_end|>`, `</s>` or `[INST]`. Left in place, a model fine-tuned on them learns to write the
//! marker, and a tokenizer that parses its added tokens inside text turns the marker into the control token
//! itself. This module knows the markers of the common model families, finds them in a dataset's texts and
//! strips them from the ends of a text.

use std::ops::Range;

use aho_corasick::{AhoCorasick, MatchKind};
use arrow::array::{Array, AsArray, ListArray, RecordBatch, StringArray};
use serde::{Deserialize, Serialize};

use crate::schema;

/// The control-token strings of the common model families, each family with its own.
pub const FAMILIES: [(&str, &[&str]); 7] = [
    ("ChatML", &["<|im_start|>", "<|im_end|>", "<|im_sep|>"]),
    ("GPT-2/NeoX", &["<|endoftext|>", "<|padding|>"]),
    ("Llama 2", &["<s>", "</s>", "<unk>", "[INST]", "[/INST]", "<<SYS>>", "<</SYS>>"]),
    (
        "Llama 3",
        &[
            "<|begin_of_text|>",
            "<|end_of_text|>",
            "<|start_header_id|>",
            "<|end_header_id|>",
            "<|eot_id|>",
            "<|eom_id|>",
            "<|python_tag|>",
        ],
    ),
    (
        "Mistral",
        &[
            "[SYSTEM_PROMPT]",
            "[/SYSTEM_PROMPT]",
            "[TOOL_CALLS]",
            "[AVAILABLE_TOOLS]",
            "[/AVAILABLE_TOOLS]",
            "[TOOL_RESULTS]",
            "[/TOOL_RESULTS]",
        ],
    ),
    ("Gemma", &["<bos>", "<eos>", "<pad>", "<start_of_turn>", "<end_of_turn>"]),
    ("Phi", &["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]),
];

/// A set of special-token strings, each with the family it belongs to, and a matcher for all of them at once.
#[derive(Debug, Clone)]
pub struct SpecialTokens {
    strings: Vec<(String, String)>,
    matcher: AhoCorasick,
}

impl Default for SpecialTokens {
    fn default() -> Self {
        Self::known()
    }
}

impl SpecialTokens {
    /// The strings of [`FAMILIES`].
    pub fn known() -> Self {
        Self::new(
            FAMILIES.iter().flat_map(|(family, strings)| strings.iter().map(|s| (s.to_string(), family.to_string()))),
        )
    }

    /// These strings and `extra` (a tokenizer's own special tokens, say), each named for `family`; a string
    /// already here keeps its family.
    pub fn with(self, family: &str, extra: impl IntoIterator<Item = String>) -> Self {
        Self::new(self.strings.into_iter().chain(extra.into_iter().map(|s| (s, family.to_string()))))
    }

    /// These strings, each with its family.
    pub fn new(strings: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut seen = std::collections::HashSet::new();
        let strings: Vec<(String, String)> =
            strings.into_iter().filter(|(s, _)| !s.is_empty() && seen.insert(s.clone())).collect();
        // Leftmost-longest: at one position, the longest string is the one found.
        let matcher = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(strings.iter().map(|(s, _)| s))
            .expect("a few dozen short strings make an automaton");
        SpecialTokens { strings, matcher }
    }

    pub fn len(&self) -> usize {
        self.strings.len()
    }

    pub fn is_empty(&self) -> bool {
        self.strings.is_empty()
    }

    /// String `i`.
    pub fn string(&self, i: usize) -> &str {
        &self.strings[i].0
    }

    /// The family string `i` belongs to.
    pub fn family(&self, i: usize) -> &str {
        &self.strings[i].1
    }

    /// Every string in `text`, left to right, as (its index, where it is).
    pub fn find<'t>(&'t self, text: &'t str) -> impl Iterator<Item = (usize, Range<usize>)> + 't {
        self.matcher.find_iter(text).map(|m| (m.pattern().as_usize(), m.range()))
    }

    /// The first string in `text`, if any.
    pub fn first(&self, text: &str) -> Option<usize> {
        self.matcher.find(text).map(|m| m.pattern().as_usize())
    }

    /// `text` without the strings at its start and end (and the whitespace around them); `removed` gets the
    /// index of each string taken off. A text with none is returned as it is.
    pub fn strip_ends<'t>(&self, text: &'t str, removed: &mut Vec<usize>) -> &'t str {
        let longest = |fits: &dyn Fn(&str) -> bool| {
            (0..self.len()).filter(|&i| fits(self.string(i))).max_by_key(|&i| self.string(i).len())
        };
        let mut s = text;
        let before = removed.len();
        loop {
            let t = s.trim_end();
            match longest(&|m| t.ends_with(m)) {
                Some(i) => {
                    removed.push(i);
                    s = &t[..t.len() - self.string(i).len()];
                }
                None => break,
            }
        }
        let trailing = removed.len() > before;
        let mut leading = false;
        loop {
            let t = s.trim_start();
            match longest(&|m| t.starts_with(m)) {
                Some(i) => {
                    removed.push(i);
                    leading = true;
                    s = &t[self.string(i).len()..];
                }
                None => break,
            }
        }
        if trailing {
            s = s.trim_end();
        }
        if leading {
            s = s.trim_start();
        }
        s
    }
}

/// One special-token string found in a dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpecialTokenCount {
    pub string: String,
    pub family: String,
    /// Rows that hold it.
    pub rows: u64,
    pub occurrences: u64,
    /// Occurrences at the start or end of a text: what `whet filter --special-tokens strip` removes.
    pub at_ends: u64,
    /// The first rows that hold it.
    pub examples: Vec<SpecialTokenExample>,
}

/// Where a special-token string was found: the row's position in the dataset (from 0), its id, the field
/// (`response`, `messages[2].content`, …) and the text just before and after it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpecialTokenExample {
    pub row: u64,
    pub id: String,
    pub field: String,
    pub context: String,
}

/// The special-token strings a dataset's texts hold, the most frequent first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SpecialTokenReport {
    /// Rows that hold at least one.
    pub rows: u64,
    pub strings: Vec<SpecialTokenCount>,
}

/// Where a text sits in its row, as reasons and examples name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextField {
    Prompt,
    Response,
    /// The content of a conversation's turn (from 0).
    Turn(usize),
}

impl std::fmt::Display for TextField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TextField::Prompt => f.write_str(schema::PROMPT),
            TextField::Response => f.write_str(schema::RESPONSE),
            TextField::Turn(t) => write!(f, "{}[{t}].content", schema::MESSAGES),
        }
    }
}

/// The texts of a batch's rows a model would be trained on or given: a conversation's turns, else the prompt
/// and the response (a chat row's prompt and response repeat two of its turns).
pub struct RowTexts<'b> {
    prompts: &'b StringArray,
    responses: &'b StringArray,
    turns: Option<(&'b ListArray, &'b StringArray)>,
}

impl<'b> RowTexts<'b> {
    /// `None` when the batch has no text prompt or response column.
    pub fn of(batch: &'b RecordBatch) -> Option<Self> {
        let text = |name| batch.column_by_name(name).and_then(|c| c.as_string_opt::<i32>());
        let turns = batch.column_by_name(schema::MESSAGES).and_then(|c| c.as_list_opt::<i32>());
        Some(RowTexts {
            prompts: text(schema::PROMPT)?,
            responses: text(schema::RESPONSE)?,
            turns: turns.map(|list| (list, list.values().as_struct().column(1).as_string())),
        })
    }

    /// Row `i`'s texts, each with where it sits.
    pub fn row(&self, i: usize) -> impl Iterator<Item = (TextField, &'b str)> + 'b {
        let turns = self.turns.filter(|(list, _)| list.is_valid(i)).map(|(list, contents)| {
            let (start, end) = (list.value_offsets()[i] as usize, list.value_offsets()[i + 1] as usize);
            (start..end).map(move |t| (TextField::Turn(t - start), contents.value(t)))
        });
        let (prompts, responses) = (self.prompts, self.responses);
        let single = turns.is_none().then(move || {
            let response = responses.is_valid(i).then(|| (TextField::Response, responses.value(i)));
            std::iter::once((TextField::Prompt, prompts.value(i))).chain(response)
        });
        turns.into_iter().flatten().chain(single.into_iter().flatten())
    }
}

/// Counts the special-token strings of the batches it is given, keeping `examples` example rows per string.
pub struct SpecialTokenScan<'a> {
    tokens: &'a SpecialTokens,
    examples: usize,
    rows_seen: u64,
    rows: u64,
    counts: Vec<SpecialTokenCount>,
}

impl<'a> SpecialTokenScan<'a> {
    pub fn new(tokens: &'a SpecialTokens, examples: usize) -> Self {
        let counts = (0..tokens.len())
            .map(|i| SpecialTokenCount {
                string: tokens.string(i).to_string(),
                family: tokens.family(i).to_string(),
                rows: 0,
                occurrences: 0,
                at_ends: 0,
                examples: Vec::new(),
            })
            .collect();
        SpecialTokenScan { tokens, examples, rows_seen: 0, rows: 0, counts }
    }

    /// Scans the next batch of the dataset (rows are numbered in the order batches come).
    pub fn add(&mut self, batch: &RecordBatch) {
        let ids = batch.column_by_name(schema::ID).and_then(|c| c.as_string_opt::<i32>());
        let (Some(ids), Some(texts)) = (ids, RowTexts::of(batch)) else {
            return;
        };
        let mut in_row: Vec<usize> = Vec::new();
        let mut removed = Vec::new();
        for i in 0..batch.num_rows() {
            in_row.clear();
            for (field, text) in texts.row(i) {
                for (t, at) in self.tokens.find(text) {
                    let count = &mut self.counts[t];
                    count.occurrences += 1;
                    if !in_row.contains(&t) {
                        in_row.push(t);
                        count.rows += 1;
                        if count.examples.len() < self.examples {
                            count.examples.push(SpecialTokenExample {
                                row: self.rows_seen + i as u64,
                                id: ids.value(i).to_string(),
                                field: field.to_string(),
                                context: around(text, at),
                            });
                        }
                    }
                }
                if !in_row.is_empty() {
                    removed.clear();
                    self.tokens.strip_ends(text, &mut removed);
                    removed.iter().for_each(|&t| self.counts[t].at_ends += 1);
                }
            }
            self.rows += !in_row.is_empty() as u64;
        }
        self.rows_seen += batch.num_rows() as u64;
    }

    pub fn finish(self) -> SpecialTokenReport {
        let mut strings: Vec<SpecialTokenCount> = self.counts.into_iter().filter(|c| c.occurrences > 0).collect();
        strings.sort_by(|a, b| b.occurrences.cmp(&a.occurrences).then_with(|| a.string.cmp(&b.string)));
        SpecialTokenReport { rows: self.rows, strings }
    }
}

/// Up to 40 characters before `at` and 20 after, whole characters only.
fn around(text: &str, at: Range<usize>) -> String {
    let before: String = text[..at.start].chars().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect();
    let after: String = text[at.end..].chars().take(20).collect();
    let cut_before = before.len() < at.start;
    let cut_after = after.len() < text.len() - at.end;
    format!("{}{before}{}{after}{}", if cut_before { "…" } else { "" }, &text[at], if cut_after { "…" } else { "" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_family_and_strips_only_the_ends() {
        let tokens = SpecialTokens::known();
        let found: Vec<&str> = tokens
            .find("a<|im_end|>b</s>[INST] x [/INST]<|eot_id|><end_of_turn>")
            .map(|(i, _)| tokens.string(i))
            .collect();
        assert_eq!(found, ["<|im_end|>", "</s>", "[INST]", "[/INST]", "<|eot_id|>", "<end_of_turn>"]);
        assert_eq!(tokens.family(tokens.first("x<|endoftext|>").unwrap()), "GPT-2/NeoX");
        assert_eq!(tokens.first("a < s > [inst] <|im end|>"), None);

        let mut removed = Vec::new();
        assert_eq!(tokens.strip_ends("mesophilic organisms<|endoftext|>", &mut removed), "mesophilic organisms");
        assert_eq!(tokens.strip_ends("<s> [INST] hi there [/INST] \n</s>\n", &mut removed), "hi there");
        let names: Vec<&str> = removed.iter().map(|&i| tokens.string(i)).collect();
        assert_eq!(names, ["<|endoftext|>", "</s>", "[/INST]", "<s>", "[INST]"]);
        removed.clear();
        // Inside the text: left where it is. No string: the text as it is, whitespace included.
        assert_eq!(tokens.strip_ends("a<|im_end|>b", &mut removed), "a<|im_end|>b");
        assert_eq!(tokens.strip_ends("  plain text \n", &mut removed), "  plain text \n");
        assert!(removed.is_empty());
        let own = tokens.with("tokenizer", ["<|custom|>".to_string(), "</s>".to_string()]);
        assert_eq!(own.family(own.first("x<|custom|>").unwrap()), "tokenizer");
        assert_eq!(own.family(own.first("x</s>").unwrap()), "Llama 2", "a known string keeps its family");
    }

    #[test]
    fn context_keeps_whole_characters() {
        let text = format!("{}é<|im_end|>{}", "ü".repeat(50), "ö".repeat(30));
        let at = text.find("<|im_end|>").unwrap();
        let context = around(&text, at..at + 10);
        assert!(context.starts_with('…') && context.ends_with('…'));
        assert_eq!(context.chars().filter(|&c| c == 'ü').count(), 39);
        assert!(context.contains("é<|im_end|>ööö"));
    }
}
