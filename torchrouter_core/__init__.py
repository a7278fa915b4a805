"""TorchRouter's ground floor: the decision code both processes import (the classifier and the hooks).

Nothing here (nor anything it imports) loads aiohttp, LiteLLM, pynvml, prometheus_client or redis;
``tests/test_import_guard.py`` imports every module in a fresh interpreter with those blocked. Importing
this package does nothing: import the module you need.

Modules: ``identity``, ``tiering``, ``routing``, ``decide`` (request -> route decision), ``queue_policy``
(admit / wait / divert), ``capacity`` (lane limits), ``usability`` (the rules lane capacity and the
ranker share), ``ranker/`` (filter -> score -> pick), ``inflight``, ``spend``, ``events`` (kinds, sink
interface, JSONL sink), ``errors`` (domain errors) and ``contract`` (classifier <-> hooks headers).
"""
