//! `infergate`: run the gate suite outside `cargo test`, inspect backends, fetch pinned assets.
//! The commands are [`infergate::cli`].

use std::process::ExitCode;

fn main() -> ExitCode {
    infergate::cli::main()
}
