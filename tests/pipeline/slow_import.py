"""A ``[processor] kind = "python"`` module that takes seconds to import in a worker process
(a factory whose imports are heavy, on a loaded machine); in the test's own process it imports
at once."""

from __future__ import annotations

import sys
import time
from typing import Any

from actors.processors import ProcessorOutput

# Seconds a worker process spends importing this module: longer than the job's time limit.
IMPORT_SECONDS = 8.0

if sys.argv[:1] == ["-c"]:  # a worker process (`python -c ...`), not pytest
    time.sleep(IMPORT_SECONDS)


class Quick:
    async def process(self, job: Any, data: bytes, content_type: str | None) -> ProcessorOutput:
        return ProcessorOutput(result={"bytes": len(data)})

    async def aclose(self) -> None:
        pass


def make(settings: Any) -> Quick:
    return Quick()
