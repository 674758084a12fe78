//! Where the Ollama server is and which model to ask for: `OLLAMA_HOST` parsed as Ollama's own CLI
//! reads it, `INFERGATE_OLLAMA_MODEL`, and the client's timeouts.

use std::time::Duration;

use reqwest::Url;

/// Environment variable naming the server, as Ollama's own CLI reads it.
pub const HOST_ENV: &str = "OLLAMA_HOST";
/// Used when `OLLAMA_HOST` is unset or empty.
pub const DEFAULT_HOST: &str = "127.0.0.1:11434";
/// Ollama's port when `OLLAMA_HOST` names none.
pub const DEFAULT_PORT: u16 = 11434;
/// Environment variable naming the Ollama model to run.
pub const MODEL_ENV: &str = "INFERGATE_OLLAMA_MODEL";
/// SmolLM2-135M in Ollama's library: the catalog model's family and tokenizer.
pub const DEFAULT_MODEL: &str = "smollm2:135m";

/// The engine name in [`BackendInfo`](crate::backend::BackendInfo) and the default backend id.
pub(super) const ENGINE: &str = "ollama";

/// Where the server is and how to ask it.
#[derive(Debug, Clone, PartialEq)]
pub struct OllamaConfig {
    /// Backend id in trial names.
    pub id: String,
    /// `http://host:port/` (with a trailing slash; endpoints are joined onto it).
    pub base_url: Url,
    /// Ollama model name (`name:tag`).
    pub model: String,
    /// Sampling seed (sampling is greedy anyway: temperature 0, top_k 1).
    pub seed: u64,
    /// How long Ollama keeps the model loaded after a request (Ollama duration syntax).
    pub keep_alive: String,
    pub connect_timeout: Duration,
    /// Whole-request limit; a cold model load counts against it.
    pub request_timeout: Duration,
}

impl OllamaConfig {
    pub fn new(base_url: Url, model: impl Into<String>) -> Self {
        OllamaConfig {
            id: ENGINE.into(),
            base_url,
            model: model.into(),
            seed: 42,
            keep_alive: "10m".into(),
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(300),
        }
    }

    /// `OLLAMA_HOST` (default `127.0.0.1:11434`) and `INFERGATE_OLLAMA_MODEL` (default `smollm2:135m`).
    pub fn from_env() -> Result<Self, String> {
        let var = |name: &str| {
            std::env::var(name)
                .ok()
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let host = var(HOST_ENV).unwrap_or_else(|| DEFAULT_HOST.into());
        let base_url = parse_host(&host).map_err(|e| format!("{HOST_ENV}: {e}"))?;
        Ok(OllamaConfig::new(
            base_url,
            var(MODEL_ENV).unwrap_or_else(|| DEFAULT_MODEL.into()),
        ))
    }

    /// `host:port` for messages.
    pub fn host(&self) -> String {
        let host = self.base_url.host_str().unwrap_or("?");
        match self.base_url.port_or_known_default() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        }
    }
}

/// Parse `OLLAMA_HOST` the way Ollama's CLI accepts it: `host`, `host:port`, `:port`, or
/// `http://host:port[/base]`. A missing host is 127.0.0.1, a missing port 11434.
pub fn parse_host(raw: &str) -> Result<Url, String> {
    let trimmed = raw.trim();
    let (scheme, rest) = match trimmed.split_once("://") {
        Some((s, r)) => (s.to_ascii_lowercase(), r),
        None => ("http".to_string(), trimmed),
    };
    if scheme != "http" {
        return Err(format!("`{raw}`: scheme `{scheme}` is not supported (this client speaks plain http): use host:port or http://host:port"));
    }
    let rest = if rest.is_empty() || rest.starts_with(':') {
        format!("127.0.0.1{rest}")
    } else {
        rest.to_string()
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let mut url = Url::parse(&format!("http://{rest}"))
        .map_err(|e| format!("`{raw}` is not host:port or http://host:port ({e})"))?;
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("`{raw}` names no host"));
    }
    // `Url` drops an explicit `:80` (http's default), so look at what was written.
    if url.port().is_none() && !authority.ends_with(":80") {
        url.set_port(Some(DEFAULT_PORT))
            .map_err(|()| format!("`{raw}`: cannot set a port"))?;
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    url.set_query(None);
    url.set_fragment(None);
    Ok(url)
}

/// The `fix` for a model the server does not have.
pub(super) fn pull_fix(model: &str) -> String {
    format!("run `ollama pull {model}`, or set {MODEL_ENV} to a model the server has")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_forms_parse_to_one_base_url() {
        for (raw, want) in [
            ("127.0.0.1:11434", "http://127.0.0.1:11434/"),
            ("http://127.0.0.1:11434", "http://127.0.0.1:11434/"),
            ("HTTP://localhost:8080/", "http://localhost:8080/"),
            ("example.org", "http://example.org:11434/"),
            (":9999", "http://127.0.0.1:9999/"),
            ("", "http://127.0.0.1:11434/"),
            ("http://host:80", "http://host/"),
            ("http://host:1234/ollama", "http://host:1234/ollama/"),
            ("[::1]:11434", "http://[::1]:11434/"),
        ] {
            assert_eq!(
                parse_host(raw).map(|u| u.to_string()),
                Ok(want.to_string()),
                "{raw}"
            );
        }
        assert!(parse_host("https://host:443")
            .unwrap_err()
            .contains("not supported"));
        assert!(parse_host("http://exa mple:1").is_err());
    }
}
