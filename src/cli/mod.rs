//! The command line, in the order an invocation flows through it:
//! [`args`] (what clap parses) → `settings` (CLI > env > config > default,
//! into the engine's `*Options`) → `commands` (call the engine) → `output`
//! (human or JSON, to a writer) → [`exit`] (the exit code). No engine logic
//! lives here: what a command does to the repository is decided by the
//! engine module that owns it.

pub mod args;
mod commands;
pub mod exit;
mod offsite;
mod output;
mod progress;
mod pusher;
mod settings;

pub use args::{Cli, Command};
pub use exit::{error_report, exit_code, ExitCode, Outcome};

use anyhow::Result;
use std::io::Write;

/// Run one parsed command line: dispatch only.
pub fn run(cli: Cli) -> Result<Outcome> {
    match &cli.command {
        Command::Init(a) => commands::init(&cli, a),
        Command::Backup(a) => commands::backup(&cli, a),
        Command::Snapshots => commands::snapshots(&cli),
        Command::Ls(a) => commands::ls(&cli, a),
        Command::Restore(a) => commands::restore(&cli, a),
        Command::Verify(a) => commands::verify(&cli, a),
        Command::Materialize(a) => commands::materialize(&cli, a),
        Command::Diff(a) => commands::diff(&cli, a),
        Command::History(a) => commands::history(&cli, a),
        Command::Prune(a) => commands::prune(&cli, a),
        Command::Stats => commands::stats(&cli),
        Command::Watch(a) => commands::watch(&cli, a),
        Command::Dupes(a) => commands::dupes(&cli, a),
        Command::Mirror(a) => commands::mirror(&cli, a),
        Command::Remote(args::RemoteCommand::Init(a)) => offsite::remote_init(&cli, a),
        Command::Remote(args::RemoteCommand::Key(k)) => offsite::key(&cli, k),
        Command::Remote(args::RemoteCommand::ExtendLocks(a)) => offsite::extend_locks(&cli, a),
        Command::Push(a) => offsite::push(&cli, a),
        Command::Pull(a) => offsite::pull(&cli, a),
        Command::Completions { shell } => completions(*shell),
        Command::Man => man(),
    }
}

fn completions(shell: clap_complete::Shell) -> Result<Outcome> {
    let mut cmd = <Cli as clap::CommandFactory>::command();
    // Into a buffer: generate() panics on a write error, and a closed pipe
    // is not a failure.
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd, "trove", &mut buf);
    std::io::stdout().lock().write_all(&buf)?;
    Ok(Outcome::Ok)
}

fn man() -> Result<Outcome> {
    let cmd = <Cli as clap::CommandFactory>::command();
    let mut out = std::io::stdout().lock();
    clap_mangen::Man::new(cmd.clone()).render(&mut out)?;
    // One section per command, so `man trove` documents them all.
    for sub in cmd.get_subcommands() {
        writeln!(out, ".SH \"TROVE {}\"", sub.get_name().to_uppercase())?;
        let mut buf = Vec::new();
        clap_mangen::Man::new(sub.clone()).render_description_section(&mut buf)?;
        clap_mangen::Man::new(sub.clone()).render_options_section(&mut buf)?;
        clap_mangen::Man::new(sub.clone()).render_extra_section(&mut buf)?;
        out.write_all(&buf)?;
    }
    Ok(Outcome::Ok)
}
