from __future__ import annotations

import numpy as np
import pytest
import supervision as sv

from grounded_sam.export.annotate import annotate_detections, detection_labels
from tests.export.conftest import CLASSES, scene_detections


@pytest.fixture
def image() -> np.ndarray:
    return np.full((80, 100, 3), 40, dtype=np.uint8)


def test_draws_masks_boxes_labels_without_touching_input(image: np.ndarray) -> None:
    dets = scene_detections(80, 100, CLASSES)
    before = image.copy()
    out = annotate_detections(image, dets, opacity=0.5)
    assert out.shape == image.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(image, before)
    # Inside the ring's hole nothing is drawn; on the ring the fill changes the pixels.
    assert (out[40, 50] == image[40, 50]).all()
    assert (out[dets.mask[1]] != 40).any(axis=1).mean() > 0.9


def test_opacity_zero_without_boxes_and_labels_is_identity(image: np.ndarray) -> None:
    dets = scene_detections(80, 100, CLASSES)
    out = annotate_detections(image, dets, opacity=0.0, draw_boxes=False, draw_labels=False)
    np.testing.assert_array_equal(out, image)
    stronger = annotate_detections(image, dets, opacity=1.0, draw_boxes=False, draw_labels=False)
    weaker = annotate_detections(image, dets, opacity=0.3, draw_boxes=False, draw_labels=False)
    m = dets.mask[0]
    assert np.abs(stronger[m].astype(int) - 40).mean() > np.abs(weaker[m].astype(int) - 40).mean()


def test_colors_are_rgb(image: np.ndarray) -> None:
    # supervision draws in BGR; the result must come back in RGB: the first palette color
    # (163, 81, 251) is blue-dominant, so the fill must raise blue more than red.
    dets = scene_detections(80, 100, CLASSES)[:1]
    out = annotate_detections(image, dets, opacity=1.0, draw_boxes=False, draw_labels=False)
    r, g, b = out[dets.mask[0]].mean(axis=0)
    assert b > r > g


def test_labels_text_and_classless_detections(image: np.ndarray) -> None:
    dets = scene_detections(80, 100, CLASSES)
    assert detection_labels(dets) == ["date 0.90", "fig 0.75", "hazelnut 0.60"]
    bare = sv.Detections(xyxy=dets.xyxy, mask=dets.mask)  # e.g. SAM "everything" masks
    assert detection_labels(bare) == ["#0", "#1", "#2"]
    assert annotate_detections(image, bare).shape == image.shape
    empty = annotate_detections(image, dets[np.zeros(3, dtype=bool)])
    np.testing.assert_array_equal(empty, image)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"opacity": 1.5}, "opacity"),
        ({"labels": ["one"]}, "labels"),
    ],
)
def test_bad_arguments(image: np.ndarray, kwargs: dict, match: str) -> None:
    dets = scene_detections(80, 100, CLASSES)
    with pytest.raises(ValueError, match=match):
        annotate_detections(image, dets, **kwargs)


def test_bad_image_or_mismatched_masks(image: np.ndarray) -> None:
    dets = scene_detections(80, 100, CLASSES)
    with pytest.raises(ValueError, match="uint8"):
        annotate_detections(image.astype(np.float32), dets)
    with pytest.raises(ValueError, match="Masks are"):
        annotate_detections(np.zeros((50, 50, 3), dtype=np.uint8), dets)


@pytest.mark.parametrize(
    "name", ["\udcffx", "猫", "crème brûlée", "a\nb\x00c", "🐱" * 100, "x" * 5000]
)
def test_any_label_text_is_drawn_without_crashing(image: np.ndarray, name: str) -> None:
    """OpenCV draws ASCII only, and text with lone surrogates crashed the process inside it."""
    from grounded_sam.export.annotate import drawable_text

    h, w = image.shape[:2]
    dets = scene_detections(h, w, [name, "b", "c"])
    out = annotate_detections(image, dets)
    assert out.shape == image.shape and not np.array_equal(out, image)
    text = drawable_text(name)
    assert text.isascii() and text.isprintable() and len(text) <= 60


def test_drawable_text_keeps_what_opencv_can_draw() -> None:
    from grounded_sam.export.annotate import drawable_text

    assert drawable_text("fig 0.87") == "fig 0.87"
    assert drawable_text("crème brûlée") == "creme brulee"
    assert drawable_text("猫 cat") == "? cat"
