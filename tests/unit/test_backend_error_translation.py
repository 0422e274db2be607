"""Backend errors become router errors in one place: which class each one becomes, and what it keeps."""
from __future__ import annotations

import pytest

from cloud import errors as cloud_errors
from edge import errors as edge_errors
from router.domain import errors
from router.core.backends import translate_backend_error


@pytest.mark.parametrize("backend_error, router_error", [
    (edge_errors.PromptTooLongError(3000, 16, 2048), errors.InvalidRequestError),
    (edge_errors.PromptTemplateError("m", "Conversation roles must alternate"), errors.InvalidRequestError),
    (edge_errors.EdgeGenerationError("llama_decode returned -1"), errors.BackendUnavailableError),
    (cloud_errors.CloudTimeoutError("read timed out"), errors.BackendTimeoutError),
    (cloud_errors.CloudUnavailableError("HTTP 503", status=503), errors.BackendUnavailableError),
    (cloud_errors.CloudBadResponseError("garbage"), errors.BackendUnavailableError),
    (cloud_errors.CloudRejectedError("context_length_exceeded", status=400), errors.InvalidRequestError),
    (cloud_errors.CloudRejectedError("bad key", status=401), errors.BackendMisconfiguredError),
])
def test_each_backend_error_has_one_router_class(backend_error: Exception, router_error: type) -> None:
    translated = translate_backend_error(backend_error)
    assert type(translated) is router_error
    assert str(backend_error) in translated.message


def test_rate_limits_keep_their_retry_after() -> None:
    translated = translate_backend_error(cloud_errors.CloudRateLimitError("slow down", retry_after_s=2.5))
    assert isinstance(translated, errors.RateLimitedError) and translated.retry_after_s == 2.5


def test_other_exceptions_are_not_backend_errors() -> None:
    assert translate_backend_error(ValueError("a bug")) is None
