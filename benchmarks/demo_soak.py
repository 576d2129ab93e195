"""Soak the demo: bursts of concurrent generate requests, and the server's memory around each.

Starts `python -m app` (the embedded models unless overrides are given) in a subprocess, sends
``--requests`` concurrent generate requests through gradio_client (each with its own seed), then
``--rounds`` more bursts, and prints one row per burst: requests answered and failed, wall time,
and the server's resident memory before and after. Memory is reported, not judged: a steady
RSS after the first burst is what a server that frees its requests looks like.

    python benchmarks/demo_soak.py [--requests 30] [--rounds 3] [-- key=value ...]   # overrides go to `python -m app`
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import psutil

from app_startup import REPO, free_port, wait_for_server


def burst(client, parameters: dict, requests: int, first_seed: int) -> tuple[int, int]:
    """``requests`` generate calls at once; (answered, failed)."""

    def one(seed: int) -> bool:
        try:
            client.predict(**{**parameters, "seed": seed}, api_name="/generate")
            return True
        except Exception as error:  # noqa: BLE001 - counted and shown, the soak goes on
            print(f"request with seed {seed} failed: {type(error).__name__}: {error}", file=sys.stderr)
            return False

    with ThreadPoolExecutor(max_workers=requests) as pool:
        results = list(pool.map(one, range(first_seed, first_seed + requests)))
    return sum(results), len(results) - sum(results)


def soak(overrides: list[str], requests: int, rounds: int, timeout: float) -> list[dict]:
    from gradio_client import Client

    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "app", f"port={port}", *overrides], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})
    try:
        wait_for_server(port, process, timeout)
        server = psutil.Process(process.pid)
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        endpoint = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/generate"]
        parameters = {p["parameter_name"]: p.get("parameter_default") for p in endpoint["parameters"]}
        rows = []
        for index in range(rounds + 1):
            before = server.memory_info().rss
            started = time.perf_counter()
            answered, failed = burst(client, parameters, requests, index * requests)
            rows.append({"burst": index + 1, "requests": requests, "answered": answered, "failed": failed,
                         "wall_s": time.perf_counter() - started, "rss_before_mb": before / 2**20,
                         "rss_after_mb": server.memory_info().rss / 2**20})
        client.close()
        return rows
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=30, help="concurrent generate requests per burst")
    parser.add_argument("--rounds", type=int, default=3, help="bursts after the first one")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the server")
    parser.add_argument("overrides", nargs="*", help="key=value options for `python -m app` (after --)")
    args = parser.parse_args()
    if args.requests < 1 or args.rounds < 0:
        parser.error("--requests must be >= 1 and --rounds >= 0")
    rows = soak(args.overrides, args.requests, args.rounds, args.timeout)
    print(f"{'burst':>5} {'requests':>8} {'answered':>8} {'failed':>6} {'wall s':>7} {'RSS before MB':>13} "
          f"{'RSS after MB':>12}")
    for row in rows:
        print(f"{row['burst']:>5} {row['requests']:>8} {row['answered']:>8} {row['failed']:>6} {row['wall_s']:>7.1f} "
              f"{row['rss_before_mb']:>13.0f} {row['rss_after_mb']:>12.0f}")
    growth = rows[-1]["rss_after_mb"] - rows[0]["rss_after_mb"]
    print(f"RSS after the last burst vs after the first: {growth:+.0f} MB (reported, not judged)")


if __name__ == "__main__":
    main()
