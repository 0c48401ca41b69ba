//! The server's hold on the run: since when it has let no request through (429s, or a
//! budget it says is spent), why, what of it is said in the log, and the limit past which
//! the run stops rather than grind on ([`Held::Stalled`]).

use std::time::Duration;

use tokio::time::Instant;

use super::Held;

/// Pauses this short are a budget's ordinary end of window and go unsaid; a longer one is
/// logged when it starts, and so is a hold of short pauses once it lasts this long.
pub(super) const WORTH_SAYING: Duration = Duration::from_secs(5);

/// How often a hold that goes on is said again.
const SAID_AGAIN_AFTER: Duration = Duration::from_secs(60);

/// How long the API may let no request through before the run stops, unless told
/// otherwise. Ten minutes: Kustomer counts its budget over a minute and the longest pause
/// the gate takes from a header is five minutes, so a healthy org lets a run through well
/// within it, even when other integrations spend most of the budget; ten minutes of nothing
/// is an API that will not, and a run (a nightly job) had better stop, say why and be
/// resumed later than wait on in silence.
pub const DEFAULT_MAX_STALL: Duration = Duration::from_secs(600);

/// The hold in progress, if any, and the limit on it.
#[derive(Debug)]
pub(super) struct Holds {
    current: Option<Hold>,
    limit: Duration,
}

#[derive(Debug)]
struct Hold {
    since: Instant,
    /// The latest pause's cause, in words.
    cause: String,
    /// How far into the hold it is next worth saying that it goes on.
    next_said: Duration,
}

impl Holds {
    pub(super) fn new(limit: Duration) -> Holds {
        Holds {
            current: None,
            limit,
        }
    }

    pub(super) fn set_limit(&mut self, limit: Duration) {
        self.limit = limit;
    }

    /// The server imposed a pause of `length` from `now`, `extending` the gate's pause by
    /// that much, for `cause`: the line to log, if it is worth one. A pause worth saying is
    /// said once, when it starts; a hold of short pauses is said once it lasts, and again
    /// every minute.
    pub(super) fn pause(
        &mut self,
        now: Instant,
        length: Duration,
        extending: Duration,
        cause: String,
    ) -> Option<String> {
        let limit = self.limit;
        let hold = self.current.get_or_insert_with(|| Hold {
            since: now,
            cause: String::new(),
            next_said: WORTH_SAYING,
        });
        hold.cause = cause;
        let held_for = now - hold.since;
        let stops = format!(
            "the run stops if it lets nothing through for {} (--max-stall)",
            spoken(limit)
        );
        if extending > WORTH_SAYING {
            hold.next_said = held_for + length + SAID_AGAIN_AFTER;
            let so_far = if held_for >= SAID_AGAIN_AFTER {
                format!(", after {} of nothing let through", spoken(held_for))
            } else {
                String::new()
            };
            return Some(format!(
                "the API holds every request back for {}: {}{so_far}; {stops}",
                spoken(length),
                hold.cause
            ));
        }
        if held_for < hold.next_said {
            return None;
        }
        hold.next_said = held_for + SAID_AGAIN_AFTER;
        Some(format!(
            "the API has let no request through for {}: {}; {stops}",
            spoken(held_for),
            hold.cause
        ))
    }

    /// An answer let a request through with budget to spare: the hold is over.
    pub(super) fn release(&mut self) {
        self.current = None;
    }

    /// When the run stops unless a request gets through; None when nothing holds it.
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.current.as_ref().map(|hold| hold.since + self.limit)
    }

    /// Why the run stops, once the deadline has passed.
    pub(super) fn stalled(&self) -> Held {
        let cause = self.current.as_ref().map_or("", |hold| hold.cause.as_str());
        Held::Stalled(format!(
            "the API let no request through for {} (--max-stall): {cause}",
            spoken(self.limit)
        ))
    }
}

/// A length as a person says it: "10 minutes", "42 s", "1.5 s".
pub(super) fn spoken(length: Duration) -> String {
    let seconds = length.as_secs_f64();
    if seconds >= 120.0 && length.as_secs().is_multiple_of(60) && length.subsec_nanos() == 0 {
        format!("{} minutes", length.as_secs() / 60)
    } else if seconds >= 10.0 {
        format!("{seconds:.0} s")
    } else {
        format!("{seconds:.1} s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_pause_is_said_once_when_it_starts() {
        let mut holds = Holds::new(DEFAULT_MAX_STALL);
        let start = Instant::now();
        let minutes = Duration::from_secs(300);
        let line = holds.pause(start, minutes, minutes, "429 with Retry-After: 300".into());
        assert_eq!(
            line.as_deref(),
            Some(
                "the API holds every request back for 5 minutes: 429 with Retry-After: 300; \
                 the run stops if it lets nothing through for 10 minutes (--max-stall)"
            )
        );
        // Another worker's 429 within the same pause adds nothing worth a line.
        let later = start + Duration::from_millis(10);
        let line = holds.pause(later, minutes, Duration::from_millis(10), "again".into());
        assert_eq!(line, None);
        // The next pause, when the first is over, is said again, with the hold so far.
        let line = holds
            .pause(start + minutes, minutes, minutes, "again".into())
            .unwrap();
        assert!(
            line.contains("after 5 minutes of nothing let through"),
            "{line}"
        );
    }

    #[test]
    fn short_pauses_that_go_on_are_said_after_a_few_seconds_then_every_minute() {
        let mut holds = Holds::new(DEFAULT_MAX_STALL);
        let start = Instant::now();
        let second = Duration::from_secs(1);
        let said: Vec<u32> = (0..200)
            .filter(|n| {
                let at = start + second * *n;
                holds.pause(at, second, second, "429".into()).is_some()
            })
            .collect();
        assert_eq!(said, [5, 65, 125, 185]);
        holds.release();
        assert_eq!(holds.deadline(), None);
    }

    #[test]
    fn the_stall_names_its_limit_and_its_cause() {
        let mut holds = Holds::new(Duration::from_secs(600));
        let start = Instant::now();
        holds.pause(
            start,
            Duration::from_secs(1),
            Duration::ZERO,
            "a cause".into(),
        );
        assert_eq!(holds.deadline(), Some(start + Duration::from_secs(600)));
        assert_eq!(
            holds.stalled(),
            Held::Stalled(
                "the API let no request through for 10 minutes (--max-stall): a cause".into()
            )
        );
        assert_eq!(spoken(Duration::from_millis(1500)), "1.5 s");
        assert_eq!(spoken(Duration::from_secs(42)), "42 s");
    }
}
