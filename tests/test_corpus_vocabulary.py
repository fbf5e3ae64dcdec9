"""Vocabulary rules of the synthetic corpus."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.data.dataset import COMMAND_WORDS
from training.data.vocabulary import COMMAND_WORD_RELATIVES, build_vocabulary, excluded_reason, read_word_list


@pytest.fixture(scope="module")
def default_vocabulary():  # type: ignore[no-untyped-def]
    return build_vocabulary()


def test_default_vocabulary_has_1000_clean_words(default_vocabulary) -> None:  # type: ignore[no-untyped-def]
    words = default_vocabulary.words
    assert len(words) == len(set(words)) == 1000
    assert not set(words) & COMMAND_WORDS
    assert not set(words) & COMMAND_WORD_RELATIVES
    assert all(
        len(word) >= 2 and word.isascii() and word.isalpha() and word == word.lower() for word in words
    )
    # The frequent command words and one-letter words were candidates, and were excluded for their reason.
    excluded = default_vocabulary.excluded
    assert excluded["no"] == "command word" and excluded["up"] == "command word"
    assert excluded["a"] == "one letter" and excluded["i"] == "one letter"
    assert excluded["it's"] == "not alphabetic"
    assert excluded["know"] == "sounds like or contains a command word"


def test_exclusion_list_from_arguments_and_file(tmp_path: Path) -> None:
    listing = tmp_path / "exclude.txt"
    listing.write_text("# words a client asked us to leave out\nThe\n\nabout  # trailing comment\n")
    vocabulary = build_vocabulary(50, exclude=["with"], exclude_file=listing)
    assert len(vocabulary.words) == 50
    assert not {"the", "about", "with"} & set(vocabulary.words)
    assert vocabulary.excluded["the"] == vocabulary.excluded["with"] == "user exclusion list"


def test_given_candidates_and_too_few_words() -> None:
    vocabulary = build_vocabulary(2, candidates=["Go", "x", "apple", "apple", "co-op", "river", "garden"])
    assert vocabulary.words == ("apple", "river")
    with pytest.raises(ValueError, match="only 3 of the 4 words"):
        build_vocabulary(4, candidates=["apple", "river", "garden", "stop"])


def test_excluded_reason() -> None:
    assert excluded_reason("apple") is None
    assert excluded_reason("Stop") == "command word"
    assert excluded_reason("stopped") == "sounds like or contains a command word"
    assert excluded_reason("apple", frozenset({"apple"})) == "user exclusion list"
    assert excluded_reason("42") == "not alphabetic"


def test_word_list_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such word list"):
        read_word_list(tmp_path / "missing.txt")
    bad = tmp_path / "bad.txt"
    bad.write_text("apple\ntwo words\n")
    with pytest.raises(ValueError, match=r"bad\.txt:2: expected one word per line"):
        read_word_list(bad)
