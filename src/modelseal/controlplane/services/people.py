"""People: a vendor's users, their passwords, second factor, sessions and login limits.

Users hold the roles API tokens hold (``owner``, ``issuer``, ``auditor``);
what a token of a role may do, a user of that role may do. Why each piece:

* Passwords: argon2id (``argon2-cffi``'s defaults, RFC 9106's second
  recommendation), so a stolen ``users`` table costs a guesser memory per
  guess. Unknown users are checked against a dummy hash: the time of a
  refusal does not tell which usernames exist. At most a few hashes run at
  once per process (``MODELSEAL_ARGON2_CONCURRENCY``, default: the usable
  CPUs, 2 to 8): each takes 64 MiB, and the server's 40 request threads
  all hashing would take 2.5 GiB; a login over the limit waits its turn.
* TOTP (RFC 6238, ``pyotp``): enrolment shows the secret and a QR code once;
  it is trusted only after a first code confirms it. A code is accepted
  once (``totp_last_step``), so one read over a shoulder or from a log
  cannot be replayed within its 90-second window. Ten recovery codes (80
  random bits each, stored as SHA-256: they are not guessable, so a slow
  hash buys nothing) stand in for a lost authenticator, once each.
* Sessions: a row per login; the cookie is ``id.secret.signature`` with the
  secret stored as SHA-256 and the signature an HMAC under a key derived
  from the master key, so a forged cookie is refused before the database
  is asked, and a stolen database yields no usable cookie. ``HttpOnly``
  (no script reads it), ``SameSite=Strict`` (no other site's request
  carries it), ``Secure`` when the public URL is https. Twelve hours.
* CSRF: every state-changing request authenticated by the cookie must send
  ``X-CSRF-Token``, a synchronizer token bound to the session
  (``HMAC(key, "csrf" || session id)``), returned by login and by ``GET
  /v1/session``. A cross-site form can send the cookie (if SameSite ever
  fails) but cannot read the token.
* Login limits: five consecutive failures for a user lock it for fifteen
  minutes (doubling with each further lockout, up to a day); every failure
  is audited with the address it came from. A per-address limit in the
  process (30 failures in five minutes) slows a spray across many users.
  A locked user is answered like an unknown one (same message, same
  argon2 cost: no username oracle), counts against the address, and is
  audited sparsely (log2(n) records per lockout: no free log growth).
* A new password, or an MFA reset, ends every session of the user and
  revokes their personal tokens: it is what a person does when they fear
  a stolen session, and a token minted from that session must die too.
  A wrong TOTP code counts as a failure wherever it is asked for (the
  unlock-code endpoint too), so a stolen token cannot search the 10^6
  codes.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError as DBIntegrityError
from sqlalchemy.orm import Session, sessionmaker

from modelseal.controlplane.errors import (
    ConflictError,
    ControlPlaneError,
    ForbiddenError,
    InvalidRequestError,
    NotFoundError,
    TooManyAttemptsError,
    UnauthorizedError,
)
from modelseal.controlplane.models import (
    RecoveryCode,
    User,
    UserSession,
    Vendor,
    new_id,
    now_s,
)
from modelseal.controlplane.secretbox import SecretBox
from modelseal.controlplane.services import audit
from modelseal.controlplane.services.vendors import ROLES, Caller
from modelseal.crypto import b64url

SESSION_COOKIE = "ms_session"
CSRF_COOKIE = "ms_csrf"
CSRF_HEADER = "x-csrf-token"
SESSION_SECONDS = 12 * 3600
MAX_FAILURES = 5
LOCK_SECONDS = 15 * 60
MAX_LOCK_SECONDS = 24 * 3600
ADDRESS_FAILURES = 30
ADDRESS_WINDOW = 300
TOTP_STEP = 30
RECOVERY_CODES = 10
MIN_PASSWORD = 12
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _hasher() -> Any:
    from argon2 import PasswordHasher

    return PasswordHasher()


def default_argon2_concurrency() -> int:
    """The usable CPUs, 2 to 8: more hashes at once than cores only add memory."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cpus = os.cpu_count() or 1
    return max(2, min(8, cpus))


#: Bounds the argon2 hashes running at once (each holds 64 MiB while it runs).
ARGON2_SLOTS = threading.BoundedSemaphore(default_argon2_concurrency())


def limit_argon2(concurrency: int) -> None:
    """Set how many argon2 hashes may run at once in this process (at start-up)."""
    global ARGON2_SLOTS
    ARGON2_SLOTS = threading.BoundedSemaphore(max(1, concurrency))


_DUMMY_HASH: str | None = None


def hash_password(password: str) -> str:
    with ARGON2_SLOTS:
        return str(_hasher().hash(password))


def check_password(stored: str | None, password: str) -> bool:
    from argon2.exceptions import InvalidHashError, VerificationError

    global _DUMMY_HASH
    if stored is None:
        # as slow as a real check: a refusal's timing does not reveal the username exists
        if _DUMMY_HASH is None:
            _DUMMY_HASH = hash_password(secrets.token_urlsafe(16))
        stored = _DUMMY_HASH
        password += "\x00never"
    try:
        with ARGON2_SLOTS:
            return bool(_hasher().verify(stored, password))
    except (VerificationError, InvalidHashError):
        return False


def _same(a: str, b: str) -> bool:
    """Constant-time equality of two strings, whatever characters they hold.

    ``hmac.compare_digest`` raises ``TypeError`` for a ``str`` with non-ASCII
    characters; header and cookie values are latin-1 decoded by the server, so
    a client could turn any check into a 500 (red team #12, finding 6).
    Bytes compare without that edge: a forged value is simply unequal.
    """
    return hmac.compare_digest(
        a.encode("utf-8", "surrogateescape"), b.encode("utf-8", "surrogateescape")
    )


def _check_new_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise InvalidRequestError(f"a password needs at least {MIN_PASSWORD} characters")
    if len(password) > 1024:
        raise InvalidRequestError("a password is at most 1024 characters")


def generate_password() -> str:
    return secrets.token_urlsafe(18)  # 144 bits, 24 characters


# --- users -------------------------------------------------------------------------------------


def create_user(
    session: Session, vendor_id: str, *, username: str, role: str, password: str | None = None
) -> tuple[User, str | None]:
    """A new user; returns the generated password (shown once) when none was given."""
    if role not in ROLES:
        raise InvalidRequestError(f"role must be one of {', '.join(ROLES)}")
    key = name_key(username)
    existing = _name_holder(session, vendor_id, key)
    if existing is not None:
        raise _name_taken(username, existing)
    shown = None
    if password is None:
        password = shown = generate_password()
    _check_new_password(password)
    user = User(
        id=new_id("usr"),
        vendor_id=vendor_id,
        username=username,
        username_key=key,
        role=role,
        password_hash=hash_password(password),
        totp_enabled=False,
        totp_last_step=0,
        failed_logins=0,
        created_at=now_s(),
    )
    try:
        with session.begin_nested():  # flushed here: a racing twin is refused now, typed
            session.add(user)
    except DBIntegrityError:
        raise ConflictError(
            f"user {username!r} was just created by another request (or one whose name "
            "differs only by case or width)"
        ) from None
    return user, shown


def _name_holder(session: Session, vendor_id: str, key: str) -> str | None:
    """The username already holding ``key`` in the vendor, for a message that names it."""
    return session.execute(
        select(User.username).where(User.vendor_id == vendor_id, User.username_key == key)
    ).scalar_one_or_none()


def _name_taken(username: str, existing: str) -> ConflictError:
    return ConflictError(
        f"user {username!r} exists"
        if existing == username
        else f"user {existing!r} exists: names that differ only by case or width "
        "would be confusable in the audit log and the console"
    )


def name_key(username: str) -> str:
    """What two usernames must not share (``users.username_key``): ``alice``, ``Alice`` and
    ``ａｌｉｃｅ`` are one name to a reader of the audit log. Also computed by migration 0006:
    change both together."""
    import unicodedata

    folded = unicodedata.normalize("NFKC", username).casefold()
    return hashlib.sha256(folded.encode("utf-8", "surrogatepass")).hexdigest()


def list_users(session: Session, caller: Caller) -> list[User]:
    return list(
        session.execute(
            select(User)
            .where(User.vendor_id == caller.vendor_id)
            .order_by(User.created_at, User.id)
        ).scalars()
    )


def get_user(session: Session, caller: Caller, ref: str) -> User:
    row = session.execute(
        select(User).where(
            User.vendor_id == caller.vendor_id, (User.id == ref) | (User.username == ref)
        )
    ).scalar_one_or_none()
    if row is None:
        raise NotFoundError(f"no user {ref!r}")
    return row


def _end_sessions(session: Session, user: User) -> int:
    ended = 0
    for row in session.execute(
        select(UserSession).where(UserSession.user_id == user.id, UserSession.revoked_at.is_(None))
    ).scalars():
        row.revoked_at = now_s()
        ended += 1
    return ended


def _revoke_personal_tokens(session: Session, user: User) -> int:
    """Personal tokens are minted from a session: whatever ends the sessions for a security
    reason (new password, lost second factor) must end them too, or a thief who had the
    session keeps a token without expiry (red team #12, finding 4). Each revocation is
    recorded by the audit log's row diff (``token.revoked``)."""
    from modelseal.controlplane.models import ApiToken

    revoked = 0
    for row in session.execute(
        select(ApiToken).where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))
    ).scalars():
        row.revoked_at = now_s()
        revoked += 1
    return revoked


def _note_ended(session: Session, user: User, why: str, sessions: int, tokens: int) -> None:
    audit.note(
        session,
        user.vendor_id,
        "user.sessions_ended",
        {"target": {"kind": "user", "id": user.id}, "sessions": sessions, "tokens": tokens},
        reason=why,
    )


def disable_user(session: Session, caller: Caller, ref: str) -> User:
    user = get_user(session, caller, ref)
    if user.id == caller.user_id:
        raise ConflictError("you cannot disable yourself")
    if user.disabled_at is None:
        user.disabled_at = now_s()
        _end_sessions(session, user)
    return user


def set_role(session: Session, caller: Caller, ref: str, role: str) -> User:
    user = get_user(session, caller, ref)
    if role not in ROLES:
        raise InvalidRequestError(f"role must be one of {', '.join(ROLES)}")
    if user.id == caller.user_id and role != "owner":
        raise ConflictError("an owner cannot demote themselves (another owner can)")
    user.role = role
    return user


def reset_mfa(session: Session, caller: Caller, ref: str) -> User:
    """For a user who lost both authenticator and recovery codes (an owner decides)."""
    user = get_user(session, caller, ref)
    user.totp_enabled = False
    user.totp_sealed = None
    for code in session.execute(
        select(RecoveryCode).where(RecoveryCode.user_id == user.id)
    ).scalars():
        session.delete(code)
    # a token passes require() as if it had a second factor: one that outlives the factor
    # would be an owner without MFA
    ended = _end_sessions(session, user)
    _note_ended(session, user, "mfa_reset", ended, _revoke_personal_tokens(session, user))
    return user


def change_password(session: Session, user: User, old: str, new: str) -> None:
    """A new password ends every session of the user and revokes their personal tokens.

    Changing the password is what a person does first when they suspect a
    session was stolen, so it must end the thief's copy. The caller's own
    session ends too; the route starts a fresh one (a new cookie, a new CSRF
    token: :func:`start_session`), so the person stays logged in but a copied
    cookie does not.
    """
    if not check_password(user.password_hash, old):
        raise ForbiddenError("the current password is wrong")
    _check_new_password(new)
    user.password_hash = hash_password(new)
    ended = _end_sessions(session, user)
    _note_ended(session, user, "password_changed", ended, _revoke_personal_tokens(session, user))


# --- TOTP ----------------------------------------------------------------------------------


def _totp_secret(box: SecretBox, user: User) -> str:
    assert user.totp_sealed is not None
    return box.open(user.totp_sealed, purpose="totp", row=user.id).decode()


def begin_enrolment(session: Session, box: SecretBox, user: User, issuer: str) -> dict[str, str]:
    """A fresh secret, shown once (text, otpauth URI, QR as SVG); confirmed by a first code."""
    import io

    import pyotp
    import segno

    if user.totp_enabled:
        raise ConflictError("TOTP is already enrolled; an owner can reset it")
    secret = pyotp.random_base32(32)  # 160 bits, RFC 4226's recommended length
    user.totp_sealed = box.seal(secret.encode(), purpose="totp", row=user.id)
    uri = pyotp.TOTP(secret).provisioning_uri(name=user.username, issuer_name=issuer)
    buf = io.BytesIO()
    segno.make(uri, error="m").save(buf, kind="svg", scale=4)
    return {"secret": secret, "otpauth_uri": uri, "qr_svg": buf.getvalue().decode()}


def check_totp(box: SecretBox, user: User, code: str, *, now: float | None = None) -> int | None:
    """The time step a code is good for (±1 step of drift), never one already used."""
    import pyotp

    if user.totp_sealed is None or not code.isdigit() or len(code) != 6:
        return None
    totp = pyotp.TOTP(_totp_secret(box, user))
    step = int((time.time() if now is None else now) // TOTP_STEP)
    for candidate in (step - 1, step, step + 1):
        if candidate <= user.totp_last_step:
            continue
        if _same(totp.at(candidate * TOTP_STEP), code):
            return candidate
    return None


def confirm_enrolment(session: Session, box: SecretBox, user: User, code: str) -> list[str]:
    """Turn TOTP on with a first good code; returns the recovery codes (shown once)."""
    if user.totp_enabled:
        raise ConflictError("TOTP is already enrolled")
    if user.totp_sealed is None:
        raise ConflictError("start the enrolment first (POST /v1/session/totp)")
    step = check_totp(box, user, code)
    if step is None:
        raise ForbiddenError("the TOTP code is not valid", code="totp_invalid")
    user.totp_last_step = step
    user.totp_enabled = True
    codes = [
        "-".join(secrets.token_hex(5)[i : i + 5] for i in (0, 5)) for _ in range(RECOVERY_CODES)
    ]
    for c in codes:
        session.add(
            RecoveryCode(
                id=new_id("rec"), vendor_id=user.vendor_id, user_id=user.id, code_hash=_sha(c)
            )
        )
    return codes


def _sha(text: str) -> str:
    return hashlib.sha256(text.replace("-", "").strip().lower().encode()).hexdigest()


def _use_recovery_code(session: Session, user: User, code: str) -> bool:
    """Spend a recovery code: a conditional UPDATE, so two concurrent logins (PostgreSQL, READ
    COMMITTED) cannot both spend it; the second finds no unused row."""
    result: Any = session.execute(
        update(RecoveryCode)
        .where(
            RecoveryCode.user_id == user.id,
            RecoveryCode.code_hash == _sha(code),
            RecoveryCode.used_at.is_(None),
        )
        .values(used_at=now_s())
    )
    return bool(result.rowcount == 1)


def _lock_user(session: Session, user_id: str) -> User | None:
    """The user row, re-read under a row lock on PostgreSQL: the TOTP step, the failure count
    and the lock are read-modify-write, and two concurrent logins must not both pass with one
    code (SQLite: every transaction already holds the write lock)."""
    q = select(User).where(User.id == user_id).execution_options(populate_existing=True)
    if session.get_bind().dialect.name == "postgresql":
        q = q.with_for_update()
    return session.execute(q).scalar_one_or_none()


# --- failures and lockout --------------------------------------------------------------------


class _AddressLimiter:
    """Failures per address in a sliding window, in this process (a spray across users)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[str, deque[float]] = {}
        self._locked: dict[str, tuple[int, int]] = {}

    def blocked(self, address: str | None) -> bool:
        if address is None:
            return False
        with self._lock:
            q = self._seen.get(address)
            if not q:
                return False
            cutoff = time.monotonic() - ADDRESS_WINDOW
            while q and q[0] < cutoff:
                q.popleft()
            return len(q) >= ADDRESS_FAILURES

    def fail(self, address: str | None) -> None:
        if address is None:
            return
        with self._lock:
            if len(self._seen) > 100_000:  # bounded memory under a spray from many addresses
                self._seen.clear()
            self._seen.setdefault(address, deque()).append(time.monotonic())

    def refused_while_locked(self, user_id: str, locked_until: int) -> int:
        """How many logins of this user this lockout has refused so far (this one included).

        Kept here, not in the database: a refusal must cost no write, or
        hammering a locked user is an unauthenticated way to grow the audit
        log (red team #12, finding 3). Lost on restart: then a few more
        records are written, nothing else.
        """
        with self._lock:
            if len(self._locked) > 100_000:
                self._locked.clear()
            until, n = self._locked.get(user_id, (locked_until, 0))
            n = n + 1 if until == locked_until else 1
            self._locked[user_id] = (locked_until, n)
            return n


#: The fallback for sessions made outside a server (scripts, the CLI's init).
ADDRESSES = _AddressLimiter()
#: ``Session.info`` key of the running server's own limiter (``install_address_limiter``).
_LIMITER_KEY = "modelseal.login_limiter"


def install_address_limiter(sessions: sessionmaker[Session]) -> None:
    """Give every session of this server one limiter of its own.

    Per server instance rather than per Python process: two apps in one
    process (tests, or a server embedded in another program) must not count
    each other's failures, and each worker process still has its own.
    """
    sessions.kw.setdefault("info", {})[_LIMITER_KEY] = _AddressLimiter()


def _addresses(session: Session) -> _AddressLimiter:
    limiter = session.info.get(_LIMITER_KEY)
    return limiter if isinstance(limiter, _AddressLimiter) else ADDRESSES


def locked(user: User) -> int | None:
    """Seconds until the user may try again, or None."""
    if user.locked_until is not None and user.locked_until > now_s():
        return user.locked_until - now_s()
    return None


def record_failure(session: Session, user: User, address: str | None, what: str) -> None:
    user.failed_logins += 1
    _addresses(session).fail(address)
    lockout = None
    if user.failed_logins % MAX_FAILURES == 0:
        rounds = user.failed_logins // MAX_FAILURES
        lockout = min(LOCK_SECONDS * 2 ** (rounds - 1), MAX_LOCK_SECONDS)
        user.locked_until = now_s() + lockout
    audit.note(
        session,
        user.vendor_id,
        "user.auth_failed",
        {
            "target": {"kind": "user", "id": user.id},
            "username": user.username,
            "failures": user.failed_logins,
            "locked_for": lockout,
        },
        reason=what,
    )


def _ok(user: User) -> None:
    user.failed_logins = 0
    user.locked_until = None


# --- login and sessions ------------------------------------------------------------------


@dataclass(frozen=True)
class LoginResult:
    user: User
    cookie: str
    csrf: str
    mfa: bool
    expires_at: int
    session_id: str = ""


def _cookie_key(box: SecretBox) -> bytes:
    return box.derive("session-cookie")


def _utf8(text: str) -> bytes:
    """Any str as bytes (a cookie's lone surrogates or latin-1 bytes must not raise)."""
    return text.encode("utf-8", "surrogateescape")


def _sign(box: SecretBox, text: str) -> str:
    return b64url(hmac.new(_cookie_key(box), _utf8(text), hashlib.sha256).digest())


def csrf_token(box: SecretBox, session_id: str) -> str:
    return b64url(hmac.new(_cookie_key(box), b"csrf\x00" + _utf8(session_id), "sha256").digest())


def login(
    session: Session,
    box: SecretBox,
    *,
    vendor: str,
    username: str,
    password: str,
    totp: str | None,
    recovery_code: str | None,
    address: str | None,
) -> LoginResult | ControlPlaneError:
    """Check a login; the failure is returned (not raised) so that its audit record and the
    failure count commit with the refusal."""
    refused = UnauthorizedError("wrong vendor, username or password")
    if _addresses(session).blocked(address):
        return TooManyAttemptsError("too many failed logins from this address; try later")
    audit.bind(session, actor={"kind": "anonymous", "username": username}, address=address)
    user_id = session.execute(
        select(User.id)
        .join(Vendor, Vendor.id == User.vendor_id)
        .where(Vendor.name == vendor, User.username == username)
    ).scalar_one_or_none()
    user = None if user_id is None else _lock_user(session, user_id)
    if user is None or user.disabled_at is not None:
        check_password(None, password)
        _addresses(session).fail(address)
        if user is not None:
            audit.note(
                session,
                user.vendor_id,
                "user.auth_failed",
                {"target": {"kind": "user", "id": user.id}, "username": username},
                reason="disabled",
            )
        return refused
    audit.bind(
        session, actor={"kind": "user", "id": user.id, "username": username}, address=address
    )
    if locked(user) is not None:
        # The same answer, and the same argon2 cost, as an unknown user: a lock must not tell
        # a prober that the name exists (red team #12, finding 5). It counts against the
        # address like any failure, and is audited sparsely (the 1st, 2nd, 4th, 8th ...
        # refusal of this lockout, with the count): a flood adds log2(n) records, not n.
        check_password(None, password)
        limiter = _addresses(session)
        limiter.fail(address)
        assert user.locked_until is not None
        n = limiter.refused_while_locked(user.id, user.locked_until)
        if n & (n - 1) == 0:
            audit.note(
                session,
                user.vendor_id,
                "user.auth_failed",
                {
                    "target": {"kind": "user", "id": user.id},
                    "username": username,
                    "refused_while_locked": n,
                    "locked_until": user.locked_until,
                },
                reason="locked",
            )
        return refused
    if not check_password(user.password_hash, password):
        record_failure(session, user, address, "password")
        return refused
    mfa = False
    if user.totp_enabled:
        if totp is not None:
            step = check_totp(box, user, totp)
            if step is None:
                record_failure(session, user, address, "totp")
                return UnauthorizedError("the TOTP code is not valid", code="totp_invalid")
            user.totp_last_step = step
        elif recovery_code is not None:
            if not _use_recovery_code(session, user, recovery_code):
                record_failure(session, user, address, "recovery_code")
                return UnauthorizedError("the recovery code is not valid", code="totp_invalid")
            audit.note(
                session,
                user.vendor_id,
                "user.recovery_code_used",
                {"target": {"kind": "user", "id": user.id}},
            )
        else:
            # the password was right; say what is missing, count nothing
            return UnauthorizedError("a TOTP code is required", code="totp_required")
        mfa = True
    _ok(user)
    result = start_session(session, box, user, mfa=mfa, address=address)
    audit.note(
        session,
        user.vendor_id,
        "user.login",
        {"target": {"kind": "user", "id": user.id}, "session": result.session_id, "mfa": mfa},
    )
    return result


def start_session(
    session: Session, box: SecretBox, user: User, *, mfa: bool, address: str | None
) -> LoginResult:
    """A new session row and its cookie (a login, or the rotation after a password change)."""
    secret = secrets.token_urlsafe(32)
    row = UserSession(
        id=new_id("ses"),
        vendor_id=user.vendor_id,
        user_id=user.id,
        secret_hash=hashlib.sha256(secret.encode()).hexdigest(),
        mfa=mfa,
        created_at=now_s(),
        expires_at=now_s() + SESSION_SECONDS,
        address=address,
    )
    session.add(row)
    value = f"{row.id}.{secret}"
    return LoginResult(
        user=user,
        cookie=f"{value}.{_sign(box, value)}",
        csrf=csrf_token(box, row.id),
        mfa=mfa,
        expires_at=row.expires_at,
        session_id=row.id,
    )


def session_caller(
    session: Session,
    box: SecretBox,
    cookie: str,
    *,
    method: str,
    csrf: str | None,
) -> tuple[Caller, UserSession]:
    """The caller a session cookie stands for; state-changing methods need the CSRF token."""
    invalid = UnauthorizedError("the session is not valid (log in again)")
    parts = cookie.split(".")
    if len(parts) != 3:
        raise invalid
    sid, secret, sig = parts
    if not _same(_sign(box, f"{sid}.{secret}"), sig):
        raise invalid
    row = session.get(UserSession, sid)
    if (
        row is None
        or row.revoked_at is not None
        or row.expires_at <= now_s()
        or not _same(row.secret_hash, hashlib.sha256(_utf8(secret)).hexdigest())
    ):
        raise invalid
    if method.upper() not in SAFE_METHODS and (
        csrf is None or not _same(csrf, csrf_token(box, sid))
    ):
        raise ForbiddenError(
            "a state-changing request with a session needs the X-CSRF-Token header", code="csrf"
        )
    user = session.get(User, row.user_id)
    vendor = session.get(Vendor, row.vendor_id)
    if user is None or vendor is None or user.disabled_at is not None:
        raise invalid
    who = Caller(
        vendor_id=vendor.id,
        vendor_name=vendor.name,
        role=user.role,
        token_id="",
        user_id=user.id,
        mfa=row.mfa,
        via="session",
    )
    return who, row


def logout(session: Session, row: UserSession) -> None:
    row.revoked_at = now_s()
    audit.note(
        session, row.vendor_id, "user.logout", {"target": {"kind": "user", "id": row.user_id}}
    )


def user_of(session: Session, caller: Caller) -> User:
    if caller.user_id is None:
        raise ForbiddenError("this needs a person (a session or a personal token), not a token")
    user = session.get(User, caller.user_id)
    if user is None or user.disabled_at is not None:
        raise UnauthorizedError("the user is disabled")
    return user


def require_fresh_totp(
    session: Session, box: SecretBox, caller: Caller, code: str | None, address: str | None
) -> tuple[User, int] | ControlPlaneError:
    """A step-up check: the caller is a person with TOTP on, and ``code`` is fresh.

    Returned, not raised, on failure: a wrong code counts towards the
    user's lockout and is audited, and both must commit with the refusal.
    """
    try:
        user_of(session, caller)
    except ControlPlaneError as exc:
        return ForbiddenError(str(exc), code="mfa_required")
    locked_user = _lock_user(session, str(caller.user_id))
    if locked_user is None:
        return ForbiddenError("the user is gone", code="mfa_required")
    user = locked_user
    if not user.totp_enabled:
        return ForbiddenError("enrol TOTP first: this needs a fresh TOTP code", code="mfa_required")
    wait = locked(user)
    if wait is not None:
        return TooManyAttemptsError(f"too many wrong codes: locked for {wait} more seconds")
    if not code:
        return ForbiddenError("a fresh TOTP code is required", code="mfa_required")
    step = check_totp(box, user, code)
    if step is None:
        record_failure(session, user, address, "totp")
        return ForbiddenError("the TOTP code is not valid or was already used", code="totp_invalid")
    user.totp_last_step = step
    _ok(user)
    return user, step


def personal_token(session: Session, caller: Caller, name: str) -> tuple[Any, str]:
    """A token acting as the calling user (their role, disabled with them): for the CLI."""
    from modelseal.controlplane.services.vendors import new_token

    user = user_of(session, caller)
    row, token = new_token(session, caller.vendor_id, name=name, role=user.role)
    row.user_id = user.id
    return row, token


def init_owner(
    session: Session, vendor_id: str, *, username: str, password: str | None
) -> tuple[User, str | None]:
    """The vendor's first person (``controlplane init``): an owner; TOTP at first login."""
    return create_user(session, vendor_id, username=username, role="owner", password=password)
