"""Errors the course raises, with messages in Spanish that say how to fix the problem.

Each one also subclasses the built-in exception a Python programmer would try first, so
``except FileNotFoundError`` or ``except ValueError`` keep working.
"""

from __future__ import annotations


class CourseError(Exception):
    """Base class of every error raised by ``course_utils``."""


class ModelNotFoundError(CourseError, FileNotFoundError):
    """The model file does not exist (or the bundled package is not installed)."""


class NotAModelFileError(CourseError, ValueError):
    """The path exists but is not a readable GGUF file (a directory, an empty or corrupt file)."""


class UnknownModelError(CourseError, ValueError):
    """A model name that is not in the course catalogue."""


class ModelLoadError(CourseError, RuntimeError):
    """llama.cpp could not load a file that looked like a GGUF (truncated, unsupported...)."""


class DownloadNotAllowedError(CourseError, RuntimeError):
    """A Hub model was requested but downloads are not allowed or there is no network."""


class ContextWindowError(CourseError, ValueError):
    """The prompt does not fit in the context window (``n_ctx``)."""
