//! Protocol facts that the code restates by hand, as data: the field tables
//! of the view parser (`view`), the fields the traffic writer encodes itself
//! (`traffic`) and the methods of the manual server definition in `build.rs`
//! (`server::manual`). `tests/protocol_facts.rs` holds each table against
//! the compiled descriptor set (`proto::FILE_DESCRIPTOR_SET`), so a proto
//! change that one of them misses fails.

/// How hand-written code reads or writes a field: its protobuf type, as far
/// as the encoding goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    /// `string`, read as its bytes (length-delimited).
    String,
    /// `int64`: a varint, two's complement.
    Int64,
    /// `int32`: the low 32 bits of a varint.
    Int32,
    /// `uint32`: a varint.
    Uint32,
    /// `bool`: a varint, non-zero is true.
    Bool,
    /// `double`: eight bytes, little-endian.
    Double,
    /// An enum of the named type (full name), read as an `int32`.
    Enum(&'static str),
    /// A singular embedded message of the named type (full name); repeated
    /// occurrences merge.
    Message(&'static str),
    /// A `map` field whose entries are messages of the named type (full
    /// name, e.g. `riskstream.v1.PaymentEvent.MetadataEntry`).
    Map(&'static str),
}

/// One field that hand-written code knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    /// Its name in the proto.
    pub name: &'static str,
    /// Its field number.
    pub number: u32,
    /// How it is read or written.
    pub ty: FieldType,
}

/// The fields of one message that hand-written code reads or writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageFacts {
    /// The message's full name, e.g. `riskstream.v1.Session`.
    pub name: &'static str,
    /// The fields the code handles; every other field of the message is
    /// skipped (or, for a writer, never written).
    pub fields: &'static [Field],
}

/// One RPC of a service definition written by hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Method {
    /// The generated trait's method, e.g. `score_stream`.
    pub name: &'static str,
    /// The RPC's name in the proto, the last part of its path, e.g. `ScoreStream`.
    pub route: &'static str,
    /// The request message's full name.
    pub input: &'static str,
    /// The response message's full name.
    pub output: &'static str,
    /// The client sends a stream of requests.
    pub client_streaming: bool,
    /// The server answers with a stream of responses.
    pub server_streaming: bool,
}

/// Declares a module holding the field numbers of one message as named
/// constants (for the match arms of a parser or the keys of a writer) and
/// `FACTS`, the [`MessageFacts`] table listing them:
///
/// ```ignore
/// message_facts! {
///     /// `riskstream.v1.Customer`.
///     customer "riskstream.v1.Customer" {
///         ID = 1, "id", String;
///         EMAIL = 2, "email", String;
///     }
/// }
/// ```
macro_rules! message_facts {
    (
        $(#[$attr:meta])*
        $module:ident $message:literal {
            $($konst:ident = $number:literal, $name:literal, $ty:ident $(($arg:literal))?;)*
        }
    ) => {
        $(#[$attr])*
        #[doc(hidden)]
        pub mod $module {
            $(
                #[doc = concat!("Field number of `", $name, "`.")]
                pub const $konst: u32 = $number;
            )*
            /// The table of the constants above.
            pub const FACTS: $crate::facts::MessageFacts = $crate::facts::MessageFacts {
                name: $message,
                fields: &[$($crate::facts::Field {
                    name: $name,
                    number: $konst,
                    ty: $crate::facts::FieldType::$ty $(($arg))?,
                }),*],
            };
        }
    };
}
pub(crate) use message_facts;
