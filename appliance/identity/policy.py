"""Password rules from configuration (11.300(b)): length, no username, no recent reuse."""

from __future__ import annotations

import re
import secrets
import unicodedata

from appliance.errors import InvalidInput
from appliance.identity.passwords import check_password, normalised
from appliance.settings import PasswordPolicy

# Control characters (NUL, a CR left by a file with Windows line ends, tab, escape): no
# console field can type them, so a password holding one locks its owner out there.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def check_new_password(password: str, username: str, policy: PasswordPolicy,
                       recent_hashes: list[str] = ()) -> None:
    """Refuse a new password the policy forbids; judged in its stored (NFKC) form."""
    password = normalised(password)
    found = _CONTROL.search(password)
    if found:
        raise InvalidInput(f"password contains a control character ({ascii(found.group())})",
                           "use letters, digits, spaces and punctuation; a file piped with "
                           "--password-stdin needs Unix line ends")
    if len(password) < policy.min_length:
        raise InvalidInput(f"password is shorter than {policy.min_length} characters",
                           "choose a longer password or passphrase")
    # Read as it shows: an invisible format character (a zero-width space) splits nothing.
    shown = "".join(c for c in password if unicodedata.category(c) != "Cf")
    if username and username.lower() in shown.lower():
        raise InvalidInput("password contains the username", "choose a password without it")
    for old in list(recent_hashes)[: policy.history]:
        if check_password(password, old):
            raise InvalidInput(f"password was one of the last {policy.history} used",
                               "choose a password not used recently")


def temporary_password(username: str, policy: PasswordPolicy) -> str:
    """A temporary password the policy accepts for this account: at least 16 characters and
    `min_length`, never holding the username (a fixed 16 were refused under a longer
    minimum, and now and then for a short username found inside them)."""
    while True:
        password = secrets.token_urlsafe(max(12, policy.min_length))
        try:
            check_new_password(password, username, policy)
        except InvalidInput:
            continue
        return password
