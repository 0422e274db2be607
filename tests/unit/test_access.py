"""The roles table: one in router/domain/access.py, and the copy in docs/security.md stays equal; a principal's
groups are narrowed, never widened."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from router.core.auth import Credential, Guard, PrincipalsFile
from router.domain.access import ALL_GROUPS, ROLE_ACTIONS, Action, GroupNotHeldError, Principal, Role
from router.domain.errors import PermissionDeniedError, UnauthenticatedError

SECURITY_DOC = Path(__file__).resolve().parents[2] / "docs" / "security.md"


def test_the_security_docs_roles_table_is_the_code_table() -> None:
    block = SECURITY_DOC.read_text().split("<!-- roles-table -->")[1].split("<!-- /roles-table -->")[0]
    rows = [line for line in block.strip().splitlines()[2:]]
    header = [cell.strip() for cell in block.strip().splitlines()[0].strip("|").split("|")]
    assert [Role(name) for name in header[2:]] == list(Role), "one column per role, in the code's order"
    table = {}
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        table[Action(cells[0])] = {role: cells[2 + index] == "yes" for index, role in enumerate(Role)}
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


def test_the_local_admin_is_made_on_first_start_only_so_a_revocation_holds(tmp_path: Path) -> None:
    from router.core.auth.principals import LOCAL_ADMIN, ensure_local_admin

    principals = PrincipalsFile(tmp_path / "principals.toml")
    assert ensure_local_admin(principals, tmp_path / "admin.token")
    assert not ensure_local_admin(principals, tmp_path / "admin.token")  # the second start keeps both
    assert principals.revoke(LOCAL_ADMIN)
    assert not ensure_local_admin(principals, tmp_path / "admin.token")
    assert LOCAL_ADMIN not in [entry.principal.name for entry in principals.entries()]


def test_a_principals_file_others_may_write_or_with_a_shared_hash_is_refused(tmp_path: Path) -> None:
    from router.core.auth import PrincipalsFileError

    path = tmp_path / "principals.toml"
    principals = PrincipalsFile(path)
    principals.issue("alice", Role.USER, ())
    path.chmod(0o666)
    with pytest.raises(PrincipalsFileError, match="writable by others"):
        PrincipalsFile(path).entries()
    digest = "a" * 64
    path.write_text(f'[[principal]]\nname = "a"\ntoken_sha256 = ["{digest}"]\n'
                    f'[[principal]]\nname = "b"\ntoken_sha256 = ["{digest}"]\n')
    path.chmod(0o600)
    with pytest.raises(PrincipalsFileError, match="two entries"):
        PrincipalsFile(path).entries()
    path.write_text('[[principal]]\nname = "a"\ntoken_sha256 = ["' + "é" * 64 + '"]\n')
    with pytest.raises(PrincipalsFileError, match="SHA-256"):
        PrincipalsFile(path).entries()
