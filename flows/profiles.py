"""Named sets of settings a pipeline run can start from (``recsys pipeline --profile NAME``).

``quick`` is the demo's first look: a version published in about a minute and a half on two cores, so a new user
sees the service answer while the full pipeline (tuned peers, the PyTorch text encoder, the cross-validated
re-ranker) runs behind it and replaces it. It trades quality for time and is not meant to be served for long.
"""

from __future__ import annotations

from typing import Any

from models.settings import Settings

FIRST_LOOK = "quick"
"""The profile whose versions are stand-ins: a pipeline run of another profile replaces one whatever the release
gate's comparison says (flows/reranker.py:compare_with_champion)."""

PROFILES: dict[str, dict[str, Any]] = {
    "full": {},
    "quick": {
        # the token table (built once, ~15 s) instead of ~150 s of PyTorch over the demo's 20 000 texts
        "embedding_backend": "static",
        # the peers' and the fusion's defaults: their searches take ~220 s on the demo
        "tuning": False,
        "fusion_tuning": False,
        "tuning_max_users": 500,  # the defaults are still scored, for the record
        # EASE^R's inverse over 4 000 items (~1 s a fit) instead of 12 000 (~12 s); stage 1 is fitted four times
        "item_item_max_items": 4_000,
        # one candidate-set size and one model size: no K sweep, no model-size cross-validation
        "candidates_k": 100,
        "k_sweep": (100,),
        "ranker_grid": ((31, 100),),
        "train_max_users": 1_000,
        "ablation": False,
        "eval_max_users": 500,
        "recall_max_users": 500,
        "build_bento": False,  # the demo serves from the source tree; the full run builds the bento
    },
}
"""Each profile's values, applied where the environment (RECSYS_*) does not set the field itself."""


def built_profile(build: dict[str, Any]) -> str:
    """The profile a version's build record names; versions recorded before profiles were built by full runs."""
    return str(build.get("profile", "full"))


def apply_profile(settings: Settings, name: str) -> Settings:
    """``settings`` with the profile's values for the fields the environment left at their defaults: an explicit
    RECSYS_* variable always wins, so a profile is a starting point, not a lock."""
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}: choose one of {', '.join(PROFILES)}")
    update = {field: value for field, value in PROFILES[name].items() if field not in settings.model_fields_set}
    return Settings.model_validate({**settings.model_dump(), **update})
