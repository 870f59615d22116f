"""careplane's fixed handler (src/dialect/plugin/handler.py) driven with the canvas SDK's own event
and effect types and its test database, on the package built from examples/clinic (the
team-based-care guide's routing rule and opt-out patient group)."""

import json
import uuid
from datetime import date, timedelta

from canvas_sdk.effects import EffectType
from canvas_sdk.events import Event, EventRequest, EventType
from canvas_sdk.test_utils.factories import (
    PatientFactory,
    PatientGroupFactory,
    PatientGroupMemberFactory,
    TaskFactory,
    TaskLabelFactory,
    TaskTaskLabelFactory,
    TeamFactory,
)
from canvas_sdk.v1.data.patient_consent import PatientConsent, PatientConsentCoding

GUIDE_TITLE = "Refer patient to Psychiatry (TBD)"


def event(kind, target):
    return Event(EventRequest(type=kind, target=str(target)))


def data(effect):
    return json.loads(effect.payload)["data"]


def dispatch(manifest, handler_module, kind):
    """Which of the package's handlers the plugin runner calls for an event type
    (plugin_runner: EVENT_HANDLER_MAP from each class's RESPONDS_TO, str or list)."""
    called = []
    for h in manifest["components"]["handlers"]:
        cls = getattr(handler_module, h["class"].split(":")[1])
        responds = cls.RESPONDS_TO if isinstance(cls.RESPONDS_TO, list) else [cls.RESPONDS_TO]
        if EventType.Name(kind) in responds:
            called.append(cls)
    return called


def teams():
    bhc = TeamFactory.create(name="Behavioral Health Coordinators", group_id=uuid.uuid4())
    lab = TeamFactory.create(name="Lab Team", group_id=uuid.uuid4())
    return bhc, lab


# --- routing ---------------------------------------------------------------------------


def test_the_guides_referral_task_created_goes_to_bhc_with_the_internal_referral_label(handler, package):
    bhc, lab = teams()
    package.ids(teams={"behavioral-health-coordinators": str(bhc.group_id), "lab-team": str(lab.group_id)})
    task = TaskFactory.create(title=GUIDE_TITLE, team=None)
    TaskTaskLabelFactory.create(task=task, task_label=TaskLabelFactory.create(name="Urgent"))

    effects = handler.RouteNewTask(event(EventType.TASK_CREATED, task.id)).compute()

    assert [e.type for e in effects] == [EffectType.UPDATE_TASK]
    sent = data(effects[0])
    assert sent["id"] == str(task.id)
    assert sent["team"] == {"id": str(bhc.id)}
    # existing labels stay; the rule's label is added; nothing else is sent
    assert sent["labels"] == ["Urgent", "Internal Referral"]
    assert set(sent) == {"id", "team", "labels"}


def test_the_same_title_on_a_task_update_yields_nothing(handler, package):
    bhc, lab = teams()
    package.ids(teams={"behavioral-health-coordinators": str(bhc.group_id)})
    manifest = json.loads((handler_dir(package) / "CANVAS_MANIFEST.json").read_text())
    for kind in (EventType.TASK_UPDATED, EventType.TASK_LABELS_ADJUSTED, EventType.TASK_COMPLETED):
        assert dispatch(manifest, handler, kind) == [], EventType.Name(kind)
    assert dispatch(manifest, handler, EventType.TASK_CREATED) == [handler.RouteNewTask]


def handler_dir(package):
    import canvas_sdk.utils.plugins as sdk_plugins
    from pathlib import Path

    import conftest

    return Path(sdk_plugins.PLUGIN_DIRECTORY) / conftest.NAME


def test_the_regex_rule_routes_case_insensitively_and_other_titles_are_left_alone(handler, package):
    bhc, lab = teams()
    package.ids(teams={"behavioral-health-coordinators": str(bhc.group_id), "lab-team": str(lab.group_id)})
    lab_task = TaskFactory.create(title="LAB follow-up for A1c")
    other = TaskFactory.create(title="Call the pharmacy")

    effects = handler.RouteNewTask(event(EventType.TASK_CREATED, lab_task.id)).compute()
    assert data(effects[0]) == {"id": str(lab_task.id), "team": {"id": str(lab.id)}}
    assert handler.RouteNewTask(event(EventType.TASK_CREATED, other.id)).compute() == []


def test_a_team_that_cannot_be_found_leaves_the_task_as_created(handler, package):
    package.ids(teams={"behavioral-health-coordinators": str(uuid.uuid4())})
    task = TaskFactory.create(title=GUIDE_TITLE)
    assert handler.RouteNewTask(event(EventType.TASK_CREATED, task.id)).compute() == []


# --- patient groups --------------------------------------------------------------------


def consent(patient, state):
    coding = PatientConsentCoding.objects.create(
        code="A0001",
        system="https://example.org/consents",
        display="Care management outreach",
        expiration_rule="never",
        is_mandatory=False,
        is_proof_required=False,
        show_in_patient_portal=False,
        summary="",
    )
    return PatientConsent.objects.create(
        patient=patient,
        category=coding,
        state=state,
        effective_date=date.today(),
        expired_date=date.today() + timedelta(days=365),
        originator=patient.user,
    )


def care_management(members=5):
    group = PatientGroupFactory.create(name="Care management (opt-out)")
    patients = [PatientFactory.create(active=True) for _ in range(members)]
    for p in patients:
        PatientGroupMemberFactory.create(patient_group=group, member=p)
    return group, patients


def test_a_rejected_opt_out_consent_deactivates_the_member(handler, package):
    group, patients = care_management()
    package.ids(groups={"care-management": str(group.id)})
    c = consent(patients[0], "rejected")

    effects = handler.MaintainPatientGroups(event(EventType.CONSENT_CREATED, c.id)).compute()

    assert [e.type for e in effects] == [EffectType.PATIENT_GROUP__DEACTIVATE_MEMBER]
    assert data(effects[0]) == {"group_id": str(group.id), "patient_ids": [patients[0].id]}


def test_an_accepted_consent_adds_the_patient(handler, package):
    group, _ = care_management()
    package.ids(groups={"care-management": str(group.id)})
    newcomer = PatientFactory.create(active=True)
    c = consent(newcomer, "accepted")

    effects = handler.MaintainPatientGroups(event(EventType.CONSENT_UPDATED, c.id)).compute()

    assert [e.type for e in effects] == [EffectType.PATIENT_GROUP__ADD_MEMBER]
    assert data(effects[0]) == {"group_id": str(group.id), "patient_ids": [newcomer.id]}
    # already a member: nothing to do
    assert handler.MaintainPatientGroups(event(EventType.PATIENT_UPDATED, _[1].id)).compute() == []


def test_a_group_careplane_did_not_resolve_is_never_touched(handler, package):
    group, patients = care_management()
    package.ids()  # no ids: as built without --target, or the group is not careplane's
    c = consent(patients[0], "rejected")
    newcomer = PatientFactory.create(active=True)
    assert handler.MaintainPatientGroups(event(EventType.CONSENT_CREATED, c.id)).compute() == []
    assert handler.MaintainPatientGroups(event(EventType.PATIENT_CREATED, newcomer.id)).compute() == []


def test_removals_stop_at_the_rules_share_of_members_per_day(handler, package):
    group, patients = care_management(members=5)  # 20% of 5: one removal a day
    package.ids(groups={"care-management": str(group.id)})
    first = handler.MaintainPatientGroups(event(EventType.CONSENT_CREATED, consent(patients[0], "rejected").id))
    assert len(first.compute()) == 1
    second = handler.MaintainPatientGroups(event(EventType.CONSENT_CREATED, consent(patients[1], "rejected").id))
    assert second.compute() == [], "a second removal the same day is more than 20% of the group"


def test_an_additive_group_never_loses_anyone(handler, package):
    group, patients = care_management()
    package.ids(groups={"care-management": str(group.id)})
    package.edit(lambda r: r["groups"][0].update(mode="additive"))
    c = consent(patients[0], "rejected")
    assert handler.MaintainPatientGroups(event(EventType.CONSENT_CREATED, c.id)).compute() == []
