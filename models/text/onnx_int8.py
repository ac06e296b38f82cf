"""all-MiniLM-L6-v2 as an int8 ONNX model run by onnxruntime: the fast text-encoder backend (``onnx-int8``).

Built once from the bundled weights and cached (nothing is downloaded):

1. the BERT encoder with attention-masked mean pooling and L2 normalisation inside the graph (what the
   sentence-transformers modules 0-2 do), exported with ``torch.onnx.export``;
2. SmoothQuant: each linear layer's input channels are divided by ``s_j = max|X_j|^a / max|W_:,j|^(1-a)`` and its
   weight columns multiplied by it. Exact in fp32, it moves BERT's activation outliers into the weights, which
   quantise well per channel; ``max|X_j|`` comes from a forward pass over seeded demo-catalog texts;
3. onnxruntime's dynamic int8 quantisation of the weight MatMuls (int8 per-channel weights, uint8 activations:
   the VNNI kernels on this CPU), except the three first layers' feed-forward output (``FP32_LAYERS``).

Plain dynamic int8 agrees with PyTorch only to cosine ~0.93 (per-tensor) or ~0.986 (per-channel) on short texts.
The runtime needs only ``tokenizers`` and ``onnxruntime``; texts are sorted by length and padded per batch, and
batches run concurrently, one thread each.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from models.data import columns as C
from models.data.demo_catalog import generate_demo_catalog
from models.files import first_build_wins
from models.text.model import EMBEDDING_DIM, bundled_model_path, encoder_name, item_texts

RECIPE = "minilm-l6-v2-smoothquant0.8-int8pc-ffnout012fp32-v1"
"""Changes whenever the build recipe changes: part of the cached model's folder name and of the vectors' cache key."""
MAX_TOKENS = 256  # the sentence-transformers model's max_seq_length
MODEL_FILES = ("model.onnx", "tokenizer.json", "build.json")
SMOOTHQUANT_ALPHA = 0.8
CALIBRATION_TEXTS = 1500
FP32_LAYERS = (0, 1, 2)
"""Layers whose feed-forward output projection stays fp32: the int8 error that remains after SmoothQuant comes
mostly from there. Measured on 3 000 MovieLens texts: all int8 ~3.9x torch at cosine min 0.985; these three in
fp32 ~3.1x at min 0.991 (mean 0.999)."""


class OnnxBuildError(RuntimeError):
    """The ONNX model could not be built or loaded; names the file."""


def calibration_texts(count: int = CALIBRATION_TEXTS, seed: int = 20_240_601) -> list[str]:
    """Seeded demo-catalog item texts (title + description): deterministic, no data set needed."""
    items = generate_demo_catalog(n_items=count, n_users=50, n_interactions=500, seed=seed).items
    # long texts (title + description), titles, and very short "name (year). category" texts: the activation
    # ranges of few-token texts differ most, and they are the worst quantised without their share of calibration
    third = count // 3
    long_texts = item_texts(items.iloc[:third])
    titles = items[C.TITLE].iloc[third : 2 * third].astype(str).tolist()
    rest = items.iloc[2 * third :]
    short = [
        f"{' '.join(str(title).split()[:2])} ({created.year}). {category}"
        for title, created, category in zip(rest[C.TITLE], rest[C.CREATED_AT], rest[C.CATEGORY], strict=True)
    ]
    return long_texts + titles + short


def _export_module(bert: Any) -> Any:
    import torch

    class PooledEncoder(torch.nn.Module):
        def __init__(self, inner: Any):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            hidden = self.inner(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2, dim=1)

    return PooledEncoder(bert)


def _smoothquant(bert: Any, tokenizer: Any, texts: Sequence[str], alpha: float) -> None:
    """Rescale every encoder layer's linear inputs in place (see the module docstring)."""
    import torch

    amax: dict[str, torch.Tensor] = {}
    hooks = []
    for name, module in bert.named_modules():
        if isinstance(module, torch.nn.Linear) and "encoder.layer" in name:

            def record(_module: Any, inputs: Any, _output: Any, name: str = name) -> None:
                seen = inputs[0].detach().abs().reshape(-1, inputs[0].shape[-1]).amax(0)
                amax[name] = torch.maximum(amax[name], seen) if name in amax else seen

            hooks.append(module.register_forward_hook(record))
    with torch.no_grad():
        for start in range(0, len(texts), 64):
            batch = tokenizer(
                list(texts[start : start + 64]), padding=True, truncation=True, max_length=MAX_TOKENS,
                return_tensors="pt",
            )  # fmt: skip
            bert(**batch)
    for hook in hooks:
        hook.remove()

    def factor(activation: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return (activation.pow(alpha) / weight.abs().amax(0).pow(1 - alpha)).clamp(min=1e-5).float()

    class Scaled(torch.nn.Module):
        inverse: torch.Tensor

        def __init__(self, linear: torch.nn.Linear, scale: torch.Tensor):
            super().__init__()
            self.linear = linear
            self.register_buffer("inverse", 1.0 / scale)
            linear.weight.mul_(scale[None, :])

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.linear(x * self.inverse)

    class ScaledSelfAttention(torch.nn.Module):
        """One shared input scaling for query, key and value (they read the same hidden states)."""

        inverse: torch.Tensor

        def __init__(self, inner: Any, scale: torch.Tensor):
            super().__init__()
            self.inner = inner
            self.register_buffer("inverse", 1.0 / scale)
            for linear in (inner.query, inner.key, inner.value):
                linear.weight.mul_(scale[None, :])

        def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            return self.inner(hidden_states * self.inverse, *args, **kwargs)

    with torch.no_grad():
        for i, layer in enumerate(bert.encoder.layer):
            prefix = f"encoder.layer.{i}."
            attention, attention_out = layer.attention.self, layer.attention.output
            qkv = torch.cat([attention.query.weight, attention.key.weight, attention.value.weight])
            s_qkv = factor(amax[prefix + "attention.self.query"], qkv)
            # the attention output's input is softmax @ V, linear in V: fold its scale into V's rows, no extra op
            s_out = factor(amax[prefix + "attention.output.dense"], attention_out.dense.weight)
            attention.value.weight.div_(s_out[:, None])
            attention.value.bias.div_(s_out)
            attention_out.dense.weight.mul_(s_out[None, :])
            layer.attention.self = ScaledSelfAttention(attention, s_qkv)
            s_up = factor(amax[prefix + "intermediate.dense"], layer.intermediate.dense.weight)
            layer.intermediate.dense = Scaled(layer.intermediate.dense, s_up)
            s_down = factor(amax[prefix + "output.dense"], layer.output.dense.weight)
            layer.output.dense = Scaled(layer.output.dense, s_down)


def build_int8_model(model_dir: Path, out_dir: Path, texts: Sequence[str] | None = None) -> Path:
    """Export, smooth and quantise the model into ``out_dir/model.onnx`` (written to a sibling folder first, then
    renamed: a crash never leaves a half-built model behind). Returns the model path."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import AutoModel, AutoTokenizer

    started = time.perf_counter()
    with first_build_wins(out_dir, "model.onnx") as staging:
        # eager attention: a plain MatMul/Softmax graph that onnxruntime fuses at session load
        bert = AutoModel.from_pretrained(str(model_dir), attn_implementation="eager").eval()
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        calibration = list(texts) if texts is not None else calibration_texts()
        _smoothquant(bert, tokenizer, calibration, SMOOTHQUANT_ALPHA)
        ids = torch.tensor([[101, 7592, 2088, 102, 0], [101, 7592, 2088, 2182, 102]])
        fp32 = staging / "fp32.onnx"
        with torch.no_grad():
            torch.onnx.export(
                _export_module(bert), (ids, (ids != 0).long()), str(fp32),
                input_names=["input_ids", "attention_mask"], output_names=["embeddings"],
                dynamic_axes={"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"},
                              "embeddings": {0: "batch"}},
                opset_version=17, do_constant_folding=True, dynamo=False,  # the dynamo exporter needs onnxscript
            )  # fmt: skip
        quantize_dynamic(
            str(fp32), str(staging / "model.onnx"), op_types_to_quantize=["MatMul"], per_channel=True,
            reduce_range=False, weight_type=QuantType.QInt8, nodes_to_exclude=_fp32_nodes(fp32),
        )  # fmt: skip
        fp32.unlink()
        shutil.copy(model_dir / "tokenizer.json", staging / "tokenizer.json")
        (staging / "build.json").write_text(
            json.dumps(
                {
                    "recipe": RECIPE,
                    "calibration_texts": len(calibration),
                    "build_seconds": round(time.perf_counter() - started, 1),
                },
                indent=2,
            )  # fmt: skip
        )
    return out_dir / "model.onnx"


def _fp32_nodes(path: Path) -> list[str]:
    """MatMuls left in fp32 (see ``FP32_LAYERS``)."""
    import onnx

    names = [node.name for node in onnx.load(str(path)).graph.node if node.op_type == "MatMul"]
    return [name for name in names if any(f"layer.{i}/output/dense/" in name for i in FP32_LAYERS)]


def encoder_folder(cache_dir: Path) -> Path:
    """Where the built model of this recipe lives under a cache folder."""
    return Path(cache_dir) / "encoders" / RECIPE


class OnnxInt8Encoder:
    """The int8 ONNX model on onnxruntime; builds it into ``cache_dir`` on first use."""

    def __init__(self, cache_dir: Path, threads: int | None = None, model_dir: Path | None = None):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        folder = self.folder = encoder_folder(cache_dir)
        model = folder / "model.onnx"
        if not model.exists():
            build_int8_model(model_dir or bundled_model_path(), folder)
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        # tokenizer.json ships truncation at 128 and fixed padding to 128: use the model's 256 and pad per batch
        self.tokenizer.enable_truncation(max_length=MAX_TOKENS)
        self.tokenizer.no_padding()
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # batches run concurrently, one thread each: better use of 2 cores than 2 intra-op threads on small matrices
        self.workers = max(1, threads or os.cpu_count() or 1)
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        try:
            self.session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own exception types for unreadable models
            raise OnnxBuildError(
                f"cannot load the ONNX text encoder {model}: {error}; delete {folder} to rebuild it"
            ) from error
        self.name = encoder_name(f"onnx-int8:{RECIPE}")
        self.dim = EMBEDDING_DIM

    def _run(self, encodings: Sequence[Any]) -> np.ndarray:
        width = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(encodings), width), dtype=np.int64)
        mask = np.zeros((len(encodings), width), dtype=np.int64)
        for row, encoding in enumerate(encodings):
            ids[row, : len(encoding.ids)] = encoding.ids
            mask[row, : len(encoding.ids)] = 1
        return np.asarray(self.session.run(None, {"input_ids": ids, "attention_mask": mask})[0])

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        if not len(texts):
            return out
        encodings = self.tokenizer.encode_batch(list(texts), add_special_tokens=True)
        order = np.argsort([-len(e.ids) for e in encodings], kind="stable")  # similar lengths share a batch
        batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]

        def run(rows: np.ndarray) -> np.ndarray:
            return self._run([encodings[r] for r in rows])

        if self.workers == 1 or len(batches) == 1:
            results = [run(rows) for rows in batches]
        else:
            with ThreadPoolExecutor(self.workers) as pool:  # session.run releases the GIL
                results = list(pool.map(run, batches))
        for rows, vectors in zip(batches, results, strict=True):
            out[rows] = vectors
        return out
