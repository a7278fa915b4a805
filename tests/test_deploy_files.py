"""The deployment files agree with the code and the spec: ports, environment, secrets, metric names.

No network and no Docker engine: compose files are read with PyYAML (and, where a compose client is
installed, validated by it), Prometheus files by promtool where it is installed, and every metric name in
the alert rules and the dashboards is checked against a fresh `classifier.metrics.Metrics` registry.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from classifier.metrics import Metrics
from classifier.settings import ENV_DOCS
from torchrouter.sim.spec import SIM_CLOUD_KEY

ROOT = Path(__file__).resolve().parent.parent
PROD = ROOT / "docker-compose.yml"
DEV = ROOT / "docker-compose.dev.yml"
ALERTS = ROOT / "prometheus" / "alerts.yml"
PROMETHEUS = ROOT / "prometheus" / "prometheus.yml"
DASHBOARDS = sorted((ROOT / "grafana" / "dashboards").glob("*.json"))
DATASOURCES = ROOT / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
DASHBOARD_PROVIDER = ROOT / "grafana" / "provisioning" / "dashboards" / "torchrouter.yml"

# Variable names a TorchRouter container may receive: the classifier's documented ones, the cloud key the
# LiteLLM config references, and the two LiteLLM variables the project sets (torchrouter/litellm_process.py).
PROJECT_ENV = set(ENV_DOCS) | {"TORCHROUTER_CLOUD_API_KEY", "LITELLM_LOCAL_MODEL_COST_MAP", "LITELLM_LOG"}
DESIGN_ENV = {
    "LITELLM_URL",
    "LITELLM_MASTER_KEY",
    "ROUTING_MODE",
    "TORCHROUTER_QUEUE_ENABLED",
    "TORCHROUTER_FAST_CHAT_CANARY_SHARE",
    "TORCHROUTER_ROUTING_CONTINUITY_EVENT_PATH",
}
SECRET_NAME = re.compile(r"KEY|PASSWORD|SECRET|TOKEN", re.IGNORECASE)
# The only literal a secret may default to: the simulated cloud's placeholder, valid nowhere else.
DUMMY_SECRETS = {"LITELLM_MASTER_KEY": "sk-dummy-for-config-check", "GRAFANA_ADMIN_PASSWORD": "dummy"}


# --- helpers ------------------------------------------------------------------------------------------------
def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def services(*paths: Path) -> dict[str, dict[str, Any]]:
    merged: dict[str, dict[str, Any]] = {}
    for path in paths:
        merged.update(load_yaml(path)["services"])
    return merged


def environment(service: Mapping[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def published(service: Mapping[str, Any]) -> dict[int, int]:
    """host port -> container port for the `ports:` of one service (short or long syntax)."""
    out: dict[int, int] = {}
    for entry in service.get("ports") or []:
        if isinstance(entry, Mapping):
            out[int(entry["published"])] = int(entry["target"])
        else:
            parts = str(entry).split("/")[0].split(":")
            out[int(parts[-2])] = int(parts[-1])
    return out


def namespace_owner(all_services: Mapping[str, Any], name: str) -> str:
    """The service whose network namespace (and so whose published ports) `name` uses."""
    mode = all_services[name].get("network_mode", "")
    if mode.startswith("service:"):
        return namespace_owner(all_services, mode.split(":", 1)[1])
    return name


def listen_port(service: Mapping[str, Any]) -> int:
    command = [str(part) for part in service["command"]]
    return int(command[command.index("--port") + 1])


def healthcheck_url(service: Mapping[str, Any]) -> str:
    test = " ".join(str(part) for part in service["healthcheck"]["test"])
    match = re.search(r"https?://[^'\" ]+", test)
    assert match, f"no URL in healthcheck {test!r}"
    return match.group(0)


def exported_series_names() -> set[str]:
    """Every series name a fresh classifier registry can expose, including families with no child yet."""
    names: set[str] = set()
    for family in Metrics(CollectorRegistry()).registry.collect():
        if family.type == "counter":
            names |= {family.name + "_total", family.name + "_created"}
        elif family.type == "histogram":
            names |= {family.name + suffix for suffix in ("_bucket", "_sum", "_count", "_created")}
        else:
            names.add(family.name)
    return names


PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless"}
PROMQL_WORDS |= {"bool", "offset", "inf", "nan", "le"}


def promql_metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (or a Grafana label_values() query)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range selectors
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    text = re.sub(r"\boffset\s+\S+", "", text)
    text = re.sub(r"\$\w+", "", text)  # Grafana variables
    text = re.sub(r"label_values\(([^,()]+),[^)]*\)", r"\1", text)  # label_values(metric, label)
    names = set()
    for match in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\(?)", text):
        word, call = match.groups()
        if not call and word.lower() not in PROMQL_WORDS:
            names.add(word)
    return names


def alert_exprs() -> Iterator[tuple[str, str]]:
    for group in load_yaml(ALERTS)["groups"]:
        for rule in group["rules"]:
            yield rule.get("alert") or rule["record"], rule["expr"]


def dashboard_exprs(path: Path) -> Iterator[tuple[str, str]]:
    dashboard = json.loads(path.read_text(encoding="utf-8"))

    def walk(node: Any, where: str) -> Iterator[tuple[str, str]]:
        if isinstance(node, Mapping):
            where = str(node.get("title") or node.get("name") or where)
            for key, value in node.items():
                # targets[].expr; templating: definition, and query when it is a string
                is_query = key in {"expr", "definition"} or (key == "query" and "(" in str(value))
                if is_query and isinstance(value, str):
                    yield where, value
                else:
                    yield from walk(value, where)
        elif isinstance(node, list):
            for item in node:
                yield from walk(item, where)

    yield from walk(dashboard, path.name)


# --- compose: ports, commands, health, restart ----------------------------------------------------------
def test_compose_files_are_mappings_of_services() -> None:
    for path in (PROD, DEV):
        doc = load_yaml(path)
        assert isinstance(doc, dict) and isinstance(doc.get("services"), dict), path


def test_prod_ports_are_published_as_the_spec_says() -> None:
    svc = services(PROD)
    for name, port in (("litellm", 4000), ("classifier", 4001)):
        assert listen_port(svc[name]) == port, name
        owner = namespace_owner(svc, name)
        assert published(svc[owner]).get(port) == port, f"{name}: {port} not published by {owner}"
    assert published(svc["prometheus"]).get(9090) == 9090
    assert published(svc["grafana"]).get(3030) == 3000


def test_dev_overlay_publishes_4002_and_4003_and_leaves_prod_untouched() -> None:
    dev_only = load_yaml(DEV)["services"]
    assert set(dev_only) == {"litellm-dev", "classifier-dev"}, "the overlay must not redefine prod services"
    svc = services(PROD, DEV)
    for name, port in (("classifier-dev", 4002), ("litellm-dev", 4003)):
        assert listen_port(svc[name]) == port, name
        owner = namespace_owner(svc, name)
        assert owner in services(PROD), f"{name} must share a namespace that prod defines"
        assert published(svc[owner]).get(port) == port, f"{name}: {port} not published by {owner}"


def test_classifiers_forward_to_their_own_litellm() -> None:
    svc = services(PROD, DEV)
    for classifier, litellm in (("classifier", "litellm"), ("classifier-dev", "litellm-dev")):
        url = environment(svc[classifier])["LITELLM_URL"]
        assert url.endswith(f":{listen_port(svc[litellm])}"), (classifier, url)
        assert namespace_owner(svc, classifier) == namespace_owner(svc, litellm)


def test_simulated_fleet_shares_the_namespace_of_litellm_and_classifier() -> None:
    # The shipped matrix and LiteLLM config name the fleet 127.0.0.1:1150x and `torchrouter sim` listens on
    # loopback, so the sim must share the network namespace of everything that calls it.
    svc = services(PROD, DEV)
    assert svc["sim"]["command"][:2] == ["torchrouter", "sim"]
    owner = namespace_owner(svc, "sim")
    for name in ("litellm", "classifier", "litellm-dev", "classifier-dev"):
        assert namespace_owner(svc, name) == owner, name
    config = (ROOT / "litellm_config.yaml").read_text(encoding="utf-8")
    assert "http://127.0.0.1:115" in config


def test_healthchecks_hit_the_documented_endpoints() -> None:
    svc = services(PROD, DEV)
    expected = {
        "classifier": "/health",
        "classifier-dev": "/health",
        "litellm": "/health/liveliness",
        "litellm-dev": "/health/liveliness",
    }
    for name, path in expected.items():
        assert healthcheck_url(svc[name]) == f"http://127.0.0.1:{listen_port(svc[name])}{path}", name
    for name in ("classifier", "classifier-dev"):
        dependency = name.replace("classifier", "litellm")
        assert svc[name]["depends_on"][dependency]["condition"] == "service_healthy"


def test_every_service_has_a_restart_policy() -> None:
    for name, service in services(PROD, DEV).items():
        assert service.get("restart") in {"always", "unless-stopped", "on-failure"}, name


def test_torchrouter_services_run_the_local_image() -> None:
    svc = services(PROD, DEV)
    for name in ("router-net", "sim", "litellm", "classifier", "litellm-dev", "classifier-dev"):
        assert svc[name]["image"] == "torchrouter:local" and svc[name]["build"] == ".", name


# --- compose: environment and secrets -------------------------------------------------------------------
def test_env_var_names_are_documented() -> None:
    for name, service in services(PROD, DEV).items():
        names = set(environment(service))
        if str(service.get("image", "")).startswith("grafana/"):
            assert all(n.startswith("GF_") for n in names), (name, names)
        else:
            assert names <= PROJECT_ENV, f"{name}: undocumented {sorted(names - PROJECT_ENV)}"


def test_classifiers_get_every_design_variable() -> None:
    svc = services(PROD, DEV)
    for name in ("classifier", "classifier-dev"):
        missing = DESIGN_ENV - set(environment(svc[name]))
        assert not missing, f"{name} lacks {sorted(missing)}"


def test_interpolated_variables_are_explained_to_operators() -> None:
    for path in (PROD, DEV):
        text = path.read_text(encoding="utf-8")
        comments = "\n".join(line for line in text.splitlines() if line.lstrip().startswith("#"))
        for var in set(re.findall(r"\$\{(\w+)", text)):
            assert var in PROJECT_ENV or var in comments, f"{path.name}: ${{{var}}} is not explained"


def test_no_secret_is_hard_coded() -> None:
    allowed = re.compile(r"\$\{\w+(?::\?[^}]*|:-" + re.escape(SIM_CLOUD_KEY) + r")?\}")
    for name, service in services(PROD, DEV).items():
        for var, value in environment(service).items():
            if SECRET_NAME.search(var):
                assert allowed.fullmatch(value), (
                    f"{name}: {var} must come from the environment, not {value!r}"
                )
    for var in ("LITELLM_MASTER_KEY", "GRAFANA_ADMIN_PASSWORD"):
        assert f"${{{var}:?" in PROD.read_text(encoding="utf-8"), f"{var} must be required, not defaulted"
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    for line in dockerfile.splitlines():
        if re.match(r"\s*(ENV|ARG)\b", line):
            assert not SECRET_NAME.search(line), f"Dockerfile bakes in a secret-like variable: {line!r}"
    for path in (PROD, DEV, ROOT / "Dockerfile"):
        assert not re.search(r"sk-[A-Za-z0-9]{12,}", path.read_text(encoding="utf-8")), path.name


def test_event_trail_is_on_a_volume_shared_by_classifier_and_litellm() -> None:
    svc = services(PROD, DEV)
    for classifier, litellm in (("classifier", "litellm"), ("classifier-dev", "litellm-dev")):
        path = environment(svc[classifier])["TORCHROUTER_ROUTING_CONTINUITY_EVENT_PATH"]
        assert environment(svc[litellm])["TORCHROUTER_ROUTING_CONTINUITY_EVENT_PATH"] == path
        directory = str(Path(path).parent)

        def volume_at(service: Mapping[str, Any], directory: str = directory) -> str:
            for volume in service.get("volumes") or []:
                source, _, target = str(volume).partition(":")
                if target.split(":")[0] == directory:
                    return source
            raise AssertionError(f"no volume at {directory}")

        source = volume_at(svc[classifier])
        assert source == volume_at(svc[litellm]) and not source.startswith((".", "/")), source
    assert volume_at_names(PROD) & {"events"} and volume_at_names(DEV) & {"events-dev"}


def test_every_path_variable_points_into_a_mount() -> None:
    for name, service in services(PROD, DEV).items():
        targets = [str(v).split(":")[1] for v in service.get("volumes") or []]
        for var, value in environment(service).items():
            if var.endswith("_PATH"):
                inside = any(value == t or value.startswith(t.rstrip("/") + "/") for t in targets)
                assert inside, f"{name}: {var}={value} is not under any of its mounts {targets}"


def volume_at_names(path: Path) -> set[str]:
    return set(load_yaml(path).get("volumes") or {})


# --- Dockerfile ------------------------------------------------------------------------------------------
def test_dockerfile_builds_a_non_root_image_that_serves_the_classifier() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.11-slim\s*$", text, re.MULTILINE)
    assert "LITELLM_LOCAL_MODEL_COST_MAP=True" in text
    assert "COPY litellm_config.yaml /app/litellm_config.yaml" in text
    users = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    assert users and users[-1] not in {"root", "0"}
    assert re.findall(r"^CMD\s+(.+)$", text, re.MULTILINE)[-1].strip() == '["torchrouter", "serve"]'
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    assert {".env", ".venv", ".git", "var"} <= set(ignored)
    assert "README.md" not in ignored and "pyproject.toml" not in ignored  # `pip wheel .` needs both


# --- Prometheus and Grafana ------------------------------------------------------------------------------
def test_prometheus_scrapes_the_classifiers_and_loads_the_alerts() -> None:
    config = load_yaml(PROMETHEUS)
    assert [(ROOT / "prometheus" / f).is_file() for f in config["rule_files"]] == [True]
    targets = {
        job["job_name"]: [t for sc in job["static_configs"] for t in sc["targets"]]
        for job in config["scrape_configs"]
    }
    svc = services(PROD, DEV)
    for job, name in (("classifier", "classifier"), ("classifier-dev", "classifier-dev")):
        assert targets[job] == [f"{namespace_owner(svc, name)}:{listen_port(svc[name])}"]


def test_alert_rules_reference_only_exported_metrics() -> None:
    exported = exported_series_names()
    rules = list(alert_exprs())
    assert len(rules) >= 3
    for name, expr in rules:
        used = promql_metric_names(expr)
        assert used, f"{name}: no metric found in {expr!r}"
        assert used <= exported, f"{name}: not exported by the classifier: {sorted(used - exported)}"


def test_dashboards_reference_only_exported_metrics() -> None:
    exported = exported_series_names()
    assert DASHBOARDS
    for path in DASHBOARDS:
        exprs = list(dashboard_exprs(path))
        assert len(exprs) >= 10, path.name
        for where, expr in exprs:
            used = promql_metric_names(expr)
            assert used, f"{path.name} / {where}: no metric found in {expr!r}"
            assert used <= exported, f"{path.name} / {where}: not exported: {sorted(used - exported)}"


def test_dashboards_cover_the_main_families() -> None:
    text = " ".join(expr for path in DASHBOARDS for _, expr in dashboard_exprs(path))
    for series in (
        "classifier_requests_total",
        "classifier_request_duration_seconds_bucket",
        "classifier_time_to_first_token_seconds_bucket",
        "classifier_tier_decisions_total",
        "classifier_canary_requests_total",
        "classifier_matrix_reloads_total",
        "classifier_daily_spend_usd",
    ):
        assert series in text, series


def test_metric_name_extraction() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le, group) (rate(a_bucket{job=~"$job",x="b c"}[$__rate_interval])))'
        " / on() sum(b_total offset 5m) and label_values(c_gauge, job)"
    )
    assert promql_metric_names(expr) == {"a_bucket", "b_total", "c_gauge"}


def test_grafana_provisioning_matches_the_dashboards() -> None:
    datasource = load_yaml(DATASOURCES)["datasources"][0]
    assert datasource["type"] == "prometheus" and datasource["url"] == "http://prometheus:9090"
    provider = load_yaml(DASHBOARD_PROVIDER)["providers"][0]
    grafana = services(PROD)["grafana"]
    mounts = {str(v).split(":")[1]: str(v).split(":")[0] for v in grafana["volumes"]}
    assert mounts[provider["options"]["path"]] == "./grafana/dashboards"
    assert mounts["/etc/grafana/provisioning"] == "./grafana/provisioning"
    for path in DASHBOARDS:
        text = path.read_text(encoding="utf-8")
        uids = set(re.findall(r'"type": "prometheus",\s*"uid": "([^"]+)"', text))
        assert uids == {datasource["uid"]}, (path.name, uids)
        panels = json.loads(text)["panels"]
        ids = [p["id"] for p in panels]
        assert len(ids) == len(set(ids)), f"{path.name}: duplicate panel ids"
        for panel in panels:
            pos = panel["gridPos"]
            assert pos["x"] + pos["w"] <= 24, (path.name, panel["title"])


# --- external validators, where installed ------------------------------------------------------------------
def compose_command() -> list[str] | None:
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True, timeout=30)
        if probe.returncode == 0:
            return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def compose_env(**extra: str) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if k in {"PATH", "HOME", "LANG", "LC_ALL"}}
    return {**keep, **extra}


def test_compose_client_accepts_the_files() -> None:
    command = compose_command()
    if command is None:
        pytest.skip(
            "no compose client: neither the `docker compose` plugin nor `docker-compose` is installed "
            "(Debian: apt-get install docker-compose)"
        )
    files = ["-f", str(PROD), "-f", str(DEV)]
    for args in (["-f", str(PROD)], files):
        done = subprocess.run(
            [*command, "--project-directory", str(ROOT), *args, "config", "-q"],
            capture_output=True,
            text=True,
            timeout=120,
            env=compose_env(**DUMMY_SECRETS),
        )
        assert done.returncode == 0, done.stderr
    # Without the master key the stack refuses to start rather than running with no key.
    done = subprocess.run(
        [*command, "--project-directory", str(ROOT), *files, "config", "-q"],
        capture_output=True,
        text=True,
        timeout=120,
        env=compose_env(GRAFANA_ADMIN_PASSWORD="dummy"),
    )
    assert done.returncode != 0 and "LITELLM_MASTER_KEY" in done.stderr


def test_promtool_accepts_config_rules_and_dashboard_queries(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian: apt-get install prometheus)")
    for args in (["check", "config", str(PROMETHEUS)], ["check", "rules", str(ALERTS)]):
        done = subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
    # Each dashboard query, with Grafana's variables filled in, must parse as PromQL.
    rules = []
    for path in DASHBOARDS:
        for i, (_, expr) in enumerate(dashboard_exprs(path)):
            if expr.startswith("label_values("):
                continue
            concrete = (
                expr.replace("$__rate_interval", "1m")
                .replace("$__interval", "1m")
                .replace("$job", "classifier")
            )
            rules.append({"record": f"dashboard:query_{i}", "expr": concrete})
    rules_file = tmp_path / "dashboard_queries.yml"
    rules_file.write_text(
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}), encoding="utf-8"
    )
    done = subprocess.run(
        [promtool, "check", "rules", str(rules_file)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
