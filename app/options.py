"""Per-request retrieval options shared by the native and the OpenAI-compatible endpoints,
and the text type every request string goes through."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field


def encodable_text(value: str) -> str:
    """Refuse strings that cannot be stored or embedded: JSON may carry a lone UTF-16
    surrogate (``"\\ud800"``), which no UTF-8 writer (SQLite, the tokenizer, a log line) accepts."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"contains an unpaired surrogate at character {exc.start}") from None
    if "\x00" in value:
        raise ValueError(f"contains a NUL character at character {value.index(chr(0))}")
    return value


Text = Annotated[str, AfterValidator(encodable_text)]
"""A request string: valid Unicode, no NUL."""


class RetrievalOptions(BaseModel):
    """Knobs a request may override on top of the pipeline and the server's settings."""

    model_config = ConfigDict(allow_inf_nan=False)  # JSON's NaN and Infinity are 422s, not 500s

    top_k: int | None = Field(None, ge=1, le=200)
    budget_tokens: int | None = Field(None, ge=1, le=100_000, description="selection budget")
    compression: Literal["off", "sentence", "sentence+token"] | None = Field(
        None, description="prune the selected context before the generator"
    )
    compress_budget_tokens: int | None = Field(None, ge=1, le=100_000, description="compression target in tokens")
    compress_ratio: float | None = Field(None, gt=0, lt=1, description="compression target as a share of the selected tokens")

    def overrides(self) -> dict[str, Any]:
        names = ("top_k", "budget_tokens", "compression", "compress_budget_tokens", "compress_ratio")
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}
