"""Turn a matrix document into a validated `Matrix`, or say everything that is wrong with it.

Exceptions:

    MatrixError(ValueError)   the document cannot become a Matrix; `.problems` holds every reason found,
                              one `Problem(profile, field, rule)` each, never only the first

This module owns the validation rules: the JSON Schema in `schema.json` (types, enums, ranges, unknown fields,
key form) and the cross-references a schema cannot express (a profile's key is `host_id/provider/model`; an
ollama profile's host is declared in `hosts`, shares its `api_base` and fits in its GPU memory less its
`gpu_overhead_gb`, which must leave some; every number is finite: JSON Schema's ranges let NaN through).
YAML syntax errors and duplicate keys (which YAML would otherwise resolve silently, last one wins) are
problems too.
"""

from __future__ import annotations

import difflib
import functools
import json
import math
from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from capability_matrix.model import (
    HardwareClass,
    Host,
    LockoutState,
    Matrix,
    Profile,
    Provider,
    WarmState,
    profile_key,
)
from torchrouter_core.strict_yaml import describe_yaml_error as describe_yaml_error
from torchrouter_core.strict_yaml import duplicate_key_message

try:  # libyaml parses the 2,000-profile benchmark matrix several times faster; fall back when absent
    from yaml import CSafeLoader as _BaseLoader
except ImportError:  # pragma: no cover - depends on how PyYAML was built
    from yaml import SafeLoader as _BaseLoader  # type: ignore[assignment]

SCHEMA_PATH = Path(__file__).with_name("schema.json")
DEFAULT_MATRIX_PATH = Path(__file__).with_name("matrix.yaml")

_MAX_RULE_CHARS = 240


@dataclass(frozen=True, slots=True)
class Problem:
    """One broken rule. `profile` is the profile key when the problem is inside a profile; `field` the field
    (or, outside profiles, the path such as `hosts["frodo-100.86.174.12"].num_parallel`)."""

    profile: str | None
    field: str | None
    rule: str

    def __str__(self) -> str:
        if self.profile is not None:
            where: str | None = f'profiles["{self.profile}"]' + (f".{self.field}" if self.field else "")
        else:
            where = self.field
        return f"{where}: {self.rule}" if where else self.rule


class MatrixError(ValueError):
    """The matrix was rejected. `problems` lists every reason; `str()` renders one line per problem."""

    def __init__(self, problems: Sequence[Problem], source: str | None = None) -> None:
        self.problems: tuple[Problem, ...] = tuple(problems)
        self.source = source
        super().__init__(self.problems)

    @classmethod
    def unreadable(cls, path: str | Path, exc: OSError) -> MatrixError:
        return cls([Problem(None, None, f"cannot read {path}: {exc.strerror or exc}")], str(path))

    def lines(self) -> list[str]:
        return [str(p) for p in self.problems]

    def __str__(self) -> str:
        n = len(self.problems)
        source = f" {self.source}" if self.source else ""
        head = f"capability matrix{source} rejected: {n} problem{'s' if n != 1 else ''}"
        return "\n  ".join([head, *self.lines()])


@functools.cache
def matrix_schema() -> Mapping[str, Any]:
    schema: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return schema


@functools.cache
def _validator() -> Draft202012Validator:
    # jsonschema resolves a $ref on every use; with the local refs inlined, validating a 2,000-profile matrix
    # takes about a third less time, and every message stays the same.
    schema = matrix_schema()
    return Draft202012Validator(_inline_refs(schema, schema.get("$defs", {})))


def _inline_refs(node: object, defs: Mapping[str, Any]) -> Any:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/") and len(node) == 1:
            return _inline_refs(defs[ref.removeprefix("#/$defs/")], defs)
        return {k: _inline_refs(v, defs) for k, v in node.items() if k != "$defs"}
    if isinstance(node, list):
        return [_inline_refs(v, defs) for v in node]
    return node


def load_matrix(path: str | Path) -> Matrix:
    """Read, parse and validate a matrix file; raise `MatrixError` naming every problem."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise MatrixError.unreadable(path, exc) from exc
    return parse_matrix_text(data, source=str(path))


def parse_matrix_text(text: str | bytes, *, source: str | None = None) -> Matrix:
    """Parse YAML (or JSON) text and validate it; syntax errors and duplicate keys become `MatrixError`s."""
    loader = _StrictLoader(text)
    try:
        doc = loader.get_single_data()
    except yaml.YAMLError as exc:
        raise MatrixError([Problem(None, None, describe_yaml_error(exc))], source) from exc
    finally:
        loader.dispose()
    duplicates = loader.duplicate_problems
    try:
        matrix = parse_matrix(doc)
    except MatrixError as exc:
        raise MatrixError([*duplicates, *exc.problems], source) from None
    if duplicates:  # valid as parsed, but only because YAML dropped the earlier of a repeated key
        raise MatrixError(duplicates, source)
    return matrix


def parse_matrix(doc: object) -> Matrix:
    """Validate an already-parsed document (dicts and lists, as from YAML or JSON) and build the Matrix."""
    problems = [p for err in _validator().iter_errors(doc) for p in _schema_problems(err)]
    problems.extend(_non_finite_problems(doc, []))
    problems.extend(_cross_reference_problems(doc))
    if problems:
        raise MatrixError(_dedupe(_in_document_order(problems, doc)))
    assert isinstance(doc, dict)  # the schema guarantees the shape from here on
    return _build(doc)


def _build(doc: Mapping[str, Any]) -> Matrix:
    hosts = {
        host_id: Host(
            host_id=host_id,
            api_base=h["api_base"],
            gpu_memory_gb=float(h["gpu_memory_gb"]),
            num_parallel=h["num_parallel"],
            max_loaded_models=h["max_loaded_models"],
            gpu_overhead_gb=float(h.get("gpu_overhead_gb", 0.0)),
        )
        for host_id, h in doc["hosts"].items()
    }
    profiles = {
        key: Profile(
            key=key,
            lane=p["lane"],
            host_id=p["host_id"],
            provider=Provider(p["provider"]),
            model=p["model"],
            api_base=p["api_base"],
            context_window=p["context_window"],
            supports_tools=p["supports_tools"],
            reasoning=p["reasoning"],
            requires_think_false=p["requires_think_false"],
            hardware_class=HardwareClass(p["hardware_class"]),
            preemptible=p["preemptible"],
            lockout_state=LockoutState(p["lockout_state"]),
            warm_state=WarmState(p["warm_state"]),
            vram_gb=float(p["vram_gb"]),
            speed_score=float(p["speed_score"]),
            quality_score=float(p["quality_score"]),
            input_modalities=frozenset(p.get("input_modalities") or ("text",)),
            num_parallel=p.get("num_parallel"),
            load_time_s=float(p["load_time_s"]) if p.get("load_time_s") is not None else None,
        )
        for key, p in doc["profiles"].items()
    }
    return Matrix(schema_version=doc["schema_version"], hosts=hosts, profiles=profiles)


# --- schema errors -> problems ---------------------------------------------------------------------------


def _schema_problems(err: ValidationError) -> Iterator[Problem]:
    path = list(err.absolute_path)
    if "propertyNames" in err.absolute_schema_path:
        # The instance is the offending key of the mapping at `path`.
        yield _key_problem(path, str(err.instance))
        return
    if (
        err.validator == "required"
        and isinstance(err.instance, dict)
        and isinstance(err.validator_value, list)
    ):
        # jsonschema yields one error per missing name; report them from the first (_dedupe drops repeats).
        missing = [name for name in err.validator_value if name not in err.instance]
        if len(missing) > 3:  # a stub or a misplaced block: one line, not sixteen
            yield _at(path, f"required fields are missing: {', '.join(missing)}")
        else:
            for name in missing:
                yield _at([*path, name], "required field is missing")
        return
    if (
        err.validator == "additionalProperties"
        and isinstance(err.instance, dict)
        and isinstance(err.schema, dict)
    ):
        known = list(err.schema.get("properties", {}))
        for name in err.instance:
            if name not in known:
                close = difflib.get_close_matches(str(name), known, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else f" (allowed: {', '.join(known)})"
                yield _at([*path, name], f"unknown field{hint}")
        return
    if not path and err.validator == "type":
        yield Problem(None, None, "the document must be a mapping with schema_version, hosts and profiles")
        return
    yield _at(path, _shorten(err.message))


def _key_problem(path: list[Any], key: str) -> Problem:
    if path == ["profiles"]:
        return Problem(
            key, None, "key must have the form <host_id>/<provider>/<model>, provider ollama or openai"
        )
    if path == ["hosts"]:
        return Problem(None, f'hosts["{key}"]', "host id must be letters, digits, '.', '_', ':' or '-'")
    return _at([*path, key], "is not an allowed key")


def _at(path: Sequence[Any], rule: str) -> Problem:
    if len(path) >= 2 and path[0] == "profiles":
        return Problem(str(path[1]), ".".join(map(str, path[2:])) or None, rule)
    if len(path) >= 2 and path[0] == "hosts":
        return Problem(None, f'hosts["{path[1]}"]' + "".join(f".{p}" for p in path[2:]), rule)
    return Problem(None, ".".join(map(str, path)) or None, rule)


def _shorten(message: str) -> str:
    return message if len(message) <= _MAX_RULE_CHARS else message[: _MAX_RULE_CHARS - 3] + "..."


# --- rules the schema cannot express ---------------------------------------------------------------------


def _non_finite_problems(node: object, path: list[Any]) -> Iterator[Problem]:
    """NaN and +-inf anywhere (YAML's ``.nan``, ``.inf``, ``1e400``): JSON Schema's ranges cannot refuse NaN
    (every comparison with it is false), and one would make a host refuse every load or a profile's score
    null, silently."""
    if isinstance(node, float) and not math.isfinite(node):
        yield _at(path, f"must be a finite number, got {node}")
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _non_finite_problems(value, [*path, key])
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _non_finite_problems(value, [*path, index])


def _finite(value: object) -> float | None:
    """A finite number (not a bool) as a float, else None."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _host_problems(hosts: Mapping[Any, Any]) -> Iterator[Problem]:
    for host_id, host in hosts.items():
        if not isinstance(host, dict):
            continue
        capacity, overhead = _finite(host.get("gpu_memory_gb")), _finite(host.get("gpu_overhead_gb"))
        if capacity is not None and overhead is not None and overhead >= capacity:
            yield Problem(
                None,
                f'hosts["{host_id}"].gpu_overhead_gb',
                f"{host.get('gpu_overhead_gb')} leaves no GPU memory: it must be less than gpu_memory_gb "
                f"{host.get('gpu_memory_gb')} (Ollama keeps this much free, so no model could load)",
            )


def _cross_reference_problems(doc: object) -> Iterator[Problem]:
    if not isinstance(doc, dict):
        return
    hosts = doc.get("hosts") if isinstance(doc.get("hosts"), dict) else {}
    assert isinstance(hosts, dict)
    yield from _host_problems(hosts)
    if not isinstance(doc.get("profiles"), dict):
        return
    for key, p in doc["profiles"].items():
        if not isinstance(p, dict):
            continue
        host_id, provider, model = p.get("host_id"), p.get("provider"), p.get("model")
        if isinstance(host_id, str) and isinstance(provider, str) and isinstance(model, str):
            expected = profile_key(host_id, provider, model)
            if key != expected:
                yield Problem(str(key), None, f"key must equal host_id/provider/model, here {expected!r}")
        if provider != Provider.OLLAMA or not isinstance(host_id, str):
            continue
        host = hosts.get(host_id)
        if host is None:
            declared = ", ".join(map(str, hosts)) or "none"
            yield Problem(str(key), "host_id", f"{host_id!r} is not declared in hosts (declared: {declared})")
            continue
        if not isinstance(host, dict):
            continue
        api_base, host_base = p.get("api_base"), host.get("api_base")
        if (
            isinstance(api_base, str)
            and isinstance(host_base, str)
            and api_base.rstrip("/") != host_base.rstrip("/")
        ):
            yield Problem(
                str(key), "api_base", f"{api_base!r} differs from hosts[{host_id!r}].api_base {host_base!r}"
            )
        vram, capacity = _finite(p.get("vram_gb")), _finite(host.get("gpu_memory_gb"))
        overhead = _finite(host.get("gpu_overhead_gb")) or 0.0
        memory = f"hosts[{host_id!r}].gpu_memory_gb {host.get('gpu_memory_gb')}"
        if vram is None or capacity is None:
            continue
        if vram > capacity:
            yield Problem(
                str(key),
                "vram_gb",
                f"{p.get('vram_gb')} is more than {memory} "
                "(for a model that spills to system RAM, declare hardware_class offload and its GPU part)",
            )
        elif 0 < overhead < capacity and vram > capacity - overhead:
            yield Problem(
                str(key),
                "vram_gb",
                f"{p.get('vram_gb')} is more than {memory} "
                f"less its gpu_overhead_gb {host.get('gpu_overhead_gb')}: it could never load there",
            )


def _in_document_order(problems: list[Problem], doc: object) -> list[Problem]:
    order: dict[str, int] = {}
    if isinstance(doc, dict) and isinstance(doc.get("profiles"), dict):
        order = {str(k): i for i, k in enumerate(doc["profiles"])}
    # Document-level and host problems first, then profiles in file order; stable within each.
    return sorted(problems, key=lambda p: -1 if p.profile is None else order.get(p.profile, len(order)))


def _dedupe(problems: Iterable[Problem]) -> list[Problem]:
    return list(dict.fromkeys(problems))


# --- YAML ------------------------------------------------------------------------------------------------


class _StrictLoader(_BaseLoader):
    """Safe loader that records duplicate mapping keys instead of silently keeping the last one."""

    def __init__(self, stream: str | bytes) -> None:
        super().__init__(stream)
        self.duplicate_problems: list[Problem] = []

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        mapping = super().construct_mapping(node, deep=deep)
        if len(mapping) < len(node.value):
            first_line: dict[object, int] = {}
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    continue
                line = key_node.start_mark.line + 1
                if key_node.value in first_line:
                    self.duplicate_problems.append(
                        Problem(
                            None,
                            None,
                            duplicate_key_message(key_node.value, line, first_line[key_node.value]),
                        )
                    )
                else:
                    first_line[key_node.value] = line
        return mapping
