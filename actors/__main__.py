"""``python -m actors``: the command line lives in ``actors.cli``."""

from __future__ import annotations

from actors.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
