"""Throughput and latency of the HTTP server against the engine called in process.

One invocation, the same models and settings for everything:

* in process: ``gs.query(index, prompt)`` on an indexed image, and ``gs.segment(image,
  prompt)`` on fresh images (what a Python caller pays);
* over HTTP: the same calls as ``POST /v1/query`` and ``POST /v1/segment`` (multipart PNG
  upload, a fresh image per request, so every segment request builds an index) against
  ``grounded-sam serve`` in its own process (``--server thread``: its app on uvicorn in a
  thread of this process, where the clients compete with it for the GIL), with 1 and 8
  concurrent clients (httpx, one connection each);

and prints requests/s, p50 / p95 latency and the HTTP / in-process ratio of the 1-client
medians (the target for ``/v1/query`` is at most 1.2x). Model calls are serialised by the
server's one worker, so 8 clients measure queueing, not parallel model work.

    python benchmarks/bench_serve.py --out benchmarks/results/serve_cpu_tiny.json
    python benchmarks/bench_serve.py --models full --queries 12 --segments 4 \\
        --out benchmarks/results/serve_cpu_full.json
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine_info  # noqa: E402

PROMPT = "disc, square"


def _stats(latencies: list[float], wall: float) -> dict[str, float]:
    ordered = sorted(latencies)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    return {
        "requests": len(latencies),
        "rps": len(latencies) / wall,
        "p50_ms": 1000 * statistics.median(ordered),
        "p95_ms": 1000 * p95,
    }


def _png(image) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", choices=("tiny", "full"), default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--queries", type=int, default=48, help="requests per query setting")
    parser.add_argument("--segments", type=int, default=16, help="requests per segment setting")
    parser.add_argument("--clients", default="1,8")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument(
        "--server",
        choices=("process", "thread"),
        default="process",
        help="the server in its own process (grounded-sam serve), or a thread of this one",
    )
    args = parser.parse_args()

    import httpx
    import torch
    import uvicorn

    from grounded_sam import EverythingSettings, GroundedSAM
    from grounded_sam.serve.app import create_app
    from grounded_sam.serve.engine import ServeEngine
    from tests.serve.conftest import scene

    clients = [int(c) for c in args.clients.split(",")]
    work = Path(tempfile.mkdtemp(prefix="bench_serve_"))
    if args.models == "tiny":
        from grounded_sam.testing import save_tiny_models

        sam, clip = save_tiny_models(work / "models")
        size = (96, 128)
        settings = EverythingSettings(points_per_side=4, pred_iou_thresh=0.0,
                                      stability_score_thresh=0.5)  # fmt: skip
    else:
        from benchmarks.bench_speed import save_random_clip, save_random_sam

        sam = str(save_random_sam(work / "models" / "sam", "vit_b"))
        clip = save_random_clip(work / "models" / "clip", "ViT-B-32")
        size = (480, 640)
        settings = EverythingSettings(points_per_side=16, pred_iou_thresh=0.0,
                                      stability_score_thresh=0.5, box_nms_thresh=1.0)  # fmt: skip
    info = machine_info(args.device)
    info["loadavg_before"] = os.getloadavg()
    os.environ.setdefault("GROUNDED_SAM_DTYPE", "float32")  # the same dtype on both paths
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))  # the server's too
    torch.set_num_threads(args.threads)
    gs = GroundedSAM.from_pretrained(sam=sam, clip=clip, device=args.device,
                                     proposal_settings=settings, threshold=0.0)  # fmt: skip
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    if args.server == "thread":  # same process: clients and server share one GIL
        engine = ServeEngine(gs, index_cache_bytes=8 * 1024**3)
        app = create_app(engine, max_upload_bytes=64 * 1024**2)
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error")
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
    else:  # `grounded-sam serve` in its own process, the same models and settings
        from tests.cli.conftest import ENTRY, cli_env

        knobs = ["--points-per-side", str(settings.points_per_side), "--pred-iou-thresh", "0",
                 "--stability-score-thresh", "0.5", "--box-nms-thresh",
                 str(settings.box_nms_thresh), "--threshold", "0"]  # fmt: skip
        proc = subprocess.Popen(
            [*ENTRY, "serve", "--sam", sam, "--clip", clip, "--device", args.device, *knobs,
             "--port", str(port), "--index-cache-mb", "8192", "--max-upload-mb", "64", "-q"],
            env=cli_env(GROUNDED_SAM_DTYPE="float32", OMP_NUM_THREADS=str(args.threads)),
        )  # fmt: skip
        while True:
            assert proc.poll() is None, "the server exited"
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.3)

    h, w = size
    photo = scene(h, w, seed=0)
    index = gs.index(photo)
    uploaded = httpx.post(f"{base}/v1/index", files={"image": ("p.png", _png(photo))}, timeout=600)
    index_id = uploaded.json()["index_id"]
    rows = []

    def timed(fn, n: int) -> list[float]:
        out = []
        for i in range(n):
            t0 = time.perf_counter()
            fn(i)
            out.append(time.perf_counter() - t0)
        return out

    # -- /v1/query --------------------------------------------------------------------------
    gs.query(index, PROMPT)  # warm the text cache on both paths
    httpx.post(f"{base}/v1/query", json={"index_id": index_id, "prompt": PROMPT}, timeout=600)
    t0 = time.perf_counter()
    lat = timed(lambda i: gs.query(index, PROMPT), args.queries)
    rows.append({"route": "query", "path": "in process", "clients": 1,
                 **_stats(lat, time.perf_counter() - t0)})  # fmt: skip
    for n in clients:

        def query(i: int, c: httpx.Client) -> float:
            t = time.perf_counter()
            r = c.post(f"{base}/v1/query", json={"index_id": index_id, "prompt": PROMPT})
            r.raise_for_status()
            return time.perf_counter() - t

        rows.append(_http_run("query", n, args.queries, query, base))

    # -- /v1/segment (a fresh image per request) --------------------------------------------
    total = args.segments * (1 + len(clients)) + 1
    images = [scene(h, w, seed=1000 + i) for i in range(total)]
    pngs = [_png(im) for im in images]
    gs.segment(images[-1], PROMPT)  # warm-up
    t0 = time.perf_counter()
    lat = timed(lambda i: gs.segment(images[i], PROMPT), args.segments)
    rows.append({"route": "segment", "path": "in process", "clients": 1,
                 **_stats(lat, time.perf_counter() - t0)})  # fmt: skip
    offset = [args.segments]
    for n in clients:
        start = offset[0]

        def segment(i: int, c: httpx.Client, start: int = start) -> float:
            t = time.perf_counter()
            r = c.post(f"{base}/v1/segment", files={"image": ("p.png", pngs[start + i])},
                       data={"prompt": PROMPT})  # fmt: skip
            r.raise_for_status()
            return time.perf_counter() - t

        rows.append(_http_run("segment", n, args.segments, segment, base))
        offset[0] += args.segments

    if args.server == "thread":
        server.should_exit = True
        thread.join(30)
        engine.close()
    else:
        proc.terminate()
        proc.wait(60)
    info["loadavg_after"] = os.getloadavg()
    ratios = {}
    for route in ("query", "segment"):
        local = next(r for r in rows if r["route"] == route and r["path"] == "in process")
        http1 = next(r for r in rows if r["route"] == route and r["path"] == "HTTP"
                     and r["clients"] == 1)  # fmt: skip
        ratios[route] = http1["p50_ms"] / local["p50_ms"]
    print(f"models {args.models} on {args.device}, image {w}x{h}, prompt {PROMPT!r}; "
          f"load {info['loadavg_before'][0]:.1f} -> {info['loadavg_after'][0]:.1f}")  # fmt: skip
    print(f"{'route':8} {'path':11} {'clients':>7} {'req/s':>8} {'p50 ms':>9} {'p95 ms':>9}")
    for r in rows:
        print(f"{r['route']:8} {r['path']:11} {r['clients']:>7} {r['rps']:>8.2f} "
              f"{r['p50_ms']:>9.1f} {r['p95_ms']:>9.1f}")  # fmt: skip
    for route, ratio in ratios.items():
        print(f"HTTP / in-process p50 (1 client), {route}: {ratio:.2f}x")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        doc = {
            "machine": info,
            "models": args.models,
            "device": args.device,
            "image": [h, w],
            "prompt": PROMPT,
            "rows": rows,
            "http_over_in_process": ratios,
        }
        args.out.write_text(json.dumps(doc, indent=1))  # fmt: skip


def _http_run(route: str, clients: int, requests: int, call, base: str) -> dict:
    import httpx

    per_client = [list(range(k, requests, clients)) for k in range(clients)]

    def worker(ids: list[int]) -> list[float]:
        with httpx.Client(timeout=600) as c:
            return [call(i, c) for i in ids]

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        lat = [x for part in pool.map(worker, per_client) for x in part]
    return {"route": route, "path": "HTTP", "clients": clients,
            **_stats(lat, time.perf_counter() - t0)}  # fmt: skip


if __name__ == "__main__":
    main()
