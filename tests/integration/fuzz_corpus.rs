//! Replays the fuzz seeds (`fuzz/seeds/<target>/`, files of real
//! repositories made by `fuzz/make_seeds.sh`), the corpus the fuzzers grew
//! from them (`fuzz/corpus/<target>/`, `fuzz/run_all.sh`) and
//! every input that once crashed a target (`fuzz/regressions/<target>/`)
//! through the same checks the fuzz targets run (`trove::fuzzing`): no
//! panic, and whatever decodes round-trips. This is how CI runs the fuzz
//! targets without fuzzing.

use crate::common::TestResult;
use std::path::Path;

fn replay(dir: &Path, f: fn(&[u8])) -> crate::common::Res<usize> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Ok(0);
    };
    let mut n = 0;
    let mut names: Vec<_> = rd.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    names.sort();
    for p in names {
        if !p.is_file() {
            continue;
        }
        let data = std::fs::read(&p)?;
        let r = std::panic::catch_unwind(|| f(&data));
        assert!(
            r.is_ok(),
            "input {} makes its fuzz target fail",
            p.display()
        );
        n += 1;
    }
    Ok(n)
}

#[test]
fn every_corpus_and_regression_input_passes_its_target() -> TestResult {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut total = 0;
    for (name, f) in trove::fuzzing::TARGETS {
        let seeds = replay(&fuzz.join("seeds").join(name), *f)?;
        assert!(
            seeds > 0,
            "fuzz/seeds/{name} is empty: run fuzz/make_seeds.sh"
        );
        total += seeds
            + replay(&fuzz.join("corpus").join(name), *f)?
            + replay(&fuzz.join("regressions").join(name), *f)?;
    }
    assert!(total >= trove::fuzzing::TARGETS.len());
    Ok(())
}

/// The seeds are files of real repositories, so each must also decode: a
/// format change that broke them shows here first.
#[test]
fn seeds_from_real_repositories_still_decode() -> TestResult {
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join("seeds");
    type Files = Vec<(std::path::PathBuf, Vec<u8>)>;
    let each = |kind: &str| -> crate::common::Res<Files> {
        let mut v = Vec::new();
        for e in std::fs::read_dir(seeds.join(kind))? {
            let p = e?.path();
            let data = std::fs::read(&p)?;
            v.push((p, data));
        }
        assert!(!v.is_empty(), "no {kind} seeds");
        Ok(v)
    };
    for (p, d) in each("repo_config")? {
        trove::local::RepoConfig::parse(&d, &p)?;
    }
    for (p, d) in each("snapshot_record")? {
        trove::repo::snapshot::decode(&d, &p)?;
    }
    for (p, d) in each("stat_cache")? {
        assert!(trove::local::cache::decode(&d).is_some(), "{}", p.display());
    }
    for (p, d) in each("tree_pack")? {
        let entries = trove::local::pack::parse(&d).map_err(|e| format!("{}: {e}", p.display()))?;
        assert!(!entries.is_empty(), "{}: a pack of no trees", p.display());
    }
    for (p, d) in each("tree_source")? {
        let u = trove::repo::tree::unframe_tree(&d, &p)?;
        // Each stored tree is a source or an archive tree, of any version
        // still read.
        let src = trove::repo::tree::decode_tree_in::<trove::model::Leaf, trove::model::Meta>(
            u.version, &u.payload, &p,
        );
        let arc = trove::repo::tree::decode_tree_in::<trove::model::History, ()>(
            u.version, &u.payload, &p,
        );
        assert!(src.is_ok() || arc.is_ok(), "{}", p.display());
    }
    Ok(())
}
