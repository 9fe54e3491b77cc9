"""The run config: query options reach the engine and run.json (unchanged keys at defaults)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.labeling.conftest import CLASSES, FakeEngine, config, run


def test_grounding_options_reach_the_engine_and_the_run_config(
    image_folder: Path, tmp_path: Path
) -> None:
    plain = config()
    assert not {"negative", "calibration", "keep_parts"} & set(plain)  # old runs still resume
    cfg = config(negative="stem, leaf", calibration="per_phrase", keep_parts=True)
    assert (cfg["negative"], cfg["calibration"], cfg["keep_parts"]) == (
        ["stem", "leaf"], "per_phrase", True,
    )  # fmt: skip
    with pytest.raises(ValueError, match="both a phrase and a negative"):
        config(negative=CLASSES[0])
    with pytest.raises(ValueError, match="calibration must be one of"):
        config(calibration="joint-ish")  # label --ray builds its config here: fails up front

    seen: list[dict] = []

    class Spy(FakeEngine):
        def query(self, index, prompt, **kwargs):
            seen.append(kwargs)
            return super().query(index, prompt, **kwargs)

    def no_models() -> None:
        raise AssertionError("models loaded for a run with bad options")

    for bad, match in (({"calibration": "joint-ish"}, "calibration"),
                       ({"negative": CLASSES[0]}, "both a phrase")):  # fmt: skip
        with pytest.raises(ValueError, match=match):
            run(no_models, image_folder, tmp_path / "bad", config=cfg, **bad)
        assert not any((tmp_path / "bad").rglob("*"))  # nothing written either

    out = tmp_path / "ds"
    report, _ = run(Spy(), image_folder, out, config=cfg, negative="stem, leaf",
                    calibration="per_phrase", keep_parts=True)  # fmt: skip
    assert report.labeled == 4 and len(seen) == 4
    # the engine gets the parsed phrases (validated once, as QueryOptions), not the raw text
    assert all(list(k["negative"]) == ["stem", "leaf"] for k in seen)
    assert all(k["calibration"] == "per_phrase" for k in seen)
    assert all(k["keep_parts"] is True for k in seen)


def test_run_config_keys_are_those_of_runs_saved_before_query_options() -> None:
    """At the default knobs the stored keys (and their order) are the old ones: runs resume."""
    assert list(config()) == [
        "classes", "sam", "clip", "crop_style", "proposals", "max_regions",
        "threshold", "top_k", "refine", "min_region_area",
    ]  # fmt: skip
    assert config()["top_k"] == 20 and config(top_k=None)["top_k"] is None
    cfg = config(keep_parts=True, negative=["stem"], calibration="per_phrase", threshold=0.5)
    assert list(cfg)[:3] == ["negative", "calibration", "keep_parts"]
    assert (cfg["threshold"], cfg["negative"]) == (0.5, ["stem"])
    assert config(part_thresh=0.5)["part_thresh"] == 0.5  # a newer knob: only when changed
