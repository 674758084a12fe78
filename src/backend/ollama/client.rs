//! A thin blocking HTTP client for the three endpoints the backend uses, turning every failure into a
//! typed, actionable [`BackendError`].

use std::time::Duration;

use reqwest::blocking::{Client, RequestBuilder};
use reqwest::{StatusCode, Url};
use serde::Deserialize;

use super::config::{pull_fix, OllamaConfig, HOST_ENV};
use super::wire::{
    ErrorBody, GenerateOptions, GenerateRequest, GenerateResponse, TagsResponse, VersionResponse,
};
use crate::error::BackendError;

/// An error with its sources (reqwest's own message omits the cause, e.g. "connection refused").
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// A thin client for the three endpoints the backend uses.
#[derive(Debug, Clone)]
pub struct OllamaClient {
    config: OllamaConfig,
    http: Client,
}

impl OllamaClient {
    pub fn new(config: OllamaConfig) -> Result<Self, BackendError> {
        let http = Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            // The server is local (or named by OLLAMA_HOST): never route it through a proxy from the environment.
            .no_proxy()
            .build()
            .map_err(|e| BackendError::Unavailable {
                backend: config.id.clone(),
                reason: format!("HTTP client: {}", chain(&e)),
            })?;
        Ok(OllamaClient { config, http })
    }

    pub fn config(&self) -> &OllamaConfig {
        &self.config
    }

    fn url(&self, endpoint: &str) -> Result<Url, BackendError> {
        self.config
            .base_url
            .join(endpoint)
            .map_err(|e| BackendError::run(&self.config.id, endpoint, format!("bad URL: {e}")))
    }

    /// Send within `timeout`, and return the body of a 2xx reply; anything else becomes a typed,
    /// actionable error.
    fn exchange(
        &self,
        endpoint: &str,
        request: RequestBuilder,
        timeout: Duration,
    ) -> Result<String, BackendError> {
        let id = &self.config.id;
        let response = request
            .timeout(timeout)
            .send()
            .map_err(|e| self.transport_error(endpoint, &e, timeout))?;
        let status = response.status();
        let body = response
            .text()
            .map_err(|e| self.transport_error(endpoint, &e, timeout))?;
        if status.is_success() {
            return Ok(body);
        }
        let message = serde_json::from_str::<ErrorBody>(&body)
            .map(|b| b.error)
            .unwrap_or_else(|_| body.chars().take(300).collect());
        Err(match status {
            StatusCode::NOT_FOUND if endpoint == "api/generate" && message.contains("not found") => {
                BackendError::load(id, format!("{message}: {}", pull_fix(&self.config.model)))
            }
            StatusCode::NOT_FOUND => BackendError::Unavailable {
                backend: id.clone(),
                reason: format!(
                    "{} answers 404 on /{endpoint} ({message}): not an Ollama server (llama-server answers 404 on /api/*); point {HOST_ENV} at one",
                    self.config.host()
                ),
            },
            _ => BackendError::run(id, endpoint, format!("HTTP {status}: {message}")),
        })
    }

    fn transport_error(
        &self,
        endpoint: &str,
        e: &reqwest::Error,
        timeout: Duration,
    ) -> BackendError {
        let id = &self.config.id;
        if e.is_connect() {
            BackendError::Unavailable {
                backend: id.clone(),
                reason: format!(
                    "no Ollama server at {} ({}): start `ollama serve` or set {HOST_ENV}",
                    self.config.host(),
                    chain(e)
                ),
            }
        } else if e.is_timeout() {
            BackendError::run(
                id,
                endpoint,
                format!(
                    "no complete answer from {} within {timeout:?} (timed out)",
                    self.config.host()
                ),
            )
        } else {
            BackendError::run(id, endpoint, chain(e))
        }
    }

    fn parse<T: for<'de> Deserialize<'de>>(
        &self,
        endpoint: &str,
        body: &str,
    ) -> Result<T, BackendError> {
        serde_json::from_str(body).map_err(|e| {
            let detail = match serde_json::from_str::<ErrorBody>(body) {
                Ok(b) => format!("Ollama error: {}", b.error),
                Err(_) => format!(
                    "unexpected reply ({e}): {}",
                    body.chars().take(200).collect::<String>()
                ),
            };
            BackendError::run(&self.config.id, endpoint, detail)
        })
    }

    /// A metadata GET: answered at once by a live server, so it gets a few connect timeouts, not the
    /// generation limit.
    fn get<T: for<'de> Deserialize<'de>>(&self, endpoint: &str) -> Result<T, BackendError> {
        let timeout = self
            .config
            .request_timeout
            .min(self.config.connect_timeout * 5);
        let body = self.exchange(endpoint, self.http.get(self.url(endpoint)?), timeout)?;
        self.parse(endpoint, &body)
    }

    /// `GET /api/version`: the server's version string.
    pub fn version(&self) -> Result<String, BackendError> {
        self.get::<VersionResponse>("api/version")
            .map(|v| v.version)
    }

    /// `GET /api/tags`: the models the server has.
    pub fn tags(&self) -> Result<TagsResponse, BackendError> {
        self.get("api/tags")
    }

    /// The request [`generate`](Self::generate) sends.
    pub fn generate_request(&self, prompt_text: &str, num_predict: usize) -> GenerateRequest {
        GenerateRequest {
            model: self.config.model.clone(),
            prompt: prompt_text.into(),
            raw: true,
            stream: false,
            keep_alive: self.config.keep_alive.clone(),
            options: GenerateOptions {
                num_predict,
                temperature: 0.0,
                seed: self.config.seed,
                top_k: 1,
            },
        }
    }

    /// `POST /api/generate`, non-streaming, greedy, at most `num_predict` tokens.
    pub fn generate(
        &self,
        prompt_text: &str,
        num_predict: usize,
    ) -> Result<GenerateResponse, BackendError> {
        let request = self.generate_request(prompt_text, num_predict);
        let body = self.exchange(
            "api/generate",
            self.http.post(self.url("api/generate")?).json(&request),
            self.config.request_timeout,
        )?;
        self.parse("api/generate", &body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::ollama::config::{parse_host, DEFAULT_HOST};

    #[test]
    fn the_request_is_greedy_raw_and_non_streaming() {
        let client =
            OllamaClient::new(OllamaConfig::new(parse_host(DEFAULT_HOST).unwrap(), "m:1")).unwrap();
        let v = serde_json::to_value(client.generate_request("hello", 7)).unwrap();
        assert_eq!(v["raw"], true);
        assert_eq!(v["stream"], false);
        assert_eq!(v["options"]["num_predict"], 7);
        assert_eq!(v["options"]["temperature"], 0.0);
        assert_eq!(v["options"]["top_k"], 1);
        assert_eq!(v["model"], "m:1");
    }
}
