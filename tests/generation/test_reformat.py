"""The reformat entry parser: every way a generator writes "Topic: … Content: …" is one entry, one form a test."""

from synpro.generation.operations.reformat import REFORMAT, parse_entries

ENTRIES = [("Lists", "Lists are mutable sequences."), ("Tuples", "Tuples are immutable and hashable.")]


def test_two_line_entries():
    body = "Topic: Lists\nContent: Lists are mutable sequences.\n\nTopic: Tuples\nContent: Tuples are immutable and hashable."
    assert parse_entries(body) == ENTRIES


def test_one_line_entries():
    body = ("Topic: Lists Content: Lists are mutable sequences.\n"
            "Topic: Tuples Content: Tuples are immutable and hashable.")
    assert parse_entries(body) == ENTRIES


def test_one_line_entries_with_a_separator_or_emphasis():
    body = ("**Topic:** Lists - **Content:** Lists are mutable sequences.\n"
            "Topic: Tuples | Content: Tuples are immutable and hashable.")
    assert parse_entries(body) == ENTRIES


def test_numbered_entries_on_one_line_and_on_two():
    body = ("1. Topic: Lists Content: Lists are mutable sequences.\n"
            "2) Topic: Tuples\n   Content: Tuples are immutable and hashable.")
    assert parse_entries(body) == ENTRIES


def test_bulleted_entries_on_one_line_and_on_two():
    body = ("- Topic: Lists Content: Lists are mutable sequences.\n"
            "• Topic: Tuples\n  - Content: Tuples are immutable and hashable.")
    assert parse_entries(body) == ENTRIES


def test_a_content_word_inside_a_topic_is_not_a_label():
    assert parse_entries("Topic: Discontent: a word\nContent: It has content: inside.") == [
        ("Discontent: a word", "It has content: inside.")]


def test_a_one_line_answer_keeps_its_entries_through_extraction():
    raw = "Here are the entries:\nTopic: Lists Content: Lists are mutable sequences.\n"
    assert REFORMAT.extract(raw).text == "Topic: Lists\nContent: Lists are mutable sequences."
