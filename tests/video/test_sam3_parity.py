"""Propagation parity: our SAM 3 propagator vs transformers' ``Sam3TrackerVideoModel`` run as
its documentation does (``Sam3TrackerVideoProcessor`` session over the whole pre-loaded video,
``add_inputs_to_inference_session``, ``propagate_in_video_iterator``).

Both load the same tiny random SAM 3 folder (the Hub's sam3_video layout) from disk. The
reference gets the video whole, preprocessed by its video processor (``Sam2VideoVideoProcessor``
with SAM 3's normalisation, the checkpoint's mean and std), one session holding both objects
(processed as a batch), an unpruned memory bank; we stream frame by frame, one session per
track, the checkpoint's ``Sam3ImageProcessor`` for pixels and the bounded memory bank. Object 1
is prompted with a box, object 2 with a mask, both on frame 0; the video has 20 frames, more
than SAM 3's 16 object pointers, so the reference's ``min(num_frames, 16)`` pointer window is
streaming's 16.

Tolerances (float32, the same maths batched vs per object): low-res (32x32) mask logits within
2e-2 + 1e-3 |ref| (measured: max |diff| 9e-3 at |logit| up to 86), masks at the video's size
equal in >= 99.9 % of pixels (measured >= 99.997 %), object-score logits within 1e-3
(measured 2e-5). The reference's masks are real (random weights: 2-80 % of the frame) and
differ between the two objects and between frames, so equal masks are not a trivial match.
"""

from __future__ import annotations

import numpy as np
import torch

from grounded_sam.video.matching import tight_xyxy
from grounded_sam.video.sam3_propagator import Sam3TrackerPropagator
from grounded_sam.video.synthetic import demo_video

FRAMES = 20


def _reference(folder, frames, box, mask, size):
    """transformers' own SAM 3 tracker run: {frame: (masks (2,H,W), logits (2,L,L), scores)}."""
    import transformers
    from transformers.models.sam2_video.video_processing_sam2_video import (
        Sam2VideoVideoProcessor,
    )

    model = transformers.Sam3TrackerVideoModel.from_pretrained(folder).eval()
    images = transformers.Sam3ImageProcessor.from_pretrained(folder)
    side = int(model.config.image_size)
    videos = Sam2VideoVideoProcessor(
        size={"height": side, "width": side},
        image_mean=list(images.image_mean),
        image_std=list(images.image_std),
    )
    proc = transformers.Sam3TrackerVideoProcessor(images, videos, target_size=side)
    out = {}
    with torch.inference_mode():
        session = proc.init_video_session(video=np.stack(frames), inference_device="cpu")
        proc.add_inputs_to_inference_session(
            session, frame_idx=0, obj_ids=[1], input_boxes=[[box.tolist()]]
        )
        model(inference_session=session, frame_idx=0)
        proc.add_inputs_to_inference_session(session, frame_idx=0, obj_ids=[2], input_masks=[mask])
        model(inference_session=session, frame_idx=0)
        for res in model.propagate_in_video_iterator(session):
            masks = proc.post_process_masks([res.pred_masks], original_sizes=[list(size)])[0]
            out[res.frame_idx] = (
                masks[:, 0].numpy(),
                res.pred_masks[:, 0].float().numpy(),
                res.object_score_logits.reshape(-1).float().numpy(),
            )
    return out


def test_propagation_matches_transformers_sam3_tracker(sam3_video_dir, sam3_tracker):
    video = demo_video(FRAMES)
    frames = [video.frame(t) for t in range(FRAMES)]
    gt = np.stack(list(video.masks(0).values()))[:2]
    boxes = tight_xyxy(gt)
    ref = _reference(sam3_video_dir, frames, boxes[0], gt[1], video.size)
    assert sorted(ref) == list(range(FRAMES))
    # the reference produced real masks, different per object and changing over time
    areas = np.array([r[0].mean((1, 2)) for r in ref.values()])
    assert ((areas > 0.002) & (areas < 0.995)).all(), areas
    assert not np.array_equal(ref[0][0][0], ref[0][0][1])
    assert sum(not np.array_equal(ref[0][0], ref[t][0]) for t in range(1, FRAMES)) > 5

    prop = Sam3TrackerPropagator(*sam3_tracker)
    first = [
        prop.add(0, frames[0], [1], gt[:1], boxes[:1], "box"),
        prop.add(0, frames[0], [2], gt[1:], boxes[1:], "mask"),
    ]
    ours = [
        (
            np.concatenate([o.masks for o in first]),
            np.concatenate([o.low_res_logits for o in first]),
            np.concatenate([o.object_scores for o in first]),
        )
    ]
    for t in range(1, FRAMES):
        step = prop.step(t, frames[t])
        assert step.track_ids.tolist() == [1, 2]
        ours.append((step.masks, step.low_res_logits, step.object_scores))
    for t, (masks, logits, scores) in enumerate(ours):
        ref_masks, ref_logits, ref_scores = ref[t]
        agree = (masks == ref_masks).mean()
        assert agree >= 0.999, (t, agree)
        np.testing.assert_allclose(logits, ref_logits, atol=2e-2, rtol=1e-3, err_msg=f"frame {t}")
        np.testing.assert_allclose(scores, ref_scores, atol=1e-3, err_msg=f"frame {t}")
