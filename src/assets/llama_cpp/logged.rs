//! Running a build step (pip, cmake) with its output appended to the build log: a missing program
//! or a failed step becomes an [`AssetError`] naming the step, the log and its tail.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use super::recipe::{io, ASSET, ENV_BIN, TARGETS};
use crate::error::AssetError;

pub(super) fn run_pip(
    cmd: Command,
    step: &str,
    log_path: &Path,
    log: &mut File,
) -> Result<(), AssetError> {
    let fix = "restore access to PyPI (pip), or build llama.cpp elsewhere and set INFERGATE_LLAMA_CPP_BIN to its bin dir";
    run_logged(cmd, step, log_path, log, fix)
}

/// Run `cmd` with stdout and stderr appended to the log. A missing program is a `ToolMissing`;
/// a non-zero exit a `BuildFailed` carrying the log's tail.
pub(super) fn run_logged(
    cmd: Command,
    step: &str,
    log_path: &Path,
    log: &mut File,
    fix: &str,
) -> Result<(), AssetError> {
    run_logged_reporting(cmd, step, log_path, log, fix, None)
}

/// How often a long step reports the build tool's latest `[done/total]` line.
pub(super) const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(20);

/// [`run_logged`] that, with `progress`, writes ninja's latest `[done/total]` line every
/// [`PROGRESS_EVERY`] while the command runs.
pub(super) fn run_logged_reporting(
    mut cmd: Command,
    step: &str,
    log_path: &Path,
    log: &mut File,
    fix: &str,
    mut progress: Option<&mut dyn Write>,
) -> Result<(), AssetError> {
    let shown = format!("{cmd:?}").replace('"', "");
    let _ = writeln!(log, "\n$ {shown}");
    let _ = log.flush();
    let out = log.try_clone().map_err(|e| io(log_path, e))?;
    let err = log.try_clone().map_err(|e| io(log_path, e))?;
    let mut child = cmd.stdin(Stdio::null()).stdout(out).stderr(err).spawn().map_err(|source| AssetError::ToolMissing {
        asset: ASSET.into(),
        tool: format!("`{}` ({source})", cmd.get_program().to_string_lossy()),
        fix: format!("install it (Debian: python3 and python3-pip), set INFERGATE_PYTHON, or set {ENV_BIN}"),
    })?;
    let started = Instant::now();
    let mut last_report = Instant::now();
    let mut last_line = String::new();
    let status = loop {
        match child.try_wait().map_err(|e| io(log_path, e))? {
            Some(status) => break status,
            None => std::thread::sleep(std::time::Duration::from_millis(200)),
        }
        if let Some(p) = progress.as_mut() {
            if last_report.elapsed() >= PROGRESS_EVERY {
                last_report = Instant::now();
                if let Some(line) = ninja_progress(&log_tail(log_path, 20)) {
                    if line != last_line {
                        let _ = writeln!(
                            p,
                            "llama.cpp: {line} ({:.0} s)",
                            started.elapsed().as_secs_f64()
                        );
                        last_line = line;
                    }
                }
            }
        }
    };
    if status.success() {
        return Ok(());
    }
    Err(AssetError::BuildFailed {
        asset: ASSET.into(),
        step: format!("{step} ({status})"),
        log: log_path.to_path_buf(),
        tail: log_tail(log_path, 40),
        fix: format!(
            "{fix}; or set {ENV_BIN} to a directory with {}",
            TARGETS.join(", ")
        ),
    })
}

/// The last `[done/total] …` line of a ninja log, shortened to its counter and target.
pub(super) fn ninja_progress(tail: &str) -> Option<String> {
    let line = tail.lines().rev().find(|l| {
        l.starts_with('[')
            && l.split_once(']')
                .is_some_and(|(n, _)| n[1..].split_once('/').is_some())
    })?;
    Some(line.chars().take(100).collect())
}

pub(super) fn log_tail(path: &Path, lines: usize) -> String {
    let mut text = String::new();
    if let Ok(mut f) = File::open(path) {
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = f.seek(SeekFrom::Start(len.saturating_sub(16 * 1024)));
        let mut bytes = Vec::new();
        let _ = f.read_to_end(&mut bytes);
        text = String::from_utf8_lossy(&bytes).into_owned();
    }
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    #[test]
    fn ninja_progress_is_the_last_counter_line() {
        let tail = "-- configuring\n[3/120] Building C object a.o\nwarning: x\n[17/120] Linking CXX executable bin/llama-server\n  note";
        assert_eq!(
            ninja_progress(tail).as_deref(),
            Some("[17/120] Linking CXX executable bin/llama-server")
        );
        assert_eq!(ninja_progress("[no counter here]\n"), None);
    }

    #[test]
    fn log_tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        let body: String = (0..100).map(|i| format!("line {i}\n")).collect();
        fs::write(&p, body).unwrap();
        let tail = log_tail(&p, 3);
        assert_eq!(tail, "line 97\nline 98\nline 99");
    }

    #[test]
    fn a_failing_step_names_the_step_the_log_and_its_tail() {
        let dir = tempfile::tempdir().unwrap();
        let log_path = dir.path().join("build.log");
        let mut log = File::create(&log_path).unwrap();
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo compiling; echo 'error: boom' >&2; exit 3"]);
        let err = run_logged(cmd, "cmake --build", &log_path, &mut log, "do X").unwrap_err();
        match &err {
            AssetError::BuildFailed {
                step,
                log,
                tail,
                fix,
                ..
            } => {
                assert!(step.starts_with("cmake --build"), "{step}");
                assert_eq!(log, &log_path);
                assert!(
                    tail.contains("error: boom") && tail.contains("compiling"),
                    "{tail}"
                );
                assert!(fix.contains("do X") && fix.contains(ENV_BIN), "{fix}");
            }
            other => panic!("expected BuildFailed, got {other}"),
        }
        let missing = Command::new("/nonexistent/infergate-no-such-tool");
        let err = run_logged(missing, "pip download", &log_path, &mut log, "do Y").unwrap_err();
        assert!(matches!(err, AssetError::ToolMissing { .. }), "{err}");
    }
}
