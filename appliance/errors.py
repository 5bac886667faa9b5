"""One exception family: every expected failure carries a message and a hint for the user."""

from __future__ import annotations


class ApplianceError(Exception):
    """An expected failure the user can act on. The CLI prints `error: <message> (<hint>)`."""

    exit_code = 1
    hint = "see `appliance --help`"

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if hint is not None:
            self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class NotInitialised(ApplianceError):
    exit_code = 3
    hint = "run `appliance init` first, or pass --home"


class AlreadyInitialised(ApplianceError):
    exit_code = 3
    hint = "this home already holds an appliance; choose another --home"


class AuthenticationFailed(ApplianceError):
    exit_code = 4
    hint = "check the username and password; repeated failures lock the account"


class AccountLocked(AuthenticationFailed):
    hint = "wait, or ask a security officer to unlock the account"


class SessionExpired(AuthenticationFailed):
    hint = "log in again; nothing was changed"


class PasswordChangeRequired(ApplianceError):
    exit_code = 4
    hint = "change your password first: `appliance users passwd --user NAME`"


class SignatureRefused(ApplianceError):
    """An electronic signature could not be applied (re-authentication, statement, duties)."""

    exit_code = 5
    hint = "nothing was signed; correct the problem and sign again"


class PermissionDenied(ApplianceError):
    exit_code = 5
    hint = "ask a user with the required role; the denial was recorded"


class InvalidInput(ApplianceError):
    exit_code = 2
    hint = "correct the input and try again"


class AuditFailure(ApplianceError):
    """The audit trail could not record an action, so the action did not happen (fail closed)."""

    exit_code = 6
    hint = "check disk space and permissions of the appliance home; nothing was changed"


class IntegrityError(ApplianceError):
    """Stored data failed verification (tampering or corruption)."""

    exit_code = 7
    hint = "run `appliance audit verify` and report to the security officer"


class BundleRefused(ApplianceError):
    """A bundle or media failed a check; nothing from it was kept."""

    exit_code = 8
    hint = "the bundle was refused and nothing was imported; obtain a correctly signed bundle"


class HardwareRefused(ApplianceError):
    """No engine profile fits this host, or an engine does not match its declared profile."""

    exit_code = 9
    hint = "run `appliance hw fit` to see each profile's reason; nothing was changed"


class UpdateRefused(ApplianceError):
    """An update step out of order (11.10(f)) or a check that failed; the refusal is recorded."""

    exit_code = 10
    hint = "run `appliance update show BUNDLE` to see its state and what it needs"


class InstallFailed(ApplianceError):
    """An install or rollback that did not activate (a failed health check switched back)."""

    exit_code = 11
    hint = "what ran before runs again; see `appliance update show BUNDLE` for the checks"


class ProvisionFailed(ApplianceError):
    """A provisioning run ended without success; its record and artifacts are kept."""

    exit_code = 11
    hint = "see `appliance provision show RUN` for each host's result and the artifacts"


class RunConflict(InvalidInput):
    """A provisioning run that would change hosts another running run is changing."""

    hint = "wait for that run to finish, or cancel it: `appliance provision cancel RUN`"
