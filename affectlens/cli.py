"""The ``affectlens`` command line: analyze, annotate, eval, chat, generate, weights, models, quickstart, demo.
It prints; the library logs."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from affectlens import __version__
from affectlens.errors import AffectLensError

if TYPE_CHECKING:
    from affectlens.analyzer import Analyzer
    from affectlens.types import AnalysisResult
    from fusion.tree import TreeWriter

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


def _summary_line(result: AnalysisResult) -> str:
    if result.kind == "multimodal":
        what = f"multimodal ({', '.join(p.kind for p in result.parts)})"
        mean = result.mean_expression()
        if result.num_faces:
            top = sorted((mean or {}).items(), key=lambda kv: -kv[1])[:3]
            what += f", {result.num_faces} face(s); expression: " + ", ".join(f"{k} {v:.0%}" for k, v in top)
        return f"{result.source}: {what}; {len(result.utterances)} utterance(s)"
    if result.kind in ("audio", "text"):
        what = f"{result.kind}" + (f" {result.duration:.1f}s" if result.duration else "")
        return f"{result.source}: {what}, {len(result.utterances)} utterance(s)"
    what = f"{result.kind} {result.width}x{result.height}"
    if result.kind == "video":
        what += f", {len(result.frames)} frames analysed"
    mean = result.mean_expression()
    overall = "no face"
    if mean:
        top = sorted(mean.items(), key=lambda kv: -kv[1])[:3]
        overall = ", ".join(f"{k} {v:.0%}" for k, v in top)
    line = f"{result.source}: {what}, {result.num_faces} face(s); expression: {overall}"
    return line + (f"; {len(result.utterances)} utterance(s)" if result.utterances else "")


def _print_result(result: AnalysisResult, max_lines: int = 12) -> None:
    print(_summary_line(result))
    lines = 0
    for frame in result.frames:
        for face in frame.faces:
            if lines == max_lines:
                print(f"  … {result.num_faces - lines} more (use --json or -o for everything)")
                return
            stamp = f"t={frame.time:6.2f}s " if result.kind == "video" else ""
            x1, y1, x2, y2 = (round(v) for v in face.box)
            who = f"track {face.track_id}" if face.track_id is not None else f"face #{face.index}"
            line = (
                f"  {stamp}{who} box=({x1},{y1},{x2},{y2}) {face.expression.label} "
                f"{face.expression.confidence:.0%} quality={face.quality.score:.2f}"
            )
            if face.state is not None:
                line += f" smoothed={face.state}"
            if face.pose is not None:
                line += f" yaw/pitch/roll={face.pose.yaw:+.0f}/{face.pose.pitch:+.0f}/{face.pose.roll:+.0f}"
            if face.aus:
                strongest = sorted(face.aus.items(), key=lambda kv: -kv[1])[:3]
                line += " " + " ".join(f"{au}={v:.1f}" for au, v in strongest if v >= 1.0)
            print(line.rstrip())
            lines += 1
    for utt in result.utterances[:max_lines]:
        timed = result.kind in ("audio", "video") or (result.kind == "multimodal" and utt.end > utt.start)
        parts = [f"  [{utt.start:6.2f}-{utt.end:6.2f}s]" if timed else " "]
        if utt.text is not None:
            parts.append(repr(utt.text if len(utt.text) <= 80 else utt.text[:77] + "..."))
        if utt.speech_emotion is not None:
            parts.append(f"voice: {utt.speech_emotion.label} {utt.speech_emotion.confidence:.0%}")
        if utt.text_emotion is not None:
            words = ", ".join(w for w, _ in utt.text_emotion.salient_words[:3])
            parts.append(f"words: {utt.text_emotion.emotion.label} {utt.text_emotion.emotion.confidence:.0%}")
            parts.append(f"({words})" if words else "")
        if utt.prosody is not None and utt.prosody.pitch_mean is not None:
            parts.append(f"pitch {utt.prosody.pitch_mean:.0f} Hz, {utt.prosody.speaking_rate:.1f} syll/s")
        print(" ".join(p for p in parts if p))
    if result.tree is not None:
        emotion = result.tree.emotion.value
        state = emotion["state"] if emotion["label"] is None else f"{emotion['state']} {emotion['confidence']:.0%}"
        print(f"  moment: {state} ({emotion['agreement']}); reply: {result.tree.reply.text}")
    for warning in result.warnings:
        print(f"  note: {warning}")


def _write_outputs(result: AnalysisResult, out_dir: Path, annotated: np.ndarray | None = None) -> list[Path]:
    """Write ``<stem>.json`` and ``<stem>.faces.csv`` (and an annotated image when given)."""
    import cv2

    out_dir.mkdir(parents=True, exist_ok=True)
    stem = Path(result.source).stem if result.source != "<array>" else "array"
    written = []
    json_path = out_dir / f"{stem}.json"
    tmp = json_path.with_suffix(".json.tmp")
    tmp.write_text(result.to_json(include_landmarks=True))
    os.replace(tmp, json_path)
    written.append(json_path)
    csv_path = out_dir / f"{stem}.faces.csv"
    result.to_dataframe().to_csv(csv_path, index=False)
    written.append(csv_path)
    if annotated is not None:
        png = out_dir / f"{stem}.annotated.png"
        cv2.imwrite(str(png), cv2.cvtColor(annotated, cv2.COLOR_RGB2BGR))
        written.append(png)
    return written


def _analyze_one(
    analyzer: Analyzer,
    path: str,
    out_dir: Path | None,
    fps: float | None,
    max_frames: int | None,
    blur: bool = False,
) -> tuple[AnalysisResult, list[Path]]:
    """Analyse one file; with ``out_dir``, also write results and annotated media (decoding once; ``blur``:
    faces blurred in the media)."""
    from affectlens.visualize import AnnotatedVideo, draw_faces
    from perception.media import open_media

    kind, rgb, info = open_media(path, analyzer.limits)
    if kind == "audio":
        result = analyzer.analyze_audio(path)
        return result, (_write_outputs(result, out_dir) if out_dir else [])
    if rgb is not None:
        result = analyzer.analyze_image(rgb, source=path)
        return result, (_write_outputs(result, out_dir, draw_faces(rgb, result.faces, blur=blur)) if out_dir else [])
    if out_dir is None:
        return analyzer.analyze_video(path, fps=fps, max_frames=max_frames), []
    assert info is not None
    out_dir.mkdir(parents=True, exist_ok=True)
    video_path = out_dir / f"{Path(path).stem}.annotated.mp4"
    with AnnotatedVideo(video_path, fps or info.fps, blur=blur) as annotate:
        result = analyzer.analyze_video(path, fps=fps, max_frames=max_frames, on_frame=annotate)
    written = _write_outputs(result, out_dir, annotate.keyframe)
    return result, [*written, video_path]


def _analyzer(args: argparse.Namespace) -> Analyzer:
    """The analyzer ``main`` was given (tests inject one of tiny parts), else the default one."""
    if args.analyzer is not None:
        return args.analyzer
    from affectlens.analyzer import Analyzer, build_face_pipeline

    expression_only, model = getattr(args, "expression_only", False), getattr(args, "expression_model", None)
    if expression_only or model:
        return Analyzer(face=build_face_pipeline(expression=model, geometry=not expression_only))
    return Analyzer()


def _load_writer() -> TreeWriter:
    """The compact-LM tree writer for ``--explain`` (imported here: loading it is slow and it may be absent)."""
    from fusion.reasoner import build_default_writer

    return build_default_writer()


def cmd_analyze(args: argparse.Namespace) -> int:
    if not args.paths and not args.text:
        print("error: give at least one PATH or --text TEXT", file=sys.stderr)
        return EXIT_USAGE
    writer = None
    if args.explain:
        try:
            writer = _load_writer()
        except ImportError as exc:
            print(
                f"error: --explain needs the language-model writer (fusion.reasoner.build_default_writer), "
                f"which is not available: {exc}",
                file=sys.stderr,
            )
            return EXIT_ERROR
    # --tree, --together and --explain read all inputs as one moment: one (multimodal) result with one tree.
    together = args.tree or args.together or args.explain
    analyzer = _analyzer(args)
    if getattr(args, "fusion", None) == "adapter":  # the adapter + LM labels the tree (and writes it with --explain)
        from fusion.reasoner import AdapterReasoner, build_default_reasoner

        reasoner = writer if isinstance(writer, AdapterReasoner) else build_default_reasoner()
        analyzer.set_fuser(reasoner)
    elif getattr(args, "fusion", None) == "late":
        from fusion.tree import late_fuser

        analyzer.set_fuser(late_fuser())
    typed: list[AnalysisResult] = []
    media: list[AnalysisResult] = []
    failed = 0
    out_dir = Path(args.output) if args.output else None
    for text in args.text or []:
        try:
            result = analyzer.analyze_text(text)
        except AffectLensError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed += 1
            continue
        typed.append(result)
        if not args.json and not together:
            _print_result(result)
    for path in args.paths:
        try:
            result, written = _analyze_one(analyzer, path, out_dir, args.fps, args.max_frames, args.blur_faces)
        except AffectLensError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed += 1
            continue
        media.append(result)
        if args.json:
            continue
        if not together:
            _print_result(result)
        for file in written:
            print(f"  wrote {file}")
    if together:
        parts = [*media, *typed]  # the media first, then what was typed
        if not parts:
            return EXIT_ERROR
        result = parts[0] if len(parts) == 1 else analyzer.combine(parts)
        result = replace(result, tree=analyzer.build_tree(result, writer=writer))
        if args.json:
            print(json.dumps(result.to_dict(include_landmarks=args.landmarks), indent=2))
        elif args.tree or args.explain:
            assert result.tree is not None
            print(result.tree.render())
        else:
            _print_result(result)
        return EXIT_ERROR if failed else EXIT_OK
    if args.json:
        payload = [r.to_dict(include_landmarks=args.landmarks) for r in [*typed, *media]]
        single = len(args.paths) + len(args.text or []) == 1
        print(json.dumps(payload[0] if single and payload else payload, indent=2))
    return EXIT_ERROR if failed else EXIT_OK


def _annotate_workers(args: argparse.Namespace) -> int:
    """``--workers``, else one worker per core (an injected analyzer, as in tests, runs in this process)."""
    if args.workers is not None:
        return int(args.workers)
    if args.analyzer is not None or args.engine == "ray":
        return 1  # ray: 1 means one actor per CPU of the cluster
    return os.cpu_count() or 1


def cmd_annotate(args: argparse.Namespace) -> int:
    from affectlens.annotate import AnnotateSettings, annotate_files, parse_modalities

    try:
        settings = AnnotateSettings(
            fps=args.fps, modalities=parse_modalities(args.modalities), format=args.format, report=args.report,
            workers=_annotate_workers(args), engine=args.engine, ray_address=args.ray_address,
            blur_faces=args.blur_faces,
        )  # fmt: skip
        if settings.engine == "ray":
            from affectlens.annotate_ray import import_ray

            import_ray()
    except (ValueError, AffectLensError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    report = annotate_files(args.inputs, args.output, settings, analyzer=args.analyzer, progress=not args.quiet)
    print(
        f"{report.output}: {len(report.done)} annotated, {len(report.skipped)} already done, {len(report.failed)} failed"
    )
    for path, reason in report.failed:
        print(f"  failed: {reason}" if reason.startswith(path) else f"  failed: {path}: {reason}")
    return EXIT_ERROR if report.failed else EXIT_OK


def _print_safety_report(report: dict) -> None:
    c = report["confusion"]
    earlier = f" ({report['with_history']} with earlier messages)" if report.get("with_history") else ""
    print(f"{report['task']} with {report['model']} on {report['data']}: n={report['n']}{earlier}")
    print(
        f"  crisis: recall {report['recall']:.4f}  precision {report['precision']:.4f}  F1 {report['f1']:.4f}"
        f"  accuracy {report['accuracy']:.4f}"
    )
    print(f"  confusion: tp {c['tp']}  fn {c['fn']}  fp {c['fp']}  tn {c['tn']}")
    concern = report["concern"]
    print(
        f"  concern without crisis support (counted as none): {concern['negatives']} of the none messages, "
        f"{concern['positives']} of the crisis messages"
    )
    for miss in report["misclassified"]:
        print(f"  missed {miss['label']} → {miss['level']} (line {miss['line']}): {miss['text']}")
        if miss.get("history"):
            print(f"      earlier: {' || '.join(miss['history'])}")
        print(f"      {miss['why']}")


def _print_strategy_report(report: dict) -> None:
    print(
        f"{report['task']} with {report['model']} on {report['data']}: n={report['n']} supporter messages "
        f"({report['dialogues']} dialogues)"
    )
    print(
        f"  accuracy {report['accuracy']:.4f}  macro-F1 {report['macro_f1']:.4f}"
        f"  any chosen {report['any_chosen_accuracy']:.4f}  strategies per turn {report['mean_strategies_per_turn']:.2f}"
    )
    print(
        f"  repetition {report['repetition_rate']:.4f} (references {report['reference_repetition_rate']:.4f});"
        f"  majority class {report['majority_class']['strategy']!r}: accuracy {report['majority_class']['accuracy']:.4f}"
    )
    turns = report["turns"]
    print(
        f"  per supporter turn (n={turns['n']}): top-1 in the turn's strategies {turns['turn_top1_accuracy']:.4f}"
        f"  any chosen in them {turns['any_chosen_in_set']:.4f}  repetition {turns['repetition_rate']:.4f}"
        f" (references {turns['reference_repetition_rate']:.4f});  majority class"
        f" {turns['majority_class']['strategy']!r}: {turns['majority_class']['turn_top1_accuracy']:.4f}"
    )
    top, top_turns = report["prediction"], turns["prediction"]
    print(
        f"  most likely strategy alone (before the repetition rule): accuracy {top['accuracy']:.4f}"
        f"  macro-F1 {top['macro_f1']:.4f}  per turn {top_turns['turn_top1_accuracy']:.4f}"
        f"  repetition {top_turns['repetition_rate']:.4f}"
    )
    print(f"  {'strategy':<30} predicted  reference")
    for strategy, share in report["predicted_distribution"].items():
        print(f"  {strategy:<30} {share:>9.4f}  {report['reference_distribution'][strategy]:>9.4f}")


def _print_dialogue_report(report: dict) -> None:
    print(
        f"{report['task']} with {report['model']} on {report['data']}: n={report['n']} supporter turns "
        f"({report['dialogues']} dialogues)"
    )
    print(f"  {'':<18} BLEU-2  ROUGE-L  Distinct-1  Distinct-2")
    for name, key in (("reply", "reply"), ("template baseline", "template_baseline")):
        m = report[key]
        print(f"  {name:<18} {m['bleu_2']:.4f}  {m['rouge_l']:.4f}   {m['distinct_1']:.4f}      {m['distinct_2']:.4f}")
    ref = report["references"]
    print(f"  {'references':<18} {'':6}  {'':6}   {ref['distinct_1']:.4f}      {ref['distinct_2']:.4f}")
    latency = report["latency_seconds"]
    sources = ", ".join(f"{k} {v}" for k, v in report["reply_sources"].items())
    print(f"  seconds per turn: mean {latency['mean']:.2f}, p90 {latency['p90']:.2f}; replies from: {sources}")
    for example in report["examples"]:
        print(f"  seeker:    {example['seeker']}")
        print(f"  reference: {example['reference']}")
        print(f"  reply:     {example['reply']} [{example['source']}]")


def _eval_esconv(args: argparse.Namespace, started: float) -> int:
    """``eval strategy`` and ``eval dialogue`` on an ESConv JSONL file."""
    from affectlens import evaluation

    for flag, value in (("--limit", args.limit), ("--turns-per-dialogue", args.turns_per_dialogue)):
        if value is not None and value < 1:
            print(f"error: {flag} must be at least 1", file=sys.stderr)
            return EXIT_USAGE
    if args.task == "strategy":
        report = evaluation.evaluate_strategy(args.data, limit=args.limit, model_dir=args.model)
    else:
        if args.model:
            print("error: dialogue evaluates the shipped conversation models; drop --model", file=sys.stderr)
            return EXIT_USAGE
        limit, turns = evaluation.DIALOGUE_SAMPLE
        report = evaluation.evaluate_dialogue(
            args.data, limit=args.limit or limit, turns_per_dialogue=args.turns_per_dialogue or turns,
            exemplars=args.exemplars, reply_lora=args.reply_lora or not args.no_reply_lora,
        )  # fmt: skip
    report["seconds"] = round(time.perf_counter() - started, 1)
    if args.json:
        print(json.dumps(report))
    elif args.task == "strategy":
        _print_strategy_report(report)
    else:
        _print_dialogue_report(report)
    return EXIT_OK


def cmd_eval(args: argparse.Namespace) -> int:
    from affectlens import evaluation

    started = time.perf_counter()
    if args.task in ("strategy", "dialogue"):
        return _eval_esconv(args, started)
    if args.task == "safety":
        if args.model not in (None, *evaluation.SAFETY_DETECTORS):
            print(
                f"error: unknown safety detector {args.model!r} (valid: {', '.join(evaluation.SAFETY_DETECTORS)})",
                file=sys.stderr,
            )
            return EXIT_USAGE
        report = evaluation.evaluate_safety(args.data, limit=args.limit, model=args.model)
        report["seconds"] = round(time.perf_counter() - started, 1)
        if args.json:
            print(json.dumps(report))
        else:
            _print_safety_report(report)
        return EXIT_OK
    if args.task == "face-expression":
        report = evaluation.evaluate_face_expression(
            args.data, model=args.model, detect=args.detect, limit_per_class=args.limit
        )
    elif args.task == "speech-emotion":
        report = evaluation.evaluate_speech_emotion(args.data, model=args.model, limit_per_class=args.limit)
    else:
        report = evaluation.evaluate_text_emotion(
            args.data, args.text_col, args.label_col, model=args.model, limit=args.limit
        )
    report["seconds"] = round(time.perf_counter() - started, 1)
    if args.json:
        print(json.dumps(report))
        return EXIT_OK
    print(f"{report['task']} with {report['model']} on {report['data']}: n={report['n']}")
    print(
        f"  accuracy {report['accuracy']:.4f}  macro-F1 {report['macro_f1']:.4f}  weighted-F1 {report['weighted_f1']:.4f}"
    )
    if "ece" in report:
        print(f"  calibration: ECE {report['ece']:.4f}, mean confidence {report['mean_confidence']:.4f}")
    for label, row in report["per_class"].items():
        print(f"  {label:<10} P {row['precision']:.3f}  R {row['recall']:.3f}  F1 {row['f1']:.3f}  n={row['support']}")
    labels = report["confusion"]["labels"]
    print("  confusion (rows = truth): " + " ".join(f"{lbl[:4]:>5}" for lbl in labels))
    for lbl, row in zip(labels, report["confusion"]["matrix"], strict=True):
        print(f"  {lbl:>24} " + " ".join(f"{v:>5}" for v in row))
    if report["excluded"]:
        print(f"  excluded: {report['excluded']}")
    if report["errors"]:
        print(f"  errors: {report['errors']}")
    return EXIT_OK


def cmd_weights(args: argparse.Namespace) -> int:
    from affectlens import weights

    if args.action == "fetch":
        fetched = weights.fetch(args.names or None)
        for name, path in fetched.items():
            print(f"ok  {name:<26} {path}")
        return EXIT_OK
    bad = 0
    for entry in weights.load_manifest().values():
        state, where = weights.status(entry)
        bad += state != "ok"
        if args.action == "list":
            print(f"{state:<10} {entry.name:<26} {entry.source}")
            print(
                f"{'':<10} licence: {entry.licence}; trained on {entry.training_data} ({entry.training_data_licence})"
            )
            print(f"{'':<10} metric: {entry.metric}")
            print(f"{'':<10} at: {where or '-'}")
        else:
            print(f"{state:<10} {entry.name:<26} {where or '-'}")
    if bad and args.action == "verify":
        print(f"{bad} weight file(s) missing or corrupt; {weights.FETCH_HINT}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


def cmd_models(args: argparse.Namespace) -> int:
    from affectlens.registry import COMPONENT_KINDS, default_model, list_models

    for kind in COMPONENT_KINDS:
        names = list_models(kind)  # type: ignore[arg-type]
        default = default_model(kind)  # type: ignore[arg-type]
        print(f"{kind}: " + ", ".join(f"{n}{' (default)' if n == default else ''}" for n in names))
    return EXIT_OK


def cmd_quickstart(args: argparse.Namespace) -> int:
    from demo.samples import make_sample_video

    out = Path(args.output)
    started = time.perf_counter()
    sample = make_sample_video(out / "sample_face.mp4")
    print(f"generated a sample face video: {sample}")
    result, written = _analyze_one(_analyzer(args), str(sample), out, args.fps, None)
    _print_result(result, max_lines=5)
    print(f"done in {time.perf_counter() - started:.1f}s; results are in {out.resolve()}:")
    for file in written:
        print(f"  {file}")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from demo.app import launch

    launch(host=args.host, port=args.port)
    return EXIT_OK


def _print_turn(turn: Any, show_tree: bool) -> None:
    strategies = " + ".join(s for s, _, _ in turn.strategies) or "-"
    emotion = turn.tree.emotion.value.get("state") if isinstance(turn.tree.emotion.value, dict) else None
    print(f"[emotion: {emotion or '-'} | strategies: {strategies} | {turn.trajectory}]")
    if show_tree:
        print(turn.tree.render())
        for problem in turn.refused:  # why the LM's own reply was not used
            print(f"[the LM's reply was refused, the template answers: {problem}]")
    print(f"AffectLens: {turn.reply}")


def cmd_chat(args: argparse.Namespace) -> int:
    """An empathic conversation: interactive (one line per turn; /quit ends), or one turn with --json."""
    from affectlens.conversation import Conversation

    if args.json and not (args.text or args.image or args.audio or args.video):
        print("error: --json answers one turn: give --text, --image, --audio or --video", file=sys.stderr)
        return EXIT_USAGE
    chat = Conversation(analyzer=args.analyzer, user_id=args.user)
    if args.lm_reply:
        from affectlens.conversation import build_lm_responder

        try:
            chat.responder = build_lm_responder(exemplars=args.exemplars)
        except AffectLensError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_ERROR
    if args.text or args.image or args.audio or args.video:
        try:
            turn = chat.send(args.text, image=args.image, audio=args.audio, video=args.video)
        except (AffectLensError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_ERROR
        if args.json:
            print(json.dumps(turn.to_dict(), indent=2, ensure_ascii=False))
        else:
            _print_turn(turn, args.tree)
        return EXIT_OK
    print("AffectLens chat (an AI, not a person; not a crisis service). Type a message; /quit ends.")
    for line in sys.stdin:
        text = line.strip()
        if text in ("/quit", "/exit"):
            break
        if not text:
            continue
        try:
            _print_turn(chat.send(text), args.tree)
        except (AffectLensError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
    return EXIT_OK


def _output_path(value: str, suffixes: tuple[str, ...]) -> Path:
    out = Path(value)
    if out.suffix.lower() not in suffixes:
        raise AffectLensError(f"{out}: the output must end in {' or '.join(suffixes)}")
    if out.is_dir():
        raise AffectLensError(f"{out}: is a folder; give a file name")
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


def cmd_generate(args: argparse.Namespace) -> int:
    """Emotion-directed images (offline face diffusion, or a local diffusers folder) and expression edits."""
    if args.what == "image":
        from generation.create import ImageGenerator

        out = _output_path(args.output, (".png", ".jpg", ".jpeg", ".webp"))
        emotion = _emotion_argument(args.emotion)
        clip: Any = args.clip
        if args.clip_open is not None:
            from generation.text_to_image import OpenClipEmotionScorer

            if args.clip is not None:
                raise AffectLensError("give --clip or --clip-open, not both")
            model_name, sep, checkpoint = args.clip_open.partition("=")
            if not sep or not model_name or not checkpoint:
                raise AffectLensError(f"--clip-open takes MODEL_NAME=CHECKPOINT_FILE, got {args.clip_open!r}")
            clip = OpenClipEmotionScorer.from_checkpoint(model_name, checkpoint)
        generated = ImageGenerator(args.model, clip=clip).generate(
            emotion, subject=args.subject, cause=args.cause, seed=args.seed, steps=args.steps,
            guidance=args.guidance, size=args.size,
        )  # fmt: skip
        generated.image.save(out)
        info: dict[str, Any] = {"output": str(out), **generated.to_dict()}
    else:
        from PIL import Image

        from generation.edit import build_expression_editor
        from perception.media import load_image

        out = _output_path(args.output, (".png", ".jpg", ".jpeg", ".webp"))
        image = load_image(args.image)
        try:
            result = build_expression_editor().edit(image, args.emotion, strength=args.strength)
        except AffectLensError as exc:
            raise AffectLensError(f"{args.image}: {exc}") from exc
        Image.fromarray(result.image).save(out)
        info = {"output": str(out), "input": str(args.image), **result.to_dict()}
        if result.reading is not None:
            info["notes"] = [f"our expression model reads the edited face as {result.reading.label} "
                             f"({result.reading.confidence:.0%}); target {result.plan.target}"]  # fmt: skip
    if args.json:
        print(json.dumps(info, indent=2, ensure_ascii=False))
    else:
        print(f"wrote {out}")
        for note in info.get("notes") or []:
            print(f"note: {note}")
    return EXIT_OK


def _speech_text(args: argparse.Namespace) -> str:
    """The text to speak: ``--text``, or the contents of ``--text-file`` (UTF-8), checked before any model loads."""
    from generation.talking_head import check_text

    if args.text_file is None:
        return check_text(args.text)
    source = Path(args.text_file)
    if not source.is_file():
        raise AffectLensError(f"{source}: no such file" if not source.exists() else f"{source}: not a file")
    try:
        text = source.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise AffectLensError(f"{source}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except OSError as exc:
        raise AffectLensError(f"{source}: cannot be read: {exc.strerror or exc}") from exc
    try:
        return check_text(text)
    except AffectLensError as exc:
        raise AffectLensError(f"{source}: {exc}") from exc


def cmd_talking_head(args: argparse.Namespace) -> int:
    """A portrait speaks a text with an emotion (asked for, or read from the text): an H.264 + AAC MP4."""
    from affectlens.labels import canonical_mixture
    from generation.talking_head import build_talking_head, text_emotion
    from perception.media import load_image

    started = time.perf_counter()
    text = _speech_text(args)
    emotion = canonical_mixture(_emotion_argument(args.emotion)) if args.emotion is not None else None
    if args.intensity is not None and not 0.0 <= args.intensity <= 1.0:  # also refuses nan
        raise AffectLensError(f"--intensity must be within [0, 1], got {args.intensity}")
    out = _output_path(args.output, (".mp4",))
    image = load_image(args.portrait)  # MediaError names the file
    head = build_talking_head(engine=args.engine)
    try:
        portrait = head.prepare(image)
    except AffectLensError as exc:
        raise AffectLensError(f"{args.portrait}: {exc}") from exc
    source = "given"
    intensity = args.intensity
    if emotion is None:
        emotion, guessed = text_emotion(text)  # loads the text model
        source = "read from the text"
        intensity = guessed if intensity is None else intensity
    ready = time.perf_counter()
    video = head.perform(portrait, text, emotion, 0.6 if intensity is None else intensity, seed=args.seed)
    written = video.write(out)
    timing = {
        "load_seconds": round(ready - started, 3),  # the models, the portrait's mesh and (without --emotion) the text
        "speech_seconds": round(video.speech.seconds, 3),
        "render_seconds": round(written["render_seconds"], 3),
        "render_fps": round(written["render_fps"], 1),
        "total_seconds": round(time.perf_counter() - started, 3),
    }
    if args.json:
        info = {"output": str(out), "portrait": str(args.portrait), "emotion_source": source, **video.to_dict()}
        print(json.dumps({**info, "timing": timing}, indent=2, ensure_ascii=False))
        return EXIT_OK
    performance = video.performance
    mixture = " + ".join(f"{name} {weight:.0%}" for name, weight in performance.emotion.items())
    print(f"wrote {out}: {video.num_frames / video.fps:.1f} s, {video.num_frames} frames at {video.fps:g} fps")
    print(f"emotion: {mixture} at intensity {performance.intensity:.2f} ({source})")
    print(f"speech: {video.speech.engine} ({video.speech.voice}), {video.speech.duration:.1f} s of audio")
    print(
        f"time: {timing['total_seconds']:.1f} s in all (loading {timing['load_seconds']:.1f} s, speech "
        f"{timing['speech_seconds']:.1f} s, render {timing['render_seconds']:.1f} s at {timing['render_fps']:.0f} fps)"
    )
    print("chain of thought:")
    for reason in performance.reasons:
        print(f"  - {reason}")
    return EXIT_OK


def _emotion_argument(value: str) -> str | dict[str, float]:
    """``sadness`` or a mixture ``sadness=0.6,anger=0.4``."""
    if "=" not in value:
        return value
    mixture: dict[str, float] = {}
    for part in value.split(","):
        name, _, weight = part.partition("=")
        try:
            mixture[name.strip()] = float(weight)
        except ValueError as exc:
            raise AffectLensError(f"--emotion {value!r}: {part!r} is not name=weight") from exc
    return mixture


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="affectlens", description="Multimodal affective perception, offline.")
    parser.add_argument("--version", action="version", version=f"affectlens {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("analyze", help="analyse images, videos, audio or text")
    p.add_argument("paths", nargs="*", metavar="PATH", help="images, videos or audio files")
    p.add_argument("--text", action="append", metavar="TEXT", help="typed text to analyse (repeatable)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--fps", type=float, default=5.0, help="frames analysed per second of video (default 5)")
    p.add_argument("--max-frames", type=int, default=None, help="stop a video after this many analysed frames")
    p.add_argument("--landmarks", action="store_true", help="include the 468-point mesh in --json output")
    p.add_argument(
        "--expression-only", action="store_true", help="faces and expressions only: no AUs, head pose or gaze (faster)"
    )
    p.add_argument(
        "--expression-model", default=None, metavar="NAME",
        help="a registered expression model (default affectlens-expression; affectlens-expression-large: more "
        "accurate, about four times the compute per face)",
    )  # fmt: skip
    p.add_argument("-o", "--output", help="folder for <name>.json, <name>.faces.csv and annotated media")
    p.add_argument(
        "--blur-faces", action="store_true",
        help="privacy: blur every face in the annotated media written with -o (no mesh points drawn)",
    )  # fmt: skip
    p.add_argument(
        "--tree", action="store_true",
        help="print the affective tree (attributes → … → reply); several inputs are read as one moment",
    )  # fmt: skip
    p.add_argument(
        "--together", action="store_true",
        help="read all inputs (e.g. a photo, a voice note and --text) as one moment: one result, one tree",
    )  # fmt: skip
    p.add_argument(
        "--explain", action="store_true",
        help="let the compact language model write the tree's cause, appraisal, rationale and reply (implies --tree)",
    )  # fmt: skip
    p.add_argument(
        "--fusion", choices=("late", "adapter"), default=None,
        help="what labels the tree: calibrated late fusion or the fusion adapter + compact LM "
        "(default: the better one on the held-back comparison, docs/fusion-comparison.md)",
    )  # fmt: skip
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser("annotate", help="annotate many videos/audio files into tables, resumably")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="files, folders (recursive) or .txt lists of paths")
    p.add_argument("-o", "--output", required=True, help="output folder (re-run the same command to resume)")
    p.add_argument("--fps", type=float, default=5.0, help="frames analysed per second of video (default 5)")
    p.add_argument("--modalities", default="face,voice", help="face, voice or face,voice (default)")
    p.add_argument("--format", choices=["parquet", "csv", "jsonl"], default="parquet", help="table format")
    p.add_argument(
        "--workers", type=int, default=None, help="worker processes (default: one per core; ray: one actor per CPU)"
    )
    p.add_argument(
        "--engine", choices=["local", "ray"], default="local",
        help="local: this machine; ray: a Ray cluster (OUT and the inputs on a file system all its nodes share)",
    )  # fmt: skip
    p.add_argument(
        "--ray-address", metavar="ADDR", default=None,
        help="with --engine ray: the cluster to join (default $RAY_ADDRESS, else a local Ray instance)",
    )  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--no-report", dest="report", action="store_false", help="no report.html per input, no index.html")
    p.add_argument(
        "--blur-faces", action="store_true", help="privacy: blur the faces in the report's key-frame thumbnails"
    )
    p.set_defaults(func=cmd_annotate)

    p = sub.add_parser("eval", help="evaluate a model on a labelled dataset")
    p.add_argument(
        "task", choices=["face-expression", "speech-emotion", "text-emotion", "safety", "strategy", "dialogue"]
    )
    p.add_argument(
        "--data", required=True,
        help="a folder with one sub-folder per label (face, speech), a CSV/TSV (text), or a CSV with the columns "
        "text,label and labels crisis|none, optionally history (earlier messages joined by ' || ') (safety; e.g. "
        "docs/safety-eval.csv), or an ESConv JSONL file "
        "(strategy, dialogue; e.g. ../shared/data/esconv/test.jsonl; the original release's ESConv.json works too)",
    )  # fmt: skip
    p.add_argument("--text-col", help="text-emotion: the column holding the text (default: text, sentence, ...)")
    p.add_argument("--label-col", help="text-emotion: the column holding the label name (default: label, emotion, ...)")
    p.add_argument(
        "--model", default=None,
        help="registered model name (default: the default model); strategy: a planner folder (default: the shipped "
        "one); safety: safety-patterns+meaning (default) or safety-patterns (the patterns alone)",
    )  # fmt: skip
    framing = p.add_mutually_exclusive_group()
    framing.add_argument(
        "--detect", dest="detect", action="store_const", const=True, default=None,
        help="face-expression: always classify the largest detected face (default: crops as they are, the largest "
        "face of a larger photo or frame)",
    )  # fmt: skip
    framing.add_argument(
        "--no-detect", dest="detect", action="store_const", const=False,
        help="face-expression: take every image as a face crop",
    )  # fmt: skip
    p.add_argument(
        "--limit", type=int, default=None,
        help="at most this many items per label (rows for text and safety; dialogues for strategy and dialogue)",
    )  # fmt: skip
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument(
        "--turns-per-dialogue", type=int, default=None, metavar="K",
        help="dialogue: supporter turns scored per dialogue (default 3; --limit: dialogues, default 20)",
    )  # fmt: skip
    p.add_argument(
        "--exemplars", metavar="ESCONV_JSONL",
        help="dialogue: retrieve supporter replies of the planned strategy from this ESConv file (use train, never "
        "the file scored; default: $AFFECTLENS_ESCONV, else none)",
    )  # fmt: skip
    lora = p.add_mutually_exclusive_group()
    lora.add_argument("--no-reply-lora", action="store_true", help="dialogue: the base LM replies (no reply LoRA)")
    lora.add_argument(
        "--reply-lora", metavar="DIR",
        help="dialogue: the reply LoRA in DIR (config.json + lora.safetensors, as scripts/train_reply_lora.py --out "
        "writes it) instead of the shipped one",
    )  # fmt: skip
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("weights", help="fetch, list or verify the offline weight files")
    p.add_argument("action", choices=["fetch", "list", "verify"])
    p.add_argument("names", nargs="*", help="only these manifest names (fetch)")
    p.set_defaults(func=cmd_weights)

    p = sub.add_parser("models", help="list registered components")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("quickstart", help="generate a sample face video, analyse it, write results")
    p.add_argument("-o", "--output", default="out/quickstart")
    p.add_argument("--fps", type=float, default=5.0)
    p.set_defaults(func=cmd_quickstart)

    p = sub.add_parser("chat", help="an empathic conversation (interactive, or one turn with --json)")
    p.add_argument("--text", help="one turn's words (with --json: answer this one turn and exit)")
    p.add_argument("--image", help="a photo for this turn")
    p.add_argument("--audio", help="a voice note for this turn")
    p.add_argument("--video", help="a video for this turn")
    p.add_argument("--json", action="store_true", help="print the turn (tree, strategies, affect, reply) as JSON")
    p.add_argument("--tree", action="store_true", help="print each turn's affective tree")
    p.add_argument("--user", default="user", help="user id for the affect state and memory")
    p.add_argument("--lm-reply", action="store_true", help="let the compact LM write the replies (default: templates)")
    p.add_argument(
        "--exemplars", metavar="ESCONV_JSONL",
        help="with --lm-reply: retrieve real ESConv supporter replies from this file (e.g. ESConv train.jsonl) for "
        "the LM's prompt (default: $AFFECTLENS_ESCONV, else none)",
    )  # fmt: skip
    p.set_defaults(func=cmd_chat)

    p = sub.add_parser("generate", help="emotion-directed images, expression edits and talking heads")
    gen = p.add_subparsers(dest="what", required=True)
    g = gen.add_parser("image", help="an image that carries an emotion (offline: a face; --model: any subject)")
    g.add_argument("--emotion", required=True, help="an emotion name, or a mixture like sadness=0.6,anger=0.4")
    g.add_argument("--subject", help="what to draw (needs --model: a text-to-image folder)")
    g.add_argument("--cause", help="what the feeling is about; a motif for text-to-image models")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's)")
    g.add_argument("--guidance", type=float, default=None, help="classifier-free guidance (default: the model's)")
    g.add_argument("--size", type=int, default=256, help="output size in pixels (default 256)")
    g.add_argument(
        "--model", default=None,
        help="a local diffusers folder (an EmotionDiffusionPipeline or any text-to-image pipeline, e.g. SD-Turbo); "
        "default: the shipped offline face model",
    )  # fmt: skip
    g.add_argument("--clip", default=None, help="a local CLIP folder: score the image against the emotions")
    g.add_argument(
        "--clip-open", default=None, metavar="MODEL_NAME=CHECKPOINT_FILE",
        help="score with open_clip instead: an architecture and a local checkpoint, e.g. "
        "ViT-B-32=~/models/open_clip_b32.safetensors (needs `pip install open_clip_torch`)",
    )  # fmt: skip
    g.add_argument("-o", "--output", required=True, help="the image file to write (.png, .jpg, .webp)")
    g.add_argument("--json", action="store_true", help="print what was made as JSON")
    g.set_defaults(func=cmd_generate)
    g = gen.add_parser("edit", help="re-render a portrait with another expression (mesh warp along an AU plan)")
    g.add_argument("--image", required=True, help="a portrait with one face")
    g.add_argument("--emotion", required=True, help="the target emotion")
    g.add_argument("--strength", type=float, default=None, help="how far to move (default: the fitted one)")
    g.add_argument("-o", "--output", required=True, help="the image file to write (.png, .jpg, .webp)")
    g.add_argument("--json", action="store_true", help="print the AU plan and the check as JSON")
    g.set_defaults(func=cmd_generate)
    g = gen.add_parser(
        "talking-head", help="a portrait speaks a text with an emotion: an H.264 + AAC MP4 (CPU, a few seconds)"
    )
    g.add_argument("--portrait", required=True, help="a portrait with one face, roughly frontal")
    said = g.add_mutually_exclusive_group(required=True)
    said.add_argument("--text", help="what the portrait says (at most 1000 characters)")
    said.add_argument("--text-file", metavar="PATH", help="a UTF-8 text file with what the portrait says")
    g.add_argument(
        "--emotion", default=None,
        help="an emotion name, or a mixture like sadness=0.6,anger=0.4 (default: read from the text by our text model)",
    )  # fmt: skip
    g.add_argument(
        "--intensity", type=float, default=None,
        help="0-1 (default: 0.6 with --emotion, else the text model's confidence)",
    )  # fmt: skip
    g.add_argument(
        "--engine", choices=("auto", "piper", "espeak-ng"), default="auto",
        help="text-to-speech: auto (piper with the shipped voice, else espeak-ng), piper or espeak-ng",
    )  # fmt: skip
    g.add_argument("--seed", type=int, default=0, help="seed of the blinks, head motion and glances")
    g.add_argument("-o", "--output", required=True, help="the video file to write (.mp4)")
    g.add_argument("--json", action="store_true", help="print the performance, speech and timing as JSON")
    g.set_defaults(func=cmd_talking_head)

    p = sub.add_parser("demo", help="start the Gradio demo")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default: localhost only)")
    p.add_argument("--port", type=int, default=7860)
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None, analyzer: Analyzer | None = None) -> int:
    """Run the command line; ``analyzer`` replaces the default one (for tests and embedding)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.analyzer = analyzer
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.func(args))
    except AffectLensError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
