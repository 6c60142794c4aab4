//! Snapshot retention policy (`keep_last`, `keep_hourly`, `keep_daily`,
//! `keep_weekly`, `keep_monthly`, `keep_yearly`, `keep_within_days`): a
//! pure function of (snapshots, policy, now, time zone), with restic's
//! semantics.
//!
//! Snapshots are taken newest first. Every `keep_<period>` rule with count
//! N keeps the newest snapshot of each of the N most recent periods (hours,
//! days, ISO weeks, months, years in the given time zone) that contain a
//! snapshot; `keep_last N` keeps the N newest; `keep_within_days D` keeps
//! every snapshot taken less than D days before `now` (borg's reading: a
//! backup that has not run for a while does not make the window slide back
//! to cover old snapshots). A snapshot kept by any rule is kept, and every
//! decision lists the rules that kept it. The latest snapshot is always
//! kept: it pins the browsable tree. Without any rule set, every snapshot is
//! kept (the policy is not in use).

use crate::id::SnapshotId;
use jiff::tz::TimeZone;
use serde::Serialize;

/// Nanoseconds in a day.
const DAY_NS: i64 = 86_400_000_000_000;

/// A number of days in nanoseconds, saturating at `i64::MAX` (about 292
/// years; the config allows at most 100): an age that does not fit is
/// "longer than anything", never a wrapped-around negative age that
/// expires everything.
pub fn days_ns(days: u64) -> i64 {
    i64::try_from(days)
        .unwrap_or(i64::MAX)
        .saturating_mul(DAY_NS)
}

/// The `keep_*` settings. `None` means the rule is not set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    pub keep_last: Option<u32>,
    pub keep_hourly: Option<u32>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
    pub keep_yearly: Option<u32>,
    pub keep_within_days: Option<u32>,
}

impl Policy {
    /// Whether any rule is set (only then are snapshots ever forgotten, and
    /// only then do kept snapshots pin their content).
    pub fn is_set(&self) -> bool {
        self.keep_last.is_some()
            || self.keep_hourly.is_some()
            || self.keep_daily.is_some()
            || self.keep_weekly.is_some()
            || self.keep_monthly.is_some()
            || self.keep_yearly.is_some()
            || self.keep_within_days.is_some()
    }

    /// Rules overridden by `other` where it sets them.
    pub fn overridden_by(self, other: Policy) -> Policy {
        Policy {
            keep_last: other.keep_last.or(self.keep_last),
            keep_hourly: other.keep_hourly.or(self.keep_hourly),
            keep_daily: other.keep_daily.or(self.keep_daily),
            keep_weekly: other.keep_weekly.or(self.keep_weekly),
            keep_monthly: other.keep_monthly.or(self.keep_monthly),
            keep_yearly: other.keep_yearly.or(self.keep_yearly),
            keep_within_days: other.keep_within_days.or(self.keep_within_days),
        }
    }
}

/// One snapshot's fate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub id: SnapshotId,
    pub time_ns: i64,
    pub keep: bool,
    /// Why it is kept (`latest`, `last`, `hourly`, `daily`, `weekly`,
    /// `monthly`, `yearly`, `within`, `no policy`); empty when forgotten.
    pub reasons: Vec<&'static str>,
}

#[derive(Clone, Copy)]
enum Period {
    Hour,
    Day,
    Week,
    Month,
    Year,
}

/// The bucket a time falls in, as restic computes it.
fn bucket(period: Period, time_ns: i64, tz: &TimeZone) -> i64 {
    let Ok(ts) = jiff::Timestamp::from_nanosecond(time_ns as i128) else {
        // Outside jiff's range: every such snapshot is its own bucket.
        return i64::MIN + time_ns.rem_euclid(1 << 40);
    };
    let z = ts.to_zoned(tz.clone());
    let (y, m, d, h) = (
        z.year() as i64,
        z.month() as i64,
        z.day() as i64,
        z.hour() as i64,
    );
    match period {
        Period::Hour => ((y * 100 + m) * 100 + d) * 100 + h,
        Period::Day => (y * 100 + m) * 100 + d,
        Period::Week => {
            let w = z.date().iso_week_date();
            w.year() as i64 * 100 + w.week() as i64
        }
        Period::Month => y * 100 + m,
        Period::Year => y,
    }
}

/// Decide which snapshots a policy keeps. `snaps` may come in any order;
/// the decisions come back newest first. Equal times are ordered by id so
/// the result never depends on input order.
pub fn apply(
    snaps: &[(SnapshotId, i64)],
    policy: &Policy,
    now_ns: i64,
    tz: &TimeZone,
) -> Vec<Decision> {
    let mut order: Vec<(SnapshotId, i64)> = snaps.to_vec();
    order.sort_by(|a, b| b.1.cmp(&a.1).then(b.0.cmp(&a.0)));
    if !policy.is_set() {
        return order
            .into_iter()
            .map(|(id, time_ns)| Decision {
                id,
                time_ns,
                keep: true,
                reasons: vec!["no policy"],
            })
            .collect();
    }
    struct Rule {
        name: &'static str,
        left: u32,
        period: Option<Period>,
        last: Option<i64>,
    }
    let mut rules: Vec<Rule> = [
        ("last", policy.keep_last, None),
        ("hourly", policy.keep_hourly, Some(Period::Hour)),
        ("daily", policy.keep_daily, Some(Period::Day)),
        ("weekly", policy.keep_weekly, Some(Period::Week)),
        ("monthly", policy.keep_monthly, Some(Period::Month)),
        ("yearly", policy.keep_yearly, Some(Period::Year)),
    ]
    .into_iter()
    .filter_map(|(name, n, period)| {
        n.map(|left| Rule {
            name,
            left,
            period,
            last: None,
        })
    })
    .collect();
    let within_from = policy
        .keep_within_days
        .map(|d| now_ns.saturating_sub(days_ns(u64::from(d))));
    let mut out = Vec::with_capacity(order.len());
    for (i, (id, time_ns)) in order.into_iter().enumerate() {
        let mut reasons = Vec::new();
        if i == 0 {
            reasons.push("latest");
        }
        for r in rules.iter_mut() {
            if r.left == 0 {
                continue;
            }
            let key = match r.period {
                Some(p) => bucket(p, time_ns, tz),
                // keep_last: every snapshot is a bucket of its own.
                None => i as i64,
            };
            if r.last != Some(key) {
                r.last = Some(key);
                r.left -= 1;
                reasons.push(r.name);
            }
        }
        if within_from.is_some_and(|from| time_ns > from) {
            reasons.push("within");
        }
        out.push(Decision {
            id,
            time_ns,
            keep: !reasons.is_empty(),
            reasons,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::Digest;

    #[test]
    fn days_in_ns_saturate_instead_of_wrapping() {
        for (days, want) in [
            (0, 0),
            (1, DAY_NS),
            (36_500, 36_500 * DAY_NS),
            (106_751, 106_751 * DAY_NS),
            (106_752, i64::MAX),
            (1_000_000, i64::MAX),
            (u64::MAX, i64::MAX),
        ] {
            assert_eq!(days_ns(days), want, "{days} days");
        }
        // The longest age never makes anything expire, whatever `now`.
        let now = i64::MAX;
        assert_eq!(now.saturating_sub(days_ns(u64::MAX)), 0);
        assert_eq!(0i64.saturating_sub(days_ns(u64::MAX)), -i64::MAX);
    }

    fn id(n: u8) -> SnapshotId {
        SnapshotId(Digest([n; 32]))
    }

    /// ns of a UTC time "YYYY-MM-DD HH:MM".
    fn t(s: &str) -> i64 {
        let dt: jiff::civil::DateTime = s.parse().unwrap_or_default();
        dt.to_zoned(TimeZone::UTC)
            .map(|z| z.timestamp().as_nanosecond() as i64)
            .unwrap_or(0)
    }

    /// Snapshots numbered 1.. at the given times.
    fn snaps(times: &[&str]) -> Vec<(SnapshotId, i64)> {
        times
            .iter()
            .enumerate()
            .map(|(i, s)| (id(i as u8 + 1), t(s)))
            .collect()
    }

    /// The kept snapshot numbers, ascending.
    fn kept(times: &[&str], p: Policy, now: &str) -> Vec<u8> {
        let mut v: Vec<u8> = apply(&snaps(times), &p, t(now), &TimeZone::UTC)
            .into_iter()
            .filter(|d| d.keep)
            .map(|d| d.id.0 .0[0])
            .collect();
        v.sort_unstable();
        v
    }

    const NOW: &str = "2026-11-22T12:00";

    /// One snapshot a day at noon, 2026-10-01 .. 2026-11-21 (52 days).
    fn daily_times() -> Vec<String> {
        let start: jiff::civil::Date = "2026-10-01".parse().unwrap_or_default();
        (0..52)
            .map(|i| {
                let d = start
                    .checked_add(jiff::Span::new().days(i))
                    .unwrap_or(start);
                format!("{d}T12:00")
            })
            .collect()
    }

    fn last(n: u32) -> Policy {
        Policy {
            keep_last: Some(n),
            ..Policy::default()
        }
    }

    #[test]
    fn policy_table() {
        let day = daily_times();
        let day: Vec<&str> = day.iter().map(String::as_str).collect();
        // Six snapshots over two days, several per hour.
        let dense = [
            "2026-11-20T09:10",
            "2026-11-20T09:50",
            "2026-11-20T10:05",
            "2026-11-21T09:00",
            "2026-11-21T09:30",
            "2026-11-21T23:59",
        ];
        let p = Policy::default;
        let cases: Vec<(&str, Vec<&str>, Policy, Vec<u8>)> = vec![
            (
                "no policy keeps all",
                dense.to_vec(),
                p(),
                vec![1, 2, 3, 4, 5, 6],
            ),
            ("empty list", vec![], last(3), vec![]),
            ("last 1 keeps the latest", dense.to_vec(), last(1), vec![6]),
            (
                "last 0 still keeps the latest",
                dense.to_vec(),
                last(0),
                vec![6],
            ),
            ("last 3", dense.to_vec(), last(3), vec![4, 5, 6]),
            (
                "last more than there are",
                dense.to_vec(),
                last(10),
                vec![1, 2, 3, 4, 5, 6],
            ),
            (
                "hourly 2: newest of the two newest hours",
                dense.to_vec(),
                Policy {
                    keep_hourly: Some(2),
                    ..p()
                },
                vec![5, 6],
            ),
            (
                "hourly 4",
                dense.to_vec(),
                Policy {
                    keep_hourly: Some(4),
                    ..p()
                },
                vec![2, 3, 5, 6],
            ),
            (
                "hourly 10 keeps one per hour",
                dense.to_vec(),
                Policy {
                    keep_hourly: Some(10),
                    ..p()
                },
                vec![2, 3, 5, 6],
            ),
            (
                "daily 1",
                dense.to_vec(),
                Policy {
                    keep_daily: Some(1),
                    ..p()
                },
                vec![6],
            ),
            (
                "daily 2: newest of each day",
                dense.to_vec(),
                Policy {
                    keep_daily: Some(2),
                    ..p()
                },
                vec![3, 6],
            ),
            (
                "daily 7 over 52 days",
                day.clone(),
                Policy {
                    keep_daily: Some(7),
                    ..p()
                },
                (46..=52).collect(),
            ),
            (
                "weekly 2 (ISO weeks, Monday start)",
                day.clone(),
                // 2026-11-21 is a Saturday (week 47); week 46's newest is
                // Sunday 2026-11-15 = day 46.
                Policy {
                    keep_weekly: Some(2),
                    ..p()
                },
                vec![46, 52],
            ),
            (
                "monthly 2",
                day.clone(),
                // Newest of November (day 52) and of October (day 31).
                Policy {
                    keep_monthly: Some(2),
                    ..p()
                },
                vec![31, 52],
            ),
            (
                "monthly 5 with two months of data",
                day.clone(),
                Policy {
                    keep_monthly: Some(5),
                    ..p()
                },
                vec![31, 52],
            ),
            (
                "yearly 3",
                vec![
                    "2024-03-01T00:00",
                    "2024-12-31T23:59",
                    "2025-06-01T00:00",
                    "2026-01-01T00:00",
                ],
                Policy {
                    keep_yearly: Some(3),
                    ..p()
                },
                vec![2, 3, 4],
            ),
            (
                "yearly 1",
                vec!["2024-03-01T00:00", "2025-06-01T00:00"],
                Policy {
                    keep_yearly: Some(1),
                    ..p()
                },
                vec![2],
            ),
            (
                "rules combine (union)",
                day.clone(),
                Policy {
                    keep_last: Some(2),
                    keep_monthly: Some(2),
                    ..p()
                },
                vec![31, 51, 52],
            ),
            (
                "daily and weekly overlap",
                day.clone(),
                Policy {
                    keep_daily: Some(3),
                    keep_weekly: Some(3),
                    ..p()
                },
                // daily: 50, 51, 52; weekly: 52 (wk 47), 46 (wk 46), 39 (wk 45).
                vec![39, 46, 50, 51, 52],
            ),
            (
                "restic-like 7 daily 4 weekly 6 monthly",
                day.clone(),
                Policy {
                    keep_daily: Some(7),
                    keep_weekly: Some(4),
                    keep_monthly: Some(6),
                    ..p()
                },
                // weekly: 52, 46, 39, 32 (Sun 2026-11-01); monthly: 52, 31.
                vec![31, 32, 39, 46, 47, 48, 49, 50, 51, 52],
            ),
            (
                "within 3 days of now",
                day.clone(),
                // now 2026-11-22 12:00: after 2026-11-19 12:00 → days 51, 52
                // (2026-11-19 12:00 itself is exactly 3 days: not within).
                Policy {
                    keep_within_days: Some(3),
                    ..p()
                },
                vec![51, 52],
            ),
            (
                "within counts from now, not from the latest snapshot",
                vec!["2026-01-01T00:00", "2026-01-02T00:00"],
                Policy {
                    keep_within_days: Some(30),
                    ..p()
                },
                vec![2],
            ),
            (
                "within 0 keeps only the latest",
                dense.to_vec(),
                Policy {
                    keep_within_days: Some(0),
                    ..p()
                },
                vec![6],
            ),
            (
                "hourly counts distinct hours across days",
                vec!["2026-11-20T09:00", "2026-11-21T09:00"],
                Policy {
                    keep_hourly: Some(2),
                    ..p()
                },
                vec![1, 2],
            ),
            (
                "daily 0 is a set rule keeping nothing but the latest",
                dense.to_vec(),
                Policy {
                    keep_daily: Some(0),
                    ..p()
                },
                vec![6],
            ),
            (
                "single snapshot always kept",
                vec!["2026-11-20T09:00"],
                last(0),
                vec![1],
            ),
            (
                "unsorted input",
                vec!["2026-11-21T09:00", "2026-11-20T09:00", "2026-11-22T09:00"],
                last(2),
                vec![1, 3],
            ),
            (
                "ISO weeks cross the year: 2025-12-29 is in 2026-W01",
                vec!["2025-12-28T12:00", "2025-12-29T12:00", "2026-01-02T12:00"],
                Policy {
                    keep_weekly: Some(2),
                    ..p()
                },
                vec![1, 3],
            ),
            (
                "monthly across a year boundary",
                vec!["2025-12-15T00:00", "2025-12-31T23:00", "2026-01-01T01:00"],
                Policy {
                    keep_monthly: Some(2),
                    ..p()
                },
                vec![2, 3],
            ),
            (
                "last and within together",
                day.clone(),
                Policy {
                    keep_last: Some(1),
                    keep_within_days: Some(3),
                    ..p()
                },
                vec![51, 52],
            ),
        ];
        assert!(cases.len() >= 30, "{} cases", cases.len());
        for (name, times, pol, want) in cases {
            assert_eq!(kept(&times, pol, NOW), want, "{name}");
        }
    }

    #[test]
    fn equal_times_are_ordered_by_id() {
        let s = vec![(id(1), 5), (id(2), 5), (id(3), 1)];
        let a = apply(&s, &last(1), 10, &TimeZone::UTC);
        let mut r = s.clone();
        r.reverse();
        let b = apply(&r, &last(1), 10, &TimeZone::UTC);
        assert_eq!(a, b);
        assert_eq!(a[0].id, id(2));
    }

    #[test]
    fn reasons_name_every_rule() {
        let s = snaps(&["2026-11-20T09:00", "2026-11-21T09:00"]);
        let pol = Policy {
            keep_last: Some(1),
            keep_daily: Some(2),
            ..Policy::default()
        };
        let d = apply(&s, &pol, t(NOW), &TimeZone::UTC);
        assert_eq!(d[0].reasons, vec!["latest", "last", "daily"]);
        assert_eq!(d[1].reasons, vec!["daily"]);
        let forgotten = apply(&s, &last(1), t(NOW), &TimeZone::UTC);
        assert!(!forgotten[1].keep && forgotten[1].reasons.is_empty());
    }

    #[test]
    fn time_zone_moves_day_boundaries() {
        // 23:30 and 00:30 UTC are one day apart in UTC but the same day at UTC+2.
        let s = snaps(&["2026-11-20T23:30", "2026-11-21T00:30"]);
        let pol = Policy {
            keep_daily: Some(2),
            ..Policy::default()
        };
        let utc = apply(&s, &pol, t(NOW), &TimeZone::UTC);
        assert!(utc.iter().all(|d| d.keep));
        let plus2 = TimeZone::fixed(jiff::tz::offset(2));
        let local = apply(&s, &pol, t(NOW), &plus2);
        assert_eq!(local.iter().filter(|d| d.keep).count(), 1);
    }
}
