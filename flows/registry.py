"""The MLflow registry follows what is served: the ``champion`` alias names the model of the namespace's ``current``
version (and ``challenger`` that of its challenger). The version store is the source of truth — a service's
/promote or /rollback moves only its pointers, and the next pipeline run or CLI release command syncs the aliases."""

from __future__ import annotations

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from flows.tracking import configure_mlflow
from models.files import ArtifactError
from models.recommender.versions import CHALLENGER, CURRENT, VersionStore, read_manifest
from models.settings import Settings


def sync_champion_alias(settings: Settings, store: VersionStore) -> str:
    """Point the aliases at the registered models of ``current`` and ``challenger``; says what it did."""
    done = []
    for pointer, alias in ((CURRENT, "champion"), (CHALLENGER, "challenger")):
        folder = store.pointed(pointer)
        if folder is None:
            done.append(_drop_alias(settings, store, alias))
            continue
        try:
            manifest = read_manifest(folder)
            registry = manifest["registry"]
            configure_mlflow(settings.mlflow_dir, f"recsys-{manifest['dataset']['name']}")
            client = MlflowClient()
            client.set_model_version_tag(registry["model"], str(registry["version"]), "published_version",
                                         folder.name)  # fmt: skip
            client.set_registered_model_alias(registry["model"], alias, str(registry["version"]))
            done.append(f"{alias} → {registry['model']} v{registry['version']} ({folder.name})")
        except (ArtifactError, KeyError, MlflowException) as error:
            done.append(f"registry alias '{alias}' not moved for {folder.name}: {error}")
    return "; ".join(done) or "nothing published"


def _drop_alias(settings: Settings, store: VersionStore, alias: str) -> str:
    """No version holds the role any more (the challenger was promoted or replaced): the alias goes too."""
    current = store.pointed(CURRENT)
    if current is None:
        return f"no {alias}"
    try:
        manifest = read_manifest(current)
        configure_mlflow(settings.mlflow_dir, f"recsys-{manifest['dataset']['name']}")
        MlflowClient().delete_registered_model_alias(manifest["registry"]["model"], alias)
        return f"no {alias} (alias removed)"
    except (ArtifactError, KeyError, MlflowException):
        return f"no {alias}"
