"""The principals file: who may call, as the server knows them. Tokens are stored as SHA-256 hashes,
never in clear; the token itself is shown once, when it is issued.

    [[principal]]
    name = "alice"
    role = "user"                 # user | admin | service
    groups = ["hr"]               # "*": every group
    token_sha256 = ["9f86d08..."] # one or more (a second one lets a token be rotated without a gap)
    cert_cn = "alice.example"     # optional: a client certificate with this common name (mTLS)

Tokens are 256 random bits, so one SHA-256 (no salt, no stretching) is enough: a hash cannot be
reversed, and there is no dictionary of such tokens to try.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import stat
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

from router.domain.access import ALL_GROUPS, Principal, Role

TOKEN_PREFIX = "hr_"
_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")
MAX_NAME_CHARS = 128
LOCAL_ADMIN = "local-admin"


class PrincipalsFileError(Exception):
    """The principals file cannot be used; the message names the file and the entry."""


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class PrincipalEntry:
    principal: Principal
    token_sha256: tuple[str, ...] = ()
    cert_cn: Optional[str] = None


def _entry(raw: object, where: str) -> PrincipalEntry:
    if not isinstance(raw, dict):
        raise PrincipalsFileError(f"{where}: each [[principal]] must be a table")
    unknown = set(raw) - {"name", "role", "groups", "token_sha256", "cert_cn"}
    if unknown:
        raise PrincipalsFileError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    name = raw.get("name")
    if not isinstance(name, str) or not name or len(name) > MAX_NAME_CHARS:
        raise PrincipalsFileError(f"{where}: name must be a non-empty string of at most {MAX_NAME_CHARS} characters")
    try:
        role = Role(raw.get("role", "user"))
    except ValueError:
        raise PrincipalsFileError(f"{where} ({name}): role must be one of {', '.join(r.value for r in Role)}") from None
    groups = raw.get("groups", [])
    hashes = raw.get("token_sha256", [])
    if isinstance(hashes, str):
        hashes = [hashes]
    if not isinstance(groups, list) or not all(isinstance(g, str) and g for g in groups):
        raise PrincipalsFileError(f"{where} ({name}): groups must be a list of non-empty strings")
    if not isinstance(hashes, list) or not all(isinstance(h, str) and _SHA256_HEX.fullmatch(h) for h in hashes):
        raise PrincipalsFileError(f"{where} ({name}): token_sha256 must be a list of SHA-256 hex digests")
    cert_cn = raw.get("cert_cn")
    if cert_cn is not None and (not isinstance(cert_cn, str) or not cert_cn):
        raise PrincipalsFileError(f"{where} ({name}): cert_cn must be a non-empty string")
    if not hashes and cert_cn is None:
        raise PrincipalsFileError(f"{where} ({name}): give token_sha256 or cert_cn, or the principal cannot sign in")
    return PrincipalEntry(Principal(name, role, tuple(groups)), tuple(h.lower() for h in hashes), cert_cn)


def _toml_string(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def _render(entries: Iterable[PrincipalEntry]) -> str:
    lines = ["# hybrid-router principals (README \"Security\"). Tokens are stored as SHA-256 hashes only.",
             "# Add one with `hybrid-router token issue --name NAME --role user --groups g1,g2`.", ""]
    for entry in entries:
        p = entry.principal
        lines += ["[[principal]]", f"name = {_toml_string(p.name)}", f"role = {_toml_string(p.role.value)}",
                  f"groups = [{', '.join(_toml_string(g) for g in p.groups)}]",
                  f"token_sha256 = [{', '.join(_toml_string(h) for h in entry.token_sha256)}]"]
        if entry.cert_cn is not None:
            lines.append(f"cert_cn = {_toml_string(entry.cert_cn)}")
        lines.append("")
    return "\n".join(lines)


def write_private(path: Path, text: str) -> None:
    """Writes `text` to `path` readable by its owner only (0600, its directory 0700 when created here),
    replacing the file atomically so that a reader never sees half of it."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


class PrincipalsFile:
    """The file at `path`, re-read whenever it changes on disk, so that issuing or revoking a token
    needs no restart."""

    def __init__(self, path: Path) -> None:
        self.path = path.expanduser()
        self._seen: Optional[tuple[int, int, int]] = None
        self._entries: tuple[PrincipalEntry, ...] = ()

    def entries(self) -> tuple[PrincipalEntry, ...]:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self._seen, self._entries = None, ()
            return ()
        signature = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        if signature != self._seen:
            self._entries = self._read()
            self._seen = signature
        return self._entries

    def _read(self) -> tuple[PrincipalEntry, ...]:
        # Whoever may write this file may make themselves an admin (sshd's StrictModes, for the same reason).
        mode = self.path.stat().st_mode
        if mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise PrincipalsFileError(f"principals file {self.path} is writable by others (mode "
                                      f"{stat.S_IMODE(mode):o}); make it 0600: chmod 600 {self.path}")
        try:
            data = tomllib.loads(self.path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise PrincipalsFileError(f"principals file {self.path} is not valid TOML: {exc}") from None
        raw = data.get("principal", [])
        if not isinstance(raw, list):
            raise PrincipalsFileError(f"principals file {self.path}: use [[principal]] tables")
        entries = tuple(_entry(item, f"principals file {self.path}, principal {i + 1}") for i, item in enumerate(raw))
        names = [e.principal.name for e in entries]
        if len(set(names)) != len(names):
            raise PrincipalsFileError(f"principals file {self.path}: a name appears twice")
        hashes = [h for e in entries for h in e.token_sha256]
        if len(set(hashes)) != len(hashes):
            raise PrincipalsFileError(f"principals file {self.path}: one token hash belongs to two entries")
        return entries

    def issue(self, name: str, role: Role, groups: tuple[str, ...], *, cert_cn: Optional[str] = None) -> str:
        """Adds a principal with a new token, or a new token to the existing one of that name (its role
        and groups replaced). Returns the token: the only time it exists in clear."""
        token = new_token()
        entries = list(self.entries())
        kept: tuple[str, ...] = ()
        for index, entry in enumerate(entries):
            if entry.principal.name == name:
                kept = entry.token_sha256
                del entries[index]
                break
        entry = PrincipalEntry(Principal(name, role, groups), kept + (hash_token(token),), cert_cn)
        _entry({"name": name, "role": role.value, "groups": list(groups), "token_sha256": list(entry.token_sha256),
                **({"cert_cn": cert_cn} if cert_cn else {})}, f"principal {name!r}")  # validates
        write_private(self.path, _render([*entries, entry]))
        return token

    def revoke(self, name: str) -> bool:
        entries = list(self.entries())
        kept = [entry for entry in entries if entry.principal.name != name]
        if len(kept) == len(entries):
            return False
        write_private(self.path, _render(kept))
        return True


def ensure_local_admin(principals: PrincipalsFile, token_file: Path) -> bool:
    """On first start, when there is no principals file yet: a local admin (every group) whose token is
    written 0600 to `token_file`, for the CLI and the SDK on this machine. Returns True when it created
    them. Once the file exists it is the operator's: a revoked local admin stays revoked."""
    if principals.path.exists():
        return False
    token = principals.issue(LOCAL_ADMIN, Role.ADMIN, (ALL_GROUPS,))
    write_private(token_file.expanduser(), token + "\n")
    return True
