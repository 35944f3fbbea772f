"""Per-request retrieval options shared by the native and the OpenAI-compatible endpoints."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class RetrievalOptions(BaseModel):
    """Knobs a request may override on top of the pipeline and the server's settings."""

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
