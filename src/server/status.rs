//! The one place where service errors become gRPC statuses.

use crate::error::{ErrorCode, ServiceError};
use tonic::{Code, Status};

/// The gRPC code of an error class.
pub fn grpc_code(code: ErrorCode) -> Code {
    match code {
        ErrorCode::InvalidArgument => Code::InvalidArgument,
        ErrorCode::NotFound => Code::NotFound,
        ErrorCode::ResourceExhausted => Code::ResourceExhausted,
        ErrorCode::Unavailable => Code::Unavailable,
        ErrorCode::DeadlineExceeded => Code::DeadlineExceeded,
    }
}

/// The gRPC status for `e`: `INVALID_ARGUMENT` naming the field for bad
/// input, `NOT_FOUND` for unknown references, `RESOURCE_EXHAUSTED` when the
/// store is full, a request message is over the size limit or the server is
/// at a load limit, `UNAVAILABLE` when a write could not be saved or an
/// idle stream is closed, `DEADLINE_EXCEEDED` when the call's deadline or
/// the message timeout passed.
pub fn to_status(e: ServiceError) -> Status {
    Status::new(grpc_code(e.code()), e.to_string())
}
