"""Loaders on tiny hand-written files of each layout, and once on the real MovieLens data."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from models.data import columns as C
from models.data.contract import DataValidationError
from models.data.movielens import detect_layout, load_movielens
from models.data.tables import load_files, load_saved_dataset, save_dataset


def write(path: Path, text: str, encoding: str = "utf-8") -> None:
    path.write_text(text.strip() + "\n", encoding=encoding)


@pytest.fixture
def latest_dir(tmp_path: Path) -> Path:
    write(tmp_path / "movies.csv", """
movieId,title,genres
1,Toy Story (1995),Adventure|Animation|Children
2,"Heat, The (1995)",Action|Crime|Thriller
3,Untitled Short,(no genres listed)
""")  # fmt: skip
    write(tmp_path / "ratings.csv", """
userId,movieId,rating,timestamp
1,1,4.0,964982703
1,2,3.5,964981247
2,1,5.0,964982224
2,3,2.0,1445714994
""")  # fmt: skip
    write(tmp_path / "tags.csv", """
userId,movieId,tag,timestamp
2,1,Pixar,1445714994
1,1,pixar,1445714995
1,2,heist,1445714996
""")  # fmt: skip
    return tmp_path


@pytest.fixture
def ml100k_dir(tmp_path: Path) -> Path:
    write(tmp_path / "u.data", "1\t1\t5\t874965758\n1\t2\t3\t876893171\n2\t1\t4\t878542960")
    flags_toy = "|".join(["0", "0", "0", "1", "1", "1"] + ["0"] * 13)  # Animation, Children's, Comedy
    flags_gold = "|".join(["0", "1", "1"] + ["0"] * 16)  # Action, Adventure
    write(
        tmp_path / "u.item",
        f"1|Toy Story (1995)|01-Jan-1995||http://x|{flags_toy}\n2|GoldenEye (1995)|||http://y|{flags_gold}\n",
        encoding="latin-1",
    )
    write(tmp_path / "u.user", "1|24|M|technician|85711\n2|53|F|other|94043")
    return tmp_path


def test_latest_layout(latest_dir: Path):
    assert detect_layout(latest_dir) == "latest"
    assert "Tags" not in load_movielens(latest_dir).items[C.DESCRIPTION].iloc[0]  # off by default: they leak
    dataset = load_movielens(latest_dir, include_tags=True)
    items = dataset.items.set_index(C.ITEM_ID)
    assert len(items) == 3 and len(dataset.users) == 2 and len(dataset.interactions) == 4
    assert items.loc["1", C.CATEGORY] == "Adventure"
    assert items.loc["1", C.DESCRIPTION] == "Genres: Adventure, Animation, Children. Tags: pixar"
    assert items.loc["2", C.DESCRIPTION] == "Genres: Action, Crime, Thriller. Tags: heist"
    assert items.loc["3", C.CATEGORY] == "(no genres listed)"
    assert items.loc["1", C.CREATED_AT] == pd.Timestamp("1995-01-01", tz="UTC")
    # no year in the title: created_at falls back to the first rating of the item
    assert items.loc["3", C.CREATED_AT] == pd.Timestamp(1445714994, unit="s", tz="UTC")
    inter = dataset.interactions
    assert set(inter[C.EVENT_TYPE]) == {C.RATED}
    assert inter[C.RATING].tolist() == [3.5, 5.0, 4.0, 2.0]  # sorted by time
    assert inter[C.TIMESTAMP].is_monotonic_increasing


def test_100k_layout_with_demographics(ml100k_dir: Path):
    assert detect_layout(ml100k_dir) == "100k"
    dataset = load_movielens(ml100k_dir)
    items = dataset.items.set_index(C.ITEM_ID)
    assert items.loc["1", C.TAGS] == "Animation|Children's|Comedy"
    assert items.loc["1", C.CATEGORY] == "Animation"
    assert items.loc["1", C.CREATED_AT] == pd.Timestamp("1995-01-01", tz="UTC")
    assert items.loc["2", C.CREATED_AT] == pd.Timestamp("1995-01-01", tz="UTC")  # from the title's year
    users = dataset.users.set_index(C.USER_ID)
    assert users.loc["1", C.AGE_BAND] == "18-24" and users.loc["2", C.AGE_BAND] == "50-55"
    assert users.loc["2", C.GENDER] == "F" and users.loc["1", C.OCCUPATION] == "technician"
    assert len(dataset.interactions) == 3


def test_not_a_movielens_folder(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="not a MovieLens folder"):
        load_movielens(tmp_path)


def contract_frames() -> dict[str, pd.DataFrame]:
    return {
        "items": pd.DataFrame(
            {
                C.ITEM_ID: ["007", "008"],
                C.TITLE: ["Spy kit", "Tea set"],
                C.CATEGORY: ["toys", "kitchen"],
                C.CREATED_AT: ["2024-01-01", "2024-02-01"],
                C.PRICE: [19.99, 35.0],
                C.IN_STOCK: [True, False],
                "brand": ["acme", "tetley"],
            }
        ),
        "users": pd.DataFrame({C.USER_ID: ["u1"], C.DEVICE: ["mobile"]}),
        "interactions": pd.DataFrame(
            {
                C.USER_ID: ["u1", "u1"],
                C.ITEM_ID: ["007", "008"],
                C.TIMESTAMP: ["2024-03-01T12:00:00Z", "2024-03-02T12:00:00Z"],
                C.EVENT_TYPE: [C.VIEW, C.PURCHASE],
            }
        ),
    }


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_generic_loader(tmp_path: Path, suffix: str):
    for stem, frame in contract_frames().items():
        if suffix == "csv":
            frame.to_csv(tmp_path / f"{stem}.csv", index=False)
        else:
            frame.to_parquet(tmp_path / f"{stem}.parquet", index=False)
    dataset = load_files(tmp_path, name="shop")
    assert dataset.items[C.ITEM_ID].tolist() == ["007", "008"]  # leading zeros kept
    assert dataset.items["brand"].tolist() == ["acme", "tetley"]
    assert dataset.items[C.IN_STOCK].tolist() == [True, False]
    assert dataset.users[C.DEVICE].tolist() == ["mobile"]
    assert dataset.interactions[C.WEIGHT].tolist() == [1.0, 5.0]


def test_generic_loader_names_missing_file(tmp_path: Path):
    contract_frames()["items"].to_csv(tmp_path / "items.csv", index=False)
    with pytest.raises(DataValidationError, match="missing file interactions.csv or interactions.parquet"):
        load_files(tmp_path)


def test_generic_loader_errors_name_the_file(tmp_path: Path):
    frames = contract_frames()
    frames["items"].loc[1, C.PRICE] = -3.0
    for stem, frame in frames.items():
        frame.to_csv(tmp_path / f"{stem}.csv", index=False)
    with pytest.raises(DataValidationError, match=r"items\.csv: column 'price': 1 negative value\(s\) at rows \[1\]"):
        load_files(tmp_path)


def test_save_and_reload_round_trip(tmp_path: Path, latest_dir: Path):
    dataset = load_movielens(latest_dir)
    folder = save_dataset(dataset, tmp_path / "saved" / "ml")
    again = load_saved_dataset(folder)
    pd.testing.assert_frame_equal(again.items, dataset.items)
    pd.testing.assert_frame_equal(again.interactions, dataset.interactions)
    pd.testing.assert_frame_equal(again.users, dataset.users)
    # saving again replaces the folder and leaves no staging folders behind
    save_dataset(dataset, folder)
    assert sorted(p.name for p in folder.parent.iterdir()) == ["ml"]


def test_real_movielens_small(movielens_small: Path):
    dataset = load_movielens(movielens_small, include_tags=True)
    assert len(dataset.interactions) == 100_836
    assert dataset.users[C.USER_ID].nunique() == 610
    assert len(dataset.items) == 9_742
    assert dataset.items[C.DESCRIPTION].str.contains("Tags: ").sum() > 1_000
