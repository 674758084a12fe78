//! Workloads: the prompt scenarios (TR118 §2.2: micro 8, short 11, medium 20, long 27 prompt tokens,
//! batch 1) and the held-out texts for perplexity.

use serde::{Deserialize, Serialize};

use crate::assets;
use crate::error::ModelError;

/// A prompt scenario. The prompt is the first `prompt_tokens` tokens of [`PROMPT_PASSAGE`], so every
/// backend sees exactly the same ids and the length is exact, not approximate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Scenario {
    pub name: &'static str,
    pub prompt_tokens: usize,
    pub batch: usize,
    pub description: &'static str,
}

pub const SCENARIOS: [Scenario; 4] = [
    Scenario {
        name: "micro",
        prompt_tokens: 8,
        batch: 1,
        description: "minimal prompt (TR118 single_micro)",
    },
    Scenario {
        name: "short",
        prompt_tokens: 11,
        batch: 1,
        description: "short prompt (TR118 single_short)",
    },
    Scenario {
        name: "medium",
        prompt_tokens: 20,
        batch: 1,
        description: "medium prompt (TR118 single_medium)",
    },
    Scenario {
        name: "long",
        prompt_tokens: 27,
        batch: 1,
        description: "long prompt (TR118 single_long)",
    },
];

/// English prose long enough for the longest scenario.
pub const PROMPT_PASSAGE: &str = "The history of the lighthouse begins with fires lit on hilltops to guide ships \
safely into harbour, and over many centuries these simple beacons grew into towers of stone whose lamps \
could be seen for miles across the dark and restless sea.";

pub fn scenario(name: &str) -> Option<Scenario> {
    SCENARIOS.iter().copied().find(|s| s.name == name)
}

pub fn scenario_names() -> Vec<&'static str> {
    SCENARIOS.iter().map(|s| s.name).collect()
}

/// Token ids of a scenario's prompt, from any tokenizer's `encode`.
pub fn prompt_ids(
    scenario: &Scenario,
    encode: impl Fn(&str) -> Result<Vec<u32>, ModelError>,
) -> Result<Vec<u32>, ModelError> {
    let ids = encode(PROMPT_PASSAGE)?;
    if ids.len() < scenario.prompt_tokens {
        return Err(ModelError::Tokenizer(format!(
            "the prompt passage has {} tokens; scenario `{}` needs {}",
            ids.len(),
            scenario.name,
            scenario.prompt_tokens
        )));
    }
    Ok(ids[..scenario.prompt_tokens].to_vec())
}

/// A held-out text for perplexity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Corpus {
    /// English Wikipedia articles (exllamav2's `wiki.utf8`), `<doc>` markup removed.
    Wiki,
    /// Moby-Dick, the whole book from chapter 1.
    MobyDick,
}

impl Corpus {
    pub fn text(self) -> Result<String, ModelError> {
        let (asset, strip_docs) = match self {
            Corpus::Wiki => (assets::WIKI_TEXT, true),
            Corpus::MobyDick => (assets::MOBY_DICK, false),
        };
        let path = assets::ensure(&asset)?;
        let raw = std::fs::read_to_string(&path).map_err(|e| ModelError::Io {
            path: path.clone(),
            source: e,
        })?;
        Ok(if strip_docs {
            strip_doc_tags(&raw)
        } else {
            raw
        })
    }
}

/// Remove `<doc ...>` and `</doc>` lines (the article text stays, articles separated by a blank line).
pub fn strip_doc_tags(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for line in raw.lines() {
        let t = line.trim();
        if t.starts_with("<doc") || t == "</doc>" {
            if !out.ends_with("\n\n") && !out.is_empty() {
                out.push('\n');
            }
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out.trim().to_string()
}

/// The first `n` tokens of `text`, tokenizing only a prefix long enough to hold them (whole-text
/// tokenization of a 2 MB corpus is wasted work). The prefix grows until it yields `n + 1` tokens, so
/// the last kept token is never cut by the prefix boundary.
pub fn leading_tokens(
    text: &str,
    n: usize,
    encode: impl Fn(&str) -> Result<Vec<u32>, ModelError>,
) -> Result<Vec<u32>, ModelError> {
    let mut chars = (n * 8).max(64);
    loop {
        let end = text
            .char_indices()
            .nth(chars)
            .map_or(text.len(), |(i, _)| i);
        let ids = encode(&text[..end])?;
        if ids.len() > n + 16 {
            return Ok(ids[..n].to_vec());
        }
        if end == text.len() {
            return Err(ModelError::Tokenizer(format!(
                "the text has only {} tokens; {n} were requested",
                ids.len()
            )));
        }
        chars *= 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doc_tags_are_removed_and_text_kept() {
        let raw =
            "<doc id=\"1\" title=\"A\">\nAlpha text.\n</doc>\n<doc id=\"2\">\nBeta.\n</doc>\n";
        assert_eq!(strip_doc_tags(raw), "Alpha text.\n\nBeta.");
    }

    #[test]
    fn prompt_is_an_exact_prefix() {
        let encode = |s: &str| Ok(s.split(' ').enumerate().map(|(i, _)| i as u32).collect());
        let p = prompt_ids(&SCENARIOS[0], encode).unwrap();
        assert_eq!(p, (0..8).collect::<Vec<u32>>());
    }
}
