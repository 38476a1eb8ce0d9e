//! The service's error type: every way a request can fail, typed. The gRPC
//! edge maps it to a status in exactly one place (`server::status`).

use crate::state::StoreError;
use crate::validate::FieldError;
use crate::view::DecodeError;

/// Why a request was not served.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// A field of the request is missing or invalid.
    #[error(transparent)]
    Invalid(#[from] FieldError),
    /// The request is not a well-formed protobuf message.
    #[error(transparent)]
    Malformed(#[from] DecodeError),
    /// The request names something the service does not hold.
    #[error("{field}: {message}")]
    NotFound {
        /// The field holding the unknown reference.
        field: &'static str,
        /// What was not found.
        message: String,
    },
    /// The store refused the write.
    #[error(transparent)]
    Store(#[from] StoreError),
}
