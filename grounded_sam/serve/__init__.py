"""The HTTP server: a REST API and a Label Studio ML backend on one FastAPI app.

* :mod:`~grounded_sam.serve.engine`: the one-device worker (every model call of the server
  runs on one thread, in arrival order; image encodes of queued index requests are batched on
  CUDA) and the bounded index store the requests share;
* :mod:`~grounded_sam.serve.schemas`: request bodies and form fields, derived from
  :class:`~grounded_sam.grounding.options.QueryOptions` (a knob is declared there once);
* :mod:`~grounded_sam.serve.app`: the FastAPI app (``/health``, ``/v1/...``, OpenAPI at
  ``/docs``) and its error handlers (every error is ``{"error": "..."}``);
* :mod:`~grounded_sam.serve.auth`, :mod:`~grounded_sam.serve.limits`: the API key and the
  upload bounds;
* :mod:`~grounded_sam.serve.labelstudio` (+ :mod:`~grounded_sam.serve.brush`, Label Studio's
  brush RLE): ``/setup``, ``/predict``, ``/webhook`` of the ``label-studio-ml`` protocol;
  :mod:`~grounded_sam.serve.labelstudio_options` (per-project and per-request query options)
  and :mod:`~grounded_sam.serve.labelstudio_images` (task images, from Label Studio only);
* :mod:`~grounded_sam.serve.adapters`: X-AnyLabeling's remote-server protocol under
  ``/x-anylabeling``;
* :mod:`~grounded_sam.serve.ray_serve`: the same app as a Ray Serve deployment (one engine
  per replica; ``grounded-sam serve --ray``);
* :mod:`~grounded_sam.serve.cvat`: a CVAT serverless (Nuclio) detector function running the
  engine in its own process (``cvat_function/function.yaml``; imports pydantic, not FastAPI).

``grounded-sam serve`` (:mod:`grounded_sam.cli.serve`) loads the models and runs the app on
uvicorn. FastAPI is imported by these modules, never by the package itself.
"""
