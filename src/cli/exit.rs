//! Exit codes (SPEC §5) and the one-line error report: how the outcome of
//! a command, or its error, reaches the shell. `main.rs` uses only this.

use crate::error::{Error, ErrorKind};

/// The process exit code of SPEC §5. clap's own parse errors also exit 2
/// (`Usage`) without reaching this type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitCode {
    /// The command did what was asked.
    Ok = 0,
    /// The command ran but found problems (verify), could not back up,
    /// restore or mirror some files, or failed at run time.
    Problems = 1,
    /// A usage or config error: the user's to fix in arguments or config.
    Usage = 2,
    /// Another trove holds the repository lock and `--wait` was not given.
    Locked = 3,
}

impl From<ExitCode> for std::process::ExitCode {
    fn from(c: ExitCode) -> Self {
        std::process::ExitCode::from(c as u8)
    }
}

/// How a command ended when it did not fail outright.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// Ran, but found problems (exit 1).
    Problems,
}

impl From<Outcome> for ExitCode {
    fn from(o: Outcome) -> Self {
        match o {
            Outcome::Ok => ExitCode::Ok,
            Outcome::Problems => ExitCode::Problems,
        }
    }
}

/// Whether the error is a closed pipe (`trove ls | head`): not a failure.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// The one-line report of an error and its causes, as `{:#}` would print
/// it, except that a cause whose text the message already holds is not
/// repeated: the library's I/O errors name the OS error in their own text
/// *and* keep it as their source (so a caller can still ask for its kind),
/// and printing both said "No space left on device (os error 28): No space
/// left on device (os error 28)".
pub fn error_report(e: &anyhow::Error) -> String {
    // Every I/O error of the library carries its path; a bare one can only
    // come from writing the report itself (`writeln!(stdout)?`), so say so
    // rather than print an error that names nothing (the fault sweep found
    // "error: Disk quota exceeded (os error 122)" alone).
    if e.chain().count() == 1 {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return format!("cannot write the report to standard output: {io}");
        }
    }
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if text.is_empty() || out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// Map an error to the exit code of SPEC §5: the first library error in
/// the chain that is a lock or a usage error decides; anything else is a
/// run-time failure.
pub fn exit_code(e: &anyhow::Error) -> ExitCode {
    for cause in e.chain() {
        if let Some(te) = cause.downcast_ref::<Error>() {
            match te.kind() {
                ErrorKind::Locked => return ExitCode::Locked,
                ErrorKind::Usage => return ExitCode::Usage,
                // Damage, runtime failures and bugs are all "problems".
                ErrorKind::Damaged | ErrorKind::Runtime | ErrorKind::Internal => {}
            }
        }
    }
    ExitCode::Problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn codes_are_those_of_spec_5() {
        for (code, n) in [
            (ExitCode::Ok, 0u8),
            (ExitCode::Problems, 1),
            (ExitCode::Usage, 2),
            (ExitCode::Locked, 3),
        ] {
            assert_eq!(code as u8, n, "{code:?}");
        }
        assert_eq!(ExitCode::from(Outcome::Ok), ExitCode::Ok);
        assert_eq!(ExitCode::from(Outcome::Problems), ExitCode::Problems);
    }

    #[test]
    fn errors_map_to_their_exit_code() {
        let io = || std::io::Error::other("boom");
        let cases: Vec<(anyhow::Error, ExitCode)> = vec![
            (
                Error::Locked {
                    path: PathBuf::from("/r/.trove/lock"),
                }
                .into(),
                ExitCode::Locked,
            ),
            (Error::Usage("bad".into()).into(), ExitCode::Usage),
            (Error::NoSuchSnapshot("ff".into()).into(), ExitCode::Usage),
            (
                anyhow::Error::new(Error::Usage("inner".into())).context("outer"),
                ExitCode::Usage,
            ),
            (Error::io("read", "/x", io()).into(), ExitCode::Problems),
            (Error::Internal("encode".into()).into(), ExitCode::Problems),
            (anyhow::anyhow!("plain"), ExitCode::Problems),
        ];
        for (e, want) in cases {
            assert_eq!(exit_code(&e), want, "{e:#}");
        }
    }

    #[test]
    fn report_names_a_repeated_cause_once() {
        let io = std::io::Error::other("disk full");
        let e: anyhow::Error = Error::io("write", "/r/f", io).into();
        assert_eq!(error_report(&e), "write /r/f: disk full");
        let bare: anyhow::Error = std::io::Error::other("quota").into();
        assert_eq!(
            error_report(&bare),
            "cannot write the report to standard output: quota"
        );
        let pipe: anyhow::Error =
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "pipe").into();
        assert!(is_broken_pipe(&pipe));
        assert!(!is_broken_pipe(&bare));
    }
}
