//! The repository proper: `.trove/` inside a backup root. This module owns
//! the layout (which file lives where), creation and opening, and the
//! repository config; its submodules own objects, trees, snapshots, the
//! stat cache and the engine lock.

pub mod cache;
pub mod lock;
pub mod objects;
pub mod snapshot;
pub mod tree;

use crate::error::{Error, IoContext, Result};
use crate::fsutil;
use crate::id::{Digest, HashAlgo, ObjectId, SnapshotId, TreeId};
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::{Path, PathBuf};

/// The folders of `.trove` that hold part of every snapshot, and what.
const LAYOUT_HOLDING_DATA: [(&str, &str); 3] = [
    ("objects", "the file contents"),
    ("trees", "the snapshots' folder listings"),
    ("snapshots", "the snapshot records"),
];

/// The repository format this build writes and reads.
pub const REPO_FORMAT: u32 = 1;

/// `.trove/config`: small, JSON, human-readable on purpose.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoConfig {
    pub format: u32,
    pub id: String,
    pub hash: HashAlgo,
}

impl RepoConfig {
    /// Decode `.trove/config` (untrusted bytes: never panics).
    pub fn parse(data: &[u8], path: &Path) -> Result<RepoConfig> {
        let config: RepoConfig = serde_json::from_slice(data)
            .map_err(|e| Error::corrupt("repository config", path, e.to_string()))?;
        if config.format != REPO_FORMAT {
            return Err(Error::Version {
                path: path.to_path_buf(),
                found: config.format,
                supported: REPO_FORMAT,
            });
        }
        // The id is written as 32 lowercase hex digits and never changes:
        // anything else is damage (a flipped bit in it passed unseen).
        if config.id.len() != 32
            || !config
                .id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(Error::corrupt(
                "repository config",
                path,
                format!("its id {:?} is not 32 lowercase hex digits", config.id),
            ));
        }
        Ok(config)
    }
}

#[derive(Clone, Debug)]
pub struct Repo {
    /// The backup root (the browsable tree lives here).
    pub root: PathBuf,
    /// `root/.trove`.
    pub dir: PathBuf,
    pub config: RepoConfig,
}

impl Repo {
    pub fn dir_of(root: &Path) -> PathBuf {
        root.join(".trove")
    }

    pub fn exists(root: &Path) -> bool {
        Self::dir_of(root).join("config").is_file()
    }

    /// Create a repository at `root` (creating `root` 0700 if needed). An
    /// existing repository is opened instead, after checking the algorithm.
    pub fn init(root: &Path, algo: HashAlgo) -> Result<Repo> {
        if Self::exists(root) {
            let repo = Self::open_writable(root)?;
            repo.check_algo(Some(algo))?;
            return Ok(repo);
        }
        Self::check_can_init(root)?;
        fsutil::create_private_dir(root)?;
        let dir = Self::dir_of(root);
        fsutil::create_private_dir(&dir)?;
        for sub in ["objects", "trees", "snapshots", "cache", "tmp", "logs"] {
            fsutil::create_private_dir(&dir.join(sub))?;
        }
        // A repository id only has to be unique, not secret: hash the
        // creation time, pid and path.
        let mut seed = Vec::new();
        seed.extend_from_slice(&now_ns().to_le_bytes());
        seed.extend_from_slice(&std::process::id().to_le_bytes());
        seed.extend_from_slice(crate::pathbytes::os_bytes(root.as_os_str()));
        let id = crate::hash::hash_bytes(HashAlgo::Blake3, &seed).to_hex();
        let config = RepoConfig {
            format: REPO_FORMAT,
            id: id[..32].to_string(),
            hash: algo,
        };
        let json =
            serde_json::to_vec_pretty(&config).map_err(|e| Error::Internal(e.to_string()))?;
        // The config is written last: a crash before this point leaves a
        // directory that is not yet a repository, and init can run again.
        fsutil::atomic_write(&dir.join("tmp"), &dir.join("config"), &json, 0o600)?;
        fsutil::fsync_dir(root)?;
        Ok(Repo {
            root: root.to_path_buf(),
            dir,
            config,
        })
    }

    /// A repository is only created in a new or empty directory, so the
    /// browsable tree never mixes with (or moves aside) a user's files.
    pub fn check_can_init(root: &Path) -> Result<()> {
        if Self::exists(root) {
            return Ok(());
        }
        // A config that is there but not a regular file, or gone from a
        // `.trove` that holds data, is a damaged repository: say so (exit
        // 1), rather than "not a repository" or a new config over old data.
        let dir = Self::dir_of(root);
        if fs::symlink_metadata(dir.join("config")).is_ok() || Self::holds_data(&dir) {
            return Self::read_config(root).map(|_| ());
        }
        if let Ok(rd) = fs::read_dir(root) {
            // `.trove` alone may exist (a log directory created before init).
            let foreign = rd.filter_map(|e| e.ok()).any(|e| e.file_name() != ".trove");
            if foreign {
                return Err(Error::Usage(format!(
                    "{} is not empty and not a trove repository: choose a new or empty directory as the backup root",
                    root.display()
                )));
            }
        }
        Ok(())
    }

    /// Open a repository for reading: nothing is created. A folder that
    /// holds part of every snapshot (objects, trees, records) missing is
    /// damage, reported as such; the others may be absent.
    pub fn open(root: &Path) -> Result<Repo> {
        let repo = Self::read_config(root)?;
        for (sub, what) in LAYOUT_HOLDING_DATA {
            let p = repo.dir.join(sub);
            if !p.is_dir() {
                return Err(Error::MissingFolder { path: p, what });
            }
        }
        Ok(repo)
    }

    /// Open a repository to write to it: the layout's missing folders are
    /// created (a user may have removed them by hand; a missing one that
    /// held data is said so in the log).
    pub fn open_writable(root: &Path) -> Result<Repo> {
        let repo = Self::read_config(root)?;
        for sub in ["objects", "trees", "snapshots", "cache", "tmp", "logs"] {
            let p = repo.dir.join(sub);
            if !p.is_dir() {
                if let Some((_, what)) = LAYOUT_HOLDING_DATA.iter().find(|(s, _)| *s == sub) {
                    tracing::warn!(
                        "repository folder {} was missing (it holds {what}): created empty; run `trove verify` to see what is lost",
                        p.display()
                    );
                }
                fsutil::create_private_dir(&p)?;
            }
        }
        Ok(repo)
    }

    /// Whether `.trove` holds any snapshot record or object: the data a
    /// missing config must not be allowed to orphan.
    fn holds_data(dir: &Path) -> bool {
        ["snapshots", "objects"]
            .iter()
            .any(|sub| fs::read_dir(dir.join(sub)).is_ok_and(|mut rd| rd.next().is_some()))
    }

    fn read_config(root: &Path) -> Result<Repo> {
        let dir = Self::dir_of(root);
        let cfg_path = dir.join("config");
        let data = match fsutil::read_repo_file(&cfg_path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if Self::holds_data(&dir) {
                    return Err(Error::MissingConfig {
                        path: cfg_path,
                        dir,
                    });
                }
                return Err(Error::NotARepository {
                    path: root.to_path_buf(),
                });
            }
            Err(e) => return Err(Error::io("read", &cfg_path, e)),
        };
        let config = RepoConfig::parse(&data, &cfg_path)?;
        Ok(Repo {
            root: root.to_path_buf(),
            dir,
            config,
        })
    }

    /// Refuse a configuration whose hash algorithm disagrees with the one
    /// the repository was created with.
    pub fn check_algo(&self, wanted: Option<HashAlgo>) -> Result<()> {
        match wanted {
            Some(w) if w != self.config.hash => Err(Error::HashMismatch {
                path: self.root.clone(),
                repo: self.config.hash.to_string(),
                wanted: w.to_string(),
            }),
            _ => Ok(()),
        }
    }

    pub fn algo(&self) -> HashAlgo {
        self.config.hash
    }
    pub fn objects_dir(&self) -> PathBuf {
        self.dir.join("objects")
    }
    pub fn trees_dir(&self) -> PathBuf {
        self.dir.join("trees")
    }
    pub fn snapshots_dir(&self) -> PathBuf {
        self.dir.join("snapshots")
    }
    pub fn cache_dir(&self) -> PathBuf {
        self.dir.join("cache")
    }
    /// `cache/materialized`: the id of the snapshot the browsable tree
    /// shows (written by the materializer after each update).
    pub fn marker_path(&self) -> PathBuf {
        self.cache_dir().join("materialized")
    }
    /// The snapshot the browsable tree shows, as its marker says; `None`
    /// when the marker is absent or unreadable (it is disposable).
    pub fn read_marker(&self) -> Option<SnapshotId> {
        let s = fsutil::read_repo_file(&self.marker_path()).ok()?;
        SnapshotId::from_hex(String::from_utf8_lossy(&s).trim())
    }
    pub fn tmp_dir(&self) -> PathBuf {
        self.dir.join("tmp")
    }
    pub fn logs_dir(&self) -> PathBuf {
        self.dir.join("logs")
    }
    pub fn lock_path(&self) -> PathBuf {
        self.dir.join("lock")
    }
    pub fn object_path(&self, id: &ObjectId) -> PathBuf {
        self.objects_dir().join(id.fanout())
    }
    pub fn tree_path(&self, id: &TreeId) -> PathBuf {
        self.trees_dir().join(id.fanout())
    }
    pub fn digest_path(&self, kind: StoreKind, d: &Digest) -> PathBuf {
        match kind {
            StoreKind::Object => self.objects_dir().join(d.fanout()),
            StoreKind::Tree => self.trees_dir().join(d.fanout()),
        }
    }

    /// Remove leftovers of interrupted writes. Only a writer holding the
    /// exclusive lock may call this: nobody else can be writing there.
    pub fn clean_tmp(&self) -> Result<()> {
        let tmp = self.tmp_dir();
        let rd = fs::read_dir(&tmp).ctx("list", &tmp)?;
        for ent in rd {
            let ent = ent.ctx("list", &tmp)?;
            fsutil::remove_any(&ent.path())?;
        }
        Ok(())
    }
}

/// Check the 5-byte header every trove file starts with (4 magic bytes, one
/// version byte) and return what follows it. A wrong magic is corruption; an
/// unknown version is a file from a newer trove, reported as such.
pub fn check_header<'a>(
    data: &'a [u8],
    magic: &[u8; 4],
    version: u8,
    what: &'static str,
    path: &Path,
) -> Result<&'a [u8]> {
    if data.len() < 5 || &data[..4] != magic {
        return Err(Error::corrupt(what, path, "bad magic"));
    }
    if data[4] != version {
        return Err(Error::Version {
            path: path.to_path_buf(),
            found: data[4] as u32,
            supported: version as u32,
        });
    }
    Ok(&data[5..])
}

/// Which content-addressed store a digest lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreKind {
    Object,
    Tree,
}

pub fn now_ns() -> i64 {
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i64,
        Err(e) => -(e.duration().as_nanos() as i64),
    }
}
