#!/usr/bin/env node
'use strict';
/*
 * canvas-simulator.cjs: a SIMULATOR of the *documented* Canvas Medical FHIR API ("Fumage", v2),
 * written only for careplane's integration tests. It is NOT Canvas and it is not affiliated
 * with Canvas Medical. Every behaviour comes from /work/shared/reference/canvas-api.md (cited
 * as "canvas-api.md §N"). Where that document says a behaviour is undocumented, the code
 * says "simulator's choice". Real Canvas may differ; verify against a sandbox.
 *
 * Node 20, no npm dependencies. In-memory only. Environment:
 *   PORT (8090)  HOST (127.0.0.1)  SIM_CLIENT_ID (careplane-test)
 *   SIM_CLIENT_SECRET (careplane-secret)  SIM_TOKEN_TTL (36000 seconds)
 * Test-only control endpoints live under /__sim/ (no auth); see control() below.
 */
const http = require('node:http');
const crypto = require('node:crypto');
const { URL, URLSearchParams } = require('node:url');

const PORT = Number(process.env.PORT || 8090);
const HOST = process.env.HOST || '127.0.0.1';
const CLIENT_ID = process.env.SIM_CLIENT_ID || 'careplane-test';
const CLIENT_SECRET = process.env.SIM_CLIENT_SECRET || 'careplane-secret';
const TOKEN_TTL = Number(process.env.SIM_TOKEN_TTL || 36000); // canvas-api.md §1 OAuth2: expires_in 36000 (10 h)

const EXT_ROLES = 'http://schemas.canvasmedical.com/fhir/extensions/roles';
const ROLES_SYSTEM = 'http://schemas.canvasmedical.com/fhir/roles';
const EXT_LEAD = 'http://schemas.canvasmedical.com/fhir/extensions/careteam-lead';
const EXT_TASK_GROUP = 'http://schemas.canvasmedical.com/fhir/extensions/task-group';
const EXT_TASK_PERMALINK = 'http://schemas.canvasmedical.com/fhir/extensions/task-permalink';
// canvas-api.md §2: the 11 responsibility values (SDK TeamResponsibility has the same 11).
const RESPONSIBILITIES = new Set([
  'COLLECT_SPECIMENS_FROM_PATIENT', 'COMMUNICATE_DIAGNOSTIC_RESULTS_TO_PATIENT',
  'COORDINATE_REFERRALS_FOR_PATIENT', 'PROCESS_REFILL_REQUESTS', 'PROCESS_CHANGE_REQUESTS',
  'SCHEDULE_LAB_VISITS_FOR_PATIENT', 'POPULATION_HEALTH_CAMPAIGN_OUTREACH', 'COLLECT_PATIENT_PAYMENTS',
  'COMPLETE_OPEN_LAB_ORDERS', 'REVIEW_ERA_POSTING_EXCEPTIONS', 'REVIEW_COVERAGES']);
const CARETEAM_STATUSES = ['proposed', 'active', 'suspended', 'inactive', 'entered-in-error']; // §3 Status suffix
const TASK_STATUSES = new Set(['requested', 'completed', 'cancelled']); // §4 status
const TYPES = ['Group', 'Practitioner', 'Patient', 'CareTeam', 'Task', 'Consent'];
// canvas-api.md §1 Errors: status -> OperationOutcome issue code. 429 -> "throttled" is the
// simulator's choice (§10.11: rate limits are undocumented); 5xx -> "exception".
const ISSUE_CODE = { 400: 'invalid', 401: 'unknown', 403: 'forbidden', 404: 'not-found', 405: 'not-supported',
  412: 'conflict', 422: 'business-rule', 429: 'throttled' };

class HttpError extends Error {
  constructor(status, text) { super(text); this.status = status; }
}
const fail = (status, text) => { throw new HttpError(status, text); };
const operationOutcome = (status, text) => ({ resourceType: 'OperationOutcome', issue: [{ severity: 'error',
  code: ISSUE_CODE[status] || (status >= 500 ? 'exception' : 'processing'), details: { text } }] });

// ---------------------------------------------------------------- state
let state;
function reset() { // POST /__sim/reset empties everything
  state = {
    store: Object.fromEntries(TYPES.map((t) => [t, new Map()])), // insertion order = search order (simulator's choice)
    tokens: new Map(), // token -> expiry (ms)
    config: { roles: null, careTeamRoles: null, nonSchedulable: new Set() },
    stats: { tokensIssued: 0, requests: {} },
    faults: [],
    idCounter: 0,
    plugins: new Map(), // plugin name -> {name, version, is_enabled, files, variables, created, modified}
  };
}
reset();

const now = () => new Date().toISOString(); // ISO instant, milliseconds, UTC
const clone = (x) => structuredClone(x);
const isObj = (x) => x !== null && typeof x === 'object' && !Array.isArray(x);
const nonEmpty = (s) => typeof s === 'string' && s.trim() !== ''; // §1 Errors: v2 rejects empty strings
const refId = (ref, type) => { const m = typeof ref === 'string' && ref.match(/^([A-Za-z]+)\/([^/]+)$/); return m && m[1] === type ? m[2] : null; };
const normRef = (v, type) => (v.includes('/') ? v : `${type}/${v}`); // search values: "Type/<id>" or bare id
const splitComma = (v) => v.split(',');
function optArray(v, what) {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) fail(400, `${what} must be an array`);
  return v;
}
function personName(r) {
  const n = Array.isArray(r.name) ? r.name[0] : null;
  if (!n) return undefined;
  return n.text || [...(n.given || []), n.family].filter(Boolean).join(' ') || undefined;
}
// Deterministic ids (a counter, hashed); reset restarts them. canvas-api.md §5/§6: staff and
// patient ids are 32 lowercase hex; §2/§4: Group and Task ids are UUIDs with dashes.
function newId(type) {
  for (;;) {
    const h = crypto.createHash('sha256').update(`canvas-sim:${type}:${++state.idCounter}`).digest('hex');
    const id = (type === 'Group' || type === 'Task')
      ? `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-${'89ab'[parseInt(h[16], 16) & 3]}${h.slice(17, 20)}-${h.slice(20, 32)}`
      : h.slice(0, 32);
    if (!state.store[type].has(id)) return id;
  }
}
// Canvas does not document `meta`; storing meta.lastUpdated on every create/update is the
// simulator's choice, so that a client has a timestamp for If-Unmodified-Since (§1 Concurrency).
// No meta.versionId is ever added (§1 Concurrency: no versionId, no _history).
const withMeta = (r, lastUpdated = now()) => {
  const { resourceType, id, meta, ...rest } = r;
  return { resourceType, id, meta: { ...(isObj(meta) ? meta : {}), lastUpdated }, ...rest };
};
function requireResource(body, type) {
  if (!isObj(body)) fail(400, 'Request body must be a JSON object');
  if (body.resourceType !== type) fail(400, `resourceType must be '${type}'`);
}
function requireRef(value, type, what, required) {
  if (value === undefined) { if (required) fail(400, `${what} is required`); return; }
  const id = refId(value && value.reference, type);
  if (!id) fail(400, `${what}.reference must be '${type}/<id>'`);
  if (!state.store[type].has(id)) fail(400, `Unknown ${type} '${id}' in ${what}`);
}
function stripEmptyArrays(r) { for (const k of Object.keys(r)) if (Array.isArray(r[k]) && r[k].length === 0) delete r[k]; return r; }

// canvas-api.md §1 Concurrency: If-Unmodified-Since (RFC 2616 date); a stale write gets 412.
// The stored meta.lastUpdated is truncated to whole seconds because HTTP dates have no fraction.
function checkUnmodifiedSince(req, stored) {
  const h = req.headers['if-unmodified-since'];
  if (h === undefined || !stored) return;
  const since = Date.parse(h);
  if (Number.isNaN(since)) fail(400, `Invalid If-Unmodified-Since date '${h}'`); // simulator's choice
  const last = Math.floor(Date.parse(stored.meta.lastUpdated) / 1000) * 1000;
  if (last > since) fail(412, 'Resource updated since If-Unmodified-Since date');
}

// ---------------------------------------------------------------- Group (§2)
const responsibilitiesOf = (g) => (Array.isArray(g.characteristic) ? g.characteristic : [])
  .filter((c) => c && c.code && c.code.text === 'responsibility').map((c) => c.valueCodeableConcept && c.valueCodeableConcept.text);

function validateGroup(body, id, prev) {
  requireResource(body, 'Group');
  if (body.type !== 'practitioner' && body.type !== 'person') fail(400, "Group.type is required and must be 'practitioner' or 'person'"); // §2 type
  if (prev && prev.type !== body.type) fail(400, 'Group.type cannot be changed on update'); // §10.4 undocumented: simulator's choice
  if (!nonEmpty(body.name)) fail(400, 'Group.name is required'); // §2 name
  if (typeof body.actual !== 'boolean') fail(400, 'Group.actual is required'); // §2 actual: required, always treated as true
  // §2: only type/actual/name/characteristic/member are stored; there is no `identifier` element, so
  // any other field sent is dropped (simulator's choice: silently ignored rather than rejected).
  const g = { resourceType: 'Group', id, type: body.type, actual: true, name: body.name };
  const chars = optArray(body.characteristic, 'Group.characteristic');
  if (chars.length && body.type === 'person') fail(400, 'Group.characteristic is not applicable to patient groups'); // §2 characteristic
  const resps = [];
  for (const c of chars) { // §2: code.text "responsibility", valueCodeableConcept.text one of the 11 values
    if (!c || !c.code || c.code.text !== 'responsibility') fail(400, "Group.characteristic.code.text must be 'responsibility'");
    const v = c.valueCodeableConcept && c.valueCodeableConcept.text;
    if (!RESPONSIBILITIES.has(v)) fail(400, `Unknown responsibility '${v}'`);
    if (resps.includes(v)) fail(400, `Responsibility ${v} is listed twice`); // simulator's choice
    resps.push(v);
  }
  // canvas-api.md §2 Uniqueness: a responsibility belongs to one team only. Status and text are
  // undocumented (§10.3); 422 business-rule with this text is the simulator's choice.
  for (const v of resps) {
    for (const other of state.store.Group.values()) {
      if (other.id !== id && responsibilitiesOf(other).includes(v)) fail(422, `Responsibility ${v} is already assigned to team '${other.name}'`);
    }
  }
  if (resps.length) g.characteristic = resps.map((v) => ({ code: { text: 'responsibility' }, valueCodeableConcept: { text: v }, exclude: false }));
  // §2 member[].entity.reference: Practitioner/<id> for teams, Patient/<id> for patient groups.
  // Existence is checked (simulator's choice for patient groups); no period/inactive (§2), so those are dropped.
  const memberType = body.type === 'practitioner' ? 'Practitioner' : 'Patient';
  const seen = new Set();
  const members = [];
  for (const m of optArray(body.member, 'Group.member')) {
    const ref = m && m.entity && m.entity.reference;
    const mid = refId(ref, memberType);
    if (!mid) fail(400, `Group.member.entity.reference must be '${memberType}/<id>' for a ${body.type} group, got '${ref}'`);
    if (!state.store[memberType].has(mid)) fail(400, `Unknown ${memberType} '${mid}' in Group.member`);
    if (seen.has(ref)) fail(400, `Duplicate Group.member '${ref}'`); // simulator's choice
    seen.add(ref);
    members.push({ entity: { reference: ref, type: memberType } });
  }
  // §9/§10.2: undocumented whether `member`/`characteristic` on PUT replace the lists and whether an
  // empty or omitted one clears them. Simulator's choice: the payload replaces both; omitted = cleared.
  if (members.length) g.member = members;
  return g;
}
function renderGroup(stored) {
  const g = clone(stored);
  const members = Array.isArray(g.member) ? g.member : [];
  g.quantity = members.length; // §2 quantity: member count, read-only, computed on every read
  for (const m of members) { // §2 member.entity.display: read-only, added on read
    const [t, mid] = String(m && m.entity && m.entity.reference).split('/');
    const r = state.store[t] && state.store[t].get(mid);
    if (r && personName(r)) m.entity.display = personName(r);
  }
  return g;
}

// ---------------------------------------------------------------- Practitioner (§5), Patient (§6)
function validatePractitioner(body, id, prev) {
  requireResource(body, 'Practitioner');
  for (const e of optArray(body.extension, 'Practitioner.extension')) {
    if (!isObj(e) || !nonEmpty(e.url)) fail(400, 'Practitioner.extension entries need a url');
    if (e.url !== EXT_ROLES) continue;
    // §5 Roles on FHIR: sub-extensions {url:"code", valueCoding:{system, code}}; assigns existing roles only.
    for (const sub of optArray(e.extension, 'roles extension')) {
      const coding = sub && sub.valueCoding;
      if (!sub || sub.url !== 'code' || !coding || !nonEmpty(coding.code)) fail(400, "Each roles sub-extension must be {url:'code', valueCoding:{code}}");
      if (coding.system !== undefined && coding.system !== ROLES_SYSTEM) fail(400, `Role coding system must be '${ROLES_SYSTEM}'`);
      // §10.9: valid codes and the error are undocumented; 422 with this text is the simulator's choice.
      if (state.config.roles && !state.config.roles.includes(coding.code)) fail(422, `Unknown role code '${coding.code}'`);
    }
  }
  if (prev) { // §5 telecom: "Emails cannot be changed on update"
    const storedEmails = (Array.isArray(prev.telecom) ? prev.telecom : []).filter((t) => t && t.system === 'email');
    for (const t of optArray(body.telecom, 'Practitioner.telecom')) {
      if (!t || t.system !== 'email') continue;
      const same = t.id !== undefined ? storedEmails.find((s) => s.id === t.id) : null;
      const changed = same ? same.value !== t.value : storedEmails.length > 0 && !storedEmails.some((s) => s.value === t.value);
      if (changed) fail(400, 'Emails cannot be changed on update');
    }
  }
  // §5 Update semantics: an extension omitted on update deletes the stored value, so the stored
  // `extension` becomes exactly what was sent; all other fields are stored as sent. (The username
  // exception of §5 is not simulated.) Create-time field requirements are not enforced.
  const { id: _i, meta: _m, ...rest } = body;
  return { resourceType: 'Practitioner', id, ...rest };
}
function validatePatient(body, id) { // §6 Patient: stored as given
  requireResource(body, 'Patient');
  const { id: _i, meta: _m, ...rest } = body;
  return { resourceType: 'Patient', id, ...rest };
}

// ---------------------------------------------------------------- Task (§4)
function validateTask(body, id, prev) {
  requireResource(body, 'Task');
  if (!TASK_STATUSES.has(body.status)) fail(400, 'Task.status is required and must be requested, completed or cancelled'); // §4 status
  if (body.intent !== 'unknown') fail(400, "Task.intent is required and must be 'unknown'"); // §4 intent
  // §4: description is required; on update an omitted description would clear it, which the
  // required rule forbids, so a PUT without one is a 400 (simulator's choice).
  if (!nonEmpty(body.description)) fail(400, 'Task.description is required');
  requireRef(body.requester, 'Practitioner', 'Task.requester', true); // §4 requester required
  requireRef(body.owner, 'Practitioner', 'Task.owner', false); // §4 owner optional
  requireRef(body.for, 'Patient', 'Task.for', false); // §4 for optional
  for (const i of optArray(body.input, 'Task.input')) { // §4 input = labels; unknown names are created
    if (!i || !i.type || i.type.text !== 'label' || !nonEmpty(i.valueString)) fail(400, "Task.input entries must be {type:{text:'label'}, valueString}");
  }
  const notes = optArray(body.note, 'Task.note');
  for (const n of notes) if (!n || !nonEmpty(n.text)) fail(400, 'Task.note.text is required');
  const exts = [];
  for (const e of optArray(body.extension, 'Task.extension')) {
    if (!isObj(e) || !nonEmpty(e.url)) fail(400, 'Task.extension entries need a url');
    if (e.url === EXT_TASK_PERMALINK) continue; // §4: read-only permalink, dropped
    if (e.url === EXT_TASK_GROUP) { // §4 task-group: valueReference Group/<uuid> (a team)
      const gid = refId(e.valueReference && e.valueReference.reference, 'Group');
      const g = gid && state.store.Group.get(gid);
      if (!g || g.type !== 'practitioner') fail(400, 'task-group extension must reference an existing team (Group type practitioner)');
      exts.push({ url: EXT_TASK_GROUP, valueReference: { reference: `Group/${gid}` } }); // type/display are read-only
    } else exts.push(e);
  }
  const { id: _i, meta: _m, lastModified: _l, extension: _e, note: _n, ...rest } = body; // lastModified: read-only (§4)
  const t = { resourceType: 'Task', id, ...rest };
  // §4 Update semantics: omitted description/owner/restriction/input are cleared (they are simply
  // absent from `rest`); omitted task-group extension and authoredOn are kept; notes are appended.
  if (prev) {
    const prevGroup = (prev.extension || []).find((e) => e.url === EXT_TASK_GROUP);
    if (prevGroup && !exts.some((e) => e.url === EXT_TASK_GROUP)) exts.unshift(prevGroup);
    if (t.authoredOn === undefined) t.authoredOn = prev.authoredOn;
    // §4 does not say what an omitted `for` does; keeping the task's patient is the simulator's choice.
    if (t.for === undefined && prev.for !== undefined) t.for = prev.for;
    t.note = [...(prev.note || []), ...notes]; // §4: every note sent is appended, no dedupe
  } else {
    if (t.authoredOn === undefined) t.authoredOn = now(); // §4 authoredOn defaults to now
    t.note = notes;
  }
  t.extension = exts;
  return stripEmptyArrays(t);
}
function renderTask(stored) {
  const t = clone(stored);
  t.lastModified = t.meta.lastUpdated; // §4 lastModified: read-only, added on read
  for (const e of t.extension || []) { // §4: a read adds type and display to the task-group reference
    if (e.url !== EXT_TASK_GROUP) continue;
    const g = state.store.Group.get(refId(e.valueReference.reference, 'Group'));
    e.valueReference.type = 'Group';
    if (g) e.valueReference.display = g.name;
  }
  return t;
}

// ---------------------------------------------------------------- CareTeam (§3)
// Stored record (simulator's internal shape, shown by /__sim/resource/CareTeam/<pid>):
// {resourceType, id: <pid>, meta, participants: [{status, lead, role, member}]}
function parseCareTeamId(id) {
  const [pid, suffix, ...more] = id.split('.');
  if (more.length || (suffix !== undefined && !CARETEAM_STATUSES.includes(suffix))) return null;
  return { pid, status: suffix || 'active' };
}
function renderCareTeam(rec, pid, status) {
  const patient = state.store.Patient.get(pid);
  const n = patient && Array.isArray(patient.name) ? patient.name[0] : null;
  const ct = { resourceType: 'CareTeam', id: status === 'active' ? pid : `${pid}.${status}` }; // §3 status suffix
  if (rec) ct.meta = clone(rec.meta);
  ct.status = status;
  if (n) ct.name = `Care Team for ${n.family}, ${(n.given || [])[0]}`; // §3: name is read-only
  ct.subject = { reference: `Patient/${pid}`, type: 'Patient' };
  if (patient && personName(patient)) ct.subject.display = personName(patient);
  const parts = rec ? rec.participants.filter((p) => p.status === status) : [];
  // §3 Lead extension. Emitting it with true/false on every participant is the simulator's choice.
  if (parts.length) {
    ct.participant = parts.map((p) => {
      const prac = state.store.Practitioner.get(refId(p.member.reference, 'Practitioner'));
      const member = { ...p.member };
      if (prac && personName(prac)) member.display = personName(prac);
      return { extension: [{ url: EXT_LEAD, valueBoolean: p.lead }], role: clone(p.role), member };
    });
  }
  return ct;
}
function careTeamViews(rec) { // §3 Search: one CareTeam per status present
  return CARETEAM_STATUSES.filter((s) => rec.participants.some((p) => p.status === s)).map((s) => renderCareTeam(rec, rec.id, s));
}
const leadOf = (p) => { const e = (Array.isArray(p.extension) ? p.extension : []).find((x) => x && x.url === EXT_LEAD); return e ? e.valueBoolean : undefined; };

function updateCareTeam(req, pid, body) {
  requireResource(body, 'CareTeam');
  if (body.id !== undefined && body.id !== pid) fail(400, 'CareTeam.id must match the URL id'); // §3 body id must match
  if (!CARETEAM_STATUSES.includes(body.status)) fail(400, 'CareTeam.status is required'); // §3/§10.6: v2 requires status; its value is otherwise ignored (simulator's choice)
  if (!body.subject || body.subject.reference !== `Patient/${pid}`) fail(400, `CareTeam.subject.reference must be 'Patient/${pid}'`); // §3
  // §3: one CareTeam per patient. Requiring the patient to exist (404 otherwise) is the simulator's choice.
  if (!state.store.Patient.has(pid)) fail(404, `Unknown Patient resource '${pid}'`);
  const rec = state.store.CareTeam.get(pid);
  checkUnmodifiedSince(req, rec);
  const payload = optArray(body.participant, 'CareTeam.participant');
  const seenPrac = new Set();
  const seenRole = new Set();
  const incoming = [];
  for (const p of payload) {
    const ref = p && p.member && p.member.reference;
    const prid = refId(ref, 'Practitioner'); // §3: only practitioners can be members via FHIR
    if (!prid) fail(400, "CareTeam.participant.member.reference must be 'Practitioner/<id>'");
    if (!state.store.Practitioner.has(prid)) fail(400, `Unknown Practitioner '${prid}' in CareTeam.participant`); // simulator's choice
    const roles = optArray(p.role, 'CareTeam.participant.role');
    const coding = roles[0] && Array.isArray(roles[0].coding) ? roles[0].coding[0] : null;
    if (!coding || !nonEmpty(coding.system) || !nonEmpty(coding.code) || !nonEmpty(coding.display)) {
      fail(400, 'CareTeam.participant.role[0].coding[0] needs system, code and display'); // §3 participant role
    }
    if (roles.length > 1 || roles[0].coding.length > 1) fail(422, `Practitioner '${prid}' may hold only one care team role`); // §3 one role per practitioner
    // §3: the role must match a Care Team Role configured in Settings (checked only once seeded).
    const cfg = state.config.careTeamRoles;
    if (cfg && !cfg.some((r) => r.system === coding.system && r.code === coding.code && r.display === coding.display)) {
      fail(422, `Care team role '${coding.system}|${coding.code}' (${coding.display}) is not configured`);
    }
    if (seenPrac.has(ref)) fail(422, `Practitioner '${prid}' has more than one role in this care team`); // §3 one role per practitioner
    const roleKey = `${coding.system}|${coding.code}`;
    if (seenRole.has(roleKey)) fail(422, `Care team role '${roleKey}' is held by more than one practitioner`); // §3 one practitioner per role
    seenPrac.add(ref); seenRole.add(roleKey);
    const lead = leadOf(p);
    if (lead !== undefined && typeof lead !== 'boolean') fail(400, 'careteam-lead extension needs valueBoolean');
    incoming.push({ ref, lead, role: [{ coding: [{ system: coding.system, code: coding.code, display: coding.display }] }] });
  }
  // §3 Lead: at most one active lead; if no participant carries the extension, the current lead stays.
  const anyLeadExt = incoming.some((p) => p.lead !== undefined);
  if (incoming.filter((p) => p.lead === true).length > 1) fail(422, 'At most one active care team lead is allowed');
  const prev = rec ? rec.participants : [];
  const prevLead = prev.find((p) => p.status === 'active' && p.lead);
  const active = incoming.map((p) => ({ status: 'active', lead: anyLeadExt ? p.lead === true : !!(prevLead && prevLead.member.reference === p.ref),
    role: p.role, member: { reference: p.ref, type: 'Practitioner' } }));
  // §3 Update semantics: the payload becomes the active team; everyone left out becomes inactive
  // (an omitted/empty participant list inactivates everyone). Participant identity = practitioner.
  const rest = prev.filter((p) => !seenPrac.has(p.member.reference))
    .map((p) => (p.status === 'active' ? { ...p, status: 'inactive', lead: false } : p));
  state.store.CareTeam.set(pid, withMeta({ resourceType: 'CareTeam', id: pid, participants: [...active, ...rest] }));
}

// ---------------------------------------------------------------- search (§1 Paging)
function dateRange(s) {
  let m = /^(\d{4})(?:-(\d{2}))?(?:-(\d{2}))?$/.exec(s);
  if (m) {
    const y = +m[1]; const mo = m[2] ? +m[2] - 1 : 0; const d = m[3] ? +m[3] : 1;
    const hi = m[3] ? Date.UTC(y, mo, d + 1) : m[2] ? Date.UTC(y, mo + 1, 1) : Date.UTC(y + 1, 0, 1);
    return [Date.UTC(y, mo, d), hi];
  }
  m = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?$/.exec(s);
  if (!m) return null;
  const lo = Date.parse(m[3] ? s : `${s}Z`); // no zone = UTC (simulator's choice)
  return Number.isNaN(lo) ? null : [lo, lo + (m[2] ? 1 : m[1] ? 1000 : 60000)];
}
// canvas-api.md §1 Paging: date prefixes eq ne gt ge lt le (FHIR range semantics on the value's precision).
function dateMatch(value, param) {
  const m = /^(eq|ne|gt|ge|lt|le)?(.*)$/.exec(param);
  const range = dateRange(m[2]);
  if (!range) fail(400, `Invalid date search value '${param}'`);
  const v = Date.parse(value);
  if (value === undefined || Number.isNaN(v)) return false;
  const [lo, hi] = range;
  return { eq: v >= lo && v < hi, ne: !(v >= lo && v < hi), gt: v >= hi, ge: v >= lo, lt: v < lo, le: v < hi }[m[1] || 'eq'];
}
const boolParam = (k, v) => { if (v !== 'true' && v !== 'false') fail(400, `Search parameter '${k}' must be true or false`); return v; };

// Unknown parameters -> 400 naming them (§1: v2 validates strictly); _count/_offset are paging.
// Repeating a parameter ANDs the values, a comma inside one value ORs them; `handled` keys are
// known parameters the caller applies itself.
function applyParams(list, params, matchers, handled = []) {
  for (const key of new Set(params.keys())) {
    if (key === '_count' || key === '_offset' || handled.includes(key)) continue;
    if (!matchers[key]) fail(400, `Unknown search parameter '${key}'`);
    for (const v of params.getAll(key)) {
      if (v === '') fail(400, `Search parameter '${key}' has an empty value`);
      list = list.filter((r) => splitComma(v).some((x) => matchers[key](r, x)));
    }
  }
  return list;
}
const identifierMatch = (r, v) => (r.identifier || []).some((i) => {
  if (!v.includes('|')) return i.value === v;
  const [sys, val] = v.split('|');
  return sys === '' ? !i.system && i.value === val : i.system === sys && (val === '' || i.value === val);
});
const SEARCH = {
  Group: (p) => applyParams([...state.store.Group.values()].map(renderGroup), p, { // §2 Search: _id and type only
    _id: (r, v) => r.id === v, type: (r, v) => r.type === v }),
  Practitioner: (p) => { // §5 Search
    const actives = p.has('active') ? p.getAll('active').flatMap(splitComma).map((v) => boolParam('active', v)) : ['true']; // default true; repeats OR
    const inclNs = boolParam('include-non-schedulable-practitioners', p.get('include-non-schedulable-practitioners') ?? 'false'); // default false
    const list = [...state.store.Practitioner.values()].map(clone)
      .filter((r) => actives.includes(String(r.active !== false)))
      .filter((r) => inclNs === 'true' || !state.config.nonSchedulable.has(r.id));
    return applyParams(list, p, {
      _id: (r, v) => r.id === v,
      name: (r, v) => (r.name || []).some((n) => [n.family, ...(n.given || [])].some((s) => typeof s === 'string' && s.toLowerCase().includes(v.toLowerCase()))),
      email: (r, v) => (r.telecom || []).some((t) => t.system === 'email' && String(t.value).toLowerCase() === v.toLowerCase()),
      npiNumber: (r, v) => (r.identifier || []).some((i) => i.system === 'http://hl7.org/fhir/sid/us-npi' && i.value === v),
    }, ['active', 'include-non-schedulable-practitioners']);
  },
  Patient: (p) => applyParams([...state.store.Patient.values()].map(clone), p, { // §6 Patient search (subset)
    _id: (r, v) => r.id === v,
    identifier: identifierMatch,
    active: (r, v) => String(r.active !== false) === boolParam('active', v),
    '_has:CareTeam:participant:member': (r, v) => { // §3 reverse lookup
      const rec = state.store.CareTeam.get(r.id);
      return !!rec && rec.participants.some((x) => x.status === 'active' && x.member.reference === normRef(v, 'Practitioner'));
    },
  }),
  Consent: (p) => applyParams([...state.store.Consent.values()].map(clone), p, { // §6 Consent search
    _id: (r, v) => r.id === v,
    patient: (r, v) => !!r.patient && r.patient.reference === normRef(v, 'Patient'),
    period: (r, v) => dateMatch(r.provision && r.provision.period && r.provision.period.start, v),
  }),
  CareTeam: (p) => applyParams([...state.store.CareTeam.values()].flatMap(careTeamViews), p, { // §3 Search
    patient: (r, v) => r.subject.reference === normRef(v, 'Patient'),
    participant: (r, v) => (r.participant || []).some((x) => x.member.reference === normRef(v, 'Practitioner')),
    status: (r, v) => r.status === v,
  }),
  Task: (p) => { // §4 Search
    let list = applyParams([...state.store.Task.values()].map(renderTask), p, {
      _id: (r, v) => r.id === v,
      description: (r, v) => String(r.description).toLowerCase().includes(v.toLowerCase()), // substring: simulator's choice
      label: (r, v) => (r.input || []).some((i) => String(i.valueString).toLowerCase() === v.toLowerCase()),
      status: (r, v) => r.status === v,
      owner: (r, v) => !!r.owner && r.owner.reference === normRef(v, 'Practitioner'),
      requester: (r, v) => !!r.requester && r.requester.reference === normRef(v, 'Practitioner'),
      patient: (r, v) => !!r.for && r.for.reference === normRef(v, 'Patient'),
      modified: (r, v) => dateMatch(r.lastModified, v),
      due: (r, v) => dateMatch(r.restriction && r.restriction.period && r.restriction.period.end, v),
    }, ['_sort']);
    const sort = p.get('_sort');
    if (sort !== null) { // §4 _sort ∈ _id, -_id, due-date, -due-date
      const keys = { _id: (r) => r.id, 'due-date': (r) => (r.restriction && r.restriction.period && r.restriction.period.end) || '\uffff' };
      const key = keys[sort.replace(/^-/, '')];
      if (!key) fail(400, `Unsupported _sort value '${sort}'`);
      const dir = sort.startsWith('-') ? -1 : 1;
      list = [...list].sort((a, b) => (key(a) < key(b) ? -dir : key(a) > key(b) ? dir : 0));
    }
    return list;
  },
};
function intParam(params, name, dflt, min) {
  const v = params.getAll(name).pop();
  if (v === undefined) return dflt;
  if (!/^\d+$/.test(v) || Number(v) < min) fail(400, `Invalid ${name} '${v}'`); // simulator's choice
  return Number(v);
}
function searchBundle(type, params, list) {
  const count = Math.min(intParam(params, '_count', 10, 1), 100); // §1 Paging: default 10, max 100 (larger = 100)
  const offset = intParam(params, '_offset', 0, 0);
  const total = list.length;
  const bundle = { resourceType: 'Bundle', type: 'searchset', total };
  if (total === 0) return bundle; // §1 Paging: an empty result has no links
  const page = list.slice(offset, offset + count);
  if (page.length) bundle.entry = page.map((resource) => ({ resource }));
  const base = [...params].filter(([k]) => k !== '_count' && k !== '_offset');
  const link = (relation, off) => ({ relation, url: `/${type}?${new URLSearchParams([...base, ['_count', String(count)], ['_offset', String(off)]])}` });
  bundle.link = [link('self', offset), link('first', 0)]; // §1 Paging: relative self/first/next/last
  if (offset + count < total) bundle.link.push(link('next', offset + count)); // no next => last page
  bundle.link.push(link('last', Math.floor((total - 1) / count) * count));
  return bundle;
}

// ---------------------------------------------------------------- FHIR dispatch
// §6 Consent: create only (no update), with the fields the doc requires. The documented
// upsert on patient + category coding is not simulated: tests seed consents.
function validateConsent(body, id, prev) {
  if (prev) fail(405, 'Consent has no update interaction'); // §6 "no update"
  requireResource(body, 'Consent');
  if (!['active', 'rejected'].includes(body.status)) fail(400, "Consent.status must be 'active' or 'rejected'"); // §6 create enum
  requireRef(body.patient, 'Patient', 'Consent.patient', true);
  if (!Array.isArray(body.category) || !body.category.some((c) => isObj(c) && Array.isArray(c.coding) && c.coding.length)) fail(400, 'Consent.category[].coding[] is required');
  return { ...body, resourceType: 'Consent', id };
}
const VALIDATE = { Group: validateGroup, Practitioner: validatePractitioner, Patient: validatePatient, Task: validateTask, Consent: validateConsent };
const RENDER = { Group: renderGroup, Task: renderTask, Practitioner: clone, Patient: clone, Consent: clone };

function parseJson(text) {
  if (!text) fail(400, 'Request body is required');
  try { return JSON.parse(text); } catch (e) { return fail(400, `Invalid JSON body: ${e.message}`); }
}
function authorized(req) { // §1 OAuth2: every FHIR request needs a Bearer token that is issued, unexpired, unrevoked
  const m = /^Bearer (\S+)$/.exec(req.headers.authorization || '');
  const exp = m && state.tokens.get(m[1]);
  return !!exp && exp > Date.now();
}
function fhir(req, res, url, text) {
  let segs;
  try { segs = url.pathname.split('/').filter(Boolean).map(decodeURIComponent); } catch { segs = ['?']; }
  const [type, id, ...more] = segs;
  const key = `${req.method} ${type}`;
  state.stats.requests[key] = (state.stats.requests[key] || 0) + 1; // /__sim/stats counts every FHIR request
  const fi = state.faults.findIndex((f) => (!f.method || f.method === req.method) && (!f.type || f.type === type));
  if (fi >= 0) { // /__sim/fail: injected faults are answered before authentication
    const f = state.faults[fi];
    if (--f.times <= 0) state.faults.splice(fi, 1);
    return send(res, f.status, operationOutcome(f.status, `Injected fault (HTTP ${f.status})`), f.retryAfter !== undefined ? { 'Retry-After': String(f.retryAfter) } : {});
  }
  if (!authorized(req)) fail(401, 'Authentication credentials were not provided or are invalid'); // §1 Errors 401 unknown
  if (!TYPES.includes(type) || more.length) fail(404, `Unknown resource type or route '${url.pathname}'`);
  const store = state.store[type];
  // §0/§9: no DELETE (or PATCH) for any resource; CareTeam has no create (§3: update is an upsert).
  if (req.method === 'GET' && id === undefined) return send(res, 200, searchBundle(type, url.searchParams, SEARCH[type](url.searchParams)));
  if (req.method === 'GET') {
    if (type === 'CareTeam') { // §3: id = patient id; ".<status>" reads the non-active participants
      const p = parseCareTeamId(id);
      const rec = p && store.get(p.pid);
      // A patient without a stored CareTeam reads as an empty one: simulator's choice (one per patient, §3).
      if (!p || (!rec && !state.store.Patient.has(p.pid))) fail(404, `Unknown CareTeam resource '${id}'`);
      return send(res, 200, renderCareTeam(rec, p.pid, p.status));
    }
    if (!store.has(id)) fail(404, `Unknown ${type} resource '${id}'`); // §1 Errors 404 text
    return send(res, 200, RENDER[type](store.get(id)));
  }
  if (req.method === 'POST' && id === undefined && type !== 'CareTeam') { // §1 Responses: 201, empty body, Location
    const body = parseJson(text);
    const newid = newId(type); // an id in the body is ignored on create (§2 "excluded on create"; simulator's choice)
    const r = VALIDATE[type](body, newid, null);
    store.set(newid, withMeta(r));
    return send(res, 201, undefined, { Location: `http://${req.headers.host}/${type}/${newid}` }); // no _history (§1)
  }
  if (req.method === 'PUT' && id !== undefined) { // §1 Responses: update -> 200, empty body
    const body = parseJson(text);
    if (type === 'CareTeam') {
      if (id.includes('.')) fail(400, 'Suffixed CareTeam ids are read-only'); // §10.6 undocumented: simulator's choice
      updateCareTeam(req, id, body);
      return send(res, 200);
    }
    const prev = store.get(id);
    if (!prev) fail(404, `Unknown ${type} resource '${id}'`); // no upsert outside CareTeam
    checkUnmodifiedSince(req, prev); // §1 Concurrency: checked before anything is stored
    if (isObj(body) && body.id !== undefined && body.id !== id) fail(400, `${type}.id must match the URL id`);
    store.set(id, withMeta(VALIDATE[type](body, id, prev)));
    return send(res, 200);
  }
  fail(405, `${req.method} is not supported on ${url.pathname}`); // §1 Errors 405 not-supported
}

// ---------------------------------------------------------------- plugin API (not FHIR)
// The instance's plugin endpoints as the canvas-plugins SDK's CLI calls them: PyPI `canvas`
// 0.261.0, canvas_cli/apps/plugin/plugin.py (cited as "plugin.py <function>"). plugin_url()
// builds <host>/plugin-io/plugins/<paths>/ (trailing slash). Bearer token as for FHIR
// (canvas_cli/apps/auth/utils.py request_api_token: the same /auth/token/, scope
// system/Plugins.*). Response fields other than the ones the CLI reads are simulator's choice.
//   POST   /plugin-io/plugins/                    install (plugin.py install): multipart `package`
//          (tar.gz), `is_enabled`, `secret`* -> 201; 409 when the name is installed
//   POST   /plugin-io/plugins/extract-metadata/   (plugin.py _get_name_from_metadata) -> 200 {name}
//   GET    /plugin-io/plugins/                    (plugin.py list) -> 200 {results:[{name,version,is_enabled}], next}
//   PATCH  /plugin-io/plugins/<name>/             (plugin.py update/enable/disable): `package`?,
//          `is_enabled`?, `secret`* as multipart or form -> 200
//   DELETE /plugin-io/plugins/<name>/?force=      (plugin.py uninstall) -> 204
//   GET    /plugin-io/plugins/<name>/metadata/    (plugin.py list_secrets) -> 200 {variables:[...]}
const zlib = require('node:zlib');
const PLUGIN_PAGE = Number(process.env.SIM_PLUGIN_PAGE || 20); // page size: simulator's choice
function multipart(req, raw) { // -> { fields: {name: [string]}, files: {name: Buffer} }
  const ct = req.headers['content-type'] || '';
  const out = { fields: {}, files: {} };
  const add = (k, v) => { (out.fields[k] = out.fields[k] || []).push(v); };
  if (ct.startsWith('application/x-www-form-urlencoded')) {
    for (const [k, v] of new URLSearchParams(raw.toString('utf8'))) add(k, v);
    return out;
  }
  const m = /boundary=(?:"([^"]+)"|([^;]+))/.exec(ct);
  if (!ct.startsWith('multipart/form-data') || !m) { if (raw.length) fail(400, 'Expected multipart/form-data'); return out; }
  const delim = Buffer.from(`--${m[1] || m[2]}`);
  let pos = raw.indexOf(delim);
  while (pos >= 0) {
    const start = pos + delim.length;
    if (raw.slice(start, start + 2).toString() === '--') break;
    const next = raw.indexOf(delim, start);
    if (next < 0) break;
    const part = raw.slice(start + 2, next - 2); // skip CRLF after the delimiter and before the next
    const sep = part.indexOf('\r\n\r\n');
    const head = part.slice(0, sep).toString('utf8');
    const body = part.slice(sep + 4);
    const name = (/name="([^"]*)"/.exec(head) || [])[1];
    if (name !== undefined) { if (/filename="/.test(head)) out.files[name] = body; else add(name, body.toString('utf8')); }
    pos = next;
  }
  return out;
}
function untar(gz) { // tar.gz (ustar / pax, as Python's tarfile writes) -> {path: text}
  let tar;
  try { tar = zlib.gunzipSync(gz); } catch (e) { return fail(400, `The package is not a gzip file: ${e.message}`); }
  const files = {};
  let off = 0;
  let paxPath = null;
  while (off + 512 <= tar.length) {
    const h = tar.slice(off, off + 512);
    if (h.every((b) => b === 0)) break;
    const str = (a, b) => h.slice(a, b).toString('utf8').replace(/\0.*$/s, '');
    const size = parseInt(str(124, 136).trim() || '0', 8);
    const type = str(156, 157) || '0';
    const prefix = str(345, 500);
    let name = paxPath || (prefix ? `${prefix}/${str(0, 100)}` : str(0, 100));
    paxPath = null;
    const data = tar.slice(off + 512, off + 512 + size);
    if (type === 'x') { const pm = /\d+ path=([^\n]*)\n/.exec(data.toString('utf8')); paxPath = pm ? pm[1] : null; }
    else if (type === '0' || type === '\0') files[name.replace(/^\.\//, '')] = data.toString('utf8');
    off += 512 + Math.ceil(size / 512) * 512;
  }
  return files;
}
function pluginPackage(parts) {
  const pkg = parts.files.package;
  if (!pkg) fail(400, 'A package file is required');
  const files = untar(pkg);
  if (!('CANVAS_MANIFEST.json' in files)) fail(400, 'The package has no CANVAS_MANIFEST.json at its root');
  let manifest;
  try { manifest = JSON.parse(files['CANVAS_MANIFEST.json']); } catch (e) { return fail(400, `CANVAS_MANIFEST.json is not JSON: ${e.message}`); }
  if (!isObj(manifest) || !nonEmpty(manifest.name)) fail(400, 'CANVAS_MANIFEST.json has no name');
  return { manifest, files };
}
const truthy = (v) => v !== undefined && ['true', '1'].includes(String(v).toLowerCase()); // requests sends True/False
function renderPlugin(p) {
  return { name: p.name, version: p.version, is_enabled: p.is_enabled, created: p.created, modified: p.modified };
}
function plugins(req, res, url, raw) {
  const segs = url.pathname.split('/').filter(Boolean).slice(2); // after plugin-io/plugins
  state.stats.requests[`${req.method} plugin-io`] = (state.stats.requests[`${req.method} plugin-io`] || 0) + 1;
  if (!authorized(req)) fail(401, 'Authentication credentials were not provided or are invalid');
  const base = `http://${req.headers.host}/plugin-io/plugins/`;
  if (segs.length === 0 && req.method === 'GET') {
    const all = [...state.plugins.values()];
    const page = Math.max(1, Number(url.searchParams.get('page') || 1));
    const slice = all.slice((page - 1) * PLUGIN_PAGE, page * PLUGIN_PAGE);
    const next = page * PLUGIN_PAGE < all.length ? `${base}?page=${page + 1}` : null;
    return send(res, 200, { count: all.length, next, previous: null, results: slice.map(renderPlugin) });
  }
  if (segs.length === 0 && req.method === 'POST') {
    const parts = multipart(req, raw);
    const { manifest, files } = pluginPackage(parts);
    if (state.plugins.has(manifest.name)) return send(res, 409, { detail: `Plugin ${manifest.name} already exists` });
    const at = now();
    const enabled = parts.fields.is_enabled ? truthy(parts.fields.is_enabled[0]) : true;
    state.plugins.set(manifest.name, { name: manifest.name, version: String(manifest.plugin_version || ''), is_enabled: enabled,
      files, variables: parts.fields.secret || [], created: at, modified: at });
    return send(res, 201, renderPlugin(state.plugins.get(manifest.name)));
  }
  if (segs.length === 1 && segs[0] === 'extract-metadata' && req.method === 'POST') {
    const { manifest } = pluginPackage(multipart(req, raw));
    return send(res, 200, { name: manifest.name, version: manifest.plugin_version, sdk_version: manifest.sdk_version });
  }
  const p = state.plugins.get(segs[0]);
  if (!p) fail(404, `Unknown plugin '${segs[0]}'`);
  if (segs.length === 2 && segs[1] === 'metadata' && req.method === 'GET') {
    return send(res, 200, { name: p.name, variables: (p.files['CANVAS_MANIFEST.json'] && JSON.parse(p.files['CANVAS_MANIFEST.json']).variables || [])
      .map((v) => ({ name: v.name, sensitive: !!v.sensitive, is_set: p.variables.some((s) => Buffer.from(s, 'base64').toString().startsWith(`${v.name}=`)) })) });
  }
  if (segs.length !== 1) fail(404, `Unknown plugin route '${url.pathname}'`);
  if (req.method === 'PATCH') {
    const parts = multipart(req, raw);
    if (parts.files.package) {
      const { manifest, files } = pluginPackage(parts);
      if (manifest.name !== p.name) fail(400, `The package is plugin ${manifest.name}, not ${p.name}`);
      p.files = files;
      p.version = String(manifest.plugin_version || '');
    }
    if (parts.fields.is_enabled) p.is_enabled = truthy(parts.fields.is_enabled[0]);
    if (parts.fields.secret) p.variables = parts.fields.secret;
    p.modified = now();
    return send(res, 200, renderPlugin(p));
  }
  if (req.method === 'DELETE') { state.plugins.delete(p.name); res.writeHead(204); return res.end(); }
  fail(405, `${req.method} is not supported on ${url.pathname}`);
}

// ---------------------------------------------------------------- auth + control endpoints
function token(req, res, text) { // §1 OAuth2: form-encoded client_credentials; no refresh token
  if (req.method !== 'POST') return send(res, 405, { error: 'method_not_allowed' });
  const form = new URLSearchParams(text);
  if (form.get('grant_type') !== 'client_credentials') return send(res, 400, { error: 'unsupported_grant_type' });
  if (form.get('client_id') !== CLIENT_ID || form.get('client_secret') !== CLIENT_SECRET) return send(res, 401, { error: 'invalid_client' });
  const tok = crypto.randomBytes(24).toString('base64url');
  state.tokens.set(tok, Date.now() + TOKEN_TTL * 1000);
  state.stats.tokensIssued += 1;
  return send(res, 200, { access_token: tok, expires_in: TOKEN_TTL, token_type: 'Bearer', scope: '' }); // scope: optional, full access if omitted (§1 Scopes)
}
function seedResource(r) { // stored as given (ids kept, meta.lastUpdated kept if given, else set)
  if (!isObj(r) || !TYPES.includes(r.resourceType)) fail(400, `Cannot seed resource type '${r && r.resourceType}'`);
  const lastUpdated = (r.meta && r.meta.lastUpdated) || now();
  if (r.resourceType !== 'CareTeam') {
    const id = r.id || newId(r.resourceType);
    state.store[r.resourceType].set(id, withMeta({ ...r, id }, lastUpdated));
    return id;
  }
  const parsed = parseCareTeamId(r.id || refId(r.subject && r.subject.reference, 'Patient') || '');
  if (!parsed || !parsed.pid) fail(400, 'A seeded CareTeam needs an id or subject');
  const status = r.id && r.id.includes('.') ? parsed.status : (r.status || 'active');
  const rec = state.store.CareTeam.get(parsed.pid) || { resourceType: 'CareTeam', id: parsed.pid, participants: [] };
  for (const p of optArray(r.participant, 'CareTeam.participant')) {
    rec.participants.push({ status, lead: leadOf(p) === true, role: clone(p.role), member: { type: 'Practitioner', ...p.member } });
  }
  state.store.CareTeam.set(parsed.pid, withMeta(rec, lastUpdated));
  return parsed.pid;
}
function control(req, res, url, text) {
  const route = `${req.method} ${url.pathname.replace(/\/+$/, '')}`;
  if (route === 'GET /__sim/health') return send(res, 200, { status: 'ok', pid: process.pid }); // pid: lets the start script tell its own server apart
  if (route === 'POST /__sim/reset') { reset(); return send(res, 200, { reset: true }); }
  if (route === 'GET /__sim/stats') return send(res, 200, state.stats);
  if (route === 'POST /__sim/revoke-tokens') { state.tokens.clear(); return send(res, 200, { revoked: true }); }
  if (route === 'POST /__sim/seed') {
    const body = text ? parseJson(text) : {};
    if (!isObj(body)) fail(400, 'Seed body must be a JSON object');
    const ids = optArray(body.resources, 'resources').map(seedResource);
    if (body.roles !== undefined) state.config.roles = optArray(body.roles, 'roles');
    if (body.careTeamRoles !== undefined) state.config.careTeamRoles = optArray(body.careTeamRoles, 'careTeamRoles');
    if (body.nonSchedulable !== undefined) state.config.nonSchedulable = new Set(optArray(body.nonSchedulable, 'nonSchedulable'));
    return send(res, 200, { ids });
  }
  if (route === 'POST /__sim/fail') {
    const f = parseJson(text);
    if (!isObj(f) || !Number.isInteger(f.status)) fail(400, 'fail needs an integer status');
    state.faults.push({ method: f.method, type: f.type, status: f.status, times: Number.isInteger(f.times) ? f.times : 1, retryAfter: f.retryAfter });
    return send(res, 200, { queued: true });
  }
  const pm = /^GET \/__sim\/plugin\/([^/]+)$/.exec(route);
  if (pm) { const p = state.plugins.get(decodeURIComponent(pm[1])); return p ? send(res, 200, p) : send(res, 404, operationOutcome(404, `Unknown plugin '${pm[1]}'`)); }
  const m = /^GET \/__sim\/resource\/([A-Za-z]+)\/([^/]+)$/.exec(route);
  if (m) {
    const r = state.store[m[1]] && state.store[m[1]].get(decodeURIComponent(m[2]));
    return r ? send(res, 200, r) : send(res, 404, operationOutcome(404, `Unknown ${m[1]} resource '${m[2]}'`));
  }
  return send(res, 404, operationOutcome(404, `Unknown control route '${route}'`));
}

// ---------------------------------------------------------------- server
function send(res, status, body, headers = {}) { // JSON or empty body; never an ETag (§1 Concurrency)
  const payload = body === undefined ? '' : JSON.stringify(body);
  const h = { ...headers, 'Content-Length': Buffer.byteLength(payload) };
  if (body !== undefined) h['Content-Type'] = 'application/json';
  res.writeHead(status, h);
  res.end(payload);
}
const server = http.createServer((req, res) => {
  const chunks = [];
  let size = 0;
  req.on('data', (c) => { size += c.length; if (size <= 10 * 1024 * 1024) chunks.push(c); });
  req.on('end', () => {
    res.on('finish', () => console.log(`${new Date().toISOString()} ${req.method} ${req.url} -> ${res.statusCode}`));
    try {
      if (size > 10 * 1024 * 1024) fail(413, 'Request body too large');
      const raw = Buffer.concat(chunks);
      const text = raw.toString('utf8');
      const url = new URL(req.url, 'http://sim.invalid');
      if (/^\/plugin-io\/plugins(\/|$)/.test(url.pathname)) return plugins(req, res, url, raw);
      if (url.pathname.startsWith('/__sim/')) return control(req, res, url, text);
      if (url.pathname.replace(/\/+$/, '') === '/auth/token') return token(req, res, text); // §1: on the EMR host in real Canvas
      return fhir(req, res, url, text);
    } catch (e) {
      if (e instanceof HttpError) return send(res, e.status, operationOutcome(e.status, e.message));
      console.error(e);
      return send(res, 500, operationOutcome(500, `Simulator error: ${e.message}`));
    }
  });
});
server.listen(PORT, HOST, () => console.log(`canvas-simulator listening on http://${HOST}:${PORT}`));
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => { server.close(() => process.exit(0)); server.closeAllConnections(); });
