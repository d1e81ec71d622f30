//! What an operator's session browser may see of a session: [`SessionInfo`] (version,
//! times, attribute names, sizes and kinds; values only for the attributes the caller
//! names). Built from the copy a node holds, found by its [`LogId`]; the id itself never
//! leaves this process through it.

use std::fmt::{self, Write as _};
use std::time::{Duration, SystemTime};

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::data::SessionData;
use crate::id::{LogId, SessionId};
use crate::listener::from_unix_ms;

/// The longest text a shown value is cut to (characters).
const MAX_SHOWN: usize = 2_000;
/// How deep a shown value's arrays and maps are rendered.
const MAX_DEPTH: usize = 8;

/// One session as a node holds it, for an operator (see
/// [`SessionManager::browse`](crate::SessionManager::browse)).
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionInfo {
    id: SessionId,
    /// The session's log hash (the only form of its id shown to people).
    pub log_id: LogId,
    /// The version held here (it grows with every committed change).
    pub version: u64,
    /// When it was created.
    pub created: SystemTime,
    /// Its last access known here (other nodes' accesses arrive in batches).
    pub last_accessed: SystemTime,
    /// Its idle timeout.
    pub max_inactive: Duration,
    /// The route it is bound to.
    pub route: String,
    /// Whether this node is its primary (Delta: always).
    pub primary_here: bool,
    /// Its attributes, in the order they were first set.
    pub attributes: Vec<AttributeInfo>,
}

impl SessionInfo {
    /// The session's id, to act on it in this process (such as
    /// [`SessionManager::get`](crate::SessionManager::get) and
    /// [`SessionHandle::invalidate`](crate::SessionHandle::invalidate)). Never show or log it: its
    /// `Display` is the secret a cookie carries; show [`SessionInfo::log_id`] instead.
    pub fn id(&self) -> SessionId {
        self.id
    }
}

/// Debug shows the log hash, never the id.
impl fmt::Debug for SessionInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionInfo")
            .field("log_id", &self.log_id)
            .field("version", &self.version)
            .field("created", &self.created)
            .field("last_accessed", &self.last_accessed)
            .field("max_inactive", &self.max_inactive)
            .field("route", &self.route)
            .field("primary_here", &self.primary_here)
            .field("attributes", &self.attributes)
            .finish()
    }
}

/// One attribute of a [`SessionInfo`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AttributeInfo {
    /// Its name.
    pub name: String,
    /// Its encoded size in bytes (MessagePack, as stored and replicated).
    pub len: usize,
    /// What its encoded value is.
    pub kind: ValueKind,
    /// Its value as text (JSON-like, cut to 2,000 characters), only when the caller
    /// asked for this attribute's value; `None` otherwise.
    pub value: Option<String>,
}

/// The kind of an attribute's stored value: the MessagePack type it was encoded as
/// (Rust's type names are not stored), or [`ValueKind::Bytes`] when it is not
/// MessagePack this build can read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ValueKind {
    /// `nil` (`None`, `()`).
    Nil,
    /// A boolean.
    Bool,
    /// An integer.
    Integer,
    /// A floating-point number.
    Float,
    /// A UTF-8 string.
    String,
    /// A byte string.
    Binary,
    /// An array (a `Vec`, a tuple, or a struct encoded as an array, serde's default).
    Array,
    /// A map (a `HashMap`, or a struct encoded with field names).
    Map,
    /// Not a value this build can read as MessagePack: shown as opaque bytes.
    Bytes,
}

impl ValueKind {
    /// The kind's name, for people: `integer`, `string`, … and `bytes`.
    pub fn name(self) -> &'static str {
        match self {
            ValueKind::Nil => "nil",
            ValueKind::Bool => "bool",
            ValueKind::Integer => "integer",
            ValueKind::Float => "float",
            ValueKind::String => "string",
            ValueKind::Binary => "binary",
            ValueKind::Array => "array",
            ValueKind::Map => "map",
            ValueKind::Bytes => "bytes",
        }
    }
}

impl fmt::Display for ValueKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A held session, described; values only of the attributes `show_value` accepts.
pub(crate) fn describe(data: &SessionData, primary_here: bool, show_value: &dyn Fn(&str) -> bool) -> SessionInfo {
    SessionInfo {
        id: data.id,
        log_id: data.id.log_id(),
        version: data.version,
        created: from_unix_ms(data.created_ms),
        last_accessed: from_unix_ms(data.last_access_ms),
        max_inactive: Duration::from_millis(data.max_inactive_ms),
        route: data.route.to_string(),
        primary_here,
        attributes: data
            .attrs
            .iter()
            .filter_map(|a| {
                let bytes = a.value.as_ref()?;
                let (kind, text) = match rmp_serde::from_slice::<Shown>(&bytes.0) {
                    Ok(s) => (s.kind, s.text),
                    Err(_) => (ValueKind::Bytes, hex(&bytes.0)),
                };
                Some(AttributeInfo {
                    name: a.name.to_string(),
                    len: bytes.0.len(),
                    kind,
                    value: show_value(&a.name).then(|| cut(text)),
                })
            })
            .collect(),
    }
}

fn cut(mut text: String) -> String {
    if let Some((i, _)) = text.char_indices().nth(MAX_SHOWN) {
        text.truncate(i);
        text.push('…');
    }
    text
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len().min(MAX_SHOWN) * 2 + 2);
    s.push_str("0x");
    for b in bytes.iter().take(MAX_SHOWN / 2) {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// A decoded value as text, with its kind: any MessagePack value, rendered as
/// JSON-like text (strings quoted), bounded in depth and length.
struct Shown {
    kind: ValueKind,
    text: String,
}

impl<'de> Deserialize<'de> for Shown {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ShownVisitor { depth: 0 })
    }
}

struct ShownVisitor {
    depth: usize,
}

/// A nested value (the visitor one level deeper).
struct Nested(Shown);

struct NestedSeed {
    depth: usize,
}

impl<'de> de::DeserializeSeed<'de> for NestedSeed {
    type Value = Nested;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Nested, D::Error> {
        if self.depth > MAX_DEPTH {
            return Err(de::Error::custom("nested too deeply to show"));
        }
        d.deserialize_any(ShownVisitor { depth: self.depth }).map(Nested)
    }
}

fn shown(kind: ValueKind, text: impl Into<String>) -> Shown {
    Shown {
        kind,
        text: text.into(),
    }
}

impl<'de> Visitor<'de> for ShownVisitor {
    type Value = Shown;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any MessagePack value")
    }
    fn visit_unit<E>(self) -> Result<Shown, E> {
        Ok(shown(ValueKind::Nil, "null"))
    }
    fn visit_none<E>(self) -> Result<Shown, E> {
        Ok(shown(ValueKind::Nil, "null"))
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Shown, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Shown, E> {
        Ok(shown(ValueKind::Bool, v.to_string()))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Shown, E> {
        Ok(shown(ValueKind::Integer, v.to_string()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Shown, E> {
        Ok(shown(ValueKind::Integer, v.to_string()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Shown, E> {
        Ok(shown(ValueKind::Float, v.to_string()))
    }
    fn visit_str<E>(self, v: &str) -> Result<Shown, E> {
        Ok(shown(ValueKind::String, format!("{v:?}")))
    }
    fn visit_bytes<E>(self, v: &[u8]) -> Result<Shown, E> {
        Ok(shown(ValueKind::Binary, hex(v)))
    }
    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Shown, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Shown, A::Error> {
        let mut text = String::from("[");
        let mut first = true;
        while let Some(Nested(item)) = seq.next_element_seed(NestedSeed { depth: self.depth + 1 })? {
            if text.len() <= MAX_SHOWN {
                if !first {
                    text.push_str(", ");
                }
                text.push_str(&item.text);
            }
            first = false;
        }
        text.push(']');
        Ok(shown(ValueKind::Array, text))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Shown, A::Error> {
        let mut text = String::from("{");
        let mut first = true;
        while let Some(Nested(k)) = map.next_key_seed(NestedSeed { depth: self.depth + 1 })? {
            let Nested(v) = map.next_value_seed(NestedSeed { depth: self.depth + 1 })?;
            if text.len() <= MAX_SHOWN {
                if !first {
                    text.push_str(", ");
                }
                let _ = write!(text, "{}: {}", k.text, v.text);
            }
            first = false;
        }
        text.push('}');
        Ok(shown(ValueKind::Map, text))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use super::*;
    use crate::data::{Blob, Stamp};

    fn session(attrs: &[(&str, Vec<u8>)]) -> SessionData {
        let mut d = SessionData::new(SessionId::generate(&mut rand::rng()), Arc::from("a"), 1_000, 60_000);
        for (i, (name, bytes)) in attrs.iter().enumerate() {
            d.write_attr(
                name,
                Some(Blob(bytes.clone().into())),
                Stamp {
                    version: i as u64 + 1,
                    writer: 1,
                },
            );
        }
        d
    }

    #[derive(serde::Serialize)]
    struct User {
        name: String,
        admin: bool,
    }

    #[test]
    fn kinds_sizes_and_only_the_values_asked_for() {
        let mut map = BTreeMap::new();
        map.insert("x", 1.5f64);
        let user = User {
            name: "ann".into(),
            admin: false,
        };
        let d = session(&[
            ("count", rmp_serde::to_vec(&7u64).unwrap()),
            ("name", rmp_serde::to_vec("bob").unwrap()),
            ("user", rmp_serde::to_vec(&user).unwrap()),
            ("named", rmp_serde::to_vec_named(&user).unwrap()),
            ("map", rmp_serde::to_vec(&map).unwrap()),
            ("none", rmp_serde::to_vec(&Option::<u8>::None).unwrap()),
            ("raw", vec![0xc1, 0xff]),
        ]);
        let info = describe(&d, true, &|n| n != "name");
        assert_eq!(info.log_id, d.id.log_id());
        assert_eq!(info.id(), d.id);
        let got: Vec<(&str, ValueKind, Option<&str>)> = info
            .attributes
            .iter()
            .map(|a| (a.name.as_str(), a.kind, a.value.as_deref()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("count", ValueKind::Integer, Some("7")),
                ("name", ValueKind::String, None),
                ("user", ValueKind::Array, Some("[\"ann\", false]")),
                ("named", ValueKind::Map, Some("{\"name\": \"ann\", \"admin\": false}")),
                ("map", ValueKind::Map, Some("{\"x\": 1.5}")),
                ("none", ValueKind::Nil, Some("null")),
                ("raw", ValueKind::Bytes, Some("0xc1ff")),
            ]
        );
        assert_eq!(info.attributes[0].len, 1);
        assert_eq!(info.attributes[1].len, 4);
        let debug = format!("{info:?}");
        assert!(!debug.contains(&d.id.to_string()), "Debug never shows the id: {debug}");
    }

    #[test]
    fn long_and_deep_values_are_bounded() {
        let long = "x".repeat(10_000);
        let mut deep = rmp_serde::to_vec(&1u8).unwrap();
        for _ in 0..100 {
            let mut v = vec![0x91]; // fixarray of one
            v.extend(deep);
            deep = v;
        }
        let d = session(&[("long", rmp_serde::to_vec(&long).unwrap()), ("deep", deep)]);
        let info = describe(&d, true, &|_| true);
        let shown = info.attributes[0].value.as_deref().unwrap();
        assert_eq!(shown.chars().count(), MAX_SHOWN + 1, "cut, with an ellipsis");
        assert_eq!(info.attributes[1].kind, ValueKind::Bytes, "too deep to show: opaque");
    }
}
