//! The availability probe: is an Ollama server reachable, and does it have the model. Loads nothing.

use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use super::client::OllamaClient;
use super::config::{pull_fix, OllamaConfig, HOST_ENV};
use crate::backend::Availability;

/// How long the availability probe waits for a TCP connection.
pub const PROBE_CONNECT_TIMEOUT: Duration = Duration::from_millis(300);

/// A TCP connect within [`PROBE_CONNECT_TIMEOUT`], then `/api/version` with short timeouts: a client
/// and the server's version, or why there is neither.
fn reach(config: &OllamaConfig) -> Result<(OllamaClient, String), Availability> {
    let host = config.host();
    let absent_server = |why: String| Availability::Absent {
        reason: format!("no Ollama server at {host} ({why})"),
        fix: format!("start `ollama serve` or set {HOST_ENV}"),
    };
    let addrs: Vec<_> = host
        .to_socket_addrs()
        .map_err(|e| absent_server(format!("cannot resolve: {e}")))?
        .collect();
    let mut last_error = "it resolves to no address".to_string();
    let connected =
        addrs.iter().any(
            |a| match TcpStream::connect_timeout(a, PROBE_CONNECT_TIMEOUT) {
                Ok(_) => true,
                Err(e) => {
                    last_error = format!(
                        "TCP connect within {} ms: {e}",
                        PROBE_CONNECT_TIMEOUT.as_millis()
                    );
                    false
                }
            },
        );
    if !connected {
        return Err(absent_server(last_error));
    }
    let quick = OllamaConfig {
        connect_timeout: PROBE_CONNECT_TIMEOUT,
        request_timeout: Duration::from_secs(3),
        ..config.clone()
    };
    let client = OllamaClient::new(quick).map_err(|e| Availability::Absent {
        reason: e.to_string(),
        fix: "report this: the HTTP client could not be built".into(),
    })?;
    let version = client.version().map_err(|e| Availability::Absent {
        reason: format!("{host} accepts connections but /api/version failed: {e}"),
        fix: format!("point {HOST_ENV} at an Ollama server (`ollama serve`)"),
    })?;
    Ok((client, version))
}

/// The version of the server `config` names, if one answers (for the run manifest).
pub fn server_version(config: &OllamaConfig) -> Option<String> {
    reach(config).ok().map(|(_, version)| version)
}

/// Cheap availability check: [`reach`] the server, then whether `/api/tags` lists the model. Loads nothing.
pub fn probe(config: &OllamaConfig) -> Availability {
    let (client, version) = match reach(config) {
        Ok(reached) => reached,
        Err(absent) => return absent,
    };
    let host = config.host();
    match client.tags() {
        Ok(tags) if tags.find(&config.model).is_some() => Availability::Available {
            detail: format!("Ollama {version} at {host}, model {}", config.model),
        },
        Ok(tags) => Availability::Absent {
            reason: format!(
                "Ollama {version} at {host} does not have model `{}` (it has: {})",
                config.model,
                tags.names().join(", ")
            ),
            fix: pull_fix(&config.model),
        },
        Err(e) => Availability::Absent {
            reason: format!("Ollama {version} at {host}: /api/tags failed: {e}"),
            fix: "check the server's log".into(),
        },
    }
}
