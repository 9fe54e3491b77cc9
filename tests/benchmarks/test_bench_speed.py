"""Mechanics of benchmarks/bench_speed.py (never timings: speed lives in benchmarks/RESULTS.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from benchmarks import bench_speed


def test_phrase_source_never_repeats() -> None:
    source = bench_speed.PhraseSource()
    phrases = [source() for _ in range(3 * len(bench_speed.PHRASES))]
    assert len(set(phrases)) == len(phrases)


def test_realistic_init_avoids_denormal_weights() -> None:
    from transformers import SamModel

    from grounded_sam.sam.tiny import tiny_sam_config

    model = SamModel(tiny_sam_config())
    qkv = model.vision_encoder.layers[0].attn.qkv.weight
    assert qkv.abs().max() < 1e-6  # transformers' default init (initializer_range=1e-10)
    bench_speed.realistic_init_(model, seed=0)
    fan_in = qkv.shape[1]
    assert qkv.std().item() == pytest.approx(fan_in**-0.5, rel=0.2)
    conv = model.mask_decoder.upscale_conv1.weight
    assert torch.equal(conv, conv[:, :, :1, :1].expand_as(conv))  # tied 2x2 taps
    pe = model.shared_image_embedding.positional_embedding
    assert pe.std().item() == pytest.approx(1.0, rel=0.3)


def _fake_result() -> dict:
    rows: dict[str, list[dict]] = {"ours": [], "ours_new": [], "ref": [], "hf": []}
    for r in range(3):
        for i in range(2):
            rows["ours"].append({
                "round": r, "image": i, "encoder": 1.0, "proposals": 2.0, "clip_regions": 1.0,
                "text": 0.1, "box_decode": 0.1, "total": 4.2, "n_proposals": 100,
                "n_scored": 100, "n_boxes": 10,
            })
            rows["ours_new"].append({"round": r, "image": i, "total": 0.2, "n_boxes": 10})
            rows["ref"].append({
                "round": r, "image": i, "encoder": 1.5, "proposals": 6.0, "clip_regions": 1.0,
                "text": 0.1, "reencode": 1.5, "box_decode": 0.1, "total": 10.2 + r,
                "total_reusing_embedding": 8.7, "n_proposals": 150 + i, "n_scored": 100,
                "n_boxes": 10,
            })
            rows["hf"].append({"round": r, "image": i, "proposals": 4.0, "n_proposals": 150})
    mem = {"image": "/x/0.jpg", "rss_after_load_mib": 1000.0, "peak_rss_mib": 2000.0,
           "peak_above_load_mib": 1000.0}
    return {
        "timing": {"rows": rows},
        "images": ["/d/a/images/1.jpg", "/d/b/images/2.jpg"],
        "image_sizes": [[480, 640], [600, 800]],
        "memory": {"ours": mem, "ref": {**mem, "peak_rss_mib": 3000.0}},
    }


def test_build_tables_reports_medians_ratios_and_counts() -> None:
    md, summary = bench_speed.build_tables(_fake_result())
    assert "| **end to end** | 4.20 s (4.20 s–4.20 s) | 11.2 s (10.2 s–12.2 s) | 2.7× |" in md
    assert "| proposals vs transformers pipeline('mask-generation') | 2.00 s" in md
    assert "CLIP region scoring (100 vs 100 regions)" in md
    assert "| a/1.jpg | 640×480 | 100 / 150 / 150 | 100 / 100 | 10 / 10 | 10 |" in md
    assert "| b/2.jpg | 800×600 | 100 / 151 / 150 |" in md
    assert "| peak RSS during the run (MiB) | 2000 | 3000 | 1.50 |" in md
    new = summary["ours_new:total|ref:total"]
    assert new["ratio"] == pytest.approx(11.2 / 0.2)
    json.dumps(summary)  # serialisable


@pytest.mark.slow
def test_bench_speed_end_to_end_tiny(tmp_path: Path, tiny_model_specs: tuple[str, str]) -> None:
    """The whole script with tiny models on one real image (about a minute on 2 CPU cores)."""
    from benchmarks.common import SHARED_DATA

    image = SHARED_DATA / bench_speed.DEFAULT_IMAGES[0]
    if not image.is_file():
        pytest.skip("../shared/data not present")
    sam, clip = tiny_model_specs
    out = tmp_path / "speed"
    result = bench_speed.main([
        "--sam", sam, "--clip", clip, "--image-paths", str(image), "--repeats", "1",
        "--new-phrases", "1", "--pred-iou-thresh", "0", "--stability-score-thresh", "0.3",
        "--box-nms-thresh", "1.0", "--out", str(out), "--label",
    ])
    assert result is not None
    rows = result["timing"]["rows"]
    assert len(rows["ours"]) == len(rows["ref"]) == len(rows["hf"]) == 1
    assert rows["ours"][0]["n_scored"] == rows["ref"][0]["n_scored"]
    # ours decodes every proposal's box in index (prefetch), the query then decodes none
    assert rows["ours"][0]["n_boxes_index"] == rows["ours"][0]["n_proposals"]
    assert rows["ours"][0]["n_boxes"] == 0 and rows["ref"][0]["n_boxes"] > 0
    assert len(rows["ours_label"]) == len(rows["ref_label"]) == 1
    assert "images/min" in out.with_suffix(".md").read_text()
    assert result["memory"]["ours"]["peak_rss_mib"] > 0
    assert out.with_suffix(".md").read_text().startswith("| stage")
