//! The one place where service errors become gRPC statuses.

use crate::error::ServiceError;
use tonic::{Code, Status};

/// The gRPC status for `e`: `INVALID_ARGUMENT` naming the field for bad
/// input, `NOT_FOUND` for unknown references, `RESOURCE_EXHAUSTED` when the
/// store is full.
pub fn to_status(e: ServiceError) -> Status {
    let code = match &e {
        ServiceError::Invalid(_) | ServiceError::Malformed(_) => Code::InvalidArgument,
        ServiceError::NotFound { .. } => Code::NotFound,
        ServiceError::Store(_) => Code::ResourceExhausted,
    };
    Status::new(code, e.to_string())
}
