"""Processors: turn a fetched object into a job's result (offline, in worker processes, or with
Gemini)."""

from actors.processors._local import (
    IsolatedProcessor,
    LocalProcessor,
    Processor,
    ProcessorOutput,
    make_processor,
)

__all__ = ["IsolatedProcessor", "LocalProcessor", "Processor", "ProcessorOutput", "make_processor"]
