"""Exceptions of the client: every failed call carries the API's own message, never a bare status."""

from __future__ import annotations

from typing import Any


class PrunescopeError(Exception):
    """The API answered with an error (``status`` is its HTTP status) or could not be reached (``status`` None).

    ``message`` is the server's ``detail`` text as it wrote it, so a notebook shows the same sentence
    the dashboard and the CLI show; ``errors`` holds the per-field list of a 422 validation error.
    """

    def __init__(self, status: int | None, message: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message if status is None else f"{status}: {message}")
        self.status = status
        self.message = message
        self.errors = errors or []


class JobFailed(PrunescopeError):
    """``wait()`` saw the job end as failed or cancelled; ``job`` is its final state, ``message`` its error."""

    def __init__(self, job: Any) -> None:
        reason = job.error or ("cancelled" if job.status == "cancelled" else "no error recorded")
        super().__init__(None, f"job {job.id} ({job.kind}) {job.status}: {reason}")
        self.job = job
