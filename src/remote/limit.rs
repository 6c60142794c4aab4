//! Bandwidth limits (`--limit-upload`, `--limit-download`, KiB/s): one
//! token bucket per direction, shared by every thread that uses the
//! backend, so the limit is on the total across concurrent transfers.
//!
//! A request's body bytes are paid for as a whole: an upload waits before
//! it is sent until its bytes fit the rate, a download waits after its
//! body arrived until they would have. The bucket may go into debt, so a
//! request larger than the burst still goes (after its wait) and the
//! next one waits for the debt too: over any stretch of time, the bytes
//! moved never exceed one burst plus the rate times the time. Single
//! objects are sent at the link's speed; the average is what is bounded
//! (a pack of 16 MiB at 1024 KiB/s is followed by a pause of 16 s).
//!
//! The clock is a parameter, so the arithmetic is tested without sleeping.

use super::backend::{Backend, BackendResult, Listed, RequestStats, Retention};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Time as the bucket sees it: a monotonic "now" and a way to wait.
pub trait Clock: Send + Sync {
    /// Time since some fixed start.
    fn now(&self) -> Duration;
    fn sleep(&self, d: Duration);
}

/// The real clock.
pub struct SystemClock {
    start: Instant,
}

impl Default for SystemClock {
    fn default() -> SystemClock {
        SystemClock {
            start: Instant::now(),
        }
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        self.start.elapsed()
    }
    fn sleep(&self, d: Duration) {
        std::thread::sleep(d)
    }
}

/// A rate in bytes per second with a burst of one second's worth.
pub struct TokenBucket {
    rate: u64,
    clock: Arc<dyn Clock>,
    state: Mutex<Bucket>,
}

struct Bucket {
    /// Bytes that may go now without waiting; negative: owed.
    tokens: f64,
    last: Duration,
}

impl TokenBucket {
    /// `rate` bytes per second (at least 1), starting full.
    pub fn new(rate: u64, clock: Arc<dyn Clock>) -> TokenBucket {
        let rate = rate.max(1);
        let last = clock.now();
        TokenBucket {
            rate,
            clock,
            state: Mutex::new(Bucket {
                tokens: rate as f64,
                last,
            }),
        }
    }

    /// Take `bytes` from the bucket; returns how long the caller must
    /// wait before they have been paid for (zero when they fit).
    pub fn reserve(&self, bytes: u64) -> Duration {
        let now = self.clock.now();
        let mut b = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let burst = self.rate as f64;
        let gained = now.saturating_sub(b.last).as_secs_f64() * self.rate as f64;
        b.tokens = (b.tokens + gained).min(burst);
        b.last = now;
        b.tokens -= bytes as f64;
        if b.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-b.tokens / self.rate as f64)
        }
    }

    /// [`TokenBucket::reserve`], then wait as long as it says.
    pub fn take(&self, bytes: u64) {
        let wait = self.reserve(bytes);
        if !wait.is_zero() {
            self.clock.sleep(wait);
        }
    }
}

/// The limits a command runs with, in KiB/s (`None`: unlimited).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    pub upload_kib: Option<u64>,
    pub download_kib: Option<u64>,
}

impl Limits {
    pub fn is_unlimited(&self) -> bool {
        self.upload_kib.is_none() && self.download_kib.is_none()
    }
}

/// [`super::backend::open_with`], with the limits applied to every body byte.
pub fn open(
    url: &str,
    create: bool,
    s3: &super::backend::S3Settings,
    limits: Limits,
) -> BackendResult<Box<dyn Backend>> {
    Ok(LimitedBackend::wrap(
        super::backend::open_with(url, create, s3)?,
        limits,
    ))
}

/// A backend whose body bytes pass through the two buckets.
pub struct LimitedBackend {
    inner: Box<dyn Backend>,
    up: Option<TokenBucket>,
    down: Option<TokenBucket>,
}

impl LimitedBackend {
    pub fn new(inner: Box<dyn Backend>, limits: Limits, clock: Arc<dyn Clock>) -> LimitedBackend {
        let bucket = |kib: Option<u64>| {
            kib.map(|k| TokenBucket::new(k.saturating_mul(1024), Arc::clone(&clock)))
        };
        LimitedBackend {
            up: bucket(limits.upload_kib),
            down: bucket(limits.download_kib),
            inner,
        }
    }

    /// `inner`, limited when `limits` say so (unchanged otherwise).
    pub fn wrap(inner: Box<dyn Backend>, limits: Limits) -> Box<dyn Backend> {
        if limits.is_unlimited() {
            return inner;
        }
        Box::new(LimitedBackend::new(
            inner,
            limits,
            Arc::new(SystemClock::default()),
        ))
    }

    fn upload(&self, bytes: usize) {
        if let Some(b) = &self.up {
            b.take(bytes as u64);
        }
    }

    fn downloaded(&self, bytes: usize) {
        if let Some(b) = &self.down {
            b.take(bytes as u64);
        }
    }
}

impl Backend for LimitedBackend {
    fn url(&self) -> &str {
        self.inner.url()
    }
    fn put(&self, path: &str, data: &[u8]) -> BackendResult<()> {
        self.upload(data.len());
        self.inner.put(path, data)
    }
    fn put_owned(&self, path: &str, data: Vec<u8>) -> BackendResult<()> {
        self.upload(data.len());
        self.inner.put_owned(path, data)
    }
    fn put_data_pack(&self, path: &str, data: Vec<u8>) -> BackendResult<()> {
        self.upload(data.len());
        self.inner.put_data_pack(path, data)
    }
    fn get(&self, path: &str) -> BackendResult<Vec<u8>> {
        let data = self.inner.get(path)?;
        self.downloaded(data.len());
        Ok(data)
    }
    fn get_range(&self, path: &str, offset: u64, len: u64) -> BackendResult<Vec<u8>> {
        let data = self.inner.get_range(path, offset, len)?;
        self.downloaded(data.len());
        Ok(data)
    }
    fn size(&self, path: &str) -> BackendResult<Option<u64>> {
        self.inner.size(path)
    }
    fn list(&self, dir: &str) -> BackendResult<Vec<Listed>> {
        self.inner.list(dir)
    }
    fn delete(&self, path: &str) -> BackendResult<()> {
        self.inner.delete(path)
    }
    fn check_reachable(&self) -> BackendResult<()> {
        self.inner.check_reachable()
    }
    fn stats(&self) -> RequestStats {
        self.inner.stats()
    }
    fn retries(&self) -> u64 {
        self.inner.retries()
    }
    fn object_lock_enabled(&self) -> BackendResult<bool> {
        self.inner.object_lock_enabled()
    }
    fn put_retained(
        &self,
        path: &str,
        data: Vec<u8>,
        data_pack: bool,
        r: Retention,
    ) -> BackendResult<()> {
        self.upload(data.len());
        self.inner.put_retained(path, data, data_pack, r)
    }
    fn retention(&self, path: &str) -> BackendResult<Option<Retention>> {
        self.inner.retention(path)
    }
    fn set_retention(&self, path: &str, r: Retention) -> BackendResult<()> {
        self.inner.set_retention(path, r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::backend::MemBackend;

    /// A clock that only moves when told to, or when someone sleeps (the
    /// sleeps are recorded, never slept).
    #[derive(Default)]
    struct FakeClock {
        now: Mutex<Duration>,
        slept: Mutex<Vec<Duration>>,
        /// Sleeps leave the time alone (threads that sleep side by side).
        frozen: bool,
    }

    impl FakeClock {
        fn advance(&self, d: Duration) {
            *self.now.lock().unwrap_or_else(|p| p.into_inner()) += d;
        }
        fn slept(&self) -> Vec<Duration> {
            self.slept.lock().unwrap_or_else(|p| p.into_inner()).clone()
        }
    }

    impl Clock for FakeClock {
        fn now(&self) -> Duration {
            *self.now.lock().unwrap_or_else(|p| p.into_inner())
        }
        fn sleep(&self, d: Duration) {
            self.slept.lock().unwrap_or_else(|p| p.into_inner()).push(d);
            if !self.frozen {
                self.advance(d);
            }
        }
    }

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    fn close(a: Duration, b: Duration) -> bool {
        a.abs_diff(b) < Duration::from_micros(10)
    }

    #[test]
    fn a_full_bucket_lets_one_burst_through_then_charges_the_rate() {
        let clock = Arc::new(FakeClock::default());
        let b = TokenBucket::new(1000, clock.clone());
        assert_eq!(b.reserve(600), Duration::ZERO);
        assert_eq!(b.reserve(400), Duration::ZERO, "the burst is one second");
        assert!(close(b.reserve(500), secs(0.5)));
        // The debt carries: the next 500 bytes wait for both.
        assert!(close(b.reserve(500), secs(1.0)));
    }

    #[test]
    fn time_refills_the_bucket_but_never_beyond_one_burst() {
        let clock = Arc::new(FakeClock::default());
        let b = TokenBucket::new(1000, clock.clone());
        assert_eq!(b.reserve(1000), Duration::ZERO);
        clock.advance(secs(0.25));
        assert_eq!(b.reserve(250), Duration::ZERO);
        assert!(close(b.reserve(1), secs(0.001)));
        clock.advance(secs(3600.0));
        assert_eq!(b.reserve(999), Duration::ZERO);
        assert!(close(b.reserve(1001), secs(1.0)), "a burst, not an hour");
    }

    #[test]
    fn an_object_larger_than_the_burst_waits_its_size_over_the_rate() {
        let clock = Arc::new(FakeClock::default());
        let b = TokenBucket::new(1024, clock.clone());
        b.take(1024 * 17);
        assert_eq!(clock.slept().len(), 1);
        assert!(close(clock.slept()[0], secs(16.0)));
        assert!(close(clock.now(), secs(16.0)));
        // Paid in full: a second later one burst goes again at once.
        clock.advance(secs(1.0));
        assert_eq!(b.reserve(1024), Duration::ZERO);
    }

    #[test]
    fn the_limit_is_on_the_total_of_concurrent_transfers() -> Result<(), String> {
        // Four threads upload 64 KiB each at once through one limited
        // backend at 16 KiB/s: whatever the interleaving, they start after
        // 3, 7, 11 and 15 seconds, the last when (256 - 16) KiB have been
        // paid at 16 KiB/s.
        let clock = Arc::new(FakeClock {
            frozen: true,
            ..FakeClock::default()
        });
        let mem = MemBackend::new();
        let limits = Limits {
            upload_kib: Some(16),
            download_kib: None,
        };
        let b = LimitedBackend::new(Box::new(mem.clone()), limits, clock.clone());
        std::thread::scope(|s| {
            for t in 0..4 {
                let b = &b;
                s.spawn(move || b.put_owned(&format!("data/{t}"), vec![0u8; 64 * 1024]));
            }
        });
        let mut waits = clock.slept();
        waits.sort();
        let want = [3.0, 7.0, 11.0, 15.0].map(secs);
        if waits.len() != 4 || !waits.iter().zip(want).all(|(a, b)| close(*a, b)) {
            return Err(format!("waited {waits:?}"));
        }
        assert_eq!(mem.stats().put, 4);
        assert_eq!(mem.stats().bytes_up, 4 * 64 * 1024);
        Ok(())
    }

    #[test]
    fn downloads_are_charged_by_the_bytes_that_came_and_uploads_are_free() -> Result<(), String> {
        let clock = Arc::new(FakeClock::default());
        let mem = MemBackend::new();
        mem.objects().insert("data/x".into(), vec![1u8; 3 * 1024]);
        let limits = Limits {
            upload_kib: None,
            download_kib: Some(1),
        };
        let b = LimitedBackend::new(Box::new(mem.clone()), limits, clock.clone());
        b.put("keys/k", &[0u8; 100_000])
            .map_err(|e| e.to_string())?;
        assert!(clock.slept().is_empty(), "no upload limit");
        let got = b.get_range("data/x", 0, 2048).map_err(|e| e.to_string())?;
        assert_eq!(got.len(), 2048);
        assert!(close(clock.now(), secs(1.0)));
        // A range past the end moves (and costs) nothing.
        let none = b
            .get_range("data/x", 10_000, 10)
            .map_err(|e| e.to_string())?;
        assert!(none.is_empty());
        assert_eq!(clock.slept().len(), 1);
        Ok(())
    }
}
