//! Verifiers: rewards that check a response's final answer exactly, 1 when it is right and 0 when not.

use super::{Candidate, Reward, Score};
use crate::error::{Error, Result};

/// The final number of a GSM8K-style solution: after the last `####` if there is one, else after the last
/// "answer is", else the last number in the text. Tolerant of `$`, thousands separators, a trailing `.`,
/// and `72.00`; returns the number as written without those, and its value.
pub fn final_number(text: &str) -> Option<(String, f64)> {
    let tail = if let Some(i) = text.rfind("####") {
        &text[i + 4..]
    } else if let Some(i) = text.to_lowercase().rfind("answer is") {
        // Lower-casing keeps byte offsets for ASCII, and "answer is" is ASCII; guard the rest.
        text.get(i + "answer is".len()..).unwrap_or(text)
    } else {
        text
    };
    let numbers = numbers_in(tail);
    // After `####` or "answer is" the first number is the answer; in free text, the last.
    let pick = if tail.len() < text.len() { numbers.first() } else { numbers.last() };
    pick.cloned()
}

/// Every number in `text`, as written (signs, thousands commas and decimals kept; `$` and a trailing `.` not).
fn numbers_in(text: &str) -> Vec<(String, f64)> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let starts_number = bytes[i].is_ascii_digit()
            || (bytes[i] == b'-'
                && bytes.get(i + 1).is_some_and(u8::is_ascii_digit)
                && (i == 0 || !bytes[i - 1].is_ascii_alphanumeric()));
        if !starts_number {
            i += 1;
            continue;
        }
        let start = i;
        i += 1;
        while i < bytes.len() {
            let c = bytes[i];
            let joins = (c == b',' || c == b'.') && bytes.get(i + 1).is_some_and(u8::is_ascii_digit);
            if c.is_ascii_digit() || joins {
                i += 1;
            } else {
                break;
            }
        }
        let written = &text[start..i];
        let plain: String = written.chars().filter(|&c| c != ',').collect();
        if let Ok(value) = plain.parse::<f64>() {
            out.push((written.to_string(), value));
        }
    }
    out
}

/// GSM8K: the response's final number equals the reference's (`#### n`), to 1e-6.
pub struct Gsm8k;

impl Reward for Gsm8k {
    fn name(&self) -> String {
        "gsm8k".into()
    }

    fn score(&self, c: &Candidate) -> Score {
        let Some(reference) = c.reference else { return Score::fail("the row has no reference answer") };
        let Some((expected, want)) = final_number(reference) else {
            return Score::fail("no number in the reference answer");
        };
        match final_number(c.response) {
            None => Score::fail("no final answer found in the response"),
            Some((got, value)) if (value - want).abs() <= 1e-6 * want.abs().max(1.0) => {
                Score::pass(format!("answer {got} matches the reference {expected}"))
            }
            Some((got, _)) => Score::fail(format!("answer {got}, the reference is {expected}")),
        }
    }
}

/// The response equals the reference after trimming, collapsing white space and (unless `case_sensitive`)
/// lower-casing.
pub struct ExactMatch {
    pub case_sensitive: bool,
}

impl ExactMatch {
    fn normal(&self, s: &str) -> String {
        let collapsed = s.split_whitespace().collect::<Vec<_>>().join(" ");
        if self.case_sensitive {
            collapsed
        } else {
            collapsed.to_lowercase()
        }
    }
}

impl Reward for ExactMatch {
    fn name(&self) -> String {
        "exact".into()
    }

    fn score(&self, c: &Candidate) -> Score {
        let Some(reference) = c.reference else { return Score::fail("the row has no reference answer") };
        if self.normal(c.response) == self.normal(reference) {
            Score::pass("equals the reference")
        } else {
            Score::fail("differs from the reference")
        }
    }
}

/// The response matches a regular expression.
pub struct RegexMatch {
    pub pattern: regex::Regex,
}

impl RegexMatch {
    pub fn new(pattern: &str) -> Result<Self> {
        let pattern = regex::Regex::new(pattern)
            .map_err(|e| Error::Invalid(format!("the reward's regular expression {pattern:?}: {e}")))?;
        Ok(RegexMatch { pattern })
    }
}

impl Reward for RegexMatch {
    fn name(&self) -> String {
        "regex".into()
    }

    fn score(&self, c: &Candidate) -> Score {
        match self.pattern.find(c.response) {
            Some(m) => Score::pass(format!("matches /{}/ at {:?}", self.pattern, m.as_str())),
            None => Score::fail(format!("does not match /{}/", self.pattern)),
        }
    }
}

/// The response is one valid JSON value (surrounding white space and a Markdown code fence allowed).
pub struct JsonValid;

impl Reward for JsonValid {
    fn name(&self) -> String {
        "json".into()
    }

    fn score(&self, c: &Candidate) -> Score {
        let text = c.response.trim();
        let text = text
            .strip_prefix("```json")
            .or_else(|| text.strip_prefix("```"))
            .and_then(|t| t.strip_suffix("```"))
            .unwrap_or(text)
            .trim();
        match serde_json::from_str::<serde_json::Value>(text) {
            Ok(v) => Score::pass(format!("valid JSON ({})", kind(&v))),
            Err(e) => Score::fail(format!("not JSON: {e}")),
        }
    }
}

fn kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Object(_) => "an object",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Null => "null",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reward::Weighted;

    fn candidate<'a>(response: &'a str, reference: &'a str) -> Candidate<'a> {
        Candidate { prompt: "q", response, reference: Some(reference), ..Default::default() }
    }

    #[test]
    fn final_numbers_are_found_the_way_people_write_them() {
        let n = |t: &str| final_number(t).map(|(_, v)| v);
        assert_eq!(n("He sprints 3*3=<<3*3=9>>9 times\nSo he runs 9*60=540 meters\n#### 540"), Some(540.0));
        assert_eq!(n("#### 1,234"), Some(1234.0));
        assert_eq!(n("The answer is $1,234.50."), Some(1234.5));
        assert_eq!(n("So the answer is 72. Then 3 more."), Some(72.0), "the first number after 'answer is'");
        assert_eq!(n("First 3, then 4, so 7."), Some(7.0), "free text: the last number");
        assert_eq!(n("#### -5"), Some(-5.0));
        assert_eq!(n("item-3 costs 4"), Some(4.0));
        assert_eq!(n("x-3"), Some(3.0), "a hyphen after a letter is not a sign");
        assert_eq!(n("no numbers here"), None);
        assert_eq!(n("#### 72.00"), Some(72.0));
    }

    #[test]
    fn verifiers_score_with_reasons() {
        let gold = "Natalia sold 48/2 = 24 clips in May.\n#### 72";
        let s = Gsm8k.score(&candidate("48 + 24 = 72 clips.\n#### 72", gold));
        assert_eq!(s.value, 1.0);
        assert!(s.reason.contains("72 matches"), "{}", s.reason);
        let s = Gsm8k.score(&candidate("The answer is 70.", gold));
        assert_eq!((s.value, s.reason.as_str()), (0.0, "answer 70, the reference is 72"));
        assert_eq!(Gsm8k.score(&candidate("I don't know", gold)).reason, "no final answer found in the response");
        assert_eq!(Gsm8k.score(&candidate("#### 72.0", gold)).value, 1.0);
        let none = Candidate { prompt: "q", response: "#### 1", ..Default::default() };
        assert_eq!(Gsm8k.score(&none).value, 0.0);

        let exact = ExactMatch { case_sensitive: false };
        assert_eq!(exact.score(&candidate("  Paris\n", "paris")).value, 1.0);
        assert_eq!(ExactMatch { case_sensitive: true }.score(&candidate("Paris", "paris")).value, 0.0);

        let re = RegexMatch::new(r"^\d+$").unwrap();
        assert_eq!(re.score(&candidate("81", "")).value, 1.0);
        assert_eq!(re.score(&candidate("81 apples", "")).value, 0.0);
        assert!(RegexMatch::new("(").err().unwrap().to_string().contains("regular expression \"(\""));

        assert_eq!(JsonValid.score(&candidate("```json\n{\"a\": 1}\n```", "")).reason, "valid JSON (an object)");
        assert!(JsonValid.score(&candidate("{a: 1}", "")).reason.starts_with("not JSON"));

        let both = Weighted { parts: vec![(0.5, Box::new(Gsm8k)), (0.5, Box::new(RegexMatch::new("####").unwrap()))] };
        let s = both.score(&candidate("so 70\n#### 70", gold));
        assert_eq!(s.value, 0.5);
        assert!(s.reason.contains("gsm8k 0.000 (answer 70") && s.reason.contains("regex 1.000"), "{}", s.reason);
        assert_eq!(both.name(), "0.5·gsm8k + 0.5·regex");
    }
}
