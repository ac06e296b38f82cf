"""The README's quality tables, written from ``evaluation.json`` reports and never by hand.

``recsys quality [REPORT ...]`` (``make quality``) renders one section per report — every method as served, the
ratio to the best tuned peer with its interval, stage-1 recall, the served K and rules, and the commit and code
fingerprint the report was measured with — and replaces the block between the README's quality markers. Without
arguments it takes the newest report of each dataset under the state folder.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flows.common import code_fingerprint
from models.files import write_atomic

BEGIN = "<!-- quality:begin (written by `make quality`; do not edit by hand) -->"
END = "<!-- quality:end -->"
PEERS = ("ease", "rp3beta", "item_knn", "ials")
LABELS = {
    "two_stage": "**two-stage** (as served)",
    "stage1": "stage-1 fused order (as served)",
    "ease": "EASE^R (tuned)",
    "rp3beta": "RP3β (tuned)",
    "item_knn": "item-kNN (tuned)",
    "ials": "iALS (tuned)",
    "popularity": "popularity",
    "two_stage_without_price_stock_recency": "two-stage without price, stock, recency features",
}


def newest_reports(reports_dir: Path) -> list[Path]:
    """The newest ``evaluation.json`` of each dataset folder."""
    found = []
    for dataset in sorted(p for p in reports_dir.iterdir() if p.is_dir()) if reports_dir.exists() else []:
        reports = sorted(dataset.glob("*/evaluation.json"), key=lambda p: p.stat().st_mtime)
        if reports:
            found.append(reports[-1])
    return found


def method_order(methods: dict[str, Any]) -> list[str]:
    first = [m for m in ("two_stage", "stage1") if m in methods]
    peers = sorted((m for m in methods if m in PEERS), key=lambda m: -methods[m]["ndcg@10"])
    rest = [m for m in methods if m not in first and m not in peers]
    return first + peers + rest


def measured_with(details: dict[str, Any]) -> str:
    version = details.get("measured_with") or {}
    fingerprint = version.get("code_fingerprint")
    if fingerprint is None:
        return "code version not recorded (a report from before reports carried it)"
    commit = (version.get("commit") or "no git checkout")[:10]
    dirty = " with uncommitted library changes" if version.get("dirty") else ""
    stale = "" if fingerprint == code_fingerprint() else " — **stale: the library changed since; re-run the pipeline**"
    return f"commit `{commit}`{dirty}, code fingerprint `{fingerprint}`{stale}"


def peer_label(trials: dict[str, int]) -> str:
    """The words "best tuned peer" when every peer's search ran past its first trial (its defaults); a run without
    the search (``--profile quick``, RECSYS_TUNING=false, one trial a peer) compares with the defaults and says so."""
    searched = bool(trials) and all(count > 1 for count in trials.values())
    return "best tuned peer" if searched else "best peer (defaults, not tuned)"


def report_section(report: dict[str, Any]) -> str:
    """One dataset's tables and key figures as Markdown."""
    methods, details = report["methods"], report["details"]
    conversions = all("conversion_ndcg@10" in values for values in methods.values())
    header = "| method | NDCG@10 | Recall@10 | MAP@10 |" + (" NDCG@10 carts + purchases |" if conversions else "")
    lines = [
        f"**{report['dataset']}** — {details['users']} test users (of {details['test_users_with_a_positive']} with a "
        f"positive), served K = {report['served']['k_candidates']}; measured with {measured_with(details)}.",
        "",
        header,
        "|---|---|---|---|" + ("---|" if conversions else ""),
    ]
    for name in method_order(methods):
        values = methods[name]
        cells = [f"{values[m]:.4f}" for m in ("ndcg@10", "recall@10", "map@10")]
        if conversions:
            cells.append(f"{values['conversion_ndcg@10']:.4f}")
        if name == "two_stage":
            cells = [f"**{c}**" for c in cells]
        lines.append(f"| {LABELS.get(name, name)} | " + " | ".join(cells) + " |")
    gain = details["two_stage_vs_best_peer"]
    low, high = gain["ci95"]
    peers = peer_label(details.get("tuning", {}).get("trials", {}))
    lines += ["", f"Two-stage NDCG@10 / {peers} ({LABELS[gain['peer']]}): **{gain['ndcg@10_ratio']:.2f}×** "
                  f"(paired bootstrap over test users, 95 % interval {low:.2f}–{high:.2f}×)."]  # fmt: skip
    if conversions:
        best = max(PEERS, key=lambda m: methods[m]["conversion_ndcg@10"])
        ratio = methods["two_stage"]["conversion_ndcg@10"] / max(methods[best]["conversion_ndcg@10"], 1e-12)
        lines[-1] += f" On add-to-carts and purchases alone: {ratio:.2f}× the best peer there ({LABELS[best]})."
    merged = report["stage1_recall"]["merged"]
    per_source = ", ".join(
        f"{name} {by_k['500']:.3f}"
        for name, by_k in sorted(report["stage1_recall"].items(), key=lambda kv: -kv[1]["500"])
        if name != "merged"
    )
    lines += [
        f"Stage-1 merged Recall@100 / @500: {merged['100']:.3f} / {merged['500']:.3f} (per source @500: {per_source}).",
        f"Served rules: {json.dumps(report['served']['rules'])}.",
    ]
    return "\n".join(lines)


def render(reports: Sequence[dict[str, Any]]) -> str:
    return "\n\n".join(report_section(report) for report in reports)


def replace_block(text: str, block: str, begin: str = BEGIN, end: str = END) -> str:
    """``text`` with everything between the markers (the quality block's by default) replaced by ``block``."""
    if begin not in text or end not in text:
        raise ValueError(f"the README has no such block: add the lines\n{begin}\n{end}")
    before, rest = text.split(begin, 1)
    _, after = rest.split(end, 1)
    return f"{before}{begin}\n{block}\n{end}{after}"


def write_quality(report_paths: Sequence[Path], readme: Path) -> str:
    """Render ``report_paths`` into ``readme``'s quality block; returns the block."""
    if not report_paths:
        raise FileNotFoundError("no evaluation.json to write from: run the pipeline first, or name the reports")
    reports = []
    for path in report_paths:
        try:
            reports.append(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as error:
            raise ValueError(f"cannot read the evaluation report {path}: {error}") from error
    block = render(reports)
    text = replace_block(readme.read_text(), block)
    write_atomic(readme, lambda staged: staged.write_text(text))
    return block
