//! How many rows may be in flight at once. A fixed `--concurrency`, or, by default, what
//! Little's law says the rate budget needs at the latency the API shows: requests in flight
//! = requests per second x seconds per request. Too few rows in flight and the budget goes
//! unused while requests wait on the network; too many only queue at the rate gate.

use std::time::Duration;

/// The latency assumed until the API has answered.
const ASSUMED_LATENCY: Duration = Duration::from_millis(500);
/// Headroom over Little's law for latency that varies from one request to the next.
const HEADROOM: f64 = 1.5;
/// Rows in flight beyond Little's law: the rows that wait on their customer, mostly.
const SLACK: usize = 2;
const LEAST: usize = 4;
/// Enough for 2,000 requests a minute at 1.2 s per request; more only costs memory.
const MOST: usize = 64;

/// The bound on rows in flight.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Concurrency {
    /// `--concurrency N`.
    Fixed(usize),
    /// Follows the latency seen, for a budget of this many requests per second.
    FromLatency { requests_per_second: f64 },
}

impl Concurrency {
    /// The bound now, given the typical latency seen so far (None before any answer).
    pub fn limit(&self, latency: Option<Duration>) -> usize {
        match *self {
            Concurrency::Fixed(rows) => rows.max(1),
            Concurrency::FromLatency {
                requests_per_second,
            } => {
                let latency = latency.unwrap_or(ASSUMED_LATENCY).as_secs_f64();
                let in_flight = (requests_per_second * latency * HEADROOM).ceil();
                (in_flight.min(MOST as f64) as usize + SLACK).clamp(LEAST, MOST)
            }
        }
    }

    /// The highest bound it can reach, for sizing what is read ahead.
    pub fn most(&self) -> usize {
        match *self {
            Concurrency::Fixed(rows) => rows.max(1),
            Concurrency::FromLatency { .. } => MOST,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_littles_law_with_headroom() {
        let budget = Concurrency::FromLatency {
            requests_per_second: 2000.0 / 60.0,
        };
        // 33.3 requests/s x 0.5 s x 1.5 = 25, plus the slack.
        assert_eq!(budget.limit(None), 27);
        assert_eq!(budget.limit(Some(Duration::from_millis(500))), 27);
        assert_eq!(budget.limit(Some(Duration::from_secs(1))), 52);
        assert_eq!(budget.limit(Some(Duration::from_millis(5))), LEAST);
        assert_eq!(budget.limit(Some(Duration::from_secs(3600))), MOST);
        assert_eq!(Concurrency::Fixed(7).limit(Some(Duration::from_secs(9))), 7);
    }
}
