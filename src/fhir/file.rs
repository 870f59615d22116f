//! The embedded default target: a directory of NDJSON files, one per resource type
//! (`Practitioner.ndjson`, `Group.ndjson`, …), the layout FHIR Bulk Data export writes.
//!
//! It keeps `meta.versionId` (a counter) and `meta.lastUpdated` like a server, checks
//! preconditions the same way, and supports the few search parameters careplane sends
//! (`_id`, `_tag`, `identifier`, `type`, `url`); any other parameter is an error rather than
//! a silently wrong answer. Each write replaces the file atomically (temp file + rename).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;

use super::{FhirError, Precondition, Query, Written, resource_type};

pub struct FileStore {
    dir: PathBuf,
    lock: Mutex<()>,
    ops: AtomicU64,
    counter: AtomicU64,
}

impl FileStore {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        FileStore {
            dir: dir.into(),
            lock: Mutex::new(()),
            ops: AtomicU64::new(0),
            counter: AtomicU64::new(0),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn request_count(&self) -> u64 {
        self.ops.load(Ordering::Relaxed)
    }

    fn err(&self, reason: impl Into<String>) -> FhirError {
        FhirError::Store {
            path: self.dir.display().to_string(),
            reason: reason.into(),
        }
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

    fn save(&self, rt: &str, resources: &[Value]) -> Result<(), FhirError> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| self.err(format!("cannot create the store directory: {e}")))?;
        let path = self.file(rt)?;
        let tmp = path.with_extension("ndjson.tmp");
        let mut text = String::new();
        for r in resources {
            text.push_str(&serde_json::to_string(r).unwrap_or_default());
            text.push('\n');
        }
        std::fs::write(&tmp, text).map_err(|e| self.err(format!("cannot write {rt}: {e}")))?;
        std::fs::rename(&tmp, &path).map_err(|e| self.err(format!("cannot replace {rt}: {e}")))
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
        let _g = self.lock.lock().await;
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
        let _g = self.lock.lock().await;
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
        let _g = self.lock.lock().await;
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
            .build()
            .unwrap()
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
