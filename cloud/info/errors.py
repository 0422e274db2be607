"""The Info index's own exception tree.

Every error the library raises on purpose is an `InfoIndexError`, so the gRPC service can map the
whole family at one boundary: the two `ValueError` subclasses are the caller's fault (INVALID_ARGUMENT),
`IndexCorruptError` is the operator's (the directory must be deleted and re-ingested). Messages say
what to fix, and name the document, the file or the line concerned.
"""
from __future__ import annotations


class InfoIndexError(Exception):
    """Base of every error the Info index raises."""


class InvalidDocumentError(InfoIndexError, ValueError):
    """A document that cannot be ingested (empty or over-long id, empty text, metadata or groups that
    are not strings), or a source file line that is not a document. Nothing of its batch was ingested."""


class InvalidQueryError(InfoIndexError, ValueError):
    """A retrieval request out of bounds: an empty or over-long query, or k outside 1..100."""


class IndexCorruptError(InfoIndexError):
    """A persisted index that cannot be read, or was built with other settings or another embedder
    dimension than it is opened with."""


class IndexUnavailableError(InfoIndexError):
    """The database behind an index cannot be reached or refused a statement (server down, wrong
    credentials, missing privileges or extension). The message names the server without its password."""
