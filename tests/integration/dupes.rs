//! `trove dupes PATH… [--min-size SIZE] [--exclude GLOB] [--json]`
//! (SPEC §5): exact sets of byte-identical files, the bytes they waste
//! (size × (distinct inodes − 1)), hardlinks marked and never counted as
//! waste, sets sorted by waste; the JSON carries the same numbers.

use crate::common::{run_bounded, trove_bin, Lcg, Res, Run, TestEnv, TestResult};
use serde_json::Value;
use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::path::Path;
use std::time::Duration;
use trove::backup::human_bytes;

const LIMIT: Duration = Duration::from_secs(120);
const K: usize = 1024;

/// `trove dupes ARGS…` from the env's root (so `source/…` paths show
/// relative).
fn dupes(env: &TestEnv, args: &[&str]) -> Res<Run> {
    let mut cmd = std::process::Command::new(trove_bin());
    cmd.current_dir(env.root())
        .env_remove("TROVE_REPO")
        .arg("dupes")
        .args(args.iter().map(OsStr::new));
    Ok(Run::from_output(&run_bounded(cmd, LIMIT)?, String::new()))
}

/// `trove dupes ARGS… --json`, parsed.
fn dupes_json(env: &TestEnv, args: &[&str]) -> Res<Value> {
    let mut a = args.to_vec();
    a.push("--json");
    let r = dupes(env, &a)?;
    r.expect_code(0);
    Ok(serde_json::from_str(&r.stdout)
        .map_err(|e| format!("--json output does not parse: {e}\n{}", r.stdout))?)
}

// ---------------------------------------------------------------- human output

/// One set as printed.
#[derive(Clone, Debug, PartialEq, Eq)]
struct HumanSet {
    copies: u64,
    size: String,
    wasted: String,
    /// The exact figure printed beside `wasted`.
    wasted_bytes: u64,
    hash16: String,
    files: Files,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct HumanSummary {
    sets: u64,
    files: u64,
    wasted: String,
    /// The exact figure printed beside `wasted`.
    wasted_bytes: u64,
    scanned_files: u64,
    scanned_bytes: String,
}

#[derive(Clone, Debug)]
struct Human {
    sets: Vec<HumanSet>,
    hardlinked: Vec<Vec<String>>,
    errors: Vec<String>,
    summary: HumanSummary,
}

fn parse_human(out: &str) -> Res<Human> {
    let bad = |l: &str| format!("unexpected line {l:?}\n--- stdout\n{out}");
    let mut sets: Vec<HumanSet> = Vec::new();
    let mut hardlinked = Vec::new();
    let mut errors = Vec::new();
    let mut summary = None;
    for l in out.lines() {
        if let Some(f) = l.strip_prefix("  ") {
            let set = sets.last_mut().ok_or_else(|| bad(l))?;
            match f.split_once("  (hardlink of ") {
                Some((p, orig)) => set.files.push((
                    p.to_string(),
                    Some(orig.strip_suffix(')').ok_or_else(|| bad(l))?.to_string()),
                )),
                None => set.files.push((f.to_string(), None)),
            }
        } else if let Some(g) = l.strip_prefix("already hardlinked (no waste): ") {
            hardlinked.push(g.split(", ").map(str::to_string).collect());
        } else if let Some(e) = l.strip_prefix("error: ") {
            errors.push(e.to_string());
        } else if let Some((copies, rest)) = l.split_once(" copies of ") {
            let (size, rest) = rest.split_once(", ").ok_or_else(|| bad(l))?;
            let (wasted, hash) = rest.split_once(" wasted, ").ok_or_else(|| bad(l))?;
            let (wasted, wasted_bytes) = human_and_exact(wasted).ok_or_else(|| bad(l))?;
            sets.push(HumanSet {
                copies: copies.parse()?,
                size: size.to_string(),
                wasted,
                wasted_bytes,
                hash16: hash.strip_suffix(':').ok_or_else(|| bad(l))?.to_string(),
                files: Vec::new(),
            });
        } else if let Some((n, rest)) = l.split_once(" duplicate sets, ") {
            let (files, rest) = rest.split_once(" files, ").ok_or_else(|| bad(l))?;
            let (wasted, rest) = rest.split_once(" wasted (").ok_or_else(|| bad(l))?;
            let (wasted, wasted_bytes) = human_and_exact(wasted).ok_or_else(|| bad(l))?;
            let (scanned_files, rest) = rest.split_once(" files, ").ok_or_else(|| bad(l))?;
            let (scanned_bytes, _) = rest.split_once(" scanned").ok_or_else(|| bad(l))?;
            summary = Some(HumanSummary {
                sets: n.parse()?,
                files: files.parse()?,
                wasted,
                wasted_bytes,
                scanned_files: scanned_files.parse()?,
                scanned_bytes: scanned_bytes.to_string(),
            });
        } else {
            return Err(bad(l).into());
        }
    }
    Ok(Human {
        sets,
        hardlinked,
        errors,
        summary: summary.ok_or_else(|| format!("no summary line\n{out}"))?,
    })
}

/// `4.9 KiB (5,000 bytes)` → (`4.9 KiB`, 5000); None for any other form
/// (commas exactly every three digits).
fn human_and_exact(s: &str) -> Option<(String, u64)> {
    let (human, exact) = s.strip_suffix(" bytes)")?.split_once(" (")?;
    let groups: Vec<&str> = exact.split(',').collect();
    let well_formed = groups.iter().enumerate().all(|(i, g)| {
        g.bytes().all(|b| b.is_ascii_digit())
            && if i == 0 {
                (1..=3).contains(&g.len())
            } else {
                g.len() == 3
            }
    });
    if !well_formed {
        return None;
    }
    Some((human.to_string(), groups.concat().parse().ok()?))
}

fn dupes_human(env: &TestEnv, args: &[&str]) -> Res<Human> {
    let r = dupes(env, args)?;
    r.expect_code(0);
    parse_human(&r.stdout)
}

// ---------------------------------------------------------------- fixture

fn put(p: &Path, data: impl AsRef<[u8]>) -> TestResult {
    if let Some(parent) = p.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::write(p, data)?;
    Ok(())
}

/// One expected set: size, number of distinct inodes, paths in output
/// order with the path each is a hardlink of.
struct Want {
    size: u64,
    copies: u64,
    files: Vec<(&'static str, Option<&'static str>)>,
    data: Vec<u8>,
}

impl Want {
    fn wasted(&self) -> u64 {
        self.size * (self.copies - 1)
    }
}

/// The fixture below `source/`:
/// - 5 copies of 30 KiB (120 KiB wasted: more than the next set, though
///   smaller files), 2 copies of 100 KiB, 3 copies of 10 KiB plus a
///   hardlink of one of them, 2 copies of 100 bytes;
/// - 20 KiB pairs equal in their first and last 4 KiB, differing in the
///   middle; pairs differing only in their last byte;
/// - a pair that is only hardlinks of each other; empty files (and an
///   empty hardlink); files of unique sizes.
///
/// Returns the expected sets (sorted by waste) and the number and bytes
/// of the non-empty files.
fn fixture(env: &TestEnv) -> Res<(Vec<Want>, u64, u64)> {
    let mut rng = Lcg(2024);
    let s = |rel: &str| env.src(rel);
    let thirty = rng.bytes(30 * K);
    for i in 1..=5 {
        put(&s(&format!("thirty/c{i}")), &thirty)?;
    }
    let big = rng.bytes(100 * K);
    put(&s("big/one"), &big)?;
    put(&s("big/two"), &big)?;
    let ten = rng.bytes(10 * K);
    put(&s("ten/a"), &ten)?;
    put(&s("ten/b"), &ten)?;
    put(&s("ten/c"), &ten)?;
    fs::hard_link(s("ten/a"), s("ten/a.link"))?;
    let small = rng.bytes(100);
    put(&s("small/s1"), &small)?;
    put(&s("small/s2"), &small)?;
    // Equal size, equal first and last 4 KiB, other middle.
    let mid = rng.bytes(20 * K);
    let mut mid2 = mid.clone();
    mid2[10 * K] ^= 0x01;
    put(&s("mid/m1"), &mid)?;
    put(&s("mid/m2"), &mid2)?;
    // Equal size, only the last byte differs.
    let last = rng.bytes(12 * K);
    let mut last2 = last.clone();
    last2[12 * K - 1] ^= 0x80;
    put(&s("last/l1"), &last)?;
    put(&s("last/l2"), &last2)?;
    // Only hardlinks of each other.
    put(&s("hl/orig"), rng.bytes(5000))?;
    fs::hard_link(s("hl/orig"), s("hl/link"))?;
    // Empty files, never reported (also not as hardlinks).
    put(&s("empty1"), "")?;
    put(&s("empty2"), "")?;
    put(&s("sub/empty3"), "")?;
    fs::hard_link(s("empty1"), s("sub/empty1.link"))?;
    // Unique sizes.
    put(&s("unique/u1"), rng.bytes(777))?;
    put(&s("unique/u2"), rng.bytes(31 * K))?;
    let want = vec![
        Want {
            size: 30 * K as u64,
            copies: 5,
            files: (1..=5)
                .map(|i| (leak(format!("source/thirty/c{i}")), None))
                .collect(),
            data: thirty,
        },
        Want {
            size: 100 * K as u64,
            copies: 2,
            files: vec![("source/big/one", None), ("source/big/two", None)],
            data: big,
        },
        Want {
            size: 10 * K as u64,
            copies: 3,
            files: vec![
                ("source/ten/a", None),
                ("source/ten/a.link", Some("source/ten/a")),
                ("source/ten/b", None),
                ("source/ten/c", None),
            ],
            data: ten,
        },
        Want {
            size: 100,
            copies: 2,
            files: vec![("source/small/s1", None), ("source/small/s2", None)],
            data: small,
        },
    ];
    // Non-empty files, hardlinks counted per path.
    let count = 5 + 2 + 4 + 2 + 2 + 2 + 2 + 2;
    let bytes = (5 * 30 + 2 * 100 + 4 * 10 + 2 * 20 + 2 * 12 + 31) * K + 2 * 100 + 2 * 5000 + 777;
    Ok((want, count, bytes as u64))
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

fn hardlinked_pair() -> Vec<Vec<String>> {
    vec![vec![
        "source/hl/link".to_string(),
        "source/hl/orig".to_string(),
    ]]
}

/// Path, and the path it is a hardlink of.
type Files = Vec<(String, Option<String>)>;

/// The printed sets equal the expected ones, in order.
fn assert_sets(h: &Human, want: &[Want], what: &str) {
    let got: Vec<(u64, String, String, Files)> = h
        .sets
        .iter()
        .map(|s| (s.copies, s.size.clone(), s.wasted.clone(), s.files.clone()))
        .collect();
    let exp: Vec<(u64, String, String, Files)> = want
        .iter()
        .map(|w| {
            (
                w.copies,
                human_bytes(w.size),
                human_bytes(w.wasted()),
                w.files
                    .iter()
                    .map(|(p, o)| (p.to_string(), o.map(str::to_string)))
                    .collect(),
            )
        })
        .collect();
    assert_eq!(
        got, exp,
        "{what}: sets (copies, size, wasted, files), by waste"
    );
    let got: Vec<u64> = h.sets.iter().map(|s| s.wasted_bytes).collect();
    let exp: Vec<u64> = want.iter().map(Want::wasted).collect();
    assert_eq!(got, exp, "{what}: exact bytes wasted per set");
}

// ---------------------------------------------------------------- tests

#[test]
fn reports_exact_sets_by_waste_with_hardlinks_marked() -> TestResult {
    let env = TestEnv::new()?;
    let (want, files, bytes) = fixture(&env)?;
    let h = dupes_human(&env, &["source"])?;
    assert_sets(&h, &want, "default run");
    for (s, w) in h.sets.iter().zip(&want) {
        let hash = blake3::hash(&w.data).to_hex().to_string();
        assert_eq!(
            s.hash16,
            hash[..16],
            "hash prefix of the {}-byte set",
            w.size
        );
    }
    assert_eq!(
        h.hardlinked,
        hardlinked_pair(),
        "a pair that is only hardlinks is no set"
    );
    assert!(h.errors.is_empty(), "{:?}", h.errors);
    let total: u64 = want.iter().map(Want::wasted).sum();
    assert_eq!(total, (120 + 100 + 20) * 1024 + 100, "waste by hand");
    assert_eq!(
        h.summary,
        HumanSummary {
            sets: 4,
            files: 13,
            wasted: human_bytes(total),
            wasted_bytes: total,
            scanned_files: files,
            scanned_bytes: human_bytes(bytes),
        }
    );
    Ok(())
}

#[test]
fn json_carries_the_same_numbers_as_the_human_output() -> TestResult {
    let env = TestEnv::new()?;
    let (want, files, bytes) = fixture(&env)?;
    let h = dupes_human(&env, &["source"])?;
    let v = dupes_json(&env, &["source"])?;
    let sets = v["sets"].as_array().ok_or("sets")?;
    assert_eq!(sets.len(), want.len(), "{v:#}");
    for ((js, w), hs) in sets.iter().zip(&want).zip(&h.sets) {
        let size = js["size"].as_u64().ok_or("size")?;
        let copies = js["copies"].as_u64().ok_or("copies")?;
        let wasted = js["wasted"].as_u64().ok_or("wasted")?;
        let hash = js["hash"].as_str().ok_or("hash")?;
        assert_eq!(
            (size, copies, wasted),
            (w.size, w.copies, w.wasted()),
            "{js:#}"
        );
        assert_eq!(
            hash,
            blake3::hash(&w.data).to_hex().as_str(),
            "BLAKE3 of the content"
        );
        // Same numbers as the human output.
        assert_eq!(wasted, hs.wasted_bytes, "exact bytes wasted");
        assert_eq!(
            (copies, human_bytes(size), human_bytes(wasted), &hash[..16]),
            (
                hs.copies,
                hs.size.clone(),
                hs.wasted.clone(),
                hs.hash16.as_str()
            )
        );
        // Files: same paths in the same order; equal `inode` exactly where
        // the human output says "hardlink of"; `copies` distinct inodes.
        let jf = js["files"].as_array().ok_or("files")?;
        let paths: Vec<&str> = jf.iter().filter_map(|f| f["path"].as_str()).collect();
        let hpaths: Vec<&str> = hs.files.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths, hpaths);
        let inodes: Vec<u64> = jf.iter().filter_map(|f| f["inode"].as_u64()).collect();
        assert_eq!(inodes.len(), jf.len());
        assert_eq!(inodes.iter().collect::<BTreeSet<_>>().len() as u64, copies);
        for (i, (_, orig)) in hs.files.iter().enumerate() {
            let first = inodes.iter().position(|&x| x == inodes[i]).ok_or("inode")?;
            match orig {
                Some(o) => {
                    assert!(first < i, "a hardlink follows its first path");
                    assert_eq!(paths[first], o.as_str());
                }
                None => assert_eq!(first, i, "{} is the first path of its inode", paths[i]),
            }
        }
    }
    let total: u64 = want.iter().map(Want::wasted).sum();
    assert_eq!(v["wasted"].as_u64(), Some(total));
    assert_eq!(human_bytes(total), h.summary.wasted);
    assert_eq!(total, h.summary.wasted_bytes, "the exact total of both");
    assert_eq!(v["duplicate_files"].as_u64(), Some(13));
    assert_eq!(v["duplicate_files"].as_u64(), Some(h.summary.files));
    assert_eq!(v["files_scanned"].as_u64(), Some(files));
    assert_eq!(v["bytes_scanned"].as_u64(), Some(bytes));
    assert_eq!(h.summary.scanned_files, files);
    let hl: Vec<Vec<String>> = serde_json::from_value(v["hardlinked"].clone())?;
    assert_eq!(hl, hardlinked_pair());
    assert_eq!(hl, h.hardlinked);
    assert_eq!(v["problems"].as_array().map(Vec::len), Some(0));
    Ok(())
}

/// Files of equal size that differ in one byte, at every size around the
/// 4 KiB first/last-block boundaries and at telling positions, next to a
/// true duplicate pair of each size.
/// Issue 14 item 8: human units alone cannot be audited or compared with
/// another tool's "N bytes wasted", so the exact count stands beside them,
/// per set and in the total, with thousands separated.
#[test]
fn human_output_gives_exact_bytes_wasted_per_set_and_in_total() -> TestResult {
    let env = TestEnv::new()?;
    let mut rng = Lcg(14);
    let five = rng.bytes(5000);
    put(&env.src("a/five1"), &five)?;
    put(&env.src("b/five2"), &five)?;
    let small = rng.bytes(1500);
    for i in 1..=3 {
        put(&env.src(&format!("s/small{i}")), &small)?;
    }
    let r = dupes(&env, &["source"])?;
    r.expect_code(0);
    let hash16 = |d: &[u8]| blake3::hash(d).to_hex()[..16].to_string();
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(
        lines.first().copied(),
        Some(
            format!(
                "2 copies of 4.9 KiB, 4.9 KiB (5,000 bytes) wasted, {}:",
                hash16(&five)
            )
            .as_str()
        ),
        "{}",
        r.stdout
    );
    assert!(
        lines.contains(
            &format!(
                "3 copies of 1.5 KiB, 2.9 KiB (3,000 bytes) wasted, {}:",
                hash16(&small)
            )
            .as_str()
        ),
        "{}",
        r.stdout
    );
    let total = lines.last().ok_or("no summary")?;
    assert!(
        total.starts_with("2 duplicate sets, 5 files, 7.8 KiB (8,000 bytes) wasted ("),
        "{total}"
    );
    // The JSON had the bytes already, and keeps them.
    let v = dupes_json(&env, &["source"])?;
    assert_eq!(v["wasted"].as_u64(), Some(8000), "{v:#}");
    let per_set: Vec<Option<u64>> = v["sets"]
        .as_array()
        .ok_or("sets")?
        .iter()
        .map(|s| s["wasted"].as_u64())
        .collect();
    assert_eq!(per_set, vec![Some(5000), Some(3000)], "{v:#}");
    Ok(())
}

#[test]
fn files_differing_in_a_single_byte_are_never_duplicates() -> TestResult {
    let env = TestEnv::new()?;
    let mut rng = Lcg(99);
    let mut want: BTreeSet<(u64, Vec<String>)> = BTreeSet::new();
    let sizes = [
        1usize, 2, 100, 4095, 4096, 4097, 5000, 6000, 8191, 8192, 8193, 8194, 12288, 20000,
    ];
    for size in sizes {
        let base = rng.bytes(size);
        let dir = format!("s{size}");
        put(&env.src(&format!("{dir}/same1")), &base)?;
        put(&env.src(&format!("{dir}/same2")), &base)?;
        want.insert((
            size as u64,
            vec![format!("source/{dir}/same1"), format!("source/{dir}/same2")],
        ));
        let mut positions = vec![0, size / 2, size - 1];
        for p in [4095, 4096, 4097] {
            if p < size {
                positions.push(p);
            }
        }
        if size > 4096 {
            positions.push(size - 4097);
            positions.push(size - 4096);
        }
        positions.sort_unstable();
        positions.dedup();
        for p in positions {
            // Content of its own, so no pair matches another pair.
            let a = rng.bytes(size);
            let mut b = a.clone();
            b[p] ^= 0x01;
            put(&env.src(&format!("{dir}/at{p}-a")), &a)?;
            put(&env.src(&format!("{dir}/at{p}-b")), &b)?;
        }
    }
    let v = dupes_json(&env, &["source"])?;
    let got: BTreeSet<(u64, Vec<String>)> = v["sets"]
        .as_array()
        .ok_or("sets")?
        .iter()
        .map(|s| {
            (
                s["size"].as_u64().unwrap_or(0),
                s["files"]
                    .as_array()
                    .map(|f| {
                        f.iter()
                            .filter_map(|x| x["path"].as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default(),
            )
        })
        .collect();
    let false_sets: Vec<_> = got.difference(&want).collect();
    let missed: Vec<_> = want.difference(&got).collect();
    assert!(
        false_sets.is_empty() && missed.is_empty(),
        "files that differ reported as duplicates: {false_sets:#?}\ntrue duplicates missed: {missed:#?}"
    );
    Ok(())
}

#[test]
fn min_size_leaves_out_smaller_files_and_empty_files_never_count() -> TestResult {
    let env = TestEnv::new()?;
    let (want, _, _) = fixture(&env)?;
    let by =
        |sizes: &[u64]| -> Vec<&Want> { want.iter().filter(|w| sizes.contains(&w.size)).collect() };
    let kib = 1024u64;
    // (arguments, sets left, the hardlinked 5000-byte pair still reported)
    let cases: [(&[&str], Vec<&Want>, bool); 6] = [
        (
            &["--min-size", "0"],
            by(&[30 * kib, 100 * kib, 10 * kib, 100]),
            true,
        ),
        (
            &["--min-size", "100"],
            by(&[30 * kib, 100 * kib, 10 * kib, 100]),
            true,
        ),
        (
            &["--min-size", "101"],
            by(&[30 * kib, 100 * kib, 10 * kib]),
            true,
        ),
        (
            &["--min-size", "1K"],
            by(&[30 * kib, 100 * kib, 10 * kib]),
            true,
        ),
        (
            &["--min-size", "10K"],
            by(&[30 * kib, 100 * kib, 10 * kib]),
            false,
        ),
        (&["--min-size", "10241"], by(&[30 * kib, 100 * kib]), false),
    ];
    for (args, sets, hl) in cases {
        let mut a = vec!["source"];
        a.extend_from_slice(args);
        let h = dupes_human(&env, &a)?;
        let got: Vec<u64> = h.sets.iter().map(|s| s.copies).collect();
        let exp: Vec<u64> = sets.iter().map(|w| w.copies).collect();
        assert_eq!(got, exp, "{args:?}: {h:#?}");
        for (s, w) in h.sets.iter().zip(&sets) {
            assert_eq!(s.size, human_bytes(w.size), "{args:?}");
        }
        let want_hl = if hl { hardlinked_pair() } else { Vec::new() };
        assert_eq!(h.hardlinked, want_hl, "{args:?}");
        for s in &h.sets {
            for (p, _) in &s.files {
                assert!(!p.contains("empty"), "{args:?}: empty file {p} reported");
            }
        }
        let total: u64 = sets.iter().map(|w| w.wasted()).sum();
        assert_eq!(h.summary.wasted, human_bytes(total), "{args:?}");
        assert_eq!(h.summary.wasted_bytes, total, "{args:?}");
    }
    let bad = dupes(&env, &["source", "--min-size", "lots"])?;
    bad.expect_code(2);
    Ok(())
}

#[test]
fn only_empty_files_make_no_sets() -> TestResult {
    let env = TestEnv::new()?;
    for rel in ["a", "b", "sub/c", "sub/d"] {
        put(&env.src(rel), "")?;
    }
    fs::hard_link(env.src("a"), env.src("a.link"))?;
    let h = dupes_human(&env, &["source"])?;
    assert!(h.sets.is_empty() && h.hardlinked.is_empty(), "{h:#?}");
    assert_eq!((h.summary.sets, h.summary.files), (0, 0));
    assert_eq!(h.summary.wasted, "0 B");
    assert_eq!(h.summary.wasted_bytes, 0);
    let v = dupes_json(&env, &["source"])?;
    assert_eq!(v["sets"].as_array().map(Vec::len), Some(0), "{v:#}");
    assert_eq!(v["hardlinked"].as_array().map(Vec::len), Some(0), "{v:#}");
    assert_eq!(v["wasted"].as_u64(), Some(0));
    Ok(())
}

#[test]
fn exclude_globs_leave_files_out() -> TestResult {
    let env = TestEnv::new()?;
    let (want, _, _) = fixture(&env)?;
    // A name glob, a folder name, a path glob.
    let h = dupes_human(
        &env,
        &[
            "source",
            "--exclude",
            "*.link",
            "--exclude",
            "big",
            "--exclude",
            "thirty/c[2-5]",
        ],
    )?;
    let ten = &want[2];
    let small = &want[3];
    assert_eq!(h.sets.len(), 2, "{h:#?}");
    assert_eq!(
        h.sets[0].files,
        [
            ("source/ten/a".to_string(), None),
            ("source/ten/b".to_string(), None),
            ("source/ten/c".to_string(), None)
        ],
        "the hardlink is excluded"
    );
    assert_eq!(h.sets[0].wasted, human_bytes(ten.wasted()));
    assert_eq!(h.sets[1].wasted, human_bytes(small.wasted()));
    assert_eq!(
        h.hardlinked,
        hardlinked_pair(),
        "`*.link` does not match hl/link"
    );
    let h = dupes_human(&env, &["source", "--exclude", "hl"])?;
    assert!(h.hardlinked.is_empty());
    assert_eq!(h.sets.len(), 4);
    Ok(())
}

#[test]
fn several_paths_are_searched_together() -> TestResult {
    let env = TestEnv::new()?;
    let mut rng = Lcg(5);
    let shared = rng.bytes(40 * K);
    let lone = rng.bytes(9 * K);
    put(&env.root().join("left/x.bin"), &shared)?;
    put(&env.root().join("right/deep/y.bin"), &shared)?;
    put(&env.root().join("third.bin"), &shared)?;
    put(&env.root().join("left/lone"), &lone)?;
    put(&env.root().join("right/lone-twin"), &lone)?;
    // Directories and a plain file as PATHs.
    let h = dupes_human(&env, &["left", "right", "third.bin"])?;
    assert_eq!(h.sets.len(), 2, "{h:#?}");
    assert_eq!(h.sets[0].copies, 3);
    assert_eq!(
        h.sets[0]
            .files
            .iter()
            .map(|f| f.0.as_str())
            .collect::<Vec<_>>(),
        ["left/x.bin", "right/deep/y.bin", "third.bin"]
    );
    assert_eq!(
        h.sets[1]
            .files
            .iter()
            .map(|f| f.0.as_str())
            .collect::<Vec<_>>(),
        ["left/lone", "right/lone-twin"]
    );
    assert_eq!(
        h.summary.wasted,
        human_bytes(2 * 40 * K as u64 + 9 * K as u64)
    );
    // Only one of the folders: no set spans what was not asked for.
    let h = dupes_human(&env, &["left"])?;
    assert!(h.sets.is_empty(), "{h:#?}");
    Ok(())
}

/// The report on PATH alone: what overlapping arguments must reproduce.
fn reference(env: &TestEnv) -> Res<(Value, Human)> {
    Ok((
        dupes_json(env, &["source"])?,
        dupes_human(env, &["source"])?,
    ))
}

#[test]
fn overlapping_paths_count_every_file_once() -> TestResult {
    let env = TestEnv::new()?;
    fixture(&env)?;
    let (v, h) = reference(&env)?;
    let args = [
        "source",
        "source/ten",
        "source/thirty/c1",
        "source/hl",
        "source",
    ];
    let v2 = dupes_json(&env, &args)?;
    assert_eq!(v2, v, "the JSON report equals the one of `source` alone");
    let h2 = dupes_human(&env, &args)?;
    assert_eq!(h2.sets, h.sets);
    assert_eq!(h2.hardlinked, h.hardlinked);
    assert_eq!(h2.summary, h.summary, "summary counts");
    Ok(())
}

#[test]
fn one_folder_under_two_spellings_counts_once() -> TestResult {
    let env = TestEnv::new()?;
    let (want, _, _) = fixture(&env)?;
    let (v, _) = reference(&env)?;
    let abs = env.source.to_str().ok_or("path")?.to_string();
    let v2 = dupes_json(&env, &["source", "./source", &abs])?;
    for key in [
        "files_scanned",
        "bytes_scanned",
        "duplicate_files",
        "wasted",
    ] {
        assert_eq!(v2[key], v[key], "{key}: {v2:#}");
    }
    let counts = |v: &Value| -> Vec<(u64, usize)> {
        v["sets"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|s| {
                        (
                            s["copies"].as_u64().unwrap_or(0),
                            s["files"].as_array().map_or(0, Vec::len),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(counts(&v2), counts(&v), "sets (copies, files)");
    assert_eq!(counts(&v).len(), want.len());
    assert_eq!(
        v2["hardlinked"].as_array().map(Vec::len),
        Some(1),
        "one real hardlinked pair, not every file seen twice: {v2:#}"
    );
    Ok(())
}
