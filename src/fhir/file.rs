//! The embedded default target: a directory of NDJSON files, one per resource type
//! (`Practitioner.ndjson`, `Group.ndjson`, …), the layout FHIR Bulk Data export writes.
//!
//! It keeps `meta.versionId` (a counter) and `meta.lastUpdated` like a server, checks
//! preconditions the same way, and supports the few search parameters careplane sends
//! (`_id`, `_tag`, `identifier`, `type`, `url`); any other parameter is an error rather than
//! a silently wrong answer.
//!
//! # Several careplane processes on one store
//!
//! - **Lock.** Writers hold an exclusive advisory lock (`flock` on Unix, `LockFileEx` on
//!   Windows, through `std::fs::File::lock`) on [`LOCK_FILE`] in the store directory. The
//!   operating system drops it when the process ends, so a killed careplane never leaves
//!   the store locked. The lock file itself is never removed (removing it would let two
//!   processes lock two different files).
//! - **Writer sessions.** An apply plans from what it read and then writes with
//!   preconditions, so two applies interleaved write by write would refuse each other's
//!   writes. `apply`, `import` and each `watch` pass therefore call
//!   [`FileStore::begin_session`] before they read and keep the lock until their last
//!   write ([`FileStore::end_session`], or when the store is dropped): a second apply waits
//!   for the first (its caller is told once, so the CLI can say so on stderr) and then plans
//!   from what the first one wrote. After [`FileStore::lock_timeout`] (default
//!   [`DEFAULT_LOCK_TIMEOUT`]; `CAREPLANE_LOCK_TIMEOUT` in seconds, read by `target.rs`) it
//!   gives up with [`FhirError::StoreLocked`]; a timeout of 0 never waits. A write outside
//!   a session (library use, tests) takes the lock for that one read-modify-write.
//! - **Atomic replacement.** Every write produces a whole new file: a temporary file unique
//!   to the process and the write (`.<Type>.ndjson.<pid>.<counter>.<random>.tmp`, created
//!   with `create_new` in the store directory), written, `fsync`ed, renamed over
//!   `<Type>.ndjson`, then the directory is `fsync`ed so the rename survives a crash.
//! - **Reads take no lock.** A reader opens `<Type>.ndjson` and gets either the inode
//!   before a rename or the one after, each complete, because writers never modify a data
//!   file in place. So `plan`, `drift` and `export` never wait for a long apply (or one
//!   waiting at its confirmation prompt) and never see a torn file. Across files they see
//!   no snapshot, exactly like a server: an apply re-checks every precondition under the
//!   lock and refuses a write whose object changed since its plan.
//! - **Stale temporary files** (from a process killed between write and rename) are never
//!   read, since only `<Type>.ndjson` is, and are removed the next time a writer takes the
//!   lock: while it holds it, no other careplane can be mid-write.
//!
//! A line that is not JSON (edited by hand, or written by another program) is still
//! reported with its file and line; careplane's own writes can no longer produce one.

use std::collections::HashMap;
use std::fs::{File, OpenOptions, TryLockError};
use std::hash::{BuildHasher, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;

use super::{FhirError, Precondition, Query, Written, resource_type};

/// The lock file writers hold, in the store directory.
pub const LOCK_FILE: &str = ".careplane.lock";
/// How long a writer waits for another process's lock before giving up.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(120);
/// How often a waiting writer tries the lock again.
const LOCK_POLL: Duration = Duration::from_millis(20);

pub struct FileStore {
    dir: PathBuf,
    /// One operation at a time in this process; holds the writer session (its locked
    /// file and the resource types it has written, in memory).
    lock: Mutex<Option<Session>>,
    lock_timeout: Duration,
    ops: AtomicU64,
    counter: AtomicU64,
}

/// An open writer session: the locked file, and every resource type the session has
/// written so far (loaded once, changed in memory, written back by `end_session`).
struct Session {
    _lock: File,
    tables: HashMap<String, Table>,
}

/// One resource type in memory: each row as its NDJSON text, in file order (a deleted
/// row leaves `None` so the positions in the indexes stay valid), an index by id and
/// one by `identifier` (`system|value`).
///
/// A row is parsed only when it is read, searched or rewritten: a parsed resource
/// (`preserve_order` maps) takes about ten times its text, so holding a large type
/// parsed would cost far more memory than the file. The indexes are built while
/// loading from a transient parse of each line's `id` and `identifier` only. A row
/// written in the session is serialised at once (no more memory than its text), and a
/// row never written is copied to the new file as it was read, byte for byte.
struct Table {
    rt: String,
    rows: Vec<Option<Box<str>>>,
    /// The line in `<rt>.ndjson` of each row read from it (rows past the end were
    /// written in this session), for the error a row that cannot be parsed gives.
    lines: Vec<u32>,
    by_id: HashMap<Box<str>, usize>,
    /// `system|value` → rows that carried it when written; may hold stale positions
    /// (a row whose identifier changed), so every hit is checked against the query.
    by_identifier: HashMap<Box<str>, Vec<usize>>,
    dirty: bool,
}

/// The top-level elements a row's index entries come from.
const INDEX_KEYS: &[&str] = &["id", "identifier"];

impl Table {
    fn empty(rt: &str) -> Self {
        Table {
            rt: rt.to_owned(),
            rows: Vec::new(),
            lines: Vec::new(),
            by_id: HashMap::new(),
            by_identifier: HashMap::new(),
            dirty: false,
        }
    }

    /// Why row `i` cannot be parsed (it is valid JSON, or loading would have refused
    /// it, but not a value careplane can hold: a number out of range, or nested too deep).
    fn bad_row(&self, i: usize, e: &serde_json::Error) -> String {
        match self.lines.get(i) {
            Some(n) => format!("{}.ndjson line {n}: not JSON ({e})", self.rt),
            None => format!(
                "{} row {} written in this session: not JSON ({e})",
                self.rt,
                i + 1
            ),
        }
    }

    /// Row `i` parsed whole, or `None` if it was deleted.
    fn parse(&self, i: usize) -> Result<Option<Value>, String> {
        self.rows[i]
            .as_deref()
            .map(|t| serde_json::from_str(t).map_err(|e| self.bad_row(i, &e)))
            .transpose()
    }

    /// Row `i`'s `meta` only (for a precondition or its version), or `None` if deleted.
    fn head(&self, i: usize) -> Result<Option<Value>, String> {
        self.rows[i]
            .as_deref()
            .map(|t| parse_keys(t, &["meta"]).map_err(|e| self.bad_row(i, &e)))
            .transpose()
    }

    /// Index row `i` by its `id` and its `identifier` element.
    fn index(&mut self, i: usize, id: Option<&str>, identifier: Option<&Value>) {
        if let Some(id) = id {
            self.by_id.insert(id.into(), i);
        }
        for ident in identifier.and_then(Value::as_array).into_iter().flatten() {
            if let (Some(s), Some(v)) = (
                ident.get("system").and_then(Value::as_str),
                ident.get("value").and_then(Value::as_str),
            ) {
                let at = self
                    .by_identifier
                    .entry(format!("{s}|{v}").into())
                    .or_default();
                if at.last() != Some(&i) {
                    at.push(i);
                }
            }
        }
    }

    /// Append a row read from line `line` of the file, indexed by `head` (its `id`
    /// and `identifier`).
    fn push_loaded(&mut self, text: &str, line: u32, head: &Value) {
        self.rows.push(Some(text.into()));
        self.lines.push(line);
        let id = head.get("id").and_then(Value::as_str);
        self.index(self.rows.len() - 1, id, head.get("identifier"));
    }

    /// Write `r` (at row `at`, or appended), indexed by `id` and its `identifier`.
    fn put(&mut self, at: Option<usize>, r: Stamped) -> Result<(), String> {
        let text = serde_json::to_string(&r)
            .map_err(|e| format!("{} could not be written as JSON ({e})", self.rt))?;
        let i = match at {
            Some(i) => {
                self.rows[i] = Some(text.into());
                i
            }
            None => {
                self.rows.push(Some(text.into()));
                self.rows.len() - 1
            }
        };
        self.index(i, Some(r.id), r.resource.get("identifier"));
        self.dirty = true;
        Ok(())
    }

    fn remove(&mut self, i: usize, id: &str) {
        self.rows[i] = None;
        self.by_id.remove(id);
        self.dirty = true;
    }

    fn position(&self, id: &str) -> Option<usize> {
        self.by_id
            .get(id)
            .copied()
            .filter(|&i| self.rows[i].is_some())
    }

    fn get(&self, id: &str) -> Result<Option<Value>, String> {
        match self.position(id) {
            Some(i) => self.parse(i),
            None => Ok(None),
        }
    }

    /// The rows that may match `params`, in file order: through an index when the
    /// query names an id or one exact `system|value` identifier, else every row.
    fn candidates(&self, params: &[(String, String)]) -> Vec<usize> {
        let mut at: Option<Vec<usize>> = None;
        for (k, v) in params {
            let hits: Option<Vec<usize>> = match k.as_str() {
                "_id" => Some(v.split(',').filter_map(|x| self.position(x)).collect()),
                "identifier" if !v.contains(',') => match v.split_once('|') {
                    Some((s, c)) if !s.is_empty() && !c.is_empty() => Some(
                        self.by_identifier
                            .get(v.as_str())
                            .cloned()
                            .unwrap_or_default(),
                    ),
                    _ => None,
                },
                _ => None,
            };
            if let Some(h) = hits
                && at.as_ref().is_none_or(|a| h.len() < a.len())
            {
                at = Some(h);
            }
        }
        match at {
            Some(mut a) => {
                a.sort_unstable();
                a.dedup();
                a
            }
            None => (0..self.rows.len()).collect(),
        }
    }

    /// The rows matching the query, in file order, each parsed as `how` says.
    fn find<'a>(
        &'a self,
        how: &'a Reading<'a>,
    ) -> impl Iterator<Item = Result<Value, String>> + 'a {
        self.candidates(how.params)
            .into_iter()
            .filter_map(move |i| {
                let text = self.rows[i].as_deref()?;
                how.read(text).map_err(|e| self.bad_row(i, &e)).transpose()
            })
    }

    /// The file's new text, row by row: rows never written in this session exactly
    /// as they were read.
    fn write_to(&self, w: &mut impl Write) -> std::io::Result<()> {
        for r in self.rows.iter().flatten() {
            w.write_all(r.as_bytes())?;
            w.write_all(b"\n")?;
        }
        Ok(())
    }
}

/// How a search reads a row: the whole row, or (`_elements`) only the elements it
/// returns and those its parameters test; then the query's test, then its shape.
struct Reading<'q> {
    params: &'q [(String, String)],
    /// `_elements`: the top-level elements returned (with `resourceType`, `id`, `meta`).
    keep: Option<Vec<&'q str>>,
    /// The top-level elements parsed (`None`: the whole row).
    parsed: Option<Vec<&'q str>>,
}

impl<'q> Reading<'q> {
    fn new(params: &'q [(String, String)]) -> Self {
        let keep: Option<Vec<&str>> =
            params.iter().find(|(k, _)| k == "_elements").map(|(_, v)| {
                let mut keep = vec!["resourceType", "id", "meta"];
                keep.extend(v.split(',').map(str::trim));
                keep
            });
        let parsed = keep.as_ref().map(|keep| {
            let mut parsed = keep.clone();
            parsed.extend(params.iter().filter_map(|(k, _)| tested_element(k)));
            parsed
        });
        Reading {
            params,
            keep,
            parsed,
        }
    }

    /// The row if it matches the query, shaped by `_elements`.
    fn read(&self, text: &str) -> Result<Option<Value>, serde_json::Error> {
        let r = match &self.parsed {
            Some(keys) => parse_keys(text, keys)?,
            None => serde_json::from_str(text)?,
        };
        if !matches(&r, self.params) {
            return Ok(None);
        }
        Ok(Some(match &self.keep {
            Some(keep) => subset(r, keep),
            None => r,
        }))
    }
}

/// The top-level element a search parameter tests, if any.
fn tested_element(param: &str) -> Option<&'static str> {
    Some(match param {
        "_id" => "id",
        "_tag" | "_lastUpdated" => "meta",
        "identifier" => "identifier",
        "type" => "type",
        "url" => "url",
        "status" => "status",
        _ => return None,
    })
}

/// A resource as the store writes it (compact JSON on one line), without copying it:
/// its elements in order, `id` set (a create adds it), `meta.versionId` and
/// `meta.lastUpdated` stamped (a `meta` is added at the end if it has none).
struct Stamped<'r> {
    resource: &'r serde_json::Map<String, Value>,
    id: &'r str,
    meta: Value,
}

impl<'r> Stamped<'r> {
    fn new(resource: &'r serde_json::Map<String, Value>, id: &'r str, version: u64) -> Self {
        let now = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        let stamp = |mut m: serde_json::Map<String, Value>| {
            m.insert("versionId".into(), json!(version.to_string()));
            m.insert("lastUpdated".into(), json!(now));
            Value::Object(m)
        };
        let meta = match resource.get("meta") {
            Some(Value::Object(m)) => stamp(m.clone()),
            // not an object: kept as it is
            Some(other) => other.clone(),
            None => stamp(serde_json::Map::new()),
        };
        Stamped { resource, id, meta }
    }

    fn written(&self) -> Written {
        Written {
            id: self.id.to_owned(),
            version_id: self
                .meta
                .get("versionId")
                .and_then(Value::as_str)
                .map(str::to_owned),
            existed: false,
        }
    }
}

impl serde::Serialize for Stamped<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(None)?;
        for (k, v) in self.resource {
            match k.as_str() {
                "id" => m.serialize_entry(k, self.id)?,
                "meta" => m.serialize_entry(k, &self.meta)?,
                _ => m.serialize_entry(k, v)?,
            }
        }
        if !self.resource.contains_key("id") {
            m.serialize_entry("id", self.id)?;
        }
        if !self.resource.contains_key("meta") {
            m.serialize_entry("meta", &self.meta)?;
        }
        m.end()
    }
}

/// Parse only the top-level elements `keys` of a row (the others are checked for JSON
/// syntax and skipped, not built): an object with those elements, in the row's order.
/// A row that is not an object is parsed whole.
fn parse_keys(text: &str, keys: &[&str]) -> Result<Value, serde_json::Error> {
    use serde::de::DeserializeSeed;
    if !text.trim_start().starts_with('{') {
        return serde_json::from_str(text);
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let r = Keys(keys).deserialize(&mut de)?;
    de.end()?;
    Ok(r)
}

/// [`parse_keys`]'s visitor: an object, keeping the elements named in `.0`.
struct Keys<'k>(&'k [&'k str]);

impl<'de> serde::de::DeserializeSeed<'de> for Keys<'_> {
    type Value = Value;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Keys<'_> {
    type Value = Value;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<Value, A::Error> {
        let mut out = serde_json::Map::new();
        while let Some(k) = m.next_key_seed(Key(self.0))? {
            match k {
                Some(k) => {
                    // a repeated key: the last one wins, as in a whole parse
                    out.insert(self.0[k].to_owned(), m.next_value()?);
                }
                None => {
                    m.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(Value::Object(out))
    }
}

/// A key of the object [`Keys`] reads: its place in the wanted keys, if wanted
/// (compared without allocating unless the key has escapes).
struct Key<'k>(&'k [&'k str]);

impl<'de> serde::de::DeserializeSeed<'de> for Key<'_> {
    type Value = Option<usize>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Key<'_> {
    type Value = Option<usize>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object key")
    }
    fn visit_str<E: serde::de::Error>(self, k: &str) -> Result<Option<usize>, E> {
        Ok(self.0.iter().position(|w| *w == k))
    }
}

impl FileStore {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        FileStore {
            dir: dir.into(),
            lock: Mutex::new(None),
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            ops: AtomicU64::new(0),
            counter: AtomicU64::new(0),
        }
    }

    /// How long a write waits for another process's lock (0: do not wait).
    pub fn with_lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = timeout;
        self
    }

    pub fn lock_timeout(&self) -> Duration {
        self.lock_timeout
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn request_count(&self) -> u64 {
        self.ops.load(Ordering::Relaxed)
    }

    /// Take the store's exclusive lock and keep it until [`FileStore::end_session`] or
    /// drop. If another process holds it, `on_wait` is called once with a sentence to
    /// show, then this waits up to the lock timeout. Calling it again while the session is
    /// open does nothing.
    ///
    /// Writes inside the session change the session's in-memory copy of their resource
    /// type; reads inside it see them; nothing reaches the files before `end_session`.
    pub async fn begin_session(&self, on_wait: &dyn Fn(&str)) -> Result<(), FhirError> {
        let mut held = self.lock.lock().await;
        if held.is_none() {
            *held = Some(Session {
                _lock: self.acquire(on_wait).await?,
                tables: HashMap::new(),
            });
        }
        Ok(())
    }

    /// Write every resource type the session changed, each file once (all temporary
    /// files written and synced first, then renamed, then the directory synced), and
    /// release the lock. A session dropped without this (a panic, a killed process)
    /// writes nothing: the store stays as it was before the session.
    pub async fn end_session(&self) -> Result<(), FhirError> {
        let Some(session) = self.lock.lock().await.take() else {
            return Ok(());
        };
        let mut dirty: Vec<(&String, &Table)> =
            session.tables.iter().filter(|(_, t)| t.dirty).collect();
        dirty.sort_by(|a, b| a.0.cmp(b.0));
        let mut temps: Vec<(PathBuf, PathBuf, &str)> = Vec::new();
        let mut failed = None;
        for (rt, table) in dirty {
            match self.write_temp(rt, table) {
                Ok((tmp, path)) => temps.push((tmp, path, rt)),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        if failed.is_none() {
            for (tmp, path, rt) in &temps {
                if let Err(e) = std::fs::rename(tmp, path) {
                    failed = Some(self.err(format!("cannot write {rt}.ndjson: {e}")));
                    break;
                }
            }
        }
        if let Some(e) = failed {
            for (tmp, _, _) in &temps {
                let _ = std::fs::remove_file(tmp);
            }
            return Err(e);
        }
        if temps.is_empty() {
            return Ok(());
        }
        sync_dir(&self.dir).map_err(|e| {
            self.err(format!(
                "the store files were replaced but the directory could not be synced: {e}"
            ))
        })
    }

    fn err(&self, reason: impl Into<String>) -> FhirError {
        FhirError::Store {
            path: self.dir.display().to_string(),
            reason: reason.into(),
        }
    }

    /// Lock [`LOCK_FILE`] exclusively, waiting up to the lock timeout; then remove stale
    /// temporary files (no other careplane can be writing one now).
    async fn acquire(&self, on_wait: &dyn Fn(&str)) -> Result<File, FhirError> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| self.err(format!("cannot create the store directory: {e}")))?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(self.dir.join(LOCK_FILE))
            .map_err(|e| self.err(format!("cannot open {LOCK_FILE}: {e}")))?;
        let started = Instant::now();
        let mut told = false;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) => {}
                Err(TryLockError::Error(e)) => {
                    return Err(self.err(format!("cannot lock {LOCK_FILE}: {e}")));
                }
            }
            if started.elapsed() >= self.lock_timeout {
                return Err(FhirError::StoreLocked {
                    path: self.dir.display().to_string(),
                    waited: self.lock_timeout,
                });
            }
            if !told {
                told = true;
                on_wait(&format!(
                    "waiting for the file store lock at {} (held by another careplane process; giving up after {})",
                    self.dir.display(),
                    humantime::format_duration(self.lock_timeout)
                ));
            }
            tokio::time::sleep(LOCK_POLL).await;
        }
        self.remove_stale_temps()?;
        Ok(file)
    }

    /// Temporary files left by a process that died between write and rename (and the
    /// fixed `<Type>.ndjson.tmp` older versions used). Only called with the lock held.
    fn remove_stale_temps(&self) -> Result<(), FhirError> {
        let entries = std::fs::read_dir(&self.dir)
            .map_err(|e| self.err(format!("cannot list the store directory: {e}")))?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            if is_temp_name(&name.to_string_lossy()) {
                std::fs::remove_file(entry.path())
                    .or_else(|e| match e.kind() {
                        std::io::ErrorKind::NotFound => Ok(()),
                        _ => Err(e),
                    })
                    .map_err(|e| self.err(format!("cannot remove a stale temporary file: {e}")))?;
            }
        }
        Ok(())
    }

    fn file(&self, rt: &str) -> Result<PathBuf, FhirError> {
        if rt.is_empty() || !rt.chars().all(|c| c.is_ascii_alphabetic()) {
            return Err(self.err(format!("'{rt}' is not a resource type")));
        }
        Ok(self.dir.join(format!("{rt}.ndjson")))
    }

    /// `<rt>.ndjson` as a [`Table`]: each row kept as its text, indexed from a parse of
    /// its `id` and `identifier` alone (a missing file is an empty table).
    fn load(&self, rt: &str) -> Result<Table, FhirError> {
        let mut table = Table::empty(rt);
        self.lines(rt, &mut |n, line| {
            let head = parse_keys(line, INDEX_KEYS).map_err(|e| self.not_json(rt, n, &e))?;
            table.push_loaded(line, n, &head);
            Ok(())
        })?;
        Ok(table)
    }

    fn not_json(&self, rt: &str, line: u32, e: &serde_json::Error) -> FhirError {
        self.err(format!("{rt}.ndjson line {line}: not JSON ({e})"))
    }

    /// Every non-blank line of `<rt>.ndjson` with its number, read one at a time and
    /// trimmed (a missing file has none).
    fn lines(
        &self,
        rt: &str,
        each: &mut dyn FnMut(u32, &str) -> Result<(), FhirError>,
    ) -> Result<(), FhirError> {
        use std::io::BufRead;
        let path = self.file(rt)?;
        let cannot = |e: std::io::Error| self.err(format!("cannot read {rt}.ndjson: {e}"));
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(cannot(e)),
        };
        let mut reader = std::io::BufReader::with_capacity(1 << 16, file);
        let mut line = String::new();
        let mut n = 0u32;
        loop {
            line.clear();
            if reader.read_line(&mut line).map_err(cannot)? == 0 {
                return Ok(());
            }
            n += 1;
            let text = line.trim();
            if !text.is_empty() {
                each(n, text)?;
            }
        }
    }

    /// A temporary file name no other process or write uses: pid, a per-store counter
    /// and 64 random bits (the counter alone would repeat across stores in one process).
    fn temp_name(&self, rt: &str) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut h = std::hash::RandomState::new().build_hasher();
        h.write_u128(
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos(),
        );
        format!(
            ".{rt}.ndjson.{}.{n}.{:016x}.tmp",
            std::process::id(),
            h.finish()
        )
    }

    /// Write `table` to a new unique temporary file and fsync it; returns it and the
    /// `<rt>.ndjson` it is meant to replace. Called with the lock held.
    fn write_temp(&self, rt: &str, table: &Table) -> Result<(PathBuf, PathBuf), FhirError> {
        let path = self.file(rt)?;
        let tmp = self.dir.join(self.temp_name(rt));
        let written = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .and_then(|f| {
                let mut w = std::io::BufWriter::with_capacity(1 << 16, f);
                table.write_to(&mut w)?;
                w.into_inner().map_err(|e| e.into_error())?.sync_all()
            });
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(self.err(format!("cannot write {rt}.ndjson: {e}")));
        }
        Ok((tmp, path))
    }

    /// Replace `<rt>.ndjson` with `table`: unique temporary file, fsync, rename,
    /// directory fsync. Called with the lock held.
    fn save(&self, rt: &str, table: &Table) -> Result<(), FhirError> {
        let (tmp, path) = self.write_temp(rt, table)?;
        if let Err(e) = std::fs::rename(&tmp, &path) {
            let _ = std::fs::remove_file(&tmp);
            return Err(self.err(format!("cannot write {rt}.ndjson: {e}")));
        }
        sync_dir(&self.dir).map_err(|e| {
            self.err(format!(
                "{rt}.ndjson was replaced but the directory could not be synced: {e}"
            ))
        })
    }

    /// One write: inside a session, on the session's copy of `rt` (loaded on first
    /// use); outside one, under the lock for this write alone, on the file, which is
    /// replaced if `op` changed anything.
    async fn write<T>(
        &self,
        rt: &str,
        op: impl FnOnce(&mut Table) -> Result<T, FhirError>,
    ) -> Result<T, FhirError> {
        let mut g = self.lock.lock().await;
        self.ops.fetch_add(1, Ordering::Relaxed);
        self.file(rt)?;
        match g.as_mut() {
            Some(session) => {
                if !session.tables.contains_key(rt) {
                    let table = self.load(rt)?;
                    session.tables.insert(rt.to_owned(), table);
                }
                op(session.tables.get_mut(rt).expect("loaded above"))
            }
            None => {
                let _lock = self.acquire(&|_| {}).await?;
                let mut table = self.load(rt)?;
                let out = op(&mut table)?;
                if table.dirty {
                    self.save(rt, &table)?;
                }
                Ok(out)
            }
        }
    }

    fn new_id(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let h = Sha256::digest(format!("{now}:{n}:{}", std::process::id()));
        format!("{:x}", h)[..32].to_owned()
    }

    /// Search one resource type: the session's copy if this session wrote it, else the
    /// file (read once, no lock). Linear in the file's size at worst.
    pub async fn search(&self, q: &Query) -> Result<Vec<Value>, FhirError> {
        let mut out = Vec::new();
        self.search_each(q, &mut |r| out.push(r)).await?;
        Ok(out)
    }

    /// Every resource matching the query, handed to `each` one at a time as the file is
    /// read line by line (outside a writer session nothing else of the file is held).
    pub async fn search_each(
        &self,
        q: &Query,
        each: &mut (dyn FnMut(Value) + Send),
    ) -> Result<(), FhirError> {
        let g = self.lock.lock().await;
        self.ops.fetch_add(1, Ordering::Relaxed);
        for (k, _) in &q.params {
            if !matches!(
                k.as_str(),
                "_id"
                    | "_tag"
                    | "identifier"
                    | "type"
                    | "url"
                    | "_count"
                    | "_elements"
                    | "status"
                    | "_lastUpdated"
            ) {
                return Err(FhirError::Unsupported(format!(
                    "the file store cannot search {} by '{k}'",
                    q.resource_type
                )));
            }
        }
        let how = Reading::new(&q.params);
        if let Some(table) = g.as_ref().and_then(|s| s.tables.get(&q.resource_type)) {
            for r in table.find(&how) {
                each(r.map_err(|reason| self.err(reason))?);
            }
            return Ok(());
        }
        let rt = &q.resource_type;
        self.lines(rt, &mut |n, line| {
            if let Some(r) = how.read(line).map_err(|e| self.not_json(rt, n, &e))? {
                each(r);
            }
            Ok(())
        })
    }

    /// One resource by id: inside a session that wrote its type, the one row the index
    /// names, parsed; else the file read line by line, each parsed for its `id` alone
    /// until the row is found.
    pub async fn read(&self, rt: &str, id: &str) -> Result<Option<Value>, FhirError> {
        let g = self.lock.lock().await;
        self.ops.fetch_add(1, Ordering::Relaxed);
        if let Some(table) = g.as_ref().and_then(|s| s.tables.get(rt)) {
            return table.get(id).map_err(|reason| self.err(reason));
        }
        let mut found = None;
        self.lines(rt, &mut |n, line| {
            if found.is_none() {
                let head = parse_keys(line, &["id"]).map_err(|e| self.not_json(rt, n, &e))?;
                if head.get("id").and_then(Value::as_str) == Some(id) {
                    found = Some(serde_json::from_str(line).map_err(|e| self.not_json(rt, n, &e))?);
                }
            }
            Ok(())
        })?;
        Ok(found)
    }

    pub async fn create(
        &self,
        resource: &Value,
        if_none_exist: Option<&Query>,
    ) -> Result<Written, FhirError> {
        let (rt, obj) = typed(resource)?;
        let id = self.new_id();
        self.write(rt, |table| {
            if let Some(q) = if_none_exist
                && let Some(existing) = table.find(&Reading::new(&q.params)).next()
            {
                let existing = existing.map_err(|reason| self.err(reason))?;
                return Ok(Written {
                    existed: true,
                    ..written(&existing)
                });
            }
            let r = Stamped::new(obj, &id, 1);
            let w = r.written();
            table.put(None, r).map_err(|reason| self.err(reason))?;
            Ok(w)
        })
        .await
    }

    pub async fn update(&self, resource: &Value, pre: &Precondition) -> Result<Written, FhirError> {
        let (rt, obj) = typed(resource)?;
        let id = resource
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(|| self.err(format!("update of {rt} without an id")))?;
        self.write(rt, |table| {
            let pos = table.position(id);
            let current = match pos {
                Some(i) => table.head(i).map_err(|reason| self.err(reason))?,
                None => None,
            };
            let refused = match &current {
                Some(c) => !precondition_holds(c, pre),
                None => pre.version_id.is_some(),
            };
            if refused {
                return Err(FhirError::Conflict {
                    resource: super::shown(rt, id),
                    status: 412,
                });
            }
            let version = current.as_ref().map(version_of).unwrap_or(0) + 1;
            let r = Stamped::new(obj, id, version);
            let w = r.written();
            table.put(pos, r).map_err(|reason| self.err(reason))?;
            Ok(w)
        })
        .await
    }

    pub async fn delete(&self, rt: &str, id: &str, pre: &Precondition) -> Result<(), FhirError> {
        self.write(rt, |table| {
            let Some(i) = table.position(id) else {
                return Ok(());
            };
            let current = table.head(i).map_err(|reason| self.err(reason))?;
            if !current.is_some_and(|c| precondition_holds(&c, pre)) {
                return Err(FhirError::Conflict {
                    resource: super::shown(rt, id),
                    status: 412,
                });
            }
            table.remove(i, id);
            Ok(())
        })
        .await
    }
}

/// A temporary file of this store (`.<Type>.ndjson.<…>.tmp`), or the fixed
/// `<Type>.ndjson.tmp` of older careplane versions.
fn is_temp_name(name: &str) -> bool {
    name.ends_with(".ndjson.tmp")
        || (name.starts_with('.') && name.ends_with(".tmp") && name.contains(".ndjson."))
}

/// Make a rename in `dir` durable. Filesystems that cannot sync a directory say so with
/// `InvalidInput` / `Unsupported`; the rename itself is atomic there anyway.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        match File::open(dir).and_then(|d| d.sync_all()) {
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::InvalidInput | std::io::ErrorKind::Unsupported
                ) =>
            {
                Ok(())
            }
            other => other,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// `_elements`: only the top-level elements in `keep` (which [`Reading`] gives
/// `resourceType`, `id` and `meta` too).
fn subset(r: Value, keep: &[&str]) -> Value {
    match r {
        Value::Object(o) => Value::Object(
            o.into_iter()
                .filter(|(k, _)| keep.contains(&k.as_str()))
                .collect(),
        ),
        other => other,
    }
}

fn version_of(r: &Value) -> u64 {
    r.pointer("/meta/versionId")
        .and_then(Value::as_str)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn precondition_holds(current: &Value, pre: &Precondition) -> bool {
    if let Some(v) = &pre.version_id {
        return current.pointer("/meta/versionId").and_then(Value::as_str) == Some(v.as_str());
    }
    if let Some(t) = &pre.last_updated {
        return current.pointer("/meta/lastUpdated").and_then(Value::as_str) == Some(t.as_str());
    }
    true
}

/// A resource's resource type and elements.
fn typed(resource: &Value) -> Result<(&str, &serde_json::Map<String, Value>), FhirError> {
    let rt = resource_type(resource)?;
    let obj = resource
        .as_object()
        .ok_or_else(|| FhirError::Unsupported("a resource that is not a JSON object".into()))?;
    Ok((rt, obj))
}

fn written(r: &Value) -> Written {
    Written {
        id: r
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        version_id: r
            .pointer("/meta/versionId")
            .and_then(Value::as_str)
            .map(str::to_owned),
        existed: false,
    }
}

/// `system|code` (or `code`) against a list of objects with `system` and `code_field`.
fn token_match(list: Option<&Value>, code_field: &str, token: &str) -> bool {
    let (system, code) = match token.split_once('|') {
        Some((s, c)) => (Some(s), c),
        None => (None, token),
    };
    list.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| {
            let sys_ok = match system {
                Some("") | None => true,
                Some(s) => c.get("system").and_then(Value::as_str) == Some(s),
            };
            let code_ok =
                code.is_empty() || c.get(code_field).and_then(Value::as_str) == Some(code);
            sys_ok && code_ok
        })
}

fn matches(r: &Value, params: &[(String, String)]) -> bool {
    params.iter().all(|(k, v)| {
        let any = |f: &dyn Fn(&str) -> bool| v.split(',').any(f);
        match k.as_str() {
            "_id" => any(&|x| r.get("id").and_then(Value::as_str) == Some(x)),
            "_tag" => any(&|x| token_match(r.pointer("/meta/tag"), "code", x)),
            "identifier" => any(&|x| token_match(r.get("identifier"), "value", x)),
            "type" => any(&|x| r.get("type").and_then(Value::as_str) == Some(x)),
            "url" => any(&|x| r.get("url").and_then(Value::as_str) == Some(x)),
            "status" => any(&|x| r.get("status").and_then(Value::as_str) == Some(x)),
            // only the `gt` prefix (what `watch` sends)
            "_lastUpdated" => {
                let after = v.strip_prefix("gt").and_then(super::parse_instant);
                let at = r
                    .pointer("/meta/lastUpdated")
                    .and_then(Value::as_str)
                    .and_then(super::parse_instant);
                matches!((after, at), (Some(a), Some(t)) if t > a)
            }
            _ => true,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn temp_files_are_unique_never_read_and_cleaned_under_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        let a = store.temp_name("Group");
        assert_ne!(a, store.temp_name("Group"));
        assert_ne!(a, FileStore::new(dir.path()).temp_name("Group"));
        assert!(is_temp_name(&a) && a.starts_with(".Group.ndjson."));
        assert!(!is_temp_name("Group.ndjson") && !is_temp_name(LOCK_FILE));

        // what a process killed mid-write leaves behind (and the old fixed name)
        let stale = [
            ".Group.ndjson.4242.0.00000000deadbeef.tmp",
            "Group.ndjson.tmp",
        ];
        for name in stale {
            std::fs::write(dir.path().join(name), "{\"resourceType\":\"Gr").unwrap();
        }
        rt().block_on(async {
            assert!(store.search(&Query::new("Group")).await.unwrap().is_empty());
            let g = json!({"resourceType":"Group","type":"practitioner","actual":true});
            store.create(&g, None).await.unwrap();
            store.create(&g, None).await.unwrap();
            assert_eq!(store.search(&Query::new("Group")).await.unwrap().len(), 2);
        });
        assert_eq!(names(dir.path()), [LOCK_FILE, "Group.ndjson"]);
    }

    #[test]
    fn a_writer_session_excludes_other_writers_but_not_readers() {
        let dir = tempfile::tempdir().unwrap();
        let first = FileStore::new(dir.path());
        let second = FileStore::new(dir.path()).with_lock_timeout(Duration::from_millis(100));
        let g = json!({"resourceType":"Group","type":"practitioner","actual":true});
        rt().block_on(async {
            first
                .begin_session(&|_| panic!("nobody holds the lock"))
                .await
                .unwrap();
            first
                .begin_session(&|_| panic!("already held"))
                .await
                .unwrap();
            first.create(&g, None).await.unwrap();

            let told = std::cell::Cell::new(0);
            let started = Instant::now();
            let e = second
                .begin_session(&|m| {
                    assert!(m.contains("waiting for the file store lock"), "{m}");
                    told.set(told.get() + 1);
                })
                .await
                .unwrap_err();
            assert!(matches!(e, FhirError::StoreLocked { .. }), "{e}");
            assert!(started.elapsed() >= Duration::from_millis(100));
            assert_eq!(told.get(), 1, "the wait is announced once");
            assert!(matches!(
                second.create(&g, None).await,
                Err(FhirError::StoreLocked { .. })
            ));
            // reads rely on atomic renames, not on the lock; the session's writes reach
            // the file when it ends
            assert_eq!(second.search(&Query::new("Group")).await.unwrap().len(), 0);

            first.end_session().await.unwrap();
            assert_eq!(second.search(&Query::new("Group")).await.unwrap().len(), 1);
            second.create(&g, None).await.unwrap();
            // a write outside a session holds the lock only for itself
            first.begin_session(&|_| panic!("released")).await.unwrap();
            let zero = FileStore::new(dir.path()).with_lock_timeout(Duration::ZERO);
            assert!(matches!(
                zero.begin_session(&|_| panic!("a zero timeout does not wait"))
                    .await,
                Err(FhirError::StoreLocked { .. })
            ));
        });
    }

    #[test]
    fn create_update_delete_with_versions_and_preconditions() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        rt().block_on(async {
            let g = json!({"resourceType":"Group","type":"practitioner","actual":true,"name":"A",
                "identifier":[{"system":"urn:x","value":"a"}]});
            let cond = Query::new("Group").param("identifier", "urn:x|a");
            let w = store.create(&g, Some(&cond)).await.unwrap();
            assert_eq!(w.version_id.as_deref(), Some("1"));
            // conditional create finds the existing one instead of duplicating it
            let again = store.create(&g, Some(&cond)).await.unwrap();
            assert_eq!(again.id, w.id);
            assert_eq!(store.search(&Query::new("Group")).await.unwrap().len(), 1);

            let mut cur = store.read("Group", &w.id).await.unwrap().unwrap();
            cur["name"] = json!("B");
            let stale = Precondition {
                version_id: Some("7".into()),
                last_updated: None,
            };
            assert!(matches!(
                store.update(&cur, &stale).await,
                Err(FhirError::Conflict { .. })
            ));
            let ok = Precondition {
                version_id: Some("1".into()),
                last_updated: None,
            };
            assert_eq!(
                store.update(&cur, &ok).await.unwrap().version_id.as_deref(),
                Some("2")
            );
            assert!(store.delete("Group", &w.id, &ok).await.is_err());
            let v2 = Precondition {
                version_id: Some("2".into()),
                last_updated: None,
            };
            store.delete("Group", &w.id, &v2).await.unwrap();
            assert!(store.read("Group", &w.id).await.unwrap().is_none());
        });
    }

    /// Inode and contents of each data file, to tell "written" from "untouched".
    fn files(dir: &Path) -> Vec<(String, u64, String)> {
        use std::os::unix::fs::MetadataExt;
        names(dir)
            .into_iter()
            .filter(|n| n.ends_with(".ndjson"))
            .map(|n| {
                let p = dir.join(&n);
                let ino = std::fs::metadata(&p).unwrap().ino();
                (n, ino, std::fs::read_to_string(&p).unwrap())
            })
            .collect()
    }

    #[test]
    fn a_session_writes_each_changed_file_once_at_its_end_and_reads_its_own_writes() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        let other = FileStore::new(dir.path());
        rt().block_on(async {
            let g = |i: usize| {
                json!({"resourceType":"Group","type":"practitioner","actual":true,"name":format!("G{i}"),
                    "identifier":[{"system":"urn:x","value":format!("g{i}")}]})
            };
            store.create(&g(0), None).await.unwrap();
            let cs = json!({"resourceType":"CodeSystem","url":"urn:cs","status":"active"});
            store.create(&cs, None).await.unwrap();
            let before = files(dir.path());

            store.begin_session(&|_| {}).await.unwrap();
            let mut ids = Vec::new();
            for i in 1..50 {
                let cond = Query::new("Group").param("identifier", format!("urn:x|g{i}"));
                ids.push(store.create(&g(i), Some(&cond)).await.unwrap().id);
            }
            // conditional create sees the session's own writes (no duplicate)
            let cond = Query::new("Group").param("identifier", "urn:x|g7");
            let again = store.create(&g(7), Some(&cond)).await.unwrap();
            assert!(again.existed && again.id == ids[6]);
            let mut cur = store.read("Group", &ids[0]).await.unwrap().unwrap();
            cur["name"] = json!("renamed");
            cur["identifier"][0]["value"] = json!("renamed");
            let v1 = Precondition {
                version_id: Some("1".into()),
                last_updated: None,
            };
            store.update(&cur, &v1).await.unwrap();
            assert!(matches!(
                store.update(&cur, &v1).await,
                Err(FhirError::Conflict { .. })
            ));
            store.delete("Group", &ids[1], &v1).await.unwrap();
            // reads in the session see its writes, through the indexes and without
            let by_old = Query::new("Group").param("identifier", "urn:x|g1");
            assert!(store.search(&by_old).await.unwrap().is_empty());
            let by_new = Query::new("Group").param("identifier", "urn:x|renamed");
            assert_eq!(store.search(&by_new).await.unwrap()[0]["name"], "renamed");
            assert!(store.read("Group", &ids[1]).await.unwrap().is_none());
            let all = store.search(&Query::new("Group")).await.unwrap();
            assert_eq!(all.len(), 49);
            assert_eq!(all[0]["name"], "G0", "file order is kept");
            let by_id = Query::new("Group").param("_id", format!("{},{}", ids[2], ids[1]));
            assert_eq!(store.search(&by_id).await.unwrap().len(), 1);

            // nothing reached the files yet; another reader sees the store as before
            assert_eq!(files(dir.path()), before);
            assert_eq!(other.search(&Query::new("Group")).await.unwrap().len(), 1);

            store.end_session().await.unwrap();
            let after = files(dir.path());
            assert_eq!(after[0], before[0], "CodeSystem.ndjson was not rewritten");
            assert_ne!(after[1].1, before[1].1, "Group.ndjson was replaced");
            let groups = other.search(&Query::new("Group")).await.unwrap();
            assert_eq!(groups.len(), 49);
            assert_eq!(groups[0]["name"], "G0");
            assert_eq!(groups[1]["name"], "renamed");
            assert_eq!(groups[1]["meta"]["versionId"], "2");
            assert_eq!(names(dir.path()), [LOCK_FILE, "CodeSystem.ndjson", "Group.ndjson"]);
            // the lock is free again
            other.begin_session(&|_| panic!("released")).await.unwrap();
            other.end_session().await.unwrap();
        });
    }

    #[test]
    fn a_session_that_never_ends_leaves_the_store_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let g = json!({"resourceType":"Group","type":"practitioner","actual":true});
        rt().block_on(async {
            FileStore::new(dir.path()).create(&g, None).await.unwrap();
        });
        let before = files(dir.path());
        rt().block_on(async {
            // a crash mid-apply: the session's writes are lost, none half-written
            let store = FileStore::new(dir.path());
            store.begin_session(&|_| {}).await.unwrap();
            store.create(&g, None).await.unwrap();
            drop(store);
            // a crash between writing the temporary files and renaming them
            std::fs::write(
                dir.path().join(".Group.ndjson.1.0.0000000000000000.tmp"),
                "{\"resourceType\":\"Group\"}\n",
            )
            .unwrap();
        });
        assert_eq!(files(dir.path()), before);
        rt().block_on(async {
            let store = FileStore::new(dir.path());
            store.begin_session(&|_| {}).await.unwrap();
            assert_eq!(store.search(&Query::new("Group")).await.unwrap().len(), 1);
            store.end_session().await.unwrap();
        });
        assert_eq!(names(dir.path()), [LOCK_FILE, "Group.ndjson"]);
        assert_eq!(
            files(dir.path()),
            before,
            "a session that wrote nothing rewrites nothing"
        );
    }

    #[test]
    fn unsupported_search_parameters_fail_loudly() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        let q = Query::new("Patient").param("birthdate", "2000");
        let err = rt().block_on(store.search(&q)).unwrap_err();
        assert!(err.to_string().contains("birthdate"));
        assert!(
            !err.to_string().contains("2000"),
            "search values are never printed"
        );
    }

    #[test]
    fn token_search_by_tag_and_identifier() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        rt().block_on(async {
            for (tag, val) in [("p1", "a"), ("p2", "b")] {
                let r = json!({"resourceType":"CodeSystem","meta":{"tag":[{"system":"urn:t","code":tag}]},
                    "identifier":[{"system":"urn:i","value":val}]});
                store.create(&r, None).await.unwrap();
            }
            let by_tag = store.search(&Query::new("CodeSystem").param("_tag", "urn:t|p2")).await.unwrap();
            assert_eq!(by_tag.len(), 1);
            assert_eq!(by_tag[0]["identifier"][0]["value"], "b");
            let none = store.search(&Query::new("CodeSystem").param("identifier", "urn:other|a")).await.unwrap();
            assert!(none.is_empty());
        });
    }

    #[test]
    fn a_stamped_row_is_the_resource_with_id_and_meta_set_in_place() {
        // what a copy of the resource, given its id and stamped meta, serialises to
        let copied = |r: &Value, id: &str, version: u64, now: &Value| {
            let mut c = r.clone();
            c["id"] = json!(id);
            let meta = c
                .as_object_mut()
                .unwrap()
                .entry("meta")
                .or_insert(json!({}));
            if let Some(m) = meta.as_object_mut() {
                m.insert("versionId".into(), json!(version.to_string()));
                m.insert("lastUpdated".into(), now.clone());
            }
            serde_json::to_string(&c).unwrap()
        };
        for r in [
            json!({"resourceType":"Group","name":"no id, no meta"}),
            json!({"resourceType":"Group","meta":{"tag":[{"code":"x"}],"versionId":"4"},"id":"a","name":"n"}),
            json!({"resourceType":"Group","id":"a","meta":{"lastUpdated":"old"},"member":[{"entity":{"reference":"Patient/1"}}]}),
            json!({"resourceType":"Group","meta":"not an object","id":"a"}),
        ] {
            let s = Stamped::new(r.as_object().unwrap(), "a", 5);
            let now = s.meta.get("lastUpdated").cloned().unwrap_or(Value::Null);
            assert_eq!(serde_json::to_string(&s).unwrap(), copied(&r, "a", 5, &now));
            assert_eq!(s.written().id, "a");
        }
    }

    fn lines_of(dir: &Path, rt: &str) -> Vec<String> {
        std::fs::read_to_string(dir.join(format!("{rt}.ndjson")))
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn writes_copy_the_rows_they_do_not_touch_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        // rows another program wrote (spaces, an escape, a decimal's trailing zero, key
        // order) and one careplane wrote: a whole parse and re-serialisation would
        // change the first three
        let theirs = [
            r#"{"resourceType": "Group", "id": "a", "name": "caf\u00e9", "quantity": 1.50}"#,
            r#"{ "id":"b","resourceType":"Group","meta":{"versionId":"1"},"name":"B" }"#,
            r#"{"resourceType":"Group","id":"c","name":"\u0043"}"#,
        ];
        let ours = r#"{"resourceType":"Group","id":"d","meta":{"versionId":"3","lastUpdated":"2026-01-01T00:00:00.000Z"},"name":"D"}"#;
        std::fs::write(
            dir.path().join("Group.ndjson"),
            format!("{}\n{}\n\n{}\n{ours}\n", theirs[0], theirs[1], theirs[2]),
        )
        .unwrap();
        let store = FileStore::new(dir.path());
        let v1 = Precondition {
            version_id: Some("1".into()),
            last_updated: None,
        };
        rt().block_on(async {
            store.begin_session(&|_| {}).await.unwrap();
            let mut b = store.read("Group", "b").await.unwrap().unwrap();
            b["name"] = json!("B2");
            store.update(&b, &v1).await.unwrap();
            let e = json!({"resourceType":"Group","name":"E"});
            store.create(&e, None).await.unwrap();
            store.end_session().await.unwrap();
            // a write outside a session copies them too
            store.create(&e, None).await.unwrap();
        });
        let lines = lines_of(dir.path(), "Group");
        assert_eq!(lines.len(), 6, "{lines:#?}");
        assert_eq!(lines[0], theirs[0]);
        assert_eq!(lines[2], theirs[2]);
        assert_eq!(lines[3], ours);
        let b: Value = serde_json::from_str(&lines[1]).unwrap();
        assert_eq!(
            (&b["name"], &b["meta"]["versionId"]),
            (&json!("B2"), &json!("2"))
        );
        assert!(lines[1].starts_with(r#"{"id":"b","resourceType":"Group","meta":{"#));
        assert!(lines[4].contains(r#""name":"E""#) && lines[5].contains(r#""name":"E""#));
    }

    #[test]
    fn a_row_is_parsed_only_when_it_is_read_searched_or_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        // valid JSON that careplane cannot hold as a value (the number is beyond f64):
        // the table must index it without building it, and copy it as it is
        let odd = r#"{"resourceType":"Group","id":"odd","identifier":[{"system":"urn:x","value":"odd"}],"extension":[{"url":"urn:e","valueDecimal":1e400}]}"#;
        let plain = |id: &str| {
            format!(
                r#"{{"resourceType":"Group","id":"{id}","meta":{{"versionId":"1"}},"identifier":[{{"system":"urn:x","value":"{id}"}}],"name":"{id}"}}"#
            )
        };
        std::fs::write(
            dir.path().join("Group.ndjson"),
            format!("{}\n\n{odd}\n{}\n", plain("a"), plain("b")),
        )
        .unwrap();
        let store = FileStore::new(dir.path());
        let v1 = Precondition {
            version_id: Some("1".into()),
            last_updated: None,
        };
        let unreadable = |e: FhirError| {
            let m = e.to_string();
            assert!(m.contains("Group.ndjson line 3: not JSON"), "{m}");
        };
        rt().block_on(async {
            // outside a session: reads by id and `_elements` searches pass over it
            assert_eq!(
                store.read("Group", "b").await.unwrap().unwrap()["name"],
                "b"
            );
            let names = Query::new("Group").param("_elements", "name");
            assert_eq!(store.search(&names).await.unwrap().len(), 3);
            unreadable(store.read("Group", "odd").await.unwrap_err());

            store.begin_session(&|_| {}).await.unwrap();
            let mut a = store.read("Group", "a").await.unwrap().unwrap();
            a["name"] = json!("a2");
            store.update(&a, &v1).await.unwrap();
            let cond = Query::new("Group").param("identifier", "urn:x|b");
            let b = json!({"resourceType":"Group","name":"dup"});
            assert!(store.create(&b, Some(&cond)).await.unwrap().existed);
            let by_id = Query::new("Group").param("_id", "a,b");
            assert_eq!(store.search(&by_id).await.unwrap().len(), 2);
            assert_eq!(store.search(&names).await.unwrap().len(), 3);
            // the row itself, read or searched whole, is reported with its line
            unreadable(store.read("Group", "odd").await.unwrap_err());
            unreadable(store.search(&Query::new("Group")).await.unwrap_err());
            store.end_session().await.unwrap();
        });
        let lines = lines_of(dir.path(), "Group");
        assert_eq!(lines.len(), 3);
        assert!(lines[0].contains(r#""name":"a2""#));
        assert_eq!(lines[1], odd);
        assert_eq!(lines[2], plain("b"));
    }
}
