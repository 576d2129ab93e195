"""Launch -> first generated image: how long a newcomer waits after `python -m app`.

Starts `python -m app` (the embedded models unless overrides are given) in a subprocess, waits
for the server, asks for one image through gradio_client with the default sliders, and prints a
table. Target on a 2-core CPU: under 60 s.

    python benchmarks/app_startup.py [--repeats 2] [-- key=value ...]   # overrides go to `python -m app`
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_server(port: int, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"`python -m app` exited with code {process.returncode} before serving")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"no server on port {port} after {timeout:.0f} s")


def measure(overrides: list[str], timeout: float) -> dict[str, float]:
    from gradio_client import Client

    port = free_port()
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "app", f"port={port}", *overrides], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})
    try:
        wait_for_server(port, process, timeout)
        serving = time.perf_counter() - started
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        config = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/generate"]
        defaults = [p.get("parameter_default") for p in config["parameters"]]
        asked = time.perf_counter()
        client.predict(*defaults, api_name="/generate")
        done = time.perf_counter()
        client.close()
        return {"serving_s": serving, "first_image_s": done - started, "generate_s": done - asked}
    finally:
        process.terminate()
        process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2, help="launches to time (the first has cold caches)")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("overrides", nargs="*", help="key=value overrides passed to `python -m app`")
    args = parser.parse_args()
    rows = [measure(args.overrides, args.timeout) for _ in range(args.repeats)]
    import torch

    print(f"hardware: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch "
          f"{torch.__version__}, CUDA {'yes: ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'no'}")
    print(f"config: python -m app {' '.join(args.overrides) or '(embedded digits models, default sliders)'}")
    print(f"{'run':>3} | {'server up (s)':>13} | {'generate call (s)':>17} | {'launch -> first image (s)':>25}")
    for i, row in enumerate(rows):
        print(f"{i:>3} | {row['serving_s']:>13.1f} | {row['generate_s']:>17.1f} | {row['first_image_s']:>25.1f}")


if __name__ == "__main__":
    main()
