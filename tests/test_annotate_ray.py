"""``affectlens annotate --engine ray``: the local engine's tables, manifest and resume rules, on Ray actors.

One local Ray instance (2 CPUs) serves the module; its workers build ``tests.test_annotate``'s tiny analyzer.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from affectlens import Analyzer, load_annotations
from affectlens import annotate as ann
from affectlens.annotate import AnnotateError, AnnotateSettings, annotate_files, read_table, video_id
from affectlens.cli import main
from tests.test_annotate import FACTORY, _videos, tiny_analyzer

#: Manifest fields that differ between any two runs (timing), ignored when comparing engines.
TIMING = ("seconds", "finished")


@pytest.fixture(scope="module")
def ray_instance() -> Iterator[None]:
    """A local Ray instance with 2 CPUs for the whole module (the engine uses one already initialised)."""
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.ERROR)
    try:
        yield
    finally:
        ray.shutdown()


def counting_analyzer(markers: str, die_on: str | None = None) -> Analyzer:
    """The tiny analyzer, leaving a file in ``markers`` when built and per ``analyze_video`` call (any process).

    On the input named ``die_on`` the worker process exits at once, as if killed by the OOM killer.
    """
    folder = Path(markers)
    (folder / f"build-{uuid.uuid4().hex}").touch()
    analyzer = tiny_analyzer()
    real = analyzer.analyze_video

    def analyze_video(path: Any, *args: Any, **kwargs: Any) -> Any:
        (folder / f"call-{Path(path).name}-{uuid.uuid4().hex}").touch()
        if die_on is not None and Path(path).name == die_on:
            os._exit(1)
        return real(path, *args, **kwargs)

    analyzer.analyze_video = analyze_video  # type: ignore[method-assign]
    return analyzer


def _count(markers: Path, kind: str) -> int:
    return len(list(markers.glob(f"{kind}-*")))


def _inputs(folder: Path) -> list[Path]:
    videos = _videos(folder, 3)
    (folder / "corrupt.mp4").write_bytes(b"\x00not a video" * 50)
    return videos


def _entries(out: Path) -> dict[str, dict[str, Any]]:
    videos = json.loads((out / ann.MANIFEST).read_text())["videos"]
    return {vid: {k: v for k, v in e.items() if k not in TIMING} for vid, e in videos.items()}


def test_ray_engine_writes_what_the_local_engine_writes(
    ray_instance: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    videos = _inputs(tmp_path / "in")
    argv = ["annotate", str(tmp_path / "in"), "--fps", "5", "--quiet"]
    assert main([*argv, "-o", str(tmp_path / "local")], analyzer=tiny_analyzer()) == 1
    monkeypatch.setenv(ann.ANALYZER_ENV, FACTORY)  # the workers build it: the hook travels by reference
    assert main([*argv, "-o", str(tmp_path / "ray"), "--engine", "ray"]) == 1
    printed = capsys.readouterr().out.splitlines()
    local_summary, ray_summary = (line for line in printed if "annotated" in line)
    assert local_summary.endswith("3 annotated, 0 already done, 1 failed")
    assert ray_summary.endswith("3 annotated, 0 already done, 1 failed")

    local, ray = tmp_path / "local", tmp_path / "ray"
    assert _entries(ray) == _entries(local)  # statuses, checksums, row counts, models, reasons
    statuses = {Path(e["input"]).name: e["status"] for e in _entries(ray).values()}
    assert statuses == {"clip0.mp4": "done", "clip1.mp4": "done", "clip2.mp4": "done", "corrupt.mp4": "failed"}
    assert (ray / ann.ERRORS).read_text() == (local / ann.ERRORS).read_text() != ""
    for video in videos:  # every table, file by file, row for row
        for name, schema in ann.SCHEMAS.items():
            file = Path(video_id(video)) / f"{name}.parquet"
            got, want = read_table(ray / file, schema), read_table(local / file, schema)
            pd.testing.assert_frame_equal(got, want, check_exact=True)
    data = load_annotations(ray)
    assert len(data.faces) == 15 and len(data.utterances) == 3 and len(data.timeline) >= 3
    assert data.manifest["runs"][-1]["engine"] == "ray"
    assert not list(ray.rglob(f"*{ann._TMP_MARK}*"))


def test_ray_resume_redoes_only_what_is_not_done(ray_instance: None, tmp_path: Path) -> None:
    videos = _inputs(tmp_path / "in")
    markers = tmp_path / "markers"
    markers.mkdir()
    out, settings = tmp_path / "out", AnnotateSettings(fps=5, engine="ray")
    dying = functools.partial(counting_analyzer, str(markers), die_on="clip1.mp4")

    first = annotate_files([tmp_path / "in"], out, settings, analyzer_factory=dying)
    assert set(first.done) == {video_id(videos[0]), video_id(videos[2])}
    reasons = dict(first.failed)
    assert (
        "the Ray worker died" in reasons[str(videos[1])]
        and "corrupt.mp4" in reasons[str(tmp_path / "in" / "corrupt.mp4")]
    )
    assert _count(markers, "call") == 3
    assert _count(markers, "build") == 3  # one analyzer per actor (2), and one for the actor replacing the dead one
    before = json.loads((out / ann.MANIFEST).read_text())["videos"]

    counting = functools.partial(counting_analyzer, str(markers))
    second = annotate_files([tmp_path / "in"], out, settings, analyzer_factory=counting)
    assert second.done == (video_id(videos[1]),) and set(second.skipped) == {video_id(videos[0]), video_id(videos[2])}
    assert [Path(p).name for p, _ in second.failed] == ["corrupt.mp4"]  # retried, still unreadable
    assert _count(markers, "call-clip1.mp4") == 2 and _count(markers, "call") == 4  # the done ones were not analysed
    after = json.loads((out / ann.MANIFEST).read_text())["videos"]
    assert after[video_id(videos[0])] == before[video_id(videos[0])]  # skipped entries are left as they were

    assert main(["annotate", str(videos[0]), "-o", str(out), "--fps", "5", "--quiet", "--engine", "ray"]) == 0
    assert _count(markers, "call") == 4  # all done: Ray is not even needed
    assert load_annotations(out).faces.groupby("video").size().to_dict() == {video_id(v): 5 for v in videos}


def test_ray_engine_refuses_a_ready_made_analyzer(tmp_path: Path) -> None:
    (video,) = _videos(tmp_path / "in", 1)
    with pytest.raises(AnnotateError, match="analyzer_factory"):
        annotate_files([video], tmp_path / "out", AnnotateSettings(engine="ray"), analyzer=tiny_analyzer())


def test_missing_ray_is_a_usage_error_not_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    (video,) = _videos(tmp_path / "in", 1)
    out = tmp_path / "out"
    assert main(["annotate", str(video), "-o", str(out), "--engine", "ray", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "pip install 'affectlens[ray]'" in err and "Traceback" not in err
    assert not out.exists()  # refused before touching the output folder
    with pytest.raises(AnnotateError, match=r"pip install 'affectlens\[ray\]'"):
        annotate_files([video], out, AnnotateSettings(engine="ray"), analyzer_factory=tiny_analyzer)


def test_a_ray_address_needs_the_ray_engine(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match="needs engine 'ray'"):
        AnnotateSettings(ray_address="10.0.0.1:6379")
    assert main(["annotate", str(tmp_path), "-o", str(tmp_path / "o"), "--ray-address", "10.0.0.1:6379"]) == 2
    assert "needs engine 'ray'" in capsys.readouterr().err
