//! Counters of what the sandbox saw and did, for tests and benchmarks to assert on: answers
//! per route template and status, creates and updates attempted, records updated, 429s
//! sent (the org's, a customer's, a record's), faults injected, and the
//! most requests that arrived within any sliding window of the rate-limit length (the
//! number that tells whether a client kept under its budget). [`Stats`] is the snapshot
//! served by `GET /__stats`; [`Counters`] is the live state behind the sandbox's mutex.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// How many times each fault was injected.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct FaultCounts {
    pub fail: u64,
    pub fail_after_write: u64,
    pub drop_after_write: u64,
    pub hang_after_write: u64,
    pub busy: u64,
    pub revoked: u64,
}

/// A snapshot of the counters (`GET /__stats`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Answers sent, by route template (`"POST /v1/customers"`,
    /// `"GET /v1/customers/{lookup}"`, ...; `"other"` for paths matching no route) then by
    /// status code. Requests that got no answer (dropped, hanging) are not here.
    pub requests: BTreeMap<String, BTreeMap<u16, u64>>,
    /// API requests received (everything but `/__*`), answered or not.
    pub requests_total: u64,
    /// POST requests to the create endpoints, whatever their outcome.
    pub creates_total: u64,
    /// PATCH and PUT requests to the single update endpoints (`/v1/customers/{id}`, ...),
    /// whatever their outcome (bulk update jobs are in `requests`).
    #[serde(default)]
    pub updates_total: u64,
    /// Customers updated, by single updates and bulk update items.
    #[serde(default)]
    pub customers_updated: u64,
    /// Conversations updated, by single updates and bulk update items.
    #[serde(default)]
    pub conversations_updated: u64,
    /// Messages updated.
    #[serde(default)]
    pub messages_updated: u64,
    /// Notes updated.
    #[serde(default)]
    pub notes_updated: u64,
    /// 429 answers (and bulk items refused) for a record's per-object update limit; the
    /// answers are in `rate_limited` too.
    #[serde(default)]
    pub object_limited: u64,
    /// Customers deleted by `DELETE /v1/customers/{id}`.
    #[serde(default)]
    pub customers_deleted: u64,
    /// Conversations deleted by `DELETE /v1/conversations/{id}`.
    #[serde(default)]
    pub conversations_deleted: u64,
    /// Customers held.
    pub customers: u64,
    /// Conversations held.
    pub conversations: u64,
    /// Messages held.
    #[serde(default)]
    pub messages: u64,
    /// Notes held.
    #[serde(default)]
    pub notes: u64,
    /// 429 answers (and bulk items refused) for a customer's message or note limit; the
    /// answers are in `rate_limited` too.
    #[serde(default)]
    pub customer_limited: u64,
    /// 429 answers sent.
    pub rate_limited: u64,
    /// The most API requests that arrived within any sliding window of the rate-window
    /// length, 429s included.
    pub max_requests_in_window: u64,
    pub faults: FaultCounts,
    /// `POST /v1/users` answered: each would have emailed an invitation.
    #[serde(default)]
    pub invitations: u64,
    /// Listings of the org's tags begun (`GET /v1/tags` of page 1 answered; every page is
    /// in `requests`).
    #[serde(default)]
    pub tag_lists: u64,
    /// Tags made by appends (`POST /v1/conversations/{id}/tags` naming a tag the org
    /// lacked).
    #[serde(default)]
    pub tags_created: u64,
}

/// What an arriving request is, for the totals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arrival {
    /// A single create (`creates_total`).
    Create,
    /// A single update (`updates_total`).
    Update,
    /// Anything else.
    Other,
}

/// Records updated, by kind.
#[derive(Debug, Default)]
pub struct Updated {
    pub customers: u64,
    pub conversations: u64,
    pub messages: u64,
    pub notes: u64,
}

/// Records deleted, by kind.
#[derive(Debug, Default)]
pub struct Deleted {
    pub customers: u64,
    pub conversations: u64,
}

/// The live counters.
#[derive(Debug)]
pub struct Counters {
    requests: BTreeMap<String, BTreeMap<u16, u64>>,
    requests_total: u64,
    creates_total: u64,
    updates_total: u64,
    rate_limited: u64,
    pub customer_limited: u64,
    pub object_limited: u64,
    pub updated: Updated,
    pub deleted: Deleted,
    pub faults: FaultCounts,
    pub invitations: u64,
    pub tag_lists: u64,
    pub tags_created: u64,
    window: Duration,
    /// Arrivals within the last `window`, oldest first.
    arrivals: VecDeque<Instant>,
    max_in_window: u64,
}

impl Counters {
    pub fn new(window: Duration) -> Self {
        Counters {
            requests: BTreeMap::new(),
            requests_total: 0,
            creates_total: 0,
            updates_total: 0,
            rate_limited: 0,
            customer_limited: 0,
            object_limited: 0,
            updated: Updated::default(),
            deleted: Deleted::default(),
            faults: FaultCounts::default(),
            invitations: 0,
            tag_lists: 0,
            tags_created: 0,
            window,
            arrivals: VecDeque::new(),
            max_in_window: 0,
        }
    }

    /// Counts an API request arriving at `now` (monotonic, non-decreasing).
    pub fn arrive(&mut self, now: Instant, arrival: Arrival) {
        self.requests_total += 1;
        match arrival {
            Arrival::Create => self.creates_total += 1,
            Arrival::Update => self.updates_total += 1,
            Arrival::Other => {}
        }
        // The window ending at `now` is (now - window, now].
        while let Some(&oldest) = self.arrivals.front() {
            if now.saturating_duration_since(oldest) >= self.window {
                self.arrivals.pop_front();
            } else {
                break;
            }
        }
        self.arrivals.push_back(now);
        let in_window = u64::try_from(self.arrivals.len()).unwrap_or(u64::MAX);
        self.max_in_window = self.max_in_window.max(in_window);
    }

    pub fn rate_limited(&mut self) {
        self.rate_limited += 1;
    }

    /// Counts an answer sent.
    pub fn answered(&mut self, route: &str, status: u16) {
        *self
            .requests
            .entry(route.to_owned())
            .or_default()
            .entry(status)
            .or_default() += 1;
    }

    /// What the counters say, with how many records of each kind are held (customers,
    /// conversations, messages, notes).
    pub fn snapshot(&self, held: [usize; 4]) -> Stats {
        let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        let [customers, conversations, messages, notes] = held;
        Stats {
            requests: self.requests.clone(),
            requests_total: self.requests_total,
            creates_total: self.creates_total,
            updates_total: self.updates_total,
            customers_updated: self.updated.customers,
            conversations_updated: self.updated.conversations,
            messages_updated: self.updated.messages,
            notes_updated: self.updated.notes,
            object_limited: self.object_limited,
            customers_deleted: self.deleted.customers,
            conversations_deleted: self.deleted.conversations,
            customers: count(customers),
            conversations: count(conversations),
            messages: count(messages),
            notes: count(notes),
            rate_limited: self.rate_limited,
            customer_limited: self.customer_limited,
            max_requests_in_window: self.max_in_window,
            faults: self.faults.clone(),
            invitations: self.invitations,
            tag_lists: self.tag_lists,
            tags_created: self.tags_created,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sliding_window_maximum() {
        let start = Instant::now();
        let mut counters = Counters::new(Duration::from_secs(1));
        let at = |ms| start + Duration::from_millis(ms);
        // Three in the first 900 ms, then two more: at 1500 ms the window (500, 1500] holds
        // 700, 900, 1400, 1500 = 4.
        for ms in [0, 700, 900, 1400, 1500] {
            counters.arrive(at(ms), Arrival::Other);
        }
        assert_eq!(counters.snapshot([0; 4]).max_requests_in_window, 4);
        // Exactly one window later the oldest no longer counts.
        counters.arrive(at(2400), Arrival::Create);
        counters.arrive(at(2400), Arrival::Update);
        let stats = counters.snapshot([0; 4]);
        assert_eq!(stats.max_requests_in_window, 4);
        assert_eq!(stats.requests_total, 7);
        assert_eq!((stats.creates_total, stats.updates_total), (1, 1));
    }

    #[test]
    fn answers_by_route_and_status_round_trip_through_json() {
        let mut counters = Counters::new(Duration::from_secs(60));
        counters.answered("POST /v1/customers", 201);
        counters.answered("POST /v1/customers", 201);
        counters.answered("POST /v1/customers", 409);
        counters.faults.busy = 3;
        let stats = counters.snapshot([2, 1, 0, 0]);
        let json = serde_json::to_value(&stats).unwrap_or_default();
        assert_eq!(json["requests"]["POST /v1/customers"]["201"], 2);
        assert_eq!(json["faults"]["busy"], 3);
        let back: Result<Stats, _> = serde_json::from_value(json);
        assert_eq!(back.ok(), Some(stats));
    }
}
