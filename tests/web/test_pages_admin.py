"""The admin workspace through the app: every section renders for an admin and for nobody
else, accounts (create with a first password shown once, role and unit, deactivate and
reactivate, reset, unlock), units, rules (a refused edit names the field and changes
nothing), the dry run's ranking, SLA policies, calendar days, prompts (listen, replace with
a WAV), and the audit trail of each action. Both backends."""

from __future__ import annotations

import io
import re
import wave
from datetime import timedelta

import numpy as np
import pytest
from sqlalchemy import select

from accounts.models import AuditEntry, Role, User
from accounts.signin import set_password
from dispatch.models import CalendarDay, Rule, Unit
from tests.web.test_pages_signin import _csrf, sign_in

PASSWORD = "Hotline-12345"
SECTIONS = (
    "/admin",
    "/admin/units",
    "/admin/units/WATER",
    "/admin/users",
    "/admin/rules",
    "/admin/rules/dry-run",
    "/admin/policies",
    "/admin/policies?new=1",
    "/admin/calendar",
    "/admin/calendar?year=2031",
    "/admin/prompts",
    "/admin/audit",
)


@pytest.fixture
def admin(client, session, world, clock):
    """The client signed in as the admin (water.handler has a password too)."""
    for username in ("admin", "water.handler"):
        user = session.scalars(select(User).where(User.username == username)).one()
        set_password(session, user_id=user.id, password=PASSWORD, now=clock.now())
    session.commit()
    assert sign_in(client, "admin").status_code == 303
    return client


def _post(client, path, data=None, files=None, page=None):
    token = _csrf(client.get(page or path.rsplit("/", 1)[0] or "/admin").text)
    return client.post(path, data={"csrf_token": token, **(data or {})}, files=files)


def _user(session, username):
    session.expire_all()
    return session.scalars(select(User).where(User.username == username)).one()


def _audit(session, action):
    session.expire_all()
    return session.scalars(
        select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)
    ).all()


@pytest.mark.parametrize("path", SECTIONS)
def test_given_admin_when_opening_each_section_then_it_renders(admin, path):
    response = admin.get(path)
    assert response.status_code == 200, response.text[:500]
    assert "管理" in response.text


def test_given_a_handler_when_opening_admin_pages_then_403_page(client, admin, world):
    admin.cookies.clear()
    sign_in(client, "water.handler")
    for path in ("/admin", "/admin/users", "/admin/prompts/greeting.wav"):
        assert client.get(path).status_code == 403


def test_given_new_handler_then_first_password_shown_once_and_must_be_changed(admin, session):
    page = _post(
        admin,
        "/admin/users",
        {"username": "zhao.lei", "display_name": "赵磊", "role": "handler", "unit_code": "WATER"},
    )
    assert page.status_code == 200
    password = re.search(r'id="new-password">([^<]+)<', page.text).group(1)
    user = _user(session, "zhao.lei")
    assert user.must_change_password and user.unit_id is not None
    assert password not in admin.get(f"/admin/users/{user.id}").text
    admin.cookies.clear()
    signed = sign_in(admin, "zhao.lei", password)
    assert signed.headers["location"] == "/account?must_change=1"
    assert [e.target for e in _audit(session, "admin.user.create")] == ["user:zhao.lei"]


def test_given_handler_without_unit_then_refused_in_words_and_audited(admin, session):
    page = _post(
        admin, "/admin/users", {"username": "no.unit", "display_name": "无", "role": "handler"}
    )
    assert page.status_code == 422
    assert "联络员必须属于一个单位" in page.text
    assert session.scalars(select(User).where(User.username == "no.unit")).first() is None
    assert [e.outcome for e in _audit(session, "admin.user.create")] == ["refused"]


def test_given_account_when_deactivated_reactivated_moved_and_reset_then_each_applies(
    admin, session
):
    user = _user(session, "water.handler")
    base = f"/admin/users/{user.id}"
    assert _post(admin, f"{base}/deactivate", page=base).status_code == 200
    assert _user(session, "water.handler").active is False
    assert _post(admin, f"{base}/reactivate", page=base).status_code == 200
    assert _user(session, "water.handler").active is True
    moved = _post(
        admin,
        f"{base}/role",
        {"role": "handler", "unit_code": "HOUSING", "is_head": "1"},
        page=base,
    )
    assert "已保存" in moved.text
    housing = session.scalars(select(Unit).where(Unit.code == "HOUSING")).one()
    assert (_user(session, "water.handler").unit_id, _user(session, "water.handler").is_head) == (
        housing.id,
        True,
    )
    reset = _post(admin, f"{base}/password", page=base)
    assert re.search(r'id="new-password">([^<]+)<', reset.text)
    assert _user(session, "water.handler").must_change_password
    actions = [e.action for e in _audit_all(session) if e.action.startswith("admin.user")]
    assert actions == [
        "admin.user.deactivate",
        "admin.user.reactivate",
        "admin.user.role",
        "admin.user.reset_password",
    ]


def _audit_all(session):
    session.expire_all()
    return session.scalars(select(AuditEntry).order_by(AuditEntry.id)).all()


def test_given_the_only_admin_when_deactivating_self_then_refused(admin, session):
    me = _user(session, "admin")
    page = _post(admin, f"/admin/users/{me.id}/deactivate", page=f"/admin/users/{me.id}")
    assert page.status_code == 409 and "最后一个" in page.text
    assert _user(session, "admin").active


def test_given_locked_account_when_unlocked_then_it_can_sign_in(admin, session, clock):
    user = _user(session, "water.handler")
    user.failed_logins, user.locked_until = 5, clock.now() + timedelta(minutes=15)
    session.add(user)
    session.commit()
    page = admin.get(f"/admin/users/{user.id}")
    assert "解锁" in page.text
    _post(admin, f"/admin/users/{user.id}/unlock", page=f"/admin/users/{user.id}")
    assert _user(session, "water.handler").locked_until is None


def test_given_unit_form_when_creating_under_a_parent_then_in_the_tree(admin, session):
    page = _post(
        admin,
        "/admin/units",
        {
            "code": "NEWST",
            "name": "新街道",
            "level": "street",
            "parent_code": "WATER",
            "active": "1",
        },
    )
    assert page.status_code == 200 and "新街道" in page.text
    bad = _post(admin, "/admin/units", {"code": "bad code!", "name": "", "level": "street"})
    assert bad.status_code == 422 and 'aria-invalid="true"' in bad.text


def _rule(session, name=None):
    session.expire_all()
    stmt = select(Rule).order_by(Rule.priority, Rule.name)
    if name:
        stmt = stmt.where(Rule.name == name)
    return session.scalars(stmt).first()


def test_given_invalid_rule_then_field_named_rule_unchanged_then_fixed(admin, session):
    rule = _rule(session)
    path = f"/admin/rules/{rule.id}"
    form = {
        "name": rule.name,
        "priority": str(rule.priority),
        "text_any": "停水",
        "regex": "([",
        "lead_unit": "NOPE",
    }
    refused = _post(admin, path, form, page=path)
    assert refused.status_code == 422
    assert "不是有效的正则表达式" in refused.text
    assert 'id="err-conditions-regex"' in refused.text
    before = _rule(session, rule.name)
    assert before.conditions == rule.conditions
    form.update(regex="", lead_unit="NOPE")
    unknown = _post(admin, path, form, page=path)
    assert 'id="err-actions-lead_unit"' in unknown.text and "没有编码为 NOPE 的单位" in unknown.text
    form.update(lead_unit="WATER")
    saved = _post(admin, path, form, page=path)
    assert saved.status_code == 200 and "规则已保存" in saved.text
    after = _rule(session, rule.name)
    assert after.conditions == {"text_any": ["停水"]} and after.actions["lead_unit"] == "WATER"
    assert [e.outcome for e in _audit(session, "admin.rule.update")] == [
        "refused",
        "refused",
        "ok",
    ]


def test_given_rule_when_disabled_from_the_list_then_off(admin, session):
    rule = _rule(session)
    _post(
        admin,
        f"/admin/rules/{rule.id}/enabled",
        {"enabled": "0", "back": "list"},
        page="/admin/rules",
    )
    assert _rule(session, rule.name).enabled is False


def test_given_pasted_text_when_dry_run_then_the_firing_rule_and_ranking(admin, session):
    page = _post(
        admin,
        "/admin/rules/dry-run",
        {"text": "小区停水两天了，还被欠薪，物业费也乱收"},
        page="/admin/rules/dry-run",
    )
    assert page.status_code == 200
    ranking = page.text.split('class="grid dense ranking"')[1].split("</table>")[0]
    assert re.findall(r'<a href="/admin/rules/\d+">([^<]+)</a>', ranking) == [
        "欠薪",
        "小区停水",
        "物业分类",
    ]
    assert "命中：" in page.text and 'class="fires"' in ranking
    partial = admin.post(
        "/admin/rules/dry-run",
        data={"text": "天气不错", "csrf_token": _csrf(admin.get("/admin/rules/dry-run").text)},
        headers={"HX-Request": "true"},
    )
    assert partial.text.lstrip().startswith('<section id="result"')


def test_given_policy_when_limits_changed_then_saved_and_a_bad_ratio_named(admin, session):
    page = admin.get("/admin/policies")
    policy_id = re.search(r'href="/admin/policies/(\d+)"', page.text).group(1)
    path = f"/admin/policies/{policy_id}"
    form = {
        "name": "general",
        "sign_limit": "12",
        "sign_unit": "hours",
        "reply_limit": "7",
        "reply_unit": "workdays",
        "close_limit": "10",
        "close_unit": "workdays",
        "warn_ratio": "1.5",
        "chain": "warning\nchase 0\nsupervision 24",
        "active": "1",
    }
    bad = _post(admin, path, form, page=path)
    assert bad.status_code == 422 and 'id="err-warn_ratio"' in bad.text
    form["warn_ratio"] = "0.8"
    assert _post(admin, path, form, page=path).status_code == 200
    assert "12 小时" in admin.get("/admin/policies").text


def test_given_a_holiday_when_added_then_the_year_shows_it(admin, session):
    page = _post(
        admin,
        "/admin/calendar/days",
        {"day": "2031-10-01", "kind": "holiday", "name": "国庆节"},
        page="/admin/calendar",
    )
    assert page.status_code == 200 and "国庆节" in page.text
    session.expire_all()
    row = session.get(CalendarDay, __import__("datetime").date(2031, 10, 1))
    assert row is not None and row.is_workday is False
    bad = _post(admin, "/admin/calendar/days", {"day": "someday"}, page="/admin/calendar")
    assert bad.status_code == 422 and 'id="err-day"' in bad.text


def _wav(rate=16000, seconds=0.3) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        t = np.arange(int(rate * seconds)) / rate
        w.writeframes((3000 * np.sin(2 * np.pi * 440 * t)).astype("<i2").tobytes())
    return buffer.getvalue()


def test_given_a_wav_when_replacing_a_prompt_then_converted_and_playable(admin, session):
    token = _csrf(admin.get("/admin/prompts").text)
    refused = admin.post(
        "/admin/prompts/greeting",
        data={"csrf_token": token},
        files={"audio": ("greeting.mp3", b"ID3 not a wav at all", "audio/mpeg")},
    )
    assert refused.status_code == 422 and "不是 WAV" in refused.text
    done = admin.post(
        "/admin/prompts/greeting",
        data={"csrf_token": token},
        files={"audio": ("greeting.wav", _wav(), "audio/wav")},
    )
    assert done.status_code == 200 and "已替换" in done.text
    audio = admin.get("/admin/prompts/greeting.wav")
    assert audio.status_code == 200 and audio.headers["content-type"] == "audio/wav"
    with wave.open(io.BytesIO(audio.content)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (8000, 1, 2)
    assert admin.get("/admin/prompts/nonesuch.wav").status_code == 404
    assert [e.outcome for e in _audit(session, "admin.prompt.replace")] == ["refused", "ok"]


def test_given_entries_when_filtering_the_audit_trail_by_person_and_action(admin, session):
    page = admin.get("/admin/audit?who=admin&action=sign_in")
    assert page.status_code == 200 and 'title="sign_in"' in page.text
    assert "admin" in page.text
    none = admin.get("/admin/audit?who=nobody.here")
    assert "nobody.here" in none.text
    partial = admin.get("/admin/audit?action=sign_in", headers={"HX-Request": "true"})
    assert partial.text.lstrip().startswith('<section id="results"')


def test_given_role_change_of_unknown_role_then_named(admin, session):
    user = _user(session, "water.handler")
    page = _post(
        admin, f"/admin/users/{user.id}/role", {"role": "king"}, page=f"/admin/users/{user.id}"
    )
    assert page.status_code == 422 and 'id="err-role"' in page.text
    assert _user(session, "water.handler").role == Role.handler


def test_given_a_refusal_the_catalogue_does_not_know_then_said_by_its_kind_with_the_value(
    admin, session
):
    """A taken username is a conflict in the reader's words, and the page still names the
    username refused (the domain's sentence), not only a sentence about tickets."""
    assert _post(admin, "/account/locale", {"locale": "en"}, page="/account").status_code in (
        200,
        303,
    )
    page = _post(
        admin,
        "/admin/users",
        {"username": "water.handler", "display_name": "重名", "role": "operator"},
    )
    assert page.status_code in (409, 422)
    assert "This conflicts with what is stored now: username &#39;water.handler&#39; is taken" in (
        page.text
    )
    assert "the ticket has moved on" not in page.text
    assert [e.outcome for e in _audit(session, "admin.user.create")] == ["refused"]


def test_given_the_api_then_an_admin_confirms_and_withdraws_a_year_and_it_is_audited(
    client, auth, world, session
):
    """PUT/DELETE /api/v1/calendar/years/{year}/known: the same confirmation as the admin
    page's, in the same audit entries; a second confirmation or a withdrawal of nothing is
    409, another role 403, and the year's read says whether it is confirmed."""
    path = "/api/v1/calendar/years/2027/known"
    read = "/api/v1/calendar/years/2027"
    assert client.get(read, headers=auth("operator")).json()["confirmed"] is False
    assert client.put(path, headers=auth("dispatcher"), json={}).status_code == 403
    assert client.delete(path, headers=auth("admin")).status_code == 409

    done = client.put(path, headers=auth("admin"), json={"note": "  国办发明电〔2026〕7号 "})
    assert done.status_code == 200, done.text
    assert done.json()["known"] is True and done.json()["note"] == "国办发明电〔2026〕7号"
    assert client.get(read, headers=auth("operator")).json()["confirmed"] is True
    again = client.put(path, headers=auth("admin"), json={})
    assert again.status_code == 409
    long_note = {"note": "x" * 501}
    too_long = client.put(
        "/api/v1/calendar/years/2028/known", headers=auth("admin"), json=long_note
    )
    assert too_long.status_code == 422
    too_early = client.put("/api/v1/calendar/years/1999/known", headers=auth("admin"), json={})
    assert too_early.status_code == 422

    withdrawn = client.delete(path, headers=auth("admin"))
    assert withdrawn.status_code == 200 and withdrawn.json()["known"] is False
    assert client.get(read, headers=auth("operator")).json()["confirmed"] is False
    entries = [
        *_audit(session, "admin.calendar.confirm"),
        *_audit(session, "admin.calendar.withdraw"),
    ]
    assert [(e.action, e.target, e.username, e.outcome) for e in entries] == [
        ("admin.calendar.confirm", "year:2027", "admin", "ok"),
        ("admin.calendar.withdraw", "year:2027", "admin", "ok"),
    ]
