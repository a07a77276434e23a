"""Every exception that ``actors`` raises on purpose.

Hierarchy::

    ActorsError                      base of everything raised on purpose
    ├── ConfigError                  a config file or environment variable is wrong
    └── DocumentError                a document cannot be processed (a permanent job failure)
        ├── UnsupportedDocument      the bytes are not a kind we can read (binary, unknown format)
        ├── CorruptDocument          the bytes claim a kind but are damaged or truncated
        ├── EncryptedDocument        a PDF is encrypted and no password is available
        └── EmptyDocument            the document holds no text at all

Each message says what happened, the likely cause and what to do about it.
"""

from __future__ import annotations

__all__ = [
    "ActorsError",
    "ConfigError",
    "CorruptDocument",
    "DocumentError",
    "EmptyDocument",
    "EncryptedDocument",
    "UnsupportedDocument",
]


class ActorsError(Exception):
    """Base class of every error ``actors`` raises on purpose."""


class ConfigError(ActorsError):
    """A config file, a key in it or an environment variable is wrong; the message names which."""


class DocumentError(ActorsError):
    """A document cannot be processed; retrying will not help, so the job fails permanently."""


class UnsupportedDocument(DocumentError):
    """The bytes are not a kind the offline processor reads (binary data, unknown format)."""


class CorruptDocument(DocumentError):
    """The bytes claim a kind (a PDF header, JSON) but are damaged, truncated or invalid."""


class EncryptedDocument(DocumentError):
    """A PDF is encrypted; the offline processor has no password to open it."""


class EmptyDocument(DocumentError):
    """The document is empty or holds no extractable text (a scanned PDF, whitespace only)."""
