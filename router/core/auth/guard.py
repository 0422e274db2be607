"""Credentials to principals, and what each principal may do. A door hands the guard what its transport
carried; the guard answers with a Principal or a typed error, and no door decides this on its own."""
from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Optional

from router.core.auth.principals import PrincipalsFile, hash_token
from router.domain.access import ALL_GROUPS, Action, GroupNotHeldError, Principal, Role
from router.domain.errors import PermissionDeniedError, UnauthenticatedError
from router.domain.types import Caller

BEARER = "bearer "
# auth.mode = "none" (loopback only): every caller is this admin, and reads the groups its request names.
ANONYMOUS_LOCAL = Principal("local", Role.ADMIN, (ALL_GROUPS,))


@dataclass(frozen=True)
class Credential:
    """What one call carried: the `authorization` header's value, and the verified client certificate's
    common name under mTLS."""

    authorization: Optional[str] = None
    cert_cn: Optional[str] = None


class Guard:
    """`principals`: the file of known principals (None: auth.mode = "none"). `extra`: principals known
    only to this process, by token (the daemon's own identity towards its in-process Info service)."""

    def __init__(self, principals: Optional[PrincipalsFile], extra: Optional[dict[str, Principal]] = None) -> None:
        self._principals = principals
        self._extra = {hash_token(token): principal for token, principal in (extra or {}).items()}

    @property
    def enabled(self) -> bool:
        return self._principals is not None

    def authenticate(self, credential: Credential) -> Principal:
        if self._principals is None:
            return ANONYMOUS_LOCAL
        token = _bearer_token(credential.authorization)
        if token is not None:
            presented = hash_token(token)
            found: Optional[Principal] = None
            # Compare against every hash, in constant time each, so that the time taken says nothing
            # about which (or whether a) stored hash shares a prefix with the one presented.
            for stored, principal in self._extra.items():
                if hmac.compare_digest(stored, presented):
                    found = principal
            for entry in self._principals.entries():
                for stored in entry.token_sha256:
                    if hmac.compare_digest(stored, presented):
                        found = entry.principal
            if found is None:
                raise UnauthenticatedError("the token is not known to this server (revoked, mistyped, or issued by "
                                           "another one); issue one with `hybrid-router token issue`")
            return found
        if credential.cert_cn is not None:
            for entry in self._principals.entries():
                if entry.cert_cn is not None and hmac.compare_digest(entry.cert_cn.encode(), credential.cert_cn.encode()):
                    return entry.principal
            raise UnauthenticatedError("the client certificate is trusted, but no principal has its common name "
                                       "as cert_cn; add one to the principals file")
        raise UnauthenticatedError("no credential: send `authorization: Bearer <token>` (the SDK's token=, the "
                                   "CLI's --token-file; on the daemon's own machine its local admin token is read "
                                   "from auth.local_token_file)")

    def groups_for(self, principal: Principal, requested: tuple[str, ...]) -> tuple[str, ...]:
        """The groups a call reads with. As the request sent them under auth.mode = "none" (as before
        authentication existed); for a daemon acting for its own authenticated caller (role service), the
        caller's as sent, cut to the groups this host granted the daemon; otherwise the principal's,
        narrowed to those the request names (GroupNotHeldError for one it does not hold)."""
        if self._principals is None:
            return requested
        if principal.may(Action.ACT_FOR_CALLER):
            # A daemon speaks for callers it authenticated itself, within the groups this host granted it.
            if principal.reads_all_groups:
                return requested
            if ALL_GROUPS in requested:
                return principal.groups
            return tuple(group for group in requested if principal.holds(group))
        return principal.narrow(requested)

    def caller_for(self, principal: Principal, sent: Caller) -> Caller:
        """Who a request is made as, whatever door it came through: as sent under auth.mode = "none";
        otherwise the principal's name, and the groups groups_for gives (PermissionDeniedError for a group
        the principal does not hold)."""
        if self._principals is None:
            return sent
        try:
            groups = self.groups_for(principal, tuple(sent.groups))
        except GroupNotHeldError as exc:
            raise PermissionDeniedError(str(exc)) from None
        return Caller(user=principal.name, groups=groups)

    def authorize(self, credential: Credential, action: Action) -> Principal:
        principal = self.authenticate(credential)
        if not principal.may(action):
            raise PermissionDeniedError(f"principal {principal.name!r} (role {principal.role.value}) may not "
                                        f"{action.value}; ask an admin")
        return principal


def _bearer_token(authorization: Optional[str]) -> Optional[str]:
    if authorization is None:
        return None
    if not authorization[:len(BEARER)].lower() == BEARER or not authorization[len(BEARER):].strip():
        raise UnauthenticatedError("the authorization header must be `Bearer <token>`")
    return authorization[len(BEARER):].strip()
