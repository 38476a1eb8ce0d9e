//! The protocol facts written by hand, held against the compiled descriptor
//! set (`riskstream::proto::FILE_DESCRIPTOR_SET`): the field tables of the
//! view parser, the methods of the manual `RiskScorer` definition in
//! build.rs and the `TrafficRecord` fields that the traffic writer encodes
//! by hand. A proto change that one of them misses (a renumbered or
//! retyped field, a new field, a new or changed RPC) fails here, naming the
//! message and field or the method.

use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FieldDescriptorProto, FileDescriptorSet};
use riskstream::facts::{FieldType, MessageFacts};
use std::collections::BTreeMap;

/// Descriptor fields the view parser deliberately skips: (message, field).
/// Every other field of a message the views read must be in its table.
const VIEW_IGNORES: &[(&str, &str)] = &[
    // Clients check and tally outcomes (`OutcomeView`); the explanations,
    // the compared sessions and the insights are not read.
    ("riskstream.v1.Outcome", "reason"),
    ("riskstream.v1.Outcome", "seller_message"),
    ("riskstream.v1.Outcome", "rule"),
    ("riskstream.v1.Outcome", "session_id"),
    ("riskstream.v1.Outcome", "creation_session_id"),
    ("riskstream.v1.Outcome", "insights"),
    ("riskstream.v1.EventError", "message"),
];

/// `TrafficRecord` fields that `TrafficWriter::write_encoded` never writes.
const TRAFFIC_IGNORES: &[(&str, &str)] = &[
    // Simulator ground truth; a server recording has none.
    ("riskstream.v1.TrafficRecord", "scenario"),
];

/// The messages of the descriptor set, by full name (`riskstream.v1.X`,
/// nested ones as `riskstream.v1.X.Y`).
struct Descriptors {
    set: FileDescriptorSet,
}

impl Descriptors {
    fn load() -> Self {
        let set = FileDescriptorSet::decode(riskstream::proto::FILE_DESCRIPTOR_SET)
            .expect("FILE_DESCRIPTOR_SET decodes");
        Descriptors { set }
    }

    fn messages(&self) -> BTreeMap<String, &DescriptorProto> {
        fn add<'a>(
            scope: &str,
            messages: &'a [DescriptorProto],
            out: &mut BTreeMap<String, &'a DescriptorProto>,
        ) {
            for m in messages {
                let name = format!("{scope}.{}", m.name());
                add(&name, &m.nested_type, out);
                out.insert(name, m);
            }
        }
        let mut out = BTreeMap::new();
        for file in &self.set.file {
            add(file.package(), &file.message_type, &mut out);
        }
        out
    }
}

/// How the descriptor declares a field, for messages.
fn declared(f: &FieldDescriptorProto) -> String {
    let label = if f.label() == Label::Repeated {
        "repeated "
    } else {
        ""
    };
    let ty = match f.r#type() {
        Type::Message | Type::Enum => f.type_name().trim_start_matches('.').to_owned(),
        t => t.as_str_name().trim_start_matches("TYPE_").to_lowercase(),
    };
    format!("{label}{ty}")
}

/// Whether reading or writing a field as `ty` is right for the field the
/// descriptor declares: same type (so the same wire type and decoding),
/// singular unless a map.
fn compatible(
    ty: FieldType,
    f: &FieldDescriptorProto,
    messages: &BTreeMap<String, &DescriptorProto>,
) -> bool {
    let singular = f.label() != Label::Repeated;
    let named = |name: &str| f.type_name().strip_prefix('.') == Some(name);
    let scalar = |t: Type| singular && f.r#type() == t;
    match ty {
        FieldType::String => scalar(Type::String),
        FieldType::Int64 => scalar(Type::Int64),
        FieldType::Int32 => scalar(Type::Int32),
        FieldType::Uint32 => scalar(Type::Uint32),
        FieldType::Bool => scalar(Type::Bool),
        FieldType::Double => scalar(Type::Double),
        FieldType::Enum(name) => scalar(Type::Enum) && named(name),
        FieldType::Message(name) => scalar(Type::Message) && named(name),
        FieldType::Map(name) => {
            !singular
                && f.r#type() == Type::Message
                && named(name)
                && messages
                    .get(name)
                    .and_then(|m| m.options.as_ref())
                    .is_some_and(|o| o.map_entry())
        }
    }
}

/// Every disagreement between `tables` (what `who` reads or writes by hand)
/// and the descriptor: a table field missing from the descriptor or with
/// another number or type, and a descriptor field neither in its table nor
/// in `ignores`.
fn check_tables(
    who: &str,
    tables: &[MessageFacts],
    ignores: &[(&str, &str)],
    messages: &BTreeMap<String, &DescriptorProto>,
) -> Vec<String> {
    let mut problems = Vec::new();
    for (i, table) in tables.iter().enumerate() {
        let msg = table.name;
        if tables[..i].iter().any(|t| t.name == msg) {
            problems.push(format!("{msg}: {who} has two tables for it"));
        }
        let Some(descriptor) = messages.get(msg) else {
            problems.push(format!(
                "{msg}: {who} has a table for it, the descriptor has no such message"
            ));
            continue;
        };
        for (j, fact) in table.fields.iter().enumerate() {
            let field = format!("{msg}.{}", fact.name);
            if let Some(other) = table.fields[..j]
                .iter()
                .find(|o| o.name == fact.name || o.number == fact.number)
            {
                problems.push(format!(
                    "{field}: {who} lists number {} twice or next to {} = {}",
                    fact.number, other.name, other.number
                ));
            }
            let Some(f) = descriptor.field.iter().find(|f| f.name() == fact.name) else {
                problems.push(format!(
                    "{field}: {who} handles it as number {}, the descriptor has no such field",
                    fact.number
                ));
                continue;
            };
            if f.number() != fact.number as i32 {
                problems.push(format!(
                    "{field}: {who} uses number {}, the descriptor says {}",
                    fact.number,
                    f.number()
                ));
            }
            if !compatible(fact.ty, f, messages) {
                problems.push(format!(
                    "{field} (number {}): {who} handles it as {:?}, the descriptor declares {}",
                    f.number(),
                    fact.ty,
                    declared(f)
                ));
            }
        }
        for f in &descriptor.field {
            let handled = table.fields.iter().any(|fact| fact.name == f.name());
            let ignored = ignores.contains(&(msg, f.name()));
            if handled && ignored {
                problems.push(format!(
                    "{msg}.{}: {who} handles it and tests/protocol_facts.rs lists it as ignored",
                    f.name()
                ));
            } else if !handled && !ignored {
                problems.push(format!(
                    "{msg}.{} (number {}, {}) is new to {who}: handle it (and list it in the \
                     table) or list it as ignored in tests/protocol_facts.rs",
                    f.name(),
                    f.number(),
                    declared(f)
                ));
            }
        }
    }
    for (msg, field) in ignores {
        let present = tables.iter().any(|t| t.name == *msg)
            && messages
                .get(*msg)
                .is_some_and(|m| m.field.iter().any(|f| f.name() == *field));
        if !present {
            problems.push(format!(
                "{msg}.{field}: listed as ignored by {who}, but {who} has no table for \
                 {msg} or the descriptor has no such field"
            ));
        }
    }
    problems
}

fn assert_none(problems: Vec<String>) {
    assert!(
        problems.is_empty(),
        "hand-written protocol facts disagree with the proto:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn view_tables_match_the_descriptor() {
    let d = Descriptors::load();
    assert_none(check_tables(
        "the view parser",
        riskstream::view::FACTS,
        VIEW_IGNORES,
        &d.messages(),
    ));
}

#[test]
fn every_request_and_every_message_it_embeds_has_a_view_table() {
    let d = Descriptors::load();
    let tables = riskstream::view::FACTS;
    let has_table = |name: &str| tables.iter().any(|t| t.name == name);
    let mut problems = Vec::new();
    let service = d
        .set
        .file
        .iter()
        .flat_map(|f| &f.service)
        .find(|s| s.name() == "RiskScorer")
        .expect("the descriptor has RiskScorer");
    for m in &service.method {
        let input = m.input_type().trim_start_matches('.');
        if !has_table(input) {
            problems.push(format!(
                "{input}: the request of RiskScorer.{} has no view table",
                m.name()
            ));
        }
    }
    for table in tables {
        for fact in table.fields {
            if let FieldType::Message(name) | FieldType::Map(name) = fact.ty
                && !has_table(name)
            {
                problems.push(format!(
                    "{}.{}: the view reads it as {name}, which has no view table",
                    table.name, fact.name
                ));
            }
        }
    }
    assert_none(problems);
}

#[test]
fn the_manual_service_matches_the_descriptor() {
    use riskstream::server::manual::{METHODS, SERVICE};
    let d = Descriptors::load();
    let (package, name) = SERVICE.rsplit_once('.').expect("a full name");
    let service = d
        .set
        .file
        .iter()
        .filter(|f| f.package() == package)
        .flat_map(|f| &f.service)
        .find(|s| s.name() == name)
        .unwrap_or_else(|| {
            panic!("build.rs defines {SERVICE}, the descriptor has no such service")
        });
    let mut problems = Vec::new();
    for m in &service.method {
        let rpc = format!("{SERVICE}.{}", m.name());
        let Some(manual) = METHODS.iter().find(|x| x.route == m.name()) else {
            problems.push(format!(
                "{rpc} is missing from the manual server in build.rs"
            ));
            continue;
        };
        let facts = [
            (
                "input",
                manual.input,
                m.input_type().trim_start_matches('.'),
            ),
            (
                "output",
                manual.output,
                m.output_type().trim_start_matches('.'),
            ),
        ];
        for (what, built, declared) in facts {
            if built != declared {
                problems.push(format!(
                    "{rpc}: build.rs defines it with {what} {built}, the descriptor says {declared}"
                ));
            }
        }
        let streaming = [
            ("client", manual.client_streaming, m.client_streaming()),
            ("server", manual.server_streaming, m.server_streaming()),
        ];
        for (side, built, declared) in streaming {
            if built != declared {
                problems.push(format!(
                    "{rpc}: build.rs defines {side} streaming {built}, the descriptor says {declared}"
                ));
            }
        }
    }
    for (i, manual) in METHODS.iter().enumerate() {
        if !service.method.iter().any(|m| m.name() == manual.route) {
            problems.push(format!(
                "{SERVICE}.{}: build.rs defines it (as {}), the descriptor has no such RPC",
                manual.route, manual.name
            ));
        }
        if METHODS[..i]
            .iter()
            .any(|m| m.route == manual.route || m.name == manual.name)
        {
            problems.push(format!(
                "{SERVICE}.{}: build.rs defines it (or its name {}) twice",
                manual.route, manual.name
            ));
        }
    }
    assert_none(problems);
}

#[test]
fn the_metric_labels_name_every_rpc_of_our_services() {
    use riskstream::metrics::{RPCS, RpcType};
    let d = Descriptors::load();
    let mut declared = Vec::new();
    for file in d.set.file.iter().filter(|f| f.package() == "riskstream.v1") {
        for service in &file.service {
            for m in &service.method {
                let kind = match (m.client_streaming(), m.server_streaming()) {
                    (false, false) => RpcType::Unary,
                    (true, false) => RpcType::ClientStream,
                    (false, true) => RpcType::ServerStream,
                    (true, true) => RpcType::BidiStream,
                };
                declared.push((
                    format!("riskstream.v1.{}", service.name()),
                    m.name().to_owned(),
                    kind,
                ));
            }
        }
    }
    let labelled: Vec<_> = RPCS
        .iter()
        .filter(|r| r.service.starts_with("riskstream.v1."))
        .map(|r| (r.service.to_owned(), r.method.to_owned(), r.kind))
        .collect();
    assert_eq!(
        labelled, declared,
        "riskstream::metrics::RPCS must list the proto's RPCs, in order"
    );
}

#[test]
fn traffic_record_fields_match_the_descriptor() {
    let d = Descriptors::load();
    let messages = d.messages();
    let table = riskstream::traffic::record::FACTS;
    let mut problems = check_tables("the traffic writer", &[table], TRAFFIC_IGNORES, &messages);
    // The request fields are the `request` oneof: a record holds one
    // request, as a client sent it to RiskScorer.
    let record = messages[table.name];
    let oneof = record
        .oneof_decl
        .iter()
        .position(|o| o.name() == "request")
        .expect("TrafficRecord has the request oneof");
    let inputs: Vec<&str> = d
        .set
        .file
        .iter()
        .flat_map(|f| &f.service)
        .filter(|s| s.name() == "RiskScorer")
        .flat_map(|s| &s.method)
        .map(|m| m.input_type().trim_start_matches('.'))
        .collect();
    for fact in table.fields {
        let FieldType::Message(request) = fact.ty else {
            continue;
        };
        let field = record.field.iter().find(|f| f.name() == fact.name);
        if field.is_some_and(|f| f.oneof_index != Some(oneof as i32)) {
            problems.push(format!(
                "{}.{}: the traffic writer writes it as a request, it is not in the request oneof",
                table.name, fact.name
            ));
        }
        if !inputs.contains(&request) {
            problems.push(format!(
                "{}.{}: {request} is the request of no RiskScorer RPC",
                table.name, fact.name
            ));
        }
    }
    assert_none(problems);
}

/// The check itself: a table that drifted is reported with its message and
/// field.
#[test]
fn the_check_names_the_message_and_field_that_drifted() {
    use riskstream::facts::Field;
    let d = Descriptors::load();
    let messages = d.messages();
    let fields = riskstream::view::payment_event::FACTS.fields;
    let renumbered: Vec<Field> = fields
        .iter()
        .filter(|f| f.name != "metadata")
        .map(|f| match f.name {
            "amount" => Field { number: 14, ..*f },
            "off_session" => Field {
                ty: FieldType::Int64,
                ..*f
            },
            _ => *f,
        })
        .collect();
    let drifted = MessageFacts {
        name: "riskstream.v1.PaymentEvent",
        fields: renumbered.leak(),
    };
    let problems = check_tables("the view parser", &[drifted], &[], &messages);
    let all = problems.join("\n");
    assert_eq!(problems.len(), 3, "{all}");
    assert!(
        all.contains("riskstream.v1.PaymentEvent.amount: the view parser uses number 14, the descriptor says 3"),
        "{all}"
    );
    assert!(
        all.contains("riskstream.v1.PaymentEvent.off_session (number 10): the view parser handles it as Int64, the descriptor declares bool"),
        "{all}"
    );
    assert!(
        all.contains("riskstream.v1.PaymentEvent.metadata (number 12, repeated riskstream.v1.PaymentEvent.MetadataEntry) is new to the view parser"),
        "{all}"
    );
}
