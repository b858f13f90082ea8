"""The README and quickstart a newcomer follows: links that resolve, the picture, the exit codes.

The README summarises docs/cli.md's exit-code table; a code added there and
not here (or the other way round) fails, as does a link to a file that moved.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", ROOT / "docs" / "quickstart.md"]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page: Path) -> None:
    targets = [t for t in LINK.findall(page.read_text()) if "://" not in t]
    for target in targets:
        assert (page.parent / target).exists(), f"{page.name} links to a missing {target}"


def test_the_flow_picture_is_a_self_contained_svg() -> None:
    svg = ROOT / "docs" / "img" / "flow.svg"
    assert "](docs/img/flow.svg)" in (ROOT / "README.md").read_text()
    tree = ET.parse(svg)
    ns = "{http://www.w3.org/2000/svg}"
    assert tree.getroot().tag == f"{ns}svg"
    assert tree.getroot().find(f"{ns}title") is not None  # read aloud by screen readers
    text = svg.read_text()
    # no external renderer, font or image: nothing is fetched to draw it
    assert "xlink:href" not in text and "<image" not in text and "@import" not in text


def test_the_quickstart_commands_exist() -> None:
    readme = (ROOT / "README.md").read_text()
    makefile = (ROOT / "Makefile").read_text()
    for target in ("run", "test", "demo"):
        assert f"make {target}" in readme
        assert re.search(rf"^{target}:", makefile, re.M), target


def _codes(table_text: str) -> set[int]:
    codes: set[int] = set()
    for cell in re.findall(r"^\| ([0-9][0-9, -]*) \|", table_text, re.M):
        for part in cell.split(","):
            low, _, high = part.strip().partition("-")
            codes.update(range(int(low), int(high or low) + 1))
    return codes


def test_the_readme_exit_codes_match_docs_cli() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    cli = (ROOT / "docs" / "cli.md").read_text()
    table = cli.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    documented = _codes(table)
    assert {0, 1, 31, 130} <= documented
    summarised = _codes(section)
    # the README groups 10-18 and 21-25; every code it names is documented, and the
    # other way round
    assert summarised == documented, summarised ^ documented
