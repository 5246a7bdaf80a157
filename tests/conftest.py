"""Shared fixtures: the real analyzer (shipped weights), tiny offline parts, sample media, ../shared data."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from affectlens.types import AnalysisResult

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("AFFECTLENS_SHARED_DATA", REPO.parent / "shared" / "data"))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (for a demo server started in a test)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def require_shared(relative: str) -> Path:
    """Path under ../shared/data; missing data fails under CI (CI=true) and skips elsewhere."""
    path = SHARED_DATA / relative
    if not path.exists():
        message = f"{path} is missing: tests that need ../shared/data cannot run"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def fer2013_npz() -> Path:
    return require_shared("fer2013.npz")


@pytest.fixture(scope="session")
def analyzer():
    """The default Analyzer on the real shipped weights (run `affectlens weights fetch` first)."""
    from affectlens import Analyzer

    return Analyzer()


@pytest.fixture(scope="session")
def portrait() -> np.ndarray:
    from demo.samples import load_portrait

    return load_portrait()


@pytest.fixture(scope="session")
def sample_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 s, 10 fps, 480x360 H.264 video of the sample portrait."""
    from demo.samples import make_sample_video

    return make_sample_video(tmp_path_factory.mktemp("video") / "sample.mp4")


@pytest.fixture(scope="session")
def result_schema() -> dict:
    import json

    from affectlens.types import SCHEMA_PATH

    return json.loads(SCHEMA_PATH.read_text())


@pytest.fixture(scope="session")
def tree_schema() -> dict:
    import json

    from affectlens.tree import TREE_SCHEMA_PATH

    return json.loads(TREE_SCHEMA_PATH.read_text())


def _schema_registry():
    """The published schemas by ``$id``, so the result schema's ``tree`` reference resolves offline."""
    import json

    from referencing import Registry, Resource

    from affectlens.tree import TREE_SCHEMA_PATH
    from affectlens.types import SCHEMA_PATH

    schemas = [json.loads(path.read_text()) for path in (SCHEMA_PATH, TREE_SCHEMA_PATH)]
    return Registry().with_resources((s["$id"], Resource.from_contents(s)) for s in schemas)


def validate(result: AnalysisResult | dict, schema: dict) -> None:
    """Validate a result (or an affective tree's dict against the tree schema) with the published schemas."""
    import jsonschema

    payload = result.to_dict(include_landmarks=True) if isinstance(result, AnalysisResult) else result
    jsonschema.validate(payload, schema, registry=_schema_registry())
