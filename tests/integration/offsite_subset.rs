//! Rolling verification of a remote, `verify --remote --read-data-subset`,
//! on a `file://` remote of many small packs: the T slices together read
//! every pack exactly once (the truth is the folder's `data/` and `tree/`),
//! a flipped byte is found by exactly the slice that holds its pack, a
//! share and a size read what they say (a seed repeats them), and bad
//! specs and flag conflicts exit 2. The S3 run is in `offsite_s3.rs`.

use crate::common::{Lcg, Res, TestEnv, TestResult};
use crate::offsite::{files_below, json, ok, trove};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A backup of ~14 MiB of incompressible files (each under the 512 KiB
/// whole-object threshold) pushed to a remote of 1 MiB packs (the
/// smallest `--pack-size` allows): a dozen packs and more. Returns the
/// env, the remote's URL and its folder.
fn many_packs() -> Res<(TestEnv, String, PathBuf)> {
    let env = TestEnv::new()?;
    let mut rng = Lcg(1616);
    for i in 0..28 {
        env.write(&format!("d{}/f{i}.bin", i % 3), rng.bytes(500 * 1024))?;
    }
    env.backup_ok(&[])?;
    let dir = env.root().join("offsite");
    let url = crate::offsite::file_url(&dir);
    ok(
        &trove(&env, &["remote", "init", &url, "--pack-size", "1M"], &[])?,
        "remote init",
    )?;
    let repo = env.backup.to_str().ok_or("utf8")?.to_string();
    ok(
        &trove(&env, &["push", "--repo", &repo, "--remote", &url], &[])?,
        "push",
    )?;
    Ok((env, url, dir))
}

/// Every pack in the remote's folder: name (hex) → (path, size).
fn packs_in(dir: &Path) -> Res<BTreeMap<String, (PathBuf, u64)>> {
    let mut out = BTreeMap::new();
    for sub in ["data", "tree"] {
        for p in files_below(&dir.join(sub))? {
            let name = p
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or("pack name")?
                .to_string();
            let size = p.metadata()?.len();
            out.insert(name, (p, size));
        }
    }
    Ok(out)
}

/// `verify --json --remote URL ARGS…`: its exit code and document.
fn verify(env: &TestEnv, url: &str, args: &[&str]) -> Res<(Option<i32>, serde_json::Value)> {
    let mut a = vec!["verify", "--json", "--remote", url];
    a.extend_from_slice(args);
    let o = trove(env, &a, &[])?;
    let j = json(&o).map_err(|e| {
        format!(
            "verify {args:?}: {e}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    })?;
    Ok((o.status.code(), j))
}

/// The `packs_read_names` of a verify document, checked against its
/// `packs_read` and sorted as documented.
pub fn read_names(j: &serde_json::Value) -> Res<Vec<String>> {
    let names: Vec<String> = j["packs_read_names"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(j["packs_read"].as_u64(), Some(names.len() as u64), "{j}");
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "packs_read_names is sorted");
    Ok(names)
}

/// The slice (1-based, of `of`) of a pack named `hex`, computed here as
/// the documentation states it: the first 8 bytes of the name, little
/// endian, mod T, plus 1.
fn slice_of(hex: &str, of: u64) -> Res<u64> {
    let mut b = [0u8; 8];
    for (i, byte) in b.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2).ok_or("short name")?, 16)?;
    }
    Ok(u64::from_le_bytes(b) % of + 1)
}

fn bytes_of(names: &[String], packs: &BTreeMap<String, (PathBuf, u64)>) -> u64 {
    names
        .iter()
        .map(|n| packs.get(n).map_or(0, |(_, s)| *s))
        .sum()
}

#[test]
fn read_data_subset_slices_together_read_every_pack_exactly_once() -> TestResult {
    let (env, url, dir) = many_packs()?;
    let packs = packs_in(&dir)?;
    assert!(packs.len() >= 8, "only {} packs", packs.len());
    assert!(packs
        .keys()
        .any(|n| packs[n].0.starts_with(dir.join("tree"))));
    let mut seen: Vec<String> = Vec::new();
    for n in 1..=3u64 {
        let spec = format!("{n}/3");
        let (code, j) = verify(&env, &url, &["--read-data-subset", &spec])?;
        assert_eq!(code, Some(0), "{j}");
        assert_eq!(j["subset"].as_str(), Some(spec.as_str()), "{j}");
        assert!(j.get("seed").is_none(), "a slice takes no seed: {j}");
        let names = read_names(&j)?;
        for name in &names {
            assert!(packs.contains_key(name), "{name} is not a pack");
            assert_eq!(slice_of(name, 3)?, n, "{name} read by slice {spec}");
        }
        assert_eq!(j["bytes_read"].as_u64(), Some(bytes_of(&names, &packs)));
        // Every blob of the packs read is checked, and the downloads
        // are the packs (one GET each beside the index and tree reads).
        assert!(j["requests"]["get"].as_u64().unwrap_or(0) >= names.len() as u64);
        assert!(
            j["requests"]["bytes_down"].as_u64().unwrap_or(0) >= bytes_of(&names, &packs),
            "{j}"
        );
        seen.extend(names);
    }
    let count = seen.len();
    let union: BTreeSet<String> = seen.into_iter().collect();
    assert_eq!(count, union.len(), "the slices overlap");
    assert_eq!(
        union,
        packs.keys().cloned().collect::<BTreeSet<_>>(),
        "the three slices together are every pack"
    );
    // The same slice again reads the same packs; the text says which
    // slice, how many packs and bytes.
    let o = trove(
        &env,
        &["verify", "--remote", &url, "--read-data-subset", "2/3"],
        &[],
    )?;
    ok(&o, "verify 2/3")?;
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        text.contains("read slice 2 of 3: ") && text.contains(" pack(s), "),
        "{text}"
    );
    Ok(())
}

#[test]
fn read_data_subset_finds_a_flipped_byte_only_in_the_slice_holding_its_pack() -> TestResult {
    let (env, url, dir) = many_packs()?;
    let packs = packs_in(&dir)?;
    let (name, (path, _)) = packs
        .iter()
        .filter(|(_, (p, _))| p.starts_with(dir.join("data")))
        .max_by_key(|(_, (_, s))| *s)
        .ok_or("no data pack")?;
    let holder = slice_of(name, 3)?;
    let mut bytes = std::fs::read(path)?;
    let at = bytes.len() / 3;
    bytes[at] ^= 0x01;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    std::fs::write(path, &bytes)?;
    // The structure check cannot see it (same size).
    let (code, j) = verify(&env, &url, &[])?;
    assert_eq!(code, Some(0), "{j}");
    for n in 1..=3u64 {
        let spec = format!("{n}/3");
        let o = trove(
            &env,
            &["verify", "--remote", &url, "--read-data-subset", &spec],
            &[],
        )?;
        let text = String::from_utf8_lossy(&o.stdout).to_string();
        if n == holder {
            assert_eq!(o.status.code(), Some(1), "slice {spec}: {text}");
            assert!(
                text.contains("corrupt pack") && text.contains(name.as_str()),
                "slice {spec} names the damaged pack {name}: {text}"
            );
        } else {
            assert_eq!(o.status.code(), Some(0), "slice {spec}: {text}");
            assert!(!text.contains(name.as_str()), "{text}");
        }
    }
    // In JSON too: the problem names the pack, which the slice read.
    let (code, j) = verify(&env, &url, &["--read-data-subset", &format!("{holder}/3")])?;
    assert_eq!(code, Some(1));
    assert!(read_names(&j)?.contains(name));
    let problems = j["problems"].to_string();
    assert!(problems.contains(name.as_str()), "{problems}");
    Ok(())
}

#[test]
fn read_data_subset_shares_and_sizes_read_what_they_say() -> TestResult {
    let (env, url, dir) = many_packs()?;
    let packs = packs_in(&dir)?;
    let total = packs.len();
    // 10%: the share rounded, at least one pack; the seed is reported and
    // repeats the choice.
    let (code, j) = verify(&env, &url, &["--read-data-subset", "10%", "--seed", "7"])?;
    assert_eq!(code, Some(0), "{j}");
    let want = ((total as f64) * 0.1).round().max(1.0) as usize;
    let ten = read_names(&j)?;
    assert_eq!(ten.len(), want, "10% of {total} packs");
    assert_eq!(j["seed"].as_u64(), Some(7));
    assert_eq!(j["subset"].as_str(), Some("10%"));
    assert_eq!(j["bytes_read"].as_u64(), Some(bytes_of(&ten, &packs)));
    let (_, again) = verify(&env, &url, &["--read-data-subset", "10%", "--seed", "7"])?;
    assert_eq!(
        read_names(&again)?,
        ten,
        "the same seed reads the same packs"
    );
    // Without --seed one is chosen and reported.
    let (code, j) = verify(&env, &url, &["--read-data-subset", "10%"])?;
    assert_eq!(code, Some(0));
    assert!(j["seed"].as_u64().is_some(), "{j}");
    assert_eq!(read_names(&j)?.len(), want);
    // 100%: every pack.
    let (code, j) = verify(&env, &url, &["--read-data-subset", "100%"])?;
    assert_eq!(code, Some(0));
    assert_eq!(
        read_names(&j)?,
        packs.keys().cloned().collect::<Vec<_>>(),
        "100% reads every pack"
    );
    // 2M: packs until their total reaches 2 MiB, never more than one over.
    let (code, j) = verify(&env, &url, &["--read-data-subset", "2M", "--seed", "3"])?;
    assert_eq!(code, Some(0), "{j}");
    assert_eq!(j["subset"].as_str(), Some("2M"));
    let names = read_names(&j)?;
    let read = j["bytes_read"].as_u64().unwrap_or(0);
    assert_eq!(read, bytes_of(&names, &packs));
    let biggest = names
        .iter()
        .map(|n| packs.get(n).map_or(0, |(_, s)| *s))
        .max()
        .unwrap_or(0);
    assert!(read >= 2 << 20, "read {read} bytes for 2M");
    assert!(
        read < (2 << 20) + biggest,
        "read {read} bytes: more than one pack over 2M"
    );
    assert!(
        names.len() < total,
        "2M of a {total}-pack remote is not all of it"
    );
    // The text names the share and the seed to repeat it.
    let o = trove(
        &env,
        &[
            "verify",
            "--remote",
            &url,
            "--read-data-subset",
            "2M",
            "--seed",
            "3",
        ],
        &[],
    )?;
    ok(&o, "verify 2M")?;
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        text.contains("random packs up to 2M") && text.contains("--seed 3"),
        "{text}"
    );
    Ok(())
}

#[test]
fn read_data_subset_bad_specs_and_conflicts_exit_2() -> TestResult {
    let env = TestEnv::new()?;
    let url = crate::offsite::file_url(&env.root().join("nothing-here"));
    for spec in ["0/3", "4/3", "3", "0%", "1X"] {
        let o = trove(
            &env,
            &["verify", "--remote", &url, "--read-data-subset", spec],
            &[],
        )?;
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        assert_eq!(o.status.code(), Some(2), "{spec}: {err}");
        assert!(err.contains(spec), "{spec}: {err}");
        assert!(
            err.contains("N/T") && err.contains("P%") && err.contains("SIZE"),
            "{spec}: the three forms: {err}"
        );
    }
    let cases: &[&[&str]] = &[
        &["--read-data-subset", "1/3", "--read-data"],
        &["--read-data-subset", "1/3", "--sample", "5"],
        &["--read-data-subset", "5%", "--quick"],
        // A slice is fixed by the pack names: a seed is a mistake.
        &["--read-data-subset", "1/3", "--seed", "4"],
    ];
    for extra in cases {
        let mut a = vec!["verify", "--remote", &url];
        a.extend_from_slice(extra);
        let o = trove(&env, &a, &[])?;
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {err}");
    }
    // Without a remote: named, exit 2.
    let o = trove(
        &env,
        &[
            "verify",
            "--repo",
            env.backup.to_str().ok_or("utf8")?,
            "--read-data-subset",
            "1/3",
        ],
        &[],
    )?;
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("--remote"), "{err}");
    Ok(())
}
