# TorchRouter image: one image, three roles, chosen by the command.
#
#   classifier (default)  torchrouter serve                      listens on 0.0.0.0:4001 (LITELLM_URL etc. from env)
#   LiteLLM proxy         python -m litellm.proxy.proxy_cli --config /app/litellm_config.yaml \
#                           --host 0.0.0.0 --port 4000 --telemetry False
#                         (our hooks, litellm_hooks.router_hooks, are installed in the image and
#                          imported by the config; LITELLM_LOCAL_MODEL_COST_MAP=True is set below so the
#                          proxy never fetches a cost map from the internet at start)
#   simulated fleet       torchrouter sim                        the Ollama hosts and cloud the matrix names
#
# Build:   docker build -t torchrouter .
# Run:     see docker-compose.yml (prod) and docker-compose.dev.yml (dev overlay).
#
# What is in the image: the installed package (capability_matrix, classifier, litellm_hooks, torchrouter,
# torchrouter_core, with
# the shipped matrix.yaml, schema.json and agents.yaml as package data) and /app/litellm_config.yaml. No source
# tree sits in the working directory, so every process imports the same installed copy. Operators replace the
# matrix, agents and LiteLLM config by mounting files and pointing TORCHROUTER_CAPABILITY_MATRIX_PATH,
# TORCHROUTER_AGENTS_PATH and --config at them (docker-compose.yml does this with the checkout's copies).
# No secret is baked in: LITELLM_MASTER_KEY and TORCHROUTER_CLOUD_API_KEY come from the environment at run time.

# --- stage 1: build our wheel (no dependencies) from the source tree --------------------------------------
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY . .
RUN pip wheel --no-deps --wheel-dir /wheels .

# --- stage 2: the runtime image ----------------------------------------------------------------------------
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    LITELLM_LOCAL_MODEL_COST_MAP=True \
    LITELLM_WORKER_STARTUP_HOOKS=litellm_hooks.lifecycle:start \
    TORCHROUTER_LITELLM_CONFIG_PATH=/app/litellm_config.yaml
# (LITELLM_WORKER_STARTUP_HOOKS: LiteLLM starts our hooks' fleet probe when the proxy starts; other roles
#  of the image ignore it.)
# (TORCHROUTER_LITELLM_CONFIG_PATH: where the classifier reads LiteLLM's fallbacks for /queue/status; the
#  config is not package data, so the image's copy is named here. Compose points it at the mounted one.)

# Dependencies first, read from pyproject.toml, in their own layer: a code change does not reinstall
# LiteLLM (about 700 MB). litellm[proxy] is pinned to 1.102.4 there (newer releases need a newer certifi).
COPY pyproject.toml /tmp/pyproject.toml
RUN python -c "import tomllib; d = tomllib.load(open('/tmp/pyproject.toml', 'rb')); \
print('\n'.join(d['project']['dependencies']))" > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt /tmp/pyproject.toml

# The project itself (equivalent to `pip install .`, built in stage 1).
COPY --from=build /wheels /tmp/wheels
RUN pip install --no-deps /tmp/wheels/*.whl && rm -rf /tmp/wheels

# A non-root user. /var/lib/torchrouter is where the JSONL trail goes
# (TORCHROUTER_ROUTING_CONTINUITY_EVENT_PATH); a named volume mounted there starts out owned by this user.
RUN groupadd --system --gid 10001 torchrouter \
 && useradd --system --uid 10001 --gid 10001 --home-dir /home/torchrouter --create-home \
      --shell /usr/sbin/nologin torchrouter \
 && mkdir -p /var/lib/torchrouter \
 && chown torchrouter:torchrouter /var/lib/torchrouter

WORKDIR /app
COPY litellm_config.yaml /app/litellm_config.yaml
# Fail the build, not the deployment, when the shipped matrix and LiteLLM config disagree.
RUN torchrouter validate --config /app/litellm_config.yaml

USER torchrouter
# 4001 classifier, 4000 LiteLLM (dev: 4002, 4003). Healthchecks live in the compose files, because which
# port answers depends on the role the container was started in.
EXPOSE 4000 4001
CMD ["torchrouter", "serve"]
