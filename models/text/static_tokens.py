"""all-MiniLM-L6-v2 distilled into one vector per vocabulary token: the text encoder for catalogues too large to run
a transformer over on the machine at hand (backend ``static``).

The core of Model2Vec's recipe (Tulkens & van Dongen, 2024): every token of the vocabulary goes through the bundled
model once, alone between ``[CLS]`` and ``[SEP]``, and its mean-pooled output becomes that token's vector; a text's
vector is the mean of its tokens' vectors, L2-normalised. The table is built once from the bundled weights (about
10 s on 2 cores, 47 MB) and cached; encoding is then a table lookup, a few hundred times the transformer's texts/s.
(The ``model2vec`` package's own distiller needs transformers < 5.4; its PCA and Zipf weighting did not change the
neighbours measured on demo texts, so they are left out.)

A text's vector depends on that text alone — no batch padding, no per-batch quantisation — so shards encoded on a
cluster equal a local run exactly. Its vectors are not the transformer's: what they cost in quality is measured
(README, *Configuration*), not assumed.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import sparse

from models.files import first_build_wins
from models.text.model import EMBEDDING_DIM, bundled_model_path, encoder_name

RECIPE = "minilm-l6-v2-static-tokens-meanpool-v1"
"""Changes whenever the build recipe changes: part of the cached table's folder name and of the vectors' cache key."""
MAX_TOKENS = 256  # as the transformer backends: longer texts are cut at the same place
MODEL_FILES = ("tokens.npy", "tokenizer.json", "build.json")
_UNK = "[UNK]"


class StaticTableError(RuntimeError):
    """The token table could not be built or read; names the file."""


def encoder_folder(cache_dir: Path) -> Path:
    """Where the table of this recipe lives under a cache folder."""
    return Path(cache_dir) / "encoders" / RECIPE


def build_token_table(model_dir: Path, out_dir: Path, batch: int = 1024) -> Path:
    """Run every vocabulary token through the model and save the table as ``out_dir/tokens.npy`` (written to a
    sibling folder first, then renamed: a crash never leaves a half-built table behind)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModel, AutoTokenizer

    started = time.perf_counter()
    with first_build_wins(out_dir, "tokens.npy") as staging:
        bert = AutoModel.from_pretrained(str(model_dir)).eval()
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        vocabulary = len(tokenizer)
        cls, sep = int(tokenizer.cls_token_id), int(tokenizer.sep_token_id)
        table = np.empty((vocabulary, EMBEDDING_DIM), dtype=np.float32)
        with torch.no_grad():
            for start in range(0, vocabulary, batch):
                ids = torch.arange(start, min(vocabulary, start + batch))
                inputs = torch.stack([torch.full_like(ids, cls), ids, torch.full_like(ids, sep)], dim=1)
                hidden = bert(input_ids=inputs, attention_mask=torch.ones_like(inputs)).last_hidden_state
                table[start : start + len(ids)] = hidden.mean(dim=1).numpy()  # the model's own pooling
        np.save(staging / "tokens.npy", table, allow_pickle=False)
        shutil.copy(model_dir / "tokenizer.json", staging / "tokenizer.json")
        build = {"recipe": RECIPE, "tokens": vocabulary, "build_seconds": round(time.perf_counter() - started, 1)}
        (staging / "build.json").write_text(json.dumps(build, indent=2))
    return out_dir / "tokens.npy"


class StaticTokenEncoder:
    """Mean of the distilled token vectors; builds the table into ``cache_dir`` on first use."""

    def __init__(self, cache_dir: Path, model_dir: Path | None = None):
        from tokenizers import Tokenizer

        folder = self.folder = encoder_folder(cache_dir)
        path = folder / "tokens.npy"
        if not path.exists():
            build_token_table(model_dir or bundled_model_path(), folder)
        try:
            self.table = np.load(path, allow_pickle=False)
            self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        except Exception as error:  # numpy raises OSError or ValueError, tokenizers its own exception type
            raise StaticTableError(
                f"cannot read the static text encoder in {folder}: {error}; delete it to rebuild it"
            ) from error
        if self.table.ndim != 2 or self.table.shape[1] != EMBEDDING_DIM:
            raise StaticTableError(f"{path} holds a {self.table.shape} table, expected (tokens, {EMBEDDING_DIM})")
        self.tokenizer.enable_truncation(max_length=MAX_TOKENS)
        self.tokenizer.no_padding()
        self.unknown = int(self.tokenizer.token_to_id(_UNK) or 0)
        self.name = encoder_name(f"static:{RECIPE}")
        self.dim = EMBEDDING_DIM

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """``batch_size`` is accepted for the common interface; every text is independent of the others."""
        if not len(texts):
            return np.empty((0, self.dim), dtype=np.float32)
        encodings = self.tokenizer.encode_batch(list(texts), add_special_tokens=False)
        ids = [encoding.ids or [self.unknown] for encoding in encodings]  # an empty text reads as [UNK]
        lengths = np.fromiter((len(row) for row in ids), dtype=np.int64, count=len(ids))
        flat = np.fromiter((token for row in ids for token in row), dtype=np.int64, count=int(lengths.sum()))
        indptr = np.concatenate([[0], np.cumsum(lengths)])
        # texts x tokens counts times the table: the sums without a (tokens x dim) temporary
        counts = sparse.csr_matrix((np.ones(len(flat), dtype=np.float32), flat, indptr),
                                   shape=(len(ids), len(self.table)))  # fmt: skip
        sums = np.asarray(counts @ self.table, dtype=np.float32)
        norms = np.linalg.norm(sums, axis=1, keepdims=True)  # the mean's direction: dividing by the length is moot
        return np.ascontiguousarray(sums / np.maximum(norms, 1e-12), dtype=np.float32)
