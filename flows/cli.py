"""Command-line entry point: ``recsys <command>`` (also ``python -m flows.cli``)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from models.contract import Dataset, DataValidationError
from models.data_io import load_files, save_dataset
from models.demo_catalog import generate_demo_catalog
from models.movielens import load_movielens
from models.settings import Settings

DATASETS = ("demo", "movielens", "files")


def load_source_dataset(kind: str, settings: Settings, data_dir: Path | None) -> Dataset:
    """The dataset named by ``kind``: the generated demo catalog, MovieLens, or files in the contract layout."""
    if kind == "demo":
        return generate_demo_catalog(
            n_items=settings.demo_items,
            n_users=settings.demo_users,
            n_interactions=settings.demo_interactions,
            seed=settings.seed,
        )
    if data_dir is None:
        raise SystemExit(f"--data-dir is required for --dataset {kind}")
    if kind == "movielens":
        return load_movielens(data_dir)
    return load_files(data_dir)


def command_data(args: argparse.Namespace, settings: Settings) -> int:
    """Load or generate a dataset, validate it, write it under the state folder and print its summary."""
    started = time.perf_counter()
    try:
        dataset = load_source_dataset(args.dataset, settings, args.data_dir)
    except DataValidationError as error:
        print(error, file=sys.stderr)
        return 2
    folder = save_dataset(dataset, settings.dataset_dir(dataset.name))
    summary = dataset.summary()
    print(f"dataset '{dataset.name}' validated and written to {folder} in {time.perf_counter() - started:.1f} s")
    print(json.dumps(summary, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recsys", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    data = commands.add_parser("data", help="generate or load a dataset, validate it, save it, print a summary")
    data.add_argument("--dataset", choices=DATASETS, default="demo")
    data.add_argument("--data-dir", type=Path, default=None, help="folder of the MovieLens or contract files")
    data.set_defaults(handler=command_data)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings()
    return int(args.handler(args, settings))


if __name__ == "__main__":
    raise SystemExit(main())
