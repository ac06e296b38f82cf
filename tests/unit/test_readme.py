"""The README stands alone: everything it points at is in this repository, and every command it shows names a target,
module or sub-command that exists here. Text checks only (no command is run), so it takes a second.

Fails when the README (or a document of docs/) refers to the folder outside the repository that the project's data
and protocol once came from, links to a missing file or heading, or mentions a `make` target, `python -m` module,
`recsys` command, repository path or `RECSYS_*` variable that does not exist.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from models.settings import PROJECT_ROOT, Settings

README = PROJECT_ROOT / "README.md"
DOCS = sorted((PROJECT_ROOT / "docs").glob("*.md"))
TRACKED_TOP = ("models", "flows", "serving", "feature_repo", "bench", "scripts", "docs", "tests", ".ci")
"""Top-level folders of the repository itself (not made by a run, like .venv/ or .state/)."""

FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
INLINE = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def code_of(text: str) -> list[str]:
    """The command-like parts of a Markdown text: the lines of its fenced blocks and its inline code spans (an
    inline span may wrap over a line break: the break is a space)."""
    blocks = FENCE.findall(text)
    prose = FENCE.sub("", text)
    spans = re.findall(r"`([^`]+)`", prose)
    return [line for block in blocks for line in block.splitlines()] + [" ".join(s.split()) for s in spans]


def heading_anchors(text: str) -> set[str]:
    """GitHub's anchors of a Markdown file's headings: lower case, punctuation dropped, spaces as hyphens."""
    anchors = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", FENCE.sub("", text), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        anchors.add(slug)
    return anchors


def make_targets() -> set[str]:
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z][\w-]*)\s*:(?!=)", makefile, re.M))


def mentioned(pattern: str, text: str) -> set[str]:
    """First groups of ``pattern`` in the code of ``text``."""
    return {match for line in code_of(text) for match in re.findall(pattern, line)}


def test_no_path_outside_the_repository():
    for path in [README, *DOCS]:
        text = path.read_text()
        assert "../shared" not in text, f"{path.name} refers to ../shared, outside this repository"
        assert "shared/EVALUATION" not in text, f"{path.name} refers to the protocol outside this repository"


def test_relative_links_point_at_files_and_headings_of_the_repository():
    for path in [README, *DOCS]:
        for target in LINK.findall(path.read_text()):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...
                continue
            file_part, _, anchor = target.partition("#")
            linked = (path.parent / file_part).resolve() if file_part else path
            assert linked.exists(), f"{path.name} links to {target}: {linked} does not exist"
            assert linked.is_relative_to(PROJECT_ROOT), f"{path.name} links outside the repository: {target}"
            if anchor and linked.suffix == ".md":
                assert anchor in heading_anchors(linked.read_text()), f"{path.name} links to {target}: no such heading"


def test_make_targets_exist():
    targets = make_targets()
    used = mentioned(r"(?:^|[\s;&|(])make\s+(?:[A-Z_]+=\S*\s+)*([a-z][\w-]*)", README.read_text())
    assert {"demo", "test", "setup"} <= targets
    assert {"demo", "test"} <= used, "the README's make commands were not found: the check itself is broken"
    assert used <= targets, f"the README names make targets the Makefile lacks: {sorted(used - targets)}"


def test_python_modules_are_importable_modules_of_this_repository():
    modules = set()
    for path in [README, *DOCS]:
        modules |= mentioned(r"python3?\s+-m\s+([A-Za-z_][\w.]*)", path.read_text())
    ours = {m for m in modules if m.split(".")[0] in TRACKED_TOP}
    assert "bench.run" in ours, "the README's python -m commands were not found: the check itself is broken"
    for module in sorted(ours):
        spec = importlib.util.find_spec(module)
        assert spec is not None and spec.origin is not None, f"python -m {module}: no such module"
        assert Path(spec.origin).resolve().is_relative_to(PROJECT_ROOT), f"{module} is not this repository's"
    for module in sorted(modules - ours):  # the standard library's (zipfile, venv …)
        assert importlib.util.find_spec(module) is not None, f"python -m {module}: no such module"


def test_recsys_commands_exist():
    from flows.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices  # argparse keeps them there
    used = mentioned(r"(?:^|[\s;&|(])recsys\s+([a-z][\w-]*)", README.read_text())
    assert used, "the README's recsys commands were not found: the check itself is broken"
    assert used <= set(commands), f"the README names recsys commands that do not exist: {sorted(used - set(commands))}"


def test_repository_paths_exist():
    for path in [README, *DOCS]:
        for span in INLINE.findall(path.read_text()):
            for candidate in re.findall(r"(?:^|\s)((?:\.ci|[a-z_]+)/[\w./-]*)", span):
                if candidate.split("/")[0] not in TRACKED_TOP or re.search(r"[<>*{}…]", candidate):
                    continue
                assert (PROJECT_ROOT / candidate).exists(), f"{path.name} names {candidate}, which does not exist"


def test_recsys_variables_are_settings_or_read_by_the_repository():
    fields = {f"RECSYS_{name.upper()}" for name in Settings.model_fields}
    sources = "\n".join(p.read_text() for top in ("scripts", "tests", "serving", "flows", "bench")
                        for p in (PROJECT_ROOT / top).rglob("*") if p.suffix in (".py", ".sh"))  # fmt: skip
    for path in [README, *DOCS]:
        for name in sorted(set(re.findall(r"RECSYS_[A-Z0-9_]*[A-Z0-9]", path.read_text()))):
            assert name in fields or name in sources, f"{path.name} names {name}: no setting or script reads it"


def test_movielens_checksums_are_stated_where_the_readme_says():
    sums = (PROJECT_ROOT / "docs" / "ml-latest-small.sha256").read_text().splitlines()
    assert {line.split()[1] for line in sums} == {"ratings.csv", "movies.csv", "tags.csv", "links.csv"}
    for line in sums:
        assert line in README.read_text(), f"the README does not state {line}"
        assert line in (PROJECT_ROOT / "docs" / "evaluation.md").read_text(), f"docs/evaluation.md lacks {line}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("```bash\nmake pipeline DATASET=files DATA_DIR=x   # c\n```\n", {"pipeline"}),
        ("Run `RECSYS_STATE_DIR=/tmp/s make\ntest` then.\n", {"test"}),
        ("We make sure of it, `make` alone.\n", set()),
    ],
)
def test_make_targets_are_read_from_code_only(text: str, expected: set[str]):
    assert mentioned(r"(?:^|[\s;&|(])make\s+(?:[A-Z_]+=\S*\s+)*([a-z][\w-]*)", text) == expected
