//! Logging: console messages and the per-run audit log file
//! (`trove-YYYYmmdd-HHMMSS.log`), both fed by `tracing`. The console and
//! the file have independent levels: `-v`/`-q` change only the console.

use crate::config::LogLevel;
use crate::error::{IoContext, Result};
use std::fmt;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// Console lines: the message alone, `warning: ` / `error: ` prefixed.
struct ConsoleFormat;

impl<S, N> FormatEvent<S, N> for ConsoleFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        match *event.metadata().level() {
            Level::ERROR => write!(w, "error: ")?,
            Level::WARN => write!(w, "warning: ")?,
            _ => {}
        }
        ctx.field_format().format_fields(w.by_ref(), event)?;
        writeln!(w)
    }
}

/// Keeps the log file writer alive; dropping it flushes the file.
pub struct LogGuard {
    _guard: Option<tracing_appender::non_blocking::WorkerGuard>,
    pub file: Option<PathBuf>,
}

/// Console level from `-v` count and `-q`.
pub fn console_level(verbose: u8, quiet: bool) -> LevelFilter {
    if quiet {
        return LevelFilter::ERROR;
    }
    match verbose {
        0 => LevelFilter::WARN,
        1 => LevelFilter::INFO,
        _ => LevelFilter::DEBUG,
    }
}

/// Create a new log file in `dir`, named after the local time.
pub fn create_log_file(dir: &Path) -> Result<(std::fs::File, PathBuf)> {
    crate::fsutil::create_private_dir(dir)?;
    let stamp = jiff::Zoned::now().strftime("%Y%m%d-%H%M%S").to_string();
    for n in 1.. {
        let name = if n == 1 {
            format!("trove-{stamp}.log")
        } else {
            format!("trove-{stamp}-{n}.log")
        };
        let p = dir.join(name);
        match OpenOptions::new().write(true).create_new(true).open(&p) {
            Ok(f) => return Ok((f, p)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(crate::error::Error::io("create log file", &p, e)),
        }
    }
    // Unreachable (the names run out after 2^31 tries): a bug, not usage.
    Err(crate::error::Error::Internal(
        "no free log file name".into(),
    ))
}

/// Install the global subscriber. With `file`, events of trove at the
/// file's level also go to a new log file in that directory.
pub fn init(console: LevelFilter, file: Option<(&Path, LogLevel)>) -> Result<LogGuard> {
    let console_layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .event_format(ConsoleFormat)
        .with_filter(Targets::new().with_target("trove", console));
    let (file_layer, guard, path) = match file {
        Some((dir, level)) => {
            let (f, p) = create_log_file(dir)?;
            // Not lossy: the default drops lines when the writer falls
            // behind, and an audit log must never lose a line.
            // A short queue: the writer thread keeps up with a run's
            // lines, and a long one would hold a first backup's hundred
            // thousand lines in memory.
            // Buffered: the writer thread writes each batch of queued
            // lines with one call and flushes whenever the queue runs
            // dry (and at the end), so a line waits in the buffer no
            // longer than it would in the queue (a 1% rerun of 100,000
            // files logs 4,000 lines: 4,000 writes before).
            let (nb, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
                .lossy(false)
                .buffered_lines_limit(4096)
                .finish(std::io::BufWriter::with_capacity(64 * 1024, f));
            let lvl = match level {
                LogLevel::Info => LevelFilter::INFO,
                LogLevel::Debug => LevelFilter::DEBUG,
            };
            let layer = tracing_subscriber::fmt::layer()
                .with_writer(nb)
                .with_ansi(false)
                .with_target(false)
                .with_filter(
                    Targets::new()
                        .with_target("trove", lvl)
                        .with_target("audit", lvl),
                );
            (Some(layer), Some(guard), Some(p))
        }
        None => (None, None, None),
    };
    let subscriber = tracing_subscriber::registry()
        .with(console_layer)
        .with(file_layer);
    tracing::subscriber::set_global_default(subscriber)
        .map_err(|e| crate::error::Error::Internal(format!("logging already initialised: {e}")))?;
    Ok(LogGuard {
        _guard: guard,
        file: path,
    })
}

/// Check a log directory is writable before a run starts.
pub fn check_dir(dir: &Path) -> Result<()> {
    crate::fsutil::create_private_dir(dir)?;
    std::fs::metadata(dir)
        .ctx("stat log directory", dir)
        .map(|_| ())
}

/// Measurement hook for the scale check (`benches/scale.sh`): with
/// `TROVE_MEMPROBE` set, print the time since the first call and the
/// resident and peak memory (from `/proc/self/status`) at the named phase
/// of a run to stderr. Never in the audit log, whose lines must not depend
/// on the machine.
pub fn mem_phase(phase: &str) {
    static ON: std::sync::OnceLock<Option<std::time::Instant>> = std::sync::OnceLock::new();
    let Some(t0) =
        ON.get_or_init(|| std::env::var_os("TROVE_MEMPROBE").map(|_| std::time::Instant::now()))
    else {
        return;
    };
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let mib = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|kib| kib.parse::<u64>().ok())
            .map_or(0, |kib| kib / 1024)
    };
    let _ = writeln!(
        std::io::stderr(),
        "trove mem: {phase:<18} {:>8.2} s  rss {:>5} MiB  peak {:>5} MiB",
        t0.elapsed().as_secs_f64(),
        mib("VmRSS:"),
        mib("VmHWM:")
    );
}
