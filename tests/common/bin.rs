//! Running the `infergate` binary from a test: one builder for every test file that drives it.

use std::ffi::OsStr;
use std::process::{Command, Output};

/// The `infergate` binary cargo built for this test run, with arguments and environment.
pub struct Infergate(Command);

impl Infergate {
    /// `infergate <args…>`.
    pub fn new(args: &[&str]) -> Infergate {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_infergate"));
        cmd.args(args);
        Infergate(cmd)
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Infergate {
        self.0.arg(arg);
        self
    }

    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Infergate {
        self.0.env(key, value);
        self
    }

    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Infergate {
        self.0.env_remove(key);
        self
    }

    /// Runs it to the end; a binary that cannot start fails the test with the reason.
    pub fn output(mut self) -> Output {
        self.0
            .output()
            .unwrap_or_else(|e| panic!("could not start the infergate binary: {e}"))
    }
}

/// Standard output then standard error, as text (for assertions and their messages).
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
