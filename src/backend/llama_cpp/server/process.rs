//! The `llama-server` process: started on 127.0.0.1 on a free port, health-checked, spoken to over
//! HTTP, and always stopped (on drop; and by the kernel if this process dies, via
//! `PR_SET_PDEATHSIG`).

use std::io::Read;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::assets::llama_cpp::LlamaCppBuild;
use crate::error::BackendError;

/// A running `llama-server`; stopped when dropped.
pub struct LlamaServer {
    child: Child,
    base_url: String,
    client: reqwest::blocking::Client,
    log_path: PathBuf,
    _log_dir: tempfile::TempDir,
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl LlamaServer {
    /// `gpu_layers`: `-ngl` (layers offloaded to the GPU; `None` leaves llama.cpp's default);
    /// `extra_args`: more `llama-server` arguments (e.g. `["-ub", "1"]`).
    pub fn start(
        build: &LlamaCppBuild,
        model: &Path,
        threads: usize,
        context: usize,
        id: &str,
        gpu_layers: Option<u32>,
        extra_args: &[&str],
    ) -> Result<Self, BackendError> {
        let load = |d: String| BackendError::load(id, d);
        let port = free_port().map_err(|e| load(format!("no free port on 127.0.0.1: {e}")))?;
        let log_dir = tempfile::tempdir().map_err(|e| load(e.to_string()))?;
        let log_path = log_dir.path().join("llama-server.log");
        let log = std::fs::File::create(&log_path).map_err(|e| load(e.to_string()))?;
        let mut cmd = Command::new(&build.llama_server);
        cmd.arg("-m")
            .arg(model)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args([
                "-t",
                &threads.to_string(),
                "-c",
                &context.to_string(),
                "--parallel",
                "1",
                "--no-webui",
                // Log verbosity 4 keeps llama.cpp's model-load lines (`offloaded N/M layers to GPU`,
                // `<buffer> model buffer size`), the evidence of where the weights went; it adds
                // about 20 lines per request, none per token.
                "-lv",
                "4",
            ])
            .args(
                gpu_layers
                    .map(|n| ["-ngl".to_string(), n.to_string()])
                    .into_iter()
                    .flatten(),
            )
            .args(extra_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| load(e.to_string()))?)
            .stderr(log);
        // SAFETY: prctl is async-signal-safe; it only asks the kernel to SIGKILL the child when this
        // process exits, so a crashed or killed test leaves no server behind.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|e| {
            load(format!(
                "cannot start {}: {e}",
                build.llama_server.display()
            ))
        })?;
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(300))
            .build()
            .map_err(|e| load(e.to_string()))?;
        let mut server = LlamaServer {
            child,
            base_url: format!("http://127.0.0.1:{port}"),
            client,
            log_path,
            _log_dir: log_dir,
        };
        server
            .wait_healthy(Duration::from_secs(120))
            .map_err(load)?;
        Ok(server)
    }

    /// The whole server log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    fn log_tail(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log_path) {
            let _ = f.read_to_string(&mut s);
        }
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    fn wait_healthy(&mut self, limit: Duration) -> Result<(), String> {
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "llama-server exited ({status}) before becoming healthy:\n{}",
                    self.log_tail()
                ));
            }
            let ok = self
                .client
                .get(format!("{}/health", self.base_url))
                .timeout(Duration::from_secs(2))
                .send()
                .is_ok_and(|r| r.status().is_success());
            if ok {
                return Ok(());
            }
            if start.elapsed() > limit {
                return Err(format!(
                    "llama-server not healthy after {limit:?}:\n{}",
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `POST /completion` with `body` as is, the reply as JSON (for checks of the server itself; the
    /// backend builds its bodies with [`completion_body`]).
    pub fn completion(&self, body: &serde_json::Value) -> Result<serde_json::Value, String> {
        self.post("/completion", body)
    }

    pub(super) fn post(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, String> {
        let resp = self
            .client
            .post(format!("{}{path}", self.base_url))
            .json(body)
            .send()
            .map_err(|e| e.to_string())?;
        let status = resp.status();
        let text = resp.text().map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("{path} returned {status}: {text}"));
        }
        serde_json::from_str(&text).map_err(|e| format!("{path}: invalid JSON ({e}): {text}"))
    }

    pub(super) fn get(&self, path: &str) -> Result<serde_json::Value, String> {
        let resp = self
            .client
            .get(format!("{}{path}", self.base_url))
            .send()
            .map_err(|e| e.to_string())?;
        resp.json().map_err(|e| e.to_string())
    }
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
