//! When a watch session pushes (pure: times are given, nothing waits).
//!
//! Runs mark the remote as behind; a push is due as soon as something is
//! behind and the last push started at least one interval ago. So a
//! burst of runs costs one push per interval, and a run that lands
//! inside the interval is pushed when the interval ends, whether or not
//! another run comes. A failed push leaves the work pending: the next
//! attempt is one interval after the failed one started.

use std::time::Duration;

#[derive(Clone, Debug)]
pub struct PushSchedule {
    interval: Duration,
    /// When the last push started (time since the session's start).
    last_start: Option<Duration>,
    /// A run finished that no started push has covered yet.
    pending: bool,
}

impl PushSchedule {
    pub fn new(interval: Duration) -> PushSchedule {
        PushSchedule {
            interval,
            last_start: None,
            pending: false,
        }
    }

    /// A local run committed a snapshot.
    pub fn run_done(&mut self) {
        self.pending = true;
    }

    /// How long from `now` until the next push is due: `None` when
    /// nothing waits to be pushed, zero when it is due now.
    pub fn due_in(&self, now: Duration) -> Option<Duration> {
        if !self.pending {
            return None;
        }
        Some(match self.last_start {
            None => Duration::ZERO,
            Some(t) => (t + self.interval).saturating_sub(now),
        })
    }

    /// A push starts at `now`: it covers every run before it.
    pub fn started(&mut self, now: Duration) {
        self.pending = false;
        self.last_start = Some(now);
    }

    /// The push that started last failed: its runs wait for the next one.
    pub fn failed(&mut self) {
        self.pending = true;
    }

    pub fn pending(&self) -> bool {
        self.pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn nothing_is_due_before_a_run() {
        let p = PushSchedule::new(s(300));
        assert_eq!(p.due_in(s(0)), None);
        assert_eq!(p.due_in(s(10_000)), None);
    }

    #[test]
    fn the_first_run_is_pushed_at_once_then_at_most_once_per_interval() {
        let mut p = PushSchedule::new(s(300));
        p.run_done();
        assert_eq!(p.due_in(s(5)), Some(s(0)));
        p.started(s(5));
        assert_eq!(p.due_in(s(6)), None, "pushed: nothing pending");
        // Three runs inside the interval: one push, when it ends.
        for t in [20, 100, 250] {
            p.run_done();
            assert_eq!(p.due_in(s(t)), Some(s(305 - t)));
        }
        assert_eq!(p.due_in(s(305)), Some(s(0)));
        p.started(s(305));
        assert!(!p.pending());
    }

    #[test]
    fn a_run_inside_the_interval_is_pushed_when_it_ends_without_another_run() {
        let mut p = PushSchedule::new(s(60));
        p.run_done();
        p.started(s(0));
        p.run_done(); // at 10 s; no run comes after it
        assert_eq!(p.due_in(s(10)), Some(s(50)));
        assert_eq!(p.due_in(s(59)), Some(s(1)));
        assert_eq!(p.due_in(s(60)), Some(s(0)));
        assert_eq!(p.due_in(s(500)), Some(s(0)), "late is still due");
    }

    #[test]
    fn a_failed_push_is_retried_one_interval_after_it_started() {
        let mut p = PushSchedule::new(s(300));
        p.run_done();
        p.started(s(0));
        p.failed();
        assert_eq!(p.due_in(s(30)), Some(s(270)));
        p.started(s(300));
        p.failed();
        assert_eq!(p.due_in(s(301)), Some(s(299)));
        p.started(s(600));
        assert_eq!(p.due_in(s(601)), None, "the third attempt worked");
    }

    #[test]
    fn a_run_during_a_push_is_pushed_by_the_next_one() {
        let mut p = PushSchedule::new(s(300));
        p.run_done();
        p.started(s(0));
        p.run_done(); // while the push uploads
        assert_eq!(p.due_in(s(120)), Some(s(180)));
    }
}
