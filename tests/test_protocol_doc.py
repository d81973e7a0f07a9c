"""Every generated executor ships its protocol document, and every reference to it resolves.

The generated code, tests and README cite ``docs/protocol.md`` by anchor
(``docs/protocol.md#monitor-file``). Each bake is scanned for those references and for the
numbered-section form of documents the project does not ship (``contract §3.1``,
``design §7``): every anchor must exist in that bake's own docs/protocol.md, and no numbered
reference may be left. The document's own links (its table of contents, the README) must
resolve too.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import OBJECT_TYPES, TARGET_FRAMEWORKS, TARGETS, bake, project_files, task_answers

DOC = "docs/protocol.md"
# A reference from anywhere in the project: docs/protocol.md#<anchor> (also as a Markdown link).
REFERENCE = re.compile(r"docs/protocol\.md#([A-Za-z0-9_-]*)")
# What the references looked like before the document shipped: section numbers of documents
# that are not in the generated project.
NUMBERED_REFERENCE = re.compile(r"§\s*\d|\b(?:ymir-contract|design)\.md\b")
EXPLICIT_ANCHOR = re.compile(r"<a id=\"([^\"]+)\"></a>")
HEADING = re.compile(r"^#{1,6} (.+)$", re.MULTILINE)
MARKDOWN_LINK = re.compile(r"\]\(([^)\s]*)\)")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)

BAKES = [
    pytest.param(target, framework, "tmi", id=f"{target}-{framework}")
    for target in TARGETS
    for framework in TARGET_FRAMEWORKS[target]
]
# The document and the references must not depend on the tasks chosen.
BAKES += [
    pytest.param("detection", "none", "t", id="detection-none-t"),
    pytest.param("instance-segmentation", "mmdetection", "i", id="instance-mmdetection-i"),
]


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading (inline HTML and punctuation dropped)."""
    text = re.sub(r"<[^>]+>", "", heading).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    """Every fragment a link into this Markdown text can name."""
    prose = FENCE.sub("", markdown)
    found = set(EXPLICIT_ANCHOR.findall(prose))
    found |= {github_slug(heading) for heading in HEADING.findall(prose)}
    return found


def references(project: Path) -> dict[str, list[str]]:
    """``{anchor: ["<file>:<line>", ...]}`` of every docs/protocol.md reference in the bake."""
    found: dict[str, list[str]] = {}
    for name in sorted(project_files(project)):
        text = (project / name).read_text(encoding="utf-8")
        for number, line in enumerate(text.splitlines(), start=1):
            for anchor in REFERENCE.findall(line):
                found.setdefault(anchor, []).append(f"{name}:{number}")
    return found


def numbered_references(project: Path) -> list[str]:
    hits = []
    for name in sorted(project_files(project)):
        text = (project / name).read_text(encoding="utf-8")
        for number, line in enumerate(text.splitlines(), start=1):
            if NUMBERED_REFERENCE.search(line):
                hits.append(f"{name}:{number}: {line.strip()}")
    return hits


def link_resolves(project: Path, doc: Path, target: str) -> bool:
    """A link of ``doc``: to one of its own anchors, or to a file (and anchor) of the bake."""
    path, _, fragment = target.partition("#")
    if not path:
        return fragment in anchors(doc.read_text(encoding="utf-8"))
    linked = (doc.parent / path).resolve()
    if not linked.is_file() or project.resolve() not in linked.parents:
        return False
    return not fragment or fragment in anchors(linked.read_text(encoding="utf-8"))


def broken_links(project: Path, doc: Path) -> list[str]:
    """The document's links that lead nowhere (web addresses are not followed)."""
    prose = FENCE.sub("", doc.read_text(encoding="utf-8"))
    return [
        target
        for target in MARKDOWN_LINK.findall(prose)
        if not target.startswith(("http://", "https://"))
        and not link_resolves(project, doc, target)
    ]


@pytest.mark.parametrize(("target", "framework", "letters"), BAKES)
def test_every_protocol_reference_resolves(cookies, target, framework, letters):
    project = bake(
        cookies,
        executor_name="Protocol Exec",
        target=target,
        framework=framework,
        **task_answers(letters),
    )
    doc = project / DOC
    assert doc.is_file(), f"{DOC} is missing from the bake"
    text = doc.read_text(encoding="utf-8")

    explicit = EXPLICIT_ANCHOR.findall(text)
    duplicates = sorted({anchor for anchor in explicit if explicit.count(anchor) > 1})
    assert not duplicates, f"anchors defined twice in {DOC}: {duplicates}"

    cited = references(project)
    # The scan must see the citations at all: the README links the document, and the contract
    # layer's modules cite its sections.
    citing_files = {place.rsplit(":", 1)[0] for places in cited.values() for place in places}
    assert "README.md" in citing_files
    assert any(name.startswith("src/protocol_exec/contract/") for name in citing_files)

    known = anchors(text)
    dangling = {
        anchor or "(empty anchor)": places
        for anchor, places in cited.items()
        if anchor not in known
    }
    assert not dangling, f"references to sections {DOC} does not have: {dangling}"
    assert not numbered_references(project), (
        "numbered references to documents the project does not ship (cite "
        f"{DOC}#<anchor> instead): {numbered_references(project)}"
    )
    assert not broken_links(project, doc), f"broken links in {DOC}: {broken_links(project, doc)}"


@pytest.mark.parametrize("target", TARGETS)
def test_protocol_doc_describes_the_bakes_target(cookies, target):
    project = bake(cookies, target=target)
    text = (project / DOC).read_text(encoding="utf-8")
    words = target.replace("-", " ")
    assert f"This executor does {words} (`object_type: {OBJECT_TYPES[target]}`" in text
    # The inference result form it points the reader to is its target's.
    written = re.search(r"This executor writes the\s+\[[^\]]+\]\(#([\w-]+)\)", text)
    assert written, "the document does not say which inference result this executor writes"
    form = "infer-result-detection" if target == "detection" else "infer-result-segmentation"
    assert written.group(1) == form
