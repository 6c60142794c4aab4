//! How reports look: the human text and the JSON document of every
//! command, written to an `impl Write` (stdout in the binary, a buffer in
//! tests). Rendering only: the reports come from the engine as values, and
//! nothing here decides anything about the repository.

use crate::backup::{human_bytes, BackupReport};
use crate::gc::RepoStats;
use crate::model::{Entry, Item, Leaf};
use crate::pathbytes::display;
use crate::repo::snapshot::{self, Scan};
use serde::Serialize;
use std::io::{self, Write};
use std::path::Path;

/// One JSON document (pretty, one trailing newline). Serialised first and
/// written with std's error type, so a closed pipe (`trove ls --json |
/// head`) is recognised and is not a failure.
pub(super) fn json<T: Serialize>(out: &mut impl Write, v: &T) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(v)?;
    text.push('\n');
    out.write_all(text.as_bytes())?;
    Ok(())
}

/// A list printed as it is produced (`ls` of a whole snapshot, whose
/// rows are never all held): each row's human lines, or the array
/// [`json`] prints for the whole list, byte for byte.
pub(super) struct ListWriter<W: Write> {
    out: W,
    json: bool,
    rows: u64,
}

impl<W: Write> ListWriter<W> {
    pub(super) fn new(out: W, json: bool) -> ListWriter<W> {
        ListWriter { out, json, rows: 0 }
    }

    pub(super) fn row<T: Serialize>(
        &mut self,
        row: &T,
        human: impl FnOnce(&mut W) -> io::Result<()>,
    ) -> anyhow::Result<()> {
        self.rows += 1;
        if !self.json {
            human(&mut self.out)?;
            return Ok(());
        }
        // serde_json's pretty array: "[", then each element indented by
        // two spaces, separated by ",".
        self.out
            .write_all(if self.rows == 1 { b"[\n" } else { b",\n" })?;
        let text = serde_json::to_string_pretty(row)?;
        for (i, line) in text.split('\n').enumerate() {
            if i > 0 {
                self.out.write_all(b"\n")?;
            }
            self.out.write_all(b"  ")?;
            self.out.write_all(line.as_bytes())?;
        }
        Ok(())
    }

    pub(super) fn finish(mut self) -> anyhow::Result<()> {
        if self.json {
            self.out
                .write_all(if self.rows == 0 { b"[]\n" } else { b"\n]\n" })?;
        }
        self.out.flush()?;
        Ok(())
    }
}

/// A human figure with the exact count beside it, for what a user may
/// want to audit or compare: `4.9 KiB (5,000 bytes)`.
pub(super) fn bytes_exact(n: u64) -> String {
    format!("{} ({} bytes)", human_bytes(n), thousands(n))
}

/// `5000` → `5,000`.
pub(super) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut s = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            s.push(',');
        }
        s.push(c);
    }
    s
}

pub(super) fn init(out: &mut impl Write, existed: bool, root: &Path, hash: &str) -> io::Result<()> {
    let verb = if existed {
        "already a repository"
    } else {
        "created repository"
    };
    writeln!(out, "{verb}: {} (hash {hash})", root.display())
}

/// The end of a backup run. Write errors are ignored line by line: the
/// run is committed, and its log holds the same summary.
pub(super) fn backup_summary(
    out: &mut impl Write,
    r: &BackupReport,
    line: &str,
    log: Option<&Path>,
    root: &Path,
) {
    let _ = if r.dry_run {
        writeln!(out, "dry run (nothing changed): {line}")
    } else if !r.changed {
        writeln!(
            out,
            "Run complete: no changes, no new snapshot: {line}{}",
            r.snapshot
                .as_deref()
                .map(|s| format!(" [latest {s}]"))
                .unwrap_or_default()
        )
    } else {
        writeln!(
            out,
            "Run complete: {line}; snapshot {}",
            r.snapshot.as_deref().unwrap_or("-")
        )
    };
    if !r.problems.is_empty() {
        let _ = writeln!(
            out,
            "{} paths could not be backed up (see the messages above)",
            r.problems.len()
        );
    }
    if let Some(first) = r.browsable_incomplete.first() {
        let shown = |p: &Path| crate::pathbytes::display_path(p);
        let committed = match &r.snapshot {
            Some(s) if r.changed => format!(
                "snapshot {s} is committed and holds all {} files backed up; only ",
                r.files
            ),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "{committed}the browsable tree at {} is incomplete: {} entries could not be put in place (first: {}: {}); once the cause is fixed (e.g. space freed), `trove materialize --repo {}` or the next backup completes it",
            shown(root),
            r.browsable_incomplete_total,
            first.path,
            first.message,
            shown(root),
        );
    }
    if let Some(l) = log {
        if !r.dry_run {
            let _ = writeln!(out, "log: {}", l.display());
        }
    }
}

#[derive(Serialize)]
pub(super) struct SnapshotRow {
    id: String,
    full_id: String,
    /// `ok`, or `damaged` for a record that cannot be read (its counts
    /// and time are then unknown, shown as 0 and "").
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// The sequence number (for a damaged record: what its readable
    /// prefix claims, if anything).
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
    time: String,
    time_ns: i64,
    files: u64,
    bytes: u64,
    added: u64,
    modified: u64,
    deleted: u64,
    new_bytes: u64,
    sources: Vec<String>,
}

/// The rows of `trove snapshots`, in sequence order. A damaged record is
/// listed where its claimed sequence number puts it (last when unknown),
/// never left out.
pub(super) fn snapshot_rows(scan: &Scan) -> Vec<SnapshotRow> {
    let mut rows: Vec<(u64, i64, SnapshotRow)> = scan
        .snapshots
        .iter()
        .map(|s| {
            let row = SnapshotRow {
                id: s.id.short(),
                full_id: s.id.to_hex(),
                status: "ok",
                error: None,
                seq: Some(s.record.seq),
                time: snapshot::format_time(s.record.time_ns),
                time_ns: s.record.time_ns,
                files: s.record.summary.files,
                bytes: s.record.summary.bytes,
                added: s.record.summary.backed_up + s.record.summary.duplicates,
                modified: s.record.summary.modified,
                deleted: s.record.summary.deleted,
                new_bytes: s.record.summary.new_bytes,
                sources: s.record.sources.iter().map(|x| display(&x.path)).collect(),
            };
            (s.record.seq, s.record.time_ns, row)
        })
        .collect();
    for d in &scan.damaged {
        let row = SnapshotRow {
            id: d.id.short(),
            full_id: d.id.to_hex(),
            status: "damaged",
            error: Some(d.error.to_string()),
            seq: d.seq,
            time: d.time_ns.map(snapshot::format_time).unwrap_or_default(),
            time_ns: d.time_ns.unwrap_or(0),
            files: 0,
            bytes: 0,
            added: 0,
            modified: 0,
            deleted: 0,
            new_bytes: 0,
            sources: Vec::new(),
        };
        rows.push((
            d.seq.unwrap_or(u64::MAX),
            d.time_ns.unwrap_or(i64::MAX),
            row,
        ));
    }
    rows.sort_by_key(|r| (r.0, r.1));
    rows.into_iter().map(|(_, _, r)| r).collect()
}

pub(super) fn snapshots(
    out: &mut impl Write,
    rows: &[SnapshotRow],
    readable: usize,
    damaged: usize,
) -> io::Result<()> {
    writeln!(
        out,
        "{:<8}  {:<19}  {:>9}  {:>10}  {:>22}",
        "ID", "TIME", "FILES", "SIZE", "CHANGES"
    )?;
    for r in rows {
        if let Some(e) = &r.error {
            writeln!(out, "{:<8}  DAMAGED: {e}", r.id)?;
            continue;
        }
        writeln!(
            out,
            "{:<8}  {:<19}  {:>9}  {:>10}  {:>22}",
            r.id,
            r.time,
            r.files,
            human_bytes(r.bytes),
            format!("+{} ~{} -{}", r.added, r.modified, r.deleted)
        )?;
    }
    if damaged == 0 {
        writeln!(out, "{readable} snapshots")
    } else {
        writeln!(
            out,
            "{readable} snapshots, {damaged} damaged (run `trove verify`)"
        )
    }
}

#[derive(Serialize)]
pub(super) struct LsRow {
    path: String,
    #[serde(rename = "type")]
    kind: &'static str,
    size: u64,
    mode: String,
    mtime: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    hash: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<String>,
    uid: u32,
    gid: u32,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    xattrs: Vec<XattrRow>,
    /// Paths of one hard-link group share this key.
    #[serde(skip_serializing_if = "Option::is_none")]
    link: Option<u64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    sparse: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stdin: bool,
    /// Device number of a character or block device.
    #[serde(skip_serializing_if = "Option::is_none")]
    rdev: Option<u64>,
}

/// One extended attribute in `ls --json`: the value as text when it is
/// printable UTF-8, otherwise as hex.
#[derive(Serialize)]
pub(super) struct XattrRow {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value_hex: Option<String>,
}

fn xattr_rows(m: &crate::model::Meta) -> Vec<XattrRow> {
    m.xattrs
        .as_slice()
        .iter()
        .map(|x| {
            // Text when it reads as text (an ACL or a capability is
            // binary even where its bytes happen to be valid UTF-8).
            let text = std::str::from_utf8(&x.value)
                .ok()
                .filter(|s| !s.chars().any(|c| c.is_control() && c != '\n' && c != '\t'))
                .map(str::to_string);
            XattrRow {
                name: display(&x.name),
                value_hex: match text {
                    Some(_) => None,
                    None => Some(x.value.iter().map(|b| format!("{b:02x}")).collect()),
                },
                value: text,
            }
        })
        .collect()
}

/// `drwxr-xr-x` from a kind letter and permission bits.
fn mode_string(kind: char, mode: u32) -> String {
    let mut s = String::with_capacity(10);
    s.push(kind);
    for shift in [6, 3, 0] {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    s
}

/// One `trove ls` row per entry.
pub(super) fn ls_rows(entries: &[&Entry]) -> Vec<LsRow> {
    entries
        .iter()
        .map(|e| {
            let mut ext = crate::model::FileExt::default();
            let mut rdev = None;
            let (kind, ch, size, meta, hash, target) = match &e.item {
                Item::Dir(m) => ("dir", 'd', 0, m, None, None),
                Item::Leaf(Leaf::File {
                    size,
                    id,
                    meta,
                    ext: x,
                    ..
                }) => {
                    ext = *x;
                    ("file", '-', *size, meta, Some(id.to_hex()), None)
                }
                Item::Leaf(Leaf::Symlink { target, meta }) => {
                    ("symlink", 'l', 0, meta, None, Some(display(target)))
                }
                Item::Leaf(Leaf::Special {
                    kind,
                    rdev: r,
                    meta,
                }) => {
                    let ch = match kind {
                        crate::model::SpecialKind::Fifo => 'p',
                        crate::model::SpecialKind::Socket => 's',
                        crate::model::SpecialKind::CharDevice => 'c',
                        crate::model::SpecialKind::BlockDevice => 'b',
                    };
                    if matches!(
                        kind,
                        crate::model::SpecialKind::CharDevice
                            | crate::model::SpecialKind::BlockDevice
                    ) {
                        rdev = Some(*r);
                    }
                    (kind.name(), ch, 0, meta, None, None)
                }
            };
            LsRow {
                path: display(&e.path),
                kind,
                size,
                mode: mode_string(ch, meta.mode),
                mtime: snapshot::format_time(meta.mtime_ns),
                hash,
                target,
                uid: meta.uid,
                gid: meta.gid,
                xattrs: xattr_rows(meta),
                link: ext.link.map(|k| k.get()),
                sparse: ext.sparse,
                stdin: ext.stdin,
                rdev,
            }
        })
        .collect()
}

pub(super) fn ls(out: &mut impl Write, rows: &[LsRow]) -> io::Result<()> {
    for r in rows {
        let tail = r
            .target
            .as_deref()
            .map(|t| format!(" -> {t}"))
            .unwrap_or_default();
        writeln!(
            out,
            "{} {:>12} {} {}{}",
            r.mode, r.size, r.mtime, r.path, tail
        )?;
    }
    Ok(())
}

pub(super) fn restore(
    out: &mut impl Write,
    report: &crate::restore::RestoreReport,
    quiet: bool,
) -> io::Result<()> {
    for p in &report.would_write {
        writeln!(out, "would restore: {p}")?;
    }
    for p in &report.missing {
        writeln!(
            out,
            "missing: {p}: its content was removed by retention; restore it from a snapshot that kept it (`trove history {p}`)"
        )?;
    }
    for p in &report.problems {
        writeln!(out, "error: {}: {}", p.path, p.message)?;
    }
    if quiet {
        return Ok(());
    }
    let bad = report.missing.len() + report.problems.len();
    let tail = if bad > 0 {
        format!("; {bad} paths not restored (listed above)")
    } else {
        String::new()
    };
    // FIFOs, sockets and devices, and hard links, only where there are any.
    let mut more = String::new();
    if report.specials > 0 {
        more.push_str(&format!(", {} special files", report.specials));
    }
    if report.hardlinks > 0 {
        more.push_str(&format!(
            " ({} of the files as hard links)",
            report.hardlinks
        ));
    }
    if report.dry_run {
        writeln!(
            out,
            "would restore {} files ({}), {} directories, {} symlinks{more} from snapshot {} to {}{tail}",
            report.files - report.missing.len() as u64,
            human_bytes(report.bytes),
            report.dirs,
            report.symlinks,
            report.snapshot,
            report.target,
        )
    } else {
        writeln!(
            out,
            "restored {} of {} files ({}), {} directories, {} symlinks{more} from snapshot {} to {}{tail}",
            report.files_restored,
            report.files,
            human_bytes(report.bytes_restored),
            report.dirs,
            report.symlinks,
            report.snapshot,
            report.target,
        )
    }
}

pub(super) fn verify(
    out: &mut impl Write,
    report: &crate::verify::VerifyReport,
    quick: bool,
    quiet: bool,
) -> io::Result<()> {
    for p in &report.problems {
        let mut line = format!("problem: {} {}: {}", p.kind, p.subject, p.message);
        if !p.snapshots.is_empty() {
            line.push_str(&format!(" [snapshots: {}]", p.snapshots.join(", ")));
        }
        writeln!(out, "{line}")?;
        for path in &p.paths {
            writeln!(out, "    used by {path}")?;
        }
        if p.paths_total > p.paths.len() as u64 {
            writeln!(
                out,
                "    … and {} more paths",
                p.paths_total - p.paths.len() as u64
            )?;
        }
    }
    if !quiet {
        let hashed = if quick {
            "existence and sizes checked, not re-hashed".to_string()
        } else if let Some(s) = &report.sample {
            format!(
                "{} of them re-hashed ({}% sample, seed {})",
                s.objects, s.percent, s.seed
            )
        } else {
            format!("all re-hashed ({})", human_bytes(report.bytes_hashed))
        };
        writeln!(
            out,
            "{} snapshots, {} trees, {} objects ({}): {hashed}; {} browsable entries checked",
            report.snapshots,
            report.trees,
            report.objects,
            human_bytes(report.object_bytes),
            report.browsable_entries
        )?;
        if report.unpinned_missing > 0 {
            writeln!(
                out,
                "{} objects that only older, unpinned snapshots referenced are gone: removed by retention (restoring such a snapshot names the paths)",
                report.unpinned_missing
            )?;
        }
        if report.unreferenced_objects > 0 {
            writeln!(
                out,
                "{} objects ({}) are referenced by no snapshot",
                report.unreferenced_objects,
                human_bytes(report.unreferenced_bytes)
            )?;
        }
    }
    writeln!(
        out,
        "verify: {} objects, {} problems",
        report.objects,
        report.problems.len()
    )
}

pub(super) fn materialize(
    out: &mut impl Write,
    report: &crate::browsable::apply::MaterializeReport,
    quiet: bool,
) -> io::Result<()> {
    for p in &report.extra {
        writeln!(
            out,
            "extra: {p} (not created by trove; left in place, --prune-extra moves it to .trove/quarantine/)"
        )?;
    }
    for (p, msg) in &report.failures {
        writeln!(out, "error: {p}: {msg}")?;
    }
    let more = report.failures_total - report.failures.len() as u64;
    if more > 0 {
        writeln!(
            out,
            "error: {more} more entries could not be put in place (the first {} are named above)",
            report.failures.len()
        )?;
    }
    if quiet {
        return Ok(());
    }
    if report.nothing_done() && report.failures.is_empty() {
        writeln!(
            out,
            "{} already shows snapshot {} ({} entries): nothing to do",
            report.target, report.snapshot, report.entries
        )?;
    } else {
        writeln!(
            out,
            "materialized snapshot {} at {}: {} linked, {} copied, {} created, {} relinked, {} stale removed, {} quarantined, {} already right",
            report.snapshot,
            report.target,
            report.linked,
            report.copied,
            report.created,
            report.relinked,
            report.removed,
            report.quarantined,
            report.unchanged
        )?;
    }
    if report.repaired > 0 {
        writeln!(
            out,
            "re-stored {} damaged object{} from good copies in the browsable tree (damaged copies moved to .trove/quarantine/objects/)",
            report.repaired,
            if report.repaired == 1 { "" } else { "s" }
        )?;
    }
    Ok(())
}

pub(super) fn diff(out: &mut impl Write, d: &crate::inspect::Diff) -> io::Result<()> {
    for c in &d.changes {
        writeln!(out, "{}    {}", c.change.marker(), c.path)?;
    }
    let s = &d.summary;
    writeln!(
        out,
        "{} → {}: {} added, {} removed, {} modified, {} type changed, {} metadata only; +{} -{}",
        d.from,
        d.to,
        s.added,
        s.removed,
        s.modified,
        s.type_changed,
        s.metadata,
        human_bytes(s.added_bytes),
        human_bytes(s.removed_bytes)
    )
}

pub(super) fn history(out: &mut impl Write, rows: &[crate::inspect::HistoryRow]) -> io::Result<()> {
    writeln!(
        out,
        "{:<8}  {:<19}  {:<12}  {:>10}  {:<8}  WHERE",
        "SNAPSHOT", "TIME", "EVENT", "SIZE", "HASH"
    )?;
    for r in rows {
        let size = if r.kind == "file" && r.event != "deleted" {
            human_bytes(r.size)
        } else {
            r.kind.to_string()
        };
        let hash = r
            .hash
            .as_deref()
            .map(|h| &h[..8.min(h.len())])
            .unwrap_or("-");
        let place = match (&r.location, &r.target) {
            (Some(l), _) => l.clone(),
            (None, Some(t)) => format!("-> {t}"),
            _ => String::new(),
        };
        writeln!(
            out,
            "{:<8}  {:<19}  {:<12}  {:>10}  {:<8}  {}",
            r.snapshot, r.time, r.event, size, hash, place
        )?;
    }
    Ok(())
}

/// The one-line summary of a prune (also the audit log's summary line).
pub(super) fn prune_line(report: &crate::prune::PruneReport) -> String {
    let g = &report.gc;
    let verb = if report.dry_run {
        "would remove"
    } else {
        "removed"
    };
    format!(
        "prune: {verb} {} snapshots, {} versions/deleted entries, {} objects ({}) and {} trees ({}); {} snapshots kept",
        g.forgotten.len(),
        report.retention_removed,
        g.objects_removed,
        human_bytes(g.object_bytes_removed),
        g.trees_removed,
        human_bytes(g.tree_bytes_removed),
        g.kept.len(),
    )
}

pub(super) fn prune(
    out: &mut impl Write,
    report: &crate::prune::PruneReport,
    line: &str,
    root: &Path,
    verbose: u8,
    quiet: bool,
) -> io::Result<()> {
    let g = &report.gc;
    if report.dry_run {
        for f in &g.forgotten {
            writeln!(out, "would forget snapshot {} ({})", f.id, f.time)?;
        }
        for o in &g.objects {
            writeln!(out, "would delete object {} ({} bytes)", o.id, o.size)?;
        }
    } else if verbose > 0 {
        for f in &g.forgotten {
            writeln!(out, "forgot snapshot {} ({})", f.id, f.time)?;
        }
    }
    if g.policy_set && verbose > 0 {
        for k in &g.kept {
            writeln!(out, "keep {} ({}): {}", k.id, k.time, k.reasons.join(", "))?;
        }
    }
    if !quiet {
        writeln!(out, "{line}")?;
    }
    if let Some(first) = report.browsable_incomplete.first() {
        writeln!(
            out,
            "the browsable tree at {} is incomplete: {} entries could not be put in place (first: {}); once the cause is fixed, `trove materialize --repo {}` completes it",
            crate::pathbytes::display_path(root),
            report.browsable_incomplete_total,
            first,
            crate::pathbytes::display_path(root),
        )?;
    }
    Ok(())
}

pub(super) fn stats(out: &mut impl Write, st: &RepoStats) -> io::Result<()> {
    let h = human_bytes;
    writeln!(
        out,
        "snapshots:        {} ({} pinned: their content is kept complete)",
        st.snapshots, st.pinned_snapshots
    )?;
    if let Some(l) = &st.latest {
        writeln!(
            out,
            "latest:           {} ({}): {} files, {} dirs, {} symlinks, {}",
            l.id,
            l.time,
            l.files,
            l.dirs,
            l.symlinks,
            h(l.bytes)
        )?;
    }
    writeln!(
        out,
        "versions kept:    {} ({})",
        st.versions,
        h(st.version_bytes)
    )?;
    writeln!(
        out,
        "deleted entries:  {} ({})",
        st.deleted,
        h(st.deleted_bytes)
    )?;
    writeln!(out, "logical bytes:    {}", h(st.logical_bytes))?;
    writeln!(
        out,
        "stored:           {} objects, {}; {} trees, {}",
        st.objects,
        h(st.stored_bytes),
        st.trees,
        h(st.tree_bytes)
    )?;
    writeln!(out, "dedup ratio:      {:.2}", st.dedup_ratio)?;
    writeln!(
        out,
        "reclaimable:      {} objects, {} (`trove prune`)",
        st.reclaimable_objects,
        h(st.reclaimable_bytes)
    )
}

/// One line per watch run: a JSON line with `json`, else a human line.
/// Flushed at once (a session runs for days; its output is read live).
pub(super) fn watch_run(
    out: &mut impl Write,
    w: &crate::watch::WatchRun,
    json: bool,
) -> io::Result<()> {
    if json {
        if let Ok(line) = serde_json::to_string(w) {
            writeln!(out, "{line}")?;
        }
        return out.flush();
    }
    match (&w.report, &w.error) {
        (Some(r), _) => {
            let what = match w.kind {
                crate::watch::RunKind::Initial => "initial run".to_string(),
                crate::watch::RunKind::Events => format!("{} changed paths", w.paths),
                crate::watch::RunKind::Full => {
                    format!("full scan ({})", w.reason.as_deref().unwrap_or("requested"))
                }
            };
            writeln!(
                out,
                "run {} ({what}): {}{}",
                w.run,
                crate::backup::summary_line(r),
                match (&r.snapshot, r.changed) {
                    (Some(s), true) => format!("; snapshot {s}"),
                    _ => "; no changes".to_string(),
                }
            )?;
        }
        (None, Some(e)) => writeln!(out, "run {} failed: {e}", w.run)?,
        _ => {}
    }
    out.flush()
}

pub(super) fn mirror(
    out: &mut impl Write,
    r: &crate::mirror::MirrorReport,
    quiet: bool,
) -> io::Result<()> {
    let (c, d) = if r.applied {
        ("COPY", "DELETE")
    } else {
        ("WOULD COPY", "WOULD DELETE")
    };
    for p in &r.copy {
        writeln!(out, "{c}: {p}")?;
    }
    for p in &r.delete {
        writeln!(out, "{d}: {p}")?;
    }
    for (p, m) in &r.problems {
        writeln!(out, "error: {p}: {m}")?;
    }
    if quiet {
        return Ok(());
    }
    writeln!(
        out,
        "{}{} to copy ({}), {} to delete, {} with only mode/mtime to set, {} unchanged{}",
        if r.applied { "mirrored: " } else { "dry run: " },
        r.copy.len(),
        human_bytes(r.bytes_copied),
        r.delete.len(),
        r.metadata,
        r.unchanged,
        if r.applied {
            ""
        } else {
            "; nothing was changed (run again with --apply)"
        }
    )
}

/// `trove dupes`: each set, then the total. Wasted space is given in human
/// units and in exact bytes, per set and in the total, so a report can be
/// audited and compared with other tools' byte counts.
pub(super) fn dupes(
    out: &mut impl Write,
    r: &crate::dupes::DupesReport,
    quiet: bool,
) -> io::Result<()> {
    for set in &r.sets {
        writeln!(
            out,
            "{} copies of {}, {} wasted, {}:",
            set.copies,
            human_bytes(set.size),
            bytes_exact(set.wasted),
            &set.hash[..16]
        )?;
        let mut first_of: std::collections::HashMap<usize, &str> = Default::default();
        for f in &set.files {
            match first_of.get(&f.inode) {
                Some(orig) => writeln!(out, "  {}  (hardlink of {orig})", f.path)?,
                None => {
                    first_of.insert(f.inode, &f.path);
                    writeln!(out, "  {}", f.path)?
                }
            }
        }
    }
    for g in &r.hardlinked {
        writeln!(out, "already hardlinked (no waste): {}", g.join(", "))?;
    }
    for (p, m) in &r.problems {
        writeln!(out, "error: {p}: {m}")?;
    }
    if quiet {
        return Ok(());
    }
    writeln!(
        out,
        "{} duplicate sets, {} files, {} wasted ({} files, {} scanned; {} compared by their first and last blocks, {} hashed in full)",
        r.sets.len(),
        r.duplicate_files,
        bytes_exact(r.wasted),
        r.files_scanned,
        human_bytes(r.bytes_scanned),
        r.files_partially_hashed,
        r.files_fully_hashed
    )
}

/// Print a command's report on standard output: as JSON with `--json`,
/// else in its human form (`human`).
pub(super) fn emit<R: serde::Serialize>(
    cli: &super::args::Cli,
    report: &R,
    human: impl FnOnce(&mut std::io::StdoutLock<'static>) -> std::io::Result<()>,
) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if cli.json {
        json(&mut out, report)?;
    } else {
        human(&mut out)?;
    }
    Ok(())
}

// ----- off-site -----

pub(super) fn keys(out: &mut impl Write, keys: &[crate::remote::repo::KeyInfo]) -> io::Result<()> {
    writeln!(out, "{:<18} {:<27} {:<16} user", "key", "created", "host")?;
    for k in keys {
        let mark = if k.current { "*" } else { " " };
        writeln!(
            out,
            "{mark}{:<17} {:<27} {:<16} {}",
            &k.id[..16.min(k.id.len())],
            k.created,
            k.host,
            k.user
        )?;
    }
    writeln!(out, "{} key(s); * the one in use", keys.len())
}

/// The one-line summary of a push (console and log).
pub(super) fn push_line(r: &crate::remote::push::PushReport) -> String {
    // Named only when there are some, so the common line stays as it was.
    let forgotten = match r.forgotten {
        0 => String::new(),
        n => format!(", {n} forgotten by a prune of the remote, not pushed again"),
    };
    format!(
        "pushed {} snapshot(s) to {} ({} already there{forgotten}): {} blobs, {} read, {} uploaded in {} pack(s), {} requests",
        r.pushed.len(),
        r.remote,
        r.already,
        r.blobs,
        human_bytes(r.bytes_read),
        human_bytes(r.bytes_uploaded),
        r.packs_written,
        r.requests.put + r.requests.get + r.requests.list + r.requests.head + r.requests.delete,
    )
}

pub(super) fn push(
    out: &mut impl Write,
    r: &crate::remote::push::PushReport,
    quiet: bool,
) -> io::Result<()> {
    // Content retention had removed is named on the console by the log.
    for s in &r.skipped {
        writeln!(
            out,
            "not pushed: snapshot record {s} is damaged (see `trove verify`)"
        )?;
    }
    if r.packs_adopted > 0 {
        writeln!(
            out,
            "indexed {} pack(s) an interrupted push had uploaded",
            r.packs_adopted
        )?;
    }
    if !quiet {
        writeln!(out, "{}", push_line(r))?;
    }
    Ok(())
}

pub(super) fn pull(
    out: &mut impl Write,
    r: &crate::remote::pull::PullReport,
    dest: &Path,
    quiet: bool,
) -> io::Result<()> {
    for a in &r.absent {
        writeln!(
            out,
            "not on the remote: {} (snapshot {}): its content was gone locally when it was pushed",
            a.path, a.snapshot
        )?;
    }
    for s in &r.skipped {
        writeln!(
            out,
            "not pulled: snapshot commit {s} is damaged (see `trove verify --remote`)"
        )?;
    }
    if !quiet {
        writeln!(
            out,
            "pulled {} snapshot(s) from {} into {} ({} already there): {} objects, {}, {} trees",
            r.pulled.len(),
            r.remote,
            dest.display(),
            r.already,
            r.objects,
            human_bytes(r.bytes),
            r.trees
        )?;
    }
    Ok(())
}

/// Short locks `verify --remote` names one by one (the rest are counted).
const SHORT_LOCKS_SHOWN: usize = 20;

pub(super) fn verify_remote(
    out: &mut impl Write,
    r: &crate::remote::check::RemoteVerifyReport,
    quiet: bool,
) -> io::Result<()> {
    for p in &r.store.problems {
        write!(out, "{}: {}: {}", p.kind, p.subject, p.message)?;
        if !p.snapshots.is_empty() {
            write!(out, " (snapshots {})", p.snapshots.join(", "))?;
        }
        writeln!(out)?;
        for path in &p.paths {
            writeln!(out, "  {path}")?;
        }
    }
    if let Some(l) = r.object_lock.as_ref().filter(|l| !l.short.is_empty()) {
        // A warning even under -q: left alone, these objects become
        // deletable while snapshots still need them.
        writeln!(
            out,
            "warning: {} of {} needed object(s) on {} are locked for less than half the {}-day lock period (until before {}); run `trove remote extend-locks --remote {}`:",
            l.short.len(),
            l.checked,
            r.remote,
            l.days,
            l.warn_before,
            r.remote
        )?;
        for s in l.short.iter().take(SHORT_LOCKS_SHOWN) {
            match &s.until {
                Some(u) => writeln!(out, "  {} locked until {u}", s.path)?,
                None => writeln!(out, "  {} not locked", s.path)?,
            }
        }
        if l.short.len() > SHORT_LOCKS_SHOWN {
            writeln!(
                out,
                "  … and {} more (--json lists them all)",
                l.short.len() - SHORT_LOCKS_SHOWN
            )?;
        }
    }
    if quiet {
        return Ok(());
    }
    if let Some(l) = r.object_lock.as_ref().filter(|l| l.short.is_empty()) {
        writeln!(
            out,
            "object lock ({}, {} days): all {} needed object(s) locked until after {}",
            l.mode, l.days, l.checked, l.warn_before
        )?;
    }
    writeln!(
        out,
        "remote {}: {} snapshot(s), {} trees, {} objects ({}) in {} pack(s) of {}, {} index file(s)",
        r.remote,
        r.store.snapshots,
        r.store.trees,
        r.store.objects,
        human_bytes(r.store.object_bytes),
        r.packs,
        human_bytes(r.pack_bytes),
        r.index_files
    )?;
    let seed = r
        .seed
        .map(|s| format!(" (seed {s}; --seed {s} repeats it)"))
        .unwrap_or_default();
    match r.subset.as_deref() {
        Some(spec) => {
            let what = match spec.split_once('/') {
                Some((n, t)) => format!("slice {n} of {t}"),
                None if spec.ends_with('%') => format!("a random {spec} of the packs"),
                None => format!("random packs up to {spec}"),
            };
            writeln!(
                out,
                "read {what}{seed}: {} pack(s), {}, checked {} blobs",
                r.packs_read,
                human_bytes(r.bytes_read),
                r.blobs_checked
            )?;
        }
        None if r.packs_read > 0 || r.seed.is_some() => writeln!(
            out,
            "read {} pack(s), {}{seed}, checked {} blobs",
            r.packs_read,
            human_bytes(r.bytes_read),
            r.blobs_checked
        )?,
        None => {}
    }
    if r.store.unpinned_missing > 0 {
        writeln!(
            out,
            "{} object(s) were never pushed (removed locally by retention first): expected",
            r.store.unpinned_missing
        )?;
    }
    if r.unindexed_packs > 0 {
        writeln!(
            out,
            "{} pack(s) no index lists (an interrupted push): the next push indexes them",
            r.unindexed_packs
        )?;
    }
    if r.pending_packs > 0 {
        writeln!(
            out,
            "{} pack(s) a prune took out of the index wait for deletion by a later prune",
            r.pending_packs
        )?;
    }
    if r.store.problems.is_empty() {
        writeln!(out, "no problems found")?;
    } else {
        writeln!(out, "{} problem(s) found", r.store.problems.len())?;
    }
    Ok(())
}

pub(super) fn prune_remote(
    out: &mut impl Write,
    r: &crate::remote::prune::RemotePruneReport,
    verbose: u8,
) -> io::Result<()> {
    let h = human_bytes;
    let would = if r.dry_run { "would " } else { "" };
    if r.dry_run || verbose > 0 {
        for f in &r.forgotten {
            writeln!(out, "{would}forget snapshot {} ({})", f.id, f.time)?;
        }
        for x in r.removals.iter().filter(|x| x.action != "forget") {
            writeln!(out, "{would}{} {} ({})", x.action, x.path, h(x.bytes))?;
        }
    }
    if r.policy_set && verbose > 0 {
        for k in &r.kept {
            writeln!(out, "keep {} ({}): {}", k.id, k.time, k.reasons.join(", "))?;
        }
    }
    for l in &r.locked {
        writeln!(
            out,
            "kept {}: its object lock holds it until {}",
            l.path, l.until
        )?;
    }
    if r.unindexed_packs > 0 {
        writeln!(
            out,
            "left {} pack(s) ({}) no index lists (a push still uploading, or a killed one's): the next push indexes them",
            r.unindexed_packs,
            h(r.unindexed_bytes)
        )?;
    }
    writeln!(
        out,
        "{}: {} snapshot(s) kept, {} forgotten; {} pack(s) ({}) of which {} used",
        r.remote,
        r.kept.len(),
        r.forgotten.len(),
        r.packs,
        h(r.pack_bytes),
        h(r.used_bytes)
    )?;
    writeln!(
        out,
        "{}{} pack(s) no kept snapshot needs, {} repacked ({} blob(s) copied into {} new pack(s), {}); unused left {} (limit {}% of used)",
        if r.dry_run { "would drop " } else { "dropped " },
        r.packs_dropped,
        r.packs_repacked,
        r.blobs_repacked,
        r.packs_written,
        h(r.bytes_written),
        h(r.unused_bytes_after),
        r.max_unused_percent
    )?;
    writeln!(
        out,
        "{}{} now",
        if r.dry_run { "would free " } else { "freed " },
        h(r.bytes_freed)
    )?;
    if r.pending_packs > 0 {
        writeln!(
            out,
            "{} pack(s) ({}) {} out of the index: a prune --remote {} minute(s) from now or later deletes them",
            r.pending_packs,
            h(r.pending_bytes),
            if r.dry_run { "would be taken" } else { "taken" },
            r.grace_minutes
        )?;
    }
    if r.pending_waiting > 0 {
        writeln!(
            out,
            "{} pack(s) ({}) of earlier prunes wait for the grace period",
            r.pending_waiting,
            h(r.pending_waiting_bytes)
        )?;
    }
    if r.packs_restored > 0 {
        writeln!(
            out,
            "{} pack(s) an earlier prune took out are needed by a snapshot pushed meanwhile: indexed again",
            r.packs_restored
        )?;
    }
    Ok(())
}

pub(super) fn remote_stats(
    out: &mut impl Write,
    s: &crate::remote::repo::RemoteStats,
) -> io::Result<()> {
    writeln!(out, "remote:           {}", s.remote)?;
    writeln!(out, "  snapshots:      {}", s.snapshots)?;
    writeln!(
        out,
        "  data packs:     {} ({})",
        s.data_packs,
        human_bytes(s.data_bytes)
    )?;
    writeln!(
        out,
        "  tree packs:     {} ({})",
        s.tree_packs,
        human_bytes(s.tree_bytes)
    )?;
    writeln!(out, "  blobs:          {}", s.blobs)?;
    writeln!(out, "  index files:    {}", s.index_files)?;
    if let Some(l) = s.object_lock {
        writeln!(out, "  object lock:    {} days, {}", l.days, l.mode)?;
    }
    if s.unindexed_packs > 0 {
        writeln!(
            out,
            "  unindexed packs: {} (the next push indexes them)",
            s.unindexed_packs
        )?;
    }
    if s.pending_packs > 0 {
        writeln!(
            out,
            "  pending packs:  {} ({}; deleted by a prune --remote after the grace period)",
            s.pending_packs,
            human_bytes(s.pending_bytes)
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A list written row by row is byte for byte the array `json`
    /// prints for the whole list: empty, one row, rows with nested
    /// objects, empty and filled arrays, strings holding escaped newlines.
    #[test]
    fn a_streamed_list_is_the_whole_list_as_json() -> anyhow::Result<()> {
        let row = |i: u64| {
            serde_json::json!({
                "path": format!("d/f{i}\nx"),
                "size": i,
                "xattrs": if i.is_multiple_of(2) { serde_json::json!([]) } else { serde_json::json!([{"name": "user.a", "value": "b"}]) },
                "link": null,
            })
        };
        for n in [0, 1, 3] {
            let rows: Vec<serde_json::Value> = (0..n).map(row).collect();
            let mut whole = Vec::new();
            json(&mut whole, &rows)?;
            let mut streamed = Vec::new();
            let mut w = ListWriter::new(&mut streamed, true);
            for r in &rows {
                w.row(r, |_| Ok(()))?;
            }
            w.finish()?;
            assert_eq!(
                String::from_utf8_lossy(&streamed),
                String::from_utf8_lossy(&whole),
                "{n} rows"
            );
        }
        Ok(())
    }

    #[test]
    fn thousands_are_separated_by_commas() {
        for (n, want) in [
            (0, "0"),
            (7, "7"),
            (999, "999"),
            (1_000, "1,000"),
            (5_000, "5,000"),
            (20_011, "20,011"),
            (999_999, "999,999"),
            (1_000_000, "1,000,000"),
            (u64::MAX, "18,446,744,073,709,551,615"),
        ] {
            assert_eq!(thousands(n), want, "{n}");
        }
    }

    #[test]
    fn exact_bytes_stand_beside_the_human_figure() {
        for (n, want) in [
            (0, "0 B (0 bytes)"),
            (100, "100 B (100 bytes)"),
            (5_000, "4.9 KiB (5,000 bytes)"),
            (1_048_576, "1.0 MiB (1,048,576 bytes)"),
        ] {
            assert_eq!(bytes_exact(n), want, "{n}");
        }
    }

    #[test]
    fn mode_strings_read_like_ls() {
        for (kind, mode, want) in [
            ('d', 0o755, "drwxr-xr-x"),
            ('-', 0o644, "-rw-r--r--"),
            ('l', 0o777, "lrwxrwxrwx"),
            ('-', 0o100600, "-rw-------"),
            ('-', 0, "----------"),
        ] {
            assert_eq!(mode_string(kind, mode), want, "{mode:o}");
        }
    }

    #[test]
    fn dupes_give_exact_bytes_per_set_and_in_total() {
        use crate::dupes::{DupFile, DupSet, DupesReport};
        let file = |path: &str, inode| DupFile {
            path: path.into(),
            inode,
        };
        let r = DupesReport {
            files_scanned: 9,
            bytes_scanned: 123_456,
            files_partially_hashed: 5,
            files_fully_hashed: 4,
            sets: vec![DupSet {
                size: 5_000,
                hash: "0123456789abcdef0123".into(),
                copies: 2,
                wasted: 5_000,
                files: vec![file("a", 1), file("a.link", 1), file("b", 2)],
            }],
            duplicate_files: 2,
            wasted: 5_000,
            hardlinked: vec![vec!["h1".into(), "h2".into()]],
            problems: vec![("p".into(), "denied".into())],
        };
        let render = |quiet| {
            let mut buf = Vec::new();
            dupes(&mut buf, &r, quiet).expect("to a buffer");
            String::from_utf8_lossy(&buf).into_owned()
        };
        let body = "2 copies of 4.9 KiB, 4.9 KiB (5,000 bytes) wasted, 0123456789abcdef:\n  \
                    a\n  a.link  (hardlink of a)\n  b\n\
                    already hardlinked (no waste): h1, h2\nerror: p: denied\n";
        assert_eq!(render(true), body);
        assert_eq!(
            render(false),
            format!(
                "{body}1 duplicate sets, 2 files, 4.9 KiB (5,000 bytes) wasted (9 files, 120.6 KiB scanned; \
                 5 compared by their first and last blocks, 4 hashed in full)\n"
            )
        );
    }

    #[test]
    fn json_ends_with_one_newline() {
        let mut buf = Vec::new();
        json(&mut buf, &serde_json::json!({"a": 1})).expect("to a buffer");
        assert_eq!(String::from_utf8_lossy(&buf), "{\n  \"a\": 1\n}\n");
    }
}
