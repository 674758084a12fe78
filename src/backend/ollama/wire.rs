//! The JSON bodies of Ollama's API that the backend sends and reads (serde types, as Ollama's API
//! reference names the fields).

use serde::{Deserialize, Serialize};

/// The body of `POST /api/generate`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerateRequest {
    pub model: String,
    pub prompt: String,
    /// No template: the prompt text goes to the tokenizer as is.
    pub raw: bool,
    pub stream: bool,
    pub keep_alive: String,
    pub options: GenerateOptions,
}

/// Model options of a request (Ollama's Modelfile parameters).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerateOptions {
    pub num_predict: usize,
    pub temperature: f64,
    pub seed: u64,
    pub top_k: u32,
}

/// The non-streaming reply of `/api/generate`. Counts and durations (ns) are optional because Ollama
/// omits zero values (`omitempty`), which is how a prompt-cache hit shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerateResponse {
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub response: String,
    pub done: bool,
    #[serde(default)]
    pub done_reason: Option<String>,
    #[serde(default)]
    pub total_duration: Option<u64>,
    #[serde(default)]
    pub load_duration: Option<u64>,
    #[serde(default)]
    pub prompt_eval_count: Option<u64>,
    /// Newer Ollama: prompt tokens read from the cache (`prompt_eval_duration` covers the rest).
    #[serde(default)]
    pub prompt_eval_cached_count: Option<u64>,
    #[serde(default)]
    pub prompt_eval_duration: Option<u64>,
    #[serde(default)]
    pub eval_count: Option<u64>,
    #[serde(default)]
    pub eval_duration: Option<u64>,
}

/// `GET /api/version`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionResponse {
    pub version: String,
}

/// `GET /api/tags`: the models the server has locally.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TagsResponse {
    #[serde(default)]
    pub models: Vec<LocalModel>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocalModel {
    pub name: String,
    #[serde(default)]
    pub digest: Option<String>,
    #[serde(default)]
    pub size: Option<u64>,
    #[serde(default)]
    pub details: Option<ModelDetails>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelDetails {
    #[serde(default)]
    pub format: Option<String>,
    #[serde(default)]
    pub family: Option<String>,
    #[serde(default)]
    pub parameter_size: Option<String>,
    #[serde(default)]
    pub quantization_level: Option<String>,
}

/// Ollama's error body: `{"error": "..."}`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

impl TagsResponse {
    /// The entry for `model`; a name without a tag means `:latest`, as in Ollama.
    pub fn find(&self, model: &str) -> Option<&LocalModel> {
        let norm = |n: &str| {
            if n.contains(':') {
                n.to_string()
            } else {
                format!("{n}:latest")
            }
        };
        let want = norm(model);
        self.models.iter().find(|m| norm(&m.name) == want)
    }
    pub fn names(&self) -> Vec<&str> {
        self.models.iter().map(|m| m.name.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::ollama::config::DEFAULT_MODEL;

    const ERROR: &str = include_str!("../../../tests/data/ollama/error_model_not_found.json");
    const VERSION: &str = include_str!("../../../tests/data/ollama/version.json");
    const TAGS: &str = include_str!("../../../tests/data/ollama/tags.json");

    #[test]
    fn version_tags_and_error_bodies_parse() {
        let v: VersionResponse = serde_json::from_str(VERSION).unwrap();
        assert!(!v.version.is_empty());
        let tags: TagsResponse = serde_json::from_str(TAGS).unwrap();
        let m = tags
            .find(DEFAULT_MODEL)
            .expect("the fixture lists the default model");
        assert!(m
            .details
            .as_ref()
            .and_then(|d| d.quantization_level.as_deref())
            .is_some());
        assert!(tags.find("smollm2:1.7b").is_none());
        let e: ErrorBody = serde_json::from_str(ERROR).unwrap();
        assert!(e.error.contains("not found"));
        assert!(
            serde_json::from_str::<GenerateResponse>(ERROR).is_err(),
            "an error body is not a reply"
        );
    }

    #[test]
    fn untagged_names_mean_latest() {
        let tags = TagsResponse {
            models: vec![LocalModel {
                name: "llama3:latest".into(),
                digest: None,
                size: None,
                details: None,
            }],
        };
        assert!(tags.find("llama3").is_some());
        assert!(tags.find("llama3:8b").is_none());
    }
}
