"""The logic behind the web page, as plain Python (no gradio import): unit-testable.

One namespace over the modules that do the work, for :mod:`grounded_sam.app.ui` and tests:

- :mod:`grounded_sam.app.session`: a tab's :class:`Session`, uploads, indexing through the
  page's shared :class:`~grounded_sam.grounding.store.IndexStore`;
- :mod:`grounded_sam.app.queries`: text queries, Find similar and SAM point/box prompts,
  their knobs validated as one :class:`~grounded_sam.grounding.options.QueryOptions`;
- :mod:`grounded_sam.app.render`: the overlay, the regions table, region details;
- :mod:`grounded_sam.app.exports`: the downloadable files.

Every function takes the browser tab's :class:`Session` plus the engine and the widget values,
and either returns what the page shows or raises :class:`UserError` with a message for the
user; :mod:`grounded_sam.app.ui` turns those into gradio outputs and ``gr.Error`` /
``gr.Info``. The image is indexed once when it is uploaded or picked (and once for all tabs
that open the same picture); phrases, threshold changes and point/box prompts are answered
from that index. What is safe to share is written in :mod:`grounded_sam.app.session`.
"""

from __future__ import annotations

from grounded_sam.app.exports import export_files
from grounded_sam.app.queries import (
    CLICK_MODES,
    REFINEMENT_LEVELS,
    SIMILAR_LABEL,
    ClickMode,
    RefinementLevel,
    clear_prompts,
    click,
    query_options,
    refinement_params,
    text_query,
)
from grounded_sam.app.render import (
    TABLE_HEADERS,
    describe_region,
    describe_row,
    models_markdown,
    region_table,
    render,
)
from grounded_sam.app.session import (
    EMPTY_PHRASE,
    MAX_IMAGE_SIDE,
    MAX_UPLOAD_BYTES,
    MAX_UPLOAD_SIZE,
    NO_IMAGE,
    ExportFiles,
    Result,
    Session,
    UserError,
    clear_image,
    index_markdown,
    open_upload,
    session_index,
    set_image,
)

__all__ = [
    "CLICK_MODES",
    "EMPTY_PHRASE",
    "MAX_IMAGE_SIDE",
    "MAX_UPLOAD_BYTES",
    "MAX_UPLOAD_SIZE",
    "NO_IMAGE",
    "REFINEMENT_LEVELS",
    "SIMILAR_LABEL",
    "TABLE_HEADERS",
    "ClickMode",
    "ExportFiles",
    "RefinementLevel",
    "Result",
    "Session",
    "UserError",
    "clear_image",
    "clear_prompts",
    "click",
    "describe_region",
    "describe_row",
    "export_files",
    "index_markdown",
    "models_markdown",
    "open_upload",
    "query_options",
    "refinement_params",
    "region_table",
    "render",
    "session_index",
    "set_image",
    "text_query",
]
