"""What a chat turn searches with: a question that stands alone as written; a follow-up with
the user's earlier turns."""

from __future__ import annotations

import pytest

from retrieval.conversation import is_follow_up, retrieval_question

HISTORY = [
    {"role": "user", "content": "Which planets are rocky?"},
    {"role": "assistant", "content": "Mercury, Venus, Earth and Mars [1]."},
    {"role": "user", "content": "Tell me about Mars."},
    {"role": "assistant", "content": "Mars is the fourth planet [2]."},
]


@pytest.mark.parametrize(
    "question",
    [
        "How many moons does it have?",
        "What is its orbital period?",
        "Why is that?",
        "And Venus?",
        "Why?",
        "How do these compare with Earth?",
    ],
)
def test_turns_that_refer_back_or_are_too_short_to_stand_alone_are_follow_ups(question):
    assert is_follow_up(question)


@pytest.mark.parametrize(
    "question",
    [
        "How many moons does Jupiter have?",
        "Which planet has the thickest atmosphere?",
        "How should green tea be brewed?",
    ],
)
def test_questions_that_name_their_subject_stand_alone(question):
    assert not is_follow_up(question)
    assert retrieval_question(question, HISTORY) == question


def test_a_follow_up_is_searched_first_then_the_earlier_user_turns_most_recent_first():
    assert retrieval_question("How many moons does it have?", HISTORY) == (
        "How many moons does it have? Tell me about Mars. Which planets are rocky?"
    )
    assert retrieval_question("How many moons does it have?", HISTORY, max_turns=1) == (
        "How many moons does it have? Tell me about Mars."
    )


def test_without_earlier_user_turns_or_with_none_allowed_the_question_is_searched_alone():
    assert retrieval_question("Why?", None) == "Why?"
    assert retrieval_question("Why?", [{"role": "assistant", "content": "Because [1]."}]) == "Why?"
    assert retrieval_question("Why?", HISTORY, max_turns=0) == "Why?"
