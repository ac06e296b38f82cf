"""Champion vs challenger from the impression log: shadow agreement, outcome rates and their intervals, the CLI."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flows.cli import main
from flows.variants import compare_variants, load_variant_logs, read_lists, variants_table
from models.live.impressions import SHADOW, ImpressionLog, ShownList, impressions_dir, read_impressions
from models.live.log import EVENT, EventLog, log_path
from models.settings import Settings

NOW = 1_700_000_000.0
HOUR = 3600.0


@pytest.fixture(scope="module", autouse=True)
def _harness() -> None:
    """Pure functions on frames and files: no Prefect server (overrides the flow tests' harness)."""


def shown(request_id: str, user: str | None, items: Sequence[str], variant: str = "champion", latency: float = 10.0,
          as_of: float = NOW) -> ShownList:  # fmt: skip
    return ShownList(request_id, as_of, user, "v1", "recommend", list(items), [1.0 / (i + 1) for i in range(len(items))],
                     [["semantic"]] * len(items), np.zeros((len(items), 2), np.float32), variant, latency)  # fmt: skip


def write(root: Path, lists: Sequence[ShownList], names: Sequence[str] = ("a", "b")) -> None:
    log = ImpressionLog(root, names)
    for one in lists:
        log.record(one)
    assert log.flush()


def event(user: str, item: str, kind: str, at: float = NOW + 60, request_id: str | None = None) -> dict:
    body = {"user_id": user, "item_id": item, "event_type": kind, "timestamp": at}
    return body | ({"request_id": request_id} if request_id else {})


def logged(tmp_path: Path, seen: Sequence[ShownList], shadow: Sequence[ShownList] = ()) -> tuple[pd.DataFrame, ...]:
    """The lists as the service's log writes and the comparison reads them."""
    write(tmp_path / "seen", seen)
    if shadow:
        write(tmp_path / "seen" / SHADOW, shadow)
    return read_lists(tmp_path / "seen"), read_lists(tmp_path / "seen" / SHADOW)


def test_identical_shadow_lists_agree_fully(tmp_path: Path):
    items = [f"i{n}" for n in range(12)]
    seen, shadow = logged(
        tmp_path,
        [shown("r1", "u1", items, latency=10.0), shown("r2", "u2", items[::-1], latency=20.0)],
        [shown("r1", "u1", items, SHADOW, latency=25.0), shown("r2", "u2", items[::-1], SHADOW, latency=30.0)],
    )
    agreement = compare_variants(seen, shadow, pd.DataFrame(), HOUR, k=10)["shadow_agreement"]
    assert agreement["pairs"] == 2
    assert agreement["overlap"] == pytest.approx(1.0)
    assert agreement["kendall_tau"] == pytest.approx(1.0)
    assert agreement["latency_ratio"] == pytest.approx((2.5 + 1.5) / 2)  # median of two per-request ratios


def test_disjoint_and_partly_shared_shadow_lists(tmp_path: Path):
    seen, shadow = logged(
        tmp_path,
        [shown("r1", "u1", ["a", "b", "c"]), shown("r2", "u2", ["a", "b", "c", "d"])],
        [shown("r1", "u1", ["x", "y", "z"], SHADOW), shown("r2", "u2", ["a", "b", "d", "e"], SHADOW)],
    )
    disjoint = compare_variants(seen[seen.request_id == "r1"], shadow, pd.DataFrame(), HOUR, k=3)["shadow_agreement"]
    assert disjoint["pairs"] == 1 and disjoint["overlap"] == 0.0
    assert disjoint["kendall_tau"] < -0.5  # each list ranks the other's items last
    shared = compare_variants(seen[seen.request_id == "r2"], shadow, pd.DataFrame(), HOUR, k=4)["shadow_agreement"]
    assert shared["overlap"] == pytest.approx(0.75)
    assert 0 < shared["kendall_tau"] < 1


def test_challenger_clicked_everywhere_champion_never(tmp_path: Path):
    challenger = [shown(f"c{n}", f"cu{n}", ["a", "b"], "challenger") for n in range(6)]
    champion = [shown(f"p{n}", f"pu{n}", ["a", "b"]) for n in range(6)]
    seen, shadow = logged(tmp_path, [*challenger, *champion])
    events = pd.DataFrame([event(f"cu{n}", "b", "click", request_id=f"c{n}") for n in range(6)]
                          + [event(f"pu{n}", "a", "view", request_id=f"p{n}") for n in range(6)])  # fmt: skip
    result = compare_variants(seen, shadow, events, HOUR)
    ctr = {name: result["variants"][name]["ctr"] for name in ("challenger", "champion")}
    assert ctr["challenger"]["rate"] == 1.0 and ctr["champion"]["rate"] == 0.0  # a view is not a click
    for rate in ctr.values():
        assert rate["ci95"][0] <= rate["rate"] <= rate["ci95"][1]
    assert ctr["challenger"]["ci95"][0] == pytest.approx(0.6097, abs=1e-3)  # Wilson, 6 of 6
    assert ctr["champion"]["ci95"][1] == pytest.approx(0.3903, abs=1e-3)
    assert result["challenger_vs_champion"]["ctr"] == {"ratio": None, "ci95": None}  # champion rate 0: undefined
    assert result["variants"]["shadow"]["lists"] == 0
    json.dumps(result)  # nothing numpy- or inf-typed in the report


def test_ratio_and_its_bootstrap_interval_resample_users(tmp_path: Path):
    challenger = [shown(f"c{n}", f"cu{n}", ["a", "b"], "challenger", latency=float(n + 1)) for n in range(40)]
    champion = [shown(f"p{n}", f"pu{n % 20}", ["a", "b"], latency=5.0) for n in range(40)]  # 2 lists per user
    seen, shadow = logged(tmp_path, [*challenger, *champion])
    events = pd.DataFrame(
        [event(f"cu{n}", "a", "purchase" if n < 6 else "click", request_id=f"c{n}") for n in range(24)]
        + [event(f"pu{n % 20}", "b", "add_to_cart" if n < 10 else "purchase", request_id=f"p{n}") for n in range(12)]
    )
    result = compare_variants(seen, shadow, events, HOUR)
    challenger_stats, champion_stats = result["variants"]["challenger"], result["variants"]["champion"]
    assert (challenger_stats["lists"], challenger_stats["users"]) == (40, 40)
    assert (champion_stats["lists"], champion_stats["users"]) == (40, 20)
    assert challenger_stats["ctr"]["rate"] == pytest.approx(0.6) and champion_stats["ctr"]["rate"] == pytest.approx(0.3)
    assert challenger_stats["conversion"]["rate"] == pytest.approx(0.15)
    assert champion_stats["conversion"]["rate"] == pytest.approx(0.05)  # carts are clicks, not conversions
    assert challenger_stats["latency_ms"] == {"p50": pytest.approx(20.5), "p99": pytest.approx(39.61)}
    ctr = result["challenger_vs_champion"]["ctr"]
    assert ctr["ratio"] == pytest.approx(2.0)
    low, high = ctr["ci95"]
    assert 1.0 < low < 2.0 < high < 5.0
    conversion = result["challenger_vs_champion"]["conversion"]
    assert conversion["ratio"] == pytest.approx(3.0)
    assert conversion["ci95"][0] < 3.0 and conversion["ci95"][1] is None  # some resamples give the champion none
    assert compare_variants(seen, shadow, events, HOUR, seed=0) == result  # the seed fixes the resamples


def test_events_without_request_id_credit_the_latest_list_within_the_window(tmp_path: Path):
    seen, shadow = logged(
        tmp_path,
        [shown("early", "u1", ["a", "b"], as_of=NOW - 10 * HOUR), shown("late", "u1", ["a", "b"], "challenger")],
    )
    inside = compare_variants(seen, shadow, pd.DataFrame([event("u1", "a", "click", at=NOW + 60)]), HOUR)
    assert inside["variants"]["challenger"]["ctr"]["successes"] == 1
    assert inside["variants"]["champion"]["ctr"]["successes"] == 0
    outside = compare_variants(seen, shadow, pd.DataFrame([event("u1", "a", "click", at=NOW + 2 * HOUR)]), HOUR)
    assert outside["variants"]["challenger"]["ctr"]["successes"] == 0


def test_empty_logs_give_zeros_and_nones(tmp_path: Path):
    settings = Settings(state_dir=tmp_path / "state", namespace="demo")
    seen, shadow, events = load_variant_logs(settings, "demo")
    assert seen.empty and shadow.empty and events.empty
    result = compare_variants(seen, shadow, events, HOUR)
    for name in ("champion", "challenger", "shadow"):
        assert result["variants"][name]["lists"] == 0 and result["variants"][name]["latency_ms"]["p50"] is None
    assert result["variants"]["champion"]["ctr"] == {"rate": None, "successes": 0, "ci95": None}
    assert result["challenger_vs_champion"] is None
    assert result["shadow_agreement"] == {"pairs": 0, "overlap": None, "kendall_tau": None, "latency_ratio": None}
    assert "0 pairs" in variants_table(result)


def test_arms_with_different_feature_lists_are_both_read(tmp_path: Path):
    # two items a list: a one-row flush lands in "date=('…',)" and its own rotation deletes it (pandas groupby)
    write(tmp_path, [shown("p1", "u1", ["a", "b"])], names=("a", "b"))
    # another day: two logs of one process flushing in the same millisecond would write the same file name
    write(tmp_path, [shown("c1", "u2", ["a", "b"], "challenger", as_of=NOW + 86_400)], names=("a", "b", "c"))
    rows = read_lists(tmp_path)
    assert rows.groupby("variant")["request_id"].unique().map(list).to_dict() == {
        "challenger": ["c1"],
        "champion": ["p1"],
    }
    assert set(read_impressions(tmp_path)[0]["variant"]) == {"challenger"}  # why the comparison does not use it


def test_variants_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    state = tmp_path / "state"
    monkeypatch.setenv("RECSYS_STATE_DIR", str(state))
    monkeypatch.delenv("RECSYS_NAMESPACE", raising=False)
    assert main(["variants"]) == 2  # nothing published yet
    assert "no published version" in capsys.readouterr().err
    settings = Settings(state_dir=state, namespace="demo")
    root = impressions_dir(settings, "demo")
    write(root, [shown("r1", "u1", ["a", "b", "c"], latency=8.0), shown("r2", "u2", ["a", "b"], "challenger")])
    write(root / SHADOW, [shown("r1", "u1", ["a", "c", "b"], SHADOW, latency=12.0)])
    log = EventLog(log_path(state, "demo"))
    log.append(EVENT, [event("u1", "c", "purchase", request_id="r1")])
    log.close()
    (settings.versions_root / "demo" / "v1").mkdir(parents=True)
    (settings.versions_root / "demo" / "current").symlink_to(settings.versions_root / "demo" / "v1")
    assert main(["variants", "--k", "3"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("variant")
    report = json.loads(out[out.index("{") :])
    assert report["namespace"] == "demo" and report["k"] == 3
    assert report["variants"]["champion"]["conversion"]["rate"] == 1.0
    assert report["variants"]["challenger"]["ctr"]["rate"] == 0.0
    assert report["shadow_agreement"]["pairs"] == 1 and report["shadow_agreement"]["overlap"] == 1.0
    assert report["shadow_agreement"]["latency_ratio"] == pytest.approx(1.5)
    assert report["challenger_vs_champion"]["ctr"]["ratio"] == 0.0
