"""The demo's Annotate tab (batch annotation of uploads into a zip and viewable reports) and its live webcam
stream, driven through gradio_client against a live local server or through the functions behind the endpoints."""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from tests.conftest import free_port

pytestmark = pytest.mark.weights


@dataclass
class Served:
    demo: Any
    client: Any

    @property
    def workdir(self) -> Path:
        return Path(self.demo.affectlens_workdir.name)

    def endpoint(self, name: str) -> Callable[..., Any]:
        """The Python function behind ``api_name`` (called directly, no server)."""
        found = [f.fn for f in self.demo.fns.values() if f.api_name == name]
        assert len(found) == 1, f"no single endpoint /{name}"
        return found[0]


@pytest.fixture(scope="module")
def served(analyzer) -> Iterator[Served]:
    from gradio_client import Client

    from demo.app import build_demo

    demo = build_demo(analyzer)
    port = free_port()
    demo.queue().launch(
        server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, show_error=True
    )
    try:
        yield Served(demo, Client(f"http://127.0.0.1:{port}/", verbose=False))
    finally:
        demo.close()
        demo.affectlens_workdir.cleanup()


@pytest.fixture
def junk(tmp_path: Path) -> Path:
    path = tmp_path / "junk.mp4"
    path.write_bytes(b"\x00" * 2048)
    return path


def _rows(table: Any) -> list[dict[str, Any]]:
    """The summary table as one dict per input (gradio_client gives headers and data, the function rows)."""
    from demo.app import ANNOTATE_COLUMNS

    if isinstance(table, dict):
        return [dict(zip(table["headers"], row, strict=True)) for row in table["data"]]
    return [dict(zip(ANNOTATE_COLUMNS, row, strict=True)) for row in table]


def _extract(archive: str | Path, into: Path) -> Path:
    with zipfile.ZipFile(archive) as z:
        z.extractall(into)
    return into / "annotations"


def detail(image: np.ndarray) -> float:
    """Mean absolute Laplacian of the grey image: fine detail (as tests/test_privacy.py measures it)."""
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float64)
    return float(np.abs(cv2.Laplacian(grey, cv2.CV_64F)).mean())


def test_annotate_endpoint_gives_a_table_a_zip_and_the_index(
    served: Served, sample_video: Path, junk: Path, tmp_path: Path
) -> None:
    from gradio_client import handle_file

    from affectlens import load_annotations

    table, archive, page, choice, status = served.client.predict(
        [handle_file(str(sample_video)), handle_file(str(junk))], 2.0, ["face"], False, api_name="/annotate"
    )
    rows = {row["input"]: row for row in _rows(table)}
    assert rows["sample.mp4"]["status"] == "done" and rows["sample.mp4"]["persons"] == 1
    assert rows["sample.mp4"]["dominant emotion"] == "happiness"
    failed = rows["junk.mp4"]
    assert failed["status"] == "failed" and "junk.mp4: not a readable image or video" in failed["reason or warnings"]
    assert "/" not in failed["reason or warnings"].split(":")[0]  # the upload's name, not the server's path
    assert status.startswith("1 of 2 input(s) annotated, 1 failed")

    names = zipfile.ZipFile(archive).namelist()
    assert {"annotations/index.html", "annotations/manifest.json", "annotations/errors.jsonl"} <= set(names)
    (video,) = {n.split("/")[1] for n in names if n.endswith("/report.html")}
    for name in ("faces.parquet", "utterances.parquet", "timeline.parquet", "plots/overview.png"):
        assert f"annotations/{video}/{name}" in names
    assert not any(Path(n).name.startswith(".") for n in names)  # no lock, no temporary files
    tables = load_annotations(_extract(archive, tmp_path / "unzipped"))
    assert len(tables.faces) == 8 and set(tables.faces["label"]) == {"happiness"}  # 4 s at 2 fps, one face
    assert list(tables.errors["reason"].str.contains("junk.mp4")) == [True]

    # The index is shown in the page: sandboxed, images inlined, nothing fetched from the server.
    assert page.startswith('<iframe title="AffectLens report" sandbox=""') and "junk.mp4" in page
    value = choice["value"] if isinstance(choice, dict) else choice  # gradio_client passes the update on
    assert value == "index.html"
    if isinstance(choice, dict):
        assert [page for _label, page in choice["choices"]] == ["index.html", f"{video}/report.html"]


def test_report_pages_come_only_from_the_visitors_run(served: Served, sample_video: Path) -> None:
    annotate, show_page = served.endpoint("annotate"), served.endpoint("show_page")
    _table, _zip, index, choices, _status, run = annotate([str(sample_video)], 2.0, ["face"], False)
    pages = dict((value, label) for label, value in choices["choices"])
    report = next(p for p in pages if p.endswith("/report.html"))
    shown = show_page(run, report)
    assert "data:image/png;base64," in shown and "data:image/jpeg;base64," in shown  # plots and key frames
    assert "src=&quot;plots/" not in shown and index != shown
    for page in ("../../../../etc/passwd", "/etc/passwd", f"{report}/../../manifest.json", "x/../../report.html"):
        assert show_page(run, page).startswith("<p>No page"), page
    for folder in ("/etc", str(served.workdir), str(Path(run) / ".."), None):
        assert show_page(folder, "index.html").startswith("<p>Annotate some videos first"), folder


@pytest.mark.slow
def test_blur_option_hides_the_faces_in_the_key_frames(served: Served, sample_video: Path, tmp_path: Path) -> None:
    from gradio_client import handle_file

    shown: dict[bool, list[np.ndarray]] = {}
    for blur in (False, True):
        _table, archive, *_ = served.client.predict(
            [handle_file(str(sample_video))], 2.0, ["face"], blur, api_name="/annotate"
        )
        out = _extract(archive, tmp_path / str(blur))
        frames = sorted(out.glob("*/keyframes/*.jpg"))
        shown[blur] = [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in frames]
    assert shown[False] and len(shown[False]) == len(shown[True])
    for sharp, soft in zip(shown[False], shown[True], strict=True):
        h, w = sharp.shape[:2]
        centre = np.s_[h // 3 : 2 * h // 3, w // 3 : 2 * w // 3]
        assert detail(soft[centre]) < 0.5 * detail(sharp[centre])


def test_annotate_refuses_too_many_files_and_never_reads_a_list(
    served: Served, sample_video: Path, tmp_path: Path
) -> None:
    import gradio as gr
    from gradio_client import handle_file

    from demo.app import MAX_ANNOTATE_FILES

    annotate = served.endpoint("annotate")
    with pytest.raises(gr.Error, match=f"at most {MAX_ANNOTATE_FILES} files"):
        annotate([str(sample_video)] * (MAX_ANNOTATE_FILES + 1), 2.0, ["face"], False)
    table, archive, *_rest, status, _run = annotate(None, 2.0, ["face"], False)
    assert table is None and archive is None and "Upload" in status
    with pytest.raises(gr.Error, match="modalities"):
        annotate([str(sample_video)], 2.0, [], False)
    # annotate reads a .txt input as a list of paths; an upload must never make it read files on the server.
    listing = tmp_path / "list.txt"
    listing.write_text(f"{sample_video}\n")
    table, archive, *_rest = annotate([str(listing)], 2.0, ["face"], False)
    assert _rows(table) == [
        {"input": "list.txt", "status": "failed", "persons": None, "dominant emotion": "—",
         "reason or warnings": "list.txt: not a video or audio file"}
    ]  # fmt: skip
    assert archive is None
    with pytest.raises(Exception, match="Invalid file type"):  # the server refuses it before our code runs
        served.client.predict([handle_file(str(listing))], 2.0, ["face"], False, api_name="/annotate")


def test_old_runs_are_pruned(served: Served, junk: Path) -> None:
    from demo.app import KEEP_RUNS, RUN_PREFIX

    annotate = served.endpoint("annotate")
    runs = [annotate([str(junk)], 2.0, ["face"], False)[-1] for _ in range(KEEP_RUNS + 2)]
    kept = sorted(p for p in served.workdir.iterdir() if p.name.startswith(RUN_PREFIX))
    assert [str(p) for p in kept] == runs[-KEEP_RUNS:]  # the newest ones, in order
    assert not Path(runs[0]).exists()
    assert served.endpoint("show_page")(runs[0], "index.html").startswith("<p>Annotate some videos first")


def test_sample_video_is_written_once_into_the_work_folder(served: Served) -> None:
    sample = served.endpoint("sample_video")
    first = Path(sample())
    assert first.parent == served.workdir and first.stat().st_size > 10_000
    stamp = first.stat().st_mtime_ns
    assert Path(sample()) == first and first.stat().st_mtime_ns == stamp


def test_webcam_stream_returns_the_frame_with_the_face_drawn(served: Served, analyzer, portrait: np.ndarray) -> None:
    import gradio as gr

    from demo.app import STREAM_EVERY

    (dep,) = [f for f in served.demo.fns.values() if f.api_name == "analyze_stream"]
    (source,) = dep.inputs[:1]
    assert isinstance(source, gr.Image) and source.streaming and source.sources == ["webcam"]
    assert dep.stream_every == STREAM_EVERY and dep.time_limit  # a bounded stream at a small CPU's pace
    stream = dep.fn
    drawn = stream(portrait.copy(), False)
    assert drawn.shape == portrait.shape and drawn.dtype == np.uint8
    (face,) = analyzer.analyze_image(portrait).faces
    x1, y1, x2, y2 = (round(v) for v in face.box)
    box = np.s_[y1 : y2 + 1, x1 : x2 + 1]
    assert (drawn[box] != portrait[box]).any(axis=-1).mean() > 0.01  # the box, mesh and labels drawn on the face
    hidden = stream(portrait.copy(), True)
    inner = np.s_[y1 + 10 : y2 - 10, x1 + 10 : x2 - 10]
    assert detail(hidden[inner]) < 0.3 * detail(portrait[inner])
    assert stream(None, False) is None
