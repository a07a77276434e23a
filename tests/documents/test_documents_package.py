"""The documents package: its public surface, its imports, and the committed sample set."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from types import ModuleType

import actors.documents
from actors.documents.samples import SAMPLES, make_pdf, write_samples

PACKAGE = Path(actors.documents.__file__).parent
# Modules that could reach the network; the offline processor must never need them.
NETWORK_MODULES = {"socket", "ssl", "urllib", "http", "requests", "httpx", "aiohttp", "ftplib"}


def test_all_lists_exactly_the_public_names() -> None:
    public = {
        name
        for name, value in vars(actors.documents).items()
        if not name.startswith("_") and not isinstance(value, ModuleType) and name != "annotations"
    }
    assert set(actors.documents.__all__) == public
    assert actors.documents.__all__ == sorted(actors.documents.__all__)


def test_documents_imports_nothing_of_ours_but_errors_and_nothing_of_the_network() -> None:
    offenders = []
    for path in sorted(PACKAGE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                ours = name.startswith(("actors.", "supervisors")) or name == "actors"
                if ours and not name.startswith(("actors.documents", "actors.errors")):
                    offenders.append(f"{path.name}: {name}")
                if name.split(".")[0] in NETWORK_MODULES:
                    offenders.append(f"{path.name}: {name}")
    assert offenders == []


def test_the_committed_samples_are_what_the_generator_makes(
    tmp_path: Path, sample_dir: Path
) -> None:
    write_samples(tmp_path)
    generated = {path.name: path.read_bytes() for path in tmp_path.iterdir()}
    committed = {path.name: path.read_bytes() for path in sample_dir.iterdir()}
    assert generated == committed, "run: python -m actors.documents.samples"


def test_the_sample_set_is_small_and_has_every_kind() -> None:
    assert 6 <= len(SAMPLES) <= 10
    assert all(len(data) < 10_000 for data in SAMPLES.values())
    assert {name.rsplit(".", 1)[1] for name in SAMPLES} == {"pdf", "txt", "md", "html", "json"}


def test_each_xref_entry_of_a_generated_pdf_points_at_its_object() -> None:
    pdf = make_pdf([["One."], ["Two."]], title="Offsets")
    startxref = int(re.search(rb"startxref\n(\d+)", pdf).group(1))  # type: ignore[union-attr]
    assert pdf[startxref:].startswith(b"xref\n0 ")
    entries = re.findall(rb"(\d{10}) 00000 n \n", pdf[startxref:])
    assert entries
    for number, offset in enumerate(entries, 1):
        assert pdf[int(offset) :].startswith(b"%d 0 obj\n" % number)
