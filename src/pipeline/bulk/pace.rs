//! When to poll a bulk job, learnt from the jobs of this run, so that one poll finds a job
//! complete (issue 15: every poll costs a request of the budget).
//!
//! A job is first polled when it is due: when the jobs before it were found complete. Only
//! one job at a time polls sooner than that, to find out whether jobs got faster (the
//! probe): a poll too early then costs that one job a poll, where a pace shared by every
//! job in flight cost each of them one. Probes close in between the latest time a job was
//! seen unfinished and the time jobs are due, and stop once the two are within a tenth of
//! each other, to start again after a while. Until a first job is found complete nothing
//! is known: that job polls, and the jobs submitted meanwhile wait for what it learns.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The first poll of the first job, before anything is known.
pub(super) const FIRST_POLL: Duration = Duration::from_secs(1);
pub(super) const LEAST_POLL: Duration = Duration::from_millis(100);
pub(super) const MOST_POLL: Duration = Duration::from_secs(10);
/// A probe polls at this share of the time jobs are due, at the latest.
const PROBE_AT: f64 = 0.9;
/// Jobs polled when due, once probing has stopped, before the pace checks again whether
/// jobs got faster.
const RECHECK_AFTER: u32 = 32;

/// Shared by the jobs of a run.
#[derive(Debug, Default)]
pub(in crate::pipeline) struct JobPace {
    state: Mutex<Pace>,
    /// Told when something was learnt, or a probe ended.
    changed: Notify,
}

/// What one job's polls showed, from its submit's answer on.
#[derive(Clone, Copy, Debug)]
pub(super) struct Seen {
    /// When the poll that found it complete was answered.
    pub complete_at: Duration,
    /// When the last poll that found it unfinished was sent; None: the first found it
    /// complete.
    pub last_unfinished: Option<Duration>,
    /// It was the probe.
    pub probed: bool,
}

/// The job that polls sooner than the others; the probe ends when this is dropped.
pub(super) struct Probe<'a> {
    pace: &'a JobPace,
}

impl Drop for Probe<'_> {
    fn drop(&mut self) {
        self.pace.lock().probing = false;
        self.pace.changed.notify_waiters();
    }
}

impl JobPace {
    fn lock(&self) -> MutexGuard<'_, Pace> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// When a job whose submit was answered at `answered` is first polled, and the probe
    /// if it is the one. A job that waits for the first job to be found complete polls on
    /// its own after [`MOST_POLL`]. None: `give_up` came first.
    pub(super) async fn first_poll(
        &self,
        answered: Instant,
        give_up: &CancellationToken,
    ) -> Option<(Instant, Option<Probe<'_>>)> {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            match self.lock().plan() {
                Plan::Probe(after) => return Some((answered + after, Some(Probe { pace: self }))),
                Plan::Due(after) => return Some((answered + after, None)),
                Plan::Wait => {}
            }
            tokio::select! {
                () = changed => {}
                () = tokio::time::sleep_until(answered + MOST_POLL) => {
                    return Some((Instant::now(), None));
                }
                () = give_up.cancelled() => return None,
            }
        }
    }

    /// How long after its submit's answer a job is due; None while nothing is known.
    pub(super) fn due(&self) -> Option<Duration> {
        self.lock().due
    }

    /// Learns from a job found complete.
    pub(super) fn learn(&self, seen: Seen) {
        self.lock().learn(seen);
        self.changed.notify_waiters();
    }
}

/// The pace's state, without the clock.
#[derive(Debug, Default)]
struct Pace {
    /// How long after its submit's answer a job is complete, as the jobs so far showed.
    due: Option<Duration>,
    /// The latest time a recent job was seen unfinished: jobs take longer than this.
    floor: Duration,
    probing: bool,
    /// Jobs polled when due since probing stopped.
    settled: u32,
}

/// How a job's first poll is timed, after its submit's answer.
#[derive(Debug, PartialEq, Eq)]
enum Plan {
    Probe(Duration),
    Due(Duration),
    /// Nothing is known yet, and a job is finding it out.
    Wait,
}

impl Pace {
    fn plan(&mut self) -> Plan {
        let Some(due) = self.due else {
            if self.probing {
                return Plan::Wait;
            }
            self.probing = true;
            return Plan::Probe(FIRST_POLL);
        };
        let early = due.mul_f64(PROBE_AT);
        if self.floor >= early {
            // Jobs take between the floor and the time they are due: nothing to gain from
            // a probe, until the floor is forgotten to find out whether jobs got faster.
            self.settled += 1;
            if self.settled >= RECHECK_AFTER {
                self.floor = Duration::ZERO;
                self.settled = 0;
            }
            return Plan::Due(due);
        }
        if self.probing {
            return Plan::Due(due);
        }
        self.probing = true;
        Plan::Probe(early.max(self.floor + (due - self.floor) / 2))
    }

    fn learn(&mut self, seen: Seen) {
        let due = match (self.due, seen.last_unfinished) {
            (None, _) => seen.complete_at,
            // The probe found its job complete early: jobs are at least this fast now.
            (Some(due), None) if seen.probed => due.min(seen.complete_at),
            // Unfinished when it was due: jobs got slower.
            (Some(due), Some(unfinished)) if unfinished >= due => due.max(seen.complete_at),
            (Some(due), _) => due,
        };
        let due = due.clamp(LEAST_POLL, MOST_POLL);
        if let Some(unfinished) = seen.last_unfinished {
            self.floor = self.floor.max(unfinished);
        }
        self.floor = self.floor.min(due);
        self.due = Some(due);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    /// Plays `jobs` jobs that each take `takes` against the pace, one at a time: each polls
    /// when planned, then as the poll loop would after a miss (at `due` for a probe, else
    /// a quarter of its first wait later, doubling). The polls they cost.
    fn play(pace: &mut Pace, jobs: u32, takes: Duration) -> u32 {
        let mut polls = 0;
        for _ in 0..jobs {
            let (mut at, probed) = match pace.plan() {
                Plan::Probe(at) => (at, true),
                Plan::Due(at) => (at, false),
                Plan::Wait => panic!("one job at a time never waits"),
            };
            let mut interval = at / 4;
            let mut last_unfinished = None;
            polls += 1;
            while at < takes {
                let first_miss = last_unfinished.is_none();
                last_unfinished = Some(at);
                at = match pace.due {
                    Some(due) if probed && first_miss && due > at => due,
                    _ => {
                        let next = at + interval;
                        interval *= 2;
                        next
                    }
                };
                polls += 1;
            }
            pace.learn(Seen {
                complete_at: at,
                last_unfinished,
                probed,
            });
            pace.probing = false;
        }
        polls
    }

    #[test]
    fn the_first_job_finds_out_while_the_others_wait() {
        let mut pace = Pace::default();
        assert_eq!(pace.plan(), Plan::Probe(FIRST_POLL));
        assert_eq!(pace.plan(), Plan::Wait);
        // Unfinished at 1 s and 1.25 s, complete at 1.75 s.
        pace.learn(Seen {
            complete_at: ms(1750),
            last_unfinished: Some(ms(1250)),
            probed: true,
        });
        pace.probing = false;
        assert_eq!(pace.due, Some(ms(1750)));
        assert_eq!(pace.floor, ms(1250));
        // The next probe goes halfway to what is known, no sooner than 90% of due.
        assert_eq!(pace.plan(), Plan::Probe(ms(1575)));
        assert_eq!(pace.plan(), Plan::Due(ms(1750)));
    }

    #[test]
    fn jobs_of_a_steady_length_cost_one_poll_each_and_a_few_probes() {
        let mut pace = Pace::default();
        // 500 ms jobs: the first poll at 1 s finds one complete; probes close in on it.
        let polls = play(&mut pace, 42, ms(500));
        assert!(polls <= 42 + 2, "{polls} polls");
        let due = pace.due.unwrap();
        assert!(due >= ms(500) && due <= ms(560), "{due:?}");
        // Then at most one poll more every RECHECK_AFTER jobs.
        let polls = play(&mut pace, 100, ms(500));
        assert!(polls <= 100 + 100 / RECHECK_AFTER, "{polls} polls");
    }

    #[test]
    fn jobs_that_get_slower_or_faster_move_the_pace() {
        let mut pace = Pace::default();
        play(&mut pace, 20, ms(500));
        // Slower: the first job late at its due time raises it.
        play(&mut pace, 1, ms(2000));
        assert!(pace.due.unwrap() >= ms(2000), "{:?}", pace.due);
        let polls = play(&mut pace, 20, ms(2000));
        assert!(polls <= 20 + 2, "{polls} polls");
        // Faster again: the probes bring the pace down, a tenth at a time.
        play(&mut pace, 200, ms(300));
        assert!(pace.due.unwrap() <= ms(340), "{:?}", pace.due);
    }
}
