"""The data path: corpus -> cleaned text -> tokenized, chunked, cached sequences -> length-grouped micro-batches."""

from kd_plugin.data.batching import LengthGroupedBatchSampler, collate_batch
from kd_plugin.data.cleaning import CleaningStats, clean_documents, normalize_text, survey_corpus
from kd_plugin.data.corpus import load_corpus
from kd_plugin.data.corpus_sources import CORPORA, DEFAULT_CORPUS
from kd_plugin.data.tokenized import (
    CHUNK_FEATURES,
    TokenizedCorpus,
    build_tokenized_corpus,
    special_token_ids,
    tokenizer_fingerprint,
)

__all__ = [
    "CHUNK_FEATURES",
    "CORPORA",
    "DEFAULT_CORPUS",
    "CleaningStats",
    "LengthGroupedBatchSampler",
    "TokenizedCorpus",
    "build_tokenized_corpus",
    "clean_documents",
    "collate_batch",
    "load_corpus",
    "normalize_text",
    "survey_corpus",
    "special_token_ids",
    "tokenizer_fingerprint",
]
