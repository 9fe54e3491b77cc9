"""Web page for typing phrases on an image (``grounded-sam app``; needs the ``app`` extra).

``grounded_sam.app.server.launch(...)`` loads the models and serves the page on
``127.0.0.1:7860``. The page logic is plain Python, no gradio import, one module per job:
:mod:`~grounded_sam.app.session` (a tab's state, uploads, the shared index store),
:mod:`~grounded_sam.app.queries` (phrases and clicks), :mod:`~grounded_sam.app.render` (what
the page shows) and :mod:`~grounded_sam.app.exports` (downloads), gathered in
:mod:`grounded_sam.app.callbacks`; :mod:`grounded_sam.app.ui` builds the ``gr.Blocks``. The
Video tab's logic is :mod:`~grounded_sam.app.video` (a clip tracked with the page's engine and
SAM 2.1), its widgets :mod:`~grounded_sam.app.video_tab`.
Importing this package does not import gradio.
"""

__all__ = ["launch"]


def launch(*args, **kwargs):  # noqa: ANN002, ANN003, ANN201
    """Load the models and serve the page; see :func:`grounded_sam.app.server.launch`."""
    from grounded_sam.app.server import launch as _launch

    return _launch(*args, **kwargs)
