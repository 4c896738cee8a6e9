"""Errors the suite raises for bad input. Each message names the file, the field and the problem."""

from __future__ import annotations


class ChallengeError(Exception):
    """Base class: bad input or a refused operation, with a one-line message."""

    def __init__(self, problem: str, *, file: str | None = None, field: str | None = None):
        self.file, self.field, self.problem = file, field, problem
        where = ", ".join(
            p for p in (f"file {file}" if file else "", f"field {field}" if field else "") if p
        )
        super().__init__(f"{where}: {problem}" if where else problem)


class TrackIntegrityError(ChallengeError):
    """A track file is missing, corrupted (checksum mismatch) or of another track version."""


class SubmissionError(ChallengeError):
    """A submission failed validation; nothing is scored or recorded."""


class ConfigError(ChallengeError):
    """A config value is out of range or inconsistent."""
