"""The ``grounded-sam`` entry point with a pause after each labeled image is saved.

Tests that interrupt a labeling run "after the first image" start the CLI through this
script. With tiny models an image is labeled in milliseconds, so without the pause the whole
folder can be done before the signal arrives; with it, the signal lands in a window of
``GS_TEST_PAUSE_AFTER_IMAGE`` seconds (default 1) after each saved image.

It also turns Ctrl-C handling back on: a test run started as a background job of a
non-interactive shell (``bash .ci/run &``) inherits SIGINT as *ignored*, and Python then
installs no KeyboardInterrupt handler, so the test's SIGINT would do nothing.
"""

from __future__ import annotations

import os
import signal
import sys
import time

from grounded_sam.cli.main import main
from grounded_sam.labeling import run

_save_result = run.save_result


def _paced_save_result(*args, **kwargs) -> None:
    _save_result(*args, **kwargs)  # whatever save_result takes (out_dir, entry, stamp, ...)
    time.sleep(float(os.environ.get("GS_TEST_PAUSE_AFTER_IMAGE", "1")))


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    run.save_result = _paced_save_result
    sys.exit(main())
