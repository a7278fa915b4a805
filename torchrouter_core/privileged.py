"""Body fields a client may not send: LiteLLM's proxy refuses them, or they steer what only the router
decides (pure; no LiteLLM import, so the classifier stays light).

:data:`LITELLM_BANNED` is LiteLLM's own list (``litellm.proxy.auth.auth_utils._BANNED_REQUEST_BODY_PARAMS``
in the pinned LiteLLM: endpoints, provider credentials, observability hosts and keys, per-request prices;
``tests/test_front_door_units.py`` checks this copy still covers it). LiteLLM answers any of them with a
500, after the classifier had counted the request and taken a lane slot. :data:`ROUTER_OWNED` are fields
LiteLLM would act on but that belong to the router: a client's own key or provider, LiteLLM's mock
answers (a response no model produced, free of the budget), fallbacks and retries (the classifier sends
the failure chain itself: a client's own would carry a local request to the cloud past the budget), and
LiteLLM's internal per-call objects. LiteLLM checks the same names one level down in ``extra_body``,
``litellm_embedding_config``, ``metadata`` and ``litellm_metadata``; so does :func:`privileged_field`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

LITELLM_BANNED: Final = frozenset(
    (
        "annotation_cost_per_page",
        "api_base",
        "arize_api_key",
        "arize_space_id",
        "arize_space_key",
        "aws_bedrock_project_id",
        "aws_bedrock_runtime_endpoint",
        "aws_external_id",
        "aws_profile_name",
        "aws_role_name",
        "aws_session_name",
        "aws_session_tags",
        "aws_sts_endpoint",
        "aws_web_identity_token",
        "azure_ad_token",
        "base_url",
        "bedrock_tags",
        "braintrust_api_key",
        "braintrust_host",
        "braintrust_project",
        "cache_creation_input_audio_token_cost",
        "cache_creation_input_token_cost",
        "cache_creation_input_token_cost_above_1hr",
        "cache_creation_input_token_cost_above_200k_tokens",
        "cache_creation_input_token_cost_above_272k_tokens",
        "cache_creation_input_token_cost_above_272k_tokens_flex",
        "cache_creation_input_token_cost_above_272k_tokens_priority",
        "cache_creation_input_token_cost_flex",
        "cache_creation_input_token_cost_priority",
        "cache_creation_input_token_cost_ultrafast",
        "cache_read_input_audio_token_cost",
        "cache_read_input_token_cost",
        "cache_read_input_token_cost_above_200k_tokens",
        "cache_read_input_token_cost_above_200k_tokens_priority",
        "cache_read_input_token_cost_above_272k_tokens",
        "cache_read_input_token_cost_above_272k_tokens_flex",
        "cache_read_input_token_cost_above_272k_tokens_priority",
        "cache_read_input_token_cost_above_512k_tokens",
        "cache_read_input_token_cost_flex",
        "cache_read_input_token_cost_priority",
        "cache_read_input_token_cost_ultrafast",
        "citation_cost_per_token",
        "dd_agent_host",
        "dd_agent_port",
        "dd_api_key",
        "dd_site",
        "deployment_url",
        "gcs_bucket_name",
        "gcs_path_service_account",
        "google_maps_grounding_cost_per_query",
        "humanloop_api_key",
        "input_cost_per_audio_per_second",
        "input_cost_per_audio_per_second_above_128k_tokens",
        "input_cost_per_audio_token",
        "input_cost_per_character",
        "input_cost_per_character_above_128k_tokens",
        "input_cost_per_image",
        "input_cost_per_image_above_128k_tokens",
        "input_cost_per_image_token",
        "input_cost_per_pixel",
        "input_cost_per_query",
        "input_cost_per_second",
        "input_cost_per_token",
        "input_cost_per_token_above_128k_tokens",
        "input_cost_per_token_above_200k_tokens",
        "input_cost_per_token_above_200k_tokens_priority",
        "input_cost_per_token_above_272k_tokens",
        "input_cost_per_token_above_272k_tokens_flex",
        "input_cost_per_token_above_272k_tokens_priority",
        "input_cost_per_token_above_512k_tokens",
        "input_cost_per_token_batches",
        "input_cost_per_token_cache_hit",
        "input_cost_per_token_flex",
        "input_cost_per_token_priority",
        "input_cost_per_token_ultrafast",
        "input_cost_per_video_per_second",
        "input_cost_per_video_per_second_above_128k_tokens",
        "input_cost_per_video_per_second_above_15s_interval",
        "input_cost_per_video_per_second_above_8s_interval",
        "input_cost_per_video_token",
        "langfuse_environment",
        "langfuse_host",
        "langfuse_public_key",
        "langfuse_secret",
        "langfuse_secret_key",
        "langsmith_api_key",
        "langsmith_base_url",
        "langsmith_project",
        "langsmith_tenant_id",
        "lunary_public_key",
        "model_list",
        "newrelic_api_key",
        "newrelic_region",
        "nvcf_function_id",
        "ocr_cost_per_credit",
        "ocr_cost_per_page",
        "output_cost_per_audio_per_second",
        "output_cost_per_audio_token",
        "output_cost_per_character",
        "output_cost_per_character_above_128k_tokens",
        "output_cost_per_image",
        "output_cost_per_image_token",
        "output_cost_per_pixel",
        "output_cost_per_reasoning_token",
        "output_cost_per_reasoning_token_flex",
        "output_cost_per_reasoning_token_priority",
        "output_cost_per_second",
        "output_cost_per_second_1080p",
        "output_cost_per_second_480p",
        "output_cost_per_second_4k",
        "output_cost_per_second_720p",
        "output_cost_per_token",
        "output_cost_per_token_above_128k_tokens",
        "output_cost_per_token_above_200k_tokens",
        "output_cost_per_token_above_200k_tokens_priority",
        "output_cost_per_token_above_272k_tokens",
        "output_cost_per_token_above_272k_tokens_flex",
        "output_cost_per_token_above_272k_tokens_priority",
        "output_cost_per_token_above_512k_tokens",
        "output_cost_per_token_batches",
        "output_cost_per_token_flex",
        "output_cost_per_token_priority",
        "output_cost_per_token_ultrafast",
        "output_cost_per_video_per_second",
        "output_cost_per_video_token",
        "output_vector_size",
        "posthog_api_key",
        "posthog_api_url",
        "posthog_host",
        "regional_endpoint_uplift_multiplier",
        "regional_processing_uplift_multiplier_eu",
        "regional_processing_uplift_multiplier_us",
        "rust",
        "s3_endpoint_url",
        "sagemaker_base_url",
        "search_context_cost_per_query",
        "slack_webhook_url",
        "tiered_pricing",
        "turn_off_message_logging",
        "use_ssl",
        "user_api_key_auth_metadata",
        "user_config",
        "vertex_ai_credentials",
        "vertex_credentials",
        "wandb_api_key",
        "weave_project_id",
    )
)

ROUTER_OWNED: Final = frozenset(
    (
        "api_key",
        "api_version",
        "custom_llm_provider",
        "litellm_params",
        "model_list",
        "mock_response",
        "mock_tool_calls",
        "mock_timeout",
        "mock_delay",
        "mock_testing_fallbacks",
        "mock_testing_context_window_fallbacks",
        "mock_testing_content_policy_fallbacks",
        "mock_testing_rate_limit_error",
        "fallbacks",
        "context_window_fallbacks",
        "content_policy_fallbacks",
        "disable_fallbacks",
        "num_retries",
        "max_retries",
        "litellm_logging_obj",
        "proxy_server_request",
        "secret_fields",
        "litellm_call_id",
    )
)

PRIVILEGED: Final = LITELLM_BANNED | ROUTER_OWNED
NESTED: Final = ("extra_body", "litellm_embedding_config", "metadata", "litellm_metadata")


def privileged_field(body: Mapping[str, Any]) -> str | None:
    """The first privileged field of ``body`` (``metadata.api_base`` for a nested one), or None."""
    if not PRIVILEGED.isdisjoint(body):
        return min(PRIVILEGED.intersection(body))
    for key in NESTED:
        nested = body.get(key)
        if isinstance(nested, str):  # LiteLLM reads a JSON-string metadata as the object it holds
            try:
                nested = json.loads(nested)
            except ValueError:
                continue
        if isinstance(nested, Mapping) and not PRIVILEGED.isdisjoint(nested):
            return f"{key}.{min(PRIVILEGED.intersection(nested))}"
    return None
