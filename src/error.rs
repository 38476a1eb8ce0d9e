//! The service's error type: every way a request can fail, typed, with the
//! one [`ErrorCode`] each maps to. The gRPC edge turns codes into statuses
//! (`server::status`); streams name them in an outcome's `error.code`.

use crate::state::StoreError;
use crate::validate::FieldError;
use crate::view::DecodeError;

/// Why a request was not served.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// A field of the request is missing or invalid.
    #[error(transparent)]
    Invalid(#[from] FieldError),
    /// The request is not a well-formed protobuf message, or holds more
    /// than the parser reads (`metadata`).
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
    /// A request message is longer than the server accepts
    /// (`--max-message-bytes`); it was refused before it was read.
    #[error("the request message is {bytes} bytes; at most {max} are accepted")]
    TooLarge {
        /// The length the message announced.
        bytes: usize,
        /// The limit.
        max: usize,
    },
}

/// The class of a failure, shared by unary statuses and stream outcomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// Bad input: fix the request.
    InvalidArgument,
    /// The request names something the service does not hold.
    NotFound,
    /// A limit was reached.
    ResourceExhausted,
    /// The service cannot do it now; retrying later may work.
    Unavailable,
}

impl ErrorCode {
    /// The name a stream outcome's `error.code` carries (gRPC's code name,
    /// lower case).
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::InvalidArgument => "invalid_argument",
            ErrorCode::NotFound => "not_found",
            ErrorCode::ResourceExhausted => "resource_exhausted",
            ErrorCode::Unavailable => "unavailable",
        }
    }
}

impl ServiceError {
    /// The class of this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            ServiceError::Invalid(_) | ServiceError::Malformed(_) => ErrorCode::InvalidArgument,
            ServiceError::NotFound { .. } => ErrorCode::NotFound,
            ServiceError::Store(StoreError::PaymentMethodsFull(_))
            | ServiceError::TooLarge { .. } => ErrorCode::ResourceExhausted,
            ServiceError::Store(StoreError::Unavailable(_)) => ErrorCode::Unavailable,
        }
    }

    /// The field at fault, if one is (empty otherwise).
    pub fn field(&self) -> &str {
        match self {
            ServiceError::Invalid(e) => &e.field,
            ServiceError::Malformed(e) => e.field(),
            ServiceError::NotFound { field, .. } => field,
            _ => "",
        }
    }
}
