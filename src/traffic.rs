//! Recorded-traffic files: length-delimited `TrafficRecord` messages in time
//! order (see `proto/riskstream/v1/traffic.proto`), the one format that
//! `simulate`, `convert` and `serve --record` write and `replay`, `train` and
//! `evaluate` read. `-` names standard input or output.
//!
//! Records are encoded and decoded with prost, except that a server
//! recording writes each request's bytes behind a field header of its own
//! ([`TrafficWriter::write_encoded`]); the fields it writes are the table
//! `record::FACTS`, which `tests/protocol_facts.rs` checks against the
//! compiled descriptor.

use crate::facts::message_facts;
use crate::proto::{self, traffic_record::Request};
use prost::Message;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// Largest record accepted when reading (a corrupt length fails fast
/// instead of allocating gigabytes).
pub const MAX_RECORD_BYTES: usize = 16 * 1024 * 1024;

/// A traffic file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum TrafficError {
    /// Opening, reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A record is malformed.
    #[error("{path}: record {index} (at byte {offset}): {message}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// Index of the record, from 0.
        index: u64,
        /// Byte offset of the record's length prefix.
        offset: u64,
        /// What is wrong.
        message: String,
    },
}

fn display(path: &Path) -> PathBuf {
    if path == Path::new("-") {
        PathBuf::from("<stdin/stdout>")
    } else {
        path.to_owned()
    }
}

message_facts! {
    /// `riskstream.v1.TrafficRecord`, the fields that
    /// [`TrafficWriter::write_encoded`] writes by hand.
    record "riskstream.v1.TrafficRecord" {
        AT_MS = 1, "at_ms", Int64;
        REGISTER = 2, "register", Message("riskstream.v1.RegisterPaymentMethodRequest");
        PAYMENT = 3, "payment", Message("riskstream.v1.PaymentEvent");
        FEEDBACK = 4, "feedback", Message("riskstream.v1.FeedbackEvent");
    }
}

/// The request kind of a record, for messages and counts.
pub fn kind(r: &proto::TrafficRecord) -> &'static str {
    Kind::of(r).map_or("empty", Kind::name)
}

/// The request a record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// `RegisterPaymentMethodRequest`.
    Register,
    /// `PaymentEvent`.
    Payment,
    /// `FeedbackEvent`.
    Feedback,
}

impl Kind {
    /// The kind of request `r` holds (`None` for an empty record).
    pub fn of(r: &proto::TrafficRecord) -> Option<Kind> {
        match &r.request {
            Some(Request::Register(_)) => Some(Kind::Register),
            Some(Request::Payment(_)) => Some(Kind::Payment),
            Some(Request::Feedback(_)) => Some(Kind::Feedback),
            None => None,
        }
    }

    /// Lower-case name, for reports.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Register => "register",
            Kind::Payment => "payment",
            Kind::Feedback => "feedback",
        }
    }

    /// The `TrafficRecord.request` field that holds this kind.
    fn field(self) -> u32 {
        match self {
            Kind::Register => record::REGISTER,
            Kind::Payment => record::PAYMENT,
            Kind::Feedback => record::FEEDBACK,
        }
    }
}

/// Writes records to a traffic file.
pub struct TrafficWriter {
    out: BufWriter<Box<dyn Write + Send>>,
    path: PathBuf,
    buf: Vec<u8>,
    written: u64,
}

impl TrafficWriter {
    /// Creates (or truncates) `path`; `-` writes to standard output.
    pub fn create(path: &Path) -> Result<Self, TrafficError> {
        let out: Box<dyn Write + Send> = if path == Path::new("-") {
            Box::new(io::stdout())
        } else {
            Box::new(File::create(path).map_err(|source| TrafficError::Io {
                path: path.to_owned(),
                source,
            })?)
        };
        Ok(Self::new(out, path))
    }

    /// Opens `path` for appending, creating it if needed.
    pub fn append(path: &Path) -> Result<Self, TrafficError> {
        let file = File::options()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| TrafficError::Io {
                path: path.to_owned(),
                source,
            })?;
        Ok(Self::new(Box::new(file), path))
    }

    /// A writer over any byte sink; `path` names it in errors.
    pub fn new(out: Box<dyn Write + Send>, path: &Path) -> Self {
        TrafficWriter {
            out: BufWriter::with_capacity(1 << 16, out),
            path: display(path),
            buf: Vec::with_capacity(1024),
            written: 0,
        }
    }

    fn io(&self, source: io::Error) -> TrafficError {
        TrafficError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// Appends one record.
    pub fn write(&mut self, record: &proto::TrafficRecord) -> Result<(), TrafficError> {
        self.buf.clear();
        record
            .encode_length_delimited(&mut self.buf)
            .map_err(|e| self.io(io::Error::other(e)))?;
        self.out.write_all(&self.buf).map_err(|e| self.io(e))?;
        self.written += 1;
        Ok(())
    }

    /// Appends one record holding `message`, a request of `kind` encoded as
    /// it was received (no decoding: the record is the message's bytes
    /// behind a field header).
    pub fn write_encoded(
        &mut self,
        at_ms: i64,
        kind: Kind,
        message: &[u8],
    ) -> Result<(), TrafficError> {
        use prost::encoding::{WireType, encode_key, encode_varint};
        let len = message.len() as u64;
        let mut head = Vec::with_capacity(24);
        if at_ms != 0 {
            encode_key(record::AT_MS, WireType::Varint, &mut head);
            encode_varint(at_ms as u64, &mut head);
        }
        encode_key(kind.field(), WireType::LengthDelimited, &mut head);
        encode_varint(len, &mut head);
        self.buf.clear();
        encode_varint(head.len() as u64 + len, &mut self.buf);
        self.out.write_all(&self.buf).map_err(|e| self.io(e))?;
        self.out.write_all(&head).map_err(|e| self.io(e))?;
        self.out.write_all(message).map_err(|e| self.io(e))?;
        self.written += 1;
        Ok(())
    }

    /// Writes buffered records out to the file.
    pub fn flush(&mut self) -> Result<(), TrafficError> {
        self.out.flush().map_err(|e| self.io(e))
    }

    /// Records written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Flushes buffered records to the file (and to disk for a file).
    pub fn finish(mut self) -> Result<u64, TrafficError> {
        self.out.flush().map_err(|e| self.io(e))?;
        Ok(self.written)
    }
}

/// Reads the records of a traffic file, in order.
pub struct TrafficReader {
    input: Box<dyn BufRead + Send>,
    path: PathBuf,
    buf: Vec<u8>,
    index: u64,
    offset: u64,
}

impl TrafficReader {
    /// Opens `path`; `-` reads standard input.
    pub fn open(path: &Path) -> Result<Self, TrafficError> {
        let input: Box<dyn Read + Send> = if path == Path::new("-") {
            Box::new(io::stdin())
        } else {
            Box::new(File::open(path).map_err(|source| TrafficError::Io {
                path: path.to_owned(),
                source,
            })?)
        };
        Ok(Self::new(input, path))
    }

    /// A reader over any byte source; `path` names it in errors.
    pub fn new(input: Box<dyn Read + Send>, path: &Path) -> Self {
        TrafficReader {
            input: Box::new(BufReader::with_capacity(1 << 16, input)),
            path: display(path),
            buf: Vec::new(),
            index: 0,
            offset: 0,
        }
    }

    fn io(&self, source: io::Error) -> TrafficError {
        TrafficError::Io {
            path: self.path.clone(),
            source,
        }
    }

    fn malformed(&self, message: impl Into<String>) -> TrafficError {
        TrafficError::Malformed {
            path: self.path.clone(),
            index: self.index,
            offset: self.offset,
            message: message.into(),
        }
    }

    /// The length prefix of the next record, or `None` at a clean end.
    fn length(&mut self) -> Result<Option<usize>, TrafficError> {
        let mut value: u64 = 0;
        for i in 0..10 {
            let mut byte = [0u8; 1];
            match self.input.read(&mut byte) {
                Ok(0) if i == 0 => return Ok(None),
                Ok(0) => return Err(self.malformed("file ends inside a length prefix")),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(self.io(source));
                }
            }
            value |= u64::from(byte[0] & 0x7f) << (7 * i);
            if byte[0] < 0x80 {
                let n = usize::try_from(value).unwrap_or(usize::MAX);
                if n > MAX_RECORD_BYTES {
                    return Err(self.malformed(format!(
                        "length {value} is more than {MAX_RECORD_BYTES} bytes: not a traffic file?"
                    )));
                }
                self.offset += i as u64 + 1;
                return Ok(Some(n));
            }
        }
        Err(self.malformed("length prefix longer than 10 bytes"))
    }

    /// The next record, or `None` at the end of the file.
    pub fn next_record(&mut self) -> Result<Option<proto::TrafficRecord>, TrafficError> {
        let record_offset = self.offset;
        let Some(n) = self.length()? else {
            return Ok(None);
        };
        self.buf.resize(n, 0);
        if let Err(e) = self.input.read_exact(&mut self.buf) {
            self.offset = record_offset;
            return Err(if e.kind() == io::ErrorKind::UnexpectedEof {
                self.malformed(format!("file ends inside a record of {n} bytes"))
            } else {
                self.io(e)
            });
        }
        let record = proto::TrafficRecord::decode(self.buf.as_slice()).map_err(|e| {
            self.offset = record_offset;
            self.malformed(format!("not a TrafficRecord: {e}"))
        })?;
        if record.request.is_none() {
            self.offset = record_offset;
            return Err(self.malformed("record holds no request"));
        }
        self.offset += n as u64;
        self.index += 1;
        Ok(Some(record))
    }

    /// Records read so far.
    pub fn read(&self) -> u64 {
        self.index
    }
}

impl Iterator for TrafficReader {
    type Item = Result<proto::TrafficRecord, TrafficError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_record().transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payment(id: &str, at_ms: i64) -> proto::TrafficRecord {
        proto::TrafficRecord {
            at_ms,
            request: Some(Request::Payment(proto::PaymentEvent {
                payment_id: id.into(),
                amount: 1000,
                ..Default::default()
            })),
            scenario: String::new(),
        }
    }

    fn written(records: &[proto::TrafficRecord]) -> Vec<u8> {
        let mut out = Vec::new();
        for r in records {
            r.encode_length_delimited(&mut out).expect("encodes");
        }
        out
    }

    fn reader(bytes: Vec<u8>) -> TrafficReader {
        TrafficReader::new(Box::new(io::Cursor::new(bytes)), Path::new("t"))
    }

    #[test]
    fn round_trip_through_a_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.traffic");
        let records: Vec<_> = (0..1000)
            .map(|i| payment(&format!("pay_{i}"), 1_800_000_000_000 + i))
            .collect();
        let mut w = TrafficWriter::create(&path).expect("creates");
        for r in &records {
            w.write(r).expect("writes");
        }
        assert_eq!(w.finish().expect("flushes"), 1000);
        let back: Vec<_> = TrafficReader::open(&path)
            .expect("opens")
            .collect::<Result<_, _>>()
            .expect("reads");
        assert_eq!(back, records);
    }

    /// `write_encoded` frames a request's bytes by hand; the file must be
    /// byte for byte what prost writes for the same records, and read back.
    #[test]
    fn records_written_from_request_bytes_are_the_records_prost_writes() {
        let requests = [
            Request::Register(proto::RegisterPaymentMethodRequest {
                payment_method: Some(proto::PaymentMethod {
                    id: "pm_1".into(),
                    card_fingerprint: "f".repeat(300),
                    ..Default::default()
                }),
                customer: Some(proto::Customer {
                    id: "cus_1".into(),
                    email: "a@example.com".into(),
                }),
            }),
            Request::Payment(proto::PaymentEvent {
                payment_id: "pay_1".into(),
                amount: 1099,
                ..Default::default()
            }),
            Request::Payment(proto::PaymentEvent::default()),
            Request::Feedback(proto::FeedbackEvent {
                payment_id: "pay_1".into(),
                kind: proto::FeedbackKind::DisputeFraud as i32,
                reported_at_ms: 7,
            }),
        ];
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.traffic");
        let mut w = TrafficWriter::create(&path).expect("creates");
        let mut records = Vec::new();
        for request in &requests {
            let (kind, message) = match request {
                Request::Register(m) => (Kind::Register, m.encode_to_vec()),
                Request::Payment(m) => (Kind::Payment, m.encode_to_vec()),
                Request::Feedback(m) => (Kind::Feedback, m.encode_to_vec()),
            };
            for at_ms in [0, 1, -1, 1_800_000_000_000, i64::MIN, i64::MAX] {
                w.write_encoded(at_ms, kind, &message).expect("writes");
                let record = proto::TrafficRecord {
                    at_ms,
                    request: Some(request.clone()),
                    scenario: String::new(),
                };
                assert_eq!(Kind::of(&record), Some(kind));
                records.push(record);
            }
        }
        w.finish().expect("flushes");
        let bytes = std::fs::read(&path).expect("reads");
        assert_eq!(bytes, written(&records), "byte for byte what prost writes");
        let back: Vec<_> = TrafficReader::open(&path)
            .expect("opens")
            .collect::<Result<_, _>>()
            .expect("reads");
        assert_eq!(back, records);
    }

    #[test]
    fn truncation_and_garbage_are_errors_naming_the_record() {
        let mut bytes = written(&[payment("a", 1), payment("b", 2)]);
        bytes.truncate(bytes.len() - 3);
        let mut r = reader(bytes);
        assert!(r.next_record().expect("first is whole").is_some());
        let e = r.next_record().expect_err("second is cut").to_string();
        assert!(e.contains("record 1") && e.contains("ends inside"), "{e}");

        let e = reader(b"\xff\xff\xff\xff\x0f".to_vec())
            .next_record()
            .expect_err("huge length")
            .to_string();
        assert!(e.contains("not a traffic file"), "{e}");

        let e = reader(vec![2, 0x08, 0x01])
            .next_record()
            .expect_err("no request")
            .to_string();
        assert!(e.contains("no request"), "{e}");

        assert!(reader(Vec::new()).next_record().expect("empty").is_none());
    }
}
