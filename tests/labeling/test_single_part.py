"""One detection is one instance in COCO, YOLO and VOC, and the YOLO polygon keeps the mask."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import supervision as sv
from pycocotools.coco import COCO

from grounded_sam.export.single_part import join_mask_parts, join_parts_of_masks
from grounded_sam.labeling import export_dataset
from grounded_sam.results import make_detections
from tests.labeling.conftest import CLASSES, run


def parts(mask: np.ndarray) -> int:
    return cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)[0] - 1


def scattered(h: int, w: int, seed: int) -> np.ndarray:
    """(3, H, W): 12 scattered blobs with a hole in one; 5 specks; one solid box."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((3, h, w), dtype=bool)
    for _ in range(12):
        y, x = rng.integers(4, h - 14), rng.integers(4, w - 14)
        masks[0, y : y + rng.integers(4, 10), x : x + rng.integers(4, 10)] = True
    masks[0, 10:30, 10:30] = True
    masks[0, 16:22, 16:22] = False  # a hole
    for _ in range(5):
        y, x = rng.integers(0, h - 2), rng.integers(0, w - 2)
        masks[1, y : y + 2, x : x + 2] = True
    masks[2, h // 2 : h // 2 + 20, w // 2 : w // 2 + 25] = True
    return masks


class ScatteredEngine:
    """Duck-typed engine whose detections are masks in many parts."""

    def index(self, image: np.ndarray) -> np.ndarray:
        return image

    def query(self, image: np.ndarray, prompt: list[str], **kwargs: object) -> sv.Detections:
        h, w = image.shape[:2]
        masks = scattered(h, w, seed=h * w)
        xyxy = []
        for m in masks:
            ys, xs = np.nonzero(m)
            xyxy.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        return make_detections(
            masks=masks,
            xyxy=np.array(xyxy, dtype=np.float32),
            confidence=np.array([0.9, 0.7, 0.5], dtype=np.float32),
            class_id=np.array([0, 1, 2]),
            phrases=list(prompt),
            clip_score=np.array([0.3, 0.2, 0.1], dtype=np.float32),
            sam_iou=np.array([0.9, 0.8, 0.7], dtype=np.float32),
        )


def test_join_mask_parts_makes_one_piece_and_keeps_every_pixel() -> None:
    masks = scattered(120, 160, seed=1)
    assert parts(masks[0]) > 5 and parts(masks[1]) >= 3
    for mask in masks:
        joined = join_mask_parts(mask)
        assert parts(joined) == 1
        assert (joined >= mask).all()  # only link pixels are added
        added = int(joined.sum() - mask.sum())
        assert added < 0.02 * joined.size, added
    one = masks[2]
    assert join_mask_parts(one) is one  # one part: untouched
    assert join_parts_of_masks(None) is None
    assert join_parts_of_masks(masks[:0]).shape == (0, 120, 160)


@pytest.fixture
def datasets(image_folder: Path, tmp_path: Path) -> Path:
    out = tmp_path / "ds"
    run(ScatteredEngine(), image_folder, out, "coco")
    export_dataset(out, "yolo")
    export_dataset(out, "voc")
    return out


def test_coco_yolo_voc_have_the_same_instances_per_image(datasets: Path) -> None:
    out = datasets
    coco = COCO(str(out / "annotations.json"))
    per_image = {}
    for img in coco.dataset["images"]:
        names = [coco.cats[a["category_id"]]["name"] for a in coco.imgToAnns[img["id"]]]
        per_image[Path(img["file_name"]).stem] = sorted(names)
    assert len(per_image) == 4 and all(v == sorted(CLASSES) for v in per_image.values())
    yolo = sv.DetectionDataset.from_yolo(
        images_directory_path=str(out / "images"),
        annotations_directory_path=str(out / "labels"),
        data_yaml_path=str(out / "data.yaml"),
    )
    voc = sv.DetectionDataset.from_pascal_voc(
        images_directory_path=str(out / "images"),
        annotations_directory_path=str(out / "annotations"),
    )
    for ds in (yolo, voc):
        assert len(ds) == 4
        for path, _, dets in ds:
            names = sorted(ds.classes[i] for i in dets.class_id)
            assert names == per_image[Path(path).stem], (path, names)
    for stem in per_image:  # the score sidecar still matches the label lines
        labels = (out / "labels" / f"{stem}.txt").read_text().splitlines()
        scores = (out / "scores" / f"{stem}.txt").read_text().splitlines()
        assert len(labels) == len(scores) == 3


def test_yolo_round_trip_masks_overlap_the_originals(datasets: Path) -> None:
    yolo = sv.DetectionDataset.from_yolo(
        images_directory_path=str(datasets / "images"),
        annotations_directory_path=str(datasets / "labels"),
        data_yaml_path=str(datasets / "data.yaml"),
    )
    ious: dict[int, list[float]] = {0: [], 1: [], 2: []}
    covered: list[float] = []
    for _, _, dets in yolo:
        h, w = dets.mask.shape[1:]
        original = scattered(h, w, seed=h * w)
        for mask, class_id in zip(dets.mask, dets.class_id, strict=True):
            truth = original[class_id]
            ious[int(class_id)].append((mask & truth).sum() / (mask | truth).sum())
            covered.append((mask & truth).sum() / truth.sum())
    for k, name in enumerate(("13 blobs", "5 specks", "box")):
        print(f"YOLO round trip IoU, {name}: min {min(ious[k]):.3f}, mean {np.mean(ious[k]):.3f}")
    # Blobs (4-10 px, one with a hole) joined into one polygon, after supervision's default
    # 0.75 polygon simplification: the links and the simplification cost a few percent.
    assert min(ious[0]) > 0.85 and min(ious[2]) > 0.95
    # Five 2x2 specks spread over the image are the worst case for any one-polygon format:
    # the 1-px links are longer than the specks are large. The polygon still covers them.
    assert min(ious[1]) > 0.1
    print(f"share of original pixels inside the polygon: min {min(covered):.3f}")
    assert min(covered) > 0.9
