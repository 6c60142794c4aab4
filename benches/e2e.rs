//! End-to-end benchmarks through the library, on generated datasets
//! (`benches/common`): first backup, no-change backup, backup after a 1%
//! mutation, restore, verify, materialize, prune (dry run and a real one
//! forgetting three of four snapshots) and dupes, each with
//! `Throughput::Bytes` of the tree. Sizes: `TROVE_BENCH_FILES` (default
//! 2,000) and `TROVE_BENCH_BYTES` (default 16 MiB). Run:
//! `cargo bench --bench e2e` (about five minutes as shipped).

mod common;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::path::{Path, PathBuf};
use std::time::Duration;
use trove::backup::{self, BackupOptions};
use trove::config::{BackupOverrides, BackupSettings};
use trove::progress::NoProgress;

fn opts(src: &Path, dest: &Path) -> BackupOptions {
    let settings = BackupSettings::resolve(
        BackupOverrides {
            sources: vec![src.to_path_buf()],
            backup_root: Some(dest.to_path_buf()),
            ..BackupOverrides::default()
        },
        None,
    )
    .expect("settings for a generated tree");
    BackupOptions {
        settings,
        rehash: false,
        dry_run: false,
        always_snapshot: false,
        allow_damaged_latest: false,
        wait: false,
        scope: None,
    }
}

struct Data {
    _dir: tempfile::TempDir,
    src: PathBuf,
    bytes: u64,
}

fn dataset() -> Data {
    let dir = tempfile::tempdir().expect("temp dir");
    let src = dir.path().join("src");
    let (files, bytes) = common::sizes();
    common::small_files(&src, files, bytes, 7).expect("generate the tree");
    // Past trove's 2 s racily-clean window, so the stat cache vouches.
    std::thread::sleep(Duration::from_millis(2100));
    Data {
        _dir: dir,
        src,
        bytes,
    }
}

/// A backed-up copy of the dataset to work on.
fn backed_up(d: &Data) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let dest = dir.path().join("b");
    backup::run(&opts(&d.src, &dest), &NoProgress).expect("backup");
    (dir, dest)
}

fn bench_e2e(c: &mut Criterion) {
    let d = dataset();
    let mut g = c.benchmark_group("e2e");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(10));
    g.throughput(Throughput::Bytes(d.bytes));

    g.bench_function("first_backup", |b| {
        b.iter_batched(
            || tempfile::tempdir().expect("temp dir"),
            |t| backup::run(&opts(&d.src, &t.path().join("b")), &NoProgress).expect("backup"),
            BatchSize::PerIteration,
        )
    });

    let (_keep, dest) = backed_up(&d);
    g.bench_function("no_change_backup", |b| {
        b.iter(|| backup::run(&opts(&d.src, &dest), &NoProgress).expect("backup"))
    });

    g.bench_function("backup_after_1pct_mutation", |b| {
        b.iter_batched(
            || {
                let dir = tempfile::tempdir().expect("temp dir");
                let src = dir.path().join("src");
                copy_tree(&d.src, &src);
                let dest = dir.path().join("b");
                backup::run(&opts(&src, &dest), &NoProgress).expect("backup");
                common::mutate(&src, 1, 11).expect("mutate");
                std::thread::sleep(Duration::from_millis(2100));
                (dir, src, dest)
            },
            |(_dir, src, dest)| backup::run(&opts(&src, &dest), &NoProgress).expect("backup"),
            BatchSize::PerIteration,
        )
    });

    let repo = trove::local::LocalRepo::open(&dest).expect("repo");
    let snap = trove::repo::snapshot::resolve(&repo, "latest").expect("latest");
    g.bench_function("restore", |b| {
        b.iter_batched(
            || tempfile::tempdir().expect("temp dir"),
            |t| {
                let o = trove::restore::RestoreOptions {
                    target: t.path().join("r"),
                    paths: Vec::new(),
                    overwrite: false,
                    dry_run: false,
                    numeric_owner: false,
                    xattrs: true,
                };
                trove::restore::run(&repo, &snap, &o, &NoProgress).expect("restore")
            },
            BatchSize::PerIteration,
        )
    });

    g.bench_function("verify", |b| {
        b.iter(|| {
            trove::verify::run(&repo, &trove::verify::VerifyOptions::default(), &NoProgress)
                .expect("verify")
        })
    });

    g.bench_function("materialize_target", |b| {
        b.iter_batched(
            || tempfile::tempdir().expect("temp dir"),
            |t| {
                trove::browsable::apply::rebuild(&repo, &snap, Some(&t.path().join("m")), false)
                    .expect("materialize")
            },
            BatchSize::PerIteration,
        )
    });

    g.bench_function("prune_dry_run", |b| {
        let o = trove::prune::PruneOptions {
            policy: trove::retention::Policy::default(),
            max_versions: 10,
            deleted_max_age_days: None,
            dry_run: true,
            now_ns: trove::model::now_ns(),
        };
        b.iter(|| trove::prune::run(&repo, &o).expect("prune"))
    });

    // A real prune: a history of four snapshots (three rounds of 1%
    // changes), copied afresh for each run, forgets all but the latest and
    // collects what only the forgotten ones used.
    let history = tempfile::tempdir().expect("temp dir");
    let hsrc = history.path().join("src");
    let hdest = history.path().join("b");
    copy_tree(&d.src, &hsrc);
    backup::run(&opts(&hsrc, &hdest), &NoProgress).expect("backup");
    for round in 0..3 {
        common::mutate(&hsrc, 1, 20 + round).expect("mutate");
        std::thread::sleep(Duration::from_millis(2100));
        backup::run(&opts(&hsrc, &hdest), &NoProgress).expect("backup");
    }
    g.bench_function("prune_keep_last_1", |b| {
        let o = trove::prune::PruneOptions {
            policy: trove::retention::Policy {
                keep_last: Some(1),
                ..Default::default()
            },
            max_versions: 10,
            deleted_max_age_days: None,
            dry_run: false,
            now_ns: trove::model::now_ns(),
        };
        b.iter_batched(
            || {
                let t = tempfile::tempdir().expect("temp dir");
                let copy = t.path().join("b");
                copy_tree(&hdest, &copy);
                (t, copy)
            },
            |(_t, copy)| {
                let r = trove::local::LocalRepo::open(&copy).expect("repo");
                let report = trove::prune::run(&r, &o).expect("prune");
                assert!(!report.gc.forgotten.is_empty(), "the history was pruned");
                report
            },
            BatchSize::PerIteration,
        )
    });

    g.bench_function("dupes", |b| {
        let o = trove::dupes::DupesOptions {
            paths: vec![d.src.clone()],
            min_size: 1,
            scan: trove::scan::ScanOptions::default(),
        };
        b.iter(|| trove::dupes::run(&o, &NoProgress).expect("dupes"))
    });
    g.finish();
}

fn copy_tree(from: &Path, to: &Path) {
    let ok = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "cp -a {} {}", from.display(), to.display());
}

criterion_group!(benches, bench_e2e);
criterion_main!(benches);
