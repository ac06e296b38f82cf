"""`recsys quality`: the README's quality block is rewritten from a real pipeline report, and only that block."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flows.cli import main
from flows.quality import BEGIN, END, newest_reports, report_section, write_quality


def test_quality_block_comes_from_the_report(published, tmp_path: Path):
    settings, summary = published
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\nbefore\n{BEGIN}\nold numbers\n{END}\nafter\n")
    assert newest_reports(settings.reports_dir) == [Path(summary["report_path"])]
    assert main(["quality", summary["report_path"], "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("# title\n\nbefore\n") and text.endswith(f"{END}\nafter\n")
    assert "old numbers" not in text
    report = json.loads(Path(summary["report_path"]).read_text())
    gain = report["details"]["two_stage_vs_best_peer"]
    assert f"**{report['methods']['two_stage']['ndcg@10']:.4f}**" in text
    assert f"**{gain['ndcg@10_ratio']:.2f}×**" in text
    assert f"{report['methods']['ease']['ndcg@10']:.4f}" in text
    assert report["details"]["measured_with"]["code_fingerprint"] in text and "stale" not in text


def test_quality_refuses_a_readme_without_the_block_and_a_missing_report(published, tmp_path: Path):
    _, summary = published
    readme = tmp_path / "README.md"
    readme.write_text("no block here\n")
    with pytest.raises(ValueError, match="has no such block: add the lines\n<!-- quality:begin"):
        write_quality([Path(summary["report_path"])], readme)
    assert readme.read_text() == "no block here\n"  # nothing written
    assert main(["quality", str(tmp_path / "missing.json"), "--readme", str(readme)]) == 2


def test_peers_are_called_tuned_only_when_their_search_ran(published):
    _, summary = published
    report = json.loads(Path(summary["report_path"]).read_text())
    assert all(count > 1 for count in report["details"]["tuning"]["trials"].values())
    assert "/ best tuned peer (" in report_section(report)
    report["details"]["tuning"]["trials"]["ease"] = 1  # its defaults only: no search (--profile quick)
    assert "/ best peer (defaults, not tuned) (" in report_section(report)
