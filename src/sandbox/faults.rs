//! Fault injection and the org-wide rate limit: the misbehaviours the sandbox can put
//! between a client and its records. [`FaultConfig`] says how often each fault strikes;
//! [`Faults`] rolls the dice (seeded for reproducible runs) and keeps the count behind the
//! revoked-key fault; [`RateLimiter`] is Kustomer's fixed-window budget, [`WindowLimiter`]
//! its limits per customer and per record. The counters of
//! what was injected live in `stats.rs`.

use std::collections::BTreeMap;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// How often each fault strikes. Rates are probabilities in `[0, 1]` (values outside are
/// clamped, NaN is 0); at most one fault strikes a request.
#[derive(Clone, Debug, Default)]
pub struct FaultConfig {
    /// 500 before any write.
    pub fail_rate: f64,
    /// Record created, then 500.
    pub fail_after_write_rate: f64,
    /// Record created, then the TCP connection is closed with no answer at all.
    pub drop_after_write_rate: f64,
    /// Record created, then no answer (sleep ~10 minutes, or until shutdown).
    pub hang_after_write_rate: f64,
    /// 503 before any write.
    pub busy_rate: f64,
    /// After this many API requests (counted from start, or from the last
    /// `Sandbox::set_faults`), every request gets 401 (key revoked).
    pub revoke_after: Option<u64>,
    /// RNG seed for reproducible faults.
    pub seed: Option<u64>,
}

/// A fault that strikes before the handler runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BeforeWrite {
    None,
    /// 503.
    Busy,
    /// 500.
    Fail,
}

/// A fault that strikes after a record was created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterWrite {
    None,
    /// 500.
    Fail,
    /// Close the connection, no answer.
    Drop,
    /// No answer for ~10 minutes.
    Hang,
}

/// The live fault state: configuration, dice, and requests seen for `revoke_after`.
#[derive(Debug)]
pub struct Faults {
    config: FaultConfig,
    rng: StdRng,
    seen: u64,
}

fn rng_for(seed: Option<u64>) -> StdRng {
    match seed {
        Some(seed) => StdRng::seed_from_u64(seed),
        None => StdRng::from_os_rng(),
    }
}

fn clamp(rate: f64) -> f64 {
    if rate.is_nan() {
        0.0
    } else {
        rate.clamp(0.0, 1.0)
    }
}

impl Faults {
    pub fn new(config: FaultConfig) -> Self {
        Faults {
            rng: rng_for(config.seed),
            config,
            seen: 0,
        }
    }

    /// Replaces the configuration, re-seeds the dice and restarts the revoke count.
    pub fn set(&mut self, config: FaultConfig) {
        *self = Faults::new(config);
    }

    /// Counts one API request towards `revoke_after`.
    pub fn arrive(&mut self) {
        self.seen = self.seen.saturating_add(1);
    }

    /// Whether the key is revoked for the request just counted.
    pub fn revoked(&self) -> bool {
        self.config.revoke_after.is_some_and(|n| self.seen > n)
    }

    /// A roll that never touches the dice for a rate of 0, so a zero rate does not shift
    /// the sequence of the others.
    fn strikes(&mut self, rate: f64) -> bool {
        let rate = clamp(rate);
        rate > 0.0 && self.rng.random::<f64>() < rate
    }

    pub fn roll_before(&mut self) -> BeforeWrite {
        if self.strikes(self.config.busy_rate) {
            BeforeWrite::Busy
        } else if self.strikes(self.config.fail_rate) {
            BeforeWrite::Fail
        } else {
            BeforeWrite::None
        }
    }

    pub fn roll_after(&mut self) -> AfterWrite {
        if self.strikes(self.config.fail_after_write_rate) {
            AfterWrite::Fail
        } else if self.strikes(self.config.drop_after_write_rate) {
            AfterWrite::Drop
        } else if self.strikes(self.config.hang_after_write_rate) {
            AfterWrite::Hang
        } else {
            AfterWrite::None
        }
    }
}

/// The rate-limit verdict for one request and the values of its `x-ratelimit-*` headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateVerdict {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    /// Whole seconds until the window resets, rounded up (at least 1).
    pub reset_secs: u64,
}

/// Fixed windows of `window` starting at server start; every request counts, refused ones
/// included; beyond `limit` in the current window a request is refused. It keeps how many
/// each window let through, for the budget benchmark.
#[derive(Debug)]
pub struct RateLimiter {
    limit: Option<u32>,
    window: Duration,
    current: u128,
    count: u64,
    allowed: BTreeMap<u64, u64>,
}

impl RateLimiter {
    pub fn new(limit: Option<u32>, window: Duration) -> Self {
        RateLimiter {
            limit,
            window: window.max(Duration::from_millis(1)),
            current: 0,
            count: 0,
            allowed: BTreeMap::new(),
        }
    }

    /// Requests let through, by window (0: the one the server started in); windows that
    /// let none through are left out.
    pub fn allowed_by_window(&self) -> BTreeMap<u64, u64> {
        self.allowed.clone()
    }

    /// Counts a request arriving `elapsed` after server start. `None` when unlimited.
    pub fn check(&mut self, elapsed: Duration) -> Option<RateVerdict> {
        let limit = self.limit?;
        let window_nanos = self.window.as_nanos();
        let index = elapsed.as_nanos() / window_nanos;
        if index != self.current {
            self.current = index;
            self.count = 0;
        }
        self.count = self.count.saturating_add(1);
        let until_reset = (index + 1) * window_nanos - elapsed.as_nanos();
        let reset_secs = u64::try_from(until_reset.div_ceil(1_000_000_000))
            .unwrap_or(u64::MAX)
            .max(1);
        let allowed = self.count <= u64::from(limit);
        if allowed {
            *self
                .allowed
                .entry(u64::try_from(index).unwrap_or(u64::MAX))
                .or_default() += 1;
        }
        Some(RateVerdict {
            allowed,
            limit,
            remaining: u32::try_from(u64::from(limit).saturating_sub(self.count)).unwrap_or(0),
            reset_secs,
        })
    }
}

/// A limit per key in fixed windows (the org limit's length, from server start): at most
/// `limit` attempts of one kind for one key in a window. Kustomer's per-customer limits on
/// messages and notes (the key a customer id, the kind message or note), and its
/// per-object limits on updates (the key the record's id). Every attempt that reaches the
/// check counts, refused ones included, as for the org's limit.
#[derive(Debug)]
pub struct WindowLimiter {
    limit: Option<u32>,
    window: Duration,
    /// (kind, key) -> (window index, attempts in it).
    counts: std::collections::HashMap<(u8, String), (u128, u64)>,
}

impl WindowLimiter {
    pub fn new(limit: Option<u32>, window: Duration) -> Self {
        WindowLimiter {
            limit,
            window: window.max(Duration::from_millis(1)),
            counts: std::collections::HashMap::new(),
        }
    }

    /// Counts one attempt of `kind` (any small number naming it) for `key`, `elapsed` after
    /// server start. `Err(secs)`: over the limit, with whole seconds until the window
    /// resets (at least 1).
    pub fn check(&mut self, kind: u8, key: &str, elapsed: Duration) -> Result<(), u64> {
        let Some(limit) = self.limit else {
            return Ok(());
        };
        let window_nanos = self.window.as_nanos();
        let index = elapsed.as_nanos() / window_nanos;
        let entry = self
            .counts
            .entry((kind, key.to_owned()))
            .or_insert((index, 0));
        if entry.0 != index {
            *entry = (index, 0);
        }
        entry.1 = entry.1.saturating_add(1);
        if entry.1 <= u64::from(limit) {
            return Ok(());
        }
        let until_reset = (index + 1) * window_nanos - elapsed.as_nanos();
        Err(u64::try_from(until_reset.div_ceil(1_000_000_000))
            .unwrap_or(u64::MAX)
            .max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_of_zero_and_one_are_certain() {
        let mut faults = Faults::new(FaultConfig {
            busy_rate: 1.0,
            ..FaultConfig::default()
        });
        assert!((0..100).all(|_| faults.roll_before() == BeforeWrite::Busy));
        assert!((0..100).all(|_| faults.roll_after() == AfterWrite::None));
        faults.set(FaultConfig {
            fail_rate: 7.0,
            drop_after_write_rate: 1.0,
            hang_after_write_rate: f64::NAN,
            ..FaultConfig::default()
        });
        assert!((0..100).all(|_| faults.roll_before() == BeforeWrite::Fail));
        assert!((0..100).all(|_| faults.roll_after() == AfterWrite::Drop));
    }

    #[test]
    fn seeded_faults_repeat() {
        let config = FaultConfig {
            busy_rate: 0.3,
            fail_rate: 0.3,
            fail_after_write_rate: 0.5,
            seed: Some(42),
            ..FaultConfig::default()
        };
        let run = |config: &FaultConfig| {
            let mut faults = Faults::new(config.clone());
            (0..200)
                .map(|_| (faults.roll_before(), faults.roll_after()))
                .collect::<Vec<_>>()
        };
        let first = run(&config);
        assert_eq!(first, run(&config));
        assert!(first.iter().any(|(b, _)| *b == BeforeWrite::Busy));
        assert!(first.iter().any(|(b, _)| *b == BeforeWrite::None));
    }

    #[test]
    fn revoke_after_counts_requests_since_set() {
        let mut faults = Faults::new(FaultConfig {
            revoke_after: Some(2),
            ..FaultConfig::default()
        });
        let verdicts: Vec<bool> = (0..4)
            .map(|_| {
                faults.arrive();
                faults.revoked()
            })
            .collect();
        assert_eq!(verdicts, vec![false, false, true, true]);
        faults.set(FaultConfig {
            revoke_after: Some(1),
            ..FaultConfig::default()
        });
        faults.arrive();
        assert!(!faults.revoked());
        faults.arrive();
        assert!(faults.revoked());
    }

    #[test]
    fn per_customer_limits_count_each_kind_and_customer_apart() {
        let mut limiter = WindowLimiter::new(Some(2), Duration::from_secs(60));
        let at = Duration::from_secs;
        assert_eq!(limiter.check(0, "a", at(1)), Ok(()));
        assert_eq!(limiter.check(0, "a", at(2)), Ok(()));
        assert_eq!(limiter.check(0, "a", at(3)), Err(57));
        assert_eq!(limiter.check(1, "a", at(3)), Ok(()), "another kind");
        assert_eq!(limiter.check(0, "b", at(3)), Ok(()), "another customer");
        assert_eq!(limiter.check(0, "a", at(60)), Ok(()), "a new window");
        let mut unlimited = WindowLimiter::new(None, Duration::from_secs(60));
        assert!((0..500).all(|_| unlimited.check(0, "a", at(1)).is_ok()));
    }

    #[test]
    fn fixed_windows() {
        let mut limiter = RateLimiter::new(Some(2), Duration::from_secs(60));
        let at = |ms| Duration::from_millis(ms);
        let a = limiter.check(at(100));
        assert_eq!(
            a,
            Some(RateVerdict {
                allowed: true,
                limit: 2,
                remaining: 1,
                reset_secs: 60
            })
        );
        assert_eq!(limiter.check(at(30_000)).map(|v| v.remaining), Some(0));
        let third = limiter.check(at(59_500));
        assert_eq!(
            third.map(|v| (v.allowed, v.remaining, v.reset_secs)),
            Some((false, 0, 1))
        );
        // A new window starts at 60 s, whatever happened in the last one.
        let fourth = limiter.check(at(60_000));
        assert_eq!(
            fourth.map(|v| (v.allowed, v.remaining, v.reset_secs)),
            Some((true, 1, 60))
        );
        assert_eq!(RateLimiter::new(None, at(1)).check(at(5)), None);
        assert_eq!(
            limiter.allowed_by_window().into_iter().collect::<Vec<_>>(),
            [(0, 2), (1, 1)]
        );
    }
}
