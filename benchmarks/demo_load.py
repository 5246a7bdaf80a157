"""Load on the Gradio demo: 20 concurrent requests through ``gradio_client`` against a running ``affectlens demo``.

The demo runs as its own process (``python -m affectlens.cli demo``, the shipped models, its queue with
``default_concurrency_limit=2``). Baseline, measured in the same run: the same requests one at a time. Then
``--clients`` clients at once, each sending ``--per-client`` requests (a mix of image analysis of the sample
portrait and text analysis). Printed: latency percentiles (p50, p90, p99, max) of both, throughput, how many
requests completed or failed, and the server's resident memory before, during (peak of samples every 0.2 s)
and after the load: memory must stay bounded (the queue holds requests, it does not fan out work).

    python benchmarks/demo_load.py [--clients 20] [--per-client 1]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from demo.samples import PORTRAIT  # noqa: E402

TEXTS = ("I finally got the job and I can't stop smiling.", "I miss her every single day.", "Why would they lie?")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and its children, MB (from /proc)."""
    total = 0.0
    pids = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(c) for c in children]
    except OSError:
        pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024
        except OSError:
            continue
    return total


def percentiles(values: list[float]) -> str:
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

    return f"p50 {at(0.5):6.2f} s  p90 {at(0.9):6.2f} s  p99 {at(0.99):6.2f} s  max {ordered[-1]:6.2f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--per-client", type=int, default=1)
    args = parser.parse_args()
    from gradio_client import Client, handle_file

    port = free_port()
    tmp = tempfile.TemporaryDirectory(prefix="affectlens-load-")
    env = {**os.environ, "GRADIO_TEMP_DIR": tmp.name, "GRADIO_ANALYTICS_ENABLED": "False"}
    log = open(Path(tmp.name) / "server.log", "wb")  # noqa: SIM115 - closed in finally
    server = subprocess.Popen(
        [sys.executable, "-m", "affectlens.cli", "demo", "--host", "127.0.0.1", "--port", str(port)],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    try:
        started = time.time()
        while True:
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.time() - started > 240:
                    raise SystemExit(f"the demo did not start; log: {Path(tmp.name) / 'server.log'}") from None
                time.sleep(0.5)
        print(f"demo up in {time.time() - started:.1f} s at {url}; load average {os.getloadavg()[0]:.2f}")

        def request(k: int) -> float:
            client = Client(url, verbose=False)
            t0 = time.perf_counter()
            if k % 2 == 0:
                client.predict(handle_file(str(PORTRAIT)), False, api_name="/analyze_image")
            else:
                client.predict(TEXTS[k % len(TEXTS)], api_name="/analyze_text")
            return time.perf_counter() - t0

        request(0), request(1)  # warm-up: the first calls load the models
        idle = rss_mb(server.pid)
        single = [request(k) for k in range(6)]
        print(f"baseline, one at a time ({len(single)} requests): {percentiles(single)}")

        peak = [idle]
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                peak.append(rss_mb(server.pid))
                time.sleep(0.2)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        total = args.clients * args.per_client
        t0 = time.perf_counter()
        latencies: list[float] = []
        failures: list[str] = []
        with ThreadPoolExecutor(max_workers=args.clients) as pool:
            futures = [pool.submit(request, k) for k in range(total)]
            for future in futures:
                try:
                    latencies.append(future.result(timeout=600))
                except Exception as exc:  # a failed request is counted and shown, never hidden
                    failures.append(f"{type(exc).__name__}: {exc}")
        wall = time.perf_counter() - t0
        stop.set()
        sampler.join()
        after = rss_mb(server.pid)
        print(
            f"{args.clients} concurrent clients, {total} requests: {len(latencies)} completed, {len(failures)} failed"
        )
        for failure in failures[:5]:
            print(f"  failed: {failure}")
        if latencies:
            print(f"  latency {percentiles(latencies)}")
            print(f"  throughput {len(latencies) / wall:.2f} requests/s (wall {wall:.1f} s)")
            print(f"ratio p50 under load / p50 alone: {statistics.median(latencies) / statistics.median(single):.2f}x")
        print(f"server memory: idle {idle:.0f} MB, peak under load {max(peak):.0f} MB, after {after:.0f} MB")
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
        tmp.cleanup()


if __name__ == "__main__":
    main()
