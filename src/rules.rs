//! Rules: patient-group membership evaluated over live patient data.
//!
//! Facts are read once from a few paged searches (all patients, all consents) and kept to
//! what rules need (no names, no free text). Groups are evaluated in `memberOf`
//! dependency order. Nothing here prints: results are sets of `Patient/<id>` references
//! that only leave the process pseudonymised (see [`Pseudonymizer`]).

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use crate::manifest::types::{Condition, ConsentStatus, Gender};
use crate::model::PatientGroup;

/// What rules can see of one patient.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PatientFacts {
    pub id: String,
    pub active: Option<bool>,
    /// Shared with every patient of the same gender (interned: [`Sym`]).
    pub gender: Option<Sym>,
    /// (year, month, day); month/day 1 when the server only has the year.
    pub birth_date: Option<(i64, u32, u32)>,
    pub identifiers: Vec<(String, String)>,
    pub states: Vec<String>,
    /// (category system, category code, status), interned: 200,000 consents of a handful
    /// of categories hold a handful of strings.
    pub consents: Vec<(Sym, Sym, Sym)>,
    /// Active care-team participation, one entry per participant of each active care team.
    pub care_team: Vec<CareTeamFact>,
}

/// One participant of one of a patient's active care teams, as rules and the care-team
/// planner see it: who, in which role, on whose care team, and whether they lead it. No
/// other element of the CareTeam is kept.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CareTeamFact {
    /// `Practitioner/<id>`.
    pub member: String,
    /// The role as `system|code`.
    pub role: String,
    /// The careplane project whose tag the CareTeam carries, if any.
    pub owner: Option<String>,
    /// The participant is the care team's lead.
    pub lead: bool,
}

/// One CareTeam participant: (`member.reference`, role `system|code` of its first coding,
/// lead). A lead is a participant extension whose url ends in `lead` set to true, as both
/// dialects write it (Canvas `…/careteam-lead`, R4 careplane's `…/care-team-lead`). Shared
/// by the patient facts, the live checks' care teams and apply's read-back, so all three
/// read the lead alike.
pub fn care_team_participant(part: &Value) -> Option<(String, String, bool)> {
    let member = part.pointer("/member/reference").and_then(Value::as_str)?;
    let role = part
        .pointer("/role/0/coding/0")
        .map(|c| {
            format!(
                "{}|{}",
                c["system"].as_str().unwrap_or_default(),
                c["code"].as_str().unwrap_or_default()
            )
        })
        .unwrap_or_default();
    let lead = part["extension"].as_array().into_iter().flatten().any(|e| {
        e["url"].as_str().is_some_and(|u| u.ends_with("lead")) && e["valueBoolean"] == true
    });
    Some((member.to_owned(), role, lead))
}

/// What conditions need besides the patient: other groups' members, today, and how the
/// manifests' staff and care-team-role names map to the server's.
pub struct Context<'a> {
    pub groups: &'a BTreeMap<String, BTreeSet<String>>,
    pub on: (i64, u32, u32),
    /// `PractitionerRef` → `Practitioner/<id>` (None: unresolvable, matches nobody).
    pub staff: &'a dyn Fn(&crate::model::PractitionerRef) -> Option<String>,
    /// care-team role name → `system|code`.
    pub care_team_roles: &'a BTreeMap<String, String>,
}

fn parse_date(s: &str) -> Option<(i64, u32, u32)> {
    let mut parts = s.split('-');
    let y = parts.next()?.parse().ok()?;
    let m = parts.next().map_or(Some(1), |x| x.parse().ok())?;
    let d = parts
        .next()
        .map_or(Some(1), |x| x.get(..2).unwrap_or(x).parse().ok())?;
    Some((y, m, d))
}

/// Today's date (UTC) as (year, month, day).
pub fn today() -> (i64, u32, u32) {
    let days = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() / 86_400)
        .unwrap_or(0) as i64;
    // Howard Hinnant's civil_from_days
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn age(birth: (i64, u32, u32), on: (i64, u32, u32)) -> i64 {
    let mut years = on.0 - birth.0;
    if (on.1, on.2) < (birth.1, birth.2) {
        years -= 1;
    }
    years
}

/// Facts from Patient, Consent and CareTeam resources (anything else is ignored).
pub fn facts(resources: &[Value]) -> BTreeMap<String, PatientFacts> {
    let mut b = FactsBuilder::default();
    for r in resources {
        b.add(r);
    }
    b.finish()
}

/// Patient facts built resource by resource, in any order (a consent may arrive before
/// its patient): each resource is reduced to what rules need as it arrives, so pages can
/// be dropped as soon as they are read. Consents and care teams are attached to their
/// patients by [`FactsBuilder::finish`]; those of patients never seen are dropped.
/// A consent category coding as rules see it: (system, code, status).
type ConsentFact = (Sym, Sym, Sym);

/// A string many patients share (a gender, a consent category or status), held once.
pub type Sym = std::sync::Arc<str>;

/// The shared copy of `s` (made on first sight).
fn intern(syms: &mut std::collections::HashSet<Sym>, s: &str) -> Sym {
    match syms.get(s) {
        Some(x) => x.clone(),
        None => {
            let x: Sym = s.into();
            syms.insert(x.clone());
            x
        }
    }
}

#[derive(Debug, Default)]
pub struct FactsBuilder {
    /// In arrival order (a later record of the same patient wins).
    patients: Vec<PatientFacts>,
    /// (patient id, category codings as (system, code, status)), in arrival order.
    consents: Vec<(String, Vec<ConsentFact>)>,
    /// (patient id, participants of one active care team), in arrival order.
    care_teams: Vec<(String, Vec<CareTeamFact>)>,
    /// Strings shared between patients ([`Sym`]).
    syms: std::collections::HashSet<Sym>,
}

impl FactsBuilder {
    /// Reduce one resource (Patient, Consent or CareTeam; anything else is ignored).
    pub fn add(&mut self, r: &Value) {
        match r["resourceType"].as_str() {
            Some("Patient") => self.add_patient(r),
            Some("Consent") => self.add_consent(r),
            Some("CareTeam") => self.add_care_team(r),
            _ => {}
        }
    }

    /// Everything `other` read, after what this one read (searches merge in their order).
    pub fn extend(&mut self, other: FactsBuilder) {
        // moved, not copied, into an empty builder (200,000 patients: no second list)
        fn append<T>(to: &mut Vec<T>, more: Vec<T>) {
            if to.is_empty() {
                *to = more;
            } else {
                to.extend(more);
            }
        }
        append(&mut self.patients, other.patients);
        append(&mut self.consents, other.consents);
        append(&mut self.care_teams, other.care_teams);
        self.syms.extend(other.syms);
    }

    /// The facts per patient id: patients, each with its consents and care teams.
    ///
    /// Built from one sorted list, so the map's nodes are full and each patient's lists
    /// are exactly as long as they need to be (200,000 patients: tens of MB less).
    pub fn finish(self) -> BTreeMap<String, PatientFacts> {
        let mut patients = self.patients;
        // stable: of two records of one patient, the later one stays (as `insert` would)
        patients.sort_by(|a, b| a.id.cmp(&b.id));
        let mut out: Vec<PatientFacts> = Vec::with_capacity(patients.len());
        for p in patients {
            match out.last_mut() {
                Some(last) if last.id == p.id => *last = p,
                _ => out.push(p),
            }
        }
        let find =
            |out: &[PatientFacts], pid: &str| out.binary_search_by(|p| p.id.as_str().cmp(pid)).ok();
        for (pid, codings) in self.consents {
            if let Some(i) = find(&out, &pid) {
                if out[i].consents.is_empty() {
                    out[i].consents = codings;
                } else {
                    out[i].consents.extend(codings);
                }
            }
        }
        for (pid, participants) in self.care_teams {
            if let Some(i) = find(&out, &pid) {
                out[i].care_team.extend(participants);
            }
        }
        out.into_iter()
            .map(|mut p| {
                p.consents.shrink_to_fit();
                p.care_team.shrink_to_fit();
                (p.id.clone(), p)
            })
            .collect()
    }

    fn add_patient(&mut self, r: &Value) {
        let Some(id) = r["id"].as_str() else { return };
        let f = PatientFacts {
            id: id.to_owned(),
            active: r["active"].as_bool(),
            gender: r["gender"].as_str().map(|g| intern(&mut self.syms, g)),
            birth_date: r["birthDate"].as_str().and_then(parse_date),
            identifiers: r["identifier"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|i| {
                    (
                        i["system"].as_str().unwrap_or_default().to_owned(),
                        i["value"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect(),
            states: r["address"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| a["state"].as_str().map(str::to_lowercase))
                .collect(),
            consents: Vec::new(),
            care_team: Vec::new(),
        };
        self.patients.push(f);
    }

    fn add_consent(&mut self, c: &Value) {
        let Some(pid) = c
            .pointer("/patient/reference")
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix("Patient/"))
        else {
            return;
        };
        let status = intern(&mut self.syms, c["status"].as_str().unwrap_or_default());
        let syms = &mut self.syms;
        let mut codings: Vec<ConsentFact> = c["category"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|cc| cc["coding"].as_array().into_iter().flatten())
            .map(|coding| {
                (
                    intern(syms, coding["system"].as_str().unwrap_or_default()),
                    intern(syms, coding["code"].as_str().unwrap_or_default()),
                    status.clone(),
                )
            })
            .collect();
        if !codings.is_empty() {
            codings.shrink_to_fit(); // one coding, most often: not room for four
            self.consents.push((pid.to_owned(), codings));
        }
    }

    fn add_care_team(&mut self, t: &Value) {
        let status = t["status"].as_str().unwrap_or("active");
        let Some(pid) = t
            .pointer("/subject/reference")
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix("Patient/"))
        else {
            return;
        };
        if status != "active" {
            return;
        }
        let owner = crate::vocab::ownership::tagged_project(t);
        let participants: Vec<CareTeamFact> = t["participant"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(care_team_participant)
            .map(|(member, role, lead)| CareTeamFact {
                member,
                role,
                owner: owner.clone(),
                lead,
            })
            .collect();
        if !participants.is_empty() {
            self.care_teams.push((pid.to_owned(), participants));
        }
    }
}

fn status_word(s: ConsentStatus) -> &'static str {
    match s {
        ConsentStatus::Draft => "draft",
        ConsentStatus::Proposed => "proposed",
        ConsentStatus::Active => "active",
        ConsentStatus::Rejected => "rejected",
        ConsentStatus::Inactive => "inactive",
        ConsentStatus::EnteredInError => "entered-in-error",
    }
}

/// Whether `c` holds for `p`; `groups` has the members of groups evaluated so far.
pub fn holds(c: &Condition, p: &PatientFacts, ctx: &Context<'_>) -> bool {
    let (groups, on) = (ctx.groups, ctx.on);
    match c {
        Condition::All(cs) => cs.iter().all(|c| holds(c, p, ctx)),
        Condition::Any(cs) => cs.iter().any(|c| holds(c, p, ctx)),
        Condition::Not(c) => !holds(c, p, ctx),
        Condition::CareTeam(ct) => {
            let Some(who) = (ctx.staff)(&ct.practitioner) else {
                return false;
            };
            let role = ct
                .role
                .as_ref()
                .map(|r| ctx.care_team_roles.get(r).cloned().unwrap_or_default());
            p.care_team
                .iter()
                .any(|f| f.member == who && role.as_ref().is_none_or(|want| want == &f.role))
        }
        Condition::Consent(cc) => {
            let want = status_word(cc.status.unwrap_or(ConsentStatus::Active));
            p.consents.iter().any(|(sys, code, status)| {
                **code == *cc.code
                    && cc.system.as_deref().is_none_or(|s| s == &**sys)
                    && &**status == want
            })
        }
        Condition::Identifier(ic) => p
            .identifiers
            .iter()
            .any(|(sys, val)| sys == &ic.system && ic.value.as_ref().is_none_or(|v| v == val)),
        Condition::Active(a) => p.active.unwrap_or(true) == *a,
        Condition::Gender(g) => {
            let want = match g {
                Gender::Male => "male",
                Gender::Female => "female",
                Gender::Other => "other",
                Gender::Unknown => "unknown",
            };
            p.gender.as_deref() == Some(want)
        }
        Condition::Age(range) => p.birth_date.is_some_and(|b| {
            let a = age(b, on);
            range.min.is_none_or(|m| a >= i64::from(m))
                && range.max.is_none_or(|m| a <= i64::from(m))
        }),
        Condition::Address(ac) => p.states.iter().any(|s| s == &ac.state.to_lowercase()),
        Condition::MemberOf(g) => groups
            .get(g)
            .is_some_and(|m| m.contains(&format!("Patient/{}", p.id))),
    }
}

/// Which patient data the declared rules need.
#[derive(Clone, Debug, Default)]
pub struct RuleReads {
    pub patients: bool,
    pub consents: bool,
    pub care_teams: bool,
    /// Open tasks, for routing rules.
    pub tasks: bool,
    /// Only tasks changed after this instant (`watch` after its first pass).
    pub tasks_since: Option<String>,
}

/// The patient searches the rules need, derived from every rule careplane evaluates: each
/// PatientGroup's rule, each CareTeamAssignment's inline rule, and routing rules that test
/// a patient's group. `tasks_since` is left unset (it is the caller's).
///
/// Patients are read whenever any rule, group or assignment exists; consents when any rule
/// has a `consent` condition; care teams when any rule has a `careTeam` condition or any
/// care-team assignment exists (it must see who holds the role today).
pub fn needed_reads(d: &crate::model::DesiredState) -> RuleReads {
    let mut reads = RuleReads {
        patients: !d.patient_groups.is_empty()
            || !d.care_team_assignments.is_empty()
            || d.routing_rules.iter().any(|r| r.patient_group.is_some()),
        care_teams: !d.care_team_assignments.is_empty(),
        tasks: !d.routing_rules.is_empty(),
        ..Default::default()
    };
    let rules = d
        .patient_groups
        .iter()
        .filter_map(|g| g.rule.as_ref())
        .chain(
            d.care_team_assignments
                .iter()
                .filter_map(|a| a.rule.as_ref()),
        );
    for rule in rules {
        needs(rule, &mut reads);
    }
    reads
}

/// What one condition needs read. The match is exhaustive on purpose: a new condition type
/// must say which search it needs.
fn needs(c: &Condition, reads: &mut RuleReads) {
    match c {
        Condition::All(cs) | Condition::Any(cs) => cs.iter().for_each(|c| needs(c, reads)),
        Condition::Not(c) => needs(c, reads),
        Condition::Consent(_) => reads.consents = true,
        Condition::CareTeam(_) => reads.care_teams = true,
        // Patient fields: the Patient search (`patients`, set whenever a rule exists)
        Condition::Identifier(_)
        | Condition::Active(_)
        | Condition::Gender(_)
        | Condition::Age(_)
        | Condition::Address(_) => reads.patients = true,
        // other groups' members: their rules are walked as PatientGroups
        Condition::MemberOf(_) => reads.patients = true,
    }
}

/// The members (`Patient/<id>`) of every group, evaluated in dependency order.
pub fn evaluate(
    groups: &[PatientGroup],
    patients: &BTreeMap<String, PatientFacts>,
    on: (i64, u32, u32),
    staff: &dyn Fn(&crate::model::PractitionerRef) -> Option<String>,
    care_team_roles: &BTreeMap<String, String>,
) -> BTreeMap<String, BTreeSet<String>> {
    // Kahn's algorithm over group names: each group is evaluated once, after every group
    // it names in `memberOf`; groups in (or behind) a cycle or naming an undeclared
    // group are never ready and stay out (validation reports them).
    let deps: Vec<BTreeSet<String>> = groups
        .iter()
        .map(|g| {
            let mut d = Vec::new();
            if let Some(r) = &g.rule {
                crate::manifest::member_of(r, &mut d);
            }
            d.into_iter().collect()
        })
        .collect();
    let mut waiting: Vec<usize> = deps.iter().map(BTreeSet::len).collect();
    let mut dependents: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, d) in deps.iter().enumerate() {
        for name in d {
            dependents.entry(name.as_str()).or_default().push(i);
        }
    }
    let mut ready: std::collections::VecDeque<usize> =
        (0..groups.len()).filter(|&i| waiting[i] == 0).collect();
    let mut done: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    while let Some(i) = ready.pop_front() {
        let g = &groups[i];
        let mut members: BTreeSet<String> = match &g.rule {
            Some(rule) => {
                let ctx = Context {
                    groups: &done,
                    on,
                    staff,
                    care_team_roles,
                };
                patients
                    .values()
                    .filter(|p| holds(rule, p, &ctx))
                    .map(|p| format!("Patient/{}", p.id))
                    .collect()
            }
            None => BTreeSet::new(),
        };
        members.extend(g.include.iter().map(|i| format!("Patient/{}", i.value)));
        for e in &g.exclude {
            members.remove(&format!("Patient/{}", e.value));
        }
        let first = done.insert(g.name.clone(), members).is_none();
        // a name is done once (a second group of the same name is another error)
        if first {
            for &j in dependents.get(g.name.as_str()).into_iter().flatten() {
                waiting[j] -= 1;
                if waiting[j] == 0 {
                    ready.push_back(j);
                }
            }
        }
    }
    done
}

/// What routing rules can see of one open task. Titles stay in memory: they can hold
/// anything staff typed, so they are never printed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TaskFacts {
    pub id: String,
    pub description: String,
    pub labels: Vec<String>,
    /// `Patient/<id>` the task is for.
    pub patient: Option<String>,
}

/// Facts of the open tasks among `resources`.
pub fn task_facts(resources: &[Value]) -> Vec<TaskFacts> {
    resources.iter().filter_map(task_fact).collect()
}

/// The facts of one resource if it is an open task.
pub fn task_fact(r: &Value) -> Option<TaskFacts> {
    if r["resourceType"] != "Task" || r["status"] != "requested" {
        return None;
    }
    Some(TaskFacts {
        id: r["id"].as_str()?.to_owned(),
        description: r["description"].as_str().unwrap_or_default().to_owned(),
        labels: r["input"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|i| i.pointer("/type/text").and_then(Value::as_str) == Some("label"))
            .filter_map(|i| i["valueString"].as_str().map(str::to_owned))
            .collect(),
        patient: r
            .pointer("/for/reference")
            .and_then(Value::as_str)
            .map(str::to_owned),
    })
}

/// The rule (index into `rules`, which are in order) that routes each task: the first
/// whose every test holds.
pub fn route(
    tasks: &[TaskFacts],
    rules: &[crate::model::RoutingRule],
    groups: &BTreeMap<String, BTreeSet<String>>,
) -> Vec<(usize, usize)> {
    let compiled: Vec<Option<regex::Regex>> = rules
        .iter()
        .map(|r| {
            r.description_matches
                .as_ref()
                .and_then(|p| regex::Regex::new(p).ok())
        })
        .collect();
    let mut out = Vec::new();
    for (ti, t) in tasks.iter().enumerate() {
        let hit = rules.iter().enumerate().find(|(ri, r)| {
            r.description.as_ref().is_none_or(|d| d == &t.description)
                && compiled[*ri]
                    .as_ref()
                    .is_none_or(|re| re.is_match(&t.description))
                && r.label.as_ref().is_none_or(|l| t.labels.contains(l))
                && r.patient_group.as_ref().is_none_or(|g| {
                    t.patient
                        .as_ref()
                        .is_some_and(|p| groups.get(g).is_some_and(|m| m.contains(p)))
                })
        });
        if let Some((ri, _)) = hit {
            out.push((ti, ri));
        }
    }
    out
}

/// Keyed pseudonyms for patient references, stable across runs for one key, so
/// reviewers can follow one patient without seeing who it is.
pub struct Pseudonymizer {
    key: Option<Vec<u8>>,
}

/// Environment variable holding the pseudonym key.
pub const KEY_ENV: &str = "CAREPLANE_PSEUDONYM_KEY";

impl Pseudonymizer {
    pub fn from_env() -> Self {
        Pseudonymizer {
            key: std::env::var(KEY_ENV)
                .ok()
                .filter(|k| !k.is_empty())
                .inspect(|k| crate::output::register_secret(k))
                .map(String::into_bytes),
        }
    }

    pub fn with_key(key: &str) -> Self {
        Pseudonymizer {
            key: Some(key.as_bytes().to_vec()),
        }
    }

    /// Whether samples can be shown (a key is set).
    pub fn enabled(&self) -> bool {
        self.key.is_some()
    }

    fn mac(&self, data: &[u8]) -> Option<String> {
        let mut m = Hmac::<Sha256>::new_from_slice(self.key.as_ref()?).ok()?;
        m.update(data);
        Some(format!("{:x}", m.finalize().into_bytes()))
    }

    /// `pt-<12 hex>` for a reference, or `None` without a key.
    pub fn pseudonym(&self, reference: &str) -> Option<String> {
        self.mac(reference.as_bytes())
            .map(|h| format!("pt-{}", &h[..12]))
    }

    /// A digest of a whole member set (to check at apply time that it is unchanged).
    /// Without a key, a plain SHA-256 would let anyone confirm a guessed member list, so
    /// the digest is keyed with a per-process random key instead: such plans cannot be
    /// applied later from a file (apply re-plans and compares in the same process).
    pub fn digest(&self, members: &BTreeSet<String>) -> String {
        let joined = members.iter().cloned().collect::<Vec<_>>().join("\n");
        match self.mac(joined.as_bytes()) {
            Some(h) => format!("hmac-sha256:{h}"),
            None => {
                static PROCESS_KEY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
                let k = PROCESS_KEY.get_or_init(|| {
                    // RandomState is seeded from the operating system's randomness
                    use std::hash::BuildHasher;
                    let a = std::collections::hash_map::RandomState::new().hash_one(1u8);
                    let b = std::collections::hash_map::RandomState::new().hash_one(2u8);
                    format!("{a:016x}{b:016x}")
                });
                let mut m = Hmac::<Sha256>::new_from_slice(k.as_bytes()).expect("any key length");
                m.update(joined.as_bytes());
                format!("ephemeral:{:x}", m.finalize().into_bytes())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::types::{AgeRange, ConsentCondition};
    use crate::model::{Located, Source};
    use serde_json::json;

    fn src() -> Source {
        Source {
            file: "g.yaml".into(),
            line: 1,
            col: 1,
        }
    }

    fn group(
        name: &str,
        rule: Option<Condition>,
        include: &[&str],
        exclude: &[&str],
    ) -> PatientGroup {
        let loc = |v: &&str| Located {
            value: v.to_string(),
            source: src(),
        };
        PatientGroup {
            name: name.into(),
            display_name: name.into(),
            mode: Default::default(),
            max_removal_share: 0.2,
            rule,
            include: include.iter().map(loc).collect(),
            exclude: exclude.iter().map(loc).collect(),
            max_deviation: Default::default(),
            source: src(),
        }
    }

    fn world() -> BTreeMap<String, PatientFacts> {
        facts(&[
            json!({"resourceType":"Patient","id":"a","active":true,"gender":"female","birthDate":"1950-06-01","address":[{"state":"CA"}],
                   "identifier":[{"system":"urn:payer","value":"ACO-1"}]}),
            json!({"resourceType":"Patient","id":"b","gender":"male","birthDate":"2010-01-01"}),
            json!({"resourceType":"Patient","id":"c","active":false,"birthDate":"1990"}),
            json!({"resourceType":"Consent","status":"rejected","patient":{"reference":"Patient/b"},
                   "category":[{"coding":[{"system":"urn:consents","code":"A0001"}]}]}),
            json!({"resourceType":"Consent","status":"active","patient":{"reference":"Patient/a"},
                   "category":[{"coding":[{"system":"urn:consents","code":"A0001"}]}]}),
        ])
    }

    #[test]
    fn the_guides_opt_out_rule() {
        // in the group unless the A0001 consent is rejected
        let rule = Condition::Not(Box::new(Condition::Consent(ConsentCondition {
            code: "A0001".into(),
            system: None,
            status: Some(ConsentStatus::Rejected),
        })));
        let m = evaluate(
            &[group("opt-out", Some(rule), &[], &[])],
            &world(),
            (2026, 11, 28),
            &|_| None,
            &BTreeMap::new(),
        );
        assert_eq!(
            m["opt-out"],
            BTreeSet::from(["Patient/a".to_owned(), "Patient/c".to_owned()])
        );
    }

    #[test]
    fn conditions_combine_and_groups_build_on_groups() {
        let seniors = group(
            "seniors",
            Some(Condition::Age(AgeRange {
                min: Some(65),
                max: None,
            })),
            &[],
            &[],
        );
        let rule = Condition::All(vec![
            Condition::MemberOf("seniors".into()),
            Condition::Identifier(crate::manifest::types::IdentifierCondition {
                system: "urn:payer".into(),
                value: Some("ACO-1".into()),
            }),
            Condition::Address(crate::manifest::types::AddressCondition { state: "ca".into() }),
        ]);
        let aco = group("aco", Some(rule), &["b"], &["zzz"]);
        let inactive = group("inactive", Some(Condition::Active(false)), &[], &["c"]);
        let m = evaluate(
            &[aco, seniors, inactive],
            &world(),
            (2026, 11, 28),
            &|_| None,
            &BTreeMap::new(),
        );
        assert_eq!(m["seniors"], BTreeSet::from(["Patient/a".to_owned()]));
        assert_eq!(
            m["aco"],
            BTreeSet::from(["Patient/a".to_owned(), "Patient/b".to_owned()])
        );
        assert!(m["inactive"].is_empty(), "exclude wins over the rule");
    }

    #[test]
    fn age_counts_whole_years_and_today_is_a_date() {
        assert_eq!(age((2000, 6, 15), (2026, 6, 14)), 25);
        assert_eq!(age((2000, 6, 15), (2026, 6, 15)), 26);
        let (y, m, d) = today();
        assert!(y >= 2024 && (1..=12).contains(&m) && (1..=31).contains(&d));
    }

    #[test]
    fn pseudonyms_are_keyed_and_stable() {
        let p = Pseudonymizer::with_key("k1");
        let a = p.pseudonym("Patient/a").unwrap();
        assert_eq!(a, p.pseudonym("Patient/a").unwrap());
        assert_ne!(
            a,
            Pseudonymizer::with_key("k2")
                .pseudonym("Patient/a")
                .unwrap()
        );
        assert!(!a.contains('a') || a.starts_with("pt-"));
        assert!(Pseudonymizer { key: None }.pseudonym("Patient/a").is_none());
    }

    /// Every condition type, in every kind that carries rules, bare and nested: the reads
    /// derived from the manifests include the search that condition needs.
    #[test]
    fn needed_reads_cover_every_condition_in_every_rule_bearing_kind() {
        let header = "apiVersion: careplane.dev/v1\n";
        let base = format!(
            "{header}kind: CareTeamRole\nmetadata: {{name: pcp}}\nspec: {{code: {{code: \"1\", display: PCP}}}}\n---\n{header}kind: PatientGroup\nmetadata: {{name: base}}\nspec: {{include: [p1]}}\n---\n{header}kind: Team\nmetadata: {{name: t}}\nspec: {{}}\n"
        );
        let conditions = [
            ("consent", "{consent: {code: A0001, status: rejected}}"),
            (
                "careTeam",
                "{careTeam: {practitioner: {npi: \"1\"}, role: pcp}}",
            ),
            ("memberOf", "{memberOf: base}"),
            ("identifier", "{identifier: {system: \"urn:x\"}}"),
            ("active", "{active: true}"),
            ("gender", "{gender: female}"),
            ("age", "{age: {min: 18}}"),
            ("address", "{address: {state: CA}}"),
        ];
        let kinds = ["PatientGroup", "CareTeamAssignment", "RoutingRule"];
        for (cond, yaml) in conditions {
            for wrapped in [
                yaml.to_owned(),
                format!("{{not: {yaml}}}"),
                format!("{{all: [{{active: true}}, {{any: [{yaml}]}}]}}"),
            ] {
                for kind in kinds {
                    let doc = match kind {
                        "PatientGroup" => format!(
                            "{header}kind: PatientGroup\nmetadata: {{name: sel}}\nspec: {{rule: {wrapped}}}\n"
                        ),
                        "CareTeamAssignment" => format!(
                            "{header}kind: CareTeamAssignment\nmetadata: {{name: a}}\nspec: {{practitioner: {{npi: \"1\"}}, careTeamRole: pcp, patients: {{rule: {wrapped}}}}}\n"
                        ),
                        _ => format!(
                            "{header}kind: PatientGroup\nmetadata: {{name: sel}}\nspec: {{rule: {wrapped}}}\n---\n{header}kind: RoutingRule\nmetadata: {{name: r}}\nspec: {{match: {{patientGroup: sel}}, set: {{team: t}}}}\n"
                        ),
                    };
                    let files = BTreeMap::from([
                        ("base.yaml".to_owned(), base.clone()),
                        ("x.yaml".to_owned(), doc),
                    ]);
                    let m = crate::manifest::load_from_memory(files, "p")
                        .unwrap_or_else(|e| panic!("{kind} with {wrapped}: {:?}", e.diagnostics));
                    let r = needed_reads(&m.desired);
                    let at = format!("{cond} as {wrapped} in a {kind}");
                    assert!(r.patients, "{at}: patients");
                    assert_eq!(r.consents, cond == "consent", "{at}: consents");
                    assert_eq!(
                        r.care_teams,
                        cond == "careTeam" || kind == "CareTeamAssignment",
                        "{at}: care teams"
                    );
                    assert_eq!(r.tasks, kind == "RoutingRule", "{at}: tasks");
                    assert!(r.tasks_since.is_none());
                }
            }
        }
    }

    /// A care-team assignment's inline consent rule needs the Consent search even when no
    /// patient group reads consents (issue 8, item 12), and selects accordingly.
    #[test]
    fn an_assignments_inline_consent_rule_reads_consents() {
        let files = BTreeMap::from([(
            "a.yaml".to_owned(),
            "apiVersion: careplane.dev/v1\nkind: CareTeamRole\nmetadata: {name: pcp}\nspec: {code: {code: \"1\", display: PCP}}\n---\napiVersion: careplane.dev/v1\nkind: PatientGroup\nmetadata: {name: everyone}\nspec: {rule: {active: true}}\n---\napiVersion: careplane.dev/v1\nkind: CareTeamAssignment\nmetadata: {name: a}\nspec:\n  practitioner: {npi: \"1\"}\n  careTeamRole: pcp\n  patients: {rule: {not: {consent: {code: A0001, status: rejected}}}}\n".to_owned(),
        )]);
        let m = crate::manifest::load_from_memory(files, "p").unwrap();
        let r = needed_reads(&m.desired);
        assert!(r.patients && r.consents && r.care_teams && !r.tasks);
    }

    #[test]
    fn no_rules_no_patient_reads() {
        let files = BTreeMap::from([(
            "a.yaml".to_owned(),
            "apiVersion: careplane.dev/v1\nkind: Team\nmetadata: {name: t}\nspec: {}\n".to_owned(),
        )]);
        let m = crate::manifest::load_from_memory(files, "p").unwrap();
        let r = needed_reads(&m.desired);
        assert!(!r.patients && !r.consents && !r.care_teams && !r.tasks);
    }

    fn groups_yaml(groups: &[(&str, &str)]) -> BTreeMap<String, String> {
        let docs: Vec<String> = groups
            .iter()
            .map(|(name, rule)| {
                format!("apiVersion: careplane.dev/v1\nkind: PatientGroup\nmetadata: {{name: {name}}}\nspec: {{rule: {rule}}}\n")
            })
            .collect();
        BTreeMap::from([("g.yaml".to_owned(), docs.join("---\n"))])
    }

    #[test]
    fn memberof_cycles_are_reported_for_the_groups_in_them_only() {
        let files = groups_yaml(&[
            ("a", "{memberOf: b}"),
            ("b", "{all: [{memberOf: c}, {active: true}]}"),
            ("c", "{not: {memberOf: a}}"),
            ("behind", "{memberOf: a}"),
            ("selfish", "{any: [{memberOf: selfish}, {active: true}]}"),
            ("fine", "{memberOf: behind}"),
            ("base", "{active: true}"),
            ("top", "{all: [{memberOf: base}, {memberOf: fine}]}"),
        ]);
        let e = crate::manifest::load_from_memory(files, "p").unwrap_err();
        let mut cyclic: Vec<&str> = e
            .diagnostics
            .iter()
            .filter(|d| d.message.contains("depends on itself through memberOf"))
            .map(|d| d.message.split('\'').nth(1).unwrap())
            .collect();
        cyclic.sort();
        assert_eq!(cyclic, ["a", "b", "c", "selfish"], "{:?}", e.diagnostics);
    }

    #[test]
    fn a_long_memberof_chain_declared_backwards_is_evaluated_in_order() {
        // g0 <- g1 <- ... <- g299, declared last first; each adds one patient back
        let n = 300;
        let mut groups: Vec<PatientGroup> = (0..n)
            .map(|i| {
                let rule = (i > 0).then(|| Condition::MemberOf(format!("g{}", i - 1)));
                let rule = rule.unwrap_or(Condition::Active(true));
                group(&format!("g{i}"), Some(rule), &[], &[])
            })
            .collect();
        groups.reverse();
        groups.push(group(
            "loop-a",
            Some(Condition::MemberOf("loop-b".into())),
            &[],
            &[],
        ));
        groups.push(group(
            "loop-b",
            Some(Condition::MemberOf("loop-a".into())),
            &[],
            &[],
        ));
        groups.push(group(
            "orphan",
            Some(Condition::MemberOf("nowhere".into())),
            &[],
            &[],
        ));
        let m = evaluate(
            &groups,
            &world(),
            (2026, 11, 28),
            &|_| None,
            &BTreeMap::new(),
        );
        assert_eq!(
            m.len(),
            n,
            "groups in a cycle or naming an undeclared group are left out"
        );
        let first = &m["g0"];
        assert!(!first.is_empty());
        for i in 1..n {
            assert_eq!(&m[&format!("g{i}")], first, "g{i}");
        }
    }
}
