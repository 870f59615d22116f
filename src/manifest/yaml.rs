//! YAML → JSON with positions.
//!
//! Parses a multi-document YAML file with serde-saphyr (duplicate keys are an error,
//! `y`/`yes`/`on` stay strings) into one `serde_json::Value` per document plus an index
//! from JSON Pointer to `line:col`, so that schema and semantic errors found on the JSON
//! can point back at the YAML that caused them.

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
    /// Every node's JSON Pointer, one after another (one allocation, not one per node).
    pointers: String,
    /// (start, end) of a pointer in `pointers`, the position of its value and of the
    /// mapping key that introduces it; sorted by pointer, so a lookup is a binary search.
    index: Vec<(u32, u32, Pos, Option<Pos>)>,
}

impl Document {
    fn pointer(&self, e: &(u32, u32, Pos, Option<Pos>)) -> &str {
        &self.pointers[e.0 as usize..e.1 as usize]
    }

    /// The entry of `pointer`, if it names a node (the last, should two nodes share one).
    fn entry(&self, pointer: &str) -> Option<&(u32, u32, Pos, Option<Pos>)> {
        let after = self.index.partition_point(|e| self.pointer(e) <= pointer);
        after
            .checked_sub(1)
            .map(|i| &self.index[i])
            .filter(|e| self.pointer(e) == pointer)
    }

    /// Where the value at `pointer` is; falls back to the nearest ancestor that has a position.
    pub fn pos_of(&self, pointer: &str) -> Pos {
        let mut p = pointer;
        loop {
            if let Some(e) = self.entry(p) {
                return e.2;
            }
            match p.rfind('/') {
                Some(i) => p = &p[..i],
                None => return self.pos,
            }
        }
    }

    /// Where the key of the member at `pointer` is (for "unknown field" errors); falls back
    /// to the value position.
    pub fn key_pos_of(&self, pointer: &str) -> Pos {
        self.entry(pointer)
            .and_then(|e| e.3)
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

/// Append one JSON Pointer segment (`~` and `/` escaped).
fn push_segment(ptr: &mut String, seg: &str) {
    ptr.push('/');
    for c in seg.chars() {
        match c {
            '~' => ptr.push_str("~0"),
            '/' => ptr.push_str("~1"),
            c => ptr.push(c),
        }
    }
}

/// Convert a node whose pointer is `ptr` (restored on return), recording its position.
fn convert(node: Spanned<Node>, key: Option<Pos>, ptr: &mut String, doc: &mut Document) -> Value {
    let start = doc.pointers.len() as u32;
    doc.pointers.push_str(ptr);
    doc.index
        .push((start, doc.pointers.len() as u32, pos(&node.referenced), key));
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
                .map(|(i, item)| {
                    let len = ptr.len();
                    {
                        use std::fmt::Write;
                        let _ = write!(ptr, "/{i}");
                    }
                    let v = convert(item, None, ptr, doc);
                    ptr.truncate(len);
                    v
                })
                .collect(),
        ),
        Node::Map(entries) => {
            let mut map = serde_json::Map::with_capacity(entries.len());
            for (key, value) in entries {
                let len = ptr.len();
                push_segment(ptr, &key.value);
                let v = convert(value, Some(pos(&key.referenced)), ptr, doc);
                ptr.truncate(len);
                map.insert(key.value, v);
            }
            Value::Object(map)
        }
    }
}

/// The parse budget of one file. The default (1,024 documents, 250,000 nodes per file)
/// guards against YAML bombs but is too small for a large organisation kept in one file
/// (2,000 staff with one RoleAssignment each); aliases and anchors keep their default limits.
const MAX_DOCUMENTS: usize = 100_000;
const MAX_NODES: usize = 5_000_000;

/// Files at least this large are parsed in pieces, one per core.
const PIECES_FROM_BYTES: usize = 1 << 20;

/// Parse every document of a YAML stream. Empty documents are skipped.
///
/// A large file is cut at its document markers (a line `---`: YAML ends any node there,
/// block scalars included) into one piece per core, parsed side by side; positions stay
/// those of the whole file. Should a piece fail, or the pieces together exceed the file's
/// budget, the whole file is parsed in one go, so errors read exactly as they would.
pub fn parse_documents(source: &str) -> Result<Vec<Document>, SyntaxError> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pieces = pieces(source, cores.min(4));
    if pieces.len() > 1 {
        let parsed: Vec<Result<Vec<Document>, SyntaxError>> = std::thread::scope(|s| {
            let handles: Vec<_> = pieces
                .iter()
                .map(|&(text, line)| {
                    std::thread::Builder::new()
                        .stack_size(8 << 20)
                        .spawn_scoped(s, move || parse_piece(text, line))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| match h.map(|h| h.join()) {
                    Ok(Ok(r)) => r,
                    _ => Err(SyntaxError {
                        message: "could not parse in pieces".into(),
                        pos: None,
                    }),
                })
                .collect()
        });
        if let Ok(parsed) = parsed.into_iter().collect::<Result<Vec<_>, _>>() {
            let docs: Vec<Document> = parsed.into_iter().flatten().collect();
            let nodes: usize = docs.iter().map(|d| d.index.len()).sum();
            if docs.len() <= MAX_DOCUMENTS && nodes <= MAX_NODES {
                return Ok(docs);
            }
        }
    }
    parse_piece(source, 0)
}

/// `source` cut into up to `n` pieces of about equal size, each (but the first) starting
/// at a line `---`, with the number of lines before it. One piece for small files and for
/// files with directives (`%YAML`: they belong to the document after them).
fn pieces(source: &str, n: usize) -> Vec<(&str, u64)> {
    if n < 2
        || source.len() < PIECES_FROM_BYTES
        || source.starts_with('%')
        || source.contains("\n%")
    {
        return vec![(source, 0)];
    }
    let mut out = Vec::new();
    let (mut start, mut start_line) = (0usize, 0u64);
    let (mut at, mut line) = (0usize, 0u64);
    for l in source.split_inclusive('\n') {
        let next = start + (source.len() - start) / (n - out.len());
        if at >= next && out.len() + 1 < n && l.trim_end_matches(['\n', '\r', ' ', '\t']) == "---" {
            out.push((&source[start..at], start_line));
            (start, start_line) = (at, line);
        }
        at += l.len();
        line += 1;
    }
    out.push((&source[start..], start_line));
    out
}

/// Parse one piece whose first line is line `line + 1` of the file.
fn parse_piece(source: &str, line: u64) -> Result<Vec<Document>, SyntaxError> {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_documents = MAX_DOCUMENTS;
    budget.max_nodes = MAX_NODES;
    budget.max_events = 4 * MAX_NODES;
    let options = serde_saphyr::options! {
        strict_booleans: true,
        with_snippet: false,
        budget: Some(budget),
    };
    let shift = |mut p: Pos| {
        p.line += line;
        p
    };
    let nodes: Vec<Spanned<Node>> = serde_saphyr::from_multiple_with_options(source, options)
        .map_err(|e| SyntaxError {
            pos: e.location().map(|l| shift(pos(&l))),
            message: first_line(&e.to_string()),
        })?;
    Ok(nodes
        .into_iter()
        .filter(|n| !matches!(n.value, Node::Null))
        .map(|node| {
            let mut doc = Document {
                value: Value::Null,
                pos: shift(pos(&node.referenced)),
                pointers: String::new(),
                index: Vec::new(),
            };
            doc.value = convert(node, None, &mut String::new(), &mut doc);
            let Document {
                pointers, index, ..
            } = &mut doc;
            // stable: of two nodes with one pointer (keys `1` and "1"), the later stays last
            index.sort_by(|a, b| {
                pointers[a.0 as usize..a.1 as usize].cmp(&pointers[b.0 as usize..b.1 as usize])
            });
            if line > 0 {
                for e in index.iter_mut() {
                    e.2 = shift(e.2);
                    e.3 = e.3.map(shift);
                }
            }
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
    fn a_large_file_parsed_in_pieces_reads_as_it_would_whole() {
        let doc = |i: usize| {
            format!(
                "kind: RoleAssignment\nmetadata:\n  name: s{i}\nspec:\n  roles: [md, rn]\n  note: |\n    line {i}\n"
            )
        };
        let src = format!(
            "# a comment\n{}",
            (0..20_000).map(doc).collect::<Vec<_>>().join("---\n")
        );
        assert!(src.len() > PIECES_FROM_BYTES);
        let cut = pieces(&src, 2);
        assert_eq!(cut.len(), 2);
        assert!(cut[1].0.starts_with("---\n") && cut[1].1 > 0);
        let whole = parse_piece(&src, 0).unwrap();
        let split: Vec<Document> = cut
            .iter()
            .flat_map(|&(text, line)| parse_piece(text, line).unwrap())
            .collect();
        assert_eq!(whole.len(), 20_000);
        assert_eq!(split.len(), whole.len());
        let entries = |d: &Document| -> Vec<(String, Pos, Option<Pos>)> {
            d.index
                .iter()
                .map(|e| (d.pointer(e).to_owned(), e.2, e.3))
                .collect()
        };
        for (a, b) in whole.iter().zip(&split) {
            assert_eq!((&a.value, a.pos), (&b.value, b.pos));
            assert_eq!(entries(a), entries(b));
        }
        let last = split.last().unwrap();
        assert_eq!(
            last.pos_of("/metadata/name").line,
            7 * 19_999 + 2 + 19_999 + 2
        );
        assert_eq!(parse_documents(&src).unwrap().len(), 20_000);
        // a directive keeps the file in one piece
        assert_eq!(pieces(&format!("%YAML 1.2\n---\n{src}"), 2).len(), 1);
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
