"""Programs the tests run for real (redis-server, prometheus): found, or a clear outcome."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest


def require_binary(command: str, package: str) -> str:
    """The path of ``command``; under CI=true a missing one fails the test, else skips it."""
    found = shutil.which(command) or (
        f"/usr/bin/{command}" if Path(f"/usr/bin/{command}").exists() else None
    )
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{command} is not installed; `make test` installs Debian's {package}")
        pytest.skip(f"{command} is not installed (apt-get install {package})")
    return found
