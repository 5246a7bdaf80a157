"""The Gradio web demo: ``build_demo(analyzer) -> gr.Blocks``. It calls only the public API.

Run with ``affectlens demo`` (binds to 127.0.0.1 unless told otherwise).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np

from affectlens import AnalysisResult, Analyzer, MediaError
from affectlens.visualize import VideoWriter, draw_faces
from demo.samples import PORTRAIT

logger = logging.getLogger(__name__)

MAX_UPLOAD = "200mb"
VIDEO_FPS = 4.0
VIDEO_MAX_FRAMES = 120


def _label_value(result: AnalysisResult) -> dict[str, float]:
    return result.mean_expression() or {}


def _status(result: AnalysisResult) -> str:
    mean = result.mean_expression()
    if not mean:
        return "No face found. " + " ".join(result.warnings)
    top = max(mean, key=mean.__getitem__)
    return (
        f"{result.num_faces} face(s) in {len(result.frames)} frame(s); overall expression: **{top}** ({mean[top]:.0%})."
    )


def build_demo(analyzer: Analyzer) -> gr.Blocks:
    """The demo's UI around an injected ``Analyzer`` (tests pass one built from tiny parts)."""

    def analyze_image(image: np.ndarray | None) -> tuple[Any, Any, Any, str]:
        if image is None:
            return None, None, None, "Upload an image first."
        try:
            result = analyzer.analyze_image(image)
        except MediaError as exc:
            return None, None, None, f"Error: {exc}"
        return draw_faces(image, result.faces), _label_value(result), result.to_dict(), _status(result)

    def analyze_video(path: str | None) -> tuple[Any, Any, Any, str]:
        if not path:
            return None, None, None, "Upload a video first."
        out = Path(tempfile.mkdtemp(prefix="affectlens-demo-")) / "annotated.mp4"
        writer: VideoWriter | None = None

        def on_frame(frame: Any, frame_result: Any) -> None:
            nonlocal writer
            if writer is None:
                h, w = frame.image.shape[:2]
                writer = VideoWriter(out, VIDEO_FPS, w, h)
            writer.write(draw_faces(frame.image, frame_result.faces))

        try:
            result = analyzer.analyze_video(path, fps=VIDEO_FPS, max_frames=VIDEO_MAX_FRAMES, on_frame=on_frame)
        except MediaError as exc:
            return None, None, None, f"Error: {exc}"
        finally:
            if writer is not None:
                writer.close()
        return str(out), _label_value(result), result.to_dict(), _status(result)

    with gr.Blocks(title="AffectLens") as demo:
        gr.Markdown(
            "# AffectLens\nFaces, expressions and quality from an image or a video — offline, on a CPU. "
            "Each face gets a box, its 468-point mesh and a distribution over the canonical emotions."
        )
        with gr.Tab("Analyze"):
            with gr.Tab("Image"):
                with gr.Row():
                    image_in = gr.Image(type="numpy", label="Image", sources=["upload", "webcam", "clipboard"])
                    image_out = gr.Image(type="numpy", label="Faces", interactive=False)
                image_btn = gr.Button("Analyze image", variant="primary")
                image_status = gr.Markdown()
                with gr.Row():
                    image_label = gr.Label(label="Expression (quality-weighted mean)", num_top_classes=7)
                    image_json = gr.JSON(label="Result")
                gr.Examples(examples=[[str(PORTRAIT)]], inputs=[image_in])
                image_btn.click(
                    analyze_image,
                    inputs=image_in,
                    outputs=[image_out, image_label, image_json, image_status],
                    api_name="analyze_image",
                )
            with gr.Tab("Video"):
                with gr.Row():
                    video_in = gr.Video(label="Video", sources=["upload"])
                    video_out = gr.Video(label="Annotated", interactive=False)
                video_btn = gr.Button("Analyze video", variant="primary")
                video_status = gr.Markdown()
                with gr.Row():
                    video_label = gr.Label(label="Expression (quality-weighted mean)", num_top_classes=7)
                    video_json = gr.JSON(label="Result")
                video_btn.click(
                    analyze_video,
                    inputs=video_in,
                    outputs=[video_out, video_label, video_json, video_status],
                    api_name="analyze_video",
                )
    return demo


def launch(host: str = "127.0.0.1", port: int = 7860, analyzer: Analyzer | None = None) -> None:
    """Build the default analyzer and serve the demo."""
    demo = build_demo(analyzer or Analyzer())
    demo.queue(default_concurrency_limit=2).launch(
        server_name=host, server_port=port, max_file_size=MAX_UPLOAD, show_error=True
    )
