"""People: password + TOTP logins, lockout, CSRF, sessions, and roles on every operation."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

import pyotp
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from modelseal.crypto import ContentKey
from tests.controlplane.conftest import Api, catalog, fake_request, order


@dataclass
class Person:
    client: TestClient
    csrf: str
    totp: pyotp.TOTP
    username: str
    password: str
    user_id: str
    recovery: list[str]
    enrolled_at: float

    def code(self, steps_ahead: int = 0) -> str:
        """A code for a later step than any used so far (accepted within ±1 step of drift)."""
        return self.totp.at(time.time() + 30 * steps_ahead)

    def post(self, path: str, **kw: Any) -> Any:
        return self.client.post(path, headers={"X-CSRF-Token": self.csrf}, **kw)


def session_client(api: Api) -> TestClient:
    return TestClient(api.client.app, base_url="http://127.0.0.1")


def make_person(api: Api, username: str, role: str, vendor: str = "acme") -> Person:
    """An owner token creates the user; the user logs in, enrols TOTP, and is fully in."""
    token = api.tokens["a" if vendor == "acme" else "b"]
    made = api.client.post(
        "/v1/users",
        json={"username": username, "role": role},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert made.status_code == 201, made.text
    password = made.json()["password"]
    assert password and len(password) >= 12
    c = session_client(api)
    resp = c.post(
        "/v1/session", json={"vendor": vendor, "username": username, "password": password}
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["mfa"] is False
    csrf = resp.json()["csrf_token"]
    # before enrolment the session may do nothing else
    blocked = c.get("/v1/plans")
    assert blocked.status_code == 403
    assert blocked.json()["error"]["code"] == "mfa_required"
    enrol = c.post("/v1/session/totp", headers={"X-CSRF-Token": csrf})
    assert enrol.status_code == 200, enrol.text
    secret = enrol.json()["secret"]
    assert enrol.json()["otpauth_uri"].startswith("otpauth://totp/")
    assert enrol.json()["qr_svg"].lstrip().startswith("<?xml")
    totp = pyotp.TOTP(secret)
    enrolled_at = time.time()
    confirmed = c.post(
        "/v1/session/totp/confirm",
        json={"code": totp.at(enrolled_at)},
        headers={"X-CSRF-Token": csrf},
    )
    assert confirmed.status_code == 200, confirmed.text
    recovery = confirmed.json()["recovery_codes"]
    assert len(recovery) == 10 and len(set(recovery)) == 10
    assert c.get("/v1/plans").status_code == 200
    return Person(c, csrf, totp, username, password, made.json()["id"], recovery, enrolled_at)


def login(c: TestClient, username: str, password: str, **extra: str) -> Any:
    return c.post(
        "/v1/session",
        json={"vendor": "acme", "username": username, "password": password, **extra},
    )


def test_totp_login_replay_recovery_codes_and_lockout(api: Api) -> None:
    alice = make_person(api, "alice", "issuer")
    # the secret is shown once: a second enrolment is refused
    again = alice.post("/v1/session/totp")
    assert again.status_code == 409
    assert alice.post("/v1/session/logout").status_code == 204
    assert alice.client.get("/v1/plans").status_code == 401

    c = session_client(api)
    need = login(c, "alice", alice.password)
    assert need.status_code == 401 and need.json()["error"]["code"] == "totp_required"
    wrong = login(c, "alice", alice.password, totp="000000" if alice.code() != "000000" else "1")
    assert wrong.status_code in (401, 422)
    code = alice.code(1)
    ok = login(c, "alice", alice.password, totp=code)
    assert ok.status_code == 200, ok.text
    assert ok.json()["mfa"] is True
    cookie = ok.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    assert c.get("/v1/plans").status_code == 200
    # the same code again: refused (a code is good once)
    replay = login(session_client(api), "alice", alice.password, totp=code)
    assert replay.status_code == 401 and replay.json()["error"]["code"] == "totp_invalid"
    # a recovery code works once
    rc = alice.recovery[0]
    assert login(session_client(api), "alice", alice.password, recovery_code=rc).status_code == 200
    used = login(session_client(api), "alice", alice.password, recovery_code=rc)
    assert used.status_code == 401

    # lockout: five wrong passwords lock the user, even the right password then waits
    bob = make_person(api, "bob", "auditor")
    for _ in range(5):
        assert login(session_client(api), "bob", "not-the-password-at-all").status_code == 401
    locked = login(session_client(api), "bob", bob.password, totp=bob.code(1))
    # even the right password is refused, with the answer an unknown user gets (no oracle)
    assert locked.status_code == 401, locked.text
    assert locked.json()["error"]["message"] == "wrong vendor, username or password"
    # the failures are audited with the address they came from
    events = api.as_("a").get("/v1/audit", params={"event": "user.auth_failed"}).json()
    bobs = [e for e in events if e["data"].get("username") == "bob"]
    assert len(bobs) == 6
    assert {e["reason"] for e in bobs} == {"password", "locked"}
    assert all(e["data"]["address"] for e in bobs)
    assert bobs[4]["data"]["locked_for"] == 900
    # once the lock has passed, the right password and code work again
    with api.client.app.state.cp.engine.begin() as conn:
        conn.execute(text("UPDATE users SET locked_until = 1 WHERE username = 'bob'"))
    assert login(session_client(api), "bob", bob.password, totp=bob.code(1)).status_code == 200
    # unknown users and wrong vendors get the same answer as a wrong password
    nobody = login(session_client(api), "nobody", "whatever-password")
    assert nobody.status_code == 401
    assert nobody.json()["error"]["message"] == "wrong vendor, username or password"


def test_a_disabled_user_and_their_personal_token_stop_working(api: Api) -> None:
    carol = make_person(api, "carol", "issuer")
    tok = carol.post("/v1/session/tokens", json={"name": "cli"})
    assert tok.status_code == 201, tok.text
    assert tok.json()["role"] == "issuer"
    personal = {"Authorization": f"Bearer {tok.json()['token']}"}
    assert api.client.get("/v1/plans", headers=personal).status_code == 200
    owner = {"Authorization": f"Bearer {api.tokens['a']}"}
    # a demotion applies to the personal token at once
    demoted = api.client.post("/v1/users/carol/role", json={"role": "auditor"}, headers=owner)
    assert demoted.status_code == 200
    assert api.client.post("/v1/customers", json={"name": "x"}, headers=personal).status_code == 403
    assert api.client.post("/v1/users/carol/disable", headers=owner).status_code == 200
    assert api.client.get("/v1/plans", headers=personal).status_code == 401
    assert carol.client.get("/v1/plans").status_code == 401  # her session ended too
    assert (
        login(session_client(api), "carol", carol.password, totp=carol.code(1)).status_code == 401
    )


def test_csrf_is_required_for_every_state_change_with_a_session(api: Api) -> None:
    dave = make_person(api, "dave", "issuer")
    c = dave.client
    assert c.get("/v1/plans").status_code == 200  # reads need no token
    for headers in ({}, {"X-CSRF-Token": "forged"}, {"X-CSRF-Token": dave.csrf[:-2] + "AA"}):
        resp = c.post("/v1/customers", json={"name": "hospital"}, headers=headers)
        assert resp.status_code == 403, resp.text
        assert resp.json()["error"]["code"] == "csrf"
    assert api.as_("a").get("/v1/customers").json() == []  # nothing was created
    ok = c.post("/v1/customers", json={"name": "hospital"}, headers={"X-CSRF-Token": dave.csrf})
    assert ok.status_code == 201
    # another session's CSRF token does not fit this one
    erin = make_person(api, "erin", "issuer")
    cross = c.post("/v1/customers", json={"name": "clinic"}, headers={"X-CSRF-Token": erin.csrf})
    assert cross.status_code == 403
    # a forged or altered cookie is no session
    value = c.cookies.get("ms_session")
    assert value is not None
    forged = session_client(api)
    forged.cookies.set("ms_session", value[:-3] + "AAA")
    assert forged.get("/v1/plans").status_code == 401


# --- roles on every operation --------------------------------------------------------------

ANY = {"owner", "issuer", "auditor"}
ISSUER = {"owner", "issuer"}
OWNER = {"owner"}
#: who may call each operation; an operation missing here fails the test (classify new ones)
ALLOWED: list[tuple[str, str, set[str] | None]] = [
    ("GET", r"/healthz|/readyz", None),
    ("POST", r"/v1/activate|/v1/heartbeat|/v1/session|/v1/release", None),
    ("GET", r"/v1/session", None),
    ("POST", r"/v1/session/.*", None),
    ("GET|POST", r"/v1/tokens", OWNER),
    ("POST", r"/v1/tokens/{\w+}/revoke", OWNER),
    ("POST", r"/v1/keys/rotate", OWNER),
    ("GET|POST", r"/v1/users(/.*)?", OWNER),
    ("GET|POST", r"/v1/webhooks(/.*)?", OWNER),
    ("POST", r"/v1/(plans|customers|models|orders)", ISSUER),
    ("GET", r"/v1/licenses/{\w+}/key", ISSUER),
    ("POST", r"/v1/licenses/{\w+}/\w[\w-]*", ISSUER),
    ("GET", r"/v1/devices/{\w+}/license", ISSUER),
    ("POST", r"/v1/devices/{\w+}/(deactivate|unlock-code|suspend|reinstate|clear-flag)", ISSUER),
    ("PATCH", r"/v1/plans/{\w+}", ISSUER),
    # the Platform area (docs/platform.md): changes and the secrets it holds need an issuer
    ("POST|DELETE", r"/v1/platform/.*", ISSUER),
    ("GET", r"/v1/platform/deployments/{\w+}/logs|/v1/platform/gateway/key/private", ISSUER),
    ("GET", r"/v1/.*", ANY),
]


def allowed_roles(method: str, path: str) -> set[str] | None:
    for methods, pattern, roles in ALLOWED:
        if method in methods.split("|") and re.fullmatch(pattern, path):
            return roles
    raise AssertionError(f"{method} {path} is not classified in ALLOWED: say who may call it")


@pytest.fixture
def people_of_every_role(api: Api) -> dict[str, dict[str, Any]]:
    """For each role: a service token, and a logged-in user (session + CSRF)."""
    out: dict[str, dict[str, Any]] = {}
    owner = api.as_("a")
    for role in sorted(ANY):
        tok = owner.post("/v1/tokens", json={"name": role, "role": role}).json()["token"]
        person = make_person(api, f"u-{role}", role)
        out[role] = {"token": tok, "person": person}
    return out


def test_a_role_that_may_not_do_a_thing_gets_403_on_every_such_operation(
    api: Api, people_of_every_role: dict[str, dict[str, Any]]
) -> None:
    owner = api.as_("a")
    ids = catalog(owner, ContentKey.generate())
    made = order(owner, ids)
    key = made["license_key"]
    act = owner.post(
        "/v1/activate", json={"license_key": key, "request": fake_request(key, seed=9).to_json()}
    ).json()
    refs = {"ref": made["id"], "token_id": "tok_missing"}
    spec = owner.get("/openapi.json").json()
    refused = 0
    for path, item in spec["paths"].items():
        for method in item:
            m = method.upper()
            roles = allowed_roles(m, path)
            if roles is None:
                continue
            url = path
            for name in re.findall(r"{(\w+)}", path):
                value = refs.get(name, made["id"])
                if path.startswith("/v1/devices/"):
                    value = act["device"]
                if path.startswith("/v1/users/"):
                    value = "u-owner"
                url = url.replace("{" + name + "}", value)
            for role in sorted(ANY - roles):
                who = people_of_every_role[role]
                by_token = api.client.request(
                    m, url, json={}, headers={"Authorization": f"Bearer {who['token']}"}
                )
                assert by_token.status_code == 403, (role, "token", m, url, by_token.text)
                person = who["person"]
                by_user = person.client.request(
                    m, url, json={}, headers={"X-CSRF-Token": person.csrf}
                )
                assert by_user.status_code == 403, (role, "user", m, url, by_user.text)
                refused += 2
            for role in sorted(roles):
                if m == "GET":  # reads allowed to a role answer it, to a user as to a token
                    who = people_of_every_role[role]
                    by_user = who["person"].client.get(url)
                    assert by_user.status_code not in (401, 403), (role, url, by_user.text)
    assert refused >= 60
    # nothing changed on the way: the license is still active, nobody was disabled
    assert owner.get(f"/v1/licenses/{made['id']}").json()["status"] == "active"
    assert all(u["disabled_at"] is None for u in owner.get("/v1/users").json())


def test_the_per_address_login_limit_belongs_to_one_server_not_the_process() -> None:
    """Two servers in one process (tests, an embedding program) must not lock each other's
    users out: a spray counted against one server's address limit leaves the other's alone
    (this coupling made the MFA-unlock tests fail in CI after the lockout tests had run)."""
    from sqlalchemy import create_engine

    from modelseal.controlplane.db import session_factory
    from modelseal.controlplane.services import people

    one = session_factory(create_engine("sqlite://"))
    other = session_factory(create_engine("sqlite://"))
    people.install_address_limiter(one)
    people.install_address_limiter(other)
    with one() as a, one() as a2, other() as b:
        for _ in range(people.ADDRESS_FAILURES):
            people._addresses(a).fail("10.0.0.7")
        assert people._addresses(a2).blocked("10.0.0.7")  # the same server: every session
        assert not people._addresses(b).blocked("10.0.0.7")
        assert not people.ADDRESSES.blocked("10.0.0.7")


def test_a_non_ascii_cookie_or_csrf_header_is_refused_not_a_500(api: Api) -> None:
    """Red team #12, finding 6: compare_digest raised TypeError on non-ASCII str -> 500."""
    anon = TestClient(api.client.app, base_url="http://127.0.0.1", raise_server_exceptions=False)
    for value in ("a.b.\xe9", "\xe9.b.c", "s\xe9s.x.y"):
        resp = anon.get("/v1/plans", headers={"Cookie": f"ms_session={value}".encode("latin-1")})
        assert resp.status_code == 401, (value, resp.status_code, resp.text)
    fay = make_person(api, "fay", "issuer")
    c = TestClient(
        api.client.app,
        base_url="http://127.0.0.1",
        raise_server_exceptions=False,
        cookies=dict(fay.client.cookies),
    )
    for bad in ("\xe9", fay.csrf[:-1] + "\xe9"):
        resp = c.post(
            "/v1/customers", json={"name": "x"}, headers={"X-CSRF-Token": bad.encode("latin-1")}
        )
        assert resp.status_code == 403 and resp.json()["error"]["code"] == "csrf", resp.text
    # a TOTP code that is not ASCII never reaches the comparison as a 500 either
    from modelseal.controlplane.services import people

    assert people._same("\xe9", "\xe9") and not people._same("\xe9", "e")


def test_a_password_change_ends_every_other_session_and_the_personal_tokens(api: Api) -> None:
    """Red team #12, finding 4: a stolen session (or a token minted from it) outlived the
    password change meant to end it; a personal token also outlived reset-mfa."""
    carol = make_person(api, "carol", "owner")
    thief = TestClient(
        api.client.app, base_url="http://127.0.0.1", cookies=dict(carol.client.cookies)
    )
    other = TestClient(api.client.app, base_url="http://127.0.0.1")
    assert login(other, "carol", carol.password, totp=carol.code(1)).status_code == 200
    tok = carol.post("/v1/session/tokens", json={"name": "cli"}).json()["token"]
    personal = {"Authorization": f"Bearer {tok}"}
    assert api.client.get("/v1/users", headers=personal).status_code == 200
    old_cookie = carol.client.cookies.get("ms_session")
    changed = carol.post(
        "/v1/session/password", json={"old": carol.password, "new": "a-brand-new-password-1"}
    )
    assert changed.status_code == 204, changed.text
    # the thief's copy, the other login and the personal token are dead
    assert thief.get("/v1/users").status_code == 401
    assert thief.post("/v1/users", json={"username": "mallory", "role": "owner"},
                      headers={"X-CSRF-Token": carol.csrf}).status_code == 401  # fmt: skip
    assert other.get("/v1/users").status_code == 401
    assert api.client.get("/v1/users", headers=personal).status_code == 401
    # carol goes on under a new cookie and a new CSRF token
    assert carol.client.cookies.get("ms_session") != old_cookie
    assert carol.client.get("/v1/users").status_code == 200
    me = carol.client.get("/v1/session").json()
    assert me["csrf_token"] != carol.csrf
    assert carol.client.cookies.get("ms_csrf") == me["csrf_token"]
    assert carol.post("/v1/customers", json={"name": "stale"}).status_code == 403
    carol.csrf = me["csrf_token"]
    assert carol.post("/v1/customers", json={"name": "fresh"}).status_code == 201
    ended = api.as_("a").get("/v1/audit", params={"event": "user.sessions_ended"}).json()
    assert [(e["reason"], e["data"]["sessions"], e["data"]["tokens"]) for e in ended] == [
        ("password_changed", 2, 1)
    ]
    # reset-mfa ends the personal tokens too: they pass as if they had a second factor
    tok2 = carol.post("/v1/session/tokens", json={"name": "cli2"}).json()["token"]
    assert (
        api.client.get("/v1/users", headers={"Authorization": f"Bearer {tok2}"}).status_code == 200
    )
    dave = make_person(api, "dave", "owner")
    assert dave.post("/v1/users/carol/reset-mfa").status_code == 200
    assert (
        api.client.get("/v1/users", headers={"Authorization": f"Bearer {tok2}"}).status_code == 401
    )
    assert carol.client.get("/v1/users").status_code == 401


def test_a_locked_user_answers_like_an_unknown_one_and_counts_against_the_address(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Red team #12, findings 5 and 3: a locked user answered 429 "this user is locked" in
    13 ms (no argon2) while an unknown name took a full argon2 check and answered 401; and
    the refusals were not counted against the address."""
    from modelseal.controlplane.services import people

    make_person(api, "gus", "issuer")
    dummy_checks: list[str] = []
    real = people.check_password

    def counting(stored: str | None, password: str) -> bool:
        if stored is None:
            dummy_checks.append(password)
        return real(stored, password)

    monkeypatch.setattr(people, "check_password", counting)
    monkeypatch.setattr(people, "ADDRESS_FAILURES", 13)
    anon = session_client(api)
    for name in ("gus", "nobody"):
        for _ in range(5):
            assert login(anon, name, "wrong-password-123").status_code == 401
    dummy_checks.clear()
    answers = {name: login(anon, name, "wrong-password-123") for name in ("gus", "nobody")}
    assert {n: (r.status_code, r.json()) for n, r in answers.items()} == {
        n: (401, answers["nobody"].json()) for n in answers
    }
    assert len(dummy_checks) == 2  # both paid the same argon2 check
    # 12 failures so far from this address, the locked one included: one more and it is
    # refused for any name
    assert login(anon, "gus", "wrong-password-123").status_code == 401
    blocked = login(anon, "someone-else", "wrong-password-123")
    assert blocked.status_code == 429 and "address" in blocked.json()["error"]["message"]


def test_a_flood_on_a_locked_user_adds_log2_audit_records(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Red team #12, finding 3: every refusal of a locked user wrote a hash-chained row."""
    from modelseal.controlplane.services import people

    make_person(api, "hal", "issuer")
    real = people.check_password
    # argon2 is not what this test is about: keep the flood fast
    monkeypatch.setattr(
        people, "check_password", lambda stored, pw: False if stored is None else real(stored, pw)
    )
    monkeypatch.setattr(people, "ADDRESS_FAILURES", 10_000)
    anon = session_client(api)
    for _ in range(5):
        assert login(anon, "hal", "wrong-password-123").status_code == 401
    for _ in range(40):
        assert login(anon, "hal", "wrong-password-123").status_code == 401
    events = (
        api.as_("a").get("/v1/audit", params={"event": "user.auth_failed", "limit": 1000}).json()
    )
    locked = [e for e in events if e["reason"] == "locked" and e["data"]["username"] == "hal"]
    assert [e["data"]["refused_while_locked"] for e in locked] == [1, 2, 4, 8, 16, 32]
    # a new lockout starts a new count
    with api.client.app.state.cp.engine.begin() as conn:
        conn.execute(text("UPDATE users SET locked_until = 1 WHERE username = 'hal'"))
    for _ in range(6):
        assert login(anon, "hal", "wrong-password-123").status_code == 401
    events = (
        api.as_("a").get("/v1/audit", params={"event": "user.auth_failed", "limit": 1000}).json()
    )
    locked = [e for e in events if e["reason"] == "locked" and e["data"]["username"] == "hal"]
    assert [e["data"]["refused_while_locked"] for e in locked][-1] == 1


def test_usernames_that_differ_only_by_case_or_width_are_one_name(api: Api) -> None:
    owner = api.as_("a")
    assert owner.post("/v1/users", json={"username": "alice", "role": "issuer"}).status_code == 201
    for twin in ("Alice", "ALICE", "\uff41lice"):  # the last: a full-width "a"
        resp = owner.post("/v1/users", json={"username": twin, "role": "owner"})
        assert resp.status_code == 409, (twin, resp.text)
    # another vendor may have its own alice
    assert api.as_("b").post("/v1/users", json={"username": "Alice"}).status_code == 201


def test_one_recovery_code_or_totp_code_logs_in_once_under_concurrency(api: Api) -> None:
    """Two logins at once with the same one-time code: exactly one gets in. On PostgreSQL
    (READ COMMITTED) both used to read the code unused (or the step unseen) and pass; the
    user row is now locked for the check and a recovery code spent by a conditional
    UPDATE. On SQLite every transaction holds the write lock, so this holds there too."""
    import threading

    ida = make_person(api, "ida", "issuer")

    def race(extra: dict[str, str]) -> list[int]:
        clients = [session_client(api) for _ in range(2)]
        barrier = threading.Barrier(2)
        codes: list[int] = []

        def one(c: TestClient) -> None:
            barrier.wait()
            codes.append(login(c, "ida", ida.password, **extra).status_code)

        threads = [threading.Thread(target=one, args=(c,)) for c in clients]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        return sorted(codes)

    for rc in ida.recovery[:3]:
        assert race({"recovery_code": rc}) == [200, 401]
    # the next step's code (within the ±1 step window; one round: a step is good once)
    assert race({"totp": ida.code(1)}) == [200, 401]
