"""Pipeline profiles (``recsys pipeline --profile``): a profile is a starting point over the defaults, an explicit
RECSYS_* variable wins over it, and every value it names is a real, valid setting."""

from __future__ import annotations

import pytest

from flows.cli import build_parser
from flows.profiles import PROFILES, apply_profile
from models.settings import Settings


@pytest.fixture(autouse=True)
def _no_profile_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's exported RECSYS_* variable would win over the profile these tests check."""
    for values in PROFILES.values():
        for field in values:
            monkeypatch.delenv(f"RECSYS_{field.upper()}", raising=False)


def test_every_profile_names_real_settings_with_valid_values():
    for name, values in PROFILES.items():
        assert set(values) <= set(Settings.model_fields), name
        applied = apply_profile(Settings(), name)
        for field, value in values.items():
            assert getattr(applied, field) == value, (name, field)


def test_the_environment_wins_over_the_profile(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("RECSYS_EMBEDDING_BACKEND", "onnx-int8")
    monkeypatch.setenv("RECSYS_TRAIN_MAX_USERS", "77")
    quick = apply_profile(Settings(), "quick")
    assert quick.embedding_backend == "onnx-int8" and quick.train_max_users == 77
    assert quick.tuning is False and quick.k_sweep == (100,)  # what the environment left alone


def test_full_is_the_defaults_and_an_unknown_profile_is_refused():
    assert apply_profile(Settings(), "full").model_dump() == Settings().model_dump()
    with pytest.raises(ValueError, match="unknown profile 'fast': choose one of full, quick"):
        apply_profile(Settings(), "fast")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["pipeline", "--profile", "fast"])
    assert build_parser().parse_args(["pipeline", "--profile", "quick"]).profile == "quick"
