"""What LiteLLM's ``cancel_on_disconnect`` costs per request (issue 8, kind 3).

It makes a client that hangs up stop the work upstream; the price is one task per request that watches
the connection. Measured as throughput of LiteLLM alone (wrk -> LiteLLM with our hooks -> the simulated
fleet at time scale 0, i.e. instant), non-streamed fast-chat requests, the shipped config against the
same config with ``cancel_on_disconnect: false``, both proxies up at once, runs alternating (A B A B).
A stream pays nothing extra per chunk for it; the mid-stream watch in the hooks
(litellm_hooks/client_watch.py) is one attribute read per chunk, inside the shaping hook measured by
``bench_stream_shape``.

Run: ``python -m benchmarks.bench_cancel_on_disconnect`` (``BENCH_SECONDS`` per run, default 10).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import yaml

from benchmarks import procs
from benchmarks.wrk import WrkResult, require_wrk, run_wrk
from tests.harness import free_ports, render_fleet_files
from torchrouter.litellm_process import LiteLLMProcess

BODY = {
    "model": "fast-chat",
    "messages": [{"role": "user", "content": "Status in one line?"}],
    "max_tokens": 8,
}


def main() -> None:
    require_wrk()
    seconds = int(os.environ.get("BENCH_SECONDS", "10"))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        render_fleet_files(work)
        shipped = work / "litellm_config.yaml"
        off = work / "litellm_config_off.yaml"
        text = shipped.read_text()
        assert "cancel_on_disconnect: true" in text
        off.write_text(text.replace("cancel_on_disconnect: true", "cancel_on_disconnect: false"))
        assert yaml.safe_load(off.read_text())["general_settings"]["cancel_on_disconnect"] is False
        master = "sk-bench-cod"
        env = {
            **os.environ,
            "LITELLM_MASTER_KEY": master,
            "TORCHROUTER_CLOUD_API_KEY": procs.CLOUD_KEY,
            "TORCHROUTER_CAPABILITY_MATRIX_PATH": str(work / "matrix.yaml"),
        }
        doc = yaml.safe_load((work / "matrix.yaml").read_text())
        py = sys.executable
        sim_cmd = [py, "-m", "torchrouter.cli", "sim", "--matrix", str(work / "matrix.yaml")]
        sim_cmd += ["--time-scale", "0", "--cloud-key", procs.CLOUD_KEY]
        with procs.child(sim_cmd, env, work / "sim.log"):
            for host in doc["hosts"].values():
                procs.wait_http(host["api_base"] + "/api/version")
            on_port, off_port = free_ports(2)
            arms = {
                "cancel_on_disconnect: true (shipped)": LiteLLMProcess.start(
                    shipped, port=on_port, env=env, log_path=work / "on.log"
                ),
                "cancel_on_disconnect: false": LiteLLMProcess.start(
                    off, port=off_port, env=env, log_path=work / "off.log"
                ),
            }
            try:
                for proxy in arms.values():
                    proxy.wait_ready()
                auth = {"Authorization": "Bearer " + master}
                for proxy in arms.values():
                    run_wrk(proxy.url + "/v1/chat/completions", BODY, auth, seconds=3)  # warm
                results: dict[str, list[WrkResult]] = {name: [] for name in arms}
                for _ in range(2):
                    for name, proxy in arms.items():
                        results[name].append(
                            run_wrk(proxy.url + "/v1/chat/completions", BODY, auth, seconds=seconds)
                        )
            finally:
                for proxy in arms.values():
                    proxy.stop()
    base = sum(r.rps for r in results["cancel_on_disconnect: false"]) / 2
    print(
        f"# bench_cancel_on_disconnect: {seconds}s per run, 2 rounds, LiteLLM alone, non-streamed fast-chat"
    )
    print("| arm | req/s (runs) | mean | ratio | p50 ms | errors |\n|---|---|---|---|---|---|")
    for name, runs in results.items():
        rps = sum(r.rps for r in runs) / len(runs)
        p50 = sum(r.p50_ms for r in runs) / len(runs)
        each = " / ".join(f"{r.rps:.0f}" for r in runs)
        errors = sum(r.errors for r in runs)
        print(f"| {name} | {each} | {rps:.0f} | {rps / base:.2f} | {p50:.1f} | {errors} |")


if __name__ == "__main__":
    main()
