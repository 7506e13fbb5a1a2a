"""One declaration per setting: its name, default, one-line doc and check, and everything derived from them.

A block's settings are the fields of its frozen dataclass, each declared with :func:`setting`::

    @dataclass(frozen=True)
    class DataSettings:
        max_seq_length: int = setting(128, "longer documents are split into several sequences, never dropped",
                                      partial(values.integer, minimum=8, maximum=512))

The field's name is the key (``data.max_seq_length``), its annotation the parsed type, and :func:`setting` holds
the default the user sees (``print_config``), the one-line doc (``print_config``'s ``# comment``, the README's
configuration table) and the check (one of :mod:`kd_plugin.validation`'s reads, with its arguments: the value's
type and range, and the one-line ``ConfigError`` naming the key). :class:`Block` collects them, and from the
blocks come the Sacred defaults (:mod:`kd_plugin.config.sacred_defaults`), the parse (``Block.parse`` in each
``from_dict``), the docs and the README rows. Settings whose parse lives elsewhere (``masking.*`` in
:mod:`kd_plugin.masking`, the loss mixture in :mod:`kd_plugin.losses`) are declared as :class:`Setting` records
with the same fields.

A setting that several experiments share is declared once and reused with the other experiment's default:
``OPTIM.reused(eps=1e-6)`` (records for :meth:`Block.from_records`), ``OPTIM["weight_decay"].as_field(default=0.01)``
(a field of another block's dataclass). A default that is only known when a config is made (a folder an environment
variable may move) is a :class:`Computed`.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kd_plugin.errors import ConfigError
from kd_plugin.runtime.paths import PROJECT_ROOT

Check = Callable[[Any, str], Any]  # (value as given, the user's key) -> parsed value, or ConfigError naming the key
_METADATA = "kd_plugin.setting"


@dataclass(frozen=True)
class Computed:
    """A default read each time a config is made, not when the module is imported (e.g. a folder that an
    environment variable may move); ``shown`` stands for it in the docs."""

    read: Callable[[], Any]
    shown: str


@dataclass(frozen=True)
class Setting:
    """One key: what it defaults to, what it means (one line), and how its value is read and checked."""

    default: Any  # as the user sees and types it (a plain str / number / list / dict / None), or a Computed
    doc: str  # one line: print_config's comment and the README table's text
    check: Check | None = None  # None: checked where its value is used (named in the block's doc)
    name: str = ""  # the key inside its block (a dataclass field's name, filled in by Block.of)
    # True: changes neither what is trained nor what is measured, only where outputs go, what is shown or how
    # fast (the analysis averages runs as seeds only when every other setting is equal: analysis.seed_groups)
    bookkeeping: bool = False

    def parse(self, value: Any, key: str) -> Any:
        return value if self.check is None else self.check(value, key)

    def initial(self) -> Any:
        """The default, as a config made now holds it (a fresh copy)."""
        return self.default.read() if isinstance(self.default, Computed) else copy.deepcopy(self.default)

    def as_field(self, **changes: Any) -> Any:
        """This setting as a dataclass field of another block (``changes``: e.g. that block's own default)."""
        return dataclasses.field(metadata={_METADATA: dataclasses.replace(self, **changes)})

    @property
    def allowed(self) -> str:
        """What the check accepts, in its own words (the ``allowed:`` part of the error it raises)."""
        if self.check is None:
            return ""
        try:
            self.check(_Probe(), self.name)
        except ConfigError as err:
            return err.allowed or ""
        except (TypeError, ValueError):
            return ""
        return "any value"


class _Probe:
    """A value no check accepts: asking a check about it returns what it would allow."""

    def __repr__(self) -> str:
        return "<probe>"


def setting(default: Any, doc: str, check: Check | None = None, *, field_default: bool = False,
            bookkeeping: bool = False) -> Any:
    """A dataclass field declaring one setting (see the module docstring).

    field_default: also the dataclass's own default (for classes built directly in code, e.g. in tests).
    bookkeeping: the setting changes no trained weight and no measured number (see :class:`Setting`).
    """
    metadata = {_METADATA: Setting(default, doc, check, bookkeeping=bookkeeping)}
    if not field_default:
        return dataclasses.field(metadata=metadata)
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@dataclass(frozen=True)
class Block:
    """The settings under ``<name>.*`` (name ``""``: keys at the top level of the config)."""

    name: str
    doc: str  # one line: print_config's comment on the block, the README table's text for ``<name>.*``
    settings: tuple[Setting, ...]

    @classmethod
    def of(cls, name: str, doc: str, settings_class: type, *, bookkeeping: bool = False, **renamed: str) -> Block:
        """A block from a dataclass whose fields are declared with :func:`setting` (``renamed``: field -> key;
        ``bookkeeping``: every setting of the block is bookkeeping)."""
        declared = []
        for f in dataclasses.fields(settings_class):
            if _METADATA in f.metadata:
                declared_setting = f.metadata[_METADATA]
                declared.append(dataclasses.replace(declared_setting, name=renamed.get(f.name, f.name),
                                                    bookkeeping=bookkeeping or declared_setting.bookkeeping))
        return cls(name, doc, tuple(declared))

    @classmethod
    def from_records(cls, name: str, doc: str, **settings: Setting) -> Block:
        return cls(name, doc, tuple(dataclasses.replace(s, name=key) for key, s in settings.items()))

    def reused(self, *names: str, **defaults: Any) -> dict[str, Setting]:
        """These settings as records of another experiment's block: ``names`` as declared here, the keys of
        ``defaults`` with that experiment's default (same doc and check)."""
        shared = {name: self[name] for name in names}
        shared.update({name: dataclasses.replace(self[name], default=value) for name, value in defaults.items()})
        return shared

    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.settings)

    def key(self, name: str, prefix: str | None = None) -> str:
        """The key the user types: ``<block>.<name>``, or just ``<name>`` at the top level."""
        prefix = self.name if prefix is None else prefix
        return f"{prefix}.{name}" if prefix else name

    def __getitem__(self, name: str) -> Setting:
        for s in self.settings:
            if s.name == name:
                return s
        raise KeyError(name)

    def parse(self, given: Mapping[str, Any], prefix: str | None = None, keys: Mapping[str, str] | None = None
              ) -> dict[str, Any]:
        """Every setting read from ``given`` (a missing one: its default) through its check.

        prefix: another block name in the errors (a block shared by several experiments); keys: per-setting
        error keys instead.
        """
        keys = keys or {}
        return {s.name: s.parse(given[s.name] if s.name in given else s.initial(),
                                keys.get(s.name) or self.key(s.name, prefix))
                for s in self.settings}

    def defaults(self) -> dict[str, Any]:
        return {s.name: s.initial() for s in self.settings}

    def docs(self) -> dict[str, str]:
        """``{dotted key: doc}``, the block's own doc under its name."""
        docs = {self.name: self.doc} if self.name else {}
        docs.update({self.key(s.name): s.doc for s in self.settings})
        return docs


def nested_defaults(blocks: Iterable[Block]) -> dict[str, Any]:
    """The config as Sacred holds it: top-level keys, and one dict per named block."""
    config: dict[str, Any] = {}
    for block in blocks:
        target = config.setdefault(block.name, {}) if block.name else config
        duplicate = set(target) & set(block.names())
        if duplicate:
            raise ValueError(f"settings declared twice: {sorted(duplicate)}")
        target.update(block.defaults())
    return config


def flat_docs(blocks: Iterable[Block]) -> dict[str, str]:
    """Every key's doc; a block declared in parts (e.g. the recipe's ``data.*`` and the rest) joins their docs."""
    docs: dict[str, str] = {}
    for block in blocks:
        for key, doc in block.docs().items():
            docs[key] = f"{docs[key]}; {doc}" if key in docs else doc
    return docs


def declared_keys(blocks: Iterable[Block]) -> tuple[str, ...]:
    return tuple(block.key(s.name) for block in blocks for s in block.settings)


def bookkeeping_keys(blocks: Iterable[Block]) -> frozenset[str]:
    """The dotted keys of the settings that change no trained weight and no measured number."""
    return frozenset(block.key(s.name) for block in blocks for s in block.settings if s.bookkeeping)


def _code(value: Any) -> str:
    if isinstance(value, Computed):
        return value.shown.replace("|", "\\|")
    if isinstance(value, str) and value.startswith(f"{PROJECT_ROOT}/"):  # a folder of the checkout: as in the docs
        value = value[len(str(PROJECT_ROOT)) + 1:]
    try:
        text = json.dumps(value)
    except TypeError:
        text = repr(value)
    return f"`{text}`".replace("|", "\\|")


def table_rows(blocks: Iterable[Block]) -> list[str]:
    """The full reference table (markdown): one row per key with its default, what is allowed and its doc."""
    rows = ["| key | default | allowed | meaning |", "|---|---|---|---|"]
    for block in blocks:
        for s in block.settings:
            allowed, doc = (text.replace("|", "\\|") for text in (s.allowed, s.doc))
            rows.append(f"| `{block.key(s.name)}` | {_code(s.default)} | {allowed} | {doc} |")
    return rows


def uncovered(blocks: Iterable[Block], names: Iterable[str]) -> tuple[list[str], list[str]]:
    """(names that no declaration has, declared keys none of the names covers) for a table listing ``names``:
    a top-level key, ``<block>.*`` (the whole block) or ``<block>.<key>``."""
    blocks = tuple(blocks)
    keys = set(declared_keys(blocks))
    block_names = {b.name for b in blocks if b.name}
    names = set(names)
    unknown = sorted(n for n in names
                     if n not in keys and not (n.endswith(".*") and n[:-2] in block_names))
    covered = {k for k in keys if k in names or (k.partition(".")[2] and f"{k.partition('.')[0]}.*" in names)}
    return unknown, [k for k in declared_keys(blocks) if k not in covered]
