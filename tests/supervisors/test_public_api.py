"""The public surface of ``supervisors`` is its explicit ``__all__``."""

from __future__ import annotations

import supervisors


def test_the_public_surface_is_exactly_all_and_every_name_exists() -> None:
    public = {name for name in dir(supervisors) if not name.startswith("_")}
    # Submodules, and the __future__ import, are attributes too.
    modules = {"annotations", "actor", "clock", "context", "dynamic", "errors", "events", "log"}
    modules.add("spec")
    modules.add("supervisor")
    assert sorted(supervisors.__all__) == supervisors.__all__
    assert public - modules == set(supervisors.__all__)
