//! The audit trail's vocabulary (SPEC §4): how a run's decisions become
//! log lines (`BACKUP: source/a → backup/a`, `ARCHIVE`, `RETENTION
//! delete` …), and the `Layout` that names source and browsable paths
//! in them. Writes through `tracing` only; reads and changes nothing.

use crate::browsable::render::{self, Escapes};
use crate::pathbytes::{self, display as show};
use crate::plan::{self, Action, Plan};
use crate::repo::snapshot::SnapshotRecord;
use std::path::{Path, PathBuf};

pub(crate) fn base_name(p: &Path) -> Vec<u8> {
    match p.file_name() {
        Some(n) => pathbytes::os_bytes(n).to_vec(),
        None => b"root".to_vec(),
    }
}

/// Where the sources are, and how snapshot paths map back to them.
pub(crate) struct Layout {
    pub(crate) sources: Vec<PathBuf>,
    /// Folder of each source in the snapshot (empty with one source).
    pub(crate) names: Vec<Vec<u8>>,
    root_base: String,
    /// The snapshot path a `backup --stdin` run stores, and how log lines
    /// name where its content came from (it has no source file).
    stdin: Option<(Vec<u8>, String)>,
}

impl Layout {
    /// The layout of a run over `sources` (named `names` in the snapshot)
    /// into the backup root `root`.
    pub(crate) fn new(root: &Path, sources: Vec<PathBuf>, names: Vec<Vec<u8>>) -> Layout {
        Layout {
            sources,
            names,
            root_base: show(&base_name(root)),
            stdin: None,
        }
    }

    /// The layout a snapshot was taken with (for runs that do not scan).
    pub(crate) fn of_record(root: &Path, rec: &SnapshotRecord) -> Layout {
        Layout {
            sources: rec
                .sources
                .iter()
                .map(|s| PathBuf::from(pathbytes::from_bytes(s.path.clone())))
                .collect(),
            names: rec.sources.iter().map(|s| s.name.clone()).collect(),
            root_base: show(&base_name(root)),
            stdin: None,
        }
    }

    /// The same layout, with snapshot path `path` named `label` in log
    /// lines (a `backup --stdin` run: `stdin`, or the command).
    pub(crate) fn with_stdin(mut self, path: &[u8], label: String) -> Layout {
        self.stdin = Some((path.to_vec(), label));
        self
    }

    pub(crate) fn single(&self) -> bool {
        self.sources.len() == 1
    }

    /// The file on disk behind a snapshot path.
    pub(crate) fn fs_path(&self, path: &[u8]) -> PathBuf {
        if self.single() {
            return pathbytes::to_fs(&self.sources[0], path);
        }
        let first = path.iter().position(|&c| c == b'/').unwrap_or(path.len());
        let rest = path.get(first + 1..).unwrap_or(b"");
        match self
            .names
            .iter()
            .position(|n| n.as_slice() == &path[..first])
        {
            Some(i) => pathbytes::to_fs(&self.sources[i], rest),
            None => pathbytes::to_fs(Path::new("/nonexistent"), path),
        }
    }

    /// How log lines name a source path: `source/one.txt` (the source's
    /// basename) with one source; with several, the snapshot path, which
    /// starts with the source's folder name and is unique even when two
    /// sources share a basename.
    pub(crate) fn source_for_log(&self, path: &[u8]) -> String {
        if let Some((p, label)) = &self.stdin {
            if p.as_slice() == path {
                return label.clone();
            }
        }
        if self.single() {
            return show(&pathbytes::join(&base_name(&self.sources[0]), path));
        }
        show(path)
    }

    /// How log lines name a path of the browsable tree: `backup/one.txt`.
    pub(crate) fn browsable_for_log(&self, browse_path: &[u8]) -> String {
        format!("{}/{}", self.root_base, show(browse_path))
    }
}

/// Write the audit lines of a plan (SPEC §4) through tracing, in path order.
/// `old_esc`: the reserved-name escapes of the previous snapshot.
pub(crate) fn log_plan(plan: &Plan, old_esc: &Escapes, d: &Layout, dry: bool) {
    let new_esc = Escapes::for_entries(&plan.entries);
    log_reserved(&new_esc, d);
    let decision = |a: &Action| match a {
        Action::Backup { .. } => plan::Decision::Backup,
        Action::Duplicate { .. } => plan::Decision::Duplicate,
        Action::Modified {
            version, was_dup, ..
        } => plan::Decision::Modified {
            version: *version,
            was_dup: *was_dup,
        },
        Action::Deleted {
            displaced, was_dup, ..
        } => plan::Decision::Deleted {
            displaced: *displaced,
            was_dup: *was_dup,
        },
        Action::RetainDropVersion { version, .. } => {
            plan::Decision::RetainDropVersion { version: *version }
        }
        Action::RetainDropDeleted { .. } => plan::Decision::RetainDropDeleted,
    };
    let line = |p: &[u8], a: Option<&Action>| {
        log_decision(d, dry, old_esc, &new_esc, p, a.map(decision).as_ref());
    };
    if tracing::enabled!(tracing::Level::DEBUG) {
        // Every decision, SKIPs included, interleaved in path order.
        plan.for_each_decision(line);
    } else {
        for a in &plan.actions {
            line(a.path(&plan.entries), Some(a));
        }
    }
}

/// The audit lines naming top-level entries shown under another name.
pub(crate) fn log_reserved(new_esc: &Escapes, d: &Layout) {
    for (name, shown) in new_esc.escaped() {
        tracing::info!(
            "RESERVED NAME: {} is shown as {} (the name is reserved for trove's own folders)",
            d.source_for_log(name),
            d.browsable_for_log(shown)
        );
    }
}

/// The audit lines of one decision (`None`: SKIP, a debug line).
pub(crate) fn log_decision(
    d: &Layout,
    dry: bool,
    old_esc: &Escapes,
    new_esc: &Escapes,
    p: &[u8],
    a: Option<&plan::Decision>,
) {
    use plan::Decision;
    let pre = if dry { "WOULD " } else { "" };
    let Some(a) = a else {
        tracing::debug!("PLANNER → SKIP: {}", d.source_for_log(p));
        tracing::debug!("SKIP: {}", d.source_for_log(p));
        return;
    };
    match a {
        Decision::Backup => {
            tracing::debug!("PLANNER → BACKUP: {}", d.source_for_log(p));
            tracing::info!(
                "{pre}BACKUP: {} → {}",
                d.source_for_log(p),
                d.browsable_for_log(&new_esc.top_path(p))
            );
        }
        Decision::Duplicate => {
            tracing::debug!("PLANNER → DUPLICATE: {}", d.source_for_log(p));
            tracing::info!(
                "{pre}DUPLICATE: {} → {}",
                d.source_for_log(p),
                d.browsable_for_log(&render::current_path(new_esc, p, true))
            );
        }
        Decision::Modified { version, was_dup } => {
            tracing::debug!("PLANNER → MODIFIED: {}", d.source_for_log(p));
            let old = render::current_path(old_esc, p, *was_dup);
            tracing::info!(
                "{pre}ARCHIVE: {} → {}",
                d.browsable_for_log(&old),
                show(&render::version_path(p, *version))
            );
            tracing::info!(
                "{pre}UPDATED: {} → {}",
                d.source_for_log(p),
                d.browsable_for_log(&new_esc.top_path(p))
            );
        }
        Decision::Deleted { displaced, was_dup } => {
            tracing::debug!("PLANNER → DELETED: {}", d.source_for_log(p));
            if let Some(n) = displaced {
                tracing::info!(
                    "{pre}ARCHIVE: {} → {}",
                    d.browsable_for_log(&render::deleted_path(p)),
                    show(&render::version_path(p, *n))
                );
            }
            let old = render::current_path(old_esc, p, *was_dup);
            tracing::info!(
                "{pre}ARCHIVE DELETE: {} → {}",
                d.browsable_for_log(&old),
                d.browsable_for_log(&render::deleted_path(p))
            );
            tracing::info!("{pre}STATE REMOVE: {}", d.source_for_log(p));
        }
        Decision::RetainDropVersion { version } => {
            tracing::info!(
                "{pre}RETENTION delete: {}",
                show(&render::version_path(p, *version))
            );
        }
        Decision::RetainDropDeleted => {
            tracing::info!("{pre}RETENTION delete: {}", show(&render::deleted_path(p)));
        }
    }
}
