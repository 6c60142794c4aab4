//! The `trove` binary: parse arguments, run, turn the outcome into an exit
//! code (SPEC §5). Everything else is in the library.

use clap::Parser;
use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = trove::cli::Cli::parse();
    match trove::cli::run(cli) {
        Ok(trove::cli::Outcome::Ok) => ExitCode::SUCCESS,
        Ok(trove::cli::Outcome::Problems) => ExitCode::from(1),
        Err(e) => {
            // A closed pipe (`trove ls | head`) is not a failure.
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) {
                return ExitCode::SUCCESS;
            }
            // Never `eprintln!`: it panics when stderr itself fails (a
            // full disk under a redirected stderr), which would turn a
            // named error into exit 101. The exit code still tells.
            let _ = writeln!(std::io::stderr(), "error: {}", trove::cli::error_report(&e));
            ExitCode::from(trove::cli::exit_code(&e))
        }
    }
}
