"""The documentation stays true to the checkout: links and file paths in README.md, docs/*.md and
the other READMEs resolve, every citation of a protocol.md section names one that exists, nothing points outside
the repository, protocol.md's byte-level examples decode cleanly, and every public name of
``udt`` has a docstring of its own.  Fast, no network."""

from __future__ import annotations

import enum
import inspect
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC_FILES = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
    ROOT / "bench" / "README.md",
    ROOT / "tests" / "data" / "udt4" / "README.md",
]
PROTOCOL = ROOT / "docs" / "protocol.md"
CITING_DIRS = ("src", "tests", "docs", "bench")

# Spelled in two pieces so that this file does not itself contain what it forbids.
OUTSIDE_REFERENCE = "../" + "shared"

FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.S | re.M)
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
CODE_SPAN = re.compile(r"`([^`\n]+)`")
HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$", re.M)
# A backticked span is taken for a repository path when it is one token with a "/" and ends in
# "/" (a directory) or in one of these suffixes; globs must match at least one file.
PATH_SPAN = re.compile(r"^[\w.\-*]+(?:/[\w.\-*]+)*/?$")
FILE_SUFFIXES = {
    ".py",
    ".pyx",
    ".pxd",
    ".pxi",
    ".md",
    ".toml",
    ".json",
    ".pcapng",
    ".txt",
    ".cfg",
    ".ini",
    ".sh",
    ".c",
    ".h",
}
# "protocol.md §5", "protocol.md §1-§4", "protocol.md §2 and §5", "protocol.md §5, §6".
CITATION = re.compile(r"protocol\.md\W{0,3}§\s*(\d+(?:\s*(?:-|–|,|and|or)\s*§?\s*\d+)*)")


def _prose(markdown: str) -> str:
    """Markdown without its fenced code blocks (commands and samples there are not links)."""
    return FENCE.sub("", markdown)


def github_anchors(markdown: str) -> set[str]:
    """Anchors GitHub gives the headings of a Markdown file (duplicates get -1, -2, ...)."""
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    for _, text in HEADING.findall(_prose(markdown)):
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link's text only
        slug = re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def _tracked_files() -> list[Path]:
    """Files git tracks, or (no git, e.g. an unpacked sdist) every file but build output."""
    git = shutil.which("git")
    if git and (ROOT / ".git").exists():
        out = subprocess.run([git, "-C", str(ROOT), "ls-files", "-z"], capture_output=True, check=True).stdout
        return [ROOT / name for name in out.decode().split("\0") if name]
    skip = {
        ".git",
        "build",
        "dist",
        "__pycache__",
        ".pytest_cache",
        ".hypothesis",
        ".mypy_cache",
        ".ruff_cache",
        ".eggs",
    }
    found = []
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in skip and not d.endswith(".egg-info")]
        found.extend(Path(folder, f) for f in files if f != ".git" and not f.endswith((".so", ".c", ".html")))
    return found


def _repo_path_exists(span: str) -> bool:
    """A path is written from the repository root (``tests/x.py``) or, for the package, from
    ``src/`` (``udt/_core.pxd``)."""
    for base in (ROOT, ROOT / "src"):
        if any(ch in span for ch in "*?["):
            if any(base.glob(span.rstrip("/"))):
                return True
        elif (base / span).exists():
            return True
    return False


def _looks_like_repo_path(span: str) -> bool:
    if "/" not in span or span.startswith("/") or not PATH_SPAN.match(span):
        return False
    return span.endswith("/") or Path(span).suffix in FILE_SUFFIXES


def _doc_id(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.mark.parametrize("doc", DOC_FILES, ids=_doc_id)
def test_relative_links_and_their_anchors_resolve(doc: Path) -> None:
    broken = []
    for target in LINK.findall(_prose(doc.read_text(encoding="utf-8"))):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        resolved = (doc.parent / path).resolve() if path else doc
        if not resolved.exists():
            broken.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md":
            if anchor not in github_anchors(resolved.read_text(encoding="utf-8")):
                broken.append(f"{target}: no heading with anchor #{anchor}")
    assert not broken, f"{_doc_id(doc)} has broken links: {broken}"


@pytest.mark.parametrize("doc", DOC_FILES, ids=_doc_id)
def test_backticked_repository_paths_exist(doc: Path) -> None:
    spans = CODE_SPAN.findall(_prose(doc.read_text(encoding="utf-8")))
    missing = sorted({s for s in spans if _looks_like_repo_path(s) and not _repo_path_exists(s)})
    assert not missing, f"{_doc_id(doc)} names paths that do not exist in the checkout: {missing}"


def protocol_sections() -> set[int]:
    text = PROTOCOL.read_text(encoding="utf-8")
    return {int(n) for n in re.findall(r"^## (\d+)\. ", text, re.M)}


def test_protocol_sections_are_numbered_one_to_thirteen() -> None:
    """Code cites sections by number: renumbering them would silently break every citation.
    New sections go at the end (§11: the udt handshake extension, §12: encryption, §13:
    path-MTU discovery)."""
    assert protocol_sections() == set(range(1, 14))


def _citations() -> Iterator[tuple[str, int, set[int]]]:
    for path in _tracked_files():
        rel = path.relative_to(ROOT)
        if rel.parts[0] not in CITING_DIRS and rel != Path("README.md"):
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        for match in CITATION.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            cited: set[int] = set()
            for part in re.split(r"\s*(?:,|and|or)\s*", match.group(1)):
                ends = [int(n) for n in re.findall(r"\d+", part)]
                cited.update(range(min(ends), max(ends) + 1))
            yield f"{rel}:{line}", line, cited


def test_every_protocol_citation_names_an_existing_section() -> None:
    sections = protocol_sections()
    citations = list(_citations())
    assert len(citations) > 20, "the citation pattern no longer finds the code's citations"
    wrong = [f"{where} cites §{sorted(cited - sections)}" for where, _, cited in citations if not cited <= sections]
    assert not wrong, f"citations of sections docs/protocol.md does not have: {wrong}"


def test_nothing_points_outside_the_repository() -> None:
    needle = OUTSIDE_REFERENCE.encode()
    offenders = []
    for path in _tracked_files():
        try:
            if needle in path.read_bytes():
                offenders.append(_doc_id(path))
        except OSError:
            continue
    assert not offenders, f"files that point at {OUTSIDE_REFERENCE}, which a clone lacks: {offenders}"


def _section(markdown: str, number: int) -> str:
    match = re.search(rf"^## {number}\. .*?(?=^## |\Z)", markdown, re.M | re.S)
    assert match, f"protocol.md has no section {number}"
    return match.group(0)


def test_protocol_byte_level_examples_decode_cleanly() -> None:
    """§10's hex is what the codec tests use: each example must be a valid datagram of the size
    its label gives."""
    from udt.tools.udtdump import decode

    block = re.search(r"^```\n(.*?)^```", _section(PROTOCOL.read_text(encoding="utf-8"), 10), re.M | re.S)
    assert block, "protocol.md §10 has no example block"
    examples = [line for line in block.group(1).splitlines() if line.strip()]
    assert len(examples) >= 10
    for line in examples:
        label, _, words = line.partition(":")
        size = int(re.search(r"(\d+)\s*B$", label.strip()).group(1))
        words, _, payload = words.partition("+")
        hex_words = words.replace("<dst>", "00000007").replace("<µs>", "00001234")
        datagram = bytes.fromhex(hex_words.replace("|", " ").replace(" ", ""))
        if payload:
            datagram += bytes(int(re.search(r"\d+", payload).group(0)))
        packet = decode(datagram)
        assert packet.ok, (label, packet.errors)
        assert packet.length == size, (label, packet.length)


def _own_doc(obj: object) -> str | None:
    """obj's docstring if it wrote one, not one it inherits (a class from object/int/Enum)."""
    if inspect.isclass(obj):
        doc = obj.__dict__.get("__doc__")
        inherited = {getattr(base, "__doc__", None) for base in obj.__mro__[1:]}
        if not doc or doc in inherited or doc == "An enumeration.":
            return None
        return doc
    return getattr(obj, "__doc__", None)


def test_every_public_name_has_a_docstring() -> None:
    import udt

    undocumented = []
    for name in udt.__all__:
        obj = getattr(udt, name)
        if isinstance(obj, enum.Enum):  # members: their enum class says it
            target, label = type(obj), f"{name} (enum {type(obj).__name__})"
        elif inspect.ismodule(obj) or inspect.isclass(obj) or callable(obj):
            target, label = obj, name
        else:  # plain constants: __version__, ...
            continue
        module = target.__name__ if inspect.ismodule(target) else getattr(target, "__module__", "")
        if not (module or "").startswith("udt"):  # re-exported from the standard library
            continue
        if not (_own_doc(target) or "").strip():
            undocumented.append(label)
    assert not undocumented, f"public names of udt without a docstring of their own: {undocumented}"
