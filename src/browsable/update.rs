//! Moving the browsable tree from the snapshot it shows to the next: the
//! differences between two renderings (`TreeDiff`), the catch-up after a
//! crash left it behind ([`catch_up_browsable`]), and the end of every
//! update (`finish_tree_update`: the marker is written only when every
//! entry is in place). Knows the local repository (the tree hardlinks its
//! objects); never writes into the store.

use crate::browsable::apply::{Failures, Materializer, Stats};
use crate::browsable::render::{self, Escapes};
use crate::error::Result;
use crate::id::SnapshotId;
use crate::local::LocalRepo;
use crate::model::{Entry, History};
use crate::pathbytes::{self, display as show};
use crate::repo::snapshot::{self, Snapshot};

/// The outcome of updating the browsable tree.
pub struct TreeUpdate {
    pub copies: u64,
    /// Entries that could not be placed (path in the tree, reason): the
    /// first in path order, and how many.
    pub failures: Failures,
}

/// What must change in the browsable tree to go from showing one
/// snapshot to showing the next: usually only the differing entries
/// (`partial`), else both whole renderings.
pub(crate) struct TreeDiff {
    old: Vec<render::BrowsableEntry>,
    new: Vec<render::BrowsableEntry>,
    partial: bool,
}

impl TreeDiff {
    pub(crate) fn between(
        old: (&[Entry], &[(Vec<u8>, History)]),
        new: (&[Entry], &[(Vec<u8>, History)]),
    ) -> TreeDiff {
        match render::render_diff(old, new) {
            Some((o, n)) => TreeDiff {
                old: o,
                new: n,
                partial: true,
            },
            None => TreeDiff {
                old: render::render(old.0, old.1),
                new: render::render(new.0, new.1),
                partial: false,
            },
        }
    }

    /// Apply it; `new_entries` is the listing the tree is to show.
    pub(crate) fn apply(&self, m: &Materializer<'_>, new_entries: &[Entry]) -> Result<()> {
        if self.partial {
            let esc = Escapes::for_entries(new_entries);
            m.apply(&self.old, &self.new, &|p: &[u8]| {
                render::wants_dir(new_entries, &esc, p)
            })
        } else {
            let dirs = Materializer::dirs_of(&self.new);
            m.apply(&self.old, &self.new, &|p: &[u8]| dirs.contains(p))
        }
    }
}

/// Report entries the browsable tree lacks, and record the snapshot it
/// shows only when it is complete (so the next run tries the rest again).
///
/// When the update met something trove did not create where a folder
/// belongs (a symlink or a file there, moved to quarantine), entries no
/// change named may be missing below it, so the whole tree is checked
/// against the snapshot first. If the tree is still incomplete after that,
/// the marker is cleared and the next command checks all of it again;
/// otherwise the marker keeps the snapshot the tree showed before and the
/// next run retries the same differences.
pub(crate) fn finish_tree_update(
    repo: &LocalRepo,
    m: &Materializer<'_>,
    shows: &SnapshotId,
) -> Result<TreeUpdate> {
    if m.needs_full_check() {
        tracing::warn!(
            "the browsable tree held entries trove did not create where it keeps folders: checking all of it against snapshot {}",
            shows.short()
        );
        // The complete pass retries every entry: its failures are the ones
        // that count.
        drop(m.take_failures());
        let full = (|| -> Result<()> {
            let rec = snapshot::read(repo, shows)?;
            let (entries, archive) = crate::repo::snapshot::load_snapshot(repo, &rec)?;
            for p in m.reconcile(&render::render(&entries, &archive), false)? {
                tracing::warn!(
                    "{} is not part of the backup (left in place)",
                    pathbytes::display_path(&pathbytes::to_fs(&repo.root, &p))
                );
            }
            Ok(())
        })();
        if let Err(e) = full {
            m.record_error(b"", e);
        }
    }
    let mut failures = m.take_failures();
    const SHOWN: usize = 20;
    for (p, msg) in failures.first.iter().take(SHOWN) {
        tracing::warn!("browsable tree: {}: {msg}", show_rel(p));
    }
    if failures.total > SHOWN as u64 {
        tracing::warn!(
            "browsable tree: {} more entries could not be placed (the snapshot has them; `trove materialize` or the next backup puts them in place)",
            failures.total - SHOWN as u64
        );
    }
    let recorded = if failures.is_empty() {
        repo.write_marker(shows)
    } else if m.met_foreign() {
        repo.clear_marker()
    } else {
        Ok(())
    };
    if let Err(e) = recorded {
        tracing::warn!("browsable tree: {e}");
        failures.add(b"", e.to_string());
    }
    Ok(TreeUpdate {
        copies: Stats::get(&m.stats.copied),
        failures,
    })
}

/// A path of the browsable tree for a message (`.` for the root itself).
fn show_rel(p: &[u8]) -> String {
    if p.is_empty() {
        ".".to_string()
    } else {
        show(p)
    }
}

/// Make the browsable tree at the backup root show `latest`, whatever a
/// crash left behind. Free when it already does.
pub fn catch_up_browsable(repo: &LocalRepo, latest: &Snapshot) -> Result<TreeUpdate> {
    let m = Materializer::new(repo, &repo.root);
    let marker = repo.read_marker();
    if marker == Some(latest.id) {
        return Ok(TreeUpdate {
            copies: 0,
            failures: Failures::default(),
        });
    }
    let (entries, archive) = crate::repo::snapshot::load_snapshot(repo, &latest.record)?;
    let (entries, archive) = (&entries[..], &archive[..]);
    let old_rec = marker.and_then(|id| snapshot::read(repo, &id).ok());
    match old_rec.and_then(|r| crate::repo::snapshot::load_snapshot(repo, &r).ok()) {
        Some((oe, oa)) => {
            tracing::info!(
                "browsable tree is behind snapshot {}: updating it",
                latest.id.short()
            );
            if let Err(e) = TreeDiff::between((&oe, &oa), (entries, archive)).apply(&m, entries) {
                m.record_error(b"", e);
            }
        }
        None => {
            tracing::info!(
                "browsable tree state unknown: checking it against snapshot {}",
                latest.id.short()
            );
            match m.reconcile(&render::render(entries, archive), false) {
                Ok(extra) => {
                    for p in extra {
                        tracing::warn!(
                            "{} is not part of the backup (left in place)",
                            pathbytes::display_path(&pathbytes::to_fs(&repo.root, &p))
                        );
                    }
                }
                // Reported with the entries that failed: the tree is
                // derived data, and a backup can still run.
                Err(e) => m.record_error(b"", e),
            }
        }
    }
    finish_tree_update(repo, &m, &latest.id)
}
