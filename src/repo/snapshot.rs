//! Snapshot records: one immutable record per completed run (in the local
//! repository, `snapshots/<id>`), naming the source tree, the archive tree, the run's
//! time, sources, parent and summary counts. Writing a record is the commit
//! point of a backup: everything it names is durable before it is written.
//!
//! File format (docs/FORMAT.md): `b"trvS"`, one version byte, then the
//! postcard encoding of a [`SnapshotRecord`]. The id is the hash of the
//! postcard bytes.
//!
//! Everything here goes through [`crate::repo::RepoRead`] /
//! [`crate::repo::RepoWrite`]: [`scan`] (every record, damaged ones named),
//! [`resolve`] (what a user typed), [`load_snapshot`] (a record's two
//! trees, flat). It knows no repository layout.

use crate::error::{Error, IoContext, Result};
use crate::hash::hash_bytes;
use crate::id::{SnapshotId, TreeId};
use crate::model::{Entry, History, Meta};
use crate::repo::tree::{self, Archive};
use crate::repo::{RepoRead, RepoWrite};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

pub const SNAPSHOT_MAGIC: &[u8; 4] = b"trvS";
pub const SNAPSHOT_VERSION: u8 = 2;
/// The oldest record version still read (version 1 lacks the owner
/// names and the count of special files).
pub const SNAPSHOT_MIN_VERSION: u8 = 1;

/// One source directory of a snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceRecord {
    /// The absolute source path as given (bytes).
    pub path: Vec<u8>,
    /// Its folder in the snapshot and browsable tree; empty when the
    /// snapshot has a single source (its contents are at the top).
    pub name: Vec<u8>,
    /// The source directory's own metadata.
    pub meta: Meta,
}

/// Counts of one run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    /// Logical bytes of all files in the snapshot.
    pub bytes: u64,
    pub backed_up: u64,
    pub duplicates: u64,
    pub modified: u64,
    pub unchanged: u64,
    pub deleted: u64,
    /// Objects (file contents) this run added to the store, and their bytes.
    pub new_objects: u64,
    pub new_bytes: u64,
    /// Paths that could not be backed up in this run.
    pub errors: u64,
    /// FIFOs, sockets and devices recorded (version 2).
    #[serde(deserialize_with = "crate::model::since_v2")]
    pub specials: u64,
}

/// The names of the owners a snapshot's entries have, by id, as the
/// backup machine resolved them (tar's and restic's `user`/`group`): a
/// restore as root on another machine maps them back to its own ids.
/// Ids with no name there are absent. Sorted by id.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owners {
    pub users: Vec<(u32, Vec<u8>)>,
    pub groups: Vec<(u32, Vec<u8>)>,
}

impl Owners {
    pub fn user(&self, uid: u32) -> Option<&[u8]> {
        let k = self.users.binary_search_by_key(&uid, |u| u.0).ok()?;
        Some(&self.users[k].1)
    }

    pub fn group(&self, gid: u32) -> Option<&[u8]> {
        let k = self.groups.binary_search_by_key(&gid, |g| g.0).ok()?;
        Some(&self.groups[k].1)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRecord {
    /// Increases by one per snapshot: orders records whose clocks disagree.
    pub seq: u64,
    pub time_ns: i64,
    pub parent: Option<SnapshotId>,
    pub sources: Vec<SourceRecord>,
    /// The source tree.
    pub root: TreeId,
    /// Versions and deleted contents (see `store::tree::History`).
    pub archive: TreeId,
    pub summary: Summary,
    /// Owner names (version 2).
    #[serde(deserialize_with = "crate::model::since_v2")]
    pub owners: Owners,
}

impl SnapshotRecord {
    /// How far its source tree may expand: the entries it counts.
    pub fn source_limit(&self) -> tree::Limit {
        let s = &self.summary;
        tree::Limit::counted(
            s.files
                .saturating_add(s.dirs)
                .saturating_add(s.symlinks)
                .saturating_add(s.specials),
        )
    }
}

/// A record with its id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub id: SnapshotId,
    pub record: SnapshotRecord,
}

pub fn encode(rec: &SnapshotRecord) -> Result<Vec<u8>> {
    postcard::to_stdvec(rec).map_err(|e| Error::Internal(format!("encode snapshot: {e}")))
}

pub fn decode(data: &[u8], path: &Path) -> Result<SnapshotRecord> {
    let (version, payload) = crate::codec::check_header_in(
        data,
        SNAPSHOT_MAGIC,
        (SNAPSHOT_MIN_VERSION, SNAPSHOT_VERSION),
        "snapshot record",
        path,
    )?;
    let _format = crate::model::decoding_version(version);
    let (rec, rest): (SnapshotRecord, &[u8]) = postcard::take_from_bytes(payload)
        .map_err(|e| Error::corrupt("snapshot record", path, format!("decode: {e}")))?;
    if !rest.is_empty() {
        return Err(Error::corrupt("snapshot record", path, "trailing bytes"));
    }
    Ok(rec)
}

/// Write a record durably; returns its id. This is the commit point.
pub fn write(repo: &dyn RepoWrite, rec: &SnapshotRecord) -> Result<SnapshotId> {
    let payload = encode(rec)?;
    let id = SnapshotId(hash_bytes(repo.reader().algo(), &payload));
    let mut data = Vec::with_capacity(payload.len() + 5);
    data.extend_from_slice(SNAPSHOT_MAGIC);
    data.push(SNAPSHOT_VERSION);
    data.extend_from_slice(&payload);
    repo.write_snapshot(&id, &data)?;
    Ok(id)
}

pub fn read(repo: &dyn RepoRead, id: &SnapshotId) -> Result<SnapshotRecord> {
    let path = repo.locate_snapshot(id);
    let data = repo.read_snapshot(id).ctx("read snapshot", &path)?;
    check(repo, id, &data, &path)
}

/// Decode a record's stored bytes (at `path`) and check they hash to its id.
fn check(repo: &dyn RepoRead, id: &SnapshotId, data: &[u8], path: &Path) -> Result<SnapshotRecord> {
    let rec = decode(data, path)?;
    if hash_bytes(repo.algo(), &data[5..]) != id.0 {
        return Err(Error::corrupt(
            "snapshot record",
            path,
            "content does not match its id",
        ));
    }
    Ok(rec)
}

/// A record in `snapshots/` that could not be read: truncated, garbled,
/// of an unknown version or unreadable. It is never skipped silently:
/// whoever resolves `latest` or acts on every snapshot asks [`Scan`].
#[derive(Debug)]
pub struct DamagedRecord {
    pub id: SnapshotId,
    pub path: PathBuf,
    pub error: Error,
    /// The sequence number its readable prefix claims (postcard puts `seq`
    /// first), when the header is intact: it places the record among the
    /// others. Untrusted, used only to refuse more, never less.
    pub seq: Option<u64>,
    /// Its time, likewise, when the prefix holds it.
    pub time_ns: Option<i64>,
}

impl DamagedRecord {
    /// What is wrong with it, without the path (the caller names that).
    pub fn reason(&self) -> String {
        match &self.error {
            Error::Corrupt { msg, .. } => msg.clone(),
            Error::Io { action, source, .. } => format!("{action}: {source}"),
            Error::Version { found, .. } => format!("format version {found}"),
            e => e.to_string(),
        }
    }
}

/// Every record in `snapshots/`: the readable ones oldest first (by
/// sequence number, then time, then id, so the order is total and
/// deterministic) and the damaged ones beside them.
#[derive(Debug, Default)]
pub struct Scan {
    pub snapshots: Vec<Snapshot>,
    pub damaged: Vec<DamagedRecord>,
}

impl Scan {
    /// Damaged records that may be newer than the newest readable one:
    /// those whose sequence number is unknown or not below it.
    pub fn damaged_newer(&self) -> impl Iterator<Item = &DamagedRecord> {
        let newest = self.snapshots.last().map(|s| s.record.seq);
        self.damaged.iter().filter(move |d| match (d.seq, newest) {
            (Some(s), Some(n)) => s >= n,
            _ => true,
        })
    }

    /// The latest snapshot, or an error while a record that may be newer
    /// is damaged (resolving `latest` must never skip it silently).
    pub fn latest(&self) -> Result<Option<&Snapshot>> {
        match self.damaged_newer().next() {
            Some(d) => Err(Error::DamagedLatest {
                path: d.path.clone(),
                reason: d.reason(),
            }),
            None => Ok(self.snapshots.last()),
        }
    }

    /// The newest readable snapshot, damaged newer records notwithstanding
    /// (`backup --allow-damaged-latest` builds on it).
    pub fn newest_readable(&self) -> Option<&Snapshot> {
        self.snapshots.last()
    }

    /// A sequence number above every record's, damaged ones included: one
    /// per damaged record whose number is unknown is left free, so even
    /// then none is reused.
    pub fn next_seq(&self) -> u64 {
        let known = self
            .snapshots
            .iter()
            .map(|s| s.record.seq)
            .chain(self.damaged.iter().filter_map(|d| d.seq))
            .max()
            .unwrap_or(0);
        let unknown = self.damaged.iter().filter(|d| d.seq.is_none()).count() as u64;
        known.saturating_add(unknown).saturating_add(1)
    }

    /// Fail, naming the first damaged record, unless every record reads:
    /// what acts on all snapshots (a collection, retention) checks this
    /// before it changes anything.
    pub fn check_intact(&self, action: &'static str) -> Result<()> {
        match self.damaged.first() {
            Some(d) => Err(Error::DamagedRecord {
                action,
                path: d.path.clone(),
                reason: d.reason(),
            }),
            None => Ok(()),
        }
    }
}

/// Read every record in `snapshots/`.
pub fn scan(repo: &dyn RepoRead) -> Result<Scan> {
    let mut out = Scan::default();
    for id in repo.snapshot_ids()? {
        // Read once: a damaged record's readable prefix still places it.
        let path = repo.locate_snapshot(&id);
        let result = match repo.read_snapshot(&id) {
            Ok(data) => check(repo, &id, &data, &path).map_err(|e| (e, claimed(&data))),
            Err(e) => Err((Error::io("read snapshot", &path, e), (None, None))),
        };
        match result {
            Ok(record) => out.snapshots.push(Snapshot { id, record }),
            Err((error, (seq, time_ns))) => {
                out.damaged.push(DamagedRecord {
                    id,
                    path,
                    error,
                    seq,
                    time_ns,
                });
            }
        }
    }
    // The browsable tree's marker names the snapshot it shows, which was
    // the latest when it was written (retention never forgets the latest,
    // and the record is durable before the marker is written). A marker
    // naming a record that is gone means the newest record was lost:
    // without this, `latest` would quietly fall back to an older one and
    // a writer would undo the browsable tree and collect the content only
    // the lost snapshot held (the damage matrix found that).
    if let Some(id) = repo.read_marker() {
        let known =
            out.snapshots.iter().any(|s| s.id == id) || out.damaged.iter().any(|d| d.id == id);
        if !known {
            let path = repo.locate_snapshot(&id);
            out.damaged.push(DamagedRecord {
                id,
                error: Error::corrupt(
                    "snapshot record",
                    &path,
                    format!(
                        "missing: the browsable tree shows this snapshot ({}), but its record is gone",
                        repo.locate_marker().display()
                    ),
                ),
                path,
                seq: None,
                time_ns: None,
            });
        }
    }
    out.snapshots.sort_by(|a, b| {
        (a.record.seq, a.record.time_ns, a.id).cmp(&(b.record.seq, b.record.time_ns, b.id))
    });
    out.damaged.sort_by_key(|d| (d.seq, d.time_ns, d.id));
    Ok(out)
}

/// The sequence number and time a damaged record's readable prefix
/// claims, when its header is intact.
fn claimed(data: &[u8]) -> (Option<u64>, Option<i64>) {
    if data.len() < 5
        || &data[..4] != SNAPSHOT_MAGIC
        || !(SNAPSHOT_MIN_VERSION..=SNAPSHOT_VERSION).contains(&data[4])
    {
        return (None, None);
    }
    let _format = crate::model::decoding_version(data[4]);
    let payload = &data[5..];
    if let Ok((rec, _)) = postcard::take_from_bytes::<SnapshotRecord>(payload) {
        return (Some(rec.seq), Some(rec.time_ns));
    }
    match postcard::take_from_bytes::<u64>(payload) {
        Ok((seq, rest)) => (
            Some(seq),
            postcard::take_from_bytes::<i64>(rest).ok().map(|(t, _)| t),
        ),
        Err(_) => (None, None),
    }
}

/// Every readable snapshot, oldest first, and the errors of the damaged
/// records (see [`scan`], which callers resolving `latest` use).
pub fn list(repo: &dyn RepoRead) -> Result<(Vec<Snapshot>, Vec<Error>)> {
    let s = scan(repo)?;
    Ok((
        s.snapshots,
        s.damaged.into_iter().map(|d| d.error).collect(),
    ))
}

/// The latest snapshot; an error while a record that may be newer is
/// damaged.
pub fn latest(repo: &dyn RepoRead) -> Result<Option<Snapshot>> {
    Ok(scan(repo)?.latest()?.cloned())
}

/// Resolve what a user typed: `latest`, a hex id prefix, or a time
/// (RFC 3339 or `YYYY-MM-DD[ HH:MM[:SS]]` local time) meaning the newest
/// snapshot at or before it. A damaged record that could be the answer
/// is an error naming it, never skipped.
pub fn resolve(repo: &dyn RepoRead, spec: &str) -> Result<Snapshot> {
    let scan = scan(repo)?;
    if spec == "latest" {
        return scan
            .latest()?
            .cloned()
            .ok_or_else(|| Error::NoSuchSnapshot(spec.to_string()));
    }
    let all = &scan.snapshots;
    if !spec.is_empty() && spec.len() <= 64 && spec.bytes().all(|c| c.is_ascii_hexdigit()) {
        let lower = spec.to_ascii_lowercase();
        let hits: Vec<&Snapshot> = all
            .iter()
            .filter(|s| s.id.to_hex().starts_with(&lower))
            .collect();
        let damaged: Vec<&DamagedRecord> = scan
            .damaged
            .iter()
            .filter(|d| d.id.to_hex().starts_with(&lower))
            .collect();
        match (hits.len(), damaged.first()) {
            (1, None) => return Ok(hits[0].clone()),
            (0, Some(d)) if damaged.len() == 1 => {
                return Err(Error::corrupt("snapshot record", &d.path, d.reason()))
            }
            (n, _) if n + damaged.len() > 1 => {
                return Err(Error::AmbiguousSnapshot(spec.to_string()))
            }
            _ => {}
        }
    }
    if let Some(t) = parse_time(spec) {
        let found = all.iter().rev().find(|s| s.record.time_ns <= t);
        // A damaged record may be the newest at or before `t`: when its time
        // is unknown or not after `t`, and nothing says it is older than
        // the one found.
        let seq = found.map(|s| s.record.seq);
        let later = |d: &DamagedRecord| {
            // A readable record before it in sequence yet after `t` puts
            // it after `t` too.
            d.seq.is_some_and(|ds| {
                all.iter()
                    .any(|s| s.record.seq < ds && s.record.time_ns > t)
            })
        };
        if let Some(d) = scan.damaged.iter().find(|d| {
            d.time_ns.is_none_or(|dt| dt <= t)
                && d.seq.is_none_or(|ds| seq.is_none_or(|s| ds > s))
                && !later(d)
        }) {
            return Err(Error::DamagedLatest {
                path: d.path.clone(),
                reason: d.reason(),
            });
        }
        return found
            .cloned()
            .ok_or_else(|| Error::NoSuchSnapshot(spec.to_string()));
    }
    Err(Error::NoSuchSnapshot(spec.to_string()))
}

/// Parse a user-given time into ns since the epoch. A time past 2262 (or
/// before 1678) saturates: it still means "after (before) every snapshot",
/// instead of wrapping around to some other date.
pub fn parse_time(s: &str) -> Option<i64> {
    let ns = |ts: jiff::Timestamp| {
        let n = ts.as_nanosecond();
        i64::try_from(n).unwrap_or(if n < 0 { i64::MIN } else { i64::MAX })
    };
    if let Ok(ts) = s.parse::<jiff::Timestamp>() {
        return Some(ns(ts));
    }
    let tz = jiff::tz::TimeZone::system();
    for fmt in [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%d",
    ] {
        let parsed = if fmt == "%Y-%m-%d" {
            jiff::civil::Date::strptime(fmt, s).map(|d| d.to_datetime(jiff::civil::Time::MAX))
        } else {
            jiff::civil::DateTime::strptime(fmt, s)
        };
        if let Ok(dt) = parsed {
            if let Ok(z) = dt.to_zoned(tz.clone()) {
                return Some(ns(z.timestamp()));
            }
        }
    }
    None
}

/// Format ns since the epoch as local time, `YYYY-mm-dd HH:MM:SS`.
pub fn format_time(ns: i64) -> String {
    match jiff::Timestamp::from_nanosecond(ns as i128) {
        Ok(ts) => ts
            .to_zoned(jiff::tz::TimeZone::system())
            .strftime("%Y-%m-%d %H:%M:%S")
            .to_string(),
        Err(_) => format!("@{ns}"),
    }
}

/// Load a snapshot's two trees: its source listing and its archive.
pub fn load_snapshot(repo: &dyn RepoRead, rec: &SnapshotRecord) -> Result<(Vec<Entry>, Archive)> {
    load_listing(repo, rec, &mut HashSet::new())
}

/// Read `rec`'s archive trees through, holding none of them: a reader
/// that shows only the source (`restore`, `ls`) still refuses a snapshot
/// whose trees are damaged or hostile, as the whole-listing readers do.
pub fn check_archive(repo: &dyn RepoRead, rec: &SnapshotRecord) -> Result<()> {
    let mut c =
        tree::FlatCursor::<History, ()>::new(repo, &rec.archive, None, tree::Limit::archive())?;
    while c.next()?.is_some() {}
    Ok(())
}

/// [`load_snapshot`], noting every tree id met in `seen`.
pub fn load_listing(
    repo: &dyn RepoRead,
    rec: &SnapshotRecord,
    seen: &mut HashSet<TreeId>,
) -> Result<(Vec<Entry>, Archive)> {
    let e = tree::flat_to_source(tree::read_flat(repo, &rec.root, seen, rec.source_limit())?);
    let a = tree::flat_to_archive(tree::read_flat(
        repo,
        &rec.archive,
        seen,
        tree::Limit::archive(),
    )?);
    Ok((e, a))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::Digest;
    use proptest::prelude::*;

    fn rec(seq: u64) -> SnapshotRecord {
        SnapshotRecord {
            seq,
            time_ns: 1_700_000_000_000_000_000,
            parent: Some(SnapshotId(Digest([1; 32]))),
            sources: vec![SourceRecord {
                path: b"/src\xff".to_vec(),
                name: Vec::new(),
                meta: Meta::default(),
            }],
            root: TreeId(Digest([2; 32])),
            archive: TreeId(Digest([3; 32])),
            summary: Summary {
                files: 3,
                ..Summary::default()
            },
            owners: Default::default(),
        }
    }

    /// A record as it is stored: header, then its encoding.
    fn framed(r: &SnapshotRecord) -> Vec<u8> {
        let mut data = SNAPSHOT_MAGIC.to_vec();
        data.push(SNAPSHOT_VERSION);
        data.extend(encode(r).expect("in memory"));
        data
    }

    #[test]
    fn round_trip_and_corruption() {
        let r = rec(4);
        let data = framed(&r);
        assert_eq!(decode(&data, Path::new("s")).expect("valid"), r);
        for cut in 0..data.len() {
            assert!(
                decode(&data[..cut], Path::new("s")).is_err(),
                "truncated at {cut}"
            );
        }
        let mut v = data.clone();
        v[4] = 9;
        assert!(matches!(
            decode(&v, Path::new("s")),
            Err(Error::Version { .. })
        ));
    }

    fn damaged(seq: Option<u64>) -> DamagedRecord {
        DamagedRecord {
            id: SnapshotId(Digest([9; 32])),
            path: PathBuf::from("s"),
            error: Error::corrupt("snapshot record", "s", "x"),
            seq,
            time_ns: None,
        }
    }

    fn snap(seq: u64) -> Snapshot {
        Snapshot {
            id: SnapshotId(Digest([seq as u8; 32])),
            record: rec(seq),
        }
    }

    #[test]
    fn a_damaged_record_that_may_be_newest_blocks_latest() {
        // (readable seqs, damaged seqs, latest resolves, next seq)
        type Case<'a> = (&'a [u64], &'a [Option<u64>], bool, u64);
        let cases: &[Case] = &[
            (&[1, 2], &[], true, 3),
            (&[1, 2], &[Some(3)], false, 4),
            (&[1, 2], &[None], false, 4),
            (&[1, 3], &[Some(2)], true, 4),
            (&[1, 2], &[Some(2)], false, 3),
            (&[1, 2], &[None, None], false, 5),
            (&[], &[None], false, 2),
            (&[1], &[Some(u64::MAX)], false, u64::MAX),
        ];
        for (ok, bad, resolves, next) in cases {
            let s = Scan {
                snapshots: ok.iter().map(|&q| snap(q)).collect(),
                damaged: bad.iter().map(|&q| damaged(q)).collect(),
            };
            assert_eq!(s.latest().is_ok(), *resolves, "{ok:?} {bad:?}");
            assert_eq!(s.next_seq(), *next, "{ok:?} {bad:?}");
            if !resolves {
                assert!(matches!(s.latest(), Err(Error::DamagedLatest { .. })));
            }
        }
    }

    #[test]
    fn a_truncated_record_still_tells_its_sequence_number() {
        let r = rec(77);
        let data = framed(&r);
        assert_eq!(claimed(&data), (Some(77), Some(r.time_ns)));
        assert_eq!(
            claimed(&data[..data.len() / 2]),
            (Some(77), Some(r.time_ns))
        );
        assert_eq!(claimed(&data[..6]).0, Some(77));
        assert_eq!(claimed(&data[..5]), (None, None));
        assert_eq!(claimed(b""), (None, None));
        let mut v = data.clone();
        v[0] ^= 1;
        assert_eq!(claimed(&v), (None, None));
    }

    #[test]
    fn times_parse() {
        assert!(parse_time("2026-01-02T03:04:05Z").is_some());
        assert!(parse_time("2026-01-02 03:04").is_some());
        assert!(parse_time("2026-01-02").is_some());
        assert!(parse_time("yesterday-ish").is_none());
        // Past what an i64 of ns holds: saturates, never wraps.
        assert_eq!(parse_time("9000-01-01"), Some(i64::MAX));
        assert_eq!(parse_time("2300-01-01T00:00:00Z"), Some(i64::MAX));
        assert_eq!(parse_time("1000-01-01"), Some(i64::MIN));
    }

    proptest! {
        #[test]
        fn prop_decode_never_panics(data in prop::collection::vec(any::<u8>(), 0..300)) {
            let mut v = SNAPSHOT_MAGIC.to_vec();
            v.push(SNAPSHOT_VERSION);
            v.extend(data);
            let _ = decode(&v, Path::new("fuzz"));
        }
    }
}
