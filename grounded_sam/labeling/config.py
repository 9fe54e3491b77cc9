"""A labeling run's config: everything that changes its result, saved in ``run.json``.

Saved results are reused only when the config matches (:func:`grounded_sam.labeling.state.
begin_run`). The query knobs come from one :class:`~grounded_sam.grounding.options.
QueryOptions` (its ``to_dict(per_image=False)``): ``threshold``, ``top_k``, ``refine`` and
``min_region_area`` are always stored, every other knob only when it is not at its default,
so that runs saved before a knob existed still resume.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from grounded_sam.grounding.options import QueryOptions

if TYPE_CHECKING:
    from grounded_sam.pipeline import GroundedSAM
    from grounded_sam.sam.everything import EverythingSettings

__all__ = ["engine_config", "engine_options", "labeling_config"]

#: Knobs stored in every run config; the others only when not at their defaults.
_ALWAYS = ("threshold", "top_k", "refine", "min_region_area")


def labeling_config(
    classes: Sequence[str],
    *,
    sam: str | os.PathLike,
    clip: str,
    proposal_settings: EverythingSettings,
    crop_style: str | None = "masked",
    max_regions: int = 100,
    options: QueryOptions | None = None,
) -> dict[str, Any]:
    """Everything that changes a labeling result; saved results are reused only if it matches.

    Args:
        classes: Parsed class names.
        sam: SAM model spec as given to ``GroundedSAM.from_pretrained``.
        clip: CLIP model spec.
        proposal_settings: Proposal settings of the engine's index.
        crop_style: CLIP crop style.
        max_regions: Engine's ``max_regions``.
        options: The query knobs of every image (None: :class:`QueryOptions` defaults).
            Per-image prompts (points, exemplars) are not part of a run.

    Returns:
        A JSON-ready dict (stored in ``.grounded_sam_state/run.json``).

    Raises:
        ValueError: A class that is also a negative phrase.
    """
    options = QueryOptions() if options is None else options
    options.negatives_for(classes)
    knobs = options.to_dict(per_image=False)
    defaults = QueryOptions().to_dict(per_image=False)
    extra = {k: v for k, v in knobs.items() if k not in _ALWAYS and v != defaults[k]}
    return json.loads(
        json.dumps(
            {
                **extra,
                "classes": list(classes),
                "sam": os.fspath(sam),
                "clip": clip,
                "crop_style": crop_style,
                "proposals": dataclasses.asdict(proposal_settings),
                "max_regions": max_regions,
                **{k: knobs[k] for k in _ALWAYS},
            }
        )
    )


def engine_options(gs: GroundedSAM) -> QueryOptions:
    """The engine's default query options (``gs.options``, else its threshold/top_k/refine)."""
    options = getattr(gs, "options", None)
    if isinstance(options, QueryOptions):
        return options
    if not hasattr(gs, "threshold"):  # a stand-in engine without defaults of its own
        return QueryOptions()
    return QueryOptions(threshold=gs.threshold, top_k=gs.top_k, refine=gs.refine)


def engine_config(gs: GroundedSAM, classes: Sequence[str], options: QueryOptions) -> dict[str, Any]:
    """:func:`labeling_config` of a loaded engine (its model ids and index settings)."""
    return labeling_config(
        classes,
        sam=gs.model_ids[0],
        clip=gs.model_ids[1],
        proposal_settings=gs.proposal_settings,
        crop_style=getattr(gs.scorer, "crop_style", None),
        max_regions=gs.max_regions,
        options=options,
    )
