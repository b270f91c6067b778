"""Everything the README and the docs point to lives in the repository: a person who clones it
follows every link (issue 9, item 13)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCS = sorted([REPO / "README.md", REPO / "bus" / "PROTOCOL.md", *(REPO / "docs").glob("*.md")])

_LINK = re.compile(r"\]\(([^)\s]+)\)")  # [text](target)
_PARENT = re.compile(r"(?<![\w/])\.\./[\w./-]+")  # ../shared/spec/compat.md, anywhere in the text


def _problems(doc: Path, repo: Path = REPO) -> list[str]:
    def _inside(path: Path) -> bool:
        return path.resolve().is_relative_to(repo)

    text = doc.read_text()
    out = []
    for target in _LINK.findall(text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue  # a URL or an anchor in the same page
        path = (doc.parent / target.split("#")[0]).resolve()
        if not _inside(path) or not path.exists():
            out.append(f"link ({target}) resolves to {path}, not a file of the repository")
    for mention in _PARENT.findall(text):
        if not _inside(doc.parent / mention):
            out.append(f"{mention} leaves the repository")
    return out


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: str(d.relative_to(REPO)))
def test_no_link_leaves_the_repository(doc: Path) -> None:
    assert _problems(doc) == []


def test_the_checker_sees_links_out(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "there.md").write_text("x")
    doc = tmp_path / "README.md"
    doc.write_text(
        "[ok](docs/there.md), `docs/there.md`, [web](https://example.org), [top](#top)\n"
        "see `../shared/spec/compat.md`, [out](../../elsewhere.md), [gone](docs/nope.md)\n"
    )
    problems = _problems(doc, tmp_path)
    assert sum("../shared/spec/compat.md" in p for p in problems) == 1, problems  # as text
    assert sum("elsewhere.md" in p for p in problems) == 2, problems  # as a link and as text
    assert sum("docs/nope.md" in p for p in problems) == 1, problems
    assert len(problems) == 4, problems
