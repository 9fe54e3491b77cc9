"""SAM 3's tracker as the propagator, on a tiny random SAM 3 in the Hub's sam3_video layout.

What is checked: the checkpoint loads as the SAM 3 grounder and as the tracker with the same
backbone; image-only SAM 3 and non-SAM 3 checkpoints are refused with what to pass; the
tracker sees the grounder's pixels; box and mask prompts start tracks; the bounded memory bank
gives exactly the unpruned session's answers at a constant size; the backbone runs once per
frame and is shared with the grounder without changing an answer.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from grounded_sam.errors import ModelLoadError
from grounded_sam.video.matching import tight_xyxy
from grounded_sam.video.sam3_propagator import (
    Sam3TrackerPropagator,
    check_sam3_tracker,
    load_sam3_tracker,
)
from grounded_sam.video.synthetic import demo_video

CPU = torch.device("cpu")


def _prompts(video, t=0):
    masks = np.stack(list(video.masks(t).values()))
    return masks, tight_xyxy(masks)


def test_checkpoint_loads_as_grounder_and_tracker(sam3_video_dir, sam3_tracker):
    import json

    from grounded_sam.sam.sam3 import Sam3Backend, load_sam3

    assert json.loads((sam3_video_dir / "config.json").read_text())["model_type"] == "sam3_video"
    backend = load_sam3(sam3_video_dir, CPU, torch.float32)
    assert isinstance(backend, Sam3Backend)
    model, processor = sam3_tracker
    assert type(model).__name__ == "Sam3TrackerVideoModel"
    ours = backend.model.vision_encoder.backbone.state_dict()
    theirs = model.vision_encoder.backbone.state_dict()
    assert ours.keys() == theirs.keys()
    for k, v in theirs.items():
        assert torch.equal(v, ours[k]), k
    # the tracker reads the frame as the grounder does (the checkpoint's processor)
    frame = demo_video(2).frame(1)
    prop = Sam3TrackerPropagator(model, processor)
    assert torch.equal(prop._frame_pixels(1, frame), backend.pixels([frame]))
    assert tuple(prop._frame_pixels(1, frame).shape) == (1, 3, prop.side, prop.side)


def test_image_only_sam3_and_other_families_are_refused(tiny_model_specs):
    from tests.sam.sam3_models import tiny_sam3_folder

    image_only = tiny_sam3_folder()
    with pytest.raises(ModelLoadError, match="image-only SAM 3 save .* --propagator"):
        check_sam3_tracker(image_only)
    with pytest.raises(ModelLoadError, match="image-only SAM 3"):
        load_sam3_tracker(image_only, CPU, torch.float32)
    with pytest.raises(ModelLoadError, match="not SAM 3"):
        load_sam3_tracker(tiny_model_specs[0], CPU, torch.float32)


def test_processor_of_another_size_is_refused(sam3_tracker):
    import transformers

    model, _ = sam3_tracker
    wrong = transformers.Sam3ImageProcessor(size={"height": 1008, "width": 1008})
    with pytest.raises(ValueError, match="resizes to 1008x1008"):
        Sam3TrackerPropagator(model, wrong)


@pytest.mark.parametrize("prompt", ["box", "mask"])
def test_prompt_then_propagate(sam3_tracker, prompt):
    video = demo_video(6)
    prop = Sam3TrackerPropagator(*sam3_tracker)
    masks, boxes = _prompts(video)
    out = prop.add(0, video.frame(0), [4, 8], masks, boxes, prompt)
    assert out.track_ids.tolist() == [4, 8]
    assert out.masks.shape == (2, *video.size) and out.masks.dtype == bool
    side = 4 * (prop.side // 14)  # SAM 3's low-res masks: 4x the 14-pixel patch grid
    assert out.low_res_logits.shape == (2, side, side)
    if prompt == "mask":  # the mask prompt is the output on its frame
        assert out.masks.any((1, 2)).all()
    for t in range(1, 6):
        step = prop.step(t, video.frame(t))
        assert step.track_ids.tolist() == [4, 8]
        assert np.isfinite(step.object_scores).all() and step.masks.any((1, 2)).all()
    prop.remove([4])
    assert prop.step(6, video.frame(5)).track_ids.tolist() == [8]


def _run(prop, video, frames):
    """Two box-prompted tracks from frame 0, a mask-prompted third from frame 4."""
    out = []
    masks, boxes = _prompts(video)
    out.append(prop.add(0, video.frame(0), [1, 2], masks[:2], boxes[:2], "box"))
    for t in range(1, frames):
        out.append(prop.step(t, video.frame(t)))
        if t == 4:
            m, b = _prompts(video, 4)
            out.append(prop.add(t, video.frame(t), [3], m[-1:], b[-1:], "mask"))
    return out


def test_bounded_memory_bank_is_exact_and_constant(sam3_tracker):
    frames = 20  # past SAM 3's 16 object pointers
    video = demo_video(frames)
    bounded = Sam3TrackerPropagator(*sam3_tracker)
    full = Sam3TrackerPropagator(*sam3_tracker, bounded=False)
    a, b = _run(bounded, video, frames), _run(full, video, frames)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.track_ids, y.track_ids)
        np.testing.assert_array_equal(x.masks, y.masks)
        np.testing.assert_array_equal(x.object_scores, y.object_scores)
    areas = [x.masks.mean() for x in a[1:]]
    assert all(0.002 < v < 0.998 for v in areas), areas  # real masks, not all empty or full
    cfg = sam3_tracker[0].config
    for tid in (1, 2):
        small = bounded._sessions[tid]
        kept = small.output_dict_per_obj[0]["non_cond_frame_outputs"]
        assert len(kept) == cfg.max_object_pointers_in_encoder - 1  # 15: constant
        assert sum("maskmem_features" in o for o in kept.values()) == cfg.num_maskmem - 1  # 6
        assert len(small.processed_frames) == 1
        assert len(full._sessions[tid].processed_frames) == frames
    assert len(full._sessions[1].output_dict_per_obj[0]["non_cond_frame_outputs"]) == frames - 1


def test_backbone_runs_once_per_frame_and_is_shared(sam3_video_dir, sam3_tracker):
    from grounded_sam.sam.sam3 import load_sam3

    video = demo_video(5)
    masks, boxes = _prompts(video)
    backend = load_sam3(sam3_video_dir, CPU, torch.float32)
    own = Sam3TrackerPropagator(*sam3_tracker)
    shared = Sam3TrackerPropagator(*load_sam3_tracker(sam3_video_dir, CPU, torch.float32))
    assert shared.share_image_encoder(backend.model)
    assert shared.model.vision_encoder.backbone is backend.model.vision_encoder.backbone
    assert shared.model.vision_encoder.neck is not backend.model.vision_encoder.neck
    calls = []
    hook = shared.model.vision_encoder.register_forward_hook(lambda *a: calls.append(1))
    try:
        for prop in (own, shared):
            prop.add(0, video.frame(0), [1, 2], masks[:2], boxes[:2], "box")
        for t in range(1, 5):
            a, b = own.step(t, video.frame(t)), shared.step(t, video.frame(t))
            np.testing.assert_array_equal(a.masks, b.masks)
            np.testing.assert_array_equal(a.object_scores, b.object_scores)
    finally:
        hook.remove()
    assert len(calls) == 5  # 5 frames, 2 tracks each
    # a backbone of other weights is not taken
    with torch.no_grad():
        backend.model.vision_encoder.backbone.embeddings.position_embeddings.add_(1.0)
    fresh = Sam3TrackerPropagator(*load_sam3_tracker(sam3_video_dir, CPU, torch.float32))
    assert not fresh.share_image_encoder(backend.model)
    assert fresh.model.vision_encoder.backbone is not backend.model.vision_encoder.backbone
