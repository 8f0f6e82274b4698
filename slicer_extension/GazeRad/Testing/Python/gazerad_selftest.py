"""Run the GazeRad module's self-test inside Slicer and exit with its status (0 = passed).

    GAZERAD_SERVER_URL=http://127.0.0.1:8000 Slicer --no-splash \
        --additional-module-paths slicer_extension/GazeRad \
        --python-script slicer_extension/GazeRad/Testing/Python/gazerad_selftest.py
"""

import traceback

import slicer

try:
    slicer.util.selectModule("GazeRad")
    import GazeRad

    GazeRad.GazeRadTest().runTest()
except Exception:  # noqa: BLE001 - report and fail
    traceback.print_exc()
    slicer.util.exit(1)
else:
    print("GazeRad self-test passed")
    slicer.util.exit(0)
