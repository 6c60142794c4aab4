//! The `trove` binary: parse arguments, run, turn the outcome into an exit
//! code (SPEC §5). Everything else is in the library.

use clap::Parser;
use std::io::Write;
use trove::cli::{self, ExitCode};

fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
    let code = match cli::run(args) {
        Ok(outcome) => ExitCode::from(outcome),
        // A closed pipe (`trove ls | head`) is not a failure.
        Err(e) if cli::exit::is_broken_pipe(&e) => ExitCode::Ok,
        Err(e) => {
            // Never `eprintln!`: it panics when stderr itself fails (a
            // full disk under a redirected stderr), which would turn a
            // named error into exit 101. The exit code still tells.
            let _ = writeln!(std::io::stderr(), "error: {}", cli::error_report(&e));
            cli::exit_code(&e)
        }
    };
    code.into()
}
