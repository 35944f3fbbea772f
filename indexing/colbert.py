"""Token vectors from your own ColBERT checkpoint (PyLate format), loaded without PyLate.

A PyLate checkpoint is a sentence-transformers folder: the transformer at its root, one or
more ``pylate.models.Dense.Dense`` projections (``1_Dense/config.json`` and
``model.safetensors`` holding ``linear.weight``), and ``config_sentence_transformers.json``
with the ColBERT settings (``query_prefix``, ``document_prefix``, ``query_length``,
``document_length``, ``do_query_expansion``, ``attend_to_expansion_tokens``,
``skiplist_words``). PyLate itself pins older torch and transformers releases than spanrag,
so this module reads the format directly and encodes as PyLate does:

- documents: ``[CLS] [D] pieces… [SEP]``, projected and normalized, padding and skiplist
  (punctuation) tokens dropped; a text longer than ``document_length`` is cut into windows,
  each with its own ``[CLS] [D] … [SEP]``, so no piece is lost;
- queries: ``[CLS] [Q] pieces… [SEP]`` padded with ``[MASK]`` to ``query_length`` (query
  expansion), every position kept.

Set ``SPANRAG_TOKEN_MODEL=/path/to/checkpoint`` (with ``SPANRAG_TOKEN_CODEC``); dense
vectors still come from ``SPANRAG_EMBEDDING_MODEL``.

    >>> encoder = ColbertTokenEncoder("/models/answerai-colbert-small-v1")       # doctest: +SKIP
    >>> encoder.encode_query_tokens("what is late interaction?").shape            # doctest: +SKIP
    (32, 96)
"""

from __future__ import annotations

import importlib
import json
import string
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from indexing.embed import ModelNotFound

DEFAULTS = {
    "query_prefix": "[Q] ",
    "document_prefix": "[D] ",
    "query_length": 32,
    "document_length": 180,
    "do_query_expansion": True,
    "attend_to_expansion_tokens": False,
}


class NotAColbertCheckpoint(ModelNotFound):
    pass


def is_pylate_checkpoint(path: str | Path) -> bool:
    """True for a folder whose modules.json names a PyLate Dense projection."""
    modules = Path(path) / "modules.json"
    if not modules.is_file():
        return False
    try:
        return any("pylate" in m.get("type", "") for m in json.loads(modules.read_text()))
    except (ValueError, AttributeError):
        return False


def _activation(name: str):
    import torch

    module_name, _, class_name = name.rpartition(".")
    if not module_name.startswith("torch."):
        raise NotAColbertCheckpoint(f"untrusted activation function {name!r} in a Dense layer")
    return getattr(importlib.import_module(module_name), class_name)() if module_name else torch.nn.Identity()


def _load_dense(folder: Path):
    import torch
    from safetensors.torch import load_file

    config = json.loads((folder / "config.json").read_text())
    if config.get("use_residual"):
        raise NotAColbertCheckpoint(f"{folder}: residual Dense layers are not supported")
    linear = torch.nn.Linear(config["in_features"], config["out_features"], bias=config.get("bias", True))
    weights_file = folder / "model.safetensors"
    state = (
        load_file(weights_file)
        if weights_file.exists()
        else torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    )
    linear.load_state_dict({k.removeprefix("linear."): v for k, v in state.items()})
    activation = _activation(config.get("activation_function", "torch.nn.modules.linear.Identity"))
    return torch.nn.Sequential(linear, activation)


class ColbertTokenEncoder:
    """Query and document token vectors from a PyLate-format ColBERT checkpoint.

    Construction only checks the folder; the model loads on first use, so deletes and
    unchanged re-ingests never pay for it."""

    def __init__(self, path: str | Path, device: str = "auto", batch_size: int = 16):
        self.path = Path(path)
        if not is_pylate_checkpoint(self.path):
            raise NotAColbertCheckpoint(
                f"{self.path} is not a ColBERT checkpoint in PyLate format"
                " (no modules.json naming a pylate Dense layer)"
            )
        self.name = f"colbert:{self.path.resolve()}"
        self.device = device
        self.batch_size = batch_size
        self.config: dict[str, Any] = dict(DEFAULTS)  # and the checkpoint's JSON config
        st_config = self.path / "config_sentence_transformers.json"
        if st_config.exists():
            saved = json.loads(st_config.read_text())
            self.config.update({k: v for k, v in saved.items() if k in DEFAULTS or k == "skiplist_words"})

    @cached_property
    def _model(self):
        from transformers import AutoModel, AutoTokenizer

        from indexing.embed import pick_device

        target = pick_device(self.device)
        modules = json.loads((self.path / "modules.json").read_text())
        transformer = AutoModel.from_pretrained(self.path).to(target).eval()
        tokenizer = AutoTokenizer.from_pretrained(self.path)
        projections = [
            _load_dense(self.path / m["path"]).to(target).eval() for m in modules if "Dense" in m.get("type", "")
        ]
        return transformer, tokenizer, projections

    @property
    def transformer(self):
        return self._model[0]

    @property
    def tokenizer(self):
        return self._model[1]

    @property
    def projections(self):
        return self._model[2]

    @cached_property
    def _special(self) -> tuple[int | None, int | None, set[int]]:
        skip = self.config.get("skiplist_words")
        skip = list(string.punctuation) if skip is None else skip
        skip_ids = {i for w in skip for i in self.tokenizer(w, add_special_tokens=False)["input_ids"][:1]}
        return (
            self._prefix_id(self.config["query_prefix"]),
            self._prefix_id(self.config["document_prefix"]),
            skip_ids,
        )

    @property
    def query_prefix_id(self) -> int | None:
        return self._special[0]

    @property
    def document_prefix_id(self) -> int | None:
        return self._special[1]

    @property
    def skip_ids(self) -> set[int]:
        return self._special[2]

    def _prefix_id(self, prefix: str) -> int | None:
        if not prefix:
            return None
        token_id = self.tokenizer.convert_tokens_to_ids(prefix.strip())
        if token_id is None or token_id == self.tokenizer.unk_token_id:
            ids = self.tokenizer(prefix, add_special_tokens=False)["input_ids"]
            if len(ids) != 1:
                raise NotAColbertCheckpoint(f"prefix {prefix!r} is not one token of the checkpoint's tokenizer")
            token_id = ids[0]
        return token_id

    @property
    def dim(self) -> int:
        return self.projections[-1][0].out_features if self.projections else self.transformer.config.hidden_size

    def _forward(self, batch: list[list[int]], attention: list[list[int]]) -> np.ndarray:
        import torch

        device = next(self.transformer.parameters()).device
        with torch.inference_mode():
            ids = torch.tensor(batch, device=device)
            mask = torch.tensor(attention, device=device)
            hidden = self.transformer(input_ids=ids, attention_mask=mask).last_hidden_state
            for projection in self.projections:
                hidden = projection(hidden)
            return torch.nn.functional.normalize(hidden.float(), dim=-1).cpu().numpy()

    def _wrap(self, pieces: list[int], prefix_id: int | None) -> list[int]:
        head = [self.tokenizer.cls_token_id] + ([prefix_id] if prefix_id is not None else [])
        return head + pieces + [self.tokenizer.sep_token_id]

    def encode_tokens(self, texts: list[str]) -> list[np.ndarray]:
        """Document token vectors, float32 [n, dim] per text (skiplist and padding dropped)."""
        overhead = 2 + (self.document_prefix_id is not None)
        window = max(1, int(self.config["document_length"]) - overhead)
        pieces = self.tokenizer(texts, add_special_tokens=False, truncation=False)["input_ids"]
        windows, owner = [], []
        for i, ids in enumerate(pieces):
            for start in range(0, max(len(ids), 1), window):
                windows.append(self._wrap(ids[start : start + window], self.document_prefix_id))
                owner.append(i)
        parts: list[list[np.ndarray]] = [[] for _ in texts]
        for b in range(0, len(windows), self.batch_size):
            batch = windows[b : b + self.batch_size]
            width = max(len(w) for w in batch)
            pad = self.tokenizer.pad_token_id
            vectors = self._forward(
                [w + [pad] * (width - len(w)) for w in batch],
                [[1] * len(w) + [0] * (width - len(w)) for w in batch],
            )
            for row, w in enumerate(batch):
                keep = [j for j, t in enumerate(w) if t not in self.skip_ids]
                parts[owner[b + row]].append(vectors[row, keep])
        return [np.concatenate(p).astype(np.float32) for p in parts]

    def token_offsets(self, texts: list[str]) -> list[list[tuple[int, int] | None]]:
        """Character range of each vector :meth:`encode_tokens` keeps, in the same windows and
        order ([CLS], the [D] marker and [SEP] of each window stand for no text: None)."""
        overhead = 2 + (self.document_prefix_id is not None)
        window = max(1, int(self.config["document_length"]) - overhead)
        encoded = self.tokenizer(texts, add_special_tokens=False, truncation=False, return_offsets_mapping=True)
        out: list[list[tuple[int, int] | None]] = []
        for ids, offsets in zip(encoded["input_ids"], encoded["offset_mapping"]):
            kept: list[tuple[int, int] | None] = []
            for start in range(0, max(len(ids), 1), window):
                wrapped = self._wrap(ids[start : start + window], self.document_prefix_id)
                spans: list[tuple[int, int] | None] = [None] * (len(wrapped) - len(ids[start : start + window]) - 1)
                spans += [(int(a), int(b)) for a, b in offsets[start : start + window]] + [None]
                kept.extend(span for token, span in zip(wrapped, spans) if token not in self.skip_ids)
            out.append(kept)
        return out

    def encode_query_tokens(self, text: str) -> np.ndarray:
        """Query token vectors, float32 [query_length, dim] with query expansion."""
        length = int(self.config["query_length"])
        overhead = 2 + (self.query_prefix_id is not None)
        ids = self.tokenizer(text, add_special_tokens=False, truncation=False)["input_ids"][: length - overhead]
        wrapped = self._wrap(ids, self.query_prefix_id)
        attention = [1] * len(wrapped)
        if self.config["do_query_expansion"] and len(wrapped) < length:
            expansion = length - len(wrapped)
            wrapped += [self.tokenizer.mask_token_id] * expansion
            attention += [1 if self.config["attend_to_expansion_tokens"] else 0] * expansion
        return self._forward([wrapped], [attention])[0]
