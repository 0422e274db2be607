"""The roles table: one in router/domain/access.py, and the README's copy of it stays equal; a principal's
groups are narrowed, never widened."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from router.core.auth import Credential, Guard, PrincipalsFile
from router.domain.access import ALL_GROUPS, ROLE_ACTIONS, Action, GroupNotHeldError, Principal, Role
from router.domain.errors import PermissionDeniedError, UnauthenticatedError

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_roles_table_is_the_code_table() -> None:
    block = README.read_text().split("<!-- roles-table -->")[1].split("<!-- /roles-table -->")[0]
    rows = [line for line in block.strip().splitlines()[2:]]
    table = {}
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        table[Action(cells[0])] = {Role.USER: cells[2] == "yes", Role.ADMIN: cells[3] == "yes",
                                   Role.SERVICE: cells[4] == "yes"}
    assert set(table) == set(Action), "every action has a row, and no row names an unknown action"
    for action, allowed in table.items():
        for role, yes in allowed.items():
            assert (action in ROLE_ACTIONS[role]) == yes, (action, role)


def test_a_request_narrows_its_principals_groups_and_never_widens_them() -> None:
    alice = Principal("alice", Role.USER, ("hr", "finance"))
    assert alice.narrow(()) == ("hr", "finance")
    assert alice.narrow(("hr",)) == ("hr",)
    with pytest.raises(GroupNotHeldError, match="eng"):
        alice.narrow(("hr", "eng"))
    with pytest.raises(GroupNotHeldError):
        alice.narrow((ALL_GROUPS,))
    owner = Principal("local-admin", Role.ADMIN, (ALL_GROUPS,))
    assert owner.narrow(("anything",)) == ("anything",)


def test_tokens_are_hashed_on_disk_and_a_revoked_token_stops_at_once(tmp_path: Path) -> None:
    principals = PrincipalsFile(tmp_path / "principals.toml")
    token = principals.issue("bob", Role.USER, ("eng",))
    assert token not in (tmp_path / "principals.toml").read_text()
    guard = Guard(principals)
    assert guard.authenticate(Credential(authorization=f"Bearer {token}")).name == "bob"
    with pytest.raises(PermissionDeniedError, match="ingest"):
        guard.authorize(Credential(authorization=f"Bearer {token}"), Action.INGEST)
    principals.revoke("bob")
    with pytest.raises(UnauthenticatedError, match="not known"):
        guard.authenticate(Credential(authorization=f"Bearer {token}"))
    with pytest.raises(UnauthenticatedError, match="Bearer"):
        guard.authenticate(Credential(authorization=token))  # no scheme
