"""Web page for typing phrases on an image (``grounded-sam app``; needs the ``app`` extra).

``grounded_sam.app.server.launch(...)`` loads the models and serves the page on
``127.0.0.1:7860``. The page logic lives in :mod:`grounded_sam.app.callbacks` (plain Python,
no gradio import); :mod:`grounded_sam.app.ui` builds the ``gr.Blocks``. Importing this
package does not import gradio.
"""

__all__ = ["launch"]


def launch(*args, **kwargs):  # noqa: ANN002, ANN003, ANN201
    """Load the models and serve the page; see :func:`grounded_sam.app.server.launch`."""
    from grounded_sam.app.server import launch as _launch

    return _launch(*args, **kwargs)
