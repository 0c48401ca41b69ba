//! Where the server's rate window ends, when it gives its reset in whole seconds.
//!
//! A server that counts fixed windows often gives `x-ratelimit-reset` as whole seconds from
//! now, rounded up (the sandbox does, as did the reporter's fake): one answer says only that
//! its window ends within the second before `sent + reset`. Waiting out that whole second
//! loses half a second of budget a window on average, 5% of a 10-second one. But the
//! answers of one window all speak of the same end, and their sends fall at every fraction
//! of a second: a request sent just after the end's fraction reads a reset a second longer
//! than one sent just before. So each answer narrows the bounds on the end, to within about
//! the spacing of the requests, and a window ends between two requests' sends when
//! `remaining` jumps back up between them.
//!
//! The bounds are used once a window has ended within them (the server's rounding is then
//! what the clock takes it for), and not after a 429 or a contradiction, until a window
//! bears them out again. Times are send times: the end learnt is the instant from which a
//! request sent arrives after the window's end, at the latency the answers had. Each
//! answer's bounds are widened by [`TOLERANCE`] for the latency's jitter, and the end used is
//! the upper bound, so that what leaves after it is in the new window.

use std::time::Duration;

use tokio::time::Instant;

/// How far the latency to the server may move between two answers without the clock taking
/// them for a contradiction.
pub(super) const TOLERANCE: Duration = Duration::from_millis(10);

#[derive(Debug)]
pub(super) struct WindowClock {
    /// The window the latest answers speak of.
    current: Option<Window>,
    /// The most the server has said it allows (its limit, else the most it said was left).
    high: u64,
    /// Whether a window ended within its bounds since the clock last failed.
    borne_out: bool,
}

#[derive(Debug)]
struct Window {
    /// The send of the first answer seen in it: answers sent before are of earlier windows.
    began: Instant,
    /// Bounds on its end, in send time: the end is after `lower` and at `upper` at most.
    lower: Instant,
    upper: Instant,
    /// The answer of it sent last: when, and what it said was left.
    last_sent: Instant,
    last_remaining: u64,
}

impl WindowClock {
    pub(super) fn new() -> WindowClock {
        WindowClock {
            current: None,
            high: 0,
            borne_out: false,
        }
    }

    /// Learns from an answer to a request sent at `sent` that said `remaining` and a reset
    /// of `reset` whole seconds (`limit`: its `x-ratelimit-limit`, if any).
    pub(super) fn learn(&mut self, sent: Instant, remaining: u64, reset: u64, limit: Option<u64>) {
        self.high = limit.unwrap_or(0).max(self.high).max(remaining);
        let upper = sent + Duration::from_secs(reset) + TOLERANCE;
        let lower = (sent + Duration::from_secs(reset))
            .checked_sub(Duration::from_secs(1) + TOLERANCE)
            .unwrap_or(sent);
        let threshold = (self.high / 4).max(2);
        let Some(window) = &mut self.current else {
            self.current = Some(Window::new(sent, remaining, lower, upper));
            return;
        };
        if sent < window.began {
            return;
        }
        if sent > window.last_sent && remaining >= window.last_remaining + threshold {
            // A new window began between the two sends: did the last one end within its bounds?
            self.borne_out =
                window.lower < sent + TOLERANCE && window.upper + TOLERANCE > window.last_sent;
            self.current = Some(Window::new(sent, remaining, lower, upper));
            return;
        }
        let (narrowed_lower, narrowed_upper) = (window.lower.max(lower), window.upper.min(upper));
        if narrowed_lower < narrowed_upper {
            (window.lower, window.upper) = (narrowed_lower, narrowed_upper);
        } else {
            // The answers of one window cannot disagree: the clock does not know this server.
            (window.lower, window.upper) = (lower, upper);
            self.borne_out = false;
        }
        if sent > window.last_sent {
            (window.last_sent, window.last_remaining) = (sent, remaining);
        }
    }

    /// A 429: whatever the clock foresaw, the server refused; it is not used until a window
    /// ends within its bounds again.
    pub(super) fn refused(&mut self) {
        self.borne_out = false;
    }

    /// When the window ends that the answer to a request sent at `sent` speaks of, in send
    /// time (for an answer of an earlier window: by the first send of the current one);
    /// None while the clock is not to be used.
    pub(super) fn end_of(&self, sent: Instant) -> Option<Instant> {
        let window = self.current.as_ref().filter(|_| self.borne_out)?;
        Some(if sent < window.began {
            window.began
        } else {
            window.upper
        })
    }
}

impl Window {
    fn new(sent: Instant, remaining: u64, lower: Instant, upper: Instant) -> Window {
        Window {
            began: sent,
            lower,
            upper,
            last_sent: sent,
            last_remaining: remaining,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server's fixed windows of `window` seconds, the first ending `phase` seconds after
    /// `origin`, `limit` requests each.
    struct FixedWindows {
        origin: Instant,
        phase: f64,
        window: f64,
        limit: u64,
        counted: Option<(i64, u64)>,
    }

    impl FixedWindows {
        /// What it answers a request arriving at `at`: what is left, and the whole seconds
        /// to the reset, rounded up.
        fn answer(&mut self, at: Instant) -> (u64, u64) {
            let t = (at - self.origin).as_secs_f64() - self.phase;
            let index = (t / self.window).floor() as i64;
            let count = match self.counted {
                Some((current, count)) if current == index => count + 1,
                _ => 1,
            };
            self.counted = Some((index, count));
            let until_end = (index + 1) as f64 * self.window - t;
            (self.limit.saturating_sub(count), until_end.ceil() as u64)
        }
    }

    #[test]
    fn the_end_of_a_window_is_learnt_from_its_answers_and_used_once_borne_out() {
        let origin = Instant::now();
        let mut server = FixedWindows {
            origin,
            phase: 0.437,
            window: 10.0,
            limit: 100,
            counted: None,
        };
        let mut clock = WindowClock::new();
        // Requests every 97 ms, their sends at every fraction of a second, for 25 s.
        let mut foreseen = None;
        for n in 1..=258u32 {
            let sent = origin + Duration::from_millis(97) * n;
            let (remaining, reset) = server.answer(sent);
            clock.learn(sent, remaining, reset, Some(100));
            if n == 3 {
                // Before a window has ended within its bounds, the clock says nothing.
                assert_eq!(clock.end_of(sent), None);
            }
            foreseen = clock.end_of(sent);
        }
        // The window of the last answers ends at 30.437 s.
        let end = origin + Duration::from_millis(30_437);
        let foreseen = foreseen.expect("borne out by the windows that ended");
        assert!(foreseen >= end, "{:?} early", end - foreseen);
        assert!(
            foreseen - end <= Duration::from_millis(97) + TOLERANCE,
            "{:?} late",
            foreseen - end
        );
    }

    #[test]
    fn a_429_or_a_contradiction_stops_the_clock_until_a_window_bears_it_out() {
        let origin = Instant::now();
        let mut clock = WindowClock::new();
        let at = |ms: u64| origin + Duration::from_millis(ms);
        // A window ends at 1.5 s: a request at 1.45 s sees 0 left, one at 1.55 s many.
        clock.learn(at(1_000), 1, 1, Some(10));
        clock.learn(at(1_450), 0, 1, Some(10));
        clock.learn(at(1_550), 9, 10, Some(10));
        clock.learn(at(2_520), 8, 9, Some(10));
        let end = clock.end_of(at(2_520)).unwrap();
        assert!(end >= at(11_500) && end <= at(11_530), "{:?}", end - origin);
        // An answer of the window before speaks of a window over by this one's first send.
        assert_eq!(clock.end_of(at(1_450)), Some(at(1_550)));
        clock.refused();
        assert_eq!(clock.end_of(at(2_520)), None);
        // A window that ends within its bounds makes it usable again.
        clock.learn(at(11_450), 0, 1, Some(10));
        clock.learn(at(11_550), 9, 10, Some(10));
        assert!(clock.end_of(at(11_550)).is_some());
        // Answers that cannot both be right (ends at 21 s or later, and at 20.8 s at most).
        clock.learn(at(12_000), 8, 10, Some(10));
        clock.learn(at(12_800), 7, 8, Some(10));
        assert_eq!(clock.end_of(at(12_800)), None);
    }

    #[test]
    fn a_server_that_rounds_its_reset_down_is_not_taken_for_one_that_rounds_up() {
        let origin = Instant::now();
        let mut clock = WindowClock::new();
        let at = |ms: u64| origin + Duration::from_millis(ms);
        // The window ends at 1.5 s; the server says 0 s before it, 9 s after.
        clock.learn(at(1_000), 1, 0, Some(10));
        clock.learn(at(1_450), 0, 0, Some(10));
        clock.learn(at(1_550), 9, 9, Some(10));
        assert_eq!(clock.end_of(at(1_550)), None);
    }
}
