//! JSON Patch (RFC 6902) documents that turn a resource as read into the resource a write
//! means, so a few changed list entries (members joining or leaving a 50,000-member group)
//! are sent as a few operations instead of the whole resource.
//!
//! Every patch is guarded: its first operation tests `meta.versionId` (the version the
//! patch was computed from; some servers ignore `If-Match` on PATCH, Medplum's router
//! among them), and each removal by index is preceded by a `test` of the entry it removes,
//! so a patch applied to anything but the resource it was computed from fails whole
//! instead of removing the wrong entry.

use serde_json::{Value, json};

/// Operations turning `live` into `want` (top-level elements; lists as removals by index,
/// highest first, plus entries appended at the end), or `None` when a patch cannot say it
/// (a different resource, `meta` changed, no version to guard with) or would not be
/// smaller than the resource itself.
pub fn diff(live: &Value, want: &Value) -> Option<Value> {
    let (l, w) = (live.as_object()?, want.as_object()?);
    if live.get("resourceType") != want.get("resourceType")
        || live.get("id") != want.get("id")
        || live.get("meta") != want.get("meta")
    {
        return None;
    }
    let version = live.pointer("/meta/versionId")?.as_str()?;
    let mut ops = vec![json!({"op": "test", "path": "/meta/versionId", "value": version})];
    for (k, lv) in l {
        if k == "meta" || k == "id" || k == "resourceType" {
            continue;
        }
        let path = format!("/{}", escape(k));
        match w.get(k) {
            None => ops.push(json!({"op": "remove", "path": path})),
            Some(wv) if wv == lv => {}
            Some(wv) => match (lv.as_array(), wv.as_array()) {
                (Some(la), Some(wa)) if !la.is_empty() && !wa.is_empty() => {
                    list_ops(&path, la, wa, &mut ops)
                }
                _ => ops.push(json!({"op": "replace", "path": path, "value": wv})),
            },
        }
    }
    for (k, wv) in w {
        if !l.contains_key(k) {
            ops.push(json!({"op": "add", "path": format!("/{}", escape(k)), "value": wv}));
        }
    }
    if ops.len() == 1 {
        // nothing differs: an empty patch still moves the version; keep the test only
        return Some(Value::Array(ops));
    }
    let ops = Value::Array(ops);
    let size = |v: &Value| serde_json::to_vec(v).map(|b| b.len()).unwrap_or(usize::MAX);
    (size(&ops) < size(want)).then_some(ops)
}

/// `la` into `wa`: entries of `la` not matched in order by `wa` are removed (each after a
/// `test` of its value), the rest of `wa` is appended. Exact for any two lists; small when
/// `wa` is `la` with a few entries removed and a few added at the end (how careplane's
/// merges change lists). A list mostly rewritten is replaced whole.
fn list_ops(path: &str, la: &[Value], wa: &[Value], ops: &mut Vec<Value>) {
    let mut removed = Vec::new();
    let mut j = 0;
    for (i, v) in la.iter().enumerate() {
        if j < wa.len() && wa[j] == *v {
            j += 1;
        } else {
            removed.push(i);
        }
    }
    if removed.len() + (wa.len() - j) > la.len().max(wa.len()) / 2 + 1 {
        ops.push(json!({"op": "replace", "path": path, "value": wa}));
        return;
    }
    for i in removed.into_iter().rev() {
        ops.push(json!({"op": "test", "path": format!("{path}/{i}"), "value": la[i]}));
        ops.push(json!({"op": "remove", "path": format!("{path}/{i}")}));
    }
    for v in &wa[j..] {
        ops.push(json!({"op": "add", "path": format!("{path}/-"), "value": v}));
    }
}

/// A JSON Pointer token (`~` and `/` escaped).
fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Applies `ops` as RFC 6902 does (the subset `diff` makes), for the round trip.
    fn apply(doc: &Value, ops: &Value) -> Result<Value, String> {
        let mut d = doc.clone();
        for op in ops.as_array().unwrap() {
            let path = op["path"].as_str().unwrap();
            let parts: Vec<&str> = path[1..].split('/').collect();
            let (last, parents) = parts.split_last().unwrap();
            let mut at = &mut d;
            for p in parents {
                at = match at {
                    Value::Object(o) => o.get_mut(*p).ok_or("no such path")?,
                    Value::Array(a) => a.get_mut(p.parse::<usize>().unwrap()).ok_or("no index")?,
                    _ => return Err("not a container".into()),
                };
            }
            match (op["op"].as_str().unwrap(), at) {
                ("test", Value::Object(o)) => {
                    if o.get(*last) != Some(&op["value"]) {
                        return Err(format!("test failed at {path}"));
                    }
                }
                ("test", Value::Array(a)) => {
                    if a.get(last.parse::<usize>().unwrap()) != Some(&op["value"]) {
                        return Err(format!("test failed at {path}"));
                    }
                }
                ("remove", Value::Object(o)) => {
                    o.remove(*last).ok_or("nothing to remove")?;
                }
                ("remove", Value::Array(a)) => {
                    a.remove(last.parse::<usize>().unwrap());
                }
                ("add" | "replace", Value::Object(o)) => {
                    o.insert((*last).to_owned(), op["value"].clone());
                }
                ("add", Value::Array(a)) if *last == "-" => a.push(op["value"].clone()),
                other => return Err(format!("unexpected {other:?}")),
            }
        }
        Ok(d)
    }

    fn group(members: &[&str]) -> Value {
        json!({"resourceType": "Group", "id": "g", "meta": {"versionId": "7"}, "type": "person",
            "actual": true, "member": members.iter().map(|m| json!({"entity": {"reference": m}})).collect::<Vec<_>>()})
    }

    #[test]
    fn a_few_members_joining_and_leaving_are_a_few_guarded_operations() {
        let many: Vec<String> = (0..50_000).map(|i| format!("Patient/p{i}")).collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        let live = group(&refs);
        let mut after: Vec<&str> = refs.clone();
        after.retain(|m| *m != "Patient/p3" && *m != "Patient/p500");
        after.push("Patient/new");
        let want = group(&after);
        let ops = diff(&live, &want).unwrap();
        let list = ops.as_array().unwrap();
        assert_eq!(
            list[0],
            json!({"op": "test", "path": "/meta/versionId", "value": "7"})
        );
        assert_eq!(list.len(), 1 + 2 * 2 + 1, "{ops:#}");
        // removals highest index first, each tested
        assert_eq!(list[1]["path"], "/member/500");
        assert_eq!(list[1]["op"], "test");
        assert_eq!(list[2], json!({"op": "remove", "path": "/member/500"}));
        assert_eq!(list[4], json!({"op": "remove", "path": "/member/3"}));
        // a few hundred bytes instead of the whole 50,000-member group
        let bytes = |v: &Value| serde_json::to_vec(v).unwrap().len();
        assert!(bytes(&ops) < 600, "{} bytes", bytes(&ops));
        assert!(bytes(&want) > 2_000_000, "{} bytes", bytes(&want));
        assert_eq!(apply(&live, &ops).unwrap(), want);
    }

    #[test]
    fn a_patch_of_another_version_or_other_entries_fails_whole() {
        let live = group(&["Patient/a", "Patient/b", "Patient/c", "Patient/d"]);
        let want = group(&["Patient/a", "Patient/c", "Patient/d"]);
        let ops = diff(&live, &want).unwrap();
        // someone removed Patient/a meanwhile (same version claimed): index 1 is now c
        let mut moved = group(&["Patient/b", "Patient/c", "Patient/d"]);
        assert!(apply(&moved, &ops).is_err());
        moved["meta"]["versionId"] = json!("8");
        assert!(apply(&moved, &ops).is_err());
    }

    #[test]
    fn other_elements_are_replaced_added_or_removed_and_the_round_trip_is_exact() {
        let live = json!({"resourceType": "Task", "id": "t", "meta": {"versionId": "1"},
            "status": "requested", "owner": {"reference": "Practitioner/a"},
            "input": [{"type": {"text": "x"}, "valueString": "1"}], "note": [{"text": "keep me"}],
            "description": "a long description that makes the resource larger than its patch"});
        let mut want = live.clone();
        want.as_object_mut().unwrap().remove("owner");
        want["extension"] = json!([{"url": "u", "valueReference": {"reference": "Group/t"}}]);
        want["input"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": {"text": "label"}, "valueString": "L"}));
        let ops = diff(&live, &want).unwrap();
        assert_eq!(apply(&live, &ops).unwrap(), want);
        // no version, or a different resource: no patch
        let mut unversioned = live.clone();
        unversioned["meta"] = json!({});
        assert!(diff(&unversioned, &unversioned).is_none());
        let mut other = want.clone();
        other["id"] = json!("u");
        assert!(diff(&live, &other).is_none());
    }

    #[test]
    fn a_list_rewritten_whole_is_replaced_whole() {
        let a: Vec<Value> = ["a", "b", "c", "d"].iter().map(|x| json!(x)).collect();
        let b: Vec<Value> = ["w", "x", "y", "z", "v"].iter().map(|x| json!(x)).collect();
        let mut ops = Vec::new();
        list_ops("/member", &a, &b, &mut ops);
        assert_eq!(
            ops,
            vec![json!({"op": "replace", "path": "/member", "value": b})]
        );
    }
}
