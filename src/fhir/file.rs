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
    /// One operation at a time in this process; holds the writer session's locked file.
    lock: Mutex<Option<File>>,
    lock_timeout: Duration,
    ops: AtomicU64,
    counter: AtomicU64,
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
    pub async fn begin_session(&self, on_wait: &dyn Fn(&str)) -> Result<(), FhirError> {
        let mut held = self.lock.lock().await;
        if held.is_none() {
            *held = Some(self.acquire(on_wait).await?);
        }
        Ok(())
    }

    /// Release the lock taken by [`FileStore::begin_session`] (closing the file drops it).
    pub async fn end_session(&self) {
        self.lock.lock().await.take();
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
        let path = self.file(rt)?;
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.err(format!("cannot read {rt}.ndjson: {e}"))),
        };
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                serde_json::from_str(l)
                    .map_err(|e| self.err(format!("{rt}.ndjson line {}: not JSON ({e})", i + 1)))
            })
            .collect()
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

    /// Replace `<rt>.ndjson` with `resources`: unique temporary file, fsync, rename,
    /// directory fsync. Called with the lock held.
    fn save(&self, rt: &str, resources: &[Value]) -> Result<(), FhirError> {
        let path = self.file(rt)?;
        let mut text = String::new();
        for r in resources {
            text.push_str(&serde_json::to_string(r).unwrap_or_default());
            text.push('\n');
        }
        let tmp = self.dir.join(self.temp_name(rt));
        let written = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .and_then(|mut f| {
                f.write_all(text.as_bytes())?;
                f.sync_all()
            })
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(self.err(format!("cannot write {rt}.ndjson: {e}")));
        }
        sync_dir(&self.dir).map_err(|e| {
            self.err(format!(
                "{rt}.ndjson was replaced but the directory could not be synced: {e}"
            ))
        })
    }

    /// The lock for one write: none if a writer session holds it already.
    async fn write_lock(&self, session: &Option<File>) -> Result<Option<File>, FhirError> {
        match session {
            Some(_) => Ok(None),
            None => self.acquire(&|_| {}).await.map(Some),
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

    pub async fn search(&self, q: &Query) -> Result<Vec<Value>, FhirError> {
        let _g = self.lock.lock().await;
        self.ops.fetch_add(1, Ordering::Relaxed);
        let all = self.load(&q.resource_type)?;
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
        Ok(all
            .into_iter()
            .filter(|r| matches(r, &q.params))
            .map(|r| match &elements {
                Some(keep) => subset(r, keep),
                None => r,
            })
            .collect())
    }

    pub async fn read(&self, rt: &str, id: &str) -> Result<Option<Value>, FhirError> {
        let _g = self.lock.lock().await;
        self.ops.fetch_add(1, Ordering::Relaxed);
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
        let g = self.lock.lock().await;
        let _w = self.write_lock(&g).await?;
        self.ops.fetch_add(1, Ordering::Relaxed);
        let rt = resource_type(resource)?;
        let mut all = self.load(rt)?;
        if let Some(q) = if_none_exist
            && let Some(existing) = all.iter().find(|r| matches(r, &q.params))
        {
            return Ok(Written {
                existed: true,
                ..written(existing)
            });
        }
        let mut r = resource.clone();
        r["id"] = json!(self.new_id());
        Self::stamp(&mut r, 1);
        let w = written(&r);
        all.push(r);
        self.save(rt, &all)?;
        Ok(w)
    }

    pub async fn update(&self, resource: &Value, pre: &Precondition) -> Result<Written, FhirError> {
        let g = self.lock.lock().await;
        let _w = self.write_lock(&g).await?;
        self.ops.fetch_add(1, Ordering::Relaxed);
        let rt = resource_type(resource)?;
        let id = resource
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(|| self.err(format!("update of {rt} without an id")))?;
        let mut all = self.load(rt)?;
        let pos = all
            .iter()
            .position(|r| r.get("id").and_then(Value::as_str) == Some(id));
        let current_version = pos.map(|i| version_of(&all[i])).unwrap_or(0);
        if let Some(i) = pos
            && !precondition_holds(&all[i], pre)
        {
            return Err(FhirError::Conflict {
                resource: super::shown(rt, id),
                status: 412,
            });
        }
        if pos.is_none() && pre.version_id.is_some() {
            return Err(FhirError::Conflict {
                resource: super::shown(rt, id),
                status: 412,
            });
        }
        let mut r = resource.clone();
        Self::stamp(&mut r, current_version + 1);
        let w = written(&r);
        match pos {
            Some(i) => all[i] = r,
            None => all.push(r),
        }
        self.save(rt, &all)?;
        Ok(w)
    }

    pub async fn delete(&self, rt: &str, id: &str, pre: &Precondition) -> Result<(), FhirError> {
        let g = self.lock.lock().await;
        let _w = self.write_lock(&g).await?;
        self.ops.fetch_add(1, Ordering::Relaxed);
        let mut all = self.load(rt)?;
        let Some(i) = all
            .iter()
            .position(|r| r.get("id").and_then(Value::as_str) == Some(id))
        else {
            return Ok(());
        };
        if !precondition_holds(&all[i], pre) {
            return Err(FhirError::Conflict {
                resource: super::shown(rt, id),
                status: 412,
            });
        }
        all.remove(i);
        self.save(rt, &all)
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
            // reads rely on atomic renames, not on the lock
            assert_eq!(second.search(&Query::new("Group")).await.unwrap().len(), 1);

            first.end_session().await;
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
