"""Server-sent events, as the streaming endpoints write them.

>>> event("delta", {"text": "Hi"})
'event: delta\\ndata: {"text": "Hi"}\\n\\n'
>>> data("[DONE]")
'data: [DONE]\\n\\n'
"""

from __future__ import annotations

import json
from typing import Any

MEDIA_TYPE = "text/event-stream"
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # no caching, no proxy buffering


def event(name: str, payload: Any) -> str:
    """A named event with a JSON payload (spanrag's native query stream)."""
    return f"event: {name}\ndata: {json.dumps(payload)}\n\n"


def data(payload: Any) -> str:
    """An unnamed event (OpenAI's stream format): JSON, or a literal string as is."""
    return f"data: {payload if isinstance(payload, str) else json.dumps(payload)}\n\n"
