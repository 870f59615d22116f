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

/// One resource type in memory: the rows in file order (a deleted row leaves `None`
/// so the positions in the indexes stay valid), an index by id and one by
/// `identifier` (`system|value`).
#[derive(Default)]
struct Table {
    rows: Vec<Option<Value>>,
    by_id: HashMap<String, usize>,
    /// `system|value` → rows that carried it when written; may hold stale positions
    /// (a row whose identifier changed), so every hit is checked against the query.
    by_identifier: HashMap<String, Vec<usize>>,
    dirty: bool,
}

impl Table {
    fn new(rows: Vec<Value>) -> Self {
        let mut t = Table::default();
        for r in rows {
            t.push(r);
        }
        t.dirty = false;
        t
    }

    fn index(&mut self, i: usize) {
        let Some(r) = &self.rows[i] else { return };
        if let Some(id) = r.get("id").and_then(Value::as_str) {
            self.by_id.insert(id.to_owned(), i);
        }
        for ident in r
            .get("identifier")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let (Some(s), Some(v)) = (
                ident.get("system").and_then(Value::as_str),
                ident.get("value").and_then(Value::as_str),
            ) {
                let at = self.by_identifier.entry(format!("{s}|{v}")).or_default();
                if at.last() != Some(&i) {
                    at.push(i);
                }
            }
        }
    }

    fn push(&mut self, r: Value) {
        self.rows.push(Some(r));
        self.index(self.rows.len() - 1);
        self.dirty = true;
    }

    fn position(&self, id: &str) -> Option<usize> {
        self.by_id
            .get(id)
            .copied()
            .filter(|&i| self.rows[i].is_some())
    }

    fn get(&self, id: &str) -> Option<&Value> {
        self.position(id).and_then(|i| self.rows[i].as_ref())
    }

    fn replace(&mut self, i: usize, r: Value) {
        self.rows[i] = Some(r);
        self.index(i);
        self.dirty = true;
    }

    fn remove(&mut self, i: usize) {
        if let Some(id) = self.rows[i]
            .take()
            .and_then(|r| r.get("id").and_then(Value::as_str).map(str::to_owned))
        {
            self.by_id.remove(&id);
        }
        self.dirty = true;
    }

    /// The rows that may match `params`, in file order: through an index when the
    /// query names an id or one exact `system|value` identifier, else every row.
    fn candidates(&self, params: &[(String, String)]) -> Vec<usize> {
        let mut at: Option<Vec<usize>> = None;
        for (k, v) in params {
            let hits: Option<Vec<usize>> = match k.as_str() {
                "_id" => Some(v.split(',').filter_map(|x| self.position(x)).collect()),
                "identifier" if !v.contains(',') => match v.split_once('|') {
                    Some((s, c)) if !s.is_empty() && !c.is_empty() => {
                        Some(self.by_identifier.get(v).cloned().unwrap_or_default())
                    }
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

    fn find(&self, params: &[(String, String)]) -> impl Iterator<Item = &Value> {
        self.candidates(params)
            .into_iter()
            .filter_map(|i| self.rows[i].as_ref())
            .filter(move |r| matches(r, params))
    }

    fn text(&self) -> String {
        let mut text = String::new();
        for r in self.rows.iter().flatten() {
            text.push_str(&serde_json::to_string(r).unwrap_or_default());
            text.push('\n');
        }
        text
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
            match self.write_temp(rt, &table.text()) {
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

    fn load(&self, rt: &str) -> Result<Vec<Value>, FhirError> {
        let mut out = Vec::new();
        self.load_each(rt, &mut |r| out.push(r))?;
        Ok(out)
    }

    /// Every row of `<rt>.ndjson`, parsed one line at a time (a missing file has none).
    fn load_each(&self, rt: &str, each: &mut dyn FnMut(Value)) -> Result<(), FhirError> {
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
        let mut n = 0usize;
        loop {
            line.clear();
            if reader.read_line(&mut line).map_err(cannot)? == 0 {
                return Ok(());
            }
            n += 1;
            if line.trim().is_empty() {
                continue;
            }
            let r = serde_json::from_str(&line)
                .map_err(|e| self.err(format!("{rt}.ndjson line {n}: not JSON ({e})")))?;
            each(r);
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

    /// Write `text` to a new unique temporary file and fsync it; returns it and the
    /// `<rt>.ndjson` it is meant to replace. Called with the lock held.
    fn write_temp(&self, rt: &str, text: &str) -> Result<(PathBuf, PathBuf), FhirError> {
        let path = self.file(rt)?;
        let tmp = self.dir.join(self.temp_name(rt));
        let written = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .and_then(|mut f| {
                f.write_all(text.as_bytes())?;
                f.sync_all()
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
        let (tmp, path) = self.write_temp(rt, &table.text())?;
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
                    let table = Table::new(self.load(rt)?);
                    session.tables.insert(rt.to_owned(), table);
                }
                op(session.tables.get_mut(rt).expect("loaded above"))
            }
            None => {
                let _lock = self.acquire(&|_| {}).await?;
                let mut table = Table::new(self.load(rt)?);
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

    fn stamp(resource: &mut Value, version: u64) {
        let now = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        let meta = resource
            .as_object_mut()
            .expect("resource is an object")
            .entry("meta")
            .or_insert_with(|| json!({}));
        if let Some(m) = meta.as_object_mut() {
            m.insert("versionId".into(), json!(version.to_string()));
            m.insert("lastUpdated".into(), json!(now));
        }
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
        let elements: Option<Vec<&str>> = q
            .params
            .iter()
            .find(|(k, _)| k == "_elements")
            .map(|(_, v)| v.split(',').map(str::trim).collect());
        let shape = |r: Value| match &elements {
            Some(keep) => subset(r, keep),
            None => r,
        };
        if let Some(table) = g.as_ref().and_then(|s| s.tables.get(&q.resource_type)) {
            table.find(&q.params).cloned().map(shape).for_each(each);
            return Ok(());
        }
        self.load_each(&q.resource_type, &mut |r| {
            if matches(&r, &q.params) {
                each(shape(r));
            }
        })
    }

    pub async fn read(&self, rt: &str, id: &str) -> Result<Option<Value>, FhirError> {
        let g = self.lock.lock().await;
        self.ops.fetch_add(1, Ordering::Relaxed);
        if let Some(table) = g.as_ref().and_then(|s| s.tables.get(rt)) {
            return Ok(table.get(id).cloned());
        }
        Ok(self
            .load(rt)?
            .into_iter()
            .find(|r| r.get("id").and_then(Value::as_str) == Some(id)))
    }

    pub async fn create(
        &self,
        resource: &Value,
        if_none_exist: Option<&Query>,
    ) -> Result<Written, FhirError> {
        let rt = resource_type(resource)?;
        let id = self.new_id();
        self.write(rt, |table| {
            if let Some(q) = if_none_exist
                && let Some(existing) = table.find(&q.params).next()
            {
                return Ok(Written {
                    existed: true,
                    ..written(existing)
                });
            }
            let mut r = resource.clone();
            r["id"] = json!(id);
            Self::stamp(&mut r, 1);
            let w = written(&r);
            table.push(r);
            Ok(w)
        })
        .await
    }

    pub async fn update(&self, resource: &Value, pre: &Precondition) -> Result<Written, FhirError> {
        let rt = resource_type(resource)?;
        let id = resource
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(|| self.err(format!("update of {rt} without an id")))?;
        self.write(rt, |table| {
            let pos = table.position(id);
            let current = pos.and_then(|i| table.rows[i].as_ref());
            let refused = match current {
                Some(c) => !precondition_holds(c, pre),
                None => pre.version_id.is_some(),
            };
            if refused {
                return Err(FhirError::Conflict {
                    resource: super::shown(rt, id),
                    status: 412,
                });
            }
            let mut r = resource.clone();
            Self::stamp(&mut r, current.map(version_of).unwrap_or(0) + 1);
            let w = written(&r);
            match pos {
                Some(i) => table.replace(i, r),
                None => table.push(r),
            }
            Ok(w)
        })
        .await
    }

    pub async fn delete(&self, rt: &str, id: &str, pre: &Precondition) -> Result<(), FhirError> {
        self.write(rt, |table| {
            let Some(i) = table.position(id) else {
                return Ok(());
            };
            if !table.rows[i]
                .as_ref()
                .is_some_and(|c| precondition_holds(c, pre))
            {
                return Err(FhirError::Conflict {
                    resource: super::shown(rt, id),
                    status: 412,
                });
            }
            table.remove(i);
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

/// `_elements`: only the listed top-level elements (plus `resourceType`, `id`, `meta`).
fn subset(r: Value, keep: &[&str]) -> Value {
    match r {
        Value::Object(o) => Value::Object(
            o.into_iter()
                .filter(|(k, _)| {
                    matches!(k.as_str(), "resourceType" | "id" | "meta")
                        || keep.contains(&k.as_str())
                })
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
}
