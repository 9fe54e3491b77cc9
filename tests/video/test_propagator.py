"""The SAM 2.1 propagator over transformers' ``Sam2VideoModel`` on tiny random weights.

What is checked: the checkpoint loads as both the image back-end and the video model; box and
mask prompts start tracks; the bounded memory bank gives exactly the unpruned session's masks
and object scores while holding a constant number of frames; the image encoder runs once per
frame however many tracks there are; removed tracks are gone.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from grounded_sam.errors import ModelLoadError
from grounded_sam.video.matching import tight_xyxy
from grounded_sam.video.propagator import Sam2VideoPropagator, load_video_model
from grounded_sam.video.synthetic import demo_video

CPU = torch.device("cpu")


def _prompts(video, t=0):
    gt = video.masks(t)
    masks = np.stack(list(gt.values()))
    return masks, tight_xyxy(masks)


def test_checkpoint_loads_as_image_back_end_and_video_model(video_sam_dir, video_model):
    from grounded_sam.sam.factory import load_predictor
    from grounded_sam.sam.sam2 import Sam2Predictor

    predictor = load_predictor(video_sam_dir, CPU, torch.float32)
    assert isinstance(predictor, Sam2Predictor)
    assert type(video_model).__name__ == "Sam2VideoModel"
    # the image path's weights are the same tensors in both
    ours = predictor.model.vision_encoder.state_dict()
    for k, v in video_model.vision_encoder.state_dict().items():
        assert torch.equal(v, ours[k]), k


def test_image_only_and_sam1_checkpoints_are_refused(tmp_path, tiny_model_specs):
    from grounded_sam.sam.tiny import save_tiny_sam2

    image_only = save_tiny_sam2(tmp_path / "sam2-image")
    with pytest.raises(ModelLoadError, match="video memory weights"):
        load_video_model(image_only, CPU, torch.float32)
    with pytest.raises(ModelLoadError, match="needs SAM 2 / 2.1"):
        load_video_model(tiny_model_specs[0], CPU, torch.float32)


@pytest.mark.parametrize("prompt", ["box", "mask"])
def test_prompt_then_propagate(video_model, prompt):
    video = demo_video(8)
    prop = Sam2VideoPropagator(video_model)
    masks, boxes = _prompts(video)
    out = prop.add(0, video.frame(0), [7, 9], masks, boxes, prompt)
    assert out.track_ids.tolist() == [7, 9]
    assert out.masks.shape == (2, *video.size) and out.masks.dtype == bool
    if prompt == "mask":  # a mask prompt is the output on its frame (SAM 2's mask-as-output)
        assert out.masks.any((1, 2)).all()
    for t in range(1, 8):
        step = prop.step(t, video.frame(t))
        assert step.track_ids.tolist() == [7, 9]
        assert np.isfinite(step.object_scores).all()
        assert step.masks.shape == (2, *video.size)
    prop.remove([7])
    assert prop.step(8, video.frame(7)).track_ids.tolist() == [9]


def _run(prop, video, frames):
    """Two box-prompted tracks from frame 0, a mask-prompted third from frame 5."""
    out = []
    masks, boxes = _prompts(video)
    out.append(prop.add(0, video.frame(0), [1, 2], masks[:2], boxes[:2], "box"))
    for t in range(1, frames):
        out.append(prop.step(t, video.frame(t)))
        if t == 5:
            m, b = _prompts(video, 5)
            out.append(prop.add(t, video.frame(t), [3], m[-1:], b[-1:], "mask"))
    return out


def test_bounded_memory_bank_is_exact_and_constant(video_model):
    video = demo_video(26)
    bounded = Sam2VideoPropagator(video_model)
    full = Sam2VideoPropagator(video_model, bounded=False)
    a, b = _run(bounded, video, 26), _run(full, video, 26)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.track_ids, y.track_ids)
        np.testing.assert_array_equal(x.masks, y.masks)
        np.testing.assert_array_equal(x.object_scores, y.object_scores)
    assert any(x.masks.any() for x in a[1:])  # not all empty
    cfg = video_model.config
    for tid in (1, 2, 3):
        small, large = bounded._sessions[tid], full._sessions[tid]
        kept = small.output_dict_per_obj[0]["non_cond_frame_outputs"]
        assert len(kept) == cfg.max_object_pointers_in_encoder - 1  # 15: constant
        with_memory = [f for f, o in kept.items() if "maskmem_features" in o]
        assert len(with_memory) == cfg.num_maskmem - 1  # 6
        assert len(small.processed_frames) == 1
        assert len(large.processed_frames) == (26 if tid < 3 else 21)
    assert len(full._sessions[1].output_dict_per_obj[0]["non_cond_frame_outputs"]) == 25


def test_image_encoder_runs_once_per_frame(video_model):
    video = demo_video(6)
    prop = Sam2VideoPropagator(video_model)
    calls = []
    hook = video_model.vision_encoder.register_forward_hook(lambda *a: calls.append(1))
    try:
        masks, boxes = _prompts(video)
        prop.add(0, video.frame(0), [1, 2], masks, boxes, "mask")
        for t in range(1, 6):
            prop.step(t, video.frame(t))
            if t == 3:
                prop.add(t, video.frame(t), [3], masks[:1], boxes[:1], "box")
    finally:
        hook.remove()
    assert len(calls) == 6  # 6 frames, 2-3 tracks each


def test_sharing_the_engines_image_encoder_changes_nothing(video_sam_dir):
    from grounded_sam.sam.factory import load_predictor

    predictor = load_predictor(video_sam_dir, CPU, torch.float32)
    video = demo_video(4)
    masks, boxes = _prompts(video)
    own = Sam2VideoPropagator(load_video_model(video_sam_dir, CPU, torch.float32))
    shared = Sam2VideoPropagator(load_video_model(video_sam_dir, CPU, torch.float32))
    assert shared.share_image_encoder(predictor.model)
    assert shared.model.vision_encoder is predictor.model.vision_encoder
    for prop in (own, shared):
        prop.add(0, video.frame(0), [1], masks[:1], boxes[:1], "box")
    for t in range(1, 4):
        a, b = own.step(t, video.frame(t)), shared.step(t, video.frame(t))
        np.testing.assert_array_equal(a.masks, b.masks)


def test_bad_prompt_and_live_id(video_model):
    video = demo_video(2)
    prop = Sam2VideoPropagator(video_model)
    masks, boxes = _prompts(video)
    with pytest.raises(ValueError, match="prompt"):
        prop.add(0, video.frame(0), [1], masks[:1], boxes[:1], "points")
    prop.add(0, video.frame(0), [1], masks[:1], boxes[:1], "box")
    with pytest.raises(ValueError, match="already live"):
        prop.add(0, video.frame(0), [1], masks[:1], boxes[:1], "box")
