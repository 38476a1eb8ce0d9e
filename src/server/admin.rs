//! The tonic `RiskAdmin` implementation: a thin adapter from the operators'
//! RPCs to the engine's list management ([`crate::lists`]). Until the state
//! is restored every call answers `UNAVAILABLE`; a change is answered once
//! the store has saved it.

use super::service::{Ready, off_workers, saved};
use super::status::to_status;
use crate::engine::Engine;
use crate::lists::list_named;
use crate::policy::live;
use crate::policy::{Estimate, PolicyEstimate, Report};
use crate::proto::risk_admin_server::RiskAdmin;
use crate::proto::{
    self, AddListItemsRequest, AddListItemsResponse, EvaluatePolicyRequest, EvaluatePolicyResponse,
    ListItem, ListItemsRequest, ListItemsResponse, RemoveListItemsRequest, RemoveListItemsResponse,
};
use crate::state::ListSource;
use tonic::{Request, Response, Status};

/// The `RiskAdmin` service.
#[derive(Debug, Clone)]
pub struct Admin {
    ready: Ready,
}

impl Admin {
    /// A service over the engine `ready` will hold.
    pub fn new(ready: Ready) -> Admin {
        Admin { ready }
    }

    fn engine(&self) -> Result<&Engine, Status> {
        self.ready
            .get()
            .ok_or_else(|| Status::unavailable("starting: the state is being restored"))
    }
}

/// A figure as the call answers it: NaN for one the data cannot tell.
fn estimate_proto(e: &Estimate) -> proto::Estimate {
    proto::Estimate {
        value: e.value.unwrap_or(f64::NAN),
        lower: e.lower,
        upper: e.upper,
    }
}

/// The answer for `report`.
fn evaluate_policy_response(report: &Report, model_version: String) -> EvaluatePolicyResponse {
    let counts = &report.counts;
    let one = |e: &PolicyEstimate| proto::PolicyEstimate {
        threshold: e.threshold,
        recall: Some(estimate_proto(&e.recall)),
        false_positive_rate: Some(estimate_proto(&e.false_positive_rate)),
        precision: Some(estimate_proto(&e.precision)),
        block_rate: Some(estimate_proto(&e.block_rate)),
        naive_recall: e.naive_recall.value.unwrap_or(f64::NAN),
        naive_false_positive_rate: e.naive_false_positive_rate.value.unwrap_or(f64::NAN),
        naive_precision: e.naive_precision.value.unwrap_or(f64::NAN),
        payments: counts.payments,
        holdout_payments: counts.holdout_payments,
        observed_frauds: counts.observed_frauds,
    };
    EvaluatePolicyResponse {
        estimates: report.estimates.iter().map(one).collect(),
        model_version,
    }
}

/// An invalid field, as the one error mapping says.
fn invalid(e: crate::validate::FieldError) -> Status {
    to_status(e.into())
}

#[tonic::async_trait]
impl RiskAdmin for Admin {
    async fn add_list_items(
        &self,
        request: Request<AddListItemsRequest>,
    ) -> Result<Response<AddListItemsResponse>, Status> {
        let engine = self.engine()?;
        let r = request.into_inner();
        let list = list_named(&r.list).map_err(invalid)?;
        let now = engine.clock().now_ms;
        let (added, commit) = off_workers(engine, move |e| {
            e.add_list_items(
                list,
                &r.values,
                &r.reason,
                r.expires_at_ms,
                ListSource::Admin,
                now,
            )
        })
        .await?
        .map_err(to_status)?;
        saved(commit).await?;
        Ok(Response::new(AddListItemsResponse { added }))
    }

    async fn remove_list_items(
        &self,
        request: Request<RemoveListItemsRequest>,
    ) -> Result<Response<RemoveListItemsResponse>, Status> {
        let engine = self.engine()?;
        let r = request.into_inner();
        let list = list_named(&r.list).map_err(invalid)?;
        let (removed, commit) = off_workers(engine, move |e| e.remove_list_items(list, &r.values))
            .await?
            .map_err(to_status)?;
        saved(commit).await?;
        Ok(Response::new(RemoveListItemsResponse { removed }))
    }

    async fn list_items(
        &self,
        request: Request<ListItemsRequest>,
    ) -> Result<Response<ListItemsResponse>, Status> {
        let engine = self.engine()?;
        let r = request.into_inner();
        let list = list_named(&r.list).map_err(invalid)?;
        let (entries, next_page_token) = engine
            .list_items(list, r.page_size as usize, &r.page_token)
            .map_err(to_status)?;
        let items = entries
            .into_iter()
            .map(|e| ListItem {
                value: e.value,
                added_at_ms: e.added_at_ms,
                reason: e.reason,
                expires_at_ms: e.expires_at_ms,
                source: e.source.name().to_owned(),
                payment_id: e.payment_id,
            })
            .collect();
        Ok(Response::new(ListItemsResponse {
            items,
            next_page_token,
        }))
    }

    async fn evaluate_policy(
        &self,
        request: Request<EvaluatePolicyRequest>,
    ) -> Result<Response<EvaluatePolicyResponse>, Status> {
        let engine = self.engine()?;
        let r = request.into_inner();
        let asked = live::Request {
            thresholds: r.thresholds,
            from_ms: r.from_ms,
            to_ms: r.to_ms,
            min_label_age_ms: r.min_label_age_ms,
            confidence: r.confidence,
        };
        let (report, version) = engine.evaluate_policy(asked).await.map_err(to_status)?;
        Ok(Response::new(evaluate_policy_response(&report, version)))
    }
}
