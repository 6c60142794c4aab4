//! `trove backup --stdin` and `--stdin-from-command`: the bytes of one
//! stream (trove's standard input, or a command's standard output) become
//! one file of the next snapshot, at a path the user names. Every other
//! entry is the latest snapshot's, unchanged: the sources are not scanned,
//! and the new snapshot is the latest with that one file added or
//! replaced, planned like any run (a replaced content goes to `versions/`,
//! a content stored under another path makes a `_duplicates/` entry,
//! retention applies) and recorded through the same steps as a retention
//! trim (`prune::record_listing`).
//!
//! The stream is hashed while it is copied into `tmp/`, never held in
//! memory. A command that exits non-zero or is killed, and a stream that
//! brings nothing, record no snapshot. Ordinary runs keep the file
//! (`FileExt::stdin`; see `walk`).

use super::BackupReport;
use crate::audit::Layout;
use crate::config::BackupSettings;
use crate::error::{Error, Result};
use crate::id::{ObjectId, TreeId};
use crate::local::lock::{LockMode, RepoLock};
use crate::local::objects::Batch;
use crate::local::LocalRepo;
use crate::model::{now_ns, Entry, FileExt, History, Item, Leaf, Meta};
use crate::pathbytes::{self, cmp_paths};
use crate::plan::{self, PlanOptions};
use crate::progress::Progress;
use crate::repo::snapshot;
use std::collections::HashSet;
use std::ffi::OsString;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};

/// Where the bytes come from.
#[derive(Clone, Debug)]
pub enum StdinSource {
    /// trove's own standard input (a pipe).
    Stdin,
    /// The standard output of this command (program, then arguments).
    Command(Vec<OsString>),
}

#[derive(Clone, Debug)]
pub struct StdinOptions {
    /// The backup root, retention and keep policy, the hash of a new
    /// repository (sources and filters are not used).
    pub settings: BackupSettings,
    /// The snapshot path of the file (`--stdin-filename`).
    pub name: Vec<u8>,
    pub source: StdinSource,
    pub allow_damaged_latest: bool,
    pub wait: bool,
}

/// Mode of the stored file (restic's) and of folders the run adds.
const FILE_MODE: u32 = 0o644;
const DIR_MODE: u32 = 0o755;

/// Check a `--stdin-filename`: a relative path of safe components
/// (`dumps/db.sql`), no `..`, no NUL, not empty, not absolute.
pub fn check_name(name: &[u8]) -> Result<()> {
    let bad = |why: &str| {
        Err(Error::Usage(format!(
            "--stdin-filename {:?}: {why}; give a relative path such as db.sql or dumps/db.sql",
            pathbytes::display(name)
        )))
    };
    if name.is_empty() {
        return bad("the name is empty");
    }
    if name.starts_with(b"/") {
        return bad("an absolute path is not a path inside the snapshot");
    }
    if name.contains(&0) {
        return bad("a NUL byte cannot be in a file name");
    }
    for c in name.split(|&b| b == b'/') {
        if c == b".." {
            return bad("`..` would leave the snapshot");
        }
        if !pathbytes::is_safe_component(c) {
            return bad("every part between slashes must be a name (no empty part, no `.`)");
        }
    }
    Ok(())
}

/// How messages and log lines name the stream.
fn describe(source: &StdinSource) -> String {
    match source {
        StdinSource::Stdin => "stdin".to_string(),
        StdinSource::Command(argv) => format!("`{}`", command_line(argv)),
    }
}

fn command_line(argv: &[OsString]) -> String {
    argv.iter()
        .map(|a| {
            let s = pathbytes::display(pathbytes::os_bytes(a));
            if s.is_empty() || s.contains(|c: char| c.is_whitespace() || c == '\'') {
                format!("'{}'", s.replace('\'', "'\\''"))
            } else {
                s
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A finished command's status in words (`exited with status 3`, `was
/// killed by signal 9 (SIGKILL)`).
fn status_words(st: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = st.code() {
        return format!("exited with status {code}");
    }
    match st.signal() {
        Some(sig) => {
            let name = match sig {
                libc::SIGHUP => " (SIGHUP)",
                libc::SIGINT => " (SIGINT)",
                libc::SIGQUIT => " (SIGQUIT)",
                libc::SIGABRT => " (SIGABRT)",
                libc::SIGKILL => " (SIGKILL)",
                libc::SIGSEGV => " (SIGSEGV)",
                libc::SIGPIPE => " (SIGPIPE)",
                libc::SIGTERM => " (SIGTERM)",
                _ => "",
            };
            format!("was killed by signal {sig}{name}")
        }
        None => format!("ended with {st}"),
    }
}

/// Put the stream's file into `entries` (a sorted listing) at `name`,
/// adding the folders on its way that are missing, and return its index.
/// A path on the way that is not a folder, or `name` itself being anything
/// but a regular file, is refused: the stream would replace what a
/// source put there.
fn place(entries: &mut Vec<Entry>, name: &[u8], file: Item, dir: &Meta) -> Result<usize> {
    let find = |entries: &[Entry], p: &[u8]| entries.binary_search_by(|e| cmp_paths(&e.path, p));
    let in_the_way = |p: &[u8], what: &str| {
        Err(Error::Usage(format!(
            "--stdin-filename {}: the latest snapshot has {what} at {}, so the stream cannot be stored there; choose another name",
            pathbytes::display(name),
            pathbytes::display(p)
        )))
    };
    let mut ancestors: Vec<&[u8]> = Vec::new();
    let mut p = pathbytes::parent(name);
    while !p.is_empty() {
        ancestors.push(p);
        p = pathbytes::parent(p);
    }
    for a in ancestors.iter().rev() {
        match find(entries, a) {
            Ok(i) if matches!(entries[i].item, Item::Dir(_)) => {}
            Ok(_) => return in_the_way(a, "something that is not a folder"),
            Err(i) => entries.insert(
                i,
                Entry {
                    path: a.to_vec(),
                    item: Item::Dir(dir.clone()),
                },
            ),
        }
    }
    match find(entries, name) {
        Ok(i) if matches!(entries[i].item, Item::Leaf(Leaf::File { .. })) => {
            entries[i].item = file;
            Ok(i)
        }
        Ok(_) => in_the_way(name, "a folder, symlink or special file"),
        Err(i) => {
            entries.insert(
                i,
                Entry {
                    path: name.to_vec(),
                    item: file,
                },
            );
            Ok(i)
        }
    }
}

/// A reader that reports the bytes it passes to the progress display.
struct Counted<'a, R> {
    inner: R,
    progress: &'a dyn Progress,
}

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.advance(0, n as u64);
        Ok(n)
    }
}

/// Copy the stream into the batch: (content, size, whether it is new).
/// A command is waited for, and its failure is the run's.
fn ingest(
    batch: &Batch<'_>,
    source: &StdinSource,
    progress: &dyn Progress,
) -> Result<(ObjectId, u64, bool)> {
    match source {
        StdinSource::Stdin => {
            let mut r = Counted {
                inner: std::io::stdin().lock(),
                progress,
            };
            batch.put_stream(&mut r, Path::new("<stdin>"))
        }
        StdinSource::Command(argv) => {
            let Some((prog, args)) = argv.split_first() else {
                return Err(Error::Usage(
                    "--stdin-from-command needs a command after `--`".into(),
                ));
            };
            let mut child = Command::new(prog)
                .args(args)
                .stdin(Stdio::inherit())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .map_err(|e| Error::io("run command", prog, e))?;
            let read = match child.stdout.take() {
                Some(out) => {
                    let mut r = Counted {
                        inner: out,
                        progress,
                    };
                    batch.put_stream(&mut r, Path::new(prog))
                }
                None => Err(Error::Internal("the command's output was not piped".into())),
            };
            if read.is_err() {
                // Nothing will read the rest: do not leave it running.
                let _ = child.kill();
            }
            let status = child
                .wait()
                .map_err(|e| Error::io("wait for command", prog, e))?;
            let got = read?;
            if !status.success() {
                return Err(Error::ProducerFailed {
                    command: describe(source),
                    status: status_words(status),
                });
            }
            Ok(got)
        }
    }
}

/// Contents the plan's retention removed from the archive.
fn dropped_by_retention(old: &[(Vec<u8>, History)], new: &[(Vec<u8>, History)]) -> Vec<ObjectId> {
    let ids = |a: &[(Vec<u8>, History)]| -> HashSet<ObjectId> {
        a.iter().flat_map(|(_, h)| h.object_ids()).collect()
    };
    let kept = ids(new);
    let mut out: Vec<ObjectId> = ids(old).into_iter().filter(|i| !kept.contains(i)).collect();
    out.sort();
    out
}

/// One `backup --stdin` run. The caller has started the audit log.
pub fn run(opts: &StdinOptions, progress: &dyn Progress) -> Result<BackupReport> {
    let s = &opts.settings;
    check_name(&opts.name)?;
    if let StdinSource::Command(argv) = &opts.source {
        if argv.is_empty() {
            return Err(Error::Usage(
                "--stdin-from-command needs a command after `--` (trove backup --stdin-from-command -- pg_dump mydb)".into(),
            ));
        }
    }
    let run_start = now_ns();
    let root = super::normalize(&s.backup_root);
    LocalRepo::check_can_init(&root)?;
    let repo = super::open_or_init(&root, s.hash)?;
    let _lock = RepoLock::acquire(&repo, LockMode::Exclusive, opts.wait)?;
    repo.begin_write()?;
    let scan = snapshot::scan(&repo)?;
    let latest = super::latest_to_build_on(&scan, opts.allow_damaged_latest)?;
    super::warn_damaged(&scan);
    let mut report = BackupReport::default();
    if let Some(snap) = &latest {
        super::catch_up(&repo, snap, &mut report)?;
    }

    // The new listing, checked before anything is read: the latest one
    // with the file placed (its content filled in once it is read).
    let mut known: HashSet<TreeId> = HashSet::new();
    let (old, old_archive) = match &latest {
        Some(l) => snapshot::load_listing(&repo, &l.record, &mut known)?,
        None => Default::default(),
    };
    let (uid, gid) = crate::sys::effective_ids();
    let mut entries = old.clone();
    let at = place(
        &mut entries,
        &opts.name,
        Item::Dir(Meta::default()),
        &Meta::basic(DIR_MODE, uid, gid, run_start),
    )?;

    let what = describe(&opts.source);
    tracing::info!("reading {what} into {}", pathbytes::display(&opts.name));
    crate::log::mem_phase("listing placed");
    progress.phase("reading", 0, 0);
    let batch = Batch::new(&repo);
    let read = ingest(&batch, &opts.source, progress);
    progress.finish();
    let (id, size, stored) = match read {
        Ok((_, 0, _)) => Err(Error::EmptyInput { what: what.clone() }),
        other => other,
    }
    .inspect_err(|_| {
        // What was queued is never committed: leave no copy of it.
        let _ = repo.clean_tmp();
    })?;
    entries[at].item = Item::Leaf(Leaf::File {
        size,
        id,
        dup: false,
        meta: Meta::basic(FILE_MODE, uid, gid, run_start),
        ext: FileExt {
            stdin: true,
            ..FileExt::default()
        },
    });
    crate::log::mem_phase("stream stored");
    report.files_read = 1;
    if stored {
        report.new_objects = 1;
        report.new_bytes = size;
    }

    let popts = PlanOptions {
        max_versions: s.max_versions,
        deleted_max_age_ns: s.deleted_max_age_days.map(crate::retention::days_ns),
        now_ns: run_start,
    };
    let plan = plan::plan(&old, &old_archive, entries, &popts);
    let layout = match &latest {
        Some(l) => Layout::of_record(&root, &l.record),
        None => Layout::new(&root, Vec::new(), Vec::new()),
    }
    .with_stdin(&opts.name, what);
    super::fill_counts(&mut report, &plan.counts);
    let sources = latest
        .as_ref()
        .map(|l| l.record.sources.clone())
        .unwrap_or_default();
    let done = crate::prune::record_listing(
        &repo,
        &batch,
        latest.as_ref(),
        crate::prune::ListingRun {
            old: (&old, &old_archive),
            known: &known,
            plan: &plan,
            layout: &layout,
        },
        |root_id, arch_id| {
            let mut r = super::snapshot_record(
                latest.as_ref(),
                run_start,
                sources,
                root_id,
                arch_id,
                &plan.counts,
                &report,
            );
            // Above every record's number, a damaged one's included.
            r.seq = scan.next_seq();
            r
        },
    )?;
    crate::log::mem_phase("recorded");
    report.changed = true;
    report.snapshot = Some(done.id.short());
    report.add_tree_update(done.tree, |p| layout.browsable_for_log(p));
    super::warn_link_copies(&report);
    let dropped = if plan.counts.retention_removed > 0 {
        dropped_by_retention(&old_archive, &plan.archive)
    } else {
        Vec::new()
    };
    let latest = snapshot::Snapshot {
        id: done.id,
        record: done.record,
    };
    super::collect_after_run(
        &repo,
        s,
        run_start,
        scan.damaged.is_empty(),
        &dropped,
        &latest,
        &mut report,
    )?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_stay_inside_the_snapshot() {
        for ok in [&b"db.sql"[..], b"dumps/db.sql", b"a/b/c", b"\xff.bin"] {
            assert!(check_name(ok).is_ok(), "{ok:?}");
        }
        for bad in [
            &b""[..],
            b"/etc/passwd",
            b"../x",
            b"a/../b",
            b"a//b",
            b"a/",
            b"./a",
            b"a\0b",
        ] {
            assert!(matches!(check_name(bad), Err(Error::Usage(_))), "{bad:?}");
        }
    }

    fn file(p: &str) -> Entry {
        Entry {
            path: p.as_bytes().to_vec(),
            item: Item::Leaf(Leaf::File {
                size: 1,
                id: ObjectId(crate::id::Digest([1; 32])),
                dup: false,
                meta: Meta::default(),
                ext: FileExt::default(),
            }),
        }
    }

    fn dir(p: &str) -> Entry {
        Entry {
            path: p.as_bytes().to_vec(),
            item: Item::Dir(Meta::default()),
        }
    }

    #[test]
    fn placing_adds_missing_folders_and_keeps_path_order() -> Result<()> {
        let new_file = Item::Dir(Meta::basic(1, 2, 3, 4));
        let folder = Meta::basic(DIR_MODE, 0, 0, 9);
        let mut e = vec![file("a"), dir("d"), file("d/x"), file("z")];
        let at = place(&mut e, b"d/n/db.sql", new_file.clone(), &folder)?;
        let paths: Vec<&[u8]> = e.iter().map(|e| e.path.as_slice()).collect();
        assert_eq!(
            paths,
            vec![&b"a"[..], b"d", b"d/n", b"d/n/db.sql", b"d/x", b"z"]
        );
        assert_eq!(e[at].path, b"d/n/db.sql");
        assert_eq!(e[2].item, Item::Dir(folder.clone()));
        // An existing file is replaced in place.
        let at = place(&mut e, b"a", new_file.clone(), &folder)?;
        assert_eq!((at, &e[0].item), (0, &new_file));
        // A file on the way, or a folder at the name, is refused.
        assert!(place(&mut e, b"z/db.sql", new_file.clone(), &folder).is_err());
        assert!(place(&mut e, b"d", new_file, &folder).is_err());
        Ok(())
    }
}
