//! Converters from public datasets to recorded traffic. `handbook-csv`: the
//! transactions of the simulator of *Reproducible Machine Learning for
//! Credit Card Fraud Detection — Practical Handbook* (CSV, optionally
//! gzipped), each customer's card registered once, each payment scored, each
//! fraud reported as `FEEDBACK_KIND_FRAUDULENT` a fixed delay later.

use crate::proto::{self, traffic_record::Request};
use crate::traffic::{TrafficError, TrafficWriter};
use std::collections::{HashSet, VecDeque};
use std::io::{BufReader, Read};
use std::path::Path;

/// A dataset could not be converted.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// The input could not be opened or read.
    #[error("{path}: {source}")]
    Io {
        /// The input.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A row or the header is not what the format expects.
    #[error("{path}: line {line}: {message}")]
    Row {
        /// The input.
        path: String,
        /// Line number, from 1 (the header is line 1).
        line: u64,
        /// What is wrong.
        message: String,
    },
    /// Writing the traffic failed.
    #[error(transparent)]
    Traffic(#[from] TrafficError),
}

/// What a conversion wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConvertStats {
    /// Payment methods registered (one per customer).
    pub registrations: u64,
    /// Payments.
    pub payments: u64,
    /// Fraud reports (one per fraudulent payment).
    pub feedback: u64,
}

/// Handbook conversion settings.
#[derive(Debug, Clone, Copy)]
pub struct HandbookOptions {
    /// How long after a fraudulent transaction its report arrives.
    pub feedback_delay_ms: i64,
}

impl Default for HandbookOptions {
    fn default() -> Self {
        HandbookOptions {
            feedback_delay_ms: 7 * 86_400_000,
        }
    }
}

/// The columns the handbook CSV must have.
const COLUMNS: [&str; 7] = [
    "TRANSACTION_ID",
    "TX_DATETIME",
    "CUSTOMER_ID",
    "TERMINAL_ID",
    "TX_AMOUNT",
    "TX_FRAUD",
    "TX_FRAUD_SCENARIO",
];

/// Ground-truth name of a handbook fraud scenario number.
pub fn handbook_scenario(n: u32) -> &'static str {
    match n {
        1 => "amount_over_220",
        2 => "compromised_terminal",
        3 => "compromised_customer",
        _ => "other",
    }
}

/// The payment method id of a handbook customer's card.
pub fn handbook_method_id(customer: &str) -> String {
    format!("pm_{customer}")
}

/// Opens `path`, decompressing gzip (by its magic bytes).
fn open(path: &Path) -> Result<Box<dyn Read + Send>, ConvertError> {
    let io = |source| ConvertError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut file = BufReader::new(std::fs::File::open(path).map_err(io)?);
    let magic = std::io::BufRead::fill_buf(&mut file).map_err(io)?;
    if magic.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::bufread::MultiGzDecoder::new(file)))
    } else {
        Ok(Box::new(file))
    }
}

/// Converts the handbook CSV at `input` into traffic written to `out`.
pub fn handbook_csv(
    input: &Path,
    out: &mut TrafficWriter,
    opts: HandbookOptions,
) -> Result<ConvertStats, ConvertError> {
    let name = input.display().to_string();
    handbook_from_reader(open(input)?, &name, out, opts)
}

/// Converts handbook CSV text read from `reader` (`name` is used in errors).
pub fn handbook_from_reader(
    reader: impl Read,
    name: &str,
    out: &mut TrafficWriter,
    opts: HandbookOptions,
) -> Result<ConvertStats, ConvertError> {
    let mut csv = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(reader);
    let row_error = |line: u64, message: String| ConvertError::Row {
        path: name.to_owned(),
        line,
        message,
    };
    let headers = csv
        .headers()
        .map_err(|e| row_error(1, format!("unreadable header: {e}")))?
        .clone();
    let mut at = [0usize; COLUMNS.len()];
    for (slot, col) in at.iter_mut().zip(COLUMNS) {
        *slot = headers
            .iter()
            .position(|h| h.trim() == col)
            .ok_or_else(|| row_error(1, format!("missing column {col}")))?;
    }
    let [
        id_at,
        time_at,
        customer_at,
        terminal_at,
        amount_at,
        fraud_at,
        scenario_at,
    ] = at;

    let mut stats = ConvertStats::default();
    let mut seen = HashSet::new();
    let mut pending: VecDeque<proto::TrafficRecord> = VecDeque::new();
    let mut last_ms = i64::MIN;
    let mut created_at_ms = None;
    let mut row = csv::StringRecord::new();
    let mut line = 1u64;
    loop {
        match csv.read_record(&mut row) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => return Err(row_error(line + 1, e.to_string())),
        }
        line += 1;
        let field = |i: usize, col: &str| {
            row.get(i)
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| row_error(line, format!("{col} is empty")))
        };
        let id = field(id_at, "TRANSACTION_ID")?;
        let customer = field(customer_at, "CUSTOMER_ID")?;
        let terminal = field(terminal_at, "TERMINAL_ID")?;
        let when = field(time_at, "TX_DATETIME")?;
        let at_ms = humantime::parse_rfc3339_weak(when)
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .and_then(|d| i64::try_from(d.as_millis()).ok())
            .ok_or_else(|| {
                row_error(
                    line,
                    format!("TX_DATETIME {when:?} is not a date-time such as 2018-04-01 00:00:31"),
                )
            })?;
        if at_ms < last_ms {
            return Err(row_error(
                line,
                format!(
                    "TX_DATETIME {when} is earlier than the row before: rows must be in time order"
                ),
            ));
        }
        last_ms = at_ms;
        let amount_text = field(amount_at, "TX_AMOUNT")?;
        let amount = amount_text
            .parse::<f64>()
            .ok()
            .filter(|a| a.is_finite() && *a >= 0.0 && *a < 1e10)
            .map(|a| (a * 100.0).round() as i64)
            .ok_or_else(|| {
                row_error(
                    line,
                    format!("TX_AMOUNT {amount_text:?} is not a non-negative amount"),
                )
            })?;
        let fraud = match field(fraud_at, "TX_FRAUD")? {
            "0" => false,
            "1" => true,
            other => return Err(row_error(line, format!("TX_FRAUD {other:?} is not 0 or 1"))),
        };
        let scenario_text = field(scenario_at, "TX_FRAUD_SCENARIO")?;
        let scenario: u32 = scenario_text.parse().map_err(|_| {
            row_error(
                line,
                format!("TX_FRAUD_SCENARIO {scenario_text:?} is not a number"),
            )
        })?;

        while pending.front().is_some_and(|r| r.at_ms <= at_ms) {
            if let Some(r) = pending.pop_front() {
                out.write(&r)?;
                stats.feedback += 1;
            }
        }
        // The customers exist from the start of the data: their cards date from then.
        let created = *created_at_ms.get_or_insert(at_ms - at_ms.rem_euclid(86_400_000));
        if seen.insert(customer.to_owned()) {
            out.write(&proto::TrafficRecord {
                at_ms,
                request: Some(Request::Register(proto::RegisterPaymentMethodRequest {
                    payment_method: Some(proto::PaymentMethod {
                        id: handbook_method_id(customer),
                        r#type: proto::PaymentMethodType::Card as i32,
                        card_fingerprint: format!("card_{customer}"),
                        created_at_ms: created,
                        ..Default::default()
                    }),
                    customer: Some(proto::Customer {
                        id: customer.to_owned(),
                        email: String::new(),
                    }),
                })),
                scenario: String::new(),
            })?;
            stats.registrations += 1;
        }
        out.write(&proto::TrafficRecord {
            at_ms,
            request: Some(Request::Payment(proto::PaymentEvent {
                payment_id: id.to_owned(),
                object_type: proto::ObjectType::PaymentIntent as i32,
                amount,
                currency: "eur".into(),
                created_at_ms: at_ms,
                customer: Some(proto::Customer {
                    id: customer.to_owned(),
                    email: String::new(),
                }),
                merchant_id: terminal.to_owned(),
                payment_method: Some(proto::PaymentMethod {
                    id: handbook_method_id(customer),
                    ..Default::default()
                }),
                ..Default::default()
            })),
            scenario: if fraud {
                handbook_scenario(scenario).to_owned()
            } else {
                String::new()
            },
        })?;
        stats.payments += 1;
        if fraud {
            let report_at = at_ms + opts.feedback_delay_ms;
            pending.push_back(proto::TrafficRecord {
                at_ms: report_at,
                request: Some(Request::Feedback(proto::FeedbackEvent {
                    payment_id: id.to_owned(),
                    kind: proto::FeedbackKind::Fraudulent as i32,
                    reported_at_ms: report_at,
                })),
                scenario: String::new(),
            });
        }
    }
    for r in pending {
        out.write(&r)?;
        stats.feedback += 1;
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traffic::TrafficReader;

    const CSV: &str = "TRANSACTION_ID,TX_DATETIME,CUSTOMER_ID,TERMINAL_ID,TX_AMOUNT,TX_TIME_SECONDS,TX_TIME_DAYS,TX_FRAUD,TX_FRAUD_SCENARIO
0,2018-04-01 00:00:31,596,3156,57.16,31,0,0,0
1,2018-04-01 00:02:10,4961,3412,281.51,130,0,1,1
2,2018-04-05 10:00:00,596,3156,10.00,0,4,0,0
3,2018-04-09 00:02:10,596,77,1.05,0,8,0,0
";

    fn convert(csv: &str) -> Result<(ConvertStats, Vec<proto::TrafficRecord>), ConvertError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.traffic");
        let mut w = TrafficWriter::create(&path).expect("creates");
        let stats =
            handbook_from_reader(csv.as_bytes(), "t.csv", &mut w, HandbookOptions::default())?;
        w.finish().expect("flushes");
        let records = TrafficReader::open(&path)
            .expect("opens")
            .collect::<Result<_, _>>()
            .expect("reads");
        Ok((stats, records))
    }

    fn ms(s: &str) -> i64 {
        humantime::parse_rfc3339_weak(s)
            .expect("date")
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after epoch")
            .as_millis() as i64
    }

    #[test]
    fn maps_the_handbook_columns() {
        let (stats, records) = convert(CSV).expect("converts");
        assert_eq!(
            stats,
            ConvertStats {
                registrations: 2,
                payments: 4,
                feedback: 1
            }
        );
        let kinds: Vec<_> = records.iter().map(crate::traffic::kind).collect();
        assert_eq!(
            kinds,
            [
                "register", "payment", "register", "payment", "payment", "feedback", "payment"
            ]
        );
        let Some(Request::Register(reg)) = &records[0].request else {
            panic!("a registration first");
        };
        let pm = reg.payment_method.as_ref().expect("method");
        assert_eq!(pm.id, "pm_596");
        assert_eq!(pm.card_fingerprint, "card_596");
        assert_eq!(pm.created_at_ms, ms("2018-04-01 00:00:00"));
        let Some(Request::Payment(p)) = &records[3].request else {
            panic!("payment");
        };
        assert_eq!(p.payment_id, "1");
        assert_eq!(p.amount, 28151, "amounts in cents");
        assert_eq!(p.merchant_id, "3412", "merchant is the terminal");
        assert_eq!(p.customer.as_ref().expect("customer").id, "4961");
        assert_eq!(p.payment_method.as_ref().expect("pm").id, "pm_4961");
        assert_eq!(p.created_at_ms, ms("2018-04-01 00:02:10"));
        assert_eq!(records[3].at_ms, p.created_at_ms);
        assert_eq!(records[3].scenario, "amount_over_220");
        assert_eq!(
            records[1].scenario, "",
            "legitimate payments carry no scenario"
        );
        // The report comes 7 days later, in time order with the payments.
        let Some(Request::Feedback(f)) = &records[5].request else {
            panic!("feedback");
        };
        assert_eq!(f.payment_id, "1");
        assert_eq!(f.kind, proto::FeedbackKind::Fraudulent as i32);
        assert_eq!(f.reported_at_ms, ms("2018-04-08 00:02:10"));
        assert_eq!(records[5].at_ms, f.reported_at_ms);
        assert!(records.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
    }

    #[test]
    fn bad_rows_are_errors_naming_the_line() {
        let bad_amount = CSV.replace("10.00", "ten");
        let e = convert(&bad_amount).expect_err("bad amount").to_string();
        assert!(e.contains("line 4") && e.contains("TX_AMOUNT"), "{e}");
        let unordered = CSV.replace("2018-04-05 10:00:00", "2018-03-05 10:00:00");
        let e = convert(&unordered).expect_err("out of order").to_string();
        assert!(e.contains("line 4") && e.contains("time order"), "{e}");
        let e = convert("TRANSACTION_ID,TX_DATETIME\n1,2018-04-01 00:00:00\n")
            .expect_err("missing columns")
            .to_string();
        assert!(e.contains("line 1") && e.contains("CUSTOMER_ID"), "{e}");
        let bad_date = CSV.replace("2018-04-09 00:02:10", "yesterday");
        let e = convert(&bad_date).expect_err("bad date").to_string();
        assert!(e.contains("line 5") && e.contains("TX_DATETIME"), "{e}");
    }
}
