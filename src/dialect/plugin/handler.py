"""careplane's rule interpreter, run inside Canvas by the plugin runner.

This file is fixed and hand-reviewed: `careplane plugin build` copies it unchanged into
every plugin it writes (src/dialect/plugin/handler.py in careplane's repository). What it does is
decided only by the data file `careplane_rules.json` next to CANVAS_MANIFEST.json, which
careplane writes from the reviewed manifests: routing rules (titles, regular expressions,
labels, order, team, owner) and patient-group rules (conditions, include/exclude lists,
mode, removal limit), with team and group ids resolved from the live target at build time.

Two handlers:
- RouteNewTask, on TASK_CREATED only: the first routing rule (data file order) whose tests
  all hold sets the task's team, owner and labels (existing labels stay). Nothing fires on
  later task events, so a person's re-route is never reverted.
- MaintainPatientGroups, on the patient, consent, identifier and address events that can
  change a rule's inputs: evaluates every group rule for the event's patient and adds or
  deactivates that one patient. Guards, as careplane's own apply:
    * only groups with an id in the data file are touched: the groups the manifests
      declare, resolved at build time exactly as `careplane apply` finds them;
    * an `additive` group never loses anyone;
    * an `authoritative` group loses at most `maxRemovalShare` of its active members per
      UTC day through this plugin (counted in the plugin cache; when the cache cannot be
      read, nobody is removed).
Patient names or other details are never logged: log lines carry rule and group names.
"""

import json
import re
from datetime import date

from canvas_sdk.caching.plugins import get_cache
from canvas_sdk.effects.patient_group import PatientGroupEffect
from canvas_sdk.effects.task import UpdateTask
from canvas_sdk.events import EventType
from canvas_sdk.handlers.base import BaseHandler
from canvas_sdk.templates import render_to_string
from canvas_sdk.v1.data.patient import Patient, PatientAddress, PatientExternalIdentifier
from canvas_sdk.v1.data.patient_consent import PatientConsent
from canvas_sdk.v1.data.patient_group import PatientGroup, PatientGroupMember
from canvas_sdk.v1.data.staff import Staff
from canvas_sdk.v1.data.task import Task
from canvas_sdk.v1.data.team import Team
from logger import log

RULES_FILE = "careplane_rules.json"
FORMAT = 1

# careplane's consent statuses (FHIR Consent.status) as Canvas records consents. Other
# statuses are refused by `careplane plugin build`.
CONSENT_STATES = {
    "active": ["accepted", "accepted_via_patient_portal"],
    "rejected": ["rejected", "rejected_via_patient_portal"],
}


def load_rules():
    """The data file, read through the SDK's plugin-file reader (the sandbox has no open())."""
    rules = json.loads(render_to_string(RULES_FILE))
    if rules.get("format") != FORMAT:
        raise ValueError("careplane_rules.json has format %r, this handler reads %r" % (rules.get("format"), FORMAT))
    return rules


def age_on(birth, today):
    years = today.year - birth.year
    if (today.month, today.day) < (birth.month, birth.day):
        years -= 1
    return years


def group_rule(rules, name):
    for g in rules.get("groups", []):
        if g["name"] == name:
            return g
    return None


def in_group(rules, name, patient, today, depth=0):
    """Whether the group's rule selects the patient (include wins over the rule, exclude over both)."""
    g = group_rule(rules, name)
    if g is None or depth > 32:
        return False
    if patient.id in g.get("exclude", []):
        return False
    if patient.id in g.get("include", []):
        return True
    if g.get("rule") is None:
        return False
    return holds(rules, g["rule"], patient, today, depth)


def holds(rules, cond, patient, today, depth=0):
    """Whether a condition (careplane's manifest form) holds for the patient."""
    kind = list(cond.keys())[0]
    value = cond[kind]
    if kind == "all":
        return all(holds(rules, c, patient, today, depth) for c in value)
    if kind == "any":
        return any(holds(rules, c, patient, today, depth) for c in value)
    if kind == "not":
        return not holds(rules, value, patient, today, depth)
    if kind == "consent":
        consents = PatientConsent.objects.filter(
            patient=patient,
            category__code=value["code"],
            state__in=CONSENT_STATES[value.get("status", "active")],
        )
        if value.get("system"):
            consents = consents.filter(category__system=value["system"])
        return consents.exists()
    if kind == "identifier":
        ids = PatientExternalIdentifier.objects.filter(patient=patient, system=value["system"])
        if value.get("value") is not None:
            ids = ids.filter(value=value["value"])
        return ids.exists()
    if kind == "active":
        return bool(patient.active) == value
    if kind == "age":
        if not patient.birth_date:
            return False
        years = age_on(patient.birth_date, today)
        return (value.get("min") is None or years >= value["min"]) and (
            value.get("max") is None or years <= value["max"]
        )
    if kind == "address":
        return PatientAddress.objects.filter(patient=patient, state_code__iexact=value["state"]).exists()
    if kind == "memberOf":
        return in_group(rules, value, patient, today, depth + 1)
    # `careplane plugin build` refuses every other condition; never guess.
    raise ValueError("careplane_rules.json holds a condition this handler does not know: %s" % kind)


def find_team(team):
    """The SDK Team for a rule's team: by the FHIR Group id careplane resolved, else by name."""
    if team.get("groupId"):
        found = list(Team.objects.filter(group_id=team["groupId"])[:2])
    else:
        found = list(Team.objects.filter(name=team["displayName"])[:2])
    return found[0] if len(found) == 1 else None


def find_staff(owner):
    if owner.get("id"):
        found = list(Staff.objects.filter(id=owner["id"])[:2])
    else:
        found = list(Staff.objects.filter(npi_number=owner["npi"], active=True)[:2])
    return found[0] if len(found) == 1 else None


def rule_matches(rules, rule, task, labels, today):
    m = rule["match"]
    title = task.title or ""
    if "title" in m and title != m["title"]:
        return False
    if "titleMatches" in m and re.search(m["titleMatches"], title) is None:
        return False
    if "label" in m and m["label"] not in labels:
        return False
    if "patientGroup" in m:
        if task.patient is None or not in_group(rules, m["patientGroup"], task.patient, today):
            return False
    return True


class RouteNewTask(BaseHandler):
    """Routes a task when it is created; never on later task events."""

    RESPONDS_TO = EventType.Name(EventType.TASK_CREATED)

    def compute(self):
        rules = load_rules()
        task = Task.objects.filter(id=self.event.target.id).first()
        if task is None or task.status != "OPEN":
            return []
        labels = [label.name for label in task.labels.all()]
        today = date.today()
        for rule in rules.get("routing", []):
            if not rule_matches(rules, rule, task, labels, today):
                continue
            wanted = rule["set"]
            update = {"id": str(task.id)}
            if wanted.get("team"):
                team = find_team(wanted["team"])
                if team is None:
                    log.warning("careplane: rule %s: team %s not found (or not unique); task left as created" % (rule["name"], wanted["team"]["name"]))
                    return []
                update["team_id"] = str(team.id)
            if wanted.get("owner"):
                staff = find_staff(wanted["owner"])
                if staff is None:
                    log.warning("careplane: rule %s: owner not found (or not unique); task left as created" % rule["name"])
                    return []
                update["assignee_id"] = str(staff.id)
            added = [label for label in wanted.get("addLabels", []) if label not in labels]
            if added:
                update["labels"] = labels + added
            log.info("careplane: rule %s routed a new task" % rule["name"])
            return [UpdateTask(**update).apply()]
        return []


# Events whose changes can move a patient in or out of a rule's group.
PATIENT_EVENTS = [
    "PATIENT_CREATED",
    "PATIENT_UPDATED",
    "CONSENT_CREATED",
    "CONSENT_UPDATED",
    "CONSENT_DELETED",
    "PATIENT_EXTERNAL_IDENTIFIER_CREATED",
    "PATIENT_EXTERNAL_IDENTIFIER_UPDATED",
    "PATIENT_EXTERNAL_IDENTIFIER_DELETED",
    "PATIENT_ADDRESS_CREATED",
    "PATIENT_ADDRESS_UPDATED",
    "PATIENT_ADDRESS_DELETED",
]


def removal_allowed(rule, group_id, today):
    """The blast-radius guard: removals today (this one included) within the rule's share."""
    members = PatientGroupMember.objects.filter(patient_group__id=group_id, active=True).count()
    if members == 0:
        return False
    key = "careplane:removals:%s:%s" % (group_id, today.isoformat())
    try:
        cache = get_cache()
        done = int(cache.get(key, 0))
    except Exception:
        log.warning("careplane: group %s: removal count unavailable; nobody removed" % rule["name"])
        return False
    if (done + 1) > rule["maxRemovalShare"] * members:
        log.warning("careplane: group %s: removal refused, more than %s of its members would leave today" % (rule["name"], rule["maxRemovalShare"]))
        return False
    cache.set(key, done + 1, timeout_seconds=2 * 24 * 3600)
    return True


class MaintainPatientGroups(BaseHandler):
    """Keeps the event's patient in or out of each group careplane manages."""

    RESPONDS_TO = PATIENT_EVENTS

    def patient(self):
        name = self.event.name
        target = self.event.target.id
        found = None
        if name.startswith("PATIENT_CREATED") or name.startswith("PATIENT_UPDATED"):
            found = Patient.objects.filter(id=target).first()
        elif name.startswith("CONSENT_"):
            row = PatientConsent.objects.filter(id=target).select_related("patient").first()
            found = row.patient if row else None
        elif name.startswith("PATIENT_EXTERNAL_IDENTIFIER_"):
            row = PatientExternalIdentifier.objects.filter(id=target).select_related("patient").first()
            found = row.patient if row else None
        elif name.startswith("PATIENT_ADDRESS_"):
            row = PatientAddress.objects.filter(id=target).select_related("patient").first()
            found = row.patient if row else None
        if found is None:
            context = self.event.context or {}
            pid = context.get("patient_id") or (context.get("patient") or {}).get("id")
            if pid:
                found = Patient.objects.filter(id=pid).first()
        return found

    def compute(self):
        rules = load_rules()
        patient = self.patient()
        if patient is None:
            return []
        today = date.today()
        effects = []
        for rule in rules.get("groups", []):
            group_id = rule.get("groupId")
            if not group_id:
                # Never touch a group careplane did not resolve from the manifests.
                continue
            if not PatientGroup.objects.filter(id=group_id).exists():
                log.warning("careplane: group %s is not on this instance; skipped" % rule["name"])
                continue
            wanted = in_group(rules, rule["name"], patient, today)
            member = PatientGroupMember.objects.filter(
                patient_group__id=group_id, member=patient, active=True
            ).exists()
            if wanted and not member:
                effects.append(PatientGroupEffect(group_id=group_id).add_member([patient.id]))
            elif not wanted and member and rule["mode"] == "authoritative":
                if removal_allowed(rule, group_id, today):
                    effects.append(PatientGroupEffect(group_id=group_id).deactivate_member([patient.id]))
        return effects
