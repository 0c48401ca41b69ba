//! The rate gate: every request of the process, lookups included, passes through one
//! [`RateGate`] before it leaves. It keeps these promises:
//!
//! - a hard ceiling of `rpm` requests in any window (a governor GCRA limiter with a burst of
//!   2 and a steady rate of rpm - 2 per window, so no window ever holds more than rpm);
//! - with a rate share, a ceiling that follows the server: `share` x `x-ratelimit-limit`,
//!   learnt from the first answer and re-learnt when the org's plan changes;
//! - one shared pause: a 429 stops every worker until the reset the server gave, instead of
//!   each worker retrying on its own and burning the budget;
//! - slowing before zero: the `x-ratelimit-remaining` / `-reset` headers spread what is
//!   left of the server's budget (less the requests sent since) over the time to its reset,
//!   so a server limit below ours, or other integrations sharing the org's budget, cost few
//!   429s; a reset given in whole seconds is narrowed, answer by answer, to about the
//!   spacing of the requests ([`window`]), so that a short window's end is not waited out
//!   a second too long;
//! - a stop ends every wait for the server at once: once the run's stop (handed over with
//!   [`RateGate::stop_on`]) is cancelled, a request the server holds back (a pause, the
//!   probe's answer, the pacing of a low budget) is not sent but refused with
//!   [`Held::Stopping`], so its row stays pending. A request that can leave at once still
//!   does (our own ceiling's wait, one slot of `rpm`, is not the server's), so that work in
//!   flight, such as a bulk job's polls, finishes within the grace;
//! - no silent stall ([`hold`]): a pause longer than a few seconds is logged when it
//!   starts, with its cause and length, and an API that lets no request through for
//!   [`DEFAULT_MAX_STALL`] (or the limit given) stops the run with [`Held::Stalled`].

mod hold;
mod window;

pub use self::hold::DEFAULT_MAX_STALL;

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use reqwest::header::HeaderMap;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use self::hold::{Holds, spoken};
use self::window::WindowClock;

/// Longest pause a server's headers may impose at once.
const MAX_PAUSE: Duration = Duration::from_secs(300);

/// Shared by every worker of a run.
pub struct RateGate {
    window: Duration,
    /// Replaced when a rate share learns the server's limit; workers hold an Arc of the
    /// one they wait on.
    limiter: Mutex<Option<Arc<DefaultDirectRateLimiter>>>,
    share: Option<Share>,
    /// Requests per second our own ceiling allows (None: no ceiling of our own).
    own_pace: Mutex<Option<f64>>,
    state: Mutex<GateState>,
    /// The run's stop: when it is cancelled, no request waits for the server any more.
    stop: Mutex<CancellationToken>,
}

/// Why the gate let a request go no further. The request was not sent.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Held {
    /// The run is stopping, and the server held the request back.
    #[error("not sent: the run is stopping")]
    Stopping,
    /// The API let no request through for the longest the run waits: the run stops.
    #[error("{0}")]
    Stalled(String),
}

/// A rate share: the fraction of the server's `x-ratelimit-limit` to use.
struct Share {
    fraction: f64,
    /// The limit the fraction was last applied to.
    applied: Mutex<Option<u64>>,
    /// Until the first answer (or lost answer), one probe request goes out alone, so that
    /// nothing is sent at `--rpm` pace before the server's limit is known.
    probe_sent: AtomicBool,
    answered: watch::Sender<bool>,
}

struct GateState {
    /// No request leaves before this (set by 429s and by remaining = 0).
    paused_until: Instant,
    /// Pacing from the server's headers: the next request's earliest start, and the
    /// spacing between requests while the server's budget runs low.
    next_slot: Instant,
    spacing: Duration,
    /// How long the server has let nothing through, against the limit.
    holds: Holds,
    /// Requests let out so far: a request's number tells how many left after it.
    let_out: u64,
    /// Where the server's window ends, when its reset comes in whole seconds.
    clock: WindowClock,
    /// What the server's latest answer says is left of its window, less the requests let
    /// out since: none left, nothing leaves before the window's end.
    left: Option<Left>,
}

#[derive(Clone, Copy, Debug)]
struct Left {
    requests: u64,
    until: Instant,
}

/// A request the gate let out: when, and how many left before it. Its answer goes back to
/// the gate with it ([`RateGate::observe`]).
#[derive(Clone, Copy, Debug)]
pub struct Pass {
    sent: Instant,
    number: u64,
}

impl Pass {
    /// The same pass, for a request that leaves later than the gate let it out (its
    /// caller records something first): the window clock learns from when requests leave.
    pub fn leaving_now(self) -> Pass {
        Pass {
            sent: Instant::now().max(self.sent),
            ..self
        }
    }
}

/// What the server said of its budget in one response.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BudgetHeaders {
    pub limit: Option<u64>,
    pub remaining: Option<u64>,
    pub reset_in: Option<Duration>,
    /// The reset as whole seconds from now, when it was given so.
    pub reset_whole: Option<u64>,
    pub retry_after: Option<Duration>,
}

impl RateGate {
    /// A gate for at most `requests` requests in any `window`; `requests == 0` means no
    /// limit of our own (the server's headers still apply).
    pub fn new(requests: u32, window: Duration) -> RateGate {
        let now = Instant::now();
        RateGate {
            window,
            limiter: Mutex::new(ceiling(requests, window)),
            share: None,
            own_pace: Mutex::new(pace(requests, window)),
            state: Mutex::new(GateState {
                paused_until: now,
                next_slot: now,
                spacing: Duration::ZERO,
                holds: Holds::new(DEFAULT_MAX_STALL),
                let_out: 0,
                clock: WindowClock::new(),
                left: None,
            }),
            stop: Mutex::new(CancellationToken::new()),
        }
    }

    /// The same gate, stopping the run once the API has let no request through for
    /// `limit` (instead of [`DEFAULT_MAX_STALL`]).
    pub fn with_max_stall(self, limit: Duration) -> RateGate {
        self.lock().holds.set_limit(limit);
        self
    }

    /// Hands the gate the run's stop: once `stop` is cancelled, every wait for the server
    /// ends at once with [`Held::Stopping`].
    pub fn stop_on(&self, stop: CancellationToken) {
        *self.stop.lock().unwrap_or_else(|p| p.into_inner()) = stop;
    }

    /// A gate for `share` (0 < share <= 1) of the limit the server reports in
    /// `x-ratelimit-limit`; until the first answer says it, at most `initial` requests in
    /// any `window`.
    pub fn with_share(share: f64, initial: u32, window: Duration) -> RateGate {
        RateGate {
            share: Some(Share {
                fraction: share,
                applied: Mutex::new(None),
                probe_sent: AtomicBool::new(false),
                answered: watch::channel(false).0,
            }),
            ..RateGate::new(initial, window)
        }
    }

    /// Waits until one more request may leave; the caller sends at once. After the run's
    /// stop, a request that would have to wait for the server is refused instead, and so is
    /// every request once the API has let nothing through for the stall limit.
    ///
    /// The pause and the pacing slot are waited out first and the ceiling's token is taken
    /// last, so nothing waits between the token and the send: requests that queued during
    /// a pause cannot leave together on top of the limiter's burst when it ends.
    pub async fn acquire(&self) -> Result<Pass, Held> {
        let stop = self.stop.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(share) = &self.share
            && !*share.answered.borrow()
            && share.probe_sent.swap(true, Ordering::SeqCst)
        {
            let mut answered = share.answered.subscribe();
            tokio::select! {
                biased;
                () = stop.cancelled() => return Err(Held::Stopping),
                _ = answered.wait_for(|answered| *answered) => {}
            }
        }
        loop {
            let (ready_at, stalls_at) = {
                let state = self.lock();
                (state.ready_at(), state.holds.deadline())
            };
            let now = Instant::now();
            if stalls_at.is_some_and(|at| at <= now) {
                return Err(self.lock().holds.stalled());
            }
            if ready_at > now {
                let wake = stalls_at.map_or(ready_at, |at| at.min(ready_at));
                tokio::select! {
                    biased;
                    () = stop.cancelled() => return Err(Held::Stopping),
                    () = tokio::time::sleep_until(wake) => {}
                }
                // The pause may have grown meanwhile, or the stall limit come.
                continue;
            }
            let limiter = self
                .limiter
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            if let Some(limiter) = limiter {
                limiter.until_ready().await;
            }
            // A pause, or another request, may have taken the slot meanwhile; the token is
            // then spent unused, which can only lower the rate.
            let mut state = self.lock();
            let now = Instant::now();
            if state.ready_at() <= now {
                state.next_slot = now + state.spacing;
                return Ok(state.let_out(now));
            }
        }
    }

    /// Tells the gate a request got no answer at all: with a rate share, the others stop
    /// waiting for the probe's answer and go on at `--rpm` until a limit is heard of.
    pub fn answer_settled(&self) {
        if let Some(share) = &self.share {
            share.answered.send_replace(true);
        }
    }

    /// Learns from the answer to the request let out as `pass`. For a 429, pauses everyone
    /// until the reset (`Retry-After`, else `x-ratelimit-reset`, else one second); a pause
    /// worth it is logged when it starts.
    pub fn observe(&self, pass: &Pass, status: u16, headers: &HeaderMap) {
        self.observe_in(pass, status, headers, Limits::Org);
    }

    /// [`RateGate::observe`] for a request under per-object limits as well as the org's
    /// (an update of one record): a 429 that says the org's budget is not spent
    /// ([`Spent::Record`]) pauses no one, and the wait it asks of this record is returned.
    pub fn observe_record(
        &self,
        pass: &Pass,
        status: u16,
        headers: &HeaderMap,
    ) -> Option<Duration> {
        self.observe_in(pass, status, headers, Limits::OrgAndRecord)
    }

    fn observe_in(
        &self,
        pass: &Pass,
        status: u16,
        headers: &HeaderMap,
        limits: Limits,
    ) -> Option<Duration> {
        let budget = BudgetHeaders::parse(headers);
        let record_wait = match (status, limits, budget.spent_by_429()) {
            (429, Limits::OrgAndRecord, Spent::Record(wait)) => Some(wait),
            _ => None,
        };
        if let (Some(share), Some(limit)) = (&self.share, budget.limit) {
            self.follow_limit(share, limit);
        }
        self.answer_settled();
        let own_pace = *self.own_pace.lock().unwrap_or_else(|p| p.into_inner());
        // One record's limit is no verdict on the org's budget: its headers are learnt as
        // any answer's, and no one pauses.
        let status = if record_wait.is_some() { 200 } else { status };
        let line = self
            .lock()
            .answer(pass, Instant::now(), status, &budget, headers, own_pace);
        if let Some(line) = line {
            tracing::warn!("{line}");
        }
        record_wait
    }

    /// With a rate share: the ceiling follows the limit the server reports.
    fn follow_limit(&self, share: &Share, limit: u64) {
        let mut applied = share.applied.lock().unwrap_or_else(|p| p.into_inner());
        if *applied == Some(limit) {
            return;
        }
        *applied = Some(limit);
        let requests = ((limit as f64) * share.fraction).floor().max(1.0) as u32;
        tracing::info!(
            "the org's limit is {limit} requests per window: using {requests} ({:.0}%)",
            share.fraction * 100.0
        );
        let limiter = ceiling(requests, self.window);
        *self.own_pace.lock().unwrap_or_else(|p| p.into_inner()) = pace(requests, self.window);
        if let Some(limiter) = &limiter {
            // Charge it for the probe, already sent in this window.
            let _ = limiter.check();
        }
        *self.limiter.lock().unwrap_or_else(|p| p.into_inner()) = limiter;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl GateState {
    /// When the next request may leave: after the pause, its pacing slot, and the end of a
    /// window with nothing left.
    fn ready_at(&self) -> Instant {
        let ready = self.paused_until.max(self.next_slot);
        match self.left {
            Some(left) if left.requests == 0 => ready.max(left.until),
            _ => ready,
        }
    }

    /// Lets a request out now.
    fn let_out(&mut self, now: Instant) -> Pass {
        self.left = self.left.filter(|left| left.until > now).map(|left| Left {
            requests: left.requests.saturating_sub(1),
            ..left
        });
        let pass = Pass {
            sent: now,
            number: self.let_out,
        };
        self.let_out += 1;
        pass
    }

    /// What an answer means for the requests not yet sent: a pause, a pace, or nothing
    /// (`own_pace`: our own ceiling's, per second). The line to log, if any.
    fn answer(
        &mut self,
        pass: &Pass,
        now: Instant,
        status: u16,
        budget: &BudgetHeaders,
        headers: &HeaderMap,
        own_pace: Option<f64>,
    ) -> Option<String> {
        if let (Some(remaining), Some(reset)) = (budget.remaining, budget.reset_whole) {
            self.clock.learn(pass.sent, remaining, reset, budget.limit);
        }
        if status == 429 {
            self.clock.refused();
            let wait = budget.wait_of_429();
            return self.pause(now, wait, budget.cause_of_429(headers));
        }
        let (Some(remaining), Some(reset_in)) = (budget.remaining, budget.reset_in) else {
            self.holds.release();
            return None;
        };
        // Where the answer's window ends: as the clock knows it, else the reset as given,
        // from now (later than from the server's reading of the request: it errs late).
        let known_end = budget.reset_whole.and(self.clock.end_of(pass.sent));
        let end = known_end.unwrap_or(now + reset_in.min(MAX_PAUSE));
        if remaining > 0 {
            self.holds.release();
        }
        if end <= now {
            // A window that is over says nothing of the one in progress.
            return None;
        }
        if remaining == 0 {
            // Nothing left until the end: wait for it. Spacing from an empty budget would
            // add a whole window per request after the pause; the next answer sets it anew.
            self.spacing = Duration::ZERO;
            self.left = None;
            return self.pause(now, end - now, budget.cause_of_spent(headers));
        }
        // The requests let out since this one was counted take from what is left too, and
        // so does every request let out from now on, until the next answer says anew. It is
        // counted down only against an end the clock knows: against one known to the next
        // whole second, the last answers of a window, read after it ended, held the next
        // requests for up to a second (measured: 1.5% of a 2,000/min budget).
        let requests = remaining.saturating_sub(self.let_out - pass.number - 1);
        self.left = known_end.map(|until| Left { requests, until });
        self.spacing = match (requests, known_end) {
            (0, Some(_)) => Duration::ZERO,
            (left, _) => spacing(remaining, left, end - now, own_pace),
        };
        None
    }

    /// Stops every request for `wait` (at most [`MAX_PAUSE`]) from `now`, for `cause`: the
    /// line to log, if the pause is worth one.
    fn pause(&mut self, now: Instant, wait: Duration, cause: String) -> Option<String> {
        let wait = wait.min(MAX_PAUSE);
        let until = now + wait;
        let extending = until.saturating_duration_since(self.paused_until.max(now));
        self.paused_until = self.paused_until.max(until);
        self.holds.pause(now, wait, extending, cause)
    }
}

/// The spacing that spreads `left` requests (what the server says `remaining`, less the
/// requests sent since) over the `until_end` of its window (with none left, a wait for the
/// end), or none while our own ceiling (`own_pace`, per second) would not spend its
/// `remaining` before the end.
///
/// While the server has more left than our ceiling would send before its reset, spacing by
/// its headers would only put a second pacer in series with ours, and two pacers at the
/// same rate lose a few percent of it (measured: 98.0% of a 2,000/min budget with it, at
/// 400-500 ms). It slows us when others share the budget, or the server's limit is below
/// ours. A second of tolerance keeps a reset rounded up to whole seconds from reading as a
/// budget tighter than ours; the requests in flight are part of our pace, so that test
/// leaves them in (taken off, they put the second pacer in at the start of a 2,000/min
/// window: 6 s to the budget's pace instead of 4, measured). What our ceiling spends early
/// is only a wait at the end, where the count of what is left holds the next request.
fn spacing(remaining: u64, left: u64, until_end: Duration, own_pace: Option<f64>) -> Duration {
    let before_end = until_end
        .saturating_sub(Duration::from_secs(1))
        .as_secs_f64();
    if own_pace.is_some_and(|pace| remaining as f64 >= pace * before_end) {
        Duration::ZERO
    } else {
        until_end / u32::try_from(left + 1).unwrap_or(u32::MAX)
    }
}

impl BudgetHeaders {
    /// Reads `x-ratelimit-*` and `Retry-After`. The unit of `x-ratelimit-reset` is not
    /// documented: a value above 1e12 is taken as epoch milliseconds, above 1e9 as epoch
    /// seconds, anything else as seconds from now. Waits are read as given, however long
    /// (the gate pauses [`MAX_PAUSE`] at most, and says when a header asked for more).
    pub fn parse(headers: &HeaderMap) -> BudgetHeaders {
        let text = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
        };
        // A server's headers are input: NaN, infinities and negatives are ignored.
        let number = |name: &str| {
            text(name)
                .and_then(|v| v.parse::<f64>().ok())
                .filter(|v| v.is_finite() && *v >= 0.0)
        };
        let whole = |name: &str| number(name).map(|v| v.min(f64::from(u32::MAX)) as u64);
        let reset = number("x-ratelimit-reset");
        let reset_in = reset.map(seconds_until);
        // Whole seconds from now, not an epoch: what the window clock learns from.
        let reset_whole = reset
            .filter(|reset| reset.fract() == 0.0 && *reset <= 1e9)
            .map(|reset| reset as u64);
        let retry_after = text("retry-after").and_then(|value| match value.parse::<f64>() {
            Ok(seconds) if seconds.is_finite() && seconds >= 0.0 => Some(saturating(seconds)),
            Ok(_) => None,
            Err(_) => httpdate::parse_http_date(value)
                .ok()
                .map(|at| at.duration_since(SystemTime::now()).unwrap_or_default()),
        });
        BudgetHeaders {
            limit: whole("x-ratelimit-limit"),
            remaining: whole("x-ratelimit-remaining"),
            reset_in,
            reset_whole,
            retry_after,
        }
    }
}

/// Which limits a request is under: every request is under the org's; an update of one
/// record is under its per-object limit too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Limits {
    Org,
    OrgAndRecord,
}

/// What a 429 says is spent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spent {
    /// The org's budget: every request waits for its reset.
    Org,
    /// Not the org's budget (its `x-ratelimit-remaining` is above 0), so the limit of one
    /// record: Kustomer's per-object update limits, whose numbers are unpublished (the
    /// docs: "follow 429 and its headers"). Only a request for that record waits this long
    /// (`Retry-After`, else the reset, else one second).
    Record(Duration),
}

impl BudgetHeaders {
    /// What a 429 with these headers says is spent: the one place that tells one record's
    /// limit from the org's. A 429 without `x-ratelimit-remaining` says nothing of the
    /// org's budget and is taken as the org's, which pauses everyone: the cautious reading.
    pub fn spent_by_429(&self) -> Spent {
        match self.remaining {
            Some(remaining) if remaining > 0 => Spent::Record(self.wait_of_429()),
            _ => Spent::Org,
        }
    }

    /// How long a 429 asks to wait: `Retry-After`, else the reset, else one second.
    fn wait_of_429(&self) -> Duration {
        self.retry_after
            .or(self.reset_in)
            .unwrap_or(Duration::from_secs(1))
            .max(Duration::from_millis(50))
    }

    /// Why a 429 pauses the gate, in words for the log.
    fn cause_of_429(&self, headers: &HeaderMap) -> String {
        if self.retry_after.is_some() {
            format!(
                "429 with Retry-After: {}",
                header_text(headers, "retry-after")
            ) + &beyond_the_longest_pause(self.retry_after)
        } else if self.reset_in.is_some() {
            format!(
                "429 with x-ratelimit-reset: {}",
                header_text(headers, "x-ratelimit-reset")
            ) + &beyond_the_longest_pause(self.reset_in)
        } else {
            "429 with neither Retry-After nor x-ratelimit-reset (a pause of 1 s each)".into()
        }
    }

    /// Why a spent budget pauses the gate, in words for the log.
    fn cause_of_spent(&self, headers: &HeaderMap) -> String {
        format!(
            "its budget is spent (x-ratelimit-remaining: 0) until its reset (x-ratelimit-reset: {})",
            header_text(headers, "x-ratelimit-reset")
        ) + &beyond_the_longest_pause(self.reset_in)
    }
}

fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map_or("", str::trim)
}

/// What is said of a wait longer than the gate takes: an absurd reset, cut short.
fn beyond_the_longest_pause(wait: Option<Duration>) -> String {
    match wait {
        Some(wait) if wait > MAX_PAUSE => {
            format!(", which is absurd (more than {} away)", spoken(MAX_PAUSE))
        }
        _ => String::new(),
    }
}

/// A GCRA limiter for at most `requests` in any `window`, burst included: burst b and a
/// steady rate of `requests - b` per window, so no window ever holds more than `requests`.
/// The burst is 2: a waiter wakes a little after its token is due (timer granularity), and
/// with a burst of 1 that lateness is lost for good, 1 to 3% of the budget at 10 to 33
/// requests/s (measured); a burst of 2 absorbs it, at the cost of one request per window.
/// A larger burst (it was 1% of the ceiling) only costs more of the steady rate.
/// None for 0.
fn ceiling(requests: u32, window: Duration) -> Option<Arc<DefaultDirectRateLimiter>> {
    let requests = NonZeroU32::new(requests)?;
    let burst = if requests.get() > 2 { 2 } else { 1 };
    let steady = (requests.get() - burst).max(1);
    let period = window / steady;
    let quota = Quota::with_period(period.max(Duration::from_nanos(1)))?
        .allow_burst(NonZeroU32::new(burst)?);
    Some(Arc::new(RateLimiter::direct(quota)))
}

/// The steady requests per second of a ceiling of `requests` per `window`.
fn pace(requests: u32, window: Duration) -> Option<f64> {
    (requests > 0).then(|| f64::from(requests) / window.as_secs_f64())
}

/// Seconds as a Duration, the longest one for more than it holds.
fn saturating(seconds: f64) -> Duration {
    Duration::try_from_secs_f64(seconds).unwrap_or(Duration::MAX)
}

fn seconds_until(reset: f64) -> Duration {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    let seconds = if reset > 1e12 {
        reset / 1000.0 - now
    } else if reset > 1e9 {
        reset - now
    } else {
        reset
    };
    saturating(seconds.max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    impl RateGate {
        /// A request let out now, whatever the gate would say: to give answers to.
        fn pass(&self) -> Pass {
            self.lock().let_out(Instant::now())
        }
    }

    fn headers(pairs: &[(&'static str, String)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn reset_is_read_in_any_of_its_units() {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        for value in [
            "30".to_string(),
            (now + 30).to_string(),
            ((now + 30) * 1000).to_string(),
        ] {
            let parsed = BudgetHeaders::parse(&headers(&[("x-ratelimit-reset", value.clone())]));
            let seconds = parsed.reset_in.unwrap().as_secs_f64();
            assert!((28.0..=31.0).contains(&seconds), "{value} -> {seconds}");
        }
        let parsed = BudgetHeaders::parse(&headers(&[("retry-after", "7".into())]));
        assert_eq!(parsed.retry_after, Some(Duration::from_secs(7)));
    }

    #[tokio::test]
    async fn the_ceiling_holds_in_any_window_burst_included() {
        // Real time: governor keeps its own clock. Slowness can only help the assertion.
        let gate = RateGate::new(40, Duration::from_secs(1));
        let start = std::time::Instant::now();
        let mut times = Vec::new();
        for _ in 0..60 {
            gate.acquire().await.unwrap();
            times.push(start.elapsed());
        }
        for (index, at) in times.iter().enumerate() {
            let in_window = times[index..]
                .iter()
                .take_while(|t| **t < *at + Duration::from_secs(1))
                .count();
            assert!(in_window <= 40, "{in_window} requests within 1 s of {at:?}");
        }
    }

    #[tokio::test]
    async fn requests_queued_during_a_pause_do_not_break_the_ceiling_when_it_ends() {
        // Real time: governor keeps its own clock.
        let gate = std::sync::Arc::new(RateGate::new(10, Duration::from_secs(1)));
        let start = std::time::Instant::now();
        let times = std::sync::Arc::new(Mutex::new(Vec::new()));
        let mut workers = Vec::new();
        for _ in 0..8 {
            let (gate, times) = (gate.clone(), times.clone());
            workers.push(tokio::spawn(async move {
                for _ in 0..4 {
                    gate.acquire().await.unwrap();
                    times.lock().unwrap().push(start.elapsed());
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        gate.lock()
            .pause(Instant::now(), Duration::from_millis(1500), "a test".into());
        for worker in workers {
            worker.await.unwrap();
        }
        let mut times = times.lock().unwrap().clone();
        times.sort();
        for (index, at) in times.iter().enumerate() {
            let in_window = times[index..]
                .iter()
                .take_while(|t| **t < *at + Duration::from_secs(1))
                .count();
            assert!(in_window <= 10, "{in_window} requests within 1 s of {at:?}");
        }
    }

    #[test]
    fn nonsense_headers_are_ignored() {
        for value in ["NaN", "inf", "-5", "1e400"] {
            let parsed = BudgetHeaders::parse(&headers(&[
                ("x-ratelimit-reset", value.into()),
                ("retry-after", value.into()),
            ]));
            assert_eq!(parsed.reset_in, None, "{value}");
            assert_eq!(parsed.retry_after, None, "{value}");
        }
        let gate = RateGate::new(0, Duration::from_secs(60));
        gate.observe(
            &gate.pass(),
            200,
            &headers(&[
                ("x-ratelimit-remaining", "1e20".into()),
                ("x-ratelimit-reset", "5".into()),
            ]),
        );
    }

    #[test]
    fn the_servers_headers_slow_us_only_when_its_budget_is_tighter_than_ours() {
        let gate = RateGate::new(60, Duration::from_secs(60));
        let budget = |remaining: u32, reset: u32| {
            headers(&[
                ("x-ratelimit-remaining", remaining.to_string()),
                ("x-ratelimit-reset", reset.to_string()),
            ])
        };
        gate.observe(&gate.pass(), 200, &budget(100, 60));
        assert_eq!(gate.lock().spacing, Duration::ZERO);
        gate.observe(&gate.pass(), 200, &budget(9, 60));
        assert_eq!(gate.lock().spacing, Duration::from_secs(6));
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_pauses_everyone_until_the_reset() {
        let gate = RateGate::new(0, Duration::from_secs(60));
        gate.observe(&gate.pass(), 429, &headers(&[("retry-after", "2".into())]));
        let start = Instant::now();
        gate.acquire().await.unwrap();
        assert!(Instant::now() - start >= Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn one_records_429_pauses_no_one_and_the_orgs_pauses_everyone() {
        // The sandbox's per-object limit: Retry-After for the record, and the org's headers
        // showing its budget not spent.
        let record = headers(&[
            ("retry-after", "3".into()),
            ("x-ratelimit-limit", "1000".into()),
            ("x-ratelimit-remaining", "990".into()),
            ("x-ratelimit-reset", "40".into()),
        ]);
        assert_eq!(
            BudgetHeaders::parse(&record).spent_by_429(),
            Spent::Record(Duration::from_secs(3))
        );
        let gate = RateGate::new(0, Duration::from_secs(60));
        let wait = gate.observe_record(&gate.pass(), 429, &record);
        assert_eq!(wait, Some(Duration::from_secs(3)));
        let start = Instant::now();
        gate.acquire().await.unwrap();
        assert_eq!(Instant::now(), start, "no one waits for one record's limit");

        // The org's budget spent, or not said: everyone waits, even for an update.
        for org in [
            headers(&[
                ("retry-after", "2".into()),
                ("x-ratelimit-remaining", "0".into()),
            ]),
            headers(&[("retry-after", "2".into())]),
        ] {
            assert_eq!(BudgetHeaders::parse(&org).spent_by_429(), Spent::Org);
            let gate = RateGate::new(0, Duration::from_secs(60));
            assert_eq!(gate.observe_record(&gate.pass(), 429, &org), None);
            let start = Instant::now();
            gate.acquire().await.unwrap();
            assert!(Instant::now() - start >= Duration::from_secs(2));
        }
        // A create is under the org's limit only: its 429 pauses everyone whatever it says.
        let gate = RateGate::new(0, Duration::from_secs(60));
        gate.observe(&gate.pass(), 429, &record);
        let start = Instant::now();
        gate.acquire().await.unwrap();
        assert!(Instant::now() - start >= Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_ends_a_pause_at_once_and_the_request_is_not_sent() {
        let gate = std::sync::Arc::new(RateGate::new(0, Duration::from_secs(60)));
        let stop = CancellationToken::new();
        gate.stop_on(stop.clone());
        gate.observe(
            &gate.pass(),
            429,
            &headers(&[("retry-after", "300".into())]),
        );
        let start = Instant::now();
        let waiting = tokio::spawn({
            let gate = gate.clone();
            async move { gate.acquire().await }
        });
        tokio::time::sleep(Duration::from_secs(5)).await;
        stop.cancel();
        assert_eq!(waiting.await.unwrap().unwrap_err(), Held::Stopping);
        assert!(Instant::now() - start < Duration::from_secs(6));
        // After the stop, a request the server would hold back is refused at once...
        assert_eq!(gate.acquire().await.unwrap_err(), Held::Stopping);
        assert!(Instant::now() - start < Duration::from_secs(6));
        // ...and one it lets through still leaves (a bulk job's poll within the grace).
        let open = RateGate::new(0, Duration::from_secs(60));
        open.stop_on(stop);
        assert!(open.acquire().await.is_ok());
    }

    /// Sends through `gate` until it refuses, each request answered `status` with
    /// `answer`; how long that took and why it ended.
    async fn held_until_refused(
        gate: &RateGate,
        status: u16,
        answer: &[(&'static str, String)],
    ) -> (Duration, Held) {
        let start = Instant::now();
        loop {
            match gate.acquire().await {
                Ok(pass) => gate.observe(&pass, status, &headers(answer)),
                Err(held) => return (Instant::now() - start, held),
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_api_that_lets_nothing_through_stops_the_run_after_the_stall_limit() {
        let ten_minutes = Duration::from_secs(600);
        let absurd = [
            ("x-ratelimit-remaining", "0".to_string()),
            ("x-ratelimit-reset", "1e300".to_string()),
        ];
        for (status, answer, cause) in [
            (
                429,
                vec![],
                "429 with neither Retry-After nor x-ratelimit-reset",
            ),
            (
                429,
                vec![("retry-after", "300".into())],
                "429 with Retry-After: 300",
            ),
            (
                200,
                absurd.to_vec(),
                "x-ratelimit-reset: 1e300), which is absurd",
            ),
        ] {
            let gate = RateGate::new(0, Duration::from_secs(60));
            let (waited, held) = held_until_refused(&gate, status, &answer).await;
            assert!(
                waited >= ten_minutes && waited < ten_minutes + Duration::from_secs(2),
                "{cause}: {waited:?}"
            );
            let Held::Stalled(reason) = held else {
                panic!("{cause}: {held:?}")
            };
            assert!(reason.contains("for 10 minutes"), "{reason}");
            assert!(reason.contains(cause), "{reason}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_let_through_with_budget_to_spare_ends_the_hold() {
        let gate =
            RateGate::new(0, Duration::from_secs(60)).with_max_stall(Duration::from_secs(30));
        let start = Instant::now();
        for _ in 0..60 {
            let pass = gate.acquire().await.unwrap();
            gate.observe(&pass, 429, &headers(&[("retry-after", "1".into())]));
            let pass = gate.acquire().await.unwrap();
            gate.observe(&pass, 200, &headers(&[]));
        }
        assert!(Instant::now() - start >= Duration::from_secs(60));
        let (waited, _) = held_until_refused(&gate, 429, &[]).await;
        assert!(waited >= Duration::from_secs(30), "{waited:?}");
    }

    /// The sandbox's fixed windows (100 requests per 10 s, resets in whole seconds rounded
    /// up) behind 150 ms of latency (`jitter`: 50 to 250 ms, and 1 to 6 ms to reach the
    /// server), four workers sending through `gate` on tokio's paused clock: the requests it
    /// accepted from 10 s to 70 s, over its budget for those 60 s, and the share of 429s.
    async fn budget_used_against_short_windows(gate: RateGate, jitter: bool) -> (f64, f64) {
        use crate::sandbox::RateLimiter;
        use rand::{Rng, SeedableRng};
        let start = Instant::now();
        let gate = Arc::new(gate);
        let server = Arc::new(Mutex::new(RateLimiter::new(
            Some(100),
            Duration::from_secs(10),
        )));
        let counts = Arc::new(Mutex::new((0u64, 0u64, 0u64)));
        let mut workers = Vec::new();
        for worker in 0..4 {
            let (gate, server, counts) = (gate.clone(), server.clone(), counts.clone());
            let mut dice = rand::rngs::StdRng::seed_from_u64(worker);
            workers.push(tokio::spawn(async move {
                while Instant::now() - start < Duration::from_secs(70) {
                    let pass = gate.acquire().await.unwrap();
                    let (to_server, latency) = if jitter {
                        (dice.random_range(1..=6), dice.random_range(50..=250))
                    } else {
                        (1, 150)
                    };
                    let arrived = Instant::now() - start + Duration::from_millis(to_server);
                    let verdict = server.lock().unwrap().check(arrived).unwrap();
                    tokio::time::sleep(Duration::from_millis(latency)).await;
                    let mut answer = vec![
                        ("x-ratelimit-limit", verdict.limit.to_string()),
                        ("x-ratelimit-remaining", verdict.remaining.to_string()),
                        ("x-ratelimit-reset", verdict.reset_secs.to_string()),
                    ];
                    let mut counts = counts.lock().unwrap();
                    let steady =
                        arrived >= Duration::from_secs(10) && arrived < Duration::from_secs(70);
                    counts.0 += 1;
                    if !verdict.allowed {
                        counts.1 += 1;
                        answer.push(("retry-after", verdict.reset_secs.to_string()));
                    } else if steady {
                        counts.2 += 1;
                    }
                    drop(counts);
                    let status = if verdict.allowed { 200 } else { 429 };
                    gate.observe(&pass, status, &headers(&answer));
                }
            }));
        }
        for worker in workers {
            worker.await.unwrap();
        }
        let (requests, refused, accepted) = *counts.lock().unwrap();
        (accepted as f64 / 600.0, refused as f64 / requests as f64)
    }

    #[tokio::test(start_paused = true)]
    async fn a_short_windows_end_is_learnt_and_its_budget_used_to_the_last_percent() {
        for jitter in [false, true] {
            let gate = RateGate::new(0, Duration::from_secs(60));
            let (used, refused) = budget_used_against_short_windows(gate, jitter).await;
            assert!(used >= 0.98, "{:.1}% of the budget used", used * 100.0);
            assert!(
                refused <= 0.005,
                "{:.2}% of requests refused",
                refused * 100.0
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_pass_dated_when_its_request_leaves_keeps_its_place() {
        let gate = RateGate::new(0, Duration::from_secs(60));
        let pass = gate.acquire().await.unwrap();
        tokio::time::sleep(Duration::from_millis(40)).await;
        let leaving = pass.leaving_now();
        assert_eq!(leaving.number, pass.number);
        assert_eq!(leaving.sent - pass.sent, Duration::from_millis(40));
    }
}
