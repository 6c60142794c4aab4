//! Streaming runs against the whole-listing planner: after random changes
//! to a source, each backup's new snapshot (listing, archive, counts) must
//! be exactly what `plan::plan` makes of the previous snapshot and a fresh
//! scan of the source. The streaming run shares only the per-path step with
//! `plan::plan`; the merge, the DUPLICATE look-ahead, the tree building, the
//! stat cache and the retention of untouched archive paths are its own.

use proptest::prelude::*;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::path::Path;
use trove::backup::{self, BackupOptions};
use trove::config::{BackupOverrides, BackupSettings};
use trove::id::HashAlgo;
use trove::local::LocalRepo;
use trove::model::{Entry, Item, Leaf};
use trove::plan::{self, PlanOptions};
use trove::progress::NoProgress;
use trove::repo::snapshot;
use trove::scan::{self, ScanOptions};

/// One change to the source tree.
#[derive(Clone, Debug)]
enum Op {
    /// Write file `name` in folder `dir` with one of a few contents (so
    /// duplicates and returns to an old content happen).
    Write(u8, u8, u8),
    Remove(u8, u8),
    /// Turn folder `dir` into a file, or back.
    Flip(u8),
    Link(u8, u8),
}

const DIRS: [&str; 4] = ["", "a", "a/b", "c"];

fn path_of(src: &Path, d: u8, n: u8) -> std::path::PathBuf {
    src.join(DIRS[d as usize % 4]).join(format!("f{}", n % 3))
}

fn apply(src: &Path, op: &Op) {
    // Make the folders above `p`, replacing whatever is in their way.
    let ensure = |p: &Path| {
        let Ok(rel) = p.strip_prefix(src) else { return };
        let mut cur = src.to_path_buf();
        for c in rel.parent().into_iter().flat_map(Path::components) {
            cur.push(c);
            if !cur.is_dir() {
                let _ = fs::remove_file(&cur);
                let _ = fs::create_dir(&cur);
            }
        }
    };
    match *op {
        Op::Write(d, n, c) => {
            let p = path_of(src, d, n);
            ensure(&p);
            if p.is_dir() {
                let _ = fs::remove_dir_all(&p);
            }
            let body = match c % 4 {
                0 => Vec::new(),
                k => format!("content {k}\n").repeat(k as usize).into_bytes(),
            };
            let _ = fs::remove_file(&p);
            let _ = fs::write(&p, body);
        }
        Op::Remove(d, n) => {
            let _ = fs::remove_file(path_of(src, d, n));
        }
        Op::Flip(d) => {
            let p = src.join(DIRS[1 + d as usize % 3]);
            if p.is_dir() {
                let _ = fs::remove_dir_all(&p);
                let _ = fs::write(&p, b"was a folder\n");
            } else {
                let _ = fs::remove_file(&p);
                let _ = fs::create_dir_all(&p);
            }
        }
        Op::Link(d, n) => {
            let p = path_of(src, d, n);
            ensure(&p);
            if p.is_dir() {
                let _ = fs::remove_dir_all(&p);
            }
            let _ = fs::remove_file(&p);
            let _ = symlink(format!("target-{n}"), &p);
        }
    }
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..4, 0u8..5, 0u8..4).prop_map(|(d, n, c)| Op::Write(d, n, c)),
        2 => (0u8..4, 0u8..5).prop_map(|(d, n)| Op::Remove(d, n)),
        1 => (0u8..3).prop_map(Op::Flip),
        1 => (0u8..4, 0u8..5).prop_map(|(d, n)| Op::Link(d, n)),
    ]
}

/// The source as a listing, every file hashed: what a whole-listing run
/// would plan from.
fn scanned(src: &Path) -> Vec<Entry> {
    let out = scan::scan_source(src, b"", &ScanOptions::default()).expect("scan");
    assert!(out.issues.is_empty(), "{:?}", out.issues);
    out.entries
        .into_iter()
        .map(|mut e| {
            if let Item::Leaf(Leaf::File { id, .. }) = &mut e.item {
                let fs = src.join(OsStr::from_bytes(&e.path));
                *id = trove::id::ObjectId(
                    trove::hash::hash_file(HashAlgo::Blake3, &fs).expect("hash"),
                );
            }
            e
        })
        .collect()
}

/// The snapshot paths an op touches (what a watch run's events name).
fn touched(op: &Op) -> Vec<Vec<u8>> {
    let rel = |d: u8, n: u8| {
        let dir = DIRS[d as usize % 4];
        let name = format!("f{}", n % 3);
        if dir.is_empty() {
            name.into_bytes()
        } else {
            format!("{dir}/{name}").into_bytes()
        }
    };
    match *op {
        Op::Write(d, n, _) | Op::Remove(d, n) | Op::Link(d, n) => vec![rel(d, n)],
        Op::Flip(d) => vec![DIRS[1 + d as usize % 3].as_bytes().to_vec()],
    }
}

fn check_history(ops: Vec<Vec<Op>>, max_versions: u64) {
    check_runs(ops, max_versions, false)
}

/// Backup options for `src` into `dest`, keeping `max_versions`.
fn options(src: &Path, dest: &Path, max_versions: u64) -> BackupOptions {
    let mut settings = BackupSettings::resolve(
        BackupOverrides {
            sources: vec![src.to_path_buf()],
            backup_root: Some(dest.to_path_buf()),
            ..BackupOverrides::default()
        },
        None,
    )
    .expect("settings");
    settings.max_versions = max_versions;
    BackupOptions {
        settings,
        rehash: false,
        dry_run: false,
        always_snapshot: true,
        allow_damaged_latest: false,
        // Other tests of this binary spawn processes: between fork and
        // exec a child holds copies of every descriptor, the lock's
        // included, so a run right after the previous one may find the
        // lock still held for a moment.
        wait: true,
        scope: None,
    }
}

/// `scoped`: every run after the first is a watch run that looks only at
/// the paths the batch's changes touched.
fn check_runs(ops: Vec<Vec<Op>>, max_versions: u64, scoped: bool) {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    let dest = dir.path().join("dest");
    fs::create_dir_all(&src).expect("mkdir");
    let mut opts = options(&src, &dest, max_versions);
    for batch in ops {
        for op in &batch {
            apply(&src, op);
        }
        let has_prev = LocalRepo::open(&dest)
            .ok()
            .and_then(|r| snapshot::latest(&r).ok().flatten().map(|s| (r, s)))
            .is_some_and(|(r, s)| {
                !trove::repo::snapshot::load_snapshot(&r, &s.record)
                    .expect("previous snapshot")
                    .0
                    .is_empty()
            });
        if scoped && has_prev {
            opts.scope = Some(batch.iter().flat_map(touched).collect());
        }
        run_and_check(&opts, &src, &dest, &format!("{batch:?}"));
    }
}

/// One backup, checked against what the whole-listing planner makes of
/// the previous snapshot and a fresh scan of the source.
fn run_and_check(
    opts: &BackupOptions,
    src: &Path,
    dest: &Path,
    what: &str,
) -> trove::backup::BackupReport {
    let max_versions = opts.settings.max_versions;
    let (prev, prev_archive) = match LocalRepo::open(dest)
        .ok()
        .and_then(|r| snapshot::latest(&r).ok().flatten().map(|s| (r, s)))
    {
        Some((r, s)) => {
            trove::repo::snapshot::load_snapshot(&r, &s.record).expect("previous snapshot")
        }
        None => (Vec::new(), Vec::new()),
    };
    let cur = scanned(src);
    let report = backup::run(opts, &NoProgress).expect("backup");
    let repo = LocalRepo::open(dest).expect("repo");
    let latest = snapshot::latest(&repo).expect("list").expect("a snapshot");
    let (entries, archive) =
        trove::repo::snapshot::load_snapshot(&repo, &latest.record).expect("load");
    let want = plan::plan(
        &prev,
        &prev_archive,
        cur,
        &PlanOptions {
            max_versions,
            deleted_max_age_ns: opts
                .settings
                .deleted_max_age_days
                .map(trove::retention::days_ns),
            now_ns: latest.record.time_ns,
        },
    );
    assert_eq!(entries, want.entries, "listing after {what}");
    assert_eq!(archive, want.archive, "archive after {what}");
    let s = &latest.record.summary;
    let c = &want.counts;
    assert_eq!(
        (s.files, s.dirs, s.symlinks, s.bytes),
        (c.files, c.dirs, c.symlinks, c.bytes),
        "totals after {what}"
    );
    assert_eq!(
        (
            s.backed_up,
            s.duplicates,
            s.modified,
            s.unchanged,
            s.deleted
        ),
        (
            c.backed_up,
            c.duplicates,
            c.modified,
            c.unchanged,
            c.deleted
        ),
        "decisions after {what}"
    );
    assert_eq!(
        report.retention_removed, c.retention_removed,
        "after {what}"
    );
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    // The owners a full listing has, exactly (not the previous ones kept).
    let mut uids: Vec<u32> = want
        .entries
        .iter()
        .map(|e| match &e.item {
            Item::Leaf(l) => l.meta().uid,
            Item::Dir(m) => m.uid,
        })
        .collect();
    uids.sort_unstable();
    uids.dedup();
    let got: Vec<u32> = latest.record.owners.users.iter().map(|u| u.0).collect();
    if opts.scope.is_none() {
        assert_eq!(got, uids, "owners after {what}");
    }
    report
}

/// Past the stat cache's racy window: the files written so far get
/// records the next run can vouch with.
fn settle() {
    std::thread::sleep(std::time::Duration::from_millis(
        (trove::local::cache::RACY_WINDOW_NS / 1_000_000) as u64 + 100,
    ));
}

/// Ordinary runs carry a folder whole when every record below it would be
/// written again exactly (same entries, every file vouched for by the stat
/// cache): its tree and its cache records are the previous ones, its
/// entries are counted without being planned again. The snapshots must be
/// the whole-listing planner's all the same: a newcomer duplicating a file
/// inside a carried folder is a DUPLICATE, lowering `max_versions` trims a
/// history inside a carried folder, and the carried cache records still
/// vouch for every file on the next run.
#[test]
fn folders_carried_whole_give_the_whole_listing_planners_snapshots() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    let dest = dir.path().join("dest");
    for (p, body) in [
        ("t", "top"),
        ("a/f1", "one"),
        ("a/b/f2", "two"),
        ("a/b/v", "v1"),
        ("a/b/c/f3", "three"),
        ("d/f4", "four"),
        ("d/e/f5", "five"),
        ("d/e/g/f6", "six"),
    ] {
        let p = src.join(p);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(&p, body).expect("write");
    }
    fs::create_dir_all(src.join("empty")).expect("mkdir");
    symlink("f4", src.join("d/link")).expect("symlink");
    let mut opts = options(&src, &dest, 3);
    settle();
    let r = run_and_check(&opts, &src, &dest, "the first run");
    assert_eq!((r.carried_folders, r.files_read), (0, 8));
    let r = run_and_check(&opts, &src, &dest, "a run with no change");
    assert_eq!(r.files_read, 0);
    // The top folder holds everything: every folder below it is carried.
    assert!(r.carried_folders >= 3, "{}", r.carried_folders);

    // A modified file (a version), and a newcomer with the content of a
    // file in a folder that is carried (d/e).
    fs::write(src.join("a/b/v"), "v2").expect("write");
    fs::write(src.join("a/new"), "five").expect("write");
    let r = run_and_check(&opts, &src, &dest, "a version and a duplicate");
    assert_eq!((r.modified, r.duplicates), (1, 1));
    assert!(r.carried_folders >= 2, "{}", r.carried_folders);
    fs::write(src.join("a/b/v"), "v3").expect("write");
    run_and_check(&opts, &src, &dest, "a second version");
    // Past the racy window, a run records a/b/v's stat; the next one
    // carries a/b whole while a lower limit trims its history.
    settle();
    run_and_check(&opts, &src, &dest, "a run recording the last stat");
    opts.settings.max_versions = 1;
    let r = run_and_check(&opts, &src, &dest, "a lower max_versions");
    assert_eq!(r.retention_removed, 1);
    assert!(r.carried_folders >= 3, "{}", r.carried_folders);
    assert_eq!(r.files_read, 0);
    // The carried records line up with their files: nothing is read.
    let r = run_and_check(&opts, &src, &dest, "a last run with no change");
    assert_eq!((r.files_read, r.unchanged), (0, 9));

    // While retention cannot change a history, a carried folder's archive
    // folder is carried unread too (the archive's bounds say so): a
    // deleted file's history in a carried folder stays as it is through
    // runs elsewhere, then expires as soon as an age limit reaches it.
    fs::remove_file(src.join("d/e/g/f6")).expect("remove");
    let r = run_and_check(&opts, &src, &dest, "a deletion");
    assert_eq!(r.deleted, 1);
    fs::write(src.join("t"), "top 2").expect("write");
    settle();
    let r = run_and_check(&opts, &src, &dest, "a change beside the deletion");
    assert_eq!((r.modified, r.retention_removed), (1, 0));
    let r = run_and_check(&opts, &src, &dest, "a run with no change after it");
    assert_eq!((r.files_read, r.retention_removed), (0, 0));
    assert!(r.carried_folders >= 3, "{}", r.carried_folders);
    opts.settings.deleted_max_age_days = Some(0);
    fs::write(src.join("a/f1"), "one 2").expect("write");
    let r = run_and_check(&opts, &src, &dest, "an age limit the deletion is past");
    assert_eq!((r.modified, r.retention_removed), (1, 1));
    assert!(r.carried_folders >= 1, "{}", r.carried_folders);
    // The bounds are recorded again without the deleted entry: the next
    // run carries everything, and the planner agrees.
    let r = run_and_check(&opts, &src, &dest, "a last run after the expiry");
    assert_eq!(r.retention_removed, 0);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn streaming_runs_match_the_whole_listing_planner(
        ops in prop::collection::vec(prop::collection::vec(arb_op(), 0..10), 1..8),
        max_versions in 1u64..3,
    ) {
        check_history(ops, max_versions);
    }

    #[test]
    fn watch_runs_match_the_whole_listing_planner(
        ops in prop::collection::vec(prop::collection::vec(arb_op(), 0..10), 1..8),
        max_versions in 1u64..3,
    ) {
        check_runs(ops, max_versions, true);
    }
}

/// A folder with more entries than a walk holds back for carrying is
/// spilled record by record as before (and never carried), while a narrow
/// folder beside it still is: the snapshots stay the planner's.
#[test]
fn a_folder_wider_than_what_is_held_is_spilled_and_still_right() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    let dest = dir.path().join("dest");
    let wide = src.join("wide");
    fs::create_dir_all(&wide).expect("mkdir");
    fs::create_dir_all(src.join("narrow")).expect("mkdir");
    // More than the 16,384 records held at most.
    for i in 0..16_500 {
        fs::write(wide.join(format!("f{i:05}")), format!("{}", i % 7)).expect("write");
    }
    fs::write(src.join("narrow/x"), "x1").expect("write");
    let opts = options(&src, &dest, 3);
    settle();
    run_and_check(&opts, &src, &dest, "the first run");
    let r = run_and_check(&opts, &src, &dest, "a run with no change");
    assert_eq!((r.files_read, r.carried_folders), (0, 1));
    fs::write(src.join("wide/f00003"), "changed").expect("write");
    let r = run_and_check(&opts, &src, &dest, "a change in the wide folder");
    assert_eq!((r.files_read, r.modified, r.carried_folders), (1, 1, 1));
}
