"""The demo's endpoints under malformed input, its upload limit, the files it serves and where it listens.

One demo is started by ``demo.app.launch()`` itself (its queue and launch settings and its default host; only
the port is chosen and the thread lock left off) and driven over HTTP: every uploadable file of the bad-input
corpus (``tests/test_bad_input.py``) through the video, audio and image endpoints, malformed text through the
text, moment and chat endpoints, out-of-range numbers and missing or faceless portraits through the generators.
Each request must give a result or a clear message, and the server must answer the next request. Requests go
through ``gradio_client``; values it refuses to encode (NaN, infinity, lone surrogates) go as the raw JSON any
other client may send. ``test_report`` prints the table of outcomes::

    pytest tests/test_demo_hardening.py -q -s -k report
"""

from __future__ import annotations

import contextlib
import http.client
import inspect
import json
import math
import os
import re
import socket
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from demo.samples import load_portrait
from tests.conftest import free_port
from tests.test_bad_input import CASES, Case, encode_image, junk, portrait_jpeg, write

pytestmark = [pytest.mark.weights, pytest.mark.slow]

#: A request that takes longer than this is reported as a hang (the first use of a model loads it).
REQUEST_TIMEOUT_S = 120.0
#: The kinds of outcome; anything but "problem" is a clear answer (see ``Outcome``).
KINDS = ("result", "message", "error", "gradio error", "problem")


@dataclass
class Server:
    """The running demo: its ``Blocks``, the settings ``launch()`` gave it, a client, and every exception the
    server turned into an error message (in order), so an outcome can tell ``gr.Error`` from a crash."""

    demo: Any
    settings: dict[str, Any]
    client: Any
    url: str
    port: int
    raised: list[BaseException] = field(default_factory=list)

    @property
    def upload_dir(self) -> str:
        return str(self.demo.server_app.uploaded_file_dir)


@pytest.fixture(scope="module")
def server(analyzer) -> Iterator[Server]:
    """The demo as ``affectlens demo`` starts it (``demo.app.launch``), on a free port, in the background."""
    import gradio as gr
    import gradio.queueing
    from gradio_client import Client

    from demo import app

    started: dict[str, Any] = {}
    raised: list[BaseException] = []
    real_launch, real_error_payload = gr.Blocks.launch, gradio.queueing.error_payload

    def launch_in_background(self: gr.Blocks, **settings: Any) -> Any:
        started.update(demo=self, settings=settings)
        return real_launch(self, **settings, prevent_thread_lock=True, quiet=True)

    def recording_error_payload(error: BaseException, show_error: bool) -> dict[str, Any]:
        raised.append(error)
        return real_error_payload(error, show_error)

    port = free_port()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(gr.Blocks, "launch", launch_in_background)
        # Gradio's own hook (raises if a Gradio release renames it): the exception behind each error message.
        mp.setattr(gradio.queueing, "error_payload", recording_error_payload)
        app.launch(port=port, analyzer=analyzer)  # no host: the default is what the demo binds to
        url = f"http://127.0.0.1:{port}/"
        client = Client(url, verbose=False, download_files=False)  # outputs stay on the server: nothing to clean
        try:
            yield Server(started["demo"], started["settings"], client, url, port, raised)
        finally:
            started["demo"].close()


# --------------------------------------------------------------------------------------------------
# One request and what it gave.


@dataclass(frozen=True)
class Outcome:
    """What one request did. ``kind``:

    - "result": the endpoint's normal output;
    - "message": the endpoint returned normally with a status that names the problem;
    - "error": the request failed with a ``gr.Error``: the app's own text, or Gradio's check of a value against
      its component (out of range, not one of the choices);
    - "gradio error": Gradio could not turn the input into a Python value before our code ran;
    - "problem": anything else: an unhandled exception in our code, a hang, a failed request, a dead server.
    """

    kind: str
    detail: str
    output: Any = None
    uploaded: tuple[str, ...] = ()  # the base names of the files sent


def _text_of(content: Any) -> str:
    """A chat message's text (Gradio 6 gives a string or a list of parts)."""
    if isinstance(content, list):
        return " ".join(_text_of(part) for part in content)
    if isinstance(content, dict):
        return str(content.get("text") or "")
    return str(content or "")


def _status(endpoint: str, output: Any) -> tuple[str, str]:
    """An endpoint's outputs -> ("result" or "message", the text a user reads)."""
    if endpoint in ("/analyze_image", "/analyze_video", "/analyze_audio"):
        _shown, _label, result, status = output
        if result is None:
            return "message", status
        faces = f", {result['num_faces']} face(s)" if result["kind"] != "audio" else ""
        return "result", f"{result['kind']}{faces}: {status}"
    if endpoint == "/analyze_text":
        label, _fine, _words, result, va = output
        return ("message", va) if result is None else ("result", f"text, {label['label']}; {va}")
    if endpoint == "/analyze_moment":
        rendered, label, _tree, status = output
        return ("message", status) if not rendered else ("result", f"a tree, {(label or {}).get('label')} {status}")
    if endpoint == "/chat":
        history, tree, _plan, _affect, _cleared, status = output[-6:]  # the raw route also gives the state
        if not tree:
            return "message", status
        return "result", f"a reply of {len(_text_of(history[-1]['content']))} characters; {status}"
    if endpoint == "/generate_image":
        gallery, info = output
        return "result", f"{len(gallery)} image(s), seeds {info['seeds']}"
    if endpoint == "/edit_expression":
        image, _info, status = output
        return ("message" if image is None else "result"), status
    if endpoint == "/talking_head":
        _video, _summary, info = output
        return "result", f"a video of {info['frames']} frames"
    raise AssertionError(f"no status reader for {endpoint}")


def _is_file(value: Any) -> bool:
    return isinstance(value, dict) and value.get("meta", {}).get("_type") == "gradio.FileData"


def _client_can_send(args: tuple[Any, ...]) -> bool:
    """``gradio_client`` sends strict JSON in UTF-8: no NaN, no infinity, no lone surrogate."""
    try:
        json.dumps(args, allow_nan=False, ensure_ascii=False).encode("utf-8")
    except (ValueError, UnicodeEncodeError):
        return False
    return True


def _raw_call(server: Server, endpoint: str, args: tuple[Any, ...]) -> tuple[str, Any]:
    """POST ``args`` as JSON (``NaN``, ``Infinity`` and ``\\ud800`` escapes allowed) to Gradio's ``/call`` route
    and read its event stream -> ("complete", outputs) or ("error", payload)."""
    import httpx

    with httpx.Client(base_url=server.url + "gradio_api", timeout=REQUEST_TIMEOUT_S) as http_client:
        data = []
        for arg in args:
            if _is_file(arg):
                with open(arg["path"], "rb") as fh:
                    name = os.path.basename(arg["path"])
                    response = http_client.post("/upload", files=[("files", (name, fh))])
                response.raise_for_status()
                arg = {"path": response.json()[0], "orig_name": name, "meta": {"_type": "gradio.FileData"}}
            data.append(arg)
        response = http_client.post(
            f"/call{endpoint}", content=json.dumps({"data": data}), headers={"content-type": "application/json"}
        )
        response.raise_for_status()
        event = ""
        with http_client.stream("GET", f"/call{endpoint}/{response.json()['event_id']}") as stream:
            for line in stream.iter_lines():
                if line.startswith("event: "):
                    event = line.removeprefix("event: ")
                elif line.startswith("data: ") and event in ("complete", "error"):
                    return event, json.loads(line.removeprefix("data: "))
    raise AssertionError(f"{endpoint}: the event stream ended without an answer")


def _error_outcome(server: Server, since: int, message: str) -> Outcome:
    """Classify an error message by the exception the server turned into it."""
    from gradio.exceptions import ComponentProcessingError, Error

    raised = server.raised[since:]
    if not raised:
        return Outcome("problem", f"an error the server did not raise: {message}")
    if isinstance(raised[-1], Error):
        return Outcome("error", message)
    if isinstance(raised[-1], ComponentProcessingError):
        return Outcome("gradio error", message)
    return Outcome("problem", f"unhandled {type(raised[-1]).__name__}: {message}")


def request(server: Server, endpoint: str, *args: Any) -> Outcome:
    """Send one request with a timeout; whatever happens becomes an ``Outcome``."""
    import httpx
    from gradio_client.exceptions import AppError

    since = len(server.raised)
    uploaded = tuple(os.path.basename(a["path"]) for a in args if _is_file(a))
    try:
        if _client_can_send(args):
            job = server.client.submit(*args, api_name=endpoint)
            try:
                output = job.result(timeout=REQUEST_TIMEOUT_S)
            except TimeoutError:
                job.cancel()
                return Outcome("problem", f"hang: no answer after {REQUEST_TIMEOUT_S:.0f} s", uploaded=uploaded)
        else:
            event, output = _raw_call(server, endpoint, args)
            if event == "error":
                raise AppError(output.get("error") if isinstance(output, dict) else str(output))
    except AppError as exc:
        outcome = _error_outcome(server, since, str(exc))
        return Outcome(outcome.kind, outcome.detail, uploaded=uploaded)
    except httpx.TimeoutException:
        return Outcome("problem", f"hang: no answer after {REQUEST_TIMEOUT_S:.0f} s", uploaded=uploaded)
    except Exception as exc:  # any other failure of the request is a problem to report
        return Outcome("problem", f"request failed: {type(exc).__name__}: {exc}", uploaded=uploaded)
    try:
        kind, text = _status(endpoint, output)
    except Exception as exc:  # an output the endpoint should never give
        return Outcome("problem", f"unexpected output {output!r:.200} ({type(exc).__name__}: {exc})")
    if "Traceback" in text:
        kind = "problem"
    return Outcome(kind, text, output, uploaded)


def server_answers(server: Server) -> bool:
    """A cheap request (the text tab's empty-input message) gets its answer."""
    outcome = request(server, "/analyze_text", "")
    return outcome.kind == "message" and outcome.detail == "Type some text first."


# --------------------------------------------------------------------------------------------------
# The cases.


@dataclass(frozen=True)
class Expect:
    """What a request must give: its kind and a phrase (case-insensitive) its text must hold; ``named``:
    the text must also name the uploaded file."""

    kind: str
    says: str = ""
    named: bool = False


@dataclass(frozen=True)
class DemoCase:
    name: str
    endpoint: str
    build: Callable[[Path], tuple[Any, ...]]  # the request's arguments; files are made in the given folder
    expect: Expect
    #: A further check of the outcome.
    check: Callable[[Outcome], None] | None = None
    #: Set when a known bug outside the demo makes the expectation fail (the test is then a strict xfail).
    known_bug: str | None = None

    @property
    def id(self) -> str:
        return f"{self.endpoint.removeprefix('/')}-{self.name}"


#: Corpus cases whose input is no regular file (missing, a folder, a FIFO, a device, an unusable name):
#: nothing a browser could upload. ``test_left_out_cases_cannot_be_uploaded`` keeps this list honest.
NOT_UPLOADABLE = (
    "missing_file",
    "directory",
    "dotdot_to_missing",
    "nul_byte_in_path",
    "very_long_file_name",
    "broken_symlink",
    "symlink_loop",
    "fifo_named_pipe",
    "char_device_dev_null",
)
UPLOADS: list[Case] = [case for case in CASES if case.is_file and case.name not in NOT_UPLOADABLE]
#: Multi-frame images: the Python API reads them as videos; Gradio's image input keeps the first frame.
FIRST_FRAME_ONLY = ("gif_animated_is_video", "webp_animated_is_video", "tiff_multipage_is_video")
#: Decoded by Gradio (under Pillow's pixel limit), then refused by our size check.
DECODED_THEN_REFUSED = ("png_48mp_over_cap", "image_1x1", "image_4x4")


def expected_from_video_endpoint(case: Case) -> Expect:
    if case.error is not None:
        return Expect("message", case.error, named=True)
    if case.kind == "video":
        return Expect("result")
    if case.kind == "image":
        return Expect("message", "is an image, not a video", named=True)
    return Expect("message", "no video stream", named=True)


def expected_from_audio_endpoint(case: Case) -> Expect:
    if case.kind == "audio":
        return Expect("result", "no speech found")
    return Expect("message", "empty file" if case.error == "empty file" else "audio", named=True)


def expected_from_image_endpoint(case: Case) -> Expect:
    if case.kind == "image" or case.name in FIRST_FRAME_ONLY:
        return Expect("result")
    if case.name in DECODED_THEN_REFUSED:
        assert case.error is not None
        return Expect("message", case.error)
    return Expect("gradio error", "could not preprocess", named=True)  # Pillow (in Gradio) cannot read it


def _upload(case: Case) -> Callable[[Path], tuple[Any, ...]]:
    def build(folder: Path) -> tuple[Any, ...]:
        from gradio_client import handle_file

        return (handle_file(os.fspath(case.build(folder))),)

    return build


def upload_cases() -> list[DemoCase]:
    cases = []
    for case in UPLOADS:
        cases.append(DemoCase(case.name, "/analyze_video", _upload(case), expected_from_video_endpoint(case)))
    cases += [DemoCase(c.name, "/analyze_audio", _upload(c), expected_from_audio_endpoint(c)) for c in UPLOADS]
    cases += [DemoCase(c.name, "/analyze_image", _upload(c), expected_from_image_endpoint(c)) for c in UPLOADS]
    return cases


def never_reads_a_file(outcome: Outcome) -> None:
    """A path-like text is analysed as words; no file's content comes back."""
    shown = json.dumps(outcome.output, ensure_ascii=False)
    assert "root:x:0:0" not in shown and "/bin/" not in shown, shown[:300]


MEGABYTE = "I am so happy today. " * 50_000
#: name -> (text, expected from /analyze_text, expected from /chat)
TEXTS: dict[str, tuple[str, Expect, Expect]] = {
    "binary_junk_as_text": (junk(2000, 11).decode("latin-1"), Expect("result"), Expect("result")),
    "nul_bytes_inside": ("I am happy\x00\x00 today\x00", Expect("result"), Expect("result")),
    "only_nul_bytes": ("\x00" * 64, Expect("result"), Expect("result")),
    "one_megabyte": (MEGABYTE, Expect("message", "text too long"), Expect("message", "text too long")),
    "path_dotdot_etc_passwd": ("../../etc/passwd", Expect("result"), Expect("result")),
    "path_absolute_etc_passwd": ("/etc/passwd", Expect("result"), Expect("result")),
    "path_file_url": ("file:///etc/passwd", Expect("result"), Expect("result")),
    "control_and_escape_chars": (
        "\x1b[31mred\x1b[0m\r\n\t\x07\x08\x7f I feel \x1b]0;title\x07 fine",
        Expect("result"),
        Expect("result"),
    ),
    "empty_string": ("", Expect("message", "Type some text first"), Expect("message", "Type a message")),
    "whitespace_only": (" \n\t \r\n ", Expect("message", "Type some text first"), Expect("message", "Type a message")),
    "rtl_and_emoji": ("أنا سعيد جدا 😀🎉 שלום \u202ereversed\u202c 👩‍👩‍👧", Expect("result"), Expect("result")),
    "zero_width_and_combining": (
        "h\u200be\u200dl\u2060l\ufeffo " + "z\u0301\u0302\u0303\u0304" * 500,
        Expect("result"),
        Expect("result"),
    ),
    "nan_string": ("nan", Expect("result"), Expect("result")),
    "minus_inf_string": ("-inf", Expect("result"), Expect("result")),
    "one_19000_char_word": ("a" * 19_000, Expect("result"), Expect("result")),
    "lone_surrogate": (
        "I am sad \ud800 today",
        Expect("message", "not valid Unicode"),
        Expect("message", "not valid Unicode"),
    ),
}


def _fixed(*args: Any) -> Callable[[Path], tuple[Any, ...]]:
    """Arguments that need no file."""
    return lambda folder: args


def text_cases() -> list[DemoCase]:
    """Each text through the text tab, the moment tab (typed text alone) and the conversation."""
    cases = []
    for name, (text, on_text, on_chat) in TEXTS.items():
        on_moment = Expect("message", "Give a photo") if on_text.says == "Type some text first" else on_text
        cases.append(DemoCase(name, "/analyze_text", _fixed(text), on_text, never_reads_a_file))
        cases.append(DemoCase(name, "/analyze_moment", _fixed(None, None, text), on_moment, never_reads_a_file))
        cases.append(DemoCase(name, "/chat", _fixed([], text, None, None), on_chat, never_reads_a_file))
    return cases


def _image_file(name: str, pixels: Callable[[], np.ndarray]) -> Callable[[Path], Any]:
    def build(folder: Path) -> Any:
        from gradio_client import handle_file

        return handle_file(str(write(folder / name, encode_image(pixels(), "PNG"))))

    return build


def _portrait(folder: Path) -> Any:
    from gradio_client import handle_file

    return handle_file(str(write(folder / "portrait.jpg", portrait_jpeg())))


_faceless = _image_file("grey.png", lambda: np.full((256, 256, 3), 128, np.uint8))
_two_faces = _image_file("two.png", lambda: np.hstack([load_portrait(), load_portrait()]))


def _generate(
    emotion: str = "sadness",
    second: str = "(none)",
    share: Any = 0.3,
    seed: Any = 0,
    count: Any = 1,
    guidance: Any = 3.0,
) -> Callable[[Path], tuple[Any, ...]]:
    return _fixed(emotion, second, share, seed, count, guidance)


def _edit(image: Callable[[Path], Any] | None = _portrait, emotion: str = "surprise", strength: Any = 1.0) -> Any:
    return lambda d: (image(d) if image else None, emotion, strength)


def _speak(
    image: Callable[[Path], Any] | None = _portrait,
    text: str = "Hello.",
    emotion: str = "happiness",
    intensity: Any = 0.5,
    engine: str = "auto",
) -> Any:
    return lambda d: (image(d) if image else None, text, emotion, intensity, engine)


def _error(says: str) -> Expect:
    return Expect("error", says)


BELOW_MIN, ABOVE_MAX, NOT_A_CHOICE = (
    "less than minimum value",
    "greater than maximum value",
    "not in the list of choices",
)
GENERATE, EDIT, SPEAK = "/generate_image", "/edit_expression", "/talking_head"


def generator_cases() -> list[DemoCase]:
    nan, inf = math.nan, math.inf
    return [
        DemoCase("count_negative", GENERATE, _generate(count=-3), _error(BELOW_MIN)),
        DemoCase("count_zero", GENERATE, _generate(count=0), _error(BELOW_MIN)),
        DemoCase("count_10000", GENERATE, _generate(count=10_000), _error(ABOVE_MAX)),
        DemoCase("count_nan", GENERATE, _generate(count=nan), _error("number of images")),
        DemoCase("count_null", GENERATE, _generate(count=None), Expect("gradio error", "slider")),
        DemoCase("count_1.5", GENERATE, _generate(count=1.5), Expect("result", "1 image(s)")),
        DemoCase("seed_negative", GENERATE, _generate(seed=-5), _error(BELOW_MIN)),
        DemoCase("seed_2_pow_64", GENERATE, _generate(seed=2**64), _error("seed must be a non-negative integer")),
        DemoCase("seed_1e300", GENERATE, _generate(seed=1e300), _error("seed must be a non-negative integer")),
        DemoCase("seed_inf", GENERATE, _generate(seed=inf), Expect("gradio error", "infinity")),
        DemoCase("seed_nan", GENERATE, _generate(seed=nan), Expect("gradio error", "NaN")),
        DemoCase("seed_null", GENERATE, _generate(seed=None), Expect("result", "seeds [0]")),
        DemoCase("share_nan", GENERATE, _generate(second="anger", share=nan), _error("finite number")),
        DemoCase("share_negative", GENERATE, _generate(second="anger", share=-0.5), _error(BELOW_MIN)),
        DemoCase("guidance_nan", GENERATE, _generate(guidance=nan), _error("guidance_scale must be in")),
        DemoCase("guidance_1e9", GENERATE, _generate(guidance=1e9), _error(ABOVE_MAX)),
        DemoCase("emotion_unknown", GENERATE, _generate(emotion="joy"), _error(NOT_A_CHOICE)),
        DemoCase("emotion_path_like", GENERATE, _generate(emotion="../../etc/passwd"), _error(NOT_A_CHOICE)),
        DemoCase("no_portrait", EDIT, _edit(image=None), Expect("message", "Give a portrait with one face")),
        DemoCase("portrait_without_face", EDIT, _edit(image=_faceless), Expect("message", "no face found")),
        DemoCase("portrait_two_faces", EDIT, _edit(image=_two_faces), Expect("message", "2 faces found")),
        DemoCase("strength_nan", EDIT, _edit(strength=nan), Expect("message", "strength must be within [0, 3]")),
        DemoCase("strength_inf", EDIT, _edit(strength=inf), _error(ABOVE_MAX)),
        DemoCase("strength_null", EDIT, _edit(strength=None), Expect("gradio error", "slider")),
        DemoCase("strength_negative", EDIT, _edit(strength=-1.0), _error(BELOW_MIN)),
        DemoCase("strength_1e9", EDIT, _edit(strength=1e9), _error(ABOVE_MAX)),
        DemoCase("emotion_unknown", EDIT, _edit(emotion="joy"), _error(NOT_A_CHOICE)),
        DemoCase("no_portrait", SPEAK, _speak(image=None), _error("Give a portrait with one face.")),
        DemoCase("portrait_without_face", SPEAK, _speak(image=_faceless), _error("no face found")),
        DemoCase("empty_text", SPEAK, _speak(text="  "), _error("Type what the portrait should say.")),
        DemoCase("one_megabyte_text", SPEAK, _speak(text=MEGABYTE), _error("takes at most 1000")),
        DemoCase("control_chars_only", SPEAK, _speak(text="\x00\x1b\x07"), _error("no speakable characters")),
        DemoCase("lone_surrogate_text", SPEAK, _speak(text="Hi \udc80.", emotion="from the text"), _error("Unicode")),
        DemoCase("intensity_nan", SPEAK, _speak(intensity=nan), _error("intensity must lie in [0, 1]")),
        DemoCase("intensity_null", SPEAK, _speak(intensity=None), Expect("gradio error", "slider")),
        DemoCase("intensity_negative", SPEAK, _speak(intensity=-1.0), _error(BELOW_MIN)),
        DemoCase("intensity_1e9", SPEAK, _speak(intensity=1e9), _error(ABOVE_MAX)),
        DemoCase("emotion_unknown", SPEAK, _speak(emotion="joy"), _error(NOT_A_CHOICE)),
        DemoCase("engine_shell_string", SPEAK, _speak(engine="x; rm -rf /"), _error(NOT_A_CHOICE)),
    ]


ALL_CASES: list[DemoCase] = upload_cases() + text_cases() + generator_cases()
assert len({case.id for case in ALL_CASES}) == len(ALL_CASES), "duplicate case ids"
OUTCOMES: dict[str, Outcome] = {}  # filled by test_endpoint, reused by test_report


def run_case(server: Server, case: DemoCase, folder: Path) -> Outcome:
    """Build and send ``case``, then check that the server still answers."""
    folder.mkdir(parents=True, exist_ok=True)
    outcome = request(server, case.endpoint, *case.build(folder))
    if not server_answers(server):
        return Outcome("problem", f"the server stopped answering after this request ({outcome.detail})")
    return outcome


def check(case: DemoCase, outcome: Outcome) -> None:
    """Assert that ``outcome`` is what ``case`` expects."""
    where = f"{case.endpoint} {case.name}"
    assert outcome.kind == case.expect.kind, f"{where}: expected {case.expect}, got {outcome.kind}: {outcome.detail}"
    assert case.expect.says.lower() in outcome.detail.lower(), f"{where}: {outcome.detail!r} lacks {case.expect.says!r}"
    if case.expect.named:
        assert outcome.uploaded and outcome.uploaded[0] in outcome.detail, f"{where}: {outcome.detail!r}"
    if case.check is not None:
        case.check(outcome)


# --------------------------------------------------------------------------------------------------
# The report's table.


def summary(server: Server, outcome: Outcome) -> str:
    """One line for the table: upload folders left out, Gradio's preprocessing error cut to its cause."""
    text = re.sub(re.escape(server.upload_dir) + r"/[0-9a-f]+/", "", outcome.detail)
    found = re.search(r"a `(\w+)` component.*Original error: (.*)", text, re.S)
    if outcome.kind == "gradio error" and found:
        text = f"Gradio could not read the {found[1]} input: {found[2]}"
    text = " ".join(text.replace("\x00", "\\x00").split())
    return text if len(text) <= 150 else text[:149] + "…"


def format_table(server: Server, rows: list[tuple[DemoCase, Outcome]]) -> str:
    width = max(len(case.name) for case, _ in rows)
    lines = [f"{'case':<{width}}  {'endpoint':<16}  outcome", "-" * (width + 150)]
    for case, outcome in rows:
        lines.append(f"{case.name:<{width}}  {case.endpoint:<16}  {outcome.kind}: {summary(server, outcome)}")
    return "\n".join(lines)


def tally(rows: list[tuple[DemoCase, Outcome]]) -> str:
    """Per endpoint: how many cases gave each kind of outcome."""
    counts: dict[str, Counter[str]] = {}
    for case, outcome in rows:
        counts.setdefault(case.endpoint, Counter())[outcome.kind] += 1
    lines = [f"{'endpoint':<16}  {'cases':>5}  " + "  ".join(f"{k:>12}" for k in KINDS)]
    for endpoint, count in [*counts.items(), ("all", sum(counts.values(), Counter()))]:
        cells = "  ".join(f"{count[k]:>12}" for k in KINDS)
        lines.append(f"{endpoint:<16}  {sum(count.values()):>5}  {cells}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Tests.


def test_corpus_is_big_enough() -> None:
    assert len(UPLOADS) >= 30 and len(TEXTS) >= 10 and len(generator_cases()) >= 30
    assert set(NOT_UPLOADABLE) <= {case.name for case in CASES}


def test_left_out_cases_cannot_be_uploaded(tmp_path: Path) -> None:
    """The corpus cases left out are exactly those whose input is no regular file."""
    for case in (case for case in CASES if case.is_file):
        (tmp_path / case.name).mkdir()
        value = case.build(tmp_path / case.name)
        try:
            regular = Path(value).is_file()
        except (OSError, ValueError):
            regular = False
        assert regular == (case.name not in NOT_UPLOADABLE), case.name


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(c, id=c.id, marks=[pytest.mark.xfail(strict=True, reason=c.known_bug)] if c.known_bug else [])
        for c in ALL_CASES
    ],
)
def test_endpoint(server: Server, case: DemoCase, tmp_path: Path) -> None:
    outcome = run_case(server, case, tmp_path)
    OUTCOMES[case.id] = outcome
    check(case, outcome)


def test_report(server: Server, tmp_path: Path) -> None:
    """Print every case and what the demo gave (run with ``-s -k report``); none may be a problem."""
    rows = []
    for k, case in enumerate(ALL_CASES):
        outcome = OUTCOMES.get(case.id) or run_case(server, case, tmp_path / str(k))
        rows.append((case, outcome))
    print("\n" + format_table(server, rows) + "\n\n" + tally(rows))
    problems = [(case.id, outcome.detail) for case, outcome in rows if outcome.kind == "problem"]
    assert not problems, problems


def test_upload_over_the_size_limit_is_refused(server: Server, tmp_path: Path) -> None:
    import httpx
    from gradio_client import handle_file

    from demo.app import MAX_UPLOAD

    assert server.settings["max_file_size"] == MAX_UPLOAD == "200mb"
    limit = server.demo.max_file_size
    assert limit == 200 * 1024**2
    big = tmp_path / "big.mp4"
    with big.open("wb") as fh:
        fh.truncate(limit + 1)  # sparse: one byte over the limit, no disk used
    # gradio_client reads the limit from the server's config and refuses before sending anything
    with pytest.raises(ValueError, match="exceeds the maximum file size"):
        server.client.predict(handle_file(str(big)), api_name="/analyze_video")
    # a client that sends it anyway is cut off by the server, and nothing of it is kept
    with big.open("rb") as fh:
        response = httpx.post(server.url + "gradio_api/upload", files=[("files", ("big.mp4", fh))], timeout=120)
    assert response.status_code == 413 and f"maximum allowed size of {limit} bytes" in response.text
    assert not list(Path(server.upload_dir).rglob("big.mp4"))
    small = httpx.post(server.url + "gradio_api/upload", files=[("files", ("small.mp4", b"\0" * 1024))], timeout=30)
    assert small.status_code == 200  # the route itself works
    assert server_answers(server)


def _other_addresses() -> list[str]:
    """This machine's IPv4 addresses other than loopback."""
    found: set[str] = set()
    with contextlib.suppress(OSError):
        found.update(str(info[4][0]) for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET))
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.1", 9))  # sends nothing: only picks the outgoing interface and its address
        found.add(probe.getsockname()[0])
    return sorted(a for a in found if not a.startswith("127.") and a != "0.0.0.0")


def test_listens_on_localhost_only_by_default(server: Server) -> None:
    from affectlens.cli import build_parser
    from demo import app

    assert inspect.signature(app.launch).parameters["host"].default == "127.0.0.1"
    assert build_parser().parse_args(["demo"]).host == "127.0.0.1"
    assert server.settings["server_name"] == "127.0.0.1"  # what launch() gave Gradio when no host was given
    addresses = _other_addresses()
    if not addresses:
        pytest.skip("this machine has no address but loopback: nothing else to try to reach the demo on")
    for address in addresses:
        with socket.create_server(("0.0.0.0", 0)) as control:  # the address does reach a listener on all of them
            socket.create_connection((address, control.getsockname()[1]), timeout=5).close()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((address, server.port), timeout=5).close()


def _get_raw_path(server: Server, path: str) -> tuple[int, bytes]:
    """GET ``path`` exactly as written (``..`` not resolved by the client)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_file_routes_never_serve_arbitrary_files(server: Server) -> None:
    import httpx

    repo = Path(__file__).resolve().parents[1]
    workdir = Path(server.demo.affectlens_workdir.name)
    secret = workdir / "secret.txt"  # a file in the demo's own work folder, which Gradio copies from
    secret.write_text("the demo's work folder is not served\n")
    readme = (repo / "README.md").read_text().splitlines()[0]
    refused = {
        "/gradio_api/file=/etc/passwd": "root:",
        "/file=/etc/passwd": "root:",
        "/gradio_api/file=%2Fetc%2Fpasswd": "root:",
        "/gradio_api/file=/proc/self/environ": "PATH=",
        f"/gradio_api/file={repo}/README.md": readme,
        "/gradio_api/file=README.md": readme,
        f"/gradio_api/file={repo}/demo/app.py": "def build_demo",
        "/gradio_api/file=demo/app.py": "def build_demo",
        f"/gradio_api/file={server.upload_dir}/%2e%2e/%2e%2e/etc/passwd": "root:",
        "/gradio_api/file=../../../../etc/passwd": "root:",
        f"/gradio_api/file={secret}": "not served",
        f"/gradio_api/file={workdir}": "",
        "/gradio_api/file=file:///etc/passwd": "root:",
        f"/gradio_api/file=http://127.0.0.1:{server.port}/gradio_api/info": "named_endpoints",
        "/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd": "root:",
        "/assets/%2e%2e/%2e%2e/%2e%2e/etc/passwd": "root:",
    }
    try:
        for path, marker in refused.items():
            response = httpx.get(server.url.rstrip("/") + path, follow_redirects=False, timeout=30)
            assert response.status_code in (403, 404), (path, response.status_code, response.text[:200])
            assert not marker or marker not in response.text, path
        for path in (
            f"/gradio_api/file={server.upload_dir}/../../etc/passwd",
            f"/gradio_api/file={secret}/../../../etc/passwd",
        ):
            status, body = _get_raw_path(server, path)  # ".." sent as is
            assert status in (403, 404) and b"root:" not in body, (path, status)
    finally:
        secret.unlink()
    # What the server does serve is what it was given: an uploaded page comes back as a download, not a page.
    page = b"<html><script>alert(1)</script></html>"
    uploaded = httpx.post(server.url + "gradio_api/upload", files=[("files", ("page.html", page))], timeout=30).json()
    response = httpx.get(server.url + f"gradio_api/file={uploaded[0]}", timeout=30)
    assert response.status_code == 200 and response.content == page
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.headers["content-disposition"].startswith("attachment")


def test_work_folder_is_bounded_then_removed(server: Server, tmp_path: Path) -> None:
    """Runs last: the demo's folder keeps a few outputs at most, and goes with the demo."""
    from gradio_client import handle_file

    from demo.app import KEEP_VIDEOS

    workdir = Path(server.demo.affectlens_workdir.name)
    empty = handle_file(str(write(tmp_path / "empty.mp4", b"")))
    for _ in range(KEEP_VIDEOS + 3):  # each call names a new annotated video, even when the upload is refused
        assert request(server, "/analyze_video", empty).kind == "message"
    names = [path.name for path in workdir.iterdir()]
    assert all(name.startswith(("annotated-", "talking-head-", "reply-")) for name in names), names
    for prefix in ("annotated-", "talking-head-", "reply-"):
        assert sum(name.startswith(prefix) for name in names) <= KEEP_VIDEOS, names
    assert sum(name.startswith("annotated-") for name in names) == KEEP_VIDEOS  # the bound was reached, and held
    server.demo.close()
    server.demo.affectlens_workdir.cleanup()
    assert not workdir.exists()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", server.port), timeout=5).close()
