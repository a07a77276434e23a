"""Every exception that ``actors`` raises on purpose.

Hierarchy::

    ActorsError                      base of everything raised on purpose
    └── ConfigError                  a config file or environment variable is wrong

Each message says what happened, the likely cause and what to do about it.
"""

from __future__ import annotations

__all__ = ["ActorsError", "ConfigError"]


class ActorsError(Exception):
    """Base class of every error ``actors`` raises on purpose."""


class ConfigError(ActorsError):
    """A config file, a key in it or an environment variable is wrong; the message names which."""
