"""Identity, access control and electronic signatures, named by the Part 11 clause each shows."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from appliance import db
from appliance.audit.events import Event
from appliance.context import Appliance
from appliance.errors import (
    AccountLocked,
    ApplianceError,
    AuthenticationFailed,
    InvalidInput,
    PasswordChangeRequired,
    PermissionDenied,
    SessionExpired,
    SignatureRefused,
)
from appliance.identity.passwords import check_password, hash_password
from appliance.identity.policy import temporary_password
from appliance.identity.roles import PERMISSIONS, ROLES
from appliance.identity.signatures import binds, get_signature
from appliance.identity.users import active_holders, get_user
from appliance.services import auth, signing, users
from appliance.services.access import authorize
from appliance.services.setup import init_appliance
from appliance.settings import PasswordPolicy, Settings
from tests.conftest import ADMIN, PASSWORD

NEW_PW = "a brand new passphrase"


def events(app, action: str) -> list[dict]:
    return [json.loads(r[0]) for r in app.conn.execute(
        "SELECT body FROM audit_view WHERE action = ? ORDER BY seq", (action,))]


def req(meaning="reviewed", reason="checked", password=PASSWORD, username=None, ack=True):
    return signing.SignatureRequest(meaning, reason, password, username, ack)


# --- 11.100 / 11.300(a): unique IDs, never reused ------------------------------------------

def test_11_100_usernames_unique_and_never_reused(appliance, admin_session) -> None:
    users.add_user(appliance, admin_session, "carol", "Carol Chen", ["ml"], NEW_PW, "hire")
    users.disable_user(appliance, admin_session, "carol", "left the hospital")
    for name in ("carol", "CAROL", " Carol "):
        with pytest.raises(InvalidInput, match="never reused|taken"):
            users.add_user(appliance, admin_session, name, "Another Carol", ["ml"], NEW_PW, "x")
    assert get_user(appliance.conn, "carol").status == "disabled"


def test_11_300a_accounts_are_disabled_never_deleted(appliance) -> None:
    with pytest.raises(sqlite3.IntegrityError, match="never deleted"):
        appliance.conn.execute("DELETE FROM users WHERE username = ?", (ADMIN,))
    with pytest.raises(sqlite3.IntegrityError, match="never change"):
        appliance.conn.execute("UPDATE users SET username = 'eve' WHERE username = ?", (ADMIN,))


def test_11_10d_disabled_user_cannot_log_in(appliance, admin_session, make_user) -> None:
    s = make_user(["it"], username="ivan")
    with pytest.raises(InvalidInput, match="already active"):
        users.enable_user(appliance, admin_session, "ivan", "no change")
    users.disable_user(appliance, admin_session, "ivan", "left")
    with pytest.raises(InvalidInput, match="already disabled"):
        users.disable_user(appliance, admin_session, "ivan", "twice")
    assert appliance.conn.execute(  # the refusals changed nothing and claim no change
        "SELECT count(*) FROM audit_events WHERE json_extract(body, '$.action') IN "
        "('user.disable', 'user.enable') AND json_extract(body, '$.outcome') = 'success'"
    ).fetchone() == (1,)
    with pytest.raises(AuthenticationFailed):
        auth.login(appliance, "ivan", PASSWORD)
    with pytest.raises(InvalidInput):  # an account change needs a reason
        users.enable_user(appliance, admin_session, "ivan", " ")
    users.enable_user(appliance, admin_session, "ivan", "returned")
    assert auth.login(appliance, "ivan", PASSWORD).username == s.username


# --- 11.300(b): password policy, ageing, loss management ----------------------------------

def test_11_300b_password_policy(appliance, admin_session) -> None:
    with pytest.raises(InvalidInput, match="shorter than 12"):
        users.add_user(appliance, admin_session, "dan", "Dan", ["it"], "short", "hire")
    with pytest.raises(InvalidInput, match="contains the username"):
        users.add_user(appliance, admin_session, "danny", "Dan", ["it"], "danny-is-great-123", "h")
    with pytest.raises(InvalidInput, match="contains the username"):  # split by a zero-width
        users.add_user(appliance, admin_session, "danny", "Dan", ["it"],  # space, it reads so
                       "dan\u200bny-is-great-123", "h")
    stored = get_user(appliance.conn, ADMIN).password_hash
    assert stored.startswith("scrypt$") and PASSWORD not in stored


def test_11_300b_a_password_no_console_can_type_is_refused(appliance, admin_session) -> None:
    """A CR left by a file with Windows line ends, a NUL, a tab: set through the CLI, such a
    password could never be typed at the console again."""
    for bad in (NEW_PW + "\r", "with\x00nul inside it", "tab\tseparated words"):
        with pytest.raises(InvalidInput, match="password contains a control character"):
            users.change_password(appliance, admin_session, PASSWORD, bad)
        with pytest.raises(InvalidInput, match="password contains a control character"):
            users.add_user(appliance, admin_session, "dan", "Dan", ["it"], bad, "hire")
    assert check_password(PASSWORD, get_user(appliance.conn, ADMIN).password_hash)
    assert get_user(appliance.conn, "dan") is None
    users.change_password(appliance, admin_session, PASSWORD, "ünïcode and spaces ok")


def test_11_300b_a_password_is_one_however_its_accents_are_composed(appliance,
                                                                     admin_session) -> None:
    """Set at a terminal that sends "é" as one code point, a password must also log in from
    one that sends "e" and a combining accent (and full-width letters as plain ones): both
    are stored and checked in NFKC form. A hash stored before that, of the form as typed,
    still matches that form."""
    import base64
    import hashlib
    import unicodedata

    composed = "caf\u00e9 au lait, tr\u00e8s chaud"
    decomposed = unicodedata.normalize("NFD", composed)
    assert composed != decomposed
    users.add_user(appliance, admin_session, "dan", "Dan", ["it"], composed, "hire",
                   must_change_password=False)
    assert auth.login(appliance, "dan", decomposed).username == "dan"
    assert auth.login(appliance, "dan", composed).username == "dan"
    with pytest.raises(AuthenticationFailed):
        auth.login(appliance, "dan", "cafe au lait, tres chaud")
    wide = "\uff30\uff41\uff53\uff53 phrase for ever"  # full-width "Pass"
    assert check_password("Pass phrase for ever", hash_password(wide, 1024))
    salt = bytes(range(16))
    legacy = hashlib.scrypt(decomposed.encode(), salt=salt, n=1024, r=8, p=1, dklen=32)
    stored = "$".join(["scrypt", "1024", "8", "1", base64.b64encode(salt).decode(),
                       base64.b64encode(legacy).decode()])
    assert check_password(decomposed, stored) and not check_password(composed + "x", stored)


def test_11_300b_password_history_refuses_last_five(appliance, admin_session) -> None:
    current = PASSWORD
    for i in range(5):
        new = f"rotation password {i:02d}"
        users.change_password(appliance, admin_session, current, new)
        current = new
    with pytest.raises(InvalidInput, match="last 5"):
        users.change_password(appliance, admin_session, current, "rotation password 01")
    users.change_password(appliance, admin_session, current, PASSWORD)  # 6 changes ago: allowed


def test_11_300b_a_reset_keeps_the_history_at_the_last_five_own_passwords(
        appliance, admin_session, make_user) -> None:
    session = make_user(["it"], username="ivo")
    current = PASSWORD
    for i in range(1, 6):
        users.change_password(appliance, session, current, f"rotation password {i:02d}")
        current = f"rotation password {i:02d}"
    users.reset_password(appliance, admin_session, "ivo", "forgot it")
    temp = users.reset_password(appliance, admin_session, "ivo", "lost the first slip").password
    session = auth.login(appliance, "ivo", temp)
    with pytest.raises(InvalidInput, match="last 5"):  # the oldest of the five
        users.change_password(appliance, session, temp, "rotation password 01")
    with pytest.raises(InvalidInput, match="the new password is the temporary one"):
        users.change_password(appliance, session, temp, temp)
    users.change_password(appliance, session, temp, PASSWORD)  # 6 passwords ago: allowed
    history = get_user(appliance.conn, "ivo").password_history
    assert len(history) == 5 and not any(check_password(temp, h) for h in history)


def test_11_300b_temporary_passwords_meet_the_policy_in_force(home) -> None:
    """`users add` made a 16-character temporary password and then refused it under a
    longer minimum, telling the officer to choose a longer password they never chose."""
    long_pw = "a correct horse battery staple"
    strict = Settings(password=PasswordPolicy(scrypt_n=2**10, max_age_days=0, min_length=24))
    app = init_appliance(home, ADMIN, "Alice Adams", long_pw, settings=strict)
    r = subprocess.run([sys.executable, "-m", "appliance", "users", "add", "bo",
                        "--full-name", "Bo", "--role", "it", "--reason", "hire", "--user", ADMIN,
                        "--password-stdin", "--json"], input=long_pw + "\n",
                       capture_output=True, text=True, timeout=60,
                       env={**os.environ, "APPLIANCE_HOME": str(home)})
    assert r.returncode == 0, r.stderr
    temp = json.loads(r.stdout)["temporary_password"]
    assert len(temp) >= 24 and auth.login(app, "bo", temp).must_change_password
    reset = users.reset_password(app, auth.login(app, ADMIN, long_pw), "bo", "lost").password
    assert len(reset) >= 24 and auth.login(app, "bo", reset).username == "bo"
    short = PasswordPolicy(min_length=12)
    assert not any("bo" in temporary_password("bo", short).lower() for _ in range(500))
    app.close()


def test_11_300b_expired_password_forces_change(appliance, clock) -> None:
    appliance.settings = appliance.settings.__class__.from_dict(
        {**appliance.settings.to_dict(), "password": {"scrypt_n": 2**10, "max_age_days": 90}})
    clock.advance(days=91)
    session = auth.login(appliance, ADMIN, PASSWORD)
    assert session.password_expired and session.must_change_password
    with pytest.raises(PasswordChangeRequired):
        authorize(appliance, session, "audit.view")
    users.change_password(appliance, session, PASSWORD, NEW_PW)
    assert authorize(appliance, session, "audit.view").username == ADMIN
    assert events(appliance, "user.password_change")[-1]["details"] == {
        "was_temporary_or_expired": True}


def test_11_300b_a_password_that_expires_during_a_session_signs_nothing(appliance,
                                                                        clock) -> None:
    appliance.settings = appliance.settings.__class__.from_dict(
        {**appliance.settings.to_dict(), "password": {"scrypt_n": 2**10, "max_age_days": 90}})
    clock.advance(days=90, minutes=-5)
    session = auth.login(appliance, ADMIN, PASSWORD)
    assert not session.password_expired
    clock.advance(minutes=10)  # 90 days and 5 minutes: expired, the session still open
    with pytest.raises(SignatureRefused, match="your password has expired and cannot sign"):
        users.review_access(appliance, session, req(username=ADMIN))
    assert appliance.conn.execute("SELECT COUNT(*) FROM signatures").fetchone()[0] == 0
    users.change_password(appliance, session, PASSWORD, NEW_PW)
    assert users.review_access(appliance, session, req(password=NEW_PW, username=ADMIN))


def test_11_300b_reset_gives_temporary_password_that_cannot_sign(appliance, admin_session,
                                                                 make_user) -> None:
    make_user(["security"], username="sam")
    temp = users.reset_password(appliance, admin_session, "sam", "forgot password")
    session = auth.login(appliance, "sam", temp.password)
    assert session.must_change_password
    with pytest.raises(PasswordChangeRequired):
        users.review_access(appliance, session, req(password=temp.password, username="sam"))
    with pytest.raises(SignatureRefused, match="temporary"):
        signing.reauthenticate(appliance, session, req(password=temp.password, username="sam"))
    with pytest.raises(PasswordChangeRequired):
        users.users(appliance, session)
    users.change_password(appliance, session, temp.password, NEW_PW)
    sig = users.review_access(appliance, session, req(password=NEW_PW, username="sam"))
    assert sig.username == "sam"
    assert temp.password not in json.dumps(events(appliance, "user.reset_password"))


# --- 11.300(d): lockout, reported -----------------------------------------------------------

def test_11_300d_lockout_after_five_failures_recorded_and_reported(appliance, admin_session,
                                                                   make_user) -> None:
    make_user(["it"], username="ivy")
    for _ in range(4):
        with pytest.raises(AuthenticationFailed):
            auth.login(appliance, "ivy", "wrong password!!")
    with pytest.raises(AccountLocked, match="locked until"):
        auth.login(appliance, "ivy", "wrong password!!")
    with pytest.raises(AccountLocked):  # even the right password, while locked
        auth.login(appliance, "ivy", PASSWORD)
    lock = events(appliance, "auth.lockout")
    assert len(lock) == 1 and lock[0]["target"]["id"] == "ivy"
    assert [x["username"] for x in users.recent_lockouts(appliance, admin_session)] == ["ivy"]
    failures = [e for e in events(appliance, "auth.login") if e["outcome"] == "failure"]
    assert len(failures) == 6


def test_11_300d_lockout_expires_or_is_cleared_by_security(appliance, admin_session, clock,
                                                           make_user) -> None:
    make_user(["it"], username="ike")
    for _ in range(5):
        with pytest.raises(AuthenticationFailed):
            auth.login(appliance, "ike", "wrong password!!")
    users.unlock(appliance, admin_session, "ike", "identity confirmed by phone")
    assert auth.login(appliance, "ike", PASSWORD).username == "ike"
    for _ in range(5):
        with pytest.raises(AuthenticationFailed):
            auth.login(appliance, "ike", "wrong password!!")
    clock.advance(minutes=31)
    assert auth.login(appliance, "ike", PASSWORD).username == "ike"


def test_11_300d_a_lockout_lasts_its_lock_time_not_the_counting_window(
        appliance, clock, make_user) -> None:
    """Failures are counted over 15 minutes, the lock lasts 30: it must not end when the
    failures that caused it leave the counting window."""
    make_user(["it"], username="ida")
    for _ in range(5):
        with pytest.raises(AuthenticationFailed):
            auth.login(appliance, "ida", "wrong password!!")
    clock.advance(minutes=16)
    assert auth.locked_until(appliance, "ida", appliance.clock.now()) is not None
    with pytest.raises(AccountLocked):
        auth.login(appliance, "ida", PASSWORD)
    clock.advance(minutes=15)
    assert auth.login(appliance, "ida", PASSWORD).username == "ida"


def test_11_300d_an_officer_cannot_unlock_their_own_account(appliance, admin_session,
                                                             make_user) -> None:
    """Else wrong signature passwords could be tried without limit from an open session."""
    for _ in range(5):
        with pytest.raises(AuthenticationFailed):
            users.review_access(appliance, admin_session, req(username=ADMIN, password="x" * 12))
    with pytest.raises(PermissionDenied, match="alice may not manage their own account"):
        users.unlock(appliance, admin_session, ADMIN, "oops")
    assert auth.locked_until(appliance, ADMIN, appliance.clock.now()) is not None
    denied = events(appliance, "access.denied")[-1]
    assert (denied["target"]["id"], denied["details"]["rule"]) == (ADMIN, "not on one's own account")
    assert events(appliance, "user.unlock") == []
    make_user(["security"], username="sec")  # another officer may
    users.unlock(appliance, auth.login(appliance, "sec", PASSWORD), ADMIN, "confirmed in person")
    assert auth.locked_until(appliance, ADMIN, appliance.clock.now()) is None


def test_11_300d_a_locked_account_cannot_change_its_password(appliance, make_user) -> None:
    """Guessing the old password from an open session locks like login, and the right one
    does nothing while locked."""
    session = make_user(["it"], username="ida")
    for _ in range(4):
        with pytest.raises(InvalidInput, match="current password is wrong"):
            users.change_password(appliance, session, "wrong password!!", NEW_PW)
    with pytest.raises(AccountLocked):
        users.change_password(appliance, session, "wrong password!!", NEW_PW)
    with pytest.raises(AccountLocked, match="locked until"):
        users.change_password(appliance, session, PASSWORD, NEW_PW)
    assert check_password(PASSWORD, get_user(appliance.conn, "ida").password_hash)
    tried = [(e["outcome"], e["details"]["reason"])
             for e in events(appliance, "user.password_change")]
    assert tried == [("failure", "wrong old password")] * 5 + [("failure", "account locked")]
    assert [e["target"]["id"] for e in events(appliance, "auth.lockout")] == ["ida"]


def test_11_300d_failures_spread_beyond_the_window_do_not_lock(appliance, clock,
                                                               make_user) -> None:
    make_user(["it"], username="ina")
    for _ in range(8):
        with pytest.raises(AuthenticationFailed) as exc:
            auth.login(appliance, "ina", "wrong password!!")
        assert not isinstance(exc.value, AccountLocked)
        clock.advance(minutes=4)
    assert auth.login(appliance, "ina", PASSWORD).username == "ina"


def test_login_errors_never_reveal_whether_a_username_exists(appliance) -> None:
    messages = []
    for name in (ADMIN, "nobody-here"):
        for _ in range(5):
            with pytest.raises(AuthenticationFailed) as exc:
                auth.login(appliance, name, "wrong password!!")
            messages.append(type(exc.value).__name__ + str(exc.value).split(" until")[0])
    assert messages[:5] == messages[5:]  # same errors, same lockout, known or not


def test_11_300d_a_huge_typed_name_is_recorded_cut_and_still_locks(appliance,
                                                                   admin_session) -> None:
    """The login screen takes any text before anyone is authenticated: a 1 MB name used to
    be written whole, several times over, into the trail that is never deleted."""
    huge = "Mallory" * 150_000
    size = appliance.conn.execute("SELECT SUM(LENGTH(body)) FROM audit_events").fetchone()[0]
    for _ in range(4):
        with pytest.raises(AuthenticationFailed, match="unknown user or wrong password"):
            auth.login(appliance, huge, "wrong password!!")
    with pytest.raises(AccountLocked):  # counted as one name, like any other
        auth.login(appliance, huge, "wrong password!!")
    grown = appliance.conn.execute("SELECT SUM(LENGTH(body)) FROM audit_events").fetchone()[0]
    assert grown - size < 20_000
    recorded = {e["target"]["id"] for e in events(appliance, "auth.login")
                if e["outcome"] == "failure"}
    assert recorded == {"mallory" * 9 + "m\u2026"}
    users.unlock(appliance, admin_session, huge, "a test")
    assert auth.locked_until(appliance, auth.typed_name(huge), appliance.clock.now()) is None


_TIMED_LOGIN = """
import sys, time
from pathlib import Path
from appliance.context import Appliance
from appliance.errors import AuthenticationFailed
from appliance.services import auth
with Appliance.open(Path(sys.argv[1])) as app:
    start = time.process_time()  # CPU time: scrypt's work, whatever else the machine does
    try:
        auth.login(app, sys.argv[2], "wrong password!!")
    except AuthenticationFailed:
        pass
    print(time.process_time() - start)
"""


def test_an_unknown_name_takes_as_long_as_a_known_one_in_a_new_process(home) -> None:
    """Each CLI command is a new process: its first failure for an unknown name must cost
    one scrypt derivation, as a known name's does (it used to cost two). Measured."""
    costly = Settings(password=PasswordPolicy(scrypt_n=2**14, max_age_days=0))
    init_appliance(home, ADMIN, "Alice Adams", PASSWORD, settings=costly).close()

    def took(name: str) -> float:
        r = subprocess.run([sys.executable, "-c", _TIMED_LOGIN, str(home), name],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        return float(r.stdout)

    took("warm-up")  # the first write after set-up does more than count a failure
    known, unknown = [], []
    for i in range(4):  # alternating, so a busy moment hits both; 4 failures: not locked
        known.append(took(ADMIN))
        unknown.append(took(f"nobody{i}"))
    assert min(unknown) < 1.5 * min(known), (known, unknown)


# --- sessions ---------------------------------------------------------------------------------

def test_idle_session_expires_and_is_recorded(appliance, admin_session, clock) -> None:
    clock.advance(minutes=14)
    authorize(appliance, admin_session, "audit.view")  # activity resets the idle timer
    clock.advance(minutes=16)
    with pytest.raises(SessionExpired, match="15 idle minutes"):
        authorize(appliance, admin_session, "audit.view")
    with pytest.raises(SessionExpired):
        authorize(appliance, admin_session, "audit.view")
    assert len(events(appliance, "auth.session_expired")) == 1


# --- 11.10(d), (g): authority checks in the service layer -----------------------------------

@pytest.mark.parametrize("role", sorted(ROLES))
def test_11_10g_every_permission_checked_for_every_role(appliance, make_user, role) -> None:
    session = make_user([role])
    for permission, allowed in PERMISSIONS.items():
        if role in allowed:
            assert authorize(appliance, session, permission).role == role
        else:
            with pytest.raises(PermissionDenied):
                authorize(appliance, session, permission, target_type="t", target_id=permission)
    denied = {e["details"]["permission"] for e in events(appliance, "access.denied")
              if e["actor"]["username"] == session.username}
    assert denied == {p for p, allowed in PERMISSIONS.items() if role not in allowed}


def test_11_10d_auditor_changes_nothing(appliance, make_user) -> None:
    auditor = make_user(["auditor"])
    with pytest.raises(PermissionDenied):
        users.add_user(appliance, auditor, "zed", "Zed", ["it"], NEW_PW, "try")
    with pytest.raises(PermissionDenied):
        users.review_access(appliance, auditor, req())
    assert get_user(appliance.conn, "zed") is None


def test_11_10d_a_revoked_role_counts_at_once_in_an_open_session(appliance, admin_session,
                                                                 make_user) -> None:
    bob = make_user(["ml", "admin"], username="bob")
    assert authorize(appliance, bob, "update.approve").role == "admin"
    users.revoke_role(appliance, admin_session, "bob", "admin", "no longer an approver")
    with pytest.raises(PermissionDenied, match="bob may not update.approve"):
        authorize(appliance, bob, "update.approve", target_type="bundle", target_id="b@1")
    assert bob.roles == ("ml",)
    assert events(appliance, "access.denied")[-1]["details"]["permission"] == "update.approve"
    # Lowering one's own privilege takes effect in the session that did it.
    make_user(["security"], username="sec")
    users.revoke_role(appliance, admin_session, ADMIN, "security", "separation of duties")
    with pytest.raises(PermissionDenied):
        users.unlock(appliance, admin_session, "bob", "x")
    assert "security" not in admin_session.roles


def test_11_10d_a_disabled_account_ends_its_open_session(appliance, admin_session,
                                                         make_user) -> None:
    ivan = make_user(["it"], username="ivan")
    users.disable_user(appliance, admin_session, "ivan", "left")
    with pytest.raises(SessionExpired, match="session ended: the account is disabled"):
        authorize(appliance, ivan, "update.install", target_type="bundle", target_id="b@1")
    assert ivan.ended
    users.enable_user(appliance, admin_session, "ivan", "returned")
    with pytest.raises(SessionExpired, match="session has ended"):  # a new login is needed
        authorize(appliance, ivan, "update.install")
    ended = events(appliance, "auth.session_ended")
    assert [(e["target"]["id"], e["outcome"], e["details"]["reason"]) for e in ended] == [
        ("ivan", "denied", "the account is disabled")]


def test_11_300_a_password_reset_ends_the_sessions_opened_before_it(appliance, admin_session,
                                                                    make_user) -> None:
    """A reset means the password may be known to someone else, who may hold the session:
    that session ends even if the owner has set a new password before it acts again."""
    ivan = make_user(["it"], username="ivan")
    temp = users.reset_password(appliance, admin_session, "ivan", "phished").password
    # The owner logs in with the temporary password and may change it in that session.
    fresh = auth.login(appliance, "ivan", temp)
    users.change_password(appliance, fresh, temp, "a-passphrase-of-my-own-2026")
    authorize(appliance, fresh, "update.install", target_type="bundle", target_id="b@1")
    with pytest.raises(SessionExpired, match="session ended: the password was reset or "
                                             "changed, or the account disabled, since login"):
        authorize(appliance, ivan, "update.install", target_type="bundle", target_id="b@1")
    assert [e["details"]["reason"] for e in events(appliance, "auth.session_ended")] == [
        "the password was reset or changed, or the account disabled, since login"]


def test_11_10d_a_disable_ends_sessions_even_once_the_account_is_enabled_again(
        appliance, admin_session, make_user) -> None:
    ivan = make_user(["it"], username="ivan")
    users.disable_user(appliance, admin_session, "ivan", "suspended")
    users.enable_user(appliance, admin_session, "ivan", "cleared")
    with pytest.raises(SessionExpired, match="since login"):
        authorize(appliance, ivan, "update.install")
    authorize(appliance, auth.login(appliance, "ivan", PASSWORD), "update.install")


def test_11_300_changing_ones_password_ends_ones_other_sessions(appliance, make_user) -> None:
    here = make_user(["it"], username="ivan")
    there = auth.login(appliance, "ivan", PASSWORD)
    users.change_password(appliance, here, PASSWORD, "a-passphrase-of-my-own-2026")
    authorize(appliance, here, "update.install")  # the session that changed it goes on
    with pytest.raises(SessionExpired, match="since login"):
        authorize(appliance, there, "update.install")


# --- two officers, or an owner and an officer, changing one account at once ---------------

def _at_once(appliance, *calls) -> list[Exception]:
    """Run each call on its own connection in its own thread, as separate processes would,
    each having read the account before any may write: a writer holds the lock until all
    have started. Returns the errors raised."""
    blocker = db.connect(appliance.layout.db)
    blocker.execute("BEGIN IMMEDIATE")
    errors: list[Exception] = []

    def run(call) -> None:
        with Appliance.open(appliance.layout.root, clock=appliance.clock) as app:
            try:
                call(app)
            except ApplianceError as exc:
                errors.append(exc)

    threads = [threading.Thread(target=run, args=(c,)) for c in calls]
    for t in threads:
        t.start()
    time.sleep(0.5)
    blocker.execute("ROLLBACK")
    blocker.close()
    for t in threads:
        t.join(60)
    return errors


def test_two_officers_at_once_never_lose_one_change(appliance, admin_session,
                                                     make_user) -> None:
    """A revoke and a grant at once: each applies to the roles as stored when it writes
    (the grant used to write back the roles it had read, the revoked one among them)."""
    sec = make_user(["security"], username="sec")
    make_user(["it", "ml"], username="bob")
    assert _at_once(appliance,
                    lambda app: users.revoke_role(app, admin_session, "bob", "ml", "moved"),
                    lambda app: users.grant_role(app, sec, "bob", "auditor", "audit")) == []
    assert get_user(appliance.conn, "bob").roles == ("it", "auditor")
    first, second = [e for e in events(appliance, "user.grant_role") + events(
        appliance, "user.revoke_role") if e["target"]["id"] == "bob" and e["reason"] != "trained"]
    first, second = sorted((first, second), key=lambda e: e["seq"])
    assert second["old"]["roles"] == first["new"]["roles"]  # old values as they were


def test_two_officers_disabling_each_other_at_once_leave_one(appliance, admin_session,
                                                              make_user) -> None:
    one = make_user(["security"], username="sec1")
    two = make_user(["security"], username="sec2")
    users.revoke_role(appliance, one, ADMIN, "security", "separation of duties")
    errors = _at_once(appliance,
                      lambda app: users.disable_user(app, one, "sec2", "x"),
                      lambda app: users.disable_user(app, two, "sec1", "y"))
    assert [e.message for e in errors] in (["sec1 is the last active security officer"],
                                           ["sec2 is the last active security officer"])
    assert len(active_holders(appliance.conn, "security")) == 1


def test_a_password_change_at_the_moment_of_a_reset_never_undoes_it(appliance, admin_session,
                                                                    make_user) -> None:
    """The reset is why the password may be known to someone else: their change racing it
    must neither replace the temporary password nor carry their session on."""
    ivan = make_user(["it"], username="ivan")
    blocker = db.connect(appliance.layout.db)
    blocker.execute("BEGIN IMMEDIATE")
    errors: list[Exception] = []

    def change() -> None:
        with Appliance.open(appliance.layout.root, clock=appliance.clock) as app:
            try:
                users.change_password(app, ivan, PASSWORD, NEW_PW)
            except ApplianceError as exc:
                errors.append(exc)

    thread = threading.Thread(target=change)
    thread.start()
    time.sleep(0.5)  # it has checked the old password and waits for the lock
    blocker.execute("ROLLBACK")
    blocker.close()
    temp = users.reset_password(appliance, admin_session, "ivan", "phished").password
    thread.join(60)
    assert check_password(temp, get_user(appliance.conn, "ivan").password_hash)
    assert get_user(appliance.conn, "ivan").must_change_password
    with pytest.raises(SessionExpired):
        authorize(appliance, ivan, "update.install")
    assert [e.message for e in errors] in ([], ["session ended: the password was reset or "
                                             "changed, or the account disabled, since login"])


# --- 11.10(i): training before the admin role -----------------------------------------------

def test_11_10i_admin_role_requires_recorded_training(appliance, admin_session,
                                                      make_user) -> None:
    make_user(["it"], username="tom")
    with pytest.raises(InvalidInput, match="no recorded training"):
        users.grant_role(appliance, admin_session, "tom", "admin", "promotion")
    it_user = make_user(["it"])
    with pytest.raises(PermissionDenied):  # only an admin records training
        users.record_training(appliance, it_user, "tom", "admin", "course")
    users.record_training(appliance, admin_session, "tom", "admin", "Part 11 course 2026-01")
    assert "admin" in users.grant_role(appliance, admin_session, "tom", "admin", "promo").roles
    assert events(appliance, "user.training_recorded")[-1]["new"] == {"role": "admin"}


def test_separation_of_duties_warned_until_roles_are_split(appliance, admin_session,
                                                           make_user) -> None:
    assert users.role_conflicts(appliance) == [
        "alice holds both admin and security: separate the admin and security roles"]
    make_user(["security"], username="sec")
    users.revoke_role(appliance, admin_session, ADMIN, "security", "separation of duties")
    assert users.role_conflicts(appliance) == []


def test_no_one_raises_their_own_privilege_or_resets_their_own_password(
        appliance, admin_session, make_user) -> None:
    sec = make_user(["security"], username="sec")
    with pytest.raises(PermissionDenied, match="sec may not manage their own account"):
        users.grant_role(appliance, sec, "sec", "it", "I need it")
    with pytest.raises(PermissionDenied, match="alice may not manage their own account"):
        users.reset_password(appliance, admin_session, ADMIN, "forgot it")
    denied = events(appliance, "access.denied")
    assert [(e["actor"]["username"], e["target"]["id"], e["details"]["rule"])
            for e in denied] == [("sec", "sec", "not on one's own account"),
                                 (ADMIN, ADMIN, "not on one's own account")]
    assert get_user(appliance.conn, "sec").roles == ("security",)
    assert check_password(PASSWORD, get_user(appliance.conn, ADMIN).password_hash)
    # Another officer may; and lowering one's own privilege stays possible.
    users.grant_role(appliance, admin_session, "sec", "it", "on-call cover")
    users.revoke_role(appliance, sec, "sec", "it", "cover ended")
    assert get_user(appliance.conn, "sec").roles == ("security",)


def test_a_reason_or_printed_name_that_could_forge_a_line_is_refused(
        appliance, admin_session, make_user) -> None:
    make_user(["it"], username="ivo")
    before = appliance.conn.execute("SELECT max(seq) FROM audit_events").fetchone()[0]
    with pytest.raises(InvalidInput, match="the reason contains a control character"):
        users.unlock(appliance, admin_session, "ivo", "ok\n 99 fake event")
    with pytest.raises(InvalidInput, match="the printed name contains a control character"):
        users.add_user(appliance, admin_session, "eve", "Eve\x1b[8m", ["it"],
                       "a long enough password", "new starter")
    with pytest.raises(InvalidInput, match="the reason contains a control character"):
        users.review_access(appliance, admin_session, req(reason="checked\u202e", ack=True,
                                                          username=ADMIN))
    assert appliance.conn.execute("SELECT max(seq) FROM audit_events").fetchone()[0] == before


def test_a_role_given_twice_is_refused_and_the_only_role_guard_holds(
        appliance, admin_session) -> None:
    with pytest.raises(InvalidInput, match="a role given more than once: ml"):
        users.add_user(appliance, admin_session, "dup", "Dup", ["ml", "ml"], NEW_PW, "hire")
    assert get_user(appliance.conn, "dup") is None
    # An account stored with a doubled role (before this check) keeps its only role.
    users.add_user(appliance, admin_session, "dup", "Dup", ["ml"], NEW_PW, "hire")
    with appliance.transaction() as conn:
        conn.execute("""UPDATE users SET roles = '["ml", "ml"]' WHERE username = 'dup'""")
    with pytest.raises(InvalidInput, match="ml is dup's only role"):
        users.revoke_role(appliance, admin_session, "dup", "ml", "x")
    assert get_user(appliance.conn, "dup").roles == ("ml", "ml")


def test_last_security_officer_cannot_be_removed(appliance, admin_session) -> None:
    with pytest.raises(InvalidInput, match="last active security officer"):
        users.revoke_role(appliance, admin_session, ADMIN, "security", "oops")
    with pytest.raises(InvalidInput, match="last active security officer"):
        users.disable_user(appliance, admin_session, ADMIN, "oops")


def test_last_admin_cannot_be_removed(appliance, admin_session, make_user) -> None:
    """Only an admin records the training the admin role needs: with none left, no one
    could be made an admin again, and no update approved."""
    sec = make_user(["security"], username="sec")
    with pytest.raises(InvalidInput, match="alice is the last active admin"):
        users.revoke_role(appliance, sec, ADMIN, "admin", "oops")
    with pytest.raises(InvalidInput, match="alice is the last active admin"):
        users.disable_user(appliance, admin_session, ADMIN, "leaving")
    assert get_user(appliance.conn, ADMIN).roles == ("admin", "security")
    assert get_user(appliance.conn, ADMIN).active
    make_user(["admin"], username="ada")
    users.revoke_role(appliance, sec, ADMIN, "admin", "separation of duties")
    assert active_holders(appliance.conn, "admin") == ["ada"]


# --- 11.10(j), 11.200(a), 11.50, 11.70: electronic signatures -------------------------------

def test_11_10j_first_signature_requires_statement_acknowledgement(appliance,
                                                                   admin_session) -> None:
    with pytest.raises(SignatureRefused, match="statement"):
        users.review_access(appliance, admin_session, req(username=ADMIN, ack=False))
    assert get_user(appliance.conn, ADMIN).signature_ack_at is None
    users.review_access(appliance, admin_session, req(username=ADMIN, ack=True))
    assert get_user(appliance.conn, ADMIN).signature_ack_at is not None
    ack = events(appliance, "signature.statement_acknowledged")
    assert len(ack) == 1 and "legally binding" in ack[0]["details"]["statement"]
    users.review_access(appliance, admin_session, req(ack=False))  # later: no need again


def test_11_200a_first_signature_needs_id_and_password_later_password_only(
        appliance, admin_session) -> None:
    with pytest.raises(SignatureRefused, match="username too"):
        users.review_access(appliance, admin_session, req(username=None))
    users.review_access(appliance, admin_session, req(username=ADMIN))
    assert admin_session.signatures == 1
    users.review_access(appliance, admin_session, req(username=None))  # same session
    assert admin_session.signatures == 2
    new_session = auth.login(appliance, ADMIN, PASSWORD)
    with pytest.raises(SignatureRefused, match="username too"):
        users.review_access(appliance, new_session, req(username=None))


def test_11_200a_wrong_password_or_other_user_does_not_sign(appliance, admin_session,
                                                            make_user) -> None:
    make_user(["security"], username="sue")
    with pytest.raises(AuthenticationFailed):
        users.review_access(appliance, admin_session, req(username=ADMIN, password="nope-nope"))
    with pytest.raises(SignatureRefused, match="only sign as yourself"):
        users.review_access(appliance, admin_session, req(username="sue"))
    assert appliance.conn.execute("SELECT COUNT(*) FROM signatures").fetchone()[0] == 0
    fails = events(appliance, "signature.reauth")
    assert [e["outcome"] for e in fails] == ["failure", "failure"]
    for _ in range(3):  # signature failures count toward lockout like login failures
        with pytest.raises(AuthenticationFailed):
            users.review_access(appliance, admin_session, req(username=ADMIN, password="x" * 12))
    with pytest.raises(AccountLocked):
        auth.login(appliance, ADMIN, PASSWORD)


def test_11_70_signature_bound_to_record(appliance, admin_session) -> None:
    sig = users.review_access(appliance, admin_session, req(username=ADMIN))
    signed = json.loads(appliance.conn.execute(
        "SELECT body FROM audit_events WHERE seq = ?", (sig.audit_seq,)).fetchone()[0])
    content = signed["new"]["accounts"]
    assert binds(sig, "access_review", sig.record_id, content)
    changed = [dict(content[0], roles=["admin"])]
    assert not binds(sig, "access_review", sig.record_id, changed)  # record changed
    assert not binds(sig, "bundle", "other-record", content)        # copied elsewhere
    assert not binds(sig, "access_review", "2099-01-01T00:00:00.000Z", content)
    assert get_signature(appliance.conn, sig.id) == sig
    with pytest.raises(sqlite3.IntegrityError, match="never change"):
        appliance.conn.execute("UPDATE signatures SET record_id = 'x'")


def test_11_70_a_signature_moved_by_editing_the_database_is_caught(appliance, admin_session,
                                                                    make_user) -> None:
    """Past its triggers, a signature row moved to another record and another signer: the
    audit event still carries what was signed, so verify names it and no view shows the
    moved row as a signature."""
    from appliance.audit.verify import verify_trail
    from appliance.errors import IntegrityError
    from appliance.services import signatures

    sig = users.review_access(appliance, admin_session, req(username=ADMIN))
    make_user(["it"], username="ivan")
    auditor = make_user(["auditor"], username="audra")
    assert verify_trail(appliance.conn, appliance.key.public).ok
    assert signatures.show_signature(appliance, auditor, sig.id) == sig
    conn = appliance.conn
    saved = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'signatures_no_update'"
                         ).fetchone()[0]
    conn.execute("DROP TRIGGER signatures_no_update")
    conn.execute("UPDATE signatures SET record_type = 'bundle', record_id = 'other@1', "
                 "username = 'ivan' WHERE id = ?", (sig.id,))
    conn.execute(saved)
    conn.commit()
    report = verify_trail(conn, appliance.key.public)
    assert report.kinds() == {"signature-altered"}
    assert report.first_bad_seq == sig.audit_seq and sig.id in report.findings[0].message
    with pytest.raises(IntegrityError, match="does not match"):
        signatures.show_signature(appliance, auditor, sig.id)
    with pytest.raises(IntegrityError, match="does not match"):
        signatures.list_signatures(appliance, auditor)


def test_11_70_a_signature_row_deleted_from_the_database_is_caught(appliance, admin_session
                                                                   ) -> None:
    """Past its trigger, a signature row deleted: its audit event still records the
    signature, so verify names the event and the missing row."""
    from appliance.audit.verify import verify_trail

    sig = users.review_access(appliance, admin_session, req(username=ADMIN))
    users.review_access(appliance, admin_session, req(username=ADMIN))  # a second, kept
    conn = appliance.conn
    assert verify_trail(conn, appliance.key.public).ok
    saved = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'signatures_no_delete'"
                         ).fetchone()[0]
    conn.execute("DROP TRIGGER signatures_no_delete")
    conn.execute("DELETE FROM signatures WHERE id = ?", (sig.id,))
    conn.execute(saved)
    conn.commit()
    report = verify_trail(conn, appliance.key.public)
    assert report.kinds() == {"signature-missing"} and len(report.findings) == 1
    assert report.first_bad_seq == sig.audit_seq and sig.id in report.findings[0].message


def test_11_70_a_signature_row_copied_to_another_signer_counts_for_no_one(
        appliance, admin_session, make_user) -> None:
    """A row inserted in the database, copying a real signature under another admin's
    name, must not count as that admin's signature (a second approver, say)."""
    from appliance.audit.verify import verify_trail
    from appliance.identity.signatures import signatures_for

    sig = users.review_access(appliance, admin_session, req(username=ADMIN))
    make_user(["it"], username="ivan")
    forged = sig.to_dict() | {"id": "forged-0001", "username": "ivan"}
    appliance.conn.execute(f"INSERT INTO signatures ({', '.join(forged)}) VALUES "
                           f"({', '.join('?' * len(forged))})", tuple(forged.values()))
    appliance.conn.commit()
    assert signatures_for(appliance.conn, "access_review", sig.record_id) == [sig]
    report = verify_trail(appliance.conn, appliance.key.public)
    assert report.kinds() == {"signature-altered"} and "forged-0001" in report.findings[0].message


def test_11_50_manifestation_carried_by_the_audit_event(appliance, admin_session) -> None:
    sig = users.review_access(appliance, admin_session,
                              req(username=ADMIN, reason="quarterly access review"))
    event = events(appliance, "user.access_review")[-1]
    assert event["signature"]["name"] == "Alice Adams"
    assert event["signature"]["meaning"] == "reviewed"
    assert event["signature"]["ts"] == sig.ts
    assert event["target"]["digest"] == sig.record_digest
    assert sig.line().startswith("reviewed by Alice Adams (alice) at ")
    head = appliance.conn.execute("SELECT MAX(seq) FROM audit_events").fetchone()[0]
    last_cp = appliance.conn.execute("SELECT MAX(tree_size) FROM audit_checkpoints").fetchone()[0]
    assert last_cp == head  # a signed checkpoint follows every electronic signature


def test_11_50_the_service_names_the_meaning_not_the_request(appliance, admin_session) -> None:
    """An access review is a review: signed "approved" its manifestation would say what
    the signer never did. Refused before any password is checked, nothing recorded."""
    before = appliance.conn.execute("SELECT max(seq) FROM audit_events").fetchone()[0]
    for meaning in ("approved", "rejected", "authored", "responsible"):
        with pytest.raises(SignatureRefused, match="signed with the meaning 'reviewed', not"):
            users.review_access(appliance, admin_session, req(meaning, username=ADMIN))
    with pytest.raises(SignatureRefused, match="meaning 'approved', not 'reviewed'"), \
            signing.signing(appliance, admin_session, req(username=ADMIN), meaning="approved",
                            permission="users.review"):
        pass
    assert appliance.conn.execute("SELECT COUNT(*) FROM signatures").fetchone()[0] == 0
    assert appliance.conn.execute("SELECT max(seq) FROM audit_events").fetchone()[0] == before
    assert events(appliance, "signature.reauth") == []  # no password was checked


def test_signature_rolls_back_with_the_action(appliance, admin_session) -> None:
    """The change, the signature row and its event commit together or not at all."""
    with pytest.raises(RuntimeError), signing.signing(
            appliance, admin_session, req(username=ADMIN), meaning="reviewed",
            permission="users.review") as signer:
        signer.apply(record_type="demo", record_id="1", content={"a": 1},
                     event=Event("demo.sign", admin_session.actor("admin")))
        raise RuntimeError("the action failed after signing")
    assert appliance.conn.execute("SELECT COUNT(*) FROM signatures").fetchone()[0] == 0
    assert events(appliance, "demo.sign") == []
    assert admin_session.signatures == 0


def test_every_signed_step_reads_the_signers_role_again_when_it_signs(
        appliance, admin_session, make_user) -> None:
    """A security officer's access review was authorized; while her password is checked,
    her security role is revoked. The signing transaction reads the account again first
    (every signed step signs through `signing`): nothing is signed, and the denial is
    recorded once the transaction has rolled back. (A disabled account or a reset password
    already fails the password check.)"""
    sam = make_user(["security", "it"], "sam")
    authorize(appliance, sam, "users.review", target_type="access_review", target_id="users")
    users.revoke_role(appliance, admin_session, "sam", "security", "moved to the lab")
    before = appliance.conn.execute("SELECT max(seq) FROM audit_events").fetchone()[0]
    with pytest.raises(PermissionDenied, match="sam may not users.review"), signing.signing(
            appliance, sam, req(username="sam"), meaning="reviewed", permission="users.review",
            target=("access_review", "users")) as signer:
        signer.apply(record_type="access_review", record_id="now", content=[],
                     event=Event("user.access_review", sam.actor("security")))
    assert appliance.conn.execute("SELECT COUNT(*) FROM signatures").fetchone()[0] == 0
    assert events(appliance, "user.access_review") == [] and sam.signatures == 0
    assert events(appliance, "signature.statement_acknowledged") == []
    (after,) = [json.loads(r[0]) for r in appliance.conn.execute(
        "SELECT body FROM audit_view WHERE seq > ?", (before,))]
    assert after["action"] == "access.denied" and after["outcome"] == "denied"
    assert after["actor"]["username"] == "sam"
    assert after["details"]["permission"] == "users.review"
    assert after["target"] == {"type": "access_review", "id": "users", "digest": None}


def test_passwords_never_appear_in_the_trail(appliance, admin_session) -> None:
    users.add_user(appliance, admin_session, "pat", "Pat", ["ml"], NEW_PW, "hire")
    users.change_password(appliance, admin_session, PASSWORD, "another fine password")
    dump = "\n".join(r[0] for r in appliance.conn.execute("SELECT body FROM audit_events"))
    for secret in (NEW_PW, PASSWORD, "another fine password", "scrypt$"):
        assert secret not in dump
    assert check_password(NEW_PW, get_user(appliance.conn, "pat").password_hash)


def test_11_50_signatures_show_command_prints_name_time_meaning(appliance, admin_session) -> None:
    import os
    import subprocess
    import sys
    sig = users.review_access(appliance, admin_session, req(username=ADMIN, reason="Q1 review"))
    env = dict(os.environ, APPLIANCE_HOME=str(appliance.layout.root))
    r = subprocess.run([sys.executable, "-m", "appliance", "signatures", "show", sig.id,
                        "--user", ADMIN, "--password-stdin"], input=PASSWORD + "\n",
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "Signed by:   Alice Adams (alice)" in r.stdout
    assert f"Date/time:   {sig.ts} (UTC)" in r.stdout and "Meaning:     reviewed" in r.stdout


def test_11_10g_refusals_are_recorded_before_any_business_rule(appliance, make_user) -> None:
    it_user = make_user(["it"])
    for call in (lambda: users.disable_user(appliance, it_user, ADMIN, "x"),
                 lambda: users.revoke_role(appliance, it_user, ADMIN, "security", "x"),
                 lambda: users.grant_role(appliance, it_user, ADMIN, "ml", "x"),
                 lambda: users.reset_password(appliance, it_user, ADMIN, "x")):
        with pytest.raises(PermissionDenied):
            call()
    denied = [e for e in events(appliance, "access.denied")
              if e["actor"]["username"] == it_user.username]
    assert len(denied) == 4
