"""Who may do what: principals, roles, the actions they may take, and the groups they read.

A door turns a credential (a bearer token, a client certificate) into a `Principal` through the guard
that the assembly builds (router/core/auth/); this module holds only the words and the one table of
what each role may call, which the README's roles table mirrors.

Groups come from the principal, never from the request: a request may name a subset of its
principal's groups (to read less), never one it does not hold.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from types import MappingProxyType
from typing import Iterable, Mapping

# A principal whose groups hold this reads every group's documents (the device owner's local admin,
# and `auth = "none"` on loopback, where the request's groups are taken as sent).
ALL_GROUPS = "*"


class Role(enum.StrEnum):
    USER = "user"        # generates, retrieves its groups' passages, labels its own requests
    ADMIN = "admin"      # also ingests, deletes, reloads and reads Stats
    SERVICE = "service"  # a daemon calling an Info service on behalf of its own principals
    MONITOR = "monitor"  # a monitoring system: scrapes /metrics, nothing else


class Action(enum.StrEnum):
    """One thing a caller may ask for; each RPC and each HTTP endpoint names the one it needs."""

    GENERATE = "generate"        # Router.Generate, Router.GenerateStream, POST /v1/chat/completions
    FEEDBACK = "feedback"        # Router.Feedback, on the caller's own requests (an admin's: on any)
    INFO = "info"                # Router.Info, GET /v1/models: versions and models, no credentials, no paths
    STATS = "stats"              # Router.Stats: every principal's traffic and spend
    RELOAD = "reload"            # Router.Reload, Router.UseAdapter: load a model or an adapter from the daemon's disk
    RETRIEVE = "retrieve"        # Info.Retrieve, within the caller's groups
    INDEX_STATS = "index_stats"  # Info.Stats: counts, and only the group names the caller holds
    INGEST = "ingest"            # Info.Ingest: writes documents, replaces them by id
    DELETE = "delete"            # Info.Delete
    ACT_FOR_CALLER = "act_for_caller"  # Info.Retrieve with the caller's groups as sent: a daemon's own identity
    METRICS = "metrics"          # GET /metrics: counts, costs and states, no per-principal data


_USER = frozenset({Action.GENERATE, Action.FEEDBACK, Action.INFO, Action.RETRIEVE, Action.INDEX_STATS})
_ADMIN = _USER | {Action.STATS, Action.RELOAD, Action.INGEST, Action.DELETE, Action.METRICS}
_SERVICE = frozenset({Action.RETRIEVE, Action.ACT_FOR_CALLER, Action.INDEX_STATS})
# A scrape credential sits in a monitoring system's config: it may read the metrics and nothing else.
_MONITOR = frozenset({Action.METRICS})

ROLE_ACTIONS: Mapping[Role, frozenset[Action]] = MappingProxyType({
    Role.USER: _USER, Role.ADMIN: _ADMIN, Role.SERVICE: _SERVICE, Role.MONITOR: _MONITOR})


@dataclass(frozen=True)
class Principal:
    """An authenticated caller. `name` is what the ledger records as the request's principal."""

    name: str
    role: Role
    groups: tuple[str, ...] = ()

    def may(self, action: Action) -> bool:
        return action in ROLE_ACTIONS[self.role]

    @property
    def reads_all_groups(self) -> bool:
        return ALL_GROUPS in self.groups

    def holds(self, group: str) -> bool:
        return self.reads_all_groups or group in self.groups

    def visible_groups(self, groups: Iterable[str]) -> tuple[str, ...]:
        """Of `groups` (an index's, say), those this principal may see named."""
        return tuple(group for group in groups if self.holds(group))

    def narrow(self, requested: Iterable[str]) -> tuple[str, ...]:
        """The groups a request reads with. None named: every group the principal holds. Named: those
        of them it holds; raises GroupNotHeldError for any it does not hold."""
        requested = tuple(requested)
        if not requested:
            return tuple(group for group in self.groups if group != ALL_GROUPS) if not self.reads_all_groups \
                else (ALL_GROUPS,)
        missing = [group for group in requested if not self.holds(group)]
        if missing:
            raise GroupNotHeldError(self.name, tuple(missing))
        return requested


class GroupNotHeldError(Exception):
    """A request named groups its principal does not hold (the door answers PERMISSION_DENIED)."""

    def __init__(self, principal: str, groups: tuple[str, ...]) -> None:
        super().__init__(f"principal {principal!r} does not hold the group(s) {', '.join(groups)}; a request may "
                         "only narrow its principal's groups (omit caller.groups to read with all of them)")
        self.principal = principal
        self.groups = groups
