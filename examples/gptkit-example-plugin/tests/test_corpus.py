"""The us-documents corpus: gptkit's corpus contract and its package data."""

from __future__ import annotations

import pytest

from gptkit.errors import OptionError
from gptkit.testing import check_corpus


def test_keeps_the_corpus_contract(registry):
    docs = check_corpus(registry.corpora.create("us-documents"))
    assert len(docs) == 3
    assert "We hold these truths to be self-evident" in docs[0]
    assert docs[1].rstrip().endswith("shall not perish from the earth.")


def test_one_document_by_option(registry):
    corpus = registry.corpora.create("us-documents", only="second-inaugural")
    [doc] = check_corpus(corpus)
    assert "With malice toward none, with charity for all" in doc


def test_an_unknown_document_lists_the_valid_ones(registry):
    with pytest.raises(OptionError, match="declaration, gettysburg, second-inaugural"):
        registry.corpora.create("us-documents", only="preamble")
