//! The requests of a recorded-traffic file, read into memory before a replay
//! starts and encoded once, so that sending costs no encoding and reading the
//! file never paces the load.

use crate::proto::traffic_record::Request as Record;
pub use crate::traffic::Kind;
use crate::traffic::{TrafficError, TrafficReader};
use bytes::Bytes;
use prost::Message;
use std::path::Path;

/// One request, encoded as it goes on the wire.
#[derive(Debug, Clone)]
pub struct Request {
    /// When it was recorded (ms since the Unix epoch).
    pub at_ms: i64,
    /// The RPC it goes to.
    pub kind: Kind,
    /// The encoded request message.
    pub body: Bytes,
    /// The payment id an outcome must carry (payments), or the payment id
    /// a feedback is about.
    pub payment_id: Box<str>,
    /// The payment method registered (registrations) or paid with
    /// (payments); empty when absent.
    pub method_id: Box<str>,
}

/// Reads the requests of the traffic file at `path` (`-` for standard
/// input) whose kind is in `kinds`.
pub fn load(path: &Path, kinds: &[Kind]) -> Result<Vec<Request>, TrafficError> {
    let mut out = Vec::new();
    for record in TrafficReader::open(path)? {
        let record = record?;
        if !Kind::of(&record).is_some_and(|k| kinds.contains(&k)) {
            continue;
        }
        let at_ms = record.at_ms;
        let request = match record.request {
            Some(Record::Register(r)) => Request {
                at_ms,
                kind: Kind::Register,
                body: Bytes::from(r.encode_to_vec()),
                payment_id: "".into(),
                method_id: r
                    .payment_method
                    .map(|m| m.id.into_boxed_str())
                    .unwrap_or_default(),
            },
            Some(Record::Payment(p)) => Request {
                at_ms,
                kind: Kind::Payment,
                body: Bytes::from(p.encode_to_vec()),
                method_id: p
                    .payment_method
                    .map(|m| m.id.into_boxed_str())
                    .unwrap_or_default(),
                payment_id: p.payment_id.into_boxed_str(),
            },
            Some(Record::Feedback(f)) => Request {
                at_ms,
                kind: Kind::Feedback,
                body: Bytes::from(f.encode_to_vec()),
                payment_id: f.payment_id.into_boxed_str(),
                method_id: "".into(),
            },
            // The reader rejects records without a request.
            None => continue,
        };
        out.push(request);
    }
    Ok(out)
}
