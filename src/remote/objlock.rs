//! S3 Object Lock, as a remote uses it: the lock period its config
//! records ([`ObjectLock`]) and the retention one object carries
//! ([`Retention`]). Pure; the requests that set and read retention are the
//! S3 backend's (`backend::s3lock`).

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

/// Longest lock period accepted (100 years): a typo of a few zeros in a
/// COMPLIANCE period would make the objects undeletable for ever.
pub const MAX_DAYS: u32 = 36_500;

/// How S3 holds a locked object. (Postcard stores the variant's index,
/// so the serde name is only the JSON's.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LockMode {
    /// Nobody, not even the account's root user, can delete the object or
    /// shorten its retention before the date: what protects a replica
    /// from stolen credentials (ransomware).
    Compliance,
    /// A principal with `s3:BypassGovernanceRetention` can delete it or
    /// shorten its retention; everyone else cannot.
    Governance,
}

impl LockMode {
    /// The value of `x-amz-object-lock-mode` and of the retention XML.
    pub fn as_s3(self) -> &'static str {
        match self {
            LockMode::Compliance => "COMPLIANCE",
            LockMode::Governance => "GOVERNANCE",
        }
    }

    /// Parse the S3 spelling (any case).
    pub fn from_s3(s: &str) -> Option<LockMode> {
        match s.trim().to_ascii_uppercase().as_str() {
            "COMPLIANCE" => Some(LockMode::Compliance),
            "GOVERNANCE" => Some(LockMode::Governance),
            _ => None,
        }
    }
}

impl std::fmt::Display for LockMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.as_s3().to_ascii_lowercase())
    }
}

/// A remote's lock period, fixed at `remote init --object-lock DAYS`
/// and recorded in its config: every object written gets retention until
/// the time of writing plus `days`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectLock {
    pub days: u32,
    pub mode: LockMode,
}

impl ObjectLock {
    /// The lock period, checked (1 to [`MAX_DAYS`]).
    pub fn new(days: u32, mode: LockMode) -> Result<ObjectLock, String> {
        if days == 0 || days > MAX_DAYS {
            return Err(format!(
                "an object lock period of {days} days is outside 1..={MAX_DAYS}"
            ));
        }
        Ok(ObjectLock { days, mode })
    }

    /// The retention an object written at `now` gets.
    pub fn retention_from(&self, now: Timestamp, days: u32) -> Retention {
        Retention {
            mode: self.mode,
            until: add_days(now, days),
        }
    }

    /// The retention an object written now gets.
    pub fn retention_now(&self) -> Retention {
        self.retention_from(Timestamp::now(), self.days)
    }

    /// Locks ending before this are reported by `verify --remote`: now
    /// plus half the period (so a weekly `extend-locks` for a 30-day
    /// period never sees a warning, a forgotten one is noticed with half
    /// the period still to act in).
    pub fn warn_before(&self, now: Timestamp) -> Timestamp {
        // Whole seconds, as S3 keeps its dates (and as messages show them).
        let now = Timestamp::from_second(now.as_second()).unwrap_or(now);
        now.checked_add(SignedDuration::from_secs(i64::from(self.days) * 86_400 / 2))
            .unwrap_or(Timestamp::MAX)
    }
}

fn add_days(t: Timestamp, days: u32) -> Timestamp {
    // Whole seconds, rounded up: S3 keeps seconds, and a date rounded
    // down could be earlier than the one promised.
    let secs = t.as_second() + i64::from(t.subsec_nanosecond() > 0);
    let base = Timestamp::from_second(secs).unwrap_or(t);
    base.checked_add(SignedDuration::from_secs(i64::from(days) * 86_400))
        .unwrap_or(Timestamp::MAX)
}

/// The retention of one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    pub mode: LockMode,
    pub until: Timestamp,
}

impl Retention {
    /// `until` as S3 takes it: `2026-12-06T16:19:19Z`.
    pub fn until_s3(&self) -> String {
        self.until.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_are_bounded_and_dates_round_up_to_the_second() {
        assert!(ObjectLock::new(0, LockMode::Compliance).is_err());
        assert!(ObjectLock::new(MAX_DAYS + 1, LockMode::Compliance).is_err());
        let l = ObjectLock::new(2, LockMode::Governance).expect("valid");
        let now: Timestamp = "2026-12-05T10:00:00.25Z".parse().expect("date");
        let r = l.retention_from(now, l.days);
        assert_eq!(r.until_s3(), "2026-12-07T10:00:01Z");
        assert_eq!(r.mode, LockMode::Governance);
        assert_eq!(
            l.warn_before(now).to_string(),
            "2026-12-06T10:00:00Z",
            "half the period"
        );
    }
}
