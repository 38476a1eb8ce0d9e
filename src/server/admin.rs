//! The tonic `RiskAdmin` implementation: a thin adapter from the operators'
//! RPCs to the engine's list management ([`crate::lists`]). Until the state
//! is restored every call answers `UNAVAILABLE`; a change is answered once
//! the store has saved it.

use super::service::{Ready, off_workers, saved};
use super::status::to_status;
use crate::engine::Engine;
use crate::lists::list_named;
use crate::proto::risk_admin_server::RiskAdmin;
use crate::proto::{
    AddListItemsRequest, AddListItemsResponse, ListItem, ListItemsRequest, ListItemsResponse,
    RemoveListItemsRequest, RemoveListItemsResponse,
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
}
