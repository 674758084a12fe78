//! Worker processes: one side of a paired comparison each, so that each side loads its own runtime
//! (ONNX Runtime allows one library per process; llama.cpp is a server binary per build).
//!
//! A worker is the running executable itself (`infergate`, or the `gates` test harness) started
//! with `INFERGATE_WORKER=1` (or `infergate worker`): it reads one typed JSON [`Request`] per line
//! on stdin and answers each with one [`Response`] line on stdout. Its runtime comes from its
//! environment, set by the parent: `INFERGATE_ONNXRUNTIME=<pin>` or `INFERGATE_LLAMA_CPP_BIN=<dir>`.
//! Everything a library prints to stdout is redirected to stderr, so the protocol stream carries
//! protocol lines only.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitCode, Stdio};

use serde::{Deserialize, Serialize};

use crate::backend::stretch::Stretch;
use crate::backend::tweaks::Tweaks;
use crate::backend::{Backend, BackendInfo};
use crate::baseline::cpu;
use crate::measure::{timings_of, RunTimings};

/// Set (to `1`) in a worker's environment.
pub const WORKER_ENV: &str = "INFERGATE_WORKER";
/// Overrides the executable started as a worker (default: the running one).
pub const WORKER_EXE_ENV: &str = "INFERGATE_WORKER_EXE";

/// What the parent asks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Open a backend on a catalog model, with test-only options.
    Open {
        backend: String,
        model: String,
        #[serde(default)]
        tweaks: Tweaks,
    },
    /// One timed generation.
    Generate {
        prompt: Vec<u32>,
        gen_tokens: usize,
    },
    Shutdown,
}

/// What the worker answers (one per request; none to `Shutdown`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "response", rename_all = "snake_case", deny_unknown_fields)]
pub enum Response {
    Opened {
        info: BackendInfo,
        pid: u32,
    },
    Generated {
        timings: RunTimings,
        /// CPU time of the worker and its children (an engine server) over the generation.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cpu_ms: Option<f64>,
        /// Time a planted slowdown added to this generation.
        planted_ms: f64,
    },
    Failed {
        message: String,
    },
}

/// Whether this process was started as a worker.
pub fn is_worker() -> bool {
    std::env::var(WORKER_ENV).is_ok_and(|v| v == "1")
}

/// Serve the protocol on stdin/stdout when this process is a worker; `None` otherwise. Call it
/// first thing in `main`.
pub fn main_if_worker() -> Option<ExitCode> {
    is_worker().then(serve_stdio)
}

/// Serve the protocol on this process's stdin and stdout (stdout's descriptor is kept for the
/// protocol; descriptor 1 then points at stderr).
pub fn serve_stdio() -> ExitCode {
    // SAFETY: dup/dup2 on the process's own standard descriptors; the duplicate is owned below.
    let protocol_fd = unsafe { libc::dup(1) };
    if protocol_fd < 0 || unsafe { libc::dup2(2, 1) } < 0 {
        eprintln!("infergate worker: cannot set up the protocol stream");
        return ExitCode::from(2);
    }
    // SAFETY: protocol_fd is a fresh descriptor this process owns.
    let out = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(protocol_fd) };
    let stdin = std::io::stdin();
    match serve(stdin.lock(), out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("infergate worker: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The worker loop over any line stream.
pub fn serve(input: impl BufRead, mut output: impl Write) -> std::io::Result<()> {
    let mut backend: Option<(Box<dyn Backend>, Stretch)> = None;
    for line in input.lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let response = match serde_json::from_str::<Request>(&line) {
            Err(e) => Response::Failed {
                message: format!("not a request ({e}): {line}"),
            },
            Ok(Request::Shutdown) => return Ok(()),
            Ok(Request::Open {
                backend: id,
                model,
                tweaks,
            }) => open(&id, &model, &tweaks).map_or_else(
                |message| Response::Failed { message },
                |(b, stretch)| {
                    let info = b.info().clone();
                    backend = Some((b, stretch));
                    Response::Opened {
                        info,
                        pid: std::process::id(),
                    }
                },
            ),
            Ok(Request::Generate { prompt, gen_tokens }) => match backend.as_mut() {
                None => Response::Failed {
                    message: "generate before open".into(),
                },
                Some((b, stretch)) => generate(b.as_mut(), stretch, &prompt, gen_tokens),
            },
        };
        serde_json::to_writer(&mut output, &response)?;
        output.write_all(b"\n")?;
        output.flush()?;
    }
    Ok(())
}

fn open(id: &str, model: &str, tweaks: &Tweaks) -> Result<(Box<dyn Backend>, Stretch), String> {
    let model = crate::model::catalog::lookup(model)
        .ok_or_else(|| format!("model `{model}` is not in the catalog"))?;
    let stretch = Stretch::new(tweaks.planted);
    let b = crate::backend::registry::open_tweaked(id, &model, stretch.clone(), tweaks.threads)
        .map_err(|e| e.to_string())?;
    Ok((b, stretch))
}

fn generate(b: &mut dyn Backend, stretch: &Stretch, prompt: &[u32], gen_tokens: usize) -> Response {
    let planted_before = stretch.added_ms();
    let cpu_before = cpu::process_tree_cpu_ms().ok();
    let result = b.generate(prompt, gen_tokens);
    let cpu_ms = cpu_before.and_then(|c| cpu::process_tree_cpu_ms().ok().map(|a| a - c));
    match result
        .map_err(|e| e.to_string())
        .and_then(|g| timings_of(&g, gen_tokens))
    {
        Ok(timings) => Response::Generated {
            timings,
            cpu_ms,
            planted_ms: stretch.added_ms() - planted_before,
        },
        Err(message) => Response::Failed { message },
    }
}

/// How a worker's process is set up: its environment on top of the parent's.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Launch {
    pub set: Vec<(String, String)>,
    pub remove: Vec<String>,
}

/// A running worker; shut down (and killed if need be) when dropped.
pub struct Worker {
    label: String,
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    stderr: tempfile::NamedTempFile,
}

/// Environment variables a worker never inherits: test-only options reach it in its open request.
const NOT_INHERITED: [&str; 2] = [
    crate::backend::tweaks::ENV,
    crate::backend::tweaks::THREADS_ENV,
];

impl Worker {
    /// Start the worker executable with `launch` applied to its environment.
    pub fn spawn(label: &str, launch: &Launch) -> Result<Worker, String> {
        let exe = match std::env::var_os(WORKER_EXE_ENV).filter(|v| !v.is_empty()) {
            Some(p) => PathBuf::from(p),
            None => std::env::current_exe()
                .map_err(|e| format!("{label}: cannot find the running executable: {e}"))?,
        };
        let stderr = tempfile::NamedTempFile::new()
            .map_err(|e| format!("{label}: cannot create a log file: {e}"))?;
        let log = stderr
            .reopen()
            .map_err(|e| format!("{label}: cannot open its log file: {e}"))?;
        let mut cmd = Command::new(&exe);
        cmd.env(WORKER_ENV, "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log);
        for k in NOT_INHERITED
            .iter()
            .copied()
            .chain(launch.remove.iter().map(String::as_str))
        {
            cmd.env_remove(k);
        }
        for (k, v) in &launch.set {
            cmd.env(k, v);
        }
        // SAFETY: prctl is async-signal-safe; the kernel kills the worker if this process dies.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("{label}: cannot start {}: {e}", exe.display()))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            return Err(format!("{label}: no pipes to the worker"));
        };
        Ok(Worker {
            label: label.into(),
            child,
            stdin,
            stdout: BufReader::new(stdout),
            stderr,
        })
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// The last lines the worker wrote to stderr.
    pub fn log_tail(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = self.stderr.reopen() {
            let _ = f.read_to_string(&mut text);
        }
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(12)..].join("\n")
    }

    fn call(&mut self, request: &Request) -> Result<Response, String> {
        let mut line = serde_json::to_string(request).map_err(|e| e.to_string())?;
        line.push('\n');
        let died = |w: &Self, what: String| {
            format!(
                "{} worker: {what}; its log ends:\n{}",
                w.label,
                w.log_tail()
            )
        };
        if let Err(e) = self
            .stdin
            .write_all(line.as_bytes())
            .and_then(|_| self.stdin.flush())
        {
            return Err(died(self, format!("cannot send a request ({e})")));
        }
        let mut answer = String::new();
        match self.stdout.read_line(&mut answer) {
            Ok(0) => Err(died(self, "exited without answering".into())),
            Err(e) => Err(died(self, format!("cannot read its answer ({e})"))),
            Ok(_) => serde_json::from_str(&answer)
                .map_err(|e| died(self, format!("answered `{}` ({e})", answer.trim()))),
        }
    }

    /// Open the backend; returns what it is.
    pub fn open(
        &mut self,
        backend: &str,
        model: &str,
        tweaks: &Tweaks,
    ) -> Result<BackendInfo, String> {
        match self.call(&Request::Open {
            backend: backend.into(),
            model: model.into(),
            tweaks: *tweaks,
        })? {
            Response::Opened { info, .. } => Ok(info),
            Response::Failed { message } => {
                Err(format!("{}: cannot open {backend}: {message}", self.label))
            }
            other => Err(format!("{}: unexpected answer {other:?}", self.label)),
        }
    }

    /// One generation: its timings, CPU time and planted time.
    pub fn generate(&mut self, prompt: &[u32], gen_tokens: usize) -> Result<Sample, String> {
        match self.call(&Request::Generate {
            prompt: prompt.to_vec(),
            gen_tokens,
        })? {
            Response::Generated {
                timings,
                cpu_ms,
                planted_ms,
            } => Ok(Sample {
                timings,
                cpu_ms,
                planted_ms,
            }),
            Response::Failed { message } => Err(format!("{}: {message}", self.label)),
            other => Err(format!("{}: unexpected answer {other:?}", self.label)),
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Ok(line) = serde_json::to_string(&Request::Shutdown) {
            let _ = writeln!(self.stdin, "{line}");
            let _ = self.stdin.flush();
        }
        for _ in 0..50 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One side's generation in one round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub timings: RunTimings,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_ms: Option<f64>,
    pub planted_ms: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loop_answers_every_request_and_stops_on_shutdown() {
        let input = [
            r#"{"request":"generate","prompt":[1],"gen_tokens":2}"#,
            "garbage",
            r#"{"request":"open","backend":"no-such-backend","model":"smollm2-135m-instruct"}"#,
            r#"{"request":"shutdown"}"#,
            r#"{"request":"generate","prompt":[1],"gen_tokens":2}"#,
        ]
        .join("\n");
        let mut out = Vec::new();
        serve(input.as_bytes(), &mut out).unwrap();
        let answers: Vec<Response> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(answers.len(), 3, "{answers:?}");
        let messages: Vec<&str> = answers
            .iter()
            .map(|a| match a {
                Response::Failed { message } => message.as_str(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert!(messages[0].contains("before open"), "{}", messages[0]);
        assert!(messages[1].contains("not a request"), "{}", messages[1]);
        assert!(messages[2].contains("no-such-backend"), "{}", messages[2]);
    }

    #[test]
    fn requests_round_trip_as_typed_lines() {
        let r = Request::Open {
            backend: "ort-cpu".into(),
            model: "m".into(),
            tweaks: Tweaks {
                planted: Some(crate::backend::stretch::Planted {
                    fraction: 0.03,
                    phases: crate::backend::stretch::Phases::Decode,
                }),
                threads: None,
            },
        };
        let line = serde_json::to_string(&r).unwrap();
        assert!(!line.contains('\n'));
        assert_eq!(serde_json::from_str::<Request>(&line).unwrap(), r);
        assert!(serde_json::from_str::<Request>(
            r#"{"request":"open","backend":"x","model":"m","extra":1}"#
        )
        .is_err());
    }
}
