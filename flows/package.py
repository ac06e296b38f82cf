"""Pack the published version (and the Feast store files the service reads) into a BentoML model, so that
``bentoml build -f serving/bentofile.yaml`` carries it into the bento.

The model is a serving-only state folder: ``versions/<namespace>/current/`` (the champion as a plain folder: model
stores copy symlinks as folders, so the ``current`` pointer is not kept as one) and ``feast/<namespace>/`` with the
registry and the SQLite online store. A service pointed at it with ``RECSYS_STATE_DIR=<model path>`` serves that
version; a service started from the bento finds it by itself (serving/service.py).

``python -m flows.package`` (``make bento``) packs the current version of the state folder.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import bentoml
from bentoml.exceptions import NotFound

from models.features.store import store_dir
from models.recommender.versions import CURRENT, STATE_MODEL, VersionStore, choose_namespace, verify_version
from models.settings import Settings


def export_state_model(settings: Settings, name: str = STATE_MODEL, model_store: Any = None) -> bentoml.Model:
    """The BentoML model holding the current published version; made once per version (its tag is the version).
    ``model_store``: a ``ModelStore`` other than the one under BENTOML_HOME (tests)."""
    store = {} if model_store is None else {"_model_store": model_store}
    settings = settings.model_copy(update={"namespace": choose_namespace(settings.versions_root, settings.namespace)})
    current = VersionStore(settings.versions_dir).current()
    manifest = verify_version(current)
    version = str(manifest["version"])
    dataset = manifest["features"]["store"]["dataset"]
    namespace = settings.deployment(dataset)
    tag = f"{name}:{version.lower()}"
    try:
        return bentoml.models.get(tag, **store)
    except NotFound:
        pass
    feast = store_dir(settings, dataset)
    metadata = {"version": version, "dataset": dataset, "namespace": namespace, "online_store": settings.online_store}
    labels = {"published_version": version.lower()}
    with bentoml.models.create(tag, metadata=metadata, labels=labels, **store) as model:
        root = Path(model.path)
        shutil.copytree(current, root / "versions" / namespace / CURRENT)
        target = root / "feast" / namespace
        (target / "data").mkdir(parents=True)  # the offline store folder: opened (not read) by the service
        shutil.copy2(feast / "registry.db", target / "registry.db")
        if settings.online_store == "sqlite":
            shutil.copy2(feast / "online_store.db", target / "online_store.db")
    stored = bentoml.models.get(tag, **store)  # the copy in the model store (``model`` was the staging folder)
    verify_version(Path(stored.path) / "versions" / namespace / CURRENT)
    return stored


def main() -> None:
    model = export_state_model(Settings())
    print(f"packed {model.tag} at {model.path}")


if __name__ == "__main__":
    main()
