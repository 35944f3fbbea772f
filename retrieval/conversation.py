"""What a chat turn searches with.

A follow-up question ("How many moons does it have?") names its subject only in an earlier
turn, so searching with it alone finds the wrong spans. Without a model to rewrite it, the
turn is searched together with the user's previous turns: the query-concatenation baseline
of conversational search (TREC CAsT), applied only when the turn looks like a follow-up, so
a question that stands alone is searched as written.

    >>> history = [{"role": "user", "content": "Tell me about Mars."},
    ...            {"role": "assistant", "content": "Mars is the fourth planet [1]."}]
    >>> retrieval_question("How many moons does it have?", history)
    'How many moons does it have? Tell me about Mars.'
    >>> retrieval_question("How many moons does Jupiter have?", history)
    'How many moons does Jupiter have?'
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

# Words that point back to something named earlier.
REFERRING_WORDS = frozenset(
    "it its it's itself they them their theirs themselves this that these those "
    "he him his she her hers there former latter same above".split()
)
SHORT_TURN_WORDS = 3  # "And Venus?", "Why?", "What about 2019?" lean on the turn before
WORD = re.compile(r"[a-z']+")


def is_follow_up(question: str) -> bool:
    """A turn that refers back (a pronoun or demonstrative) or is too short to stand alone."""
    words = WORD.findall(question.lower())
    return len(words) <= SHORT_TURN_WORDS or any(w in REFERRING_WORDS for w in words)


def retrieval_question(question: str, history: Sequence[Mapping[str, str]] | None, max_turns: int = 2) -> str:
    """``question`` as it stands, or, for a follow-up, followed by the user's last
    ``max_turns`` earlier turns, most recent first. The question leads so that an encoder
    that truncates long input keeps it; assistant turns are not searched."""
    if not history or max_turns < 1 or not is_follow_up(question):
        return question
    earlier = [t["content"].strip() for t in history if t.get("role") == "user" and t.get("content", "").strip()]
    if not earlier:
        return question
    return " ".join([question.strip(), *reversed(earlier[-max_turns:])])
