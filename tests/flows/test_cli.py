"""The `recsys data` command: validates, writes under the state folder, prints the summary; bad data writes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from flows.cli import main
from models.data import columns as C


def test_demo_data_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    monkeypatch.setenv("RECSYS_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("RECSYS_DEMO_ITEMS", "500")
    monkeypatch.setenv("RECSYS_DEMO_USERS", "100")
    monkeypatch.setenv("RECSYS_DEMO_INTERACTIONS", "3000")
    assert main(["data", "--dataset", "demo"]) == 0
    out = capsys.readouterr().out
    summary = json.loads(out[out.index("{") :])
    assert summary["items"] == 500 and summary["users"] == 100 and summary["categories"] >= 20
    folder = tmp_path / "state" / "data" / "demo"
    assert sorted(p.name for p in folder.iterdir()) == [
        "interactions.parquet", "items.parquet", "summary.json", "users.parquet",
    ]  # fmt: skip


def test_invalid_files_stop_before_writing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys):
    source = tmp_path / "shop"
    source.mkdir()
    pd.DataFrame(
        {C.ITEM_ID: ["a"], C.TITLE: ["A"], C.CATEGORY: ["c"], C.CREATED_AT: ["2024-01-01"], C.PRICE: [-1.0]}
    ).to_csv(source / "items.csv", index=False)
    pd.DataFrame({C.USER_ID: ["u"], C.ITEM_ID: ["a"], C.TIMESTAMP: ["2024-02-01"], C.EVENT_TYPE: ["view"]}).to_csv(
        source / "interactions.csv", index=False
    )
    monkeypatch.setenv("RECSYS_STATE_DIR", str(tmp_path / "state"))
    assert main(["data", "--dataset", "files", "--data-dir", str(source)]) == 2
    assert "items.csv: column 'price': 1 negative value(s) at rows [0]" in capsys.readouterr().err
    assert not (tmp_path / "state").exists()
