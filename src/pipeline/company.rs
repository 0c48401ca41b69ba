//! Companies: each found or created once per run and checkpoint, before the first customer
//! that belongs to it, and its id set on every customer of it (see migration 015). A row's
//! task resolves its customer's company with [`CompanyBook::resolve`]; rows of one company
//! wait on its lock, so two never race to create it, and every later row gets its id
//! without a request.
//!
//! A company goes as a customer does: looked up first (`GET /v1/companies?externalId=`:
//! found, it is linked, not created), then its intent is made durable, then `POST
//! /v1/companies`. A lost answer (a timeout, a 5xx, a kill -9 between intent and answer)
//! is reconciled by the same lookup, after `--reconcile-delay`, before anything is sent
//! again; a 409 is linked to the company the lookup finds. A company the API refuses fails
//! every row of it with the server's words, in this run.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::handles::Tools;
use serde_json::Value;

use super::row::{Halt, PlannedRow};
use super::worker::Attempts;
use crate::api::ApiError;
use crate::checkpoint::{Change, RecordOrigin, StoredCompany};
use crate::mapping::{CompanyRef, CustomerBody};

/// Where one company stands in this run.
#[derive(Clone, Debug)]
enum Standing {
    /// Nothing recorded: look it up, then create it.
    Unseen,
    /// An earlier create's answer was lost: reconcile by lookup before sending again.
    Unknown,
    Known(String),
    /// Refused: every row of it fails with this reason.
    Refused(String),
    /// In a bulk job of companies that is still unfinished (an earlier run's, or this
    /// run's past its wait): its rows stay pending, since the job may yet make it.
    Held,
}

/// The companies of a run, by company key, and what became of them.
#[derive(Debug, Default)]
pub(super) struct CompanyBook {
    companies: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Standing>>>>,
    pub counts: CompanyCounts,
}

/// What this run did with companies, for the summary.
#[derive(Debug, Default)]
pub(super) struct CompanyCounts {
    pub created: AtomicU64,
    pub linked: AtomicU64,
    pub reconciled: AtomicU64,
    pub failed: AtomicU64,
}

impl CompanyBook {
    /// The book as the checkpoint leaves it: known companies keep their ids, an intent
    /// without an id is reconciled before anything is sent.
    pub(super) fn new(stored: Vec<StoredCompany>) -> CompanyBook {
        let companies = stored
            .into_iter()
            .map(|company| {
                let standing = match company.company_id {
                    Some(id) => Standing::Known(id),
                    None => Standing::Unknown,
                };
                (
                    company.company_key,
                    Arc::new(tokio::sync::Mutex::new(standing)),
                )
            })
            .collect();
        CompanyBook {
            companies: Mutex::new(companies),
            counts: CompanyCounts::default(),
        }
    }

    fn entry(&self, key: &str) -> Arc<tokio::sync::Mutex<Standing>> {
        let mut all = self.companies.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(
            all.entry(key.to_string())
                .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(Standing::Unseen))),
        )
    }

    /// The company's id: known, found, or created (once), its records written on the way.
    /// A halt that is not a refusal (a stop, retries spent) leaves it for the next row or
    /// run to settle.
    pub(super) async fn resolve(
        &self,
        tools: &Tools,
        company: &CompanyRef,
        attempts: &mut Attempts<'_>,
    ) -> Result<String, Halt> {
        let entry = self.entry(&company.key);
        let mut standing = entry.lock().await;
        let reconciling = match &*standing {
            Standing::Known(id) => return Ok(id.clone()),
            Standing::Refused(reason) => return Err(refused(reason.clone())),
            Standing::Held => return Err(held()),
            Standing::Unseen => false,
            Standing::Unknown => true,
        };
        let settled = settle(tools, company, reconciling, attempts).await;
        self.conclude(tools, company, &mut standing, settled).await
    }

    /// Records what became of a company, counts it and makes it known to later rows: the one
    /// place a company's outcome is written, for single creates and bulk jobs alike.
    async fn conclude(
        &self,
        tools: &Tools,
        company: &CompanyRef,
        standing: &mut Standing,
        settled: Result<(String, RecordOrigin), Settled>,
    ) -> Result<String, Halt> {
        match settled {
            Ok((id, origin)) => {
                let resolved = Change::CompanyResolved {
                    company_key: company.key.clone(),
                    company_id: id.clone(),
                    external_id: company.external_id.clone(),
                    name: company.name.clone(),
                    origin,
                };
                tools.journal.commit(vec![resolved]).await?;
                self.count(origin).fetch_add(1, Ordering::Relaxed);
                *standing = Standing::Known(id.clone());
                Ok(id)
            }
            Err(Settled::Refused(reason)) => {
                let withdrawn = Change::CompanyWithdrawn {
                    company_key: company.key.clone(),
                };
                tools.journal.record(vec![withdrawn]).await;
                self.counts.failed.fetch_add(1, Ordering::Relaxed);
                *standing = Standing::Refused(reason.clone());
                Err(refused(reason))
            }
            Err(Settled::Halted { halt, intent_sent }) => {
                if intent_sent {
                    *standing = Standing::Unknown;
                }
                Err(halt)
            }
        }
    }

    /// For a bulk job of companies: the companies of `wanted` that no run has settled or
    /// sent (distinct, locked in key order, so two batches never wait on each other
    /// crosswise), each held until its [`Claim`] is concluded or dropped, so that no other
    /// row or job sends it meanwhile. A company whose create may have landed is left to the
    /// single path, which reconciles it by lookup.
    pub(super) async fn claim_unseen<'c>(
        &self,
        wanted: impl IntoIterator<Item = &'c CompanyRef>,
    ) -> Vec<Claim<'c>> {
        let mut wanted: Vec<&CompanyRef> = wanted.into_iter().collect();
        wanted.sort_by(|a, b| a.key.cmp(&b.key));
        wanted.dedup_by(|a, b| a.key == b.key);
        let mut claims = Vec::new();
        for company in wanted {
            let standing = self.entry(&company.key).lock_owned().await;
            if matches!(*standing, Standing::Unseen) {
                claims.push(Claim { company, standing });
            }
        }
        claims
    }

    /// What a bulk job (or its lookup) made of a claimed company, recorded as a single
    /// create's outcome would be.
    pub(super) async fn conclude_claim(
        &self,
        tools: &Tools,
        mut claim: Claim<'_>,
        outcome: ClaimOutcome,
    ) {
        let settled = match outcome {
            ClaimOutcome::Made(id, origin) => Ok((id, origin)),
            ClaimOutcome::Refused(reason) => Err(Settled::Refused(reason)),
            ClaimOutcome::Unknown => {
                *claim.standing = Standing::Unknown;
                return;
            }
            ClaimOutcome::Held => {
                *claim.standing = Standing::Held;
                return;
            }
            // Unseen still: its first row sends it the single way.
            ClaimOutcome::Untouched => return,
        };
        // A halt here (the checkpoint could not record it) leaves it to its rows, which
        // meet the same halt.
        let _ = self
            .conclude(tools, claim.company, &mut claim.standing, settled)
            .await;
    }

    /// Companies an earlier run's unfinished bulk job may still make: their rows stay
    /// pending in this run.
    pub(super) async fn hold(&self, keys: &[String]) {
        for key in keys {
            *self.entry(key).lock().await = Standing::Held;
        }
    }

    fn count(&self, origin: RecordOrigin) -> &AtomicU64 {
        match origin {
            RecordOrigin::Created => &self.counts.created,
            RecordOrigin::Linked => &self.counts.linked,
            RecordOrigin::Reconciled => &self.counts.reconciled,
        }
    }
}

/// The row's customer as it is sent: with its company's id as `company` once the company
/// is resolved (found or created here, once), as the mapping gave it when it names none.
pub(super) async fn customer_to_send<'w>(
    tools: &Tools,
    work: &'w PlannedRow,
    attempts: &mut Attempts<'_>,
) -> Result<Cow<'w, CustomerBody>, Halt> {
    let Some(company) = &work.plan.company else {
        return Ok(Cow::Borrowed(&work.plan.customer));
    };
    let id = tools.companies.resolve(tools, company, attempts).await?;
    let mut body = work.plan.customer.clone();
    body.extra.insert("company".into(), Value::String(id));
    Ok(Cow::Owned(body))
}

/// A company claimed by a bulk batch, locked until the claim is concluded or dropped.
pub(super) struct Claim<'c> {
    pub company: &'c CompanyRef,
    standing: tokio::sync::OwnedMutexGuard<Standing>,
}

/// What became of a claimed company in a bulk job.
pub(super) enum ClaimOutcome {
    /// Made by the job (created), or found (linked).
    Made(String, RecordOrigin),
    /// The API refused it: its rows fail with these words.
    Refused(String),
    /// Its create may have landed: reconciled by lookup before it is sent again.
    Unknown,
    /// Its job is unfinished and may still make it: its rows stay pending.
    Held,
    /// Not sent, or provably not made: its first row sends it the single way.
    Untouched,
}

fn held() -> Halt {
    Halt::Pending(
        "its company is in a bulk job that has not finished: the next run polls it first".into(),
    )
}

fn refused(reason: String) -> Halt {
    Halt::Failed {
        field: Some("company".into()),
        reason,
    }
}

/// Why a company has no id yet.
enum Settled {
    Refused(String),
    /// `intent_sent`: a create may have left, so the next try reconciles first.
    Halted {
        halt: Halt,
        intent_sent: bool,
    },
}

/// Looks the company up and creates it when absent, its intent durable before the create.
async fn settle(
    tools: &Tools,
    company: &CompanyRef,
    reconciling: bool,
    attempts: &mut Attempts<'_>,
) -> Result<(String, RecordOrigin), Settled> {
    let mut intent_sent = reconciling;
    // Whether a create of ours may have landed: what the lookup then finds is ours.
    let mut maybe_made = reconciling;
    let halted = |halt: Halt, intent_sent: bool| Settled::Halted { halt, intent_sent };
    // Looked up first always: an unknown outcome is settled, and one that exists already
    // is linked, not created.
    let mut look_up = true;
    loop {
        attempts.check_stop().map_err(|h| halted(h, intent_sent))?;
        if look_up {
            let found = find(tools, company, attempts)
                .await
                .map_err(|h| halted(h, intent_sent))?;
            match found {
                Some(id) if maybe_made => return Ok((id, RecordOrigin::Reconciled)),
                Some(id) => return Ok((id, RecordOrigin::Linked)),
                None => {}
            }
        }
        if !intent_sent {
            let intent = Change::CompanySent {
                company_key: company.key.clone(),
                external_id: company.external_id.clone(),
                name: company.name.clone(),
            };
            tools
                .journal
                .commit(vec![intent])
                .await
                .map_err(|h| halted(h, false))?;
            intent_sent = true;
        }
        attempts.requests += 1;
        match tools
            .client
            .create_company(&company.name, &company.external_id)
            .await
        {
            Ok(id) => return Ok((id, RecordOrigin::Created)),
            // It exists: the lookup finds it and it is linked.
            Err(ApiError::Duplicate { .. }) => look_up = true,
            Err(ApiError::Rejected { status, message }) => {
                return Err(Settled::Refused(format!(
                    "company {} refused ({status}): {message}",
                    company.name
                )));
            }
            Err(error) => {
                look_up = error.maybe_applied();
                maybe_made |= look_up;
                attempts
                    .after_failure(&error)
                    .await
                    .map_err(|h| halted(h, true))?;
            }
        }
    }
}

/// `GET /v1/companies?externalId=`, tried again after a failure within the row's retries:
/// the company's id, or None when no company holds its externalId.
pub(super) async fn find(
    tools: &Tools,
    company: &CompanyRef,
    attempts: &mut Attempts<'_>,
) -> Result<Option<String>, Halt> {
    loop {
        attempts.check_stop()?;
        attempts.requests += 1;
        match tools.client.find_company(&company.external_id).await {
            Ok(found) => return Ok(found),
            Err(error) => attempts.after_failure(&error).await?,
        }
    }
}
