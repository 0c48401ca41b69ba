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
            Standing::Unseen => false,
            Standing::Unknown => true,
        };
        match settle(tools, company, reconciling, attempts).await {
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
            attempts.requests += 1;
            match tools.client.find_company(&company.external_id).await {
                Ok(Some(id)) if maybe_made => return Ok((id, RecordOrigin::Reconciled)),
                Ok(Some(id)) => return Ok((id, RecordOrigin::Linked)),
                Ok(None) => {}
                Err(error) => {
                    attempts
                        .after_failure(&error)
                        .await
                        .map_err(|h| halted(h, intent_sent))?;
                    continue;
                }
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
