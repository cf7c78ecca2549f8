//! `hallmark.agent.v1.Delivery` on the Workload API socket: a workload
//! reports where it delivered credentials it holds (`hallmark helper`: to
//! files), and the agent forwards the report to the server's inventory.
//!
//! The agent accepts a report only for serials and jtis it currently holds
//! for the caller's attested evidence, so a process can speak only for
//! credentials issued to it; the server checks again that each was issued
//! through this agent for that evidence. Why this and not a change to the
//! Workload API, which must stay exactly the SPIFFE contract: see
//! `hallmark_server::delivery`.

use std::sync::Arc;

use hallmark_core::now_unix;
use hallmark_proto::agent::delivery_server::Delivery;
use hallmark_proto::agent::{ReportDeliveryRequest, ReportDeliveryResponse};
use hallmark_proto::node as pb;
use tonic::{Code, Request, Response, Status};

use crate::admission;
use crate::state::AgentInner;

/// Most credentials one report may name.
pub const MAX_IDS: usize = 16;

/// The delivery-report service.
#[derive(Clone)]
pub struct DeliveryApi {
    agent: Arc<AgentInner>,
}

impl DeliveryApi {
    /// A service over the agent.
    pub fn new(agent: Arc<AgentInner>) -> Self {
        Self { agent }
    }
}

#[tonic::async_trait]
impl Delivery for DeliveryApi {
    async fn report_delivery(
        &self,
        req: Request<ReportDeliveryRequest>,
    ) -> Result<Response<ReportDeliveryResponse>, Status> {
        admission::require_security_header(&req)?;
        let evidence = admission::attest_identified(&self.agent, &req).await?.evidence;
        let r = req.into_inner();
        if r.credential_ids.is_empty() || r.credential_ids.len() > MAX_IDS {
            return Err(Status::invalid_argument(format!("name 1 to {MAX_IDS} credentials")));
        }
        let now = now_unix();
        if let Some(id) = r.credential_ids.iter().find(|id| !self.agent.cache.holds(evidence.digest(), id, now)) {
            return Err(Status::permission_denied(format!(
                "credential `{}` is not held for this caller",
                id.escape_debug()
            )));
        }
        let forward = pb::RecordDeliveriesRequest {
            credential_ids: r.credential_ids,
            target: r.target,
            evidence: evidence.selectors().iter().map(ToString::to_string).collect(),
        };
        match self.agent.client().record_deliveries(forward).await {
            Ok(resp) => Ok(Response::new(ReportDeliveryResponse { recorded: resp.into_inner().recorded })),
            Err(s) if matches!(s.code(), Code::InvalidArgument | Code::PermissionDenied | Code::NotFound) => {
                tracing::info!(status = %s.message(), "delivery report refused by the server");
                Err(s)
            }
            Err(s) => {
                tracing::warn!(code = ?s.code(), status = %s.message(), "delivery report not recorded");
                Err(Status::unavailable("server unavailable; report the delivery again later"))
            }
        }
    }
}
