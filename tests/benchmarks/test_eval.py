"""The quality harness (benchmarks/eval.py) end to end: mechanics and output format only.

With tiny random models the numbers mean nothing; these tests check that the harness runs on
COCO-format data (a synthetic dataset written here, and ../shared/data when present), writes
well-formed JSON and markdown, and that its metric plumbing scores a perfect prediction as
perfect.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import supervision as sv
import torch
from PIL import Image

from benchmarks import eval as harness

CATEGORIES = [{"id": 1, "name": "square"}, {"id": 7, "name": "disk"}]


def _disk(h: int, w: int, cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2


def write_synthetic_coco(root: Path, n_images: int = 2, seed: int = 0) -> Path:
    """A tiny COCO instances dataset: squares (polygons) and disks (RLE) on noise."""
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    images, annotations = [], []
    ann_id = 1
    for i in range(n_images):
        h, w = 96, 128
        img = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
        x0, y0, side = 10 + 5 * i, 12, 30
        img[y0 : y0 + side, x0 : x0 + side] = (220, 40, 40)
        disk = _disk(h, w, 55, 90 - 4 * i, 16)
        img[disk] = (40, 200, 60)
        name = f"img{i}.png"
        Image.fromarray(img).save(root / "images" / name)
        images.append({"id": 100 + i, "file_name": name, "height": h, "width": w})
        poly = [x0, y0, x0 + side, y0, x0 + side, y0 + side, x0, y0 + side]
        annotations.append({
            "id": ann_id, "image_id": 100 + i, "category_id": 1, "iscrowd": 0,
            "segmentation": [[float(v) for v in poly]], "area": float(side * side),
            "bbox": [x0, y0, side, side],
        })
        ann_id += 1
        rle = mask_utils.encode(np.asfortranarray(disk.astype(np.uint8)))
        annotations.append({
            "id": ann_id, "image_id": 100 + i, "category_id": 7, "iscrowd": 0,
            "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("ascii")},
            "area": float(disk.sum()), "bbox": [float(v) for v in mask_utils.toBbox(rle)],
        })
        ann_id += 1
    data = {"images": images, "annotations": annotations, "categories": CATEGORIES}
    (root / "instances.json").write_text(json.dumps(data))
    return root


def _check_report(report: dict, out: Path, n_datasets: int, n_images: int) -> None:
    assert out.is_file()
    on_disk = json.loads(out.read_text())
    assert on_disk["results"] == json.loads(json.dumps(report["results"]))
    md = out.with_suffix(".md").read_text()
    assert md.startswith("| dataset |")
    assert len([line for line in md.splitlines() if line.startswith("|")]) == 2 + n_datasets
    assert {"machine", "config", "results", "markdown"} <= set(on_disk)
    assert on_disk["machine"]["torch"] == torch.__version__
    assert len(on_disk["results"]) == n_datasets
    for res in on_disk["results"]:
        assert res["n_images"] == n_images
        assert res["n_gt_instances"] > 0
        assert set(harness.METRIC_KEYS) <= set(res["metrics"])
        for key in harness.METRIC_KEYS:
            value = res["metrics"][key]
            assert isinstance(value, float) and not math.isnan(value)
            assert 0.0 <= value <= 1.0
        assert res["images_per_s"] > 0
        assert len(res["per_image"]) == n_images
        for row in res["per_image"]:
            assert row["detections"] >= 0 and row["proposals"] >= 0 and row["prompts"] >= 1


def _tiny_args(sam: str, clip: str, out: Path) -> list[str]:
    return [
        "--sam", sam, "--clip", clip, "--device", "cpu", "--points-per-side", "4",
        "--pred-iou-thresh", "0", "--stability-score-thresh", "0.5", "--out", str(out),
    ]


def test_eval_synthetic_dataset(tmp_path: Path, tiny_model_specs: tuple[str, str]) -> None:
    data = write_synthetic_coco(tmp_path / "synthetic")
    out = tmp_path / "out" / "eval.json"
    report = harness.main(["--data", str(data), *_tiny_args(*tiny_model_specs, out)])
    _check_report(report, out, n_datasets=1, n_images=2)
    res = report["results"][0]
    assert res["prompts_per_image"] == 2.0
    assert report["config"]["prompting"] == "classes present"


def test_eval_all_classes_and_ann_images_args(
    tmp_path: Path, tiny_model_specs: tuple[str, str]
) -> None:
    data = write_synthetic_coco(tmp_path / "synthetic", n_images=1)
    out = tmp_path / "eval.json"
    report = harness.main([
        "--ann", str(data / "instances.json"), "--images", str(data / "images"),
        "--name", "synth", "--all-classes", *_tiny_args(*tiny_model_specs, out),
    ])
    _check_report(report, out, n_datasets=1, n_images=1)
    assert report["results"][0]["dataset"] == "synth"
    assert report["results"][0]["prompts_per_image"] == len(CATEGORIES)


def test_eval_shared_data(
    tmp_path: Path, shared_data: Path, tiny_model_specs: tuple[str, str]
) -> None:
    out = tmp_path / "eval.json"
    report = harness.main([
        "--data", str(shared_data / "coco-val-mini"), "--max-images", "2",
        *_tiny_args(*tiny_model_specs, out),
    ])
    _check_report(report, out, n_datasets=1, n_images=2)


class _OracleEngine:
    """Stand-in engine that 'detects' exactly the ground truth (checks the metric plumbing)."""

    def __init__(self, dataset: harness.Dataset) -> None:
        from pycocotools.coco import COCO

        self.coco = COCO(str(dataset.ann_file))
        self.by_image: list[tuple[np.ndarray, int]] = []
        for image_id in self.coco.getImgIds():
            info = self.coco.loadImgs(image_id)[0]
            arr = np.asarray(Image.open(dataset.image_dir / info["file_name"]).convert("RGB"))
            self.by_image.append((arr, image_id))

    def index(self, image: np.ndarray):
        image_id = next(i for arr, i in self.by_image if np.array_equal(arr, image))
        anns = self.coco.loadAnns(self.coco.getAnnIds(imgIds=image_id))
        masks = np.stack([self.coco.annToMask(a).astype(bool) for a in anns])
        proposals = SimpleNamespace(full_masks=lambda: torch.from_numpy(masks))
        return _Index(anns, masks, proposals)

    def query(self, index, names: list[str]) -> sv.Detections:
        cats = {c["id"]: c["name"] for c in self.coco.loadCats(self.coco.getCatIds())}
        labels = [cats[a["category_id"]] for a in index.anns]
        keep = [k for k, name in enumerate(labels) if name in names]
        n = len(keep)
        return sv.Detections(
            xyxy=np.zeros((n, 4), dtype=np.float32),
            mask=index.masks[keep],
            confidence=np.linspace(0.9, 0.5, n).astype(np.float32),
            class_id=np.array([names.index(labels[k]) for k in keep], dtype=int),
            data={"class_name": np.array([labels[k] for k in keep])},
        )


class _Index:
    def __init__(self, anns, masks, proposals) -> None:
        self.anns, self.masks, self.proposals = anns, masks, proposals

    def __len__(self) -> int:
        return len(self.anns)


def test_perfect_predictions_score_perfectly(tmp_path: Path) -> None:
    data = write_synthetic_coco(tmp_path / "synthetic")
    dataset = harness.Dataset("synthetic", data / "instances.json", data / "images")
    args = harness.build_parser().parse_args(["--data", str(data)])
    result = harness.evaluate_dataset(_OracleEngine(dataset), dataset, args)
    assert result.n_images == 2 and result.n_gt == 4 and result.n_detections == 4
    for key in harness.METRIC_KEYS:
        assert result.metrics[key] == pytest.approx(1.0, abs=1e-6), key
    assert "| synthetic | 2 | 4 |" in harness.markdown_table([result])


def test_missing_dataset_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="instances.json"):
        harness.find_datasets(harness.build_parser().parse_args(["--data", str(tmp_path)]))
    with pytest.raises(ValueError, match="at least one dataset"):
        harness.find_datasets(harness.build_parser().parse_args([]))
