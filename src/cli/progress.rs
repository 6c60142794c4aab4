//! The terminal progress bar: the engine reports progress through the
//! `Progress` trait, and this draws it on stderr.

use super::args::Cli;
use crate::progress::Progress;
use std::io::IsTerminal;

/// A progress bar on stderr, only when stderr is a terminal: files and
/// bytes done, rate and ETA.
pub(super) struct TermProgress {
    bar: Option<indicatif::ProgressBar>,
    files: std::sync::atomic::AtomicU64,
    total_files: std::sync::atomic::AtomicU64,
}

impl TermProgress {
    /// Shown only when stderr is a terminal and neither `-q` nor `--json`
    /// was given.
    pub(super) fn new(cli: &Cli) -> TermProgress {
        let on = std::io::stderr().is_terminal() && !cli.quiet && !cli.json;
        TermProgress {
            bar: on.then(indicatif::ProgressBar::hidden),
            files: Default::default(),
            total_files: Default::default(),
        }
    }
}

impl Progress for TermProgress {
    fn phase(&self, name: &str, items: u64, bytes: u64) {
        let Some(b) = &self.bar else { return };
        use std::sync::atomic::Ordering::Relaxed;
        b.reset();
        self.files.store(0, Relaxed);
        self.total_files.store(items, Relaxed);
        // Style and length first: the bar draws as soon as it has a target.
        if bytes > 0 {
            b.disable_steady_tick();
            b.set_length(bytes);
            let style = indicatif::ProgressStyle::with_template(
                "{msg:>8} [{bar:20}] {prefix} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
            b.set_style(style.progress_chars("=> "));
            b.set_prefix(format!("0/{items} files"));
        } else {
            b.set_length(items);
            b.set_style(indicatif::ProgressStyle::default_spinner());
            // A spinner only moves when something ticks it.
            b.enable_steady_tick(std::time::Duration::from_millis(120));
        }
        b.set_message(name.to_string());
        b.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        // Draw the phase at once: a run shorter than the first tick would
        // otherwise show nothing, and a user should see what it is doing.
        b.tick();
    }
    fn advance(&self, items: u64, bytes: u64) {
        if let Some(b) = &self.bar {
            use std::sync::atomic::Ordering::Relaxed;
            b.inc(bytes);
            let done = self.files.fetch_add(items, Relaxed) + items;
            let total = self.total_files.load(Relaxed);
            // The text changes at most every 64 files: formatting per file
            // would cost more than the files.
            if items > 0 && (done % 64 < items || done == total) {
                b.set_prefix(format!("{done}/{total} files"));
            }
        }
    }
    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.disable_steady_tick();
            b.finish_and_clear();
            b.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        }
    }
}
