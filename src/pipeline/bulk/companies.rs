//! Companies in bulk mode: before a customers job goes, the companies its customers belong
//! to that no run has settled are looked up (`GET /v1/companies?externalId=`; the API has no
//! lookup of many) and those absent are made in one `POST /v1/companies/bulk` job, so that
//! a company costs a lookup and a hundredth of a job rather than a lookup and a create.
//!
//! The promises are a single create's: a company found is linked, not made again; each
//! company's intent is recorded with the job before it leaves (migration 020), so a lost
//! answer is reconciled by lookup, never sent blind; and a job an earlier run left queued is
//! polled to its end before any of its companies is looked up ([`hold_earlier_companies`]).
//! Whatever a job cannot settle (a refusal of the whole job, an API without bulk jobs, an
//! item refused in words only) goes the single way when its first row needs it, where the
//! single endpoint's answer settles it.

use std::collections::HashMap;

use serde_json::json;

use super::Jobs;
use super::submit::{JobEnd, end_job, submit_and_wait};
use crate::api::{ApiError, BulkKind, ItemOutcome};
use crate::checkpoint::{BulkItem, BulkJobState, Change, StoredBulkJob};
use crate::pipeline::company::{Claim, ClaimOutcome, find};
use crate::pipeline::handles::Tools;
use crate::pipeline::row::PlannedRow;
use crate::pipeline::worker::Attempts;
use crate::vocabulary::RecordOrigin;

/// Settles the companies of `works` that no run has: found and linked, or made in bulk
/// jobs. What it cannot settle is left to each row's single path (see the module).
pub(super) async fn make_companies(tools: &Tools, jobs: &Jobs, works: &[PlannedRow]) {
    let wanted = works.iter().filter_map(|work| work.plan.company.as_ref());
    let claims = tools.companies.claim_unseen(wanted).await;
    if claims.is_empty() {
        return;
    }
    let mut attempts = Attempts::new(tools);
    let mut absent = Vec::new();
    for claim in claims {
        match find(tools, claim.company, &mut attempts).await {
            Ok(Some(id)) => {
                let linked = ClaimOutcome::Made(id, RecordOrigin::Linked);
                tools.companies.conclude_claim(tools, claim, linked).await;
            }
            Ok(None) => absent.push(claim),
            // A stop or spent retries: its rows meet the same on their single path.
            Err(_) => {}
        }
    }
    while !absent.is_empty() {
        let rest = absent.split_off(absent.len().min(super::MAX_ITEMS));
        let batch = std::mem::replace(&mut absent, rest);
        run_company_job(tools, jobs, batch).await;
    }
}

/// One job of companies no lookup found: recorded with their intents, sent, polled, and
/// each company concluded from its item's result.
async fn run_company_job(tools: &Tools, jobs: &Jobs, claims: Vec<Claim<'_>>) {
    let job = jobs.next_number();
    let mut bodies = Vec::with_capacity(claims.len());
    let mut items = Vec::with_capacity(claims.len());
    let mut intents = Vec::with_capacity(claims.len() + 1);
    for (index, claim) in claims.iter().enumerate() {
        let company = claim.company;
        let client_ref = index.to_string();
        bodies.push(json!({
            "name": company.name,
            "externalId": company.external_id,
            "_clientRef": client_ref,
        }));
        items.push(BulkItem {
            client_ref,
            row_key: company.key.clone(),
            customer_key: None,
            record: None,
        });
        intents.push(Change::CompanySent {
            company_key: company.key.clone(),
            external_id: company.external_id.clone(),
            name: company.name.clone(),
        });
    }
    let kind = BulkKind::Companies;
    let end = submit_and_wait(tools, jobs, job, kind, bodies, items, intents).await;
    let outcomes = match end {
        JobEnd::Complete(outcomes) => outcomes,
        JobEnd::Unknown(after) => {
            // It may exist and still run: its companies are looked up once it would have.
            if let Some(at) = after {
                tokio::select! {
                    () = tokio::time::sleep_until(at) => {}
                    () = tools.control.soft().cancelled() => {}
                }
            }
            return conclude_all(tools, claims, || ClaimOutcome::Unknown).await;
        }
        JobEnd::Unfinished(_) => {
            return conclude_all(tools, claims, || ClaimOutcome::Held).await;
        }
        JobEnd::NotSent(_) => return,
        // Nothing was made: the intents are taken back and each company goes the single
        // way, whose answer names the company a refusal is about.
        JobEnd::Refused(_) | JobEnd::NotTaken(_) | JobEnd::Unsupported => {
            let withdrawn = claims
                .iter()
                .map(|claim| Change::CompanyWithdrawn {
                    company_key: claim.company.key.clone(),
                })
                .collect();
            tools.journal.record(withdrawn).await;
            return;
        }
    };
    apply_results(tools, job, claims, outcomes).await;
}

async fn apply_results(
    tools: &Tools,
    job: i64,
    claims: Vec<Claim<'_>>,
    mut outcomes: HashMap<String, ItemOutcome>,
) {
    for (index, claim) in claims.into_iter().enumerate() {
        let outcome = outcomes.remove(&index.to_string());
        let concluded = of_item(&claim.company.name, outcome);
        tools
            .companies
            .conclude_claim(tools, claim, concluded)
            .await;
    }
    end_job(tools, job, BulkJobState::Complete).await;
}

/// What one item's result says of its company.
fn of_item(name: &str, outcome: Option<ItemOutcome>) -> ClaimOutcome {
    match outcome {
        Some(ItemOutcome::Created(id)) => ClaimOutcome::Made(id, RecordOrigin::Created),
        Some(ItemOutcome::Updated(id)) => ClaimOutcome::Made(id, RecordOrigin::Linked),
        Some(ItemOutcome::Failed(ApiError::Rejected { status, message })) => {
            ClaimOutcome::Refused(format!("company {name} refused ({status}): {message}"))
        }
        Some(ItemOutcome::Failed(error)) if error.maybe_applied() => ClaimOutcome::Unknown,
        // It exists (a duplicate), or was refused in words only ("duplicate detected"): not
        // made by this job, so the single path's lookup links it or its create settles it.
        Some(ItemOutcome::Failed(_) | ItemOutcome::Unexplained(_)) => ClaimOutcome::Untouched,
        None => ClaimOutcome::Unknown,
    }
}

async fn conclude_all(tools: &Tools, claims: Vec<Claim<'_>>, outcome: impl Fn() -> ClaimOutcome) {
    for claim in claims {
        tools
            .companies
            .conclude_claim(tools, claim, outcome())
            .await;
    }
}

/// An earlier run's companies job that this run could not finish: its companies are held
/// (their rows stay pending) rather than looked up while it may still make them.
pub(super) async fn hold_earlier_companies(tools: &Tools, job: &StoredBulkJob) {
    tools.companies.hold(&job.companies).await;
    tracing::warn!(
        "bulk job {} of companies is unfinished: the rows of its {} companies stay pending \
         until a run finds it done",
        job.id,
        job.companies.len()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_items_result_settles_its_company_as_the_single_create_would() {
        let made = |outcome| of_item("Acme", Some(outcome));
        let id = "6a1f0c2e9b3d4e5f607182a1".to_string();
        assert!(matches!(
            made(ItemOutcome::Created(id.clone())),
            ClaimOutcome::Made(_, RecordOrigin::Created)
        ));
        assert!(matches!(
            made(ItemOutcome::Updated(id)),
            ClaimOutcome::Made(_, RecordOrigin::Linked)
        ));
        // The docs' bulk error is a string with no status: not made, settled singly.
        assert!(matches!(
            made(ItemOutcome::Unexplained("duplicate detected".into())),
            ClaimOutcome::Untouched
        ));
        let duplicate = ApiError::Duplicate {
            message: "externalId taken".into(),
        };
        assert!(matches!(
            made(ItemOutcome::Failed(duplicate)),
            ClaimOutcome::Untouched
        ));
        let rejected = ApiError::Rejected {
            status: 422,
            message: "/name: name must be 3 to 255 characters".into(),
        };
        match made(ItemOutcome::Failed(rejected)) {
            ClaimOutcome::Refused(words) => assert!(words.contains("Acme"), "{words}"),
            _ => panic!("a refusal with a status refuses the company"),
        }
        assert!(matches!(of_item("Acme", None), ClaimOutcome::Unknown));
    }
}
