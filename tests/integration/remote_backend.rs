//! The S3 backend against a real server (SeaweedFS, see `s3server.rs`):
//! the round trip of every request kind, and each failure sorted into the
//! kind the commands report.

use crate::common::TestResult;
use crate::s3server::S3Server;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use trove::remote::backend::{self, Backend, BackendError, Listed, S3Settings};

fn open_s3(
    server: &S3Server,
    bucket: &str,
    prefix: &str,
) -> Result<Box<dyn Backend>, BackendError> {
    backend::open_with(&server.url(bucket, prefix), false, &server.settings())
}

#[test]
fn s3_round_trip_of_every_request_kind() -> TestResult {
    let Some(server) = S3Server::start() else {
        return Ok(());
    };
    server.create_bucket("trove-rt")?;
    let b = open_s3(&server, "trove-rt", "repo/one")?;
    assert_eq!(b.url(), "s3://trove-rt/repo/one");
    b.check_reachable()?;
    assert_eq!(b.list("")?, Vec::new(), "a fresh prefix is empty");

    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    b.put("config", b"cfg-1")?;
    b.put("config", b"cfg-2")?; // a plain PUT replaces
    b.put("data/ab/abcdef", &big)?;
    b.put("data/00/00ff", b"small")?;
    b.put("keys/k1", b"key")?;

    assert_eq!(b.get("config")?, b"cfg-2");
    assert_eq!(b.get("data/ab/abcdef")?, big);
    assert_eq!(b.get_range("data/ab/abcdef", 1000, 5000)?, &big[1000..6000]);
    assert_eq!(
        b.get_range("data/ab/abcdef", 299_990, 100)?,
        &big[299_990..],
        "short only at the end"
    );
    let retried = b.retries();
    assert_eq!(
        b.get_range("data/ab/abcdef", 300_000, 10)?,
        b"",
        "past the end"
    );
    assert_eq!(b.size("data/ab/abcdef")?, Some(300_000));
    assert_eq!(b.size("data/ab/nothing")?, None);
    assert_eq!(
        b.get("keys/missing"),
        Err(BackendError::NotFound {
            path: "keys/missing".into()
        })
    );

    assert_eq!(
        b.list("data/")?,
        vec![
            Listed {
                path: "data/00/00ff".into(),
                size: 5
            },
            Listed {
                path: "data/ab/abcdef".into(),
                size: 300_000
            },
        ]
    );
    let all: Vec<String> = b.list("")?.into_iter().map(|l| l.path).collect();
    assert_eq!(all, ["config", "data/00/00ff", "data/ab/abcdef", "keys/k1"]);

    // Another prefix in the same bucket sees none of it.
    let other = open_s3(&server, "trove-rt", "repo/two")?;
    assert_eq!(other.list("")?, Vec::new());

    b.delete("data/00/00ff")?;
    b.delete("data/00/00ff")?; // absent is not an error
    assert_eq!(b.size("data/00/00ff")?, None);
    assert_eq!(b.list("data/")?.len(), 1);

    let st = b.stats();
    assert_eq!(st.put, 5);
    // The short read took a second GET for the tail.
    assert_eq!(st.get, 7, "{st:?}");
    assert_eq!(st.head, 3);
    assert_eq!(st.list, 5, "{st:?}");
    assert_eq!(st.delete, 2);
    assert_eq!(st.bytes_up, 5 + 5 + 300_000 + 5 + 3);
    assert_eq!(st.bytes_down, 5 + 300_000 + 5000 + 10);
    assert_eq!(retried, 0, "a short read is not retried");
    Ok(())
}

#[test]
fn s3_missing_bucket_is_no_bucket() -> TestResult {
    let Some(server) = S3Server::start() else {
        return Ok(());
    };
    let b = open_s3(&server, "trove-never-made", "x")?;
    match b.check_reachable() {
        Err(BackendError::NoBucket { detail }) => {
            assert!(detail.contains("NoSuchBucket"), "{detail}")
        }
        other => panic!("expected NoBucket, got {other:?}\n{}", server.log_tail()),
    }
    assert!(matches!(
        b.list("keys/"),
        Err(BackendError::NoBucket { .. })
    ));
    Ok(())
}

#[test]
fn s3_wrong_secret_is_denied() -> TestResult {
    let Some(server) = S3Server::start() else {
        return Ok(());
    };
    server.create_bucket("trove-denied")?;
    let mut s = server.settings();
    s.secret_access_key = Some("not-the-secret".into());
    let b = backend::open_with(&server.url("trove-denied", ""), false, &s)?;
    match b.check_reachable() {
        Err(BackendError::Denied { detail }) => assert!(!detail.is_empty()),
        other => panic!("expected Denied, got {other:?}"),
    }
    assert!(matches!(
        b.put("config", b"x"),
        Err(BackendError::Denied { .. })
    ));

    let mut s = server.settings();
    s.access_key_id = Some("nobody-has-this-key".into());
    let b = backend::open_with(&server.url("trove-denied", ""), false, &s)?;
    assert!(matches!(b.get("config"), Err(BackendError::Denied { .. })));
    Ok(())
}

#[test]
fn s3_closed_port_is_unreachable_quickly() -> TestResult {
    // No server needed: a port just bound and released has no listener.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let s = S3Settings {
        endpoint: Some(format!("http://127.0.0.1:{port}")),
        access_key_id: Some("k".into()),
        secret_access_key: Some("s".into()),
        retries: 1,
        min_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(50),
        ..S3Settings::default()
    };
    let b = backend::open_with("s3://bkt/p", false, &s)?;
    let t = Instant::now();
    match b.check_reachable() {
        Err(BackendError::Unreachable { detail }) => {
            assert!(detail.to_lowercase().contains("connect"), "{detail}")
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
    assert!(matches!(
        b.put("config", b"x"),
        Err(BackendError::Unreachable { .. })
    ));
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "took {:?}",
        t.elapsed()
    );
    assert!(b.retries() >= 1, "the failures were retried");
    assert_eq!(b.stats().list, 1);
    assert_eq!(b.stats().put, 1);
    Ok(())
}

#[test]
fn s3_server_killed_mid_use_is_unreachable() -> TestResult {
    let Some(mut server) = S3Server::start() else {
        return Ok(());
    };
    server.create_bucket("trove-killed")?;
    let b = open_s3(&server, "trove-killed", "r")?;
    b.put("data/aa/aa00", b"before")?;
    server.kill();
    let t = Instant::now();
    match b.get("data/aa/aa00") {
        Err(BackendError::Unreachable { .. }) => {}
        other => panic!("expected Unreachable, got {other:?}"),
    }
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "took {:?}",
        t.elapsed()
    );
    Ok(())
}

#[test]
fn s3_settings_from_the_server_env() -> TestResult {
    let Some(server) = S3Server::start() else {
        return Ok(());
    };
    server.create_bucket("trove-env")?;
    let env = server.env();
    let s = S3Settings::from_vars(|k| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()));
    assert_eq!(s.endpoint.as_deref(), Some(server.endpoint().as_str()));
    let b = backend::open_with(&server.url("trove-env", "p"), false, &s)?;
    b.put("keys/k", b"k")?;
    assert_eq!(b.get("keys/k")?, b"k");
    Ok(())
}

/// A stand-in S3 endpoint answering each connection with the next canned
/// response (the last one repeats), or, with no responses, accepting and
/// never answering. Returns its port and the count of requests it saw.
fn fake_s3(responses: Vec<String>) -> std::io::Result<(u16, Arc<AtomicUsize>)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let seen = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&seen);
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming().take(50) {
            let Ok(mut conn) = conn else { break };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && conn.read(&mut byte).is_ok_and(|n| n == 1) {
                head.push(byte[0]);
            }
            let i = count.fetch_add(1, Ordering::SeqCst);
            match responses.get(i).or(responses.last()) {
                Some(r) => {
                    let _ = conn.write_all(r.as_bytes());
                }
                None => held.push(conn), // never answered
            }
        }
    });
    Ok((port, seen))
}

fn http_response(status: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

const SLOW_DOWN: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";

fn fake_settings(port: u16, retries: usize) -> S3Settings {
    S3Settings {
        endpoint: Some(format!("http://127.0.0.1:{port}")),
        access_key_id: Some("k".into()),
        secret_access_key: Some("s".into()),
        retries,
        min_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(40),
        ..S3Settings::default()
    }
}

#[test]
fn s3_slow_down_and_5xx_are_retried() -> TestResult {
    let (port, seen) = fake_s3(vec![
        http_response("503 Slow Down", SLOW_DOWN),
        http_response("500 Internal Server Error", ""),
        http_response("200 OK", "hello"),
    ])?;
    let b = backend::open_with("s3://bkt/p", false, &fake_settings(port, 4))?;
    assert_eq!(b.get("config")?, b"hello");
    assert_eq!(b.retries(), 2);
    assert_eq!(seen.load(Ordering::SeqCst), 3);
    let st = b.stats();
    assert_eq!(
        (st.get, st.bytes_down),
        (1, 5),
        "logical requests are counted once"
    );
    Ok(())
}

#[test]
fn s3_endless_slow_down_is_unreachable_after_the_retries() -> TestResult {
    let (port, seen) = fake_s3(vec![http_response("503 Slow Down", SLOW_DOWN)])?;
    let b = backend::open_with("s3://bkt/p", false, &fake_settings(port, 3))?;
    match b.put("config", b"x") {
        Err(BackendError::Unreachable { detail }) => {
            assert!(
                detail.contains("SlowDown"),
                "the server's word is kept: {detail}"
            )
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
    assert_eq!(seen.load(Ordering::SeqCst), 4, "one try and three retries");
    assert_eq!(b.retries(), 3);
    Ok(())
}

#[test]
fn s3_silent_server_times_out_as_unreachable() -> TestResult {
    let (port, _) = fake_s3(Vec::new())?;
    let mut s = fake_settings(port, 1);
    s.timeout = Duration::from_millis(300);
    s.io_timeout = Duration::from_millis(300);
    let b = backend::open_with("s3://bkt/p", false, &s)?;
    let t = Instant::now();
    match b.size("config") {
        Err(BackendError::Unreachable { detail }) => {
            assert!(detail.contains("timeout"), "{detail}")
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t.elapsed()
    );
    Ok(())
}

#[test]
fn s3_without_credentials_is_denied() -> TestResult {
    let ambient = [
        "AWS_ACCESS_KEY_ID",
        "AWS_PROFILE",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
    ]
    .iter()
    .any(|k| std::env::var_os(k).is_some())
        || std::env::var_os("HOME").is_some_and(|h| std::path::Path::new(&h).join(".aws").exists());
    if ambient {
        eprintln!("skipped: this environment has AWS credentials of its own");
        return Ok(());
    }
    let (port, seen) = fake_s3(vec![http_response("200 OK", "")])?;
    let mut s = fake_settings(port, 1);
    s.access_key_id = None;
    s.secret_access_key = None;
    let b = backend::open_with("s3://bkt/p", false, &s)?;
    match b.check_reachable() {
        Err(BackendError::Denied { detail }) => assert!(!detail.is_empty()),
        other => panic!("expected Denied, got {other:?}"),
    }
    assert_eq!(seen.load(Ordering::SeqCst), 0, "nothing was sent unsigned");
    Ok(())
}

#[test]
fn s3_backend_is_shared_by_threads() -> TestResult {
    let Some(server) = S3Server::start() else {
        return Ok(());
    };
    server.create_bucket("trove-threads")?;
    let b = open_s3(&server, "trove-threads", "")?;
    std::thread::scope(|s| -> TestResult {
        let workers: Vec<_> = (0..12)
            .map(|t| {
                let b = &b;
                s.spawn(move || -> Result<(), BackendError> {
                    for i in 0..5 {
                        let path = format!("data/{t:02x}/{i:04}");
                        b.put(&path, path.as_bytes())?;
                        assert_eq!(b.get(&path)?, path.as_bytes());
                    }
                    Ok(())
                })
            })
            .collect();
        for w in workers {
            w.join().map_err(|_| "a worker panicked")??;
        }
        Ok(())
    })?;
    let listed = b.list("data/")?;
    assert_eq!(listed.len(), 60);
    assert!(listed.windows(2).all(|w| w[0].path < w[1].path), "sorted");
    let st = b.stats();
    assert_eq!((st.put, st.get), (60, 60));
    Ok(())
}
