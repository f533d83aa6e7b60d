//! A TOML document as a tree that keeps the byte span of every key and value.
//!
//! It is read through serde the way `toml::Spanned` is: a value asks for the
//! span-carrying struct, and keys and values that toml gives no span for (the
//! inner keys of dotted keys, for example) fall back to the span of the
//! enclosing value, so every error still has a position.

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::fmt;
use std::ops::Range;

// The names toml's deserializer recognises for `toml::Spanned` (serde_spanned
// 0.6, used by toml 0.8) and for datetimes.
const SPANNED: &str = "$__serde_spanned_private_Spanned";
const START: &str = "$__serde_spanned_private_start";
const END: &str = "$__serde_spanned_private_end";
const VALUE: &str = "$__serde_spanned_private_value";
const FIELDS: &[&str] = &[START, END, VALUE];
const DATETIME: &str = "$__toml_private_datetime";
const UNKNOWN: Range<usize> = usize::MAX..usize::MAX;

pub(super) struct Node {
    pub span: Range<usize>,
    pub kind: Kind,
}

pub(super) enum Kind {
    Str(String),
    Int(i64),
    Float,
    Bool,
    Datetime,
    Array(Vec<Node>),
    Table(Vec<Entry>),
}

pub(super) struct Entry {
    pub key: String,
    pub key_span: Range<usize>,
    pub value: Node,
}

impl Kind {
    /// "a string", "an integer", ... for messages.
    pub fn describe(&self) -> &'static str {
        match self {
            Kind::Str(_) => "a string",
            Kind::Int(_) => "an integer",
            Kind::Float => "a float",
            Kind::Bool => "a boolean",
            Kind::Datetime => "a date/time",
            Kind::Array(_) => "a list",
            Kind::Table(_) => "a table",
        }
    }
}

impl Node {
    /// Parses a document; the root spans the whole text.
    pub fn parse(text: &str) -> Result<Node, toml::de::Error> {
        let kind = toml::from_str::<Kind>(text)?;
        let mut root = Node { span: 0..0, kind };
        root.fill(&(0..0));
        Ok(root)
    }

    /// Gives spans toml did not provide the span of the enclosing value.
    fn fill(&mut self, parent: &Range<usize>) {
        if self.span == UNKNOWN {
            self.span = parent.clone();
        }
        match &mut self.kind {
            Kind::Array(items) => {
                for item in items {
                    item.fill(&self.span);
                }
            }
            Kind::Table(entries) => {
                for entry in entries {
                    entry.value.fill(&self.span);
                    if entry.key_span == UNKNOWN {
                        entry.key_span = entry.value.span.clone();
                    }
                }
            }
            _ => {}
        }
    }
}

struct Key {
    name: String,
    span: Range<usize>,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Key, D::Error> {
        d.deserialize_struct(SPANNED, FIELDS, KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
        Ok(Key {
            name: v.to_owned(),
            span: UNKNOWN,
        })
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Key, A::Error> {
        expect_key(&mut map, START)?;
        let (span, name) = spanned_rest::<A, String>(&mut map)?;
        Ok(Key { name, span })
    }
}

fn expect_key<'de, A: MapAccess<'de>>(map: &mut A, name: &str) -> Result<(), A::Error> {
    match map.next_key::<String>()? {
        Some(key) if key == name => Ok(()),
        _ => Err(de::Error::custom("malformed spanned value")),
    }
}

/// The rest of a spanned value whose start key has been read.
fn spanned_rest<'de, A: MapAccess<'de>, T: Deserialize<'de>>(
    map: &mut A,
) -> Result<(Range<usize>, T), A::Error> {
    let start: usize = map.next_value()?;
    expect_key(map, END)?;
    let end: usize = map.next_value()?;
    expect_key(map, VALUE)?;
    let value: T = map.next_value()?;
    Ok((start..end, value))
}

/// A table whose first key has been read.
fn table_rest<'de, A: MapAccess<'de>>(first: Option<Key>, map: &mut A) -> Result<Kind, A::Error> {
    if first
        .as_ref()
        .is_some_and(|k| k.name == DATETIME && k.span == UNKNOWN)
    {
        map.next_value::<IgnoredAny>()?;
        return Ok(Kind::Datetime);
    }
    let mut entries = Vec::new();
    let mut next = first;
    while let Some(key) = next {
        let value = map.next_value::<Node>()?;
        entries.push(Entry {
            key: key.name,
            key_span: key.span,
            value,
        });
        next = map.next_key::<Key>()?;
    }
    Ok(Kind::Table(entries))
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Node, D::Error> {
        d.deserialize_struct(SPANNED, FIELDS, NodeVisitor)
    }
}

impl<'de> Deserialize<'de> for Kind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Kind, D::Error> {
        d.deserialize_any(KindVisitor)
    }
}

fn unspanned(kind: Kind) -> Node {
    Node {
        span: UNKNOWN,
        kind,
    }
}

/// A value that toml may or may not wrap in its span.
struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a TOML value")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
        KindVisitor.visit_str(v).map(unspanned)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
        KindVisitor.visit_i64(v).map(unspanned)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        KindVisitor.visit_u64(v).map(unspanned)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
        KindVisitor.visit_f64(v).map(unspanned)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
        KindVisitor.visit_bool(v).map(unspanned)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Node, A::Error> {
        KindVisitor.visit_seq(seq).map(unspanned)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let first = map.next_key::<Key>()?;
        if first
            .as_ref()
            .is_some_and(|k| k.name == START && k.span == UNKNOWN)
        {
            let (span, kind) = spanned_rest::<A, Kind>(&mut map)?;
            return Ok(Node { span, kind });
        }
        table_rest(first, &mut map).map(unspanned)
    }
}

/// A value, without its span.
struct KindVisitor;

impl<'de> Visitor<'de> for KindVisitor {
    type Value = Kind;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a TOML value")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Kind, E> {
        Ok(Kind::Str(v.to_owned()))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Kind, E> {
        Ok(Kind::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Kind, E> {
        Ok(Kind::Int(i64::try_from(v).unwrap_or(i64::MAX)))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Kind, E> {
        Ok(Kind::Float)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Kind, E> {
        Ok(Kind::Bool)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Kind, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Node>()? {
            items.push(item);
        }
        Ok(Kind::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Kind, A::Error> {
        let first = map.next_key::<Key>()?;
        table_rest(first, &mut map)
    }
}
