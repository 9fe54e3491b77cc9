"""``gs.track`` speed and memory: frames/s, grounding vs propagating, RSS against video length.

Two measurements, both on synthetic videos (:mod:`grounded_sam.video.synthetic`: coloured
shapes moving over a gradient, objects entering and leaving):

* ``speed``: full-size SAM 2.1 architectures (``--models t b+``: Hiera tiny / base-plus, the
  released configs, with seeded random weights of realistic magnitude, as ``bench_backends``)
  saved as a ``Sam2VideoModel`` folder, grounding with that checkpoint plus a random CLIP
  (``--clip ViT-B-32``), propagating with the same checkpoint (encoder shared), frames of
  ``--size`` (640x480), for each ``--every`` (1 / 10 / 30). Reported per run: frames/s over
  the whole loop, seconds in grounding and in propagation and their shares, tracks, peak RSS.
  Random weights do not find the shapes; they find *something* (threshold 0), so the number
  of tracks is printed with every row: propagation cost grows with it.
* ``memory``: the tiny random SAM 2.1 (``grounded_sam.video.tiny``) with the tiny CLIP, a long
  video (``--memory-frames`` 2000, 120x160), RSS sampled every 100 frames, once with the
  bounded memory bank (default) and once without pruning (``--unbounded-frames``), to show
  what the bound buys.

Example (the committed results)::

    python benchmarks/bench_track.py memory --out benchmarks/results/track_memory_cpu
    python benchmarks/bench_track.py speed --models t --frames 30 --every 10 30 \
        --out benchmarks/results/track_speed_cpu
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_backends import sam2_vision_config  # noqa: E402
from benchmarks.bench_speed import realistic_init_, save_random_clip  # noqa: E402
from benchmarks.common import machine_info  # noqa: E402

logger = logging.getLogger("benchmarks.bench_track")


def rss_mib() -> float:
    """Resident set size of this process, MiB (Linux /proc; psutil elsewhere)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        import psutil

        return psutil.Process().memory_info().rss / 2**20


def save_random_sam2_video(directory: Path, size: str, seed: int = 0) -> Path:
    """A full-size SAM 2.1 (``Sam2VideoModel``) with realistic random weights, saved."""
    from transformers import Sam2VideoConfig, Sam2VideoModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Sam2VideoModel(
            Sam2VideoConfig(vision_config=sam2_vision_config(f"sam2.1_{size}"))
        ).eval()
    realistic_init_(model, seed)
    with torch.no_grad():
        model.prompt_encoder.shared_embedding.positional_embedding.copy_(
            model.shared_image_embedding.positional_embedding
        )
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    return directory


def _engine(sam: str, clip: str, device: str, points_per_side: int = 16):
    from grounded_sam import EverythingSettings, GroundedSAM

    return GroundedSAM.from_pretrained(
        sam=sam,
        clip=clip,
        device=device,
        dtype="float32",
        threshold=0.0,
        proposal_settings=EverythingSettings(
            points_per_side=points_per_side, points_per_batch=64, pred_iou_thresh=0.0,
            stability_score_thresh=0.5,
        ),
        max_regions=100,
    )  # fmt: skip


def track_once(gs, video, every: int, max_tracks: int) -> dict[str, Any]:
    """One ``gs.track`` over the video; times, tracks, peak RSS (sampled each frame)."""
    from grounded_sam.video.types import TrackerSettings

    gc.collect()
    base = rss_mib()
    peak = base
    t0 = time.perf_counter()
    run = gs.track(video, "red box, blue disc, green box",
                   settings=TrackerSettings(every=every, max_tracks=max_tracks))  # fmt: skip
    for _ in run:
        peak = max(peak, rss_mib())
    wall = time.perf_counter() - t0
    s = run.stats
    busy = s.grounding_s + s.propagating_s
    return {
        "every": every,
        "frames": s.frames,
        "key_frames": s.key_frames,
        "tracks_started": s.tracks_started,
        "max_tracks": max_tracks,
        "wall_s": wall,
        "frames_per_s": s.frames / wall,
        "grounding_s": s.grounding_s,
        "propagating_s": s.propagating_s,
        "grounding_share": s.grounding_s / busy if busy else 0.0,
        "rss_start_mib": base,
        "rss_peak_mib": peak,
    }


def speed(args: argparse.Namespace) -> dict[str, Any]:
    """Full-size random SAM 2.1 t / b+ at 640x480: frames/s and grounding share per every."""
    from grounded_sam.video.synthetic import demo_video

    w, h = args.size
    video = demo_video(args.frames, (h, w))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        clip = save_random_clip(Path(tmp) / "clip", args.clip)
        for size in args.models:
            sam = save_random_sam2_video(Path(tmp) / f"sam2.1_{size}", size)
            gs = _engine(str(sam), clip, args.device)
            for every in args.every:
                row = {"model": f"sam2.1_{size}", **track_once(gs, video, every, args.max_tracks)}
                logger.info("%s", row)
                rows.append(row)
            del gs
            gc.collect()
    return {"rows": rows, "size": [w, h], "clip": args.clip}


def memory(args: argparse.Namespace) -> dict[str, Any]:
    """RSS against video length with the tiny random SAM 2.1, bounded vs unbounded."""
    from grounded_sam.testing import save_tiny_clip
    from grounded_sam.video.propagator import Sam2VideoPropagator, load_video_model
    from grounded_sam.video.synthetic import demo_video
    from grounded_sam.video.tiny import save_tiny_sam2_video
    from grounded_sam.video.types import TrackerSettings

    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        sam = save_tiny_sam2_video(Path(tmp) / "sam")
        clip = f"local-dir:{save_tiny_clip(Path(tmp) / 'clip')}"
        gs = _engine(str(sam), clip, "cpu", points_per_side=4)
        for name, frames, bounded in (
            ("bounded", args.memory_frames, True),
            ("unbounded", args.unbounded_frames, False),
        ):
            if frames <= 0:
                continue
            model = load_video_model(sam, torch.device("cpu"), torch.float32)
            prop = Sam2VideoPropagator(model, bounded=bounded)
            video = demo_video(frames, (120, 160))
            gc.collect()
            samples = [(0, rss_mib())]
            t0 = time.perf_counter()
            run = gs.track(video, "red box, blue disc", propagator=prop,
                           settings=TrackerSettings(every=args.memory_every, max_tracks=4,
                                                    lost_after=10**5))  # fmt: skip
            for index, _ in run:
                if (index + 1) % 100 == 0:
                    samples.append((index + 1, rss_mib()))
                    logger.info("%s frame %d: RSS %.1f MiB, %.1f s", name, index + 1,
                                samples[-1][1], time.perf_counter() - t0)  # fmt: skip
            out[name] = {
                "frames": frames,
                "every": args.memory_every,
                "tracks_started": run.stats.tracks_started,
                "wall_s": time.perf_counter() - t0,
                "rss_mib": samples,
                "growth_mib": samples[-1][1] - samples[1][1] if len(samples) > 1 else 0.0,
            }
            logger.info("%s: %s", name, {k: v for k, v in out[name].items() if k != "rss_mib"})
            del prop, model, run
            gc.collect()
    return out


def table(result: dict[str, Any]) -> str:
    """Markdown tables of whichever measurements the result holds."""
    lines = []
    if "rows" in result:
        w, h = result["size"]
        lines += [
            f"frames {w}x{h}, CLIP {result['clip']} (random), threshold 0",
            "",
            "| model | every | frames | tracks | frames/s | grounding | propagating | "
            "grounding share | peak RSS |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in result["rows"]:
            lines.append(
                f"| {r['model']} | {r['every']} | {r['frames']} | {r['tracks_started']} | "
                f"{r['frames_per_s']:.3f} | {r['grounding_s']:.1f} s | {r['propagating_s']:.1f} s"
                f" | {100 * r['grounding_share']:.0f} % | {r['rss_peak_mib']:.0f} MiB |"
            )
    for name in ("bounded", "unbounded"):
        if name in result:
            r = result[name]
            pts = r["rss_mib"]
            shown = [p for p in pts if p[0] in (100, 500, 1000, 1500, 2000) or p == pts[-1]]
            lines += [
                "",
                f"{name} memory bank: {r['frames']} frames, {r['tracks_started']} tracks, "
                f"every {r['every']}, {r['wall_s']:.0f} s; RSS growth after frame 100: "
                f"{r['growth_mib']:+.1f} MiB",
                "",
                "| frames | RSS |",
                "|---:|---:|",
                *[f"| {f} | {m:.1f} MiB |" for f, m in shown],
            ]
    return "\n".join(lines)


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return ""


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=("speed", "memory", "both"))
    parser.add_argument("--models", nargs="+", default=["t", "b+"], choices=["t", "s", "b+", "l"])
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--every", type=int, nargs="+", default=[1, 10, 30])
    parser.add_argument("--size", type=int, nargs=2, default=[640, 480], metavar=("W", "H"))
    parser.add_argument("--clip", default="ViT-B-32")
    parser.add_argument("--max-tracks", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--memory-frames", type=int, default=2000)
    parser.add_argument("--memory-every", type=int, default=50)
    parser.add_argument("--unbounded-frames", type=int, default=400)
    parser.add_argument("--out", type=Path, default=None, help="write OUT.json and OUT.md")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("grounded_sam").setLevel(logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    result: dict[str, Any] = {"machine": machine_info(args.device), "uptime_start": _uptime(),
                              "command": " ".join(sys.argv)}  # fmt: skip
    if args.what in ("speed", "both"):
        result.update(speed(args))
    if args.what in ("memory", "both"):
        result.update(memory(args))
    result["uptime_end"] = _uptime()
    text = table(result)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps(result, indent=1))
        m = result["machine"]
        head = (
            f"{m.get('cpu')} ({', '.join(m.get('cpu_flags', []))}), {m.get('cpu_cores')} cores, "
            f"torch {m.get('torch')} {m.get('torch_threads')} threads, commit "
            f"{m.get('git_commit')}\nload: {result['uptime_start']} -> {result['uptime_end']}\n"
            f"command: {result['command']}\n\n"
        )
        args.out.with_suffix(".md").write_text(head + text + "\n")
    return result


if __name__ == "__main__":
    main()
