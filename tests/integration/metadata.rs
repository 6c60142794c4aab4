//! Metadata fidelity (SPEC §10, issue 18): what `backup` → `restore` gives
//! back beyond bytes, mode and mtime — extended attributes (ACLs and file
//! capabilities are xattrs), hard-link groups, holes of sparse files,
//! FIFOs and devices, owner names — compared field by field on real temp
//! directories with the real binary; and version-1 repositories (made
//! before these fields existed) still read.

use crate::common::{trove_bin, Res, TestEnv, TestResult};
use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

/// The extended attributes of `p` itself, by name.
fn xattrs(p: &Path) -> Res<BTreeMap<Vec<u8>, Vec<u8>>> {
    let r = trove::fsmeta::read_xattrs(p)?;
    Ok(r.xattrs
        .as_slice()
        .iter()
        .map(|x| (x.name.clone(), x.value.clone()))
        .collect())
}

fn set_xattr(p: &Path, name: &str, value: &[u8]) -> TestResult {
    rustix::fs::lsetxattr(p, name, value, rustix::fs::XattrFlags::empty())?;
    Ok(())
}

/// Does the filesystem under `dir` keep `user.*` attributes?
fn user_xattrs_supported(dir: &Path) -> Res<bool> {
    let probe = dir.join(".xattr-probe");
    std::fs::write(&probe, b"")?;
    let ok = set_xattr(&probe, "user.probe", b"1").is_ok();
    std::fs::remove_file(&probe)?;
    Ok(ok)
}

fn restore(env: &TestEnv, target: &Path, extra: &[&str]) -> Res<std::process::Output> {
    let mut args = vec!["restore", "--target"];
    let t = target.to_str().ok_or("non-UTF-8 temp path")?;
    args.push(t);
    args.extend_from_slice(extra);
    env.repo_cmd(&args)
}

fn assert_ok(out: &std::process::Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({:?}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `ls --json` of the latest snapshot, by path.
fn ls(env: &TestEnv) -> Res<BTreeMap<String, serde_json::Value>> {
    let out = env.repo_cmd(&["ls", "--json"])?;
    assert_ok(&out, "ls");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok(v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| Some((e["path"].as_str()?.to_string(), e.clone())))
        .collect())
}

/// A file capability (`cap_net_raw+ep`, VFS_CAP_REVISION_2) as the kernel
/// stores it in `security.capability`.
fn capability() -> Vec<u8> {
    let mut v = vec![0u8; 20];
    v[..4].copy_from_slice(&0x0200_0001u32.to_le_bytes()); // revision 2, effective
    v[4..8].copy_from_slice(&(1u32 << 13).to_le_bytes()); // permitted: CAP_NET_RAW
    v
}

/// A POSIX access ACL (`u::rwx,u:65534:r--,g::r-x,m::r-x,o::r-x`) in the
/// kernel's `system.posix_acl_access` encoding.
fn acl() -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in [
        (0x01u16, 7u16, u32::MAX), // USER_OBJ
        (0x02, 4, 65534),          // USER nobody
        (0x04, 5, u32::MAX),       // GROUP_OBJ
        (0x10, 5, u32::MAX),       // MASK
        (0x20, 5, u32::MAX),       // OTHER
    ] {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

#[test]
fn xattrs_acls_and_capabilities_survive_a_round_trip() -> TestResult {
    let env = TestEnv::new()?;
    if !user_xattrs_supported(&env.source)? {
        eprintln!("SKIP: the filesystem of the temp dir keeps no user xattrs");
        return Ok(());
    }
    env.write("a.txt", "hello")?;
    env.write("d/inner.txt", "inner")?;
    env.write("tool", "#!/bin/sh\n")?;
    std::fs::set_permissions(env.src("tool"), std::fs::Permissions::from_mode(0o755))?;
    set_xattr(&env.src("a.txt"), "user.note", b"hello")?;
    set_xattr(&env.src("a.txt"), "user.bin", &[0, 1, 2, 255])?;
    set_xattr(&env.src("d"), "user.folder", b"x")?;
    set_xattr(&env.src("d"), "system.posix_acl_access", &acl())?;
    set_xattr(&env.src("tool"), "security.capability", &capability())?;
    std::os::unix::fs::symlink("a.txt", env.src("link"))?;
    env.backup_ok(&[])?;

    let rows = ls(&env)?;
    let names: Vec<&str> = rows["a.txt"]["xattrs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x["name"].as_str())
        .collect();
    assert_eq!(names, ["user.bin", "user.note"], "ls --json shows them");

    let target = env.root().join("out");
    assert_ok(&restore(&env, &target, &[])?, "restore");
    for rel in ["a.txt", "d", "d/inner.txt", "tool", "link"] {
        assert_eq!(
            xattrs(&target.join(rel))?,
            xattrs(&env.src(rel))?,
            "{rel}: the same extended attributes"
        );
    }
    assert!(xattrs(&target.join("tool"))?.contains_key(b"security.capability".as_slice()));
    // The ACL comes back with the mode it implies.
    assert_eq!(
        std::fs::metadata(target.join("d"))?.mode() & 0o7777,
        std::fs::metadata(env.src("d"))?.mode() & 0o7777
    );

    // --no-xattrs: neither recorded nor set.
    let target2 = env.root().join("out2");
    assert_ok(
        &restore(&env, &target2, &["--no-xattrs"])?,
        "restore --no-xattrs",
    );
    assert!(xattrs(&target2.join("a.txt"))?.is_empty());
    let env2 = TestEnv::new()?;
    env2.write("a.txt", "hello")?;
    set_xattr(&env2.src("a.txt"), "user.note", b"hello")?;
    env2.backup_ok(&["--no-xattrs"])?;
    assert!(ls(&env2)?["a.txt"].get("xattrs").is_none());
    Ok(())
}

/// An attribute-only change is a metadata change: `diff` marks it `U`,
/// and the unchanged run before it read nothing again.
#[test]
fn an_xattr_only_change_shows_as_u_in_diff() -> TestResult {
    let env = TestEnv::new()?;
    if !user_xattrs_supported(&env.source)? {
        eprintln!("SKIP: the filesystem of the temp dir keeps no user xattrs");
        return Ok(());
    }
    env.write("a.txt", "hello")?;
    env.write("b.txt", "other")?;
    env.backup_ok(&[])?;
    env.backup_ok(&[])?;
    set_xattr(&env.src("a.txt"), "user.note", b"changed")?;
    env.backup_ok(&[])?;
    let snaps = env.snapshots()?;
    let id = |s: &serde_json::Value| s["id"].as_str().map(str::to_string);
    assert!(snaps.len() >= 2, "the change made a snapshot");
    let (a, b) = (
        id(&snaps[snaps.len() - 2]).ok_or("no id")?,
        id(&snaps[snaps.len() - 1]).ok_or("no id")?,
    );
    let out = env.repo_cmd(&["diff", &a, &b])?;
    assert_ok(&out, "diff");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with('U') && l.contains("a.txt")),
        "diff marks the xattr change U: {text}"
    );
    assert!(!text.contains("b.txt"), "{text}");
    Ok(())
}

#[test]
fn hard_link_groups_come_back_as_hard_links() -> TestResult {
    let env = TestEnv::new()?;
    env.write("a", "shared content")?;
    env.write("sub/x", "lonely")?;
    std::fs::hard_link(env.src("a"), env.src("a_link"))?;
    std::fs::hard_link(env.src("a"), env.src("sub/a_link2"))?;
    env.backup_ok(&[])?;
    let target = env.root().join("out");
    assert_ok(&restore(&env, &target, &[])?, "restore");
    let m = |p: &str| std::fs::metadata(target.join(p));
    assert_eq!(m("a")?.nlink(), 3, "the group is whole again");
    assert_eq!(m("a")?.ino(), m("a_link")?.ino());
    assert_eq!(m("a")?.ino(), m("sub/a_link2")?.ino());
    assert_eq!(m("sub/x")?.nlink(), 1);
    assert_eq!(
        std::fs::read(target.join("sub/a_link2"))?,
        b"shared content"
    );
    // Within the restored subtree only: one path of the group is a file.
    let part = env.root().join("part");
    assert_ok(&restore(&env, &part, &["sub"])?, "restore sub");
    assert_eq!(std::fs::metadata(part.join("sub/a_link2"))?.nlink(), 1);
    assert_eq!(std::fs::read(part.join("sub/a_link2"))?, b"shared content");
    // A second run with nothing changed keeps the group as it is.
    env.backup_ok(&[])?;
    let out = env.repo_cmd(&["verify"])?;
    assert_ok(&out, "verify");
    Ok(())
}

#[test]
fn a_sparse_file_keeps_its_holes_in_the_store_and_on_restore() -> TestResult {
    let env = TestEnv::new()?;
    let f = std::fs::File::create(env.src("sparse"))?;
    f.set_len(100 << 20)?;
    drop(f);
    // Some data in the middle: holes on both sides.
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(env.src("sparse"))?;
        f.seek(SeekFrom::Start(50 << 20))?;
        f.write_all(&[7u8; 8192])?;
    }
    let src_meta = std::fs::metadata(env.src("sparse"))?;
    if src_meta.blocks() * 512 >= src_meta.len() {
        eprintln!("SKIP: the temp filesystem made no holes");
        return Ok(());
    }
    env.backup_ok(&[])?;
    assert_eq!(ls(&env)?["sparse"]["sparse"], true, "recorded as sparse");
    // The store keeps the raw bytes (the browsable file is a hardlink of
    // them) with the holes kept as holes.
    let shown = std::fs::metadata(env.dst("sparse"))?;
    assert_eq!(shown.len(), 100 << 20);
    assert!(
        shown.blocks() < 1024,
        "the stored object is sparse: {} blocks",
        shown.blocks()
    );
    let target = env.root().join("out");
    assert_ok(&restore(&env, &target, &[])?, "restore");
    let back = std::fs::metadata(target.join("sparse"))?;
    assert_eq!(back.len(), 100 << 20);
    assert!(
        back.blocks() < 1024,
        "restored with holes: {} blocks (source {})",
        back.blocks(),
        src_meta.blocks()
    );
    assert_eq!(
        std::fs::read(target.join("sparse"))?,
        std::fs::read(env.src("sparse"))?
    );
    Ok(())
}

#[test]
fn fifos_and_devices_are_recorded_and_recreated() -> TestResult {
    let env = TestEnv::new()?;
    env.write("ok.txt", "fine")?;
    let st = std::process::Command::new("mkfifo")
        .args(["-m", "0640"])
        .arg(env.src("pipe"))
        .status()?;
    assert!(st.success(), "mkfifo failed");
    let have_dev = trove::fsmeta::make_special(
        &env.src("null"),
        trove::model::SpecialKind::CharDevice,
        0o620,
        libc_makedev(1, 3),
    )
    .is_ok();
    env.backup_ok(&[])?;
    let rows = ls(&env)?;
    assert_eq!(rows["pipe"]["type"], "fifo");
    assert!(!env.dst("pipe").exists(), "the browsable tree shows none");
    let target = env.root().join("out");
    assert_ok(&restore(&env, &target, &[])?, "restore");
    let p = std::fs::symlink_metadata(target.join("pipe"))?;
    assert!(p.file_type().is_fifo());
    assert_eq!(p.mode() & 0o7777, 0o640);
    if have_dev {
        assert_eq!(rows["null"]["type"], "chardev");
        let d = std::fs::symlink_metadata(target.join("null"))?;
        assert!(d.file_type().is_char_device());
        assert_eq!(d.rdev(), std::fs::symlink_metadata(env.src("null"))?.rdev());
    } else {
        eprintln!("SKIP (devices): mknod is not permitted here");
    }
    Ok(())
}

fn libc_makedev(major: u64, minor: u64) -> u64 {
    ((major & 0xffff_f000) << 32)
        | ((major & 0xfff) << 8)
        | ((minor & 0xffff_ff00) << 12)
        | (minor & 0xff)
}

/// As an unprivileged user: files, FIFOs and `user.*` attributes come
/// back; a device cannot be made (a problem naming it), and attributes of
/// other namespaces get one warning per namespace.
#[test]
fn an_unprivileged_restore_gives_back_what_it_may() -> TestResult {
    let env = TestEnv::new()?;
    if !user_xattrs_supported(&env.source)? {
        eprintln!("SKIP: the filesystem of the temp dir keeps no user xattrs");
        return Ok(());
    }
    env.write("a.txt", "hello")?;
    set_xattr(&env.src("a.txt"), "user.note", b"hi")?;
    set_xattr(&env.src("a.txt"), "trusted.secret", b"root only")?;
    std::fs::write(env.src("b.txt"), "b")?;
    set_xattr(&env.src("b.txt"), "trusted.other", b"x")?;
    let st = std::process::Command::new("mkfifo")
        .arg(env.src("pipe"))
        .status()?;
    assert!(st.success());
    env.backup_ok(&[])?;
    std::fs::set_permissions(env.root(), std::fs::Permissions::from_mode(0o777))?;
    // The repository readable by the unprivileged user (its .trove is
    // private to its owner).
    let st = std::process::Command::new("chmod")
        .args(["-R", "a+rwX"])
        .arg(&env.backup)
        .status()?;
    assert!(st.success());
    let outdir = env.root().join("mine");
    std::fs::create_dir(&outdir)?;
    std::os::unix::fs::chown(&outdir, Some(65534), Some(65534))?;
    let target = outdir.join("out");
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(trove_bin())
        .arg("--repo")
        .arg(&env.backup)
        .args(["restore", "--target"])
        .arg(&target)
        .env_remove("TROVE_REPO")
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(std::fs::read(target.join("a.txt"))?, b"hello");
    assert!(std::fs::symlink_metadata(target.join("pipe"))?
        .file_type()
        .is_fifo());
    let got = xattrs(&target.join("a.txt"))?;
    assert_eq!(
        got.get(b"user.note".as_slice()).map(Vec::as_slice),
        Some(&b"hi"[..])
    );
    assert!(!got.contains_key(b"trusted.secret".as_slice()));
    assert_eq!(
        stderr.matches("namespace `trusted`").count(),
        1,
        "one warning per namespace: {stderr}"
    );
    Ok(())
}

/// Owner names are recorded beside ids; a restore as root maps them to the
/// ids this machine has for those names (tar's rule), `--numeric-owner`
/// keeps the recorded ids.
#[test]
fn owner_names_are_mapped_on_restore_unless_numeric_owner() -> TestResult {
    let name = format!("trv{}", std::process::id() % 100_000);
    let have = |cmd: &str| {
        std::process::Command::new(cmd)
            .arg("--help")
            .output()
            .is_ok()
    };
    if !have("useradd") || !have("usermod") || !have("userdel") {
        eprintln!("SKIP: no useradd/usermod/userdel here");
        return Ok(());
    }
    let run = |args: &[&str]| -> Res<bool> {
        Ok(std::process::Command::new(args[0])
            .args(&args[1..])
            .output()?
            .status
            .success())
    };
    // Free ids well away from real users.
    let (old, new) = (
        42_000 + std::process::id() % 1000,
        43_000 + std::process::id() % 1000,
    );
    if !run(&["useradd", "-M", "-N", "-u", &old.to_string(), &name])? {
        eprintln!("SKIP: useradd refused (read-only /etc?)");
        return Ok(());
    }
    let result = (|| -> TestResult {
        let env = TestEnv::new()?;
        env.write("owned.txt", "mine")?;
        std::os::unix::fs::lchown(env.src("owned.txt"), Some(old), None)?;
        env.backup_ok(&[])?;
        assert!(run(&["usermod", "-u", &new.to_string(), &name])?);
        let mapped = env.root().join("mapped");
        assert_ok(&restore(&env, &mapped, &[])?, "restore");
        assert_eq!(
            std::fs::metadata(mapped.join("owned.txt"))?.uid(),
            new,
            "the name maps to this machine's id"
        );
        let numeric = env.root().join("numeric");
        assert_ok(
            &restore(&env, &numeric, &["--numeric-owner"])?,
            "restore --numeric-owner",
        );
        assert_eq!(std::fs::metadata(numeric.join("owned.txt"))?.uid(), old);
        Ok(())
    })();
    let _ = run(&["userdel", &name]);
    result
}

/// A restore resolves each recorded owner name once and maps every file
/// by its own recorded ids: files of two users, interleaved, each get
/// their user's id on this machine; a group id with no name here stays as
/// recorded, per file.
#[test]
fn every_file_gets_its_own_mapped_owner_when_names_are_resolved_once() -> TestResult {
    let have = |cmd: &str| {
        std::process::Command::new(cmd)
            .arg("--help")
            .output()
            .is_ok()
    };
    if !have("useradd") || !have("usermod") || !have("userdel") {
        eprintln!("SKIP: no useradd/usermod/userdel here");
        return Ok(());
    }
    let run = |args: &[&str]| -> Res<bool> {
        Ok(std::process::Command::new(args[0])
            .args(&args[1..])
            .output()?
            .status
            .success())
    };
    let pid = std::process::id() % 100_000;
    let names = [format!("trva{pid}"), format!("trvb{pid}")];
    let old = [44_000 + pid % 1000, 45_000 + pid % 1000];
    let new = [46_000 + pid % 1000, 47_000 + pid % 1000];
    // Group ids no group on this machine has.
    let gids = [48_000 + pid % 1000, 49_000 + pid % 1000];
    for (n, id) in names.iter().zip(old) {
        if !run(&["useradd", "-M", "-N", "-u", &id.to_string(), n])? {
            for n in &names {
                let _ = run(&["userdel", n]);
            }
            eprintln!("SKIP: useradd refused (read-only /etc?)");
            return Ok(());
        }
    }
    let result = (|| -> TestResult {
        let env = TestEnv::new()?;
        let owner = |i: usize| (i % 2, (i / 2) % 2);
        for i in 0..40 {
            let f = format!("d{}/f{i:02}.txt", i % 3);
            env.write(&f, format!("file {i}"))?;
            let (u, g) = owner(i);
            std::os::unix::fs::lchown(env.src(&f), Some(old[u]), Some(gids[g]))?;
        }
        env.backup_ok(&[])?;
        for (n, id) in names.iter().zip(new) {
            assert!(run(&["usermod", "-u", &id.to_string(), n])?);
        }
        let mapped = env.root().join("mapped");
        assert_ok(&restore(&env, &mapped, &[])?, "restore");
        let numeric = env.root().join("numeric");
        assert_ok(
            &restore(&env, &numeric, &["--numeric-owner"])?,
            "restore --numeric-owner",
        );
        for i in 0..40 {
            let f = format!("d{}/f{i:02}.txt", i % 3);
            let (u, g) = owner(i);
            let m = std::fs::metadata(mapped.join(&f))?;
            assert_eq!((m.uid(), m.gid()), (new[u], gids[g]), "{f}");
            assert_eq!(
                std::fs::read(mapped.join(&f))?,
                format!("file {i}").as_bytes()
            );
            let m = std::fs::metadata(numeric.join(&f))?;
            assert_eq!((m.uid(), m.gid()), (old[u], gids[g]), "{f} --numeric-owner");
        }
        Ok(())
    })();
    for n in &names {
        let _ = run(&["userdel", n]);
    }
    result
}

/// A version-1 repository (trees and records without the new fields, as
/// trove wrote them before this change) is still read, restored and
/// verified, and a backup on top of it writes version 2 beside it.
#[test]
fn a_version_1_repository_is_still_read_and_extended() -> TestResult {
    use serde::Serialize;
    #[derive(Serialize)]
    struct MetaV1 {
        mode: u32,
        uid: u32,
        gid: u32,
        mtime_ns: i64,
    }
    #[derive(Serialize)]
    enum LeafV1 {
        File {
            size: u64,
            id: [u8; 32],
            dup: bool,
            meta: MetaV1,
        },
    }
    #[derive(Serialize)]
    struct NodeV1<L, D> {
        name: Vec<u8>,
        leaf: Option<L>,
        dir: Option<([u8; 32], D)>,
    }
    #[derive(Serialize)]
    struct TreeV1<L, D> {
        entries: Vec<NodeV1<L, D>>,
    }
    #[derive(Serialize)]
    struct SummaryV1 {
        counts: [u64; 12],
    }
    #[derive(Serialize)]
    struct SourceV1 {
        path: Vec<u8>,
        name: Vec<u8>,
        meta: MetaV1,
    }
    #[derive(Serialize)]
    struct RecordV1 {
        seq: u64,
        time_ns: i64,
        parent: Option<[u8; 32]>,
        sources: Vec<SourceV1>,
        root: [u8; 32],
        archive: [u8; 32],
        summary: SummaryV1,
    }
    let env = TestEnv::new()?;
    env.write("hello.txt", "hello from v1")?;
    // A repository made by `init`, then filled by hand the version-1 way.
    let init = env.cmd()?.args(["init"]).arg(&env.backup).output()?;
    assert_ok(&init, "init");
    // Repository format 1 too (one file per tree): the layout of that era.
    crate::damage::make_format_1(&env.backup)?;
    let trove_dir = env.backup.join(".trove");
    let put = |kind: &str, hex: &str, bytes: &[u8]| -> TestResult {
        let p = trove_dir.join(kind).join(&hex[..2]).join(hex);
        std::fs::create_dir_all(p.parent().ok_or("no parent")?)?;
        std::fs::write(p, bytes)?;
        Ok(())
    };
    let content = b"hello from v1";
    let oid = *blake3::hash(content).as_bytes();
    put("objects", &hex(&oid), content)?;
    let frame = |payload: &[u8]| -> Res<Vec<u8>> {
        let mut v = b"trvT\x01".to_vec();
        v.extend(zstd::bulk::compress(payload, 3)?);
        Ok(v)
    };
    let mtime = 1_600_000_000_000_000_000i64;
    let src_tree = postcard::to_stdvec(&TreeV1::<LeafV1, MetaV1> {
        entries: vec![NodeV1 {
            name: b"hello.txt".to_vec(),
            leaf: Some(LeafV1::File {
                size: content.len() as u64,
                id: oid,
                dup: false,
                meta: MetaV1 {
                    mode: 0o640,
                    uid: 0,
                    gid: 0,
                    mtime_ns: mtime,
                },
            }),
            dir: None,
        }],
    })?;
    let arch_tree = postcard::to_stdvec(&TreeV1::<(), ()> { entries: vec![] })?;
    let root = *blake3::hash(&src_tree).as_bytes();
    let arch = *blake3::hash(&arch_tree).as_bytes();
    put("trees", &hex(&root), &frame(&src_tree)?)?;
    put("trees", &hex(&arch), &frame(&arch_tree)?)?;
    let src_path = env.source.to_str().ok_or("non-UTF-8")?.as_bytes().to_vec();
    let mut counts = [0u64; 12];
    counts[0] = 1; // files
    counts[3] = content.len() as u64; // bytes
    counts[4] = 1; // backed up
    let rec = postcard::to_stdvec(&RecordV1 {
        seq: 1,
        time_ns: mtime,
        parent: None,
        sources: vec![SourceV1 {
            path: src_path,
            name: Vec::new(),
            meta: MetaV1 {
                mode: 0o755,
                uid: 0,
                gid: 0,
                mtime_ns: mtime,
            },
        }],
        root,
        archive: arch,
        summary: SummaryV1 { counts },
    })?;
    let mut rec_file = b"trvS\x01".to_vec();
    rec_file.extend_from_slice(&rec);
    let sid = hex(blake3::hash(&rec).as_bytes());
    std::fs::create_dir_all(trove_dir.join("snapshots"))?;
    std::fs::write(trove_dir.join("snapshots").join(&sid), &rec_file)?;

    let rows = ls(&env)?;
    assert_eq!(rows["hello.txt"]["size"], content.len());
    let target = env.root().join("out");
    assert_ok(&restore(&env, &target, &[])?, "restore of a v1 snapshot");
    assert_eq!(std::fs::read(target.join("hello.txt"))?, content);
    assert_eq!(
        std::fs::metadata(target.join("hello.txt"))?.mode() & 0o7777,
        0o640
    );
    // A new run on top: version 2 beside version 1, both read.
    env.write("new.txt", "written by v2")?;
    env.backup_ok(&[])?;
    assert_eq!(env.snapshot_count()?, 2);
    let out = env.repo_cmd(&["verify"])?;
    assert_ok(&out, "verify after the upgrade");
    // The run upgraded the repository to format 2: its trees are in packs.
    assert!(!trove_dir.join("trees").exists(), "trees/ is gone");
    let cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(trove_dir.join("config"))?)?;
    assert_eq!(cfg["format"], 2);
    let first = env.snapshots()?[0]["id"]
        .as_str()
        .ok_or("no id")?
        .to_string();
    let out = env.repo_cmd(&["ls", &first, "--json"])?;
    assert_ok(&out, "ls of the v1 snapshot");
    Ok(())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Holes found with SEEK_DATA while reading: data at the very start, in
/// the middle at an odd offset and in the last bytes (no hole at either
/// end), a size that is no multiple of a block — stored and restored byte
/// for byte, and `verify` re-hashes the sparse object clean.
#[test]
fn holes_between_data_at_both_ends_are_stored_and_restored_exactly() -> TestResult {
    use std::io::{Seek, SeekFrom, Write};
    let env = TestEnv::new()?;
    let size: u64 = (40 << 20) + 77;
    let mut f = std::fs::File::create(env.src("mixed"))?;
    f.set_len(size)?;
    for (at, byte) in [(0u64, 1u8), ((17 << 20) + 4095, 2), (size - 3000, 3)] {
        f.seek(SeekFrom::Start(at))?;
        f.write_all(&vec![byte; 3000])?;
    }
    drop(f);
    env.backup_ok(&[])?;
    let target = env.root().join("out");
    assert_ok(&restore(&env, &target, &[])?, "restore");
    assert_eq!(
        std::fs::read(target.join("mixed"))?,
        std::fs::read(env.src("mixed"))?
    );
    assert_ok(&env.repo_cmd(&["verify"])?, "verify");
    Ok(())
}
