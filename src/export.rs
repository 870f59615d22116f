//! Export: manifests for what is live now, so an existing organisation can start managing
//! its setup with careplane. Reads the target through the same dialect searches as `plan`
//! and writes what the dialect can read back; planning the exported manifests against the
//! same target changes nothing (objects careplane does not own yet show as `adopt`, which
//! `careplane import` takes over).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::observe::Observed;
use crate::vocab::{ObjectKind, ObservedObject, StaffIndex};

/// Export writes the schema next to the manifests, so editors find it offline.
pub const SCHEMA_FILE: &str = "careplane.schema.json";
const HEADER: &str = "# yaml-language-server: $schema=careplane.schema.json\n";

/// A manifest name from free text: lowercase letters, digits and dashes.
fn slug(s: &str) -> String {
    let mut out = String::new();
    for c in s.to_lowercase().chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let out = out.trim_matches('-').chars().take(60).collect::<String>();
    if out.is_empty() {
        "x".into()
    } else {
        out.trim_end_matches('-').to_owned()
    }
}

/// Unique names per kind.
#[derive(Default)]
struct Names(BTreeSet<String>);

impl Names {
    fn take(&mut self, wanted: &str) -> String {
        let base = slug(wanted);
        let mut name = base.clone();
        let mut n = 2;
        while !self.0.insert(name.clone()) {
            name = format!("{base}-{n}");
            n += 1;
        }
        name
    }
}

fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

fn doc(kind: &str, name: &str, comment: Option<&str>, spec: &str) -> String {
    let mut out = String::new();
    if let Some(c) = comment {
        for line in c.lines() {
            out.push_str(&format!("# {line}\n"));
        }
    }
    out.push_str(&format!(
        "apiVersion: careplane.dev/v1\nkind: {kind}\nmetadata:\n  name: {name}\nspec:\n{spec}"
    ));
    out
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|x| x.as_str().map(str::to_owned))
        .collect()
}

/// `{npi: "…"}`, `{email: …}` or `{id: …}` for a `Practitioner/<id>` reference.
fn staff_ref(staff: &StaffIndex, reference: &str) -> String {
    let id = reference.strip_prefix("Practitioner/").unwrap_or(reference);
    match staff.describe(reference).and_then(|d| d.split_once(' ')) {
        Some(("npi", v)) => format!("{{npi: {}}}", q(v)),
        Some(("email", v)) => format!("{{email: {}}}", q(v)),
        _ => format!("{{id: {}}}", q(id)),
    }
}

/// Manifest files (name → YAML text) for what `observed` holds.
pub fn manifests(observed: &Observed) -> BTreeMap<String, String> {
    let mut files: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut role_names: BTreeMap<String, String> = BTreeMap::new(); // code → manifest name
    let mut names: BTreeMap<&str, Names> = BTreeMap::new();
    let by_kind = |k: ObjectKind| observed.objects.iter().filter(move |o| o.kind == k);

    // Roles: from a role catalog (R4) or from the codes staff hold (Canvas).
    for o in by_kind(ObjectKind::RoleCatalog) {
        for (field, c) in &o.fields {
            let Some(code) = crate::vocab::object::catalog_entry(field) else {
                continue;
            };
            let name = names.entry("role").or_default().take(code);
            role_names.insert(code.to_owned(), name.clone());
            let mut spec = format!(
                "  code: {}\n  display: {}\n",
                q(code),
                q(c["display"].as_str().unwrap_or(code))
            );
            if let Some(a) = c["abbreviation"].as_str() {
                spec.push_str(&format!("  abbreviation: {}\n", q(a)));
            }
            spec.push_str(&format!(
                "  domain: {}\n",
                c["domain"].as_str().unwrap_or("clinical")
            ));
            if let Some(p) = c["privilegeLevel"].as_i64() {
                spec.push_str(&format!("  privilegeLevel: {p}\n"));
            }
            if let Some(t) = c["type"].as_str() {
                spec.push_str(&format!("  type: {t}\n"));
            }
            let groups = strings(c.get("authGroups"));
            if !groups.is_empty() {
                spec.push_str(&format!(
                    "  authGroups: [{}]\n",
                    groups.iter().map(|g| q(g)).collect::<Vec<_>>().join(", ")
                ));
            }
            files
                .entry("roles.yaml".into())
                .or_default()
                .push(doc("Role", &name, None, &spec));
        }
    }
    for o in by_kind(ObjectKind::Role) {
        let code = o
            .fields
            .get("code")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let name = names.entry("role").or_default().take(code);
        role_names.insert(code.to_owned(), name.clone());
        let spec = format!(
            "  code: {}\n  display: {}\n  domain: clinical\n",
            q(code),
            q(code)
        );
        let comment = format!(
            "Seen on the target ({}).\nDisplay and domain cannot be read through the API: fill them in from Settings.",
            o.evidence.as_deref().unwrap_or("in use")
        );
        files.entry("roles.yaml".into()).or_default().push(doc(
            "Role",
            &name,
            Some(&comment),
            &spec,
        ));
    }

    // Care-team roles.
    for o in by_kind(ObjectKind::CareTeamRoleCatalog) {
        for (field, c) in &o.fields {
            let Some(key) = crate::vocab::object::catalog_entry(field) else {
                continue;
            };
            let name = names.entry("ctr").or_default().take(key);
            let spec = format!(
                "  code:\n    system: {}\n    code: {}\n    display: {}\n",
                q(c["system"].as_str().unwrap_or("http://snomed.info/sct")),
                q(c["code"].as_str().unwrap_or_default()),
                q(c["display"].as_str().unwrap_or_default())
            );
            files
                .entry("care-team-roles.yaml".into())
                .or_default()
                .push(doc("CareTeamRole", &name, None, &spec));
        }
    }
    for o in by_kind(ObjectKind::CareTeamRole) {
        let code = o
            .fields
            .get("code")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let system = o
            .fields
            .get("system")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let name = names.entry("ctr").or_default().take(code);
        let spec = format!(
            "  code:\n    system: {}\n    code: {}\n    display: {}\n",
            q(system),
            q(code),
            q(code)
        );
        let comment = format!(
            "Seen on the target ({}).\nThe display cannot be read through the API: fill it in from Settings.",
            o.evidence.as_deref().unwrap_or("in use")
        );
        files
            .entry("care-team-roles.yaml".into())
            .or_default()
            .push(doc("CareTeamRole", &name, Some(&comment), &spec));
    }

    // Teams: managed ones, and the ones careplane would adopt.
    let mut teams: Vec<(Option<String>, &crate::vocab::Fields, bool)> = by_kind(ObjectKind::Team)
        .map(|o: &ObservedObject| (o.name.clone(), &o.fields, true))
        .collect();
    teams.extend(
        observed
            .foreign
            .iter()
            .filter(|f| f.kind == ObjectKind::Team)
            .map(|f| (None, &f.fields, false)),
    );
    for (name, fields, managed) in teams {
        let display = fields
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let name = match name {
            Some(n) => {
                names.entry("team").or_default().0.insert(n.clone());
                n
            }
            None => names.entry("team").or_default().take(display),
        };
        let resp = strings(fields.get("responsibilities"));
        let members: Vec<String> = strings(fields.get("members"))
            .iter()
            .map(|m| format!("    - {}\n", staff_ref(&observed.staff, m)))
            .collect();
        let spec = format!(
            "  displayName: {}\n  responsibilities: [{}]\n  members:{}",
            q(display),
            resp.join(", "),
            if members.is_empty() {
                " []\n".to_owned()
            } else {
                format!("\n{}", members.concat())
            }
        );
        let comment =
            (!managed).then_some("Not managed by careplane yet: `careplane import` takes it over.");
        files
            .entry("teams.yaml".into())
            .or_default()
            .push(doc("Team", &name, comment, &spec));
    }

    // Role assignments (only staff who hold roles).
    for o in by_kind(ObjectKind::RoleAssignment) {
        let practitioner = o
            .fields
            .get("practitioner")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| o.natural_key.clone())
            .unwrap_or_default();
        let codes = strings(o.fields.get("roles"));
        if codes.is_empty() {
            continue;
        }
        let wanted = o.name.clone().unwrap_or_else(|| {
            let who = staff_ref(&observed.staff, &practitioner);
            format!("staff {}", who.trim_matches(|c| c == '{' || c == '}'))
        });
        let name = names.entry("assignment").or_default().take(&wanted);
        let roles: Vec<String> = codes
            .iter()
            .map(|c| role_names.get(c).cloned().unwrap_or_else(|| slug(c)))
            .collect();
        let spec = format!(
            "  practitioner: {}\n  roles: [{}]\n",
            staff_ref(&observed.staff, &practitioner),
            roles.join(", ")
        );
        files.entry("staff.yaml".into()).or_default().push(doc(
            "RoleAssignment",
            &name,
            None,
            &spec,
        ));
    }

    // Plain configuration kinds: the fields are the manifest's spec, as read back.
    for e in crate::manifest::kinds::REGISTRY.iter().filter(|e| e.plain) {
        let Some(kind) = ObjectKind::of_manifest_kind(e.kind) else {
            continue;
        };
        for o in by_kind(kind) {
            let name = names
                .entry(e.kind)
                .or_default()
                .take(o.name.as_deref().unwrap_or(&o.id));
            // JSON values are YAML (flow style)
            let spec: String = o
                .fields
                .iter()
                .map(|(k, v)| format!("  {k}: {v}\n"))
                .collect();
            let spec = if spec.is_empty() {
                "  {}\n".to_owned()
            } else {
                spec
            };
            files
                .entry(format!("{}.yaml", kind.slug()))
                .or_default()
                .push(doc(e.kind, &name, None, &spec));
        }
    }

    let mut out: BTreeMap<String, String> = files
        .into_iter()
        .map(|(f, docs)| (f, format!("{HEADER}{}", docs.join("---\n"))))
        .collect();
    out.insert(
        SCHEMA_FILE.into(),
        crate::manifest::schema::manifest_schema_text(),
    );
    out
}
