"""Model names a client may send, and what each means: the operator's alias map and the 404 for the rest.

The vocabulary (:func:`resolve_model`), checked in this order, case-insensitively:

==========================  =========================================================================
``auto``, ``""``, missing   the router decides
a group (``code``)          that group first (see :mod:`torchrouter_core.identity`)
``<agent>:<group|auto>``    an agent and its group (``webmaster:balanced``); any agent id is accepted,
                            listed in ``agents.yaml`` or not (an unlisted one is tiered by content, as an
                            unlisted ``X-Agent-Id`` is)
an alias (``gpt-4o``)       the alias's target, from ``aliases.yaml`` (``auto`` or a group)
anything else               :class:`UnknownModel` (404 ``model_not_found``), naming what is valid and,
                            when one is close, suggesting it: ``webmaster:balance`` -> did you mean
                            ``webmaster:balanced``; ``webmaster`` (an agent's name alone) -> did you mean
                            ``webmaster:auto``; ``agent:no-such-group`` -> the groups
==========================  =========================================================================

Why an agent's name alone is not accepted as ``agent:auto``: a model field that silently means an agent
for some names and an unknown model for others cannot be checked by the caller; the 404 tells the exact
spelling once.

The file (``classifier/aliases.yaml``, ``TORCHROUTER_ALIASES_PATH``) is hot-reloaded with the
capability matrix's :class:`~capability_matrix.ReloadingFile`: an invalid edit is logged and the last good
map stays in force. Pure apart from :class:`AliasesStore`.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

import yaml

from capability_matrix import ReloadingFile
from torchrouter_core.identity import AUTO_MODEL, GROUPS, MODEL_MAX_LEN
from torchrouter_core.strict_yaml import describe_yaml_error, safe_load_strict

ALIAS_TARGETS: Final = frozenset(GROUPS | {AUTO_MODEL})


class AliasError(ValueError):
    """An aliases file the classifier refuses; the message names the entry."""


class UnknownModel(ValueError):
    """A model name that is none of the valid kinds; ``valid`` lists them, ``suggestion`` may help."""

    def __init__(self, model: str, valid: tuple[str, ...], suggestion: str | None) -> None:
        hint = f" Did you mean {suggestion!r}?" if suggestion else ""
        super().__init__(
            f"The model {model[:80]!r} does not exist.{hint} Valid models: {', '.join(valid)}, "
            "or '<agent>:<group>' (e.g. 'webmaster:balanced', 'webmaster:auto')."
        )
        self.model = model
        self.valid = valid
        self.suggestion = suggestion


@dataclass(frozen=True)
class AliasMap:
    """Alias name (lower-case) -> target (``auto`` or a group)."""

    aliases: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "aliases", MappingProxyType(dict(self.aliases)))

    def target(self, name: str) -> str | None:
        return self.aliases.get(name.strip().lower())

    def model_ids(self) -> tuple[str, ...]:
        """Every name ``GET /v1/models`` lists: ``auto``, the groups, then the aliases."""
        return (AUTO_MODEL, *sorted(GROUPS), *sorted(self.aliases))


EMPTY_ALIASES: Final = AliasMap()


def parse_aliases(doc: object) -> AliasMap:
    """``{"aliases": {name: target}}`` -> :class:`AliasMap`; raises :class:`AliasError` naming the entry."""
    if doc is None:
        return EMPTY_ALIASES
    if not isinstance(doc, Mapping):
        raise AliasError("aliases file: expected a mapping with an 'aliases' key")
    unknown = sorted(str(k) for k in doc if k != "aliases")
    if unknown:
        raise AliasError(f"aliases file: unknown top-level key(s) {', '.join(unknown)}")
    raw = doc.get("aliases") or {}
    if not isinstance(raw, Mapping):
        raise AliasError("aliases: expected a mapping of name -> target")
    out: dict[str, str] = {}
    for key, value in raw.items():
        name = str(key).strip().lower()
        if not name or len(name) > MODEL_MAX_LEN or not name.isprintable():
            raise AliasError(f"aliases.{key}: a name must be 1..{MODEL_MAX_LEN} printable characters")
        if name in ALIAS_TARGETS:
            raise AliasError(f"aliases.{key}: {name!r} is already a model name; it cannot be an alias")
        if ":" in name:
            raise AliasError(f"aliases.{key}: a name with ':' would read as '<agent>:<group>'")
        target = str(value).strip().lower() if isinstance(value, str) else None
        if target not in ALIAS_TARGETS:
            raise AliasError(
                f"aliases.{key}: target {value!r} must be one of {', '.join(sorted(ALIAS_TARGETS))}"
            )
        if name in out:
            raise AliasError(f"aliases.{key}: listed twice (names are case-insensitive)")
        out[name] = target
    return AliasMap(out)


def parse_aliases_yaml(text: str) -> AliasMap:
    try:
        doc = safe_load_strict(text)
    except yaml.YAMLError as exc:
        raise AliasError(f"aliases file is not valid YAML: {describe_yaml_error(exc)}") from None
    return parse_aliases(doc)


def _suggest(model: str, aliases: AliasMap, agents: Iterable[str]) -> str | None:
    lowered = model.strip().lower()
    agent_part, colon, group_part = lowered.rpartition(":")
    if colon and agent_part:
        close = difflib.get_close_matches(group_part, sorted(ALIAS_TARGETS), n=1, cutoff=0.6)
        return f"{agent_part}:{close[0]}" if close else None
    if lowered in {a.lower() for a in agents}:
        return f"{lowered}:auto"
    close = difflib.get_close_matches(lowered, aliases.model_ids(), n=1, cutoff=0.75)
    return close[0] if close else None


def resolve_model(model: object, aliases: AliasMap, agents: Iterable[str] = ()) -> object:
    """The ``model`` value identity should see: an alias replaced by its target, anything valid as it is.

    ``agents`` (the directory's agent ids) only shapes the suggestion. Raises :class:`UnknownModel` for a
    string that is no valid kind (see the module docstring); a non-string is left for identity to refuse."""
    if not isinstance(model, str):
        return model
    lowered = model.strip().lower()
    if lowered in ("", *ALIAS_TARGETS):
        return model
    target = aliases.target(lowered)
    if target is not None:
        return target
    agent_part, colon, group_part = lowered.rpartition(":")
    if colon and agent_part and group_part in ALIAS_TARGETS | {""}:
        return model  # an agent and its group; identity checks the agent id
    raise UnknownModel(model.strip(), aliases.model_ids(), _suggest(model, aliases, agents))


class AliasesStore(ReloadingFile[AliasMap, ValueError]):
    """``aliases.yaml``, hot-reloaded; like ``agents.yaml``, a missing or invalid file fails startup."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        on_reload: Callable[[AliasMap], None] | None = None,
        on_reject: Callable[[ValueError], None] | None = None,
    ) -> None:
        shown = os.fspath(path)
        super().__init__(
            shown,
            what="model aliases",
            parse=lambda data: parse_aliases_yaml(data.decode("utf-8")),
            rejects=(AliasError, UnicodeDecodeError),
            unreadable=lambda exc: AliasError(f"{shown}: cannot read it: {exc.strerror or exc}"),
            describe=lambda aliases: f"{len(aliases.aliases)} aliases",
            on_reload=on_reload,
            on_reject=on_reject,
        )
