//! The signed S3 requests of object lock, which opendal 0.59 cannot make:
//! PutObject with the lock headers, PutObjectRetention, a HEAD that reads
//! the retention, and GetObjectLockConfiguration.
//!
//! Signing is reqsign's (the signer opendal itself uses), sending is
//! reqwest's; this module only builds the requests, retries the ones that
//! failed temporarily and reads the few fields it needs from the answers.

use super::{BackendError, BackendResult, S3Settings};
use crate::remote::objlock::{LockMode, Retention};
use jiff::Timestamp;
use std::time::Duration;

/// The PutObjectRetention body.
fn retention_xml(r: &Retention) -> String {
    format!(
        "<Retention xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Mode>{}</Mode><RetainUntilDate>{}</RetainUntilDate></Retention>",
        r.mode.as_s3(),
        r.until_s3()
    )
}

/// The text of the first `<tag>…</tag>` in an S3 answer.
fn xml_field<'a>(body: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = body.find(&open)? + open.len();
    let len = body[start..].find(&close)?;
    Some(body[start..start + len].trim())
}

/// Percent-encode an object key for the request path (S3's canonical
/// URI: everything but the unreserved characters and `/`).
fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// An answer: status, headers, body.
struct Answer {
    status: http::StatusCode,
    headers: http::HeaderMap,
    body: bytes::Bytes,
}

/// reqsign's HTTP sender (the credential sources that ask a service:
/// instance metadata, SSO, STS), over the same reqwest client.
#[derive(Debug, Clone)]
struct Sender(reqwest::Client);

impl reqsign_core::HttpSend for Sender {
    async fn http_send(
        &self,
        req: http::Request<bytes::Bytes>,
    ) -> reqsign_core::Result<http::Response<bytes::Bytes>> {
        let req = reqwest::Request::try_from(req)
            .map_err(|e| reqsign_core::Error::unexpected(format!("building a request: {e}")))?;
        let resp = self
            .0
            .execute(req)
            .await
            .map_err(|e| reqsign_core::Error::unexpected(format!("sending a request: {e}")))?;
        let mut out = http::Response::builder().status(resp.status());
        for (k, v) in resp.headers() {
            out = out.header(k, v);
        }
        let body = resp
            .bytes()
            .await
            .map_err(|e| reqsign_core::Error::unexpected(format!("reading an answer: {e}")))?;
        out.body(body)
            .map_err(|e| reqsign_core::Error::unexpected(format!("an answer: {e}")))
    }
}

/// Signed S3 requests on one bucket and prefix, path-style (as opendal
/// sends its own), with the credentials, region, endpoint, retries and
/// time limits of the backend's [`S3Settings`]. Async: the backend runs
/// them on its runtime.
pub struct LockClient {
    client: reqwest::Client,
    signer: reqsign_core::Signer<reqsign_aws_v4::Credential>,
    /// `http(s)://host[:port]/bucket`
    base: String,
    bucket: String,
    /// The remote's prefix in the bucket, without slashes at its ends.
    prefix: String,
    settings: S3Settings,
}

impl LockClient {
    pub fn new(
        bucket: &str,
        prefix: &str,
        region: &str,
        s: &S3Settings,
    ) -> BackendResult<LockClient> {
        let config = |detail: String| BackendError::Config { detail };
        let client = reqwest::Client::builder()
            .connect_timeout(s.timeout)
            .read_timeout(s.io_timeout)
            .build()
            .map_err(|e| config(format!("cannot build the S3 client: {e}")))?;
        let endpoint = match &s.endpoint {
            Some(e) => e.trim_end_matches('/').to_string(),
            None => format!("https://s3.{region}.amazonaws.com"),
        };
        let ctx = reqsign_core::Context::new()
            .with_file_read(reqsign_file_read_tokio::TokioFileRead)
            .with_http_send(Sender(client.clone()))
            .with_env(reqsign_core::OsEnv);
        // The same sources, in the same order, as the backend's opendal
        // operator: the given keys, then the AWS defaults (profile files,
        // and instance metadata unless an endpoint is set).
        let mut defaults = reqsign_aws_v4::DefaultCredentialProvider::builder();
        if let Some(p) = s.profile.as_deref().filter(|p| !p.is_empty()) {
            defaults = defaults.with_profile(p);
        }
        if s.endpoint.is_some() {
            defaults = defaults.no_imds();
        }
        let mut chain = reqsign_core::ProvideCredentialChain::new().push(defaults.build());
        if let (Some(ak), Some(sk)) = (&s.access_key_id, &s.secret_access_key) {
            let fixed = match &s.session_token {
                Some(t) => {
                    reqsign_aws_v4::StaticCredentialProvider::new(ak, sk).with_session_token(t)
                }
                None => reqsign_aws_v4::StaticCredentialProvider::new(ak, sk),
            };
            chain = chain.push_front(fixed);
        }
        let signer =
            reqsign_core::Signer::new(ctx, chain, reqsign_aws_v4::RequestSigner::new("s3", region));
        Ok(LockClient {
            client,
            signer,
            base: format!("{endpoint}/{}", encode_key(bucket)),
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
            settings: s.clone(),
        })
    }

    /// The URL of an object (`path` relative to the remote's root), or of
    /// the bucket itself (`None`), with a query (`"retention"`, `""`).
    fn url(&self, path: Option<&str>, query: &str) -> String {
        let mut url = self.base.clone();
        if let Some(p) = path {
            let key = if self.prefix.is_empty() {
                p.to_string()
            } else {
                format!("{}/{p}", self.prefix)
            };
            url.push('/');
            url.push_str(&encode_key(&key));
        } else {
            url.push('/');
        }
        if !query.is_empty() {
            url.push('?');
            url.push_str(query);
        }
        url
    }

    /// One signed request, retried (with the backend's backoff) after a
    /// refused connection, a time-out, a 5xx or a SlowDown; `retried` is
    /// told of each repeat. The answer is returned whatever its status.
    async fn send(
        &self,
        method: http::Method,
        url: &str,
        headers: &[(&str, String)],
        body: bytes::Bytes,
        retried: &(dyn Fn() + Sync),
    ) -> BackendResult<Answer> {
        use sha2::Digest as _;
        let payload = crate::id::Digest(sha2::Sha256::digest(&body).into()).to_hex();
        let mut backoff = self.settings.min_backoff;
        let mut attempt = 0usize;
        loop {
            let mut b = http::Request::builder()
                .method(method.clone())
                .uri(url)
                .header("x-amz-content-sha256", &payload);
            for (k, v) in headers {
                b = b.header(*k, v);
            }
            let req = b.body(body.clone()).map_err(|e| BackendError::Config {
                detail: format!("{url}: {e}"),
            })?;
            let (mut parts, body) = req.into_parts();
            self.signer
                .sign(&mut parts, None)
                .await
                .map_err(|e| BackendError::Denied {
                    detail: format!("cannot sign the request (no usable credentials?): {e}"),
                })?;
            // As opendal does: the client sets Host itself.
            parts.headers.remove(http::header::HOST);
            let mut req = reqwest::Request::try_from(http::Request::from_parts(parts, body))
                .map_err(|e| BackendError::Config {
                    detail: format!("{url}: {e}"),
                })?;
            // PUTs of whole packs are bounded by the I/O limit (no progress
            // for that long), everything else by the request limit.
            if method != http::Method::PUT {
                *req.timeout_mut() = Some(self.settings.timeout);
            }
            let failed: String = match self.client.execute(req).await {
                Ok(resp) => {
                    let status = resp.status();
                    let headers = resp.headers().clone();
                    match resp.bytes().await {
                        Ok(body) => {
                            let answer = Answer {
                                status,
                                headers,
                                body,
                            };
                            let text = String::from_utf8_lossy(&answer.body);
                            let slow = xml_field(&text, "Code") == Some("SlowDown");
                            if !(status.is_server_error()
                                || status == http::StatusCode::TOO_MANY_REQUESTS
                                || slow)
                            {
                                return Ok(answer);
                            }
                            format!("{status}: {}", describe(&answer))
                        }
                        Err(e) => format!("reading the answer: {}", chain(&e)),
                    }
                }
                Err(e) => chain(&e),
            };
            if attempt >= self.settings.retries {
                return Err(BackendError::Unreachable {
                    detail: format!("{method} {url}: {failed} (after {} attempts)", attempt + 1),
                });
            }
            attempt += 1;
            retried();
            tokio::time::sleep(jitter(backoff)).await;
            backoff = (backoff * 2).min(self.settings.max_backoff);
        }
    }

    /// An answer that is not a success, as the kind of error it is.
    fn refused(&self, what: &str, path: &str, a: &Answer) -> BackendError {
        let text = String::from_utf8_lossy(&a.body);
        let code = xml_field(&text, "Code").unwrap_or_default();
        let detail = format!("{what} {path}: {}", describe(a));
        match (a.status.as_u16(), code) {
            (_, "NoSuchBucket") => BackendError::NoBucket {
                detail: format!("{detail} (bucket {})", self.bucket),
            },
            (404, _) => BackendError::NotFound {
                path: path.to_string(),
            },
            (401 | 403, _) => BackendError::Denied { detail },
            _ => BackendError::Other { detail },
        }
    }

    /// Whether the bucket has Object Lock enabled
    /// (GetObjectLockConfiguration): false when the server says it has no
    /// such configuration, or does not know the request.
    pub async fn lock_enabled(&self, retried: &(dyn Fn() + Sync)) -> BackendResult<bool> {
        let url = self.url(None, "object-lock=");
        let a = self
            .send(http::Method::GET, &url, &[], bytes::Bytes::new(), retried)
            .await?;
        let text = String::from_utf8_lossy(&a.body);
        if a.status.is_success() {
            return Ok(xml_field(&text, "ObjectLockEnabled") == Some("Enabled"));
        }
        let code = xml_field(&text, "Code").unwrap_or_default();
        match (a.status.as_u16(), code) {
            (_, "NoSuchBucket") => Err(self.refused("GetObjectLockConfiguration", "", &a)),
            (_, "ObjectLockConfigurationNotFoundError")
            | (_, "NotImplemented")
            | (404 | 405 | 501, _) => Ok(false),
            _ => Err(self.refused("GetObjectLockConfiguration of bucket", &self.bucket, &a)),
        }
    }

    /// PutObject with retention in the same request (so no object is ever
    /// stored unlocked), in `class` when given. S3 requires Content-MD5
    /// (or a checksum) on such a put.
    pub async fn put_locked(
        &self,
        path: &str,
        data: bytes::Bytes,
        class: Option<&str>,
        r: Retention,
        retried: &(dyn Fn() + Sync),
    ) -> BackendResult<()> {
        let mut headers = vec![
            ("content-md5", content_md5(&data)),
            ("content-length", data.len().to_string()),
            ("x-amz-object-lock-mode", r.mode.as_s3().to_string()),
            ("x-amz-object-lock-retain-until-date", r.until_s3()),
        ];
        if let Some(c) = class {
            headers.push(("x-amz-storage-class", c.to_string()));
        }
        let url = self.url(Some(path), "");
        let a = self
            .send(http::Method::PUT, &url, &headers, data, retried)
            .await?;
        if a.status.is_success() {
            Ok(())
        } else {
            Err(self.refused("upload", path, &a))
        }
    }

    /// The object's retention, from a HEAD (`None`: none, or no object).
    pub async fn retention(
        &self,
        path: &str,
        retried: &(dyn Fn() + Sync),
    ) -> BackendResult<Option<Retention>> {
        let url = self.url(Some(path), "");
        let a = self
            .send(http::Method::HEAD, &url, &[], bytes::Bytes::new(), retried)
            .await?;
        if a.status == http::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !a.status.is_success() {
            return Err(self.refused("read the retention of", path, &a));
        }
        let header = |name: &str| {
            a.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let (Some(until), mode) = (
            header("x-amz-object-lock-retain-until-date"),
            header("x-amz-object-lock-mode"),
        ) else {
            return Ok(None);
        };
        let until: Timestamp = until.trim().parse().map_err(|e| BackendError::Other {
            detail: format!("{path}: unreadable retain-until date {until:?}: {e}"),
        })?;
        let mode = mode
            .as_deref()
            .and_then(LockMode::from_s3)
            .unwrap_or(LockMode::Compliance);
        Ok(Some(Retention { mode, until }))
    }

    /// PutObjectRetention on the object's current version.
    pub async fn set_retention(
        &self,
        path: &str,
        r: Retention,
        retried: &(dyn Fn() + Sync),
    ) -> BackendResult<()> {
        let body = bytes::Bytes::from(retention_xml(&r));
        let headers = [
            ("content-md5", content_md5(&body)),
            ("content-type", "application/xml".to_string()),
        ];
        let url = self.url(Some(path), "retention=");
        let a = self
            .send(http::Method::PUT, &url, &headers, body, retried)
            .await?;
        if a.status.is_success() {
            Ok(())
        } else {
            Err(self.refused("set the retention of", path, &a))
        }
    }
}

/// `Content-MD5`: the body's MD5, base64 (S3 requires it on object-lock
/// writes; it is an integrity check, not a security measure).
fn content_md5(data: &[u8]) -> String {
    use base64::Engine as _;
    use md5::Digest as _;
    base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(data))
}

/// An error's text with every source's.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        let m = x.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        src = x.source();
    }
    s
}

/// What the server said: its Code and Message, else the status.
fn describe(a: &Answer) -> String {
    let text = String::from_utf8_lossy(&a.body);
    match (xml_field(&text, "Code"), xml_field(&text, "Message")) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c.to_string(),
        _ => format!("status {}", a.status),
    }
}

/// `d` scaled by a factor in 0.5..1.5, so that retrying clients spread.
fn jitter(d: Duration) -> Duration {
    let mut b = [0u8; 1];
    let r = getrandom::fill(&mut b).map(|()| b[0]).unwrap_or(128);
    d.mul_f64(0.5 + f64::from(r) / 255.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_xml_and_answers_are_read() {
        let r = Retention {
            mode: LockMode::Compliance,
            until: "2026-12-06T16:19:19Z".parse().expect("date"),
        };
        let xml = retention_xml(&r);
        assert_eq!(xml_field(&xml, "Mode"), Some("COMPLIANCE"));
        assert_eq!(
            xml_field(&xml, "RetainUntilDate"),
            Some("2026-12-06T16:19:19Z")
        );
        assert_eq!(
            xml_field("<Error><Code>SlowDown</Code></Error>", "Code"),
            Some("SlowDown")
        );
        assert_eq!(xml_field("<a/>", "Code"), None);
        assert_eq!(LockMode::from_s3("governance"), Some(LockMode::Governance));
        assert_eq!(LockMode::from_s3("x"), None);
    }

    #[test]
    fn keys_are_encoded_for_the_path() {
        assert_eq!(encode_key("p/data/ab/0f"), "p/data/ab/0f");
        assert_eq!(encode_key("a b+c"), "a%20b%2Bc");
    }

    #[test]
    fn content_md5_is_base64_of_the_digest() {
        // `echo hello | openssl md5 -binary | base64`
        assert_eq!(content_md5(b"hello\n"), "sZRqySSS0jR8YjW00mERhA==");
    }
}
