"""The drift check between the capability matrix and the LiteLLM config: one line per disagreement.

This module owns the rules that tie `matrix.yaml` to `litellm_config.yaml`: every deployment names a profile
(`model_info.id` = profile key) and every profile has exactly one deployment; a deployment's group is its
profile's lane, its model is `ollama_chat/<model>` or `openai/<model>`, its api_base is the profile's, and
`think` is never set in the LiteLLM config (the hooks apply the matrix's `requires_think_false`); fallbacks
and lanes only name groups that exist; cloud keys are environment references, never literal secrets.
`check_consistency` is pure; `validate_files` reads both files for the `torchrouter validate` command.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from capability_matrix.loader import MatrixError, describe_yaml_error, load_matrix
from capability_matrix.model import Matrix, Profile
from torchrouter_core.strict_yaml import safe_load_strict

_ENV_REF = "os.environ/"


def litellm_model(profile: Profile) -> str:
    """The `litellm_params.model` a profile's deployment must have."""
    return f"{'ollama_chat' if profile.is_local else 'openai'}/{profile.model}"


def check_consistency(matrix: Matrix, litellm_config: Mapping[str, Any]) -> list[str]:
    """Every way the LiteLLM config (as parsed from YAML) disagrees with the matrix; empty when they agree."""
    model_list = litellm_config.get("model_list")
    if not isinstance(model_list, list):
        return ["model_list: missing or not a list of deployments"]
    problems: list[str] = []
    groups: set[str] = set()
    deployed: dict[str, int] = {}
    for i, deployment in enumerate(model_list):
        if not isinstance(deployment, dict):
            problems.append(f"model_list[{i}]: not a mapping")
            continue
        group = deployment.get("model_name")
        if isinstance(group, str):
            groups.add(group)
        params = _mapping(deployment.get("litellm_params"))
        dep_id = _mapping(deployment.get("model_info")).get("id")
        if not isinstance(dep_id, str):
            problems.append(f"model_list[{i}] (group {group!r}): no model_info.id naming its matrix profile")
            continue
        if dep_id in deployed:
            problems.append(f"deployment {dep_id!r}: listed twice (model_list[{deployed[dep_id]}] and [{i}])")
            continue
        deployed[dep_id] = i
        profile = matrix.profiles.get(dep_id)
        if profile is None:
            problems.append(
                f"deployment {dep_id!r} (model_list[{i}]): no profile with this key in the matrix"
            )
            continue
        problems.extend(f"deployment {dep_id!r}: {p}" for p in _deployment_problems(profile, group, params))
    problems.extend(
        f"profile {key!r}: no deployment with this model_info.id in the LiteLLM config"
        for key in matrix.profiles
        if key not in deployed
    )
    problems.extend(
        f"lane {lane!r}: no LiteLLM model group of that name" for lane in matrix.lanes() if lane not in groups
    )
    problems.extend(
        _fallback_problems(_mapping(litellm_config.get("router_settings")).get("fallbacks"), groups)
    )
    return problems


def _deployment_problems(profile: Profile, group: object, params: Mapping[str, Any]) -> list[str]:
    problems = []
    if group != profile.lane:
        problems.append(f"model_name {group!r} but the profile's lane is {profile.lane!r}")
    if params.get("model") != litellm_model(profile):
        problems.append(
            f"litellm_params.model {params.get('model')!r} but the profile says {litellm_model(profile)!r}"
        )
    api_base = params.get("api_base")
    if not isinstance(api_base, str) or api_base.rstrip("/") != profile.api_base.rstrip("/"):
        problems.append(f"litellm_params.api_base {api_base!r} but the profile says {profile.api_base!r}")
    if "think" in params:
        problems.append(
            f"litellm_params.think is set ({params['think']!r}); think comes from the matrix's "
            "requires_think_false (the hooks apply it), so a matrix edit takes effect"
        )
    api_key = params.get("api_key")
    if api_key is not None and not (isinstance(api_key, str) and api_key.startswith(_ENV_REF)):
        problems.append(f"litellm_params.api_key is a literal value; use {_ENV_REF}<VARIABLE>")
    return problems


def _fallback_problems(fallbacks: object, groups: set[str]) -> list[str]:
    if fallbacks is None:
        return []
    if not isinstance(fallbacks, list):
        return ["router_settings.fallbacks: not a list"]
    problems = []
    for i, entry in enumerate(fallbacks):
        if not isinstance(entry, dict):
            problems.append(f"router_settings.fallbacks[{i}]: not a mapping of group -> [groups]")
            continue
        for source, targets in entry.items():
            named = [source, *targets] if isinstance(targets, list) else [source]
            problems.extend(
                f"router_settings.fallbacks[{i}]: {name!r} is not a model group in model_list"
                for name in named
                if not isinstance(name, str) or name not in groups
            )
            if not isinstance(targets, list):
                problems.append(f"router_settings.fallbacks[{i}]: the fallbacks of {source!r} are not a list")
    return problems


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def validate_files(matrix_path: str | Path, litellm_config_path: str | Path) -> list[str]:
    """Schema problems of the matrix file, then drift against the LiteLLM config; each line names its file."""
    problems: list[str] = []
    matrix: Matrix | None = None
    try:
        matrix = load_matrix(matrix_path)
    except MatrixError as exc:
        problems.extend(f"{matrix_path}: {line}" for line in exc.lines())
    try:
        config = safe_load_strict(Path(litellm_config_path).read_bytes())
    except OSError as exc:
        return [*problems, f"{litellm_config_path}: cannot read: {exc.strerror or exc}"]
    except yaml.YAMLError as exc:
        return [*problems, f"{litellm_config_path}: {describe_yaml_error(exc)}"]
    if not isinstance(config, dict):
        return [*problems, f"{litellm_config_path}: not a mapping with model_list"]
    if matrix is not None:
        problems.extend(f"{litellm_config_path}: {line}" for line in check_consistency(matrix, config))
    return problems
