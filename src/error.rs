//! The service's error type: every way a request can fail, typed, with the
//! one [`ErrorCode`] each maps to. The gRPC edge turns codes into statuses
//! (`server::status`); streams name them in an outcome's `error.code`.

use crate::policy::PolicyError;
use crate::state::StoreError;
use crate::validate::FieldError;
use crate::view::DecodeError;
use std::time::Duration;

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
    /// A holdout estimate was asked with impossible settings.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// A request message is longer than the server accepts
    /// (`--max-message-bytes`); it was refused before it was read.
    #[error("the request message is {bytes} bytes; at most {max} are accepted")]
    TooLarge {
        /// The length the message announced.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// `--max-concurrent-calls` (`--admin-max-concurrent-calls` on
    /// `RiskAdmin`) calls were in progress: refused at once
    /// (load shedding), before anything was read.
    #[error(
        "the server is at its limit of {max} calls in progress (--{flag}); nothing was done: retry with backoff"
    )]
    Overloaded {
        /// The limit.
        max: usize,
        /// The flag that sets it.
        flag: &'static str,
    },
    /// The messages being received at once already hold the server's
    /// budget of bytes: a message that would add to them is refused.
    #[error(
        "the server is receiving {budget} bytes of messages at once, its most; nothing was done: retry with backoff"
    )]
    Receiving {
        /// The budget, in bytes.
        budget: usize,
    },
    /// The call's deadline (`grpc-timeout`) passed before it was served.
    #[error("the call's deadline (grpc-timeout) passed before it was served; nothing was recorded")]
    DeadlineExceeded,
    /// A stream's deadline (`grpc-timeout`) passed.
    #[error(
        "the stream's deadline (grpc-timeout) passed; events without an outcome were not scored"
    )]
    StreamDeadlineExceeded,
    /// A request message did not arrive whole in time (`--message-timeout`).
    #[error(
        "the request message did not arrive whole within {after:?} (--message-timeout); it was not read"
    )]
    MessageTimeout {
        /// The timeout.
        after: Duration,
    },
    /// A stream had no event for `--stream-idle-timeout`.
    #[error(
        "no event on this stream for {after:?} (--stream-idle-timeout): it is closed; open a new one"
    )]
    StreamIdle {
        /// The timeout.
        after: Duration,
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
    /// The call's deadline, or a server timeout, passed first.
    DeadlineExceeded,
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
            ErrorCode::DeadlineExceeded => "deadline_exceeded",
        }
    }
}

impl ServiceError {
    /// The class of this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            ServiceError::Invalid(_) | ServiceError::Malformed(_) => ErrorCode::InvalidArgument,
            // The store's own records contradict each other: nothing the
            // caller can fix.
            ServiceError::Policy(PolicyError::Propensity { .. }) => ErrorCode::Unavailable,
            ServiceError::Policy(_) => ErrorCode::InvalidArgument,
            ServiceError::NotFound { .. } => ErrorCode::NotFound,
            ServiceError::Store(StoreError::PaymentMethodsFull(_))
            | ServiceError::TooLarge { .. }
            | ServiceError::Overloaded { .. }
            | ServiceError::Receiving { .. } => ErrorCode::ResourceExhausted,
            ServiceError::Store(StoreError::Unavailable(_)) | ServiceError::StreamIdle { .. } => {
                ErrorCode::Unavailable
            }
            ServiceError::DeadlineExceeded
            | ServiceError::StreamDeadlineExceeded
            | ServiceError::MessageTimeout { .. } => ErrorCode::DeadlineExceeded,
        }
    }

    /// The field at fault, if one is (empty otherwise).
    pub fn field(&self) -> &str {
        match self {
            ServiceError::Invalid(e) => &e.field,
            ServiceError::Malformed(e) => e.field(),
            ServiceError::NotFound { field, .. } => field,
            ServiceError::Policy(e) => match e {
                PolicyError::Threshold(_) => "thresholds",
                PolicyError::Confidence(_) => "confidence",
                PolicyError::LabelAge(_) => "min_label_age_ms",
                PolicyError::Window { .. } => "to_ms",
                PolicyError::Draws(_) | PolicyError::Propensity { .. } => "",
            },
            _ => "",
        }
    }
}
