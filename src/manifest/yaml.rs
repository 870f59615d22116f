//! YAML → JSON with positions.
//!
//! Parses a multi-document YAML file with serde-saphyr (duplicate keys are an error,
//! `y`/`yes`/`on` stay strings) into one `serde_json::Value` per document plus an index
//! from JSON Pointer to `line:col`, so that schema and semantic errors found on the JSON
//! can point back at the YAML that caused them.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use serde_saphyr::Spanned;

/// A YAML node whose children carry their own positions.
#[derive(Debug)]
enum Node {
    Null,
    Bool(bool),
    I64(i64),
    U64(u64),
    F64(f64),
    Str(String),
    Seq(Vec<Spanned<Node>>),
    Map(Vec<(Spanned<String>, Spanned<Node>)>),
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_none<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        Node::deserialize(d)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
        Ok(Node::I64(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
        Ok(Node::U64(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
        Ok(Node::F64(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Str(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Node, E> {
        Ok(Node::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Node>>()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<KeyString>>()? {
            let value = map.next_value::<Spanned<Node>>()?;
            entries.push((
                Spanned::new(key.value.0, key.referenced, key.defined),
                value,
            ));
        }
        Ok(Node::Map(entries))
    }
}

/// Mapping keys are read as text whatever their YAML type (`1: x` has key "1").
struct KeyString(String);

impl<'de> Deserialize<'de> for KeyString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = KeyString;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a scalar mapping key")
            }
            fn visit_str<E>(self, v: &str) -> Result<KeyString, E> {
                Ok(KeyString(v.to_owned()))
            }
            fn visit_bool<E>(self, v: bool) -> Result<KeyString, E> {
                Ok(KeyString(v.to_string()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<KeyString, E> {
                Ok(KeyString(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<KeyString, E> {
                Ok(KeyString(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<KeyString, E> {
                Ok(KeyString(v.to_string()))
            }
            fn visit_unit<E: de::Error>(self) -> Result<KeyString, E> {
                Ok(KeyString("null".into()))
            }
        }
        d.deserialize_any(V)
    }
}

/// A line and column, 1-based, as editors show them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    pub line: u64,
    pub col: u64,
}

/// One YAML document converted to JSON, with where each node (and each mapping key) sits.
#[derive(Debug)]
pub struct Document {
    pub value: Value,
    /// Position of the document's root node.
    pub pos: Pos,
    /// JSON Pointer → position of the value.
    values: BTreeMap<String, Pos>,
    /// JSON Pointer → position of the mapping key that introduces the value.
    keys: BTreeMap<String, Pos>,
}

impl Document {
    /// Where the value at `pointer` is; falls back to the nearest ancestor that has a position.
    pub fn pos_of(&self, pointer: &str) -> Pos {
        let mut p = pointer.to_owned();
        loop {
            if let Some(pos) = self.values.get(&p) {
                return *pos;
            }
            match p.rfind('/') {
                Some(i) => p.truncate(i),
                None => return self.pos,
            }
        }
    }

    /// Where the key of the member at `pointer` is (for "unknown field" errors); falls back
    /// to the value position.
    pub fn key_pos_of(&self, pointer: &str) -> Pos {
        self.keys
            .get(pointer)
            .copied()
            .unwrap_or_else(|| self.pos_of(pointer))
    }
}

/// A YAML syntax error with its position, when the parser knows it.
#[derive(Debug)]
pub struct SyntaxError {
    pub message: String,
    pub pos: Option<Pos>,
}

fn pos(loc: &serde_saphyr::Location) -> Pos {
    Pos {
        line: loc.line(),
        col: loc.column(),
    }
}

fn escape(seg: &str) -> String {
    seg.replace('~', "~0").replace('/', "~1")
}

fn convert(node: Spanned<Node>, ptr: &str, doc: &mut Document) -> Value {
    doc.values.insert(ptr.to_owned(), pos(&node.referenced));
    match node.value {
        Node::Null => Value::Null,
        Node::Bool(b) => Value::Bool(b),
        Node::I64(i) => Value::from(i),
        Node::U64(u) => Value::from(u),
        Node::F64(f) => serde_json::Number::from_f64(f)
            .map(Value::Number)
            .unwrap_or(Value::Null),
        Node::Str(s) => Value::String(s),
        Node::Seq(items) => Value::Array(
            items
                .into_iter()
                .enumerate()
                .map(|(i, item)| convert(item, &format!("{ptr}/{i}"), doc))
                .collect(),
        ),
        Node::Map(entries) => {
            let mut map = serde_json::Map::new();
            for (key, value) in entries {
                let child = format!("{ptr}/{}", escape(&key.value));
                doc.keys.insert(child.clone(), pos(&key.referenced));
                let v = convert(value, &child, doc);
                map.insert(key.value, v);
            }
            Value::Object(map)
        }
    }
}

/// Parse every document of a YAML stream. Empty documents are skipped.
pub fn parse_documents(source: &str) -> Result<Vec<Document>, SyntaxError> {
    // The default budget (1,024 documents, 250,000 nodes per file) guards against YAML
    // bombs but is too small for a large organisation kept in one file (2,000 staff with
    // one RoleAssignment each); aliases and anchors keep their default limits.
    let mut budget = serde_saphyr::Budget::default();
    budget.max_documents = 100_000;
    budget.max_nodes = 5_000_000;
    budget.max_events = 20_000_000;
    let options = serde_saphyr::options! {
        strict_booleans: true,
        with_snippet: false,
        budget: Some(budget),
    };
    let nodes: Vec<Spanned<Node>> = serde_saphyr::from_multiple_with_options(source, options)
        .map_err(|e| SyntaxError {
            pos: e.location().map(|l| pos(&l)),
            message: first_line(&e.to_string()),
        })?;
    Ok(nodes
        .into_iter()
        .filter(|n| !matches!(n.value, Node::Null))
        .map(|node| {
            let mut doc = Document {
                value: Value::Null,
                pos: pos(&node.referenced),
                values: BTreeMap::new(),
                keys: BTreeMap::new(),
            };
            doc.value = convert(node, "", &mut doc);
            doc
        })
        .collect())
}

/// The parser's message without its position (careplane prints its own) and without
/// advice meant for programmers embedding the parser.
fn first_line(s: &str) -> String {
    let mut m = s.lines().next().unwrap_or(s).trim().to_owned();
    if let Some(i) = m.find(", set DuplicateKeyPolicy") {
        m.truncate(i);
    }
    if let Some(i) = m.rfind(" at line ") {
        m.truncate(i);
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_absolute_across_documents() {
        let src = "a: 1\n---\nkind: Team\nspec:\n  members:\n    - npi: \"1\"\n    - id: x\n";
        let docs = parse_documents(src).unwrap();
        assert_eq!(docs.len(), 2);
        let d = &docs[1];
        assert_eq!(d.pos_of("/kind"), Pos { line: 3, col: 7 });
        assert_eq!(d.pos_of("/spec/members/1/id"), Pos { line: 7, col: 11 });
        assert_eq!(d.key_pos_of("/spec/members"), Pos { line: 5, col: 3 });
        // an unknown pointer falls back to its nearest known ancestor
        assert_eq!(d.pos_of("/spec/members/1/nope"), Pos { line: 7, col: 7 });
    }

    #[test]
    fn duplicate_keys_are_rejected_with_a_position() {
        let err = parse_documents("kind: Team\nkind: Role\n").unwrap_err();
        assert!(err.message.contains("duplicate"), "{}", err.message);
        assert_eq!(err.pos.map(|p| p.line), Some(2));
    }

    #[test]
    fn a_large_organisation_fits_in_one_file() {
        let doc = "apiVersion: careplane.dev/v1\nkind: Role\nmetadata:\n  name: r\n";
        let src = vec![doc; 3000].join("---\n");
        assert_eq!(parse_documents(&src).unwrap().len(), 3000);
    }

    #[test]
    fn yes_stays_a_string() {
        let docs = parse_documents("flag: yes\n").unwrap();
        assert_eq!(docs[0].value["flag"], Value::String("yes".into()));
    }
}
