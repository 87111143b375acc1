"""Load test of `digitrec serve` on loopback, beside a constant FastAPI endpoint.

Starts two real servers on free 127.0.0.1 ports: digitrec (the shipped model) and a
minimal FastAPI app whose endpoint returns a constant, the framework's ceiling on this
machine. Posts what the page posts (MNIST test digits drawn as dark ink on its white
pad, sent as 128 px RGBA PNGs) at concurrency 1, 16 and 64, each level bounded in time
(and, for the Python client, in requests), and prints requests per second, p50/p95/p99
latency and errors.

The load comes from `wrk` (Debian package wrk) when it is installed: a C client that
leaves the CPU to the server. Without it, an asyncio httpx client is used, which on two
cores is itself the bottleneck (say so when quoting its figures).

    python benchmarks/serve_load.py [--seconds 10] [--workers 1] [--backend auto|int8]
                                    [--client wrk|python]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path

import httpx
import numpy as np

from digitrec.data import load_dataset
from digitrec.runs import shipped_model_path
from variants import drawn_png

CONSTANT_APP = textwrap.dedent(
    """
    from fastapi import FastAPI, Request
    app = FastAPI()

    @app.post("/api/predict")
    async def predict(request: Request):
        await request.body()
        return {"digit": 7, "confidence": 1.0}
    """
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], url: str, cwd: str | None = None) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1)
            return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"server {cmd} did not start")


def canvases(n: int) -> list[bytes]:
    """What the web page posts: see variants.drawn_png."""
    ds = load_dataset("mnist")
    rng = np.random.default_rng(0)
    return [drawn_png(ds.test_images[i].numpy(), rng) for i in range(n)]


async def load(url: str, bodies: list[bytes], concurrency: int, total: int, seconds: float):
    latencies: list[float] = []
    errors = 0
    sent = 0
    stop = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:

        async def worker() -> None:
            nonlocal sent, errors
            while sent < total and time.perf_counter() < stop:
                body = bodies[sent % len(bodies)]
                sent += 1
                t0 = time.perf_counter()
                try:
                    r = await client.post(url, content=body, headers={"content-type": "image/png"})
                    ok = r.status_code == 200
                except httpx.HTTPError:
                    ok = False
                latencies.append(time.perf_counter() - t0)
                errors += not ok

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    lat = np.array(latencies) * 1000
    return len(lat) / wall, *np.percentile(lat, [50, 95, 99]), errors, len(lat)


WRK_SCRIPT = """
local bodies, n = {}, 0
for path in string.gmatch(os.getenv("BODIES"), "[^:]+") do
  local f = io.open(path, "rb"); n = n + 1; bodies[n] = f:read("*all"); f:close()
end
local i = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "image/png"
request = function()
  i = i % n + 1
  return wrk.format(nil, nil, nil, bodies[i])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %f %f %f %f\\n", summary.requests,
    e.connect + e.read + e.write + e.status + e.timeout, summary.duration / 1e6,
    latency:percentile(50) / 1e3, latency:percentile(95) / 1e3, latency:percentile(99) / 1e3))
end
"""


def load_wrk(url: str, files: list[str], concurrency: int, seconds: float):
    """wrk with one thread per core, `concurrency` connections, for `seconds`."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(WRK_SCRIPT)
    out = subprocess.run(
        ["wrk", "-t", str(min(2, concurrency)), "-c", str(concurrency), "-d", f"{seconds}s",
         "--timeout", "30s", "-s", fh.name, url],
        capture_output=True, text=True, env={**os.environ, "BODIES": ":".join(files)},
    ).stdout  # fmt: skip
    Path(fh.name).unlink()
    line = next(x for x in out.splitlines() if x.startswith("RESULT"))
    n, errors, wall, p50, p95, p99 = (float(v) for v in line.split()[1:])
    return n / wall, p50, p95, p99, int(errors), int(n)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=600, help="per concurrency level")
    ap.add_argument("--seconds", type=int, default=10, help="per concurrency level")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--model-path", default=str(shipped_model_path()))
    ap.add_argument("--backend", default="auto", help="digitrec serve --backend (int8: the "
                    "int8 copy shipped beside the model)")  # fmt: skip
    ap.add_argument("--client", choices=["wrk", "python"],
                    default="wrk" if shutil.which("wrk") else "python")  # fmt: skip
    args = ap.parse_args()
    bodies = canvases(50)
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for i, body in enumerate(bodies):
            files.append(str(Path(tmp, f"canvas{i}.png")))
            Path(files[-1]).write_bytes(body)
        Path(tmp, "constant_app.py").write_text(CONSTANT_APP)
        p1, p2 = free_port(), free_port()
        serve = ["serve", "--port", str(p1), "--workers", str(args.workers),
                 "--model-path", args.model_path, "--backend", args.backend]  # fmt: skip
        ours = start([sys.executable, "-m", "digitrec", *serve], f"http://127.0.0.1:{p1}/healthz")
        # The same HTTP protocol as `digitrec serve` (Nagle off also with several workers).
        ref = start([sys.executable, "-m", "uvicorn", "constant_app:app", "--port", str(p2),
                     "--workers", str(args.workers), "--http", "digitrec.web.server:NoDelayHTTP",
                     "--log-level", "warning"],
                    f"http://127.0.0.1:{p2}/docs", cwd=tmp)  # fmt: skip
        try:
            size = np.mean([len(b) for b in bodies])
            print(
                f"{args.workers} worker(s), backend {args.backend}, {args.client} client, "
                f"canvas PNGs of {size:.0f} bytes"
            )
            print(f"{'server':<22} {'conc':>4} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} "
                  f"{'p99 ms':>8} {'errors':>6} {'requests':>8}")  # fmt: skip
            for conc in (1, 16, 64):
                rows = {}
                for name, port in (("digitrec /api/predict", p1), ("constant FastAPI", p2)):
                    url = f"http://127.0.0.1:{port}/api/predict"
                    asyncio.run(load(url, bodies, 4, 20, 5))  # warm up
                    if args.client == "wrk":
                        rows[name] = load_wrk(url, files, conc, args.seconds)
                    else:
                        rows[name] = asyncio.run(
                            load(url, bodies, conc, args.requests, args.seconds)
                        )
                    rps, p50, p95, p99, err, n = rows[name]
                    print(f"{name:<22} {conc:>4} {rps:>8.1f} {p50:>8.2f} {p95:>8.2f} {p99:>8.2f} "
                          f"{err:>6} {n:>8}")  # fmt: skip
                ratio = rows["digitrec /api/predict"][0] / rows["constant FastAPI"][0]
                print(f"{'':<22} {conc:>4} digitrec at {ratio:.0%} of the framework's ceiling")
        finally:
            for proc in (ours, ref):
                proc.terminate()
                proc.wait(timeout=10)


if __name__ == "__main__":
    main()
