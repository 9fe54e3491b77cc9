"""SamPredictor behaviour that the parity tests do not cover: input validation, batching,
embedding reuse, output contracts and reduced precision."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from grounded_sam.sam.loading import load_sam_model
from grounded_sam.sam.predictor import SamPredictor
from grounded_sam.sam.types import DecoderOutput, ImageEmbedding, Prediction

from .images import random_image, shapes_image

H, W = 120, 200


@pytest.fixture(scope="module")
def embedding(predictor) -> ImageEmbedding:
    return predictor.encode(random_image(H, W))


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


# -- output contracts ------------------------------------------------------------------------


def test_encode_output(predictor, embedding, sam_model):
    side = sam_model.config.vision_config.image_size
    e = side // sam_model.config.vision_config.patch_size
    channels = sam_model.config.vision_config.output_channels
    assert embedding.embeddings.shape == (1, channels, e, e)
    assert embedding.embeddings.dtype == torch.float32
    assert embedding.original_size == (H, W)
    assert embedding.input_size == predictor.transform.input_size((H, W))
    assert max(embedding.input_size) == side


@pytest.mark.parametrize("multimask", [True, False])
def test_decode_and_predict_shapes(predictor, embedding, multimask):
    side = predictor.transform.low_res_size
    c = 3 if multimask else 1
    out = predictor.decode(
        embedding,
        points=torch.tensor([[[50.0, 60.0]], [[150.0, 30.0]]]),
        labels=torch.ones(2, 1, dtype=torch.long),
        multimask_output=multimask,
    )
    assert isinstance(out, DecoderOutput)
    assert out.low_res_logits.shape == (2, c, side, side)
    assert out.low_res_logits.dtype == torch.float32
    assert out.iou_scores.shape == (2, c) and out.iou_scores.dtype == torch.float32
    up = predictor.upscale(embedding, out.low_res_logits)
    assert up.shape == (2, c, H, W) and up.dtype == torch.float32

    pred = predictor.predict(embedding, points=[[50, 60]], multimask_output=multimask)
    assert isinstance(pred, Prediction)
    assert pred.masks.shape == (c, H, W) and pred.masks.dtype == bool
    assert pred.iou_predictions.shape == (c,)
    assert pred.low_res_logits.shape == (c, side, side)
    # masks are the upscaled logits thresholded at mask_threshold
    up1 = predictor.upscale(embedding, torch.from_numpy(pred.low_res_logits)[None])[0]
    np.testing.assert_array_equal(pred.masks, (up1 > predictor.mask_threshold).numpy())


def test_predict_single_box_vs_box_batch_shapes(predictor, embedding):
    single = predictor.predict(embedding, box=[10, 10, 100, 90])
    assert single.masks.shape == (3, H, W)
    batch = predictor.predict(embedding, box=[[10, 10, 100, 90], [50, 20, 190, 110]])
    assert batch.masks.shape == (2, 3, H, W) and batch.iou_predictions.shape == (2, 3)
    np.testing.assert_array_equal(batch.masks[0], single.masks)
    # shared points with several boxes, and a single mask_input broadcast to every box
    with_pts = predictor.predict(
        embedding,
        points=[[60, 50]],
        labels=[1],
        box=[[10, 10, 100, 90], [50, 20, 190, 110]],
        mask_input=single.low_res_logits[:1],
    )
    assert with_pts.masks.shape == (2, 3, H, W)


# -- invalid prompts -------------------------------------------------------------------------


BAD_PROMPTS = {
    "point_right_of_image": ({"points": [[250.0, 10.0]]}, r"Point \[250.0, 10.0\] lies outside"),
    "point_negative_x": ({"points": [[-1.0, 10.0]]}, r"outside the image \(width 200, height 120"),
    "point_below_image": ({"points": [[10.0, 121.0]]}, "outside the image"),
    "point_not_xy": ({"points": [[10.0, 10.0, 3.0]]}, r"shape \(N, 2\)"),
    "point_nan": ({"points": [[np.nan, 10.0]]}, "NaN"),
    "box_x2_lt_x1": ({"box": [100.0, 10.0, 50.0, 60.0]}, r"x2 < x1 or y2 < y1"),
    "box_y2_lt_y1": ({"box": [10.0, 60.0, 50.0, 20.0]}, r"x2 < x1 or y2 < y1"),
    "box_past_right_edge": ({"box": [10.0, 10.0, 250.0, 60.0]}, r"extends outside the image"),
    "box_negative": ({"box": [-5.0, 10.0, 50.0, 60.0]}, "outside the image"),
    "box_not_xyxy": ({"box": [10.0, 10.0, 50.0]}, r"shape \(N, 4\)"),
    "labels_count": (
        {"points": [[10.0, 10.0], [20.0, 20.0]], "labels": [1]},
        "2 points but 1 labels",
    ),
    "label_2": ({"points": [[10.0, 10.0]], "labels": [2]}, r"1 \(foreground\) or 0"),
    "label_minus_1": ({"points": [[10.0, 10.0]], "labels": [-1]}, r"1 \(foreground\) or 0"),
    "labels_without_points": ({"labels": [1]}, "labels were given without points"),
    "mask_wrong_side": (
        {"mask_input": np.zeros((1, 32, 32))},
        r"mask_input must be low-res logits shaped \(1, 64, 64\)",
    ),
    "mask_two_channels": ({"mask_input": np.zeros((2, 2, 64, 64))}, r"shaped \(1, 64, 64\)"),
    "mask_batch_mismatch": (
        {"box": [[0.0, 0.0, 10.0, 10.0]] * 2, "mask_input": np.zeros((3, 1, 64, 64))},
        "3 masks for 2 prompts",
    ),
    "no_prompt": ({}, "at least one prompt"),
}


@pytest.mark.parametrize(("kwargs", "message"), list(BAD_PROMPTS.values()), ids=list(BAD_PROMPTS))
def test_bad_prompts_raise_clear_value_errors(predictor, embedding, kwargs, message):
    assert predictor.transform.low_res_size == 64  # the message patterns above assume it
    with pytest.raises(ValueError, match=message):
        predictor.predict(embedding, **kwargs)


def test_decode_rejects_missing_or_mismatched_prompts(predictor, embedding):
    with pytest.raises(ValueError, match="at least one prompt"):
        predictor.decode(embedding)
    with pytest.raises(ValueError, match="labels"):
        predictor.decode(embedding, points=torch.zeros(1, 1, 2))
    with pytest.raises(ValueError, match="same batch size"):
        predictor.decode(
            embedding,
            points=torch.zeros(2, 1, 2),
            labels=torch.ones(2, 1),
            boxes=torch.tensor([[0.0, 0.0, 5.0, 5.0]] * 3),
        )


# -- batching and reuse ----------------------------------------------------------------------

# A batch of B prompts and B single decodes do the same float32 maths in a different memory
# layout (batched matmuls, so another summation order, chosen by the CPU's kernels). The rounding
# error of a reordered sum scales with its summands, not with its result: logits near 0 come
# from cancelling terms of the logit scale (|x| ~20), so the bound is absolute, a few float32
# ulps of that scale per accumulating layer: 20 * 1.2e-7 (eps) * ~20 layers/steps ~ 5e-5.
# Measured: 1.1e-5 on one CPU, 1.6e-5 on an AMX Xeon, 1.57e-5 on an AVX2-only EPYC (issue 22).
# A real batching bug (a row mixed with another prompt) moves logits by O(0.1-10).
BATCH_TOL = {"rtol": 1e-5, "atol": 5e-5}


@pytest.mark.parametrize("kind", ["points", "boxes", "points+boxes", "mask"])
def test_decode_batch_equals_one_by_one(predictor, embedding, kind):
    side = predictor.transform.low_res_size
    points = torch.tensor(
        [
            [[20.0, 30.0], [60.0, 90.0]],
            [[150.0, 40.0], [100.0, 100.0]],
            [[199.0, 119.0], [0.0, 0.0]],
        ]
    )
    labels = torch.tensor([[1, 0], [1, 1], [1, 0]])
    boxes = torch.tensor(
        [[5.0, 5.0, 80.0, 70.0], [90.0, 20.0, 190.0, 110.0], [0.0, 0.0, 200.0, 120.0]]
    )
    masks = torch.randn(3, 1, side, side, generator=torch.Generator().manual_seed(0)) * 4
    prompts = {
        "points": {"points": points, "labels": labels},
        "boxes": {"boxes": boxes},
        "points+boxes": {"points": points, "labels": labels, "boxes": boxes},
        "mask": {"mask_input": masks, "boxes": boxes},
    }[kind]
    batch = predictor.decode(embedding, **prompts)
    for i in range(3):
        one = predictor.decode(embedding, **{k: v[i : i + 1] for k, v in prompts.items()})
        torch.testing.assert_close(one.low_res_logits[0], batch.low_res_logits[i], **BATCH_TOL)
        torch.testing.assert_close(one.iou_scores[0], batch.iou_scores[i], **BATCH_TOL)
    # prompts really differ, so equality above is not trivially true
    assert (batch.low_res_logits[0] - batch.low_res_logits[1]).abs().max() > 1e-2


class CountingPredictor(SamPredictor):
    """Counts image-encoder passes."""

    def __init__(self, model) -> None:
        super().__init__(model)
        self.encoder_calls = 0

    def _encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        self.encoder_calls += 1
        return super()._encode_pixels(pixels)


def test_predict_with_embedding_skips_the_encoder(sam_model, tmp_path):
    counting = CountingPredictor(sam_model)
    image = shapes_image(300, 170)
    first = counting.predict(image, points=[[80, 100]])
    assert counting.encoder_calls == 1
    embedding = counting.encode(image)
    assert counting.encoder_calls == 2
    for kwargs in (
        {"points": [[80, 100]]},
        {"box": [10, 10, 120, 200]},
        {"mask_input": first.low_res_logits[:1]},
    ):
        counting.predict(embedding, **kwargs)
        counting.decode(embedding, boxes=torch.tensor([[10.0, 10.0, 120.0, 200.0]]))
    assert counting.encoder_calls == 2
    again = counting.predict(embedding, points=[[80, 100]])
    np.testing.assert_array_equal(again.masks, first.masks)
    # other image inputs go through load_image, one encoder pass each
    path = tmp_path / "scene.png"
    Image.fromarray(image).save(path)
    for source in (path, str(path), Image.fromarray(image)):
        pred = counting.predict(source, points=[[80, 100]])
        np.testing.assert_array_equal(pred.masks, first.masks)
    assert counting.encoder_calls == 5


# -- reduced precision -----------------------------------------------------------------------


def _compare_to_float32(predictor32, predictor_low, image, device) -> None:
    """Loose agreement of a half-precision predictor with the float32 CPU one.

    bfloat16 keeps 8 mantissa bits (float16: 11): relative error ~1e-2 per value, and prompt
    coordinates in the input frame are rounded too. Measured on the tiny model (bf16, CPU):
    embeddings 1.4% of max |x|, logits 2.3% of max |x|, mask IoU >= 0.979.
    """
    h, w = image.shape[:2]
    e32 = predictor32.encode(image)
    e_low = predictor_low.encode(image)
    assert e_low.embeddings.dtype == predictor_low.dtype
    assert e_low.embeddings.device.type == device
    scale = e32.embeddings.abs().max()
    assert (e_low.embeddings.float().cpu() - e32.embeddings).abs().max() <= 0.05 * scale
    prompts = [
        {"points": [[0.43 * w, 0.52 * h]], "labels": [1]},
        {"box": [0.17 * w, 0.21 * h, 0.71 * w, 0.83 * h]},
    ]
    for kwargs in prompts:
        p32 = predictor32.predict(e32, **kwargs)
        p_low = predictor_low.predict(e_low, **kwargs)
        assert p_low.low_res_logits.dtype == np.float32 and p_low.masks.dtype == bool
        logit_scale = np.abs(p32.low_res_logits).max()
        assert np.abs(p_low.low_res_logits - p32.low_res_logits).max() <= 0.08 * logit_scale
        assert np.abs(p_low.iou_predictions - p32.iou_predictions).max() <= 0.05
        for a, b in zip(p_low.masks, p32.masks, strict=True):
            assert mask_iou(a, b) >= 0.9


def test_bfloat16_runs_and_is_close_to_float32(sam_model_dir, predictor):
    model = load_sam_model(sam_model_dir, torch.device("cpu"), torch.bfloat16)
    low = SamPredictor(model)
    assert low.dtype == torch.bfloat16
    _compare_to_float32(predictor, low, shapes_image(300, 170), "cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_float16_on_cuda_is_close_to_cpu_float32(sam_model_dir, predictor):
    model = load_sam_model(sam_model_dir, torch.device("cuda"), torch.float16)
    gpu = SamPredictor(model)
    assert gpu.device.type == "cuda" and gpu.dtype == torch.float16
    _compare_to_float32(predictor, gpu, shapes_image(300, 170), "cuda")
    # the float16 path also decodes a batch on the GPU
    embedding = gpu.encode(random_image(H, W))
    out = gpu.decode(embedding, boxes=torch.tensor([[5.0, 5.0, 80.0, 70.0]] * 4))
    assert out.low_res_logits.device.type == "cuda" and out.low_res_logits.dtype == torch.float32
    assert torch.isfinite(out.low_res_logits).all()


# -- compile=True ------------------------------------------------------------------------------


@pytest.mark.slow  # dynamo tracing: ~20 s of CPU, minutes of wall time on a busy machine
def test_compiled_predictor_pads_batches_and_matches(sam_model, embedding):
    """compile= traces the encoder and decoder (dynamo, 'eager' backend here: no C++ build in
    the default run) with batches padded to a power of two; results equal the plain ones."""
    plain = SamPredictor(sam_model)
    compiled = SamPredictor(sam_model, compile="eager")
    assert compiled.compiled and not plain.compiled
    side = plain.transform.low_res_size
    prompts = {
        "points": torch.tensor([[[20.0, 30.0]], [[150.0, 40.0]], [[100.0, 100.0]]]),
        "labels": torch.ones(3, 1, dtype=torch.long),
    }
    masks = torch.randn(3, 1, side, side, generator=torch.Generator().manual_seed(0))
    for kwargs in (prompts, {"boxes": torch.tensor([[5.0, 5.0, 80.0, 70.0]] * 3),
                             "mask_input": masks}):
        a = plain.decode(embedding, **kwargs)
        b = compiled.decode(embedding, **kwargs)  # B=3 runs as a batch of 4
        assert b.low_res_logits.shape == a.low_res_logits.shape
        torch.testing.assert_close(b.low_res_logits, a.low_res_logits, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(b.iou_scores, a.iou_scores, atol=1e-5, rtol=1e-5)
