"""The ``gwa`` command line: ``gwa demo | train | bench | report | flag | compare``.

Each command lives in its own module here (``gwa/cli/<command>.py``), which defines ``add_arguments(parser)``
and ``run(args) -> int`` and calls the library's plain functions (:func:`gwa.runner.train.run_training`,
:func:`gwa.report.write_report`, ...); argument parsing lives nowhere else. This file only dispatches, so
``gwa --help`` stays fast and a missing extra breaks only its own command.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import warnings

COMMANDS = {
    "demo": ("gwa.cli.demo", "train a small model on embedded data with label noise and show GWA at work"),
    "train": ("gwa.cli.train", "train a model on a dataset and write a run directory"),
    "bench": ("gwa.cli.bench", "benchmark stop criteria and mislabel scores over a grid of runs"),
    "report": ("gwa.cli.report", "write figures and an HTML report for a run directory"),
    "flag": ("gwa.cli.flag", "export training samples ranked as likely mislabeled, as CSV"),
    "compare": ("gwa.cli.compare", "rank runs by alignment and GWA next to their test accuracy"),
}


#: The distribution name on the package index (``gwa`` there is an unrelated project); the import and the command
#: stay ``gwa``.
DISTRIBUTION = "gwa-alignment"
#: Which extra installs a third-party module a command imports (the `cli` extra holds what `gwa demo` needs).
EXTRA_OF = {
    "cleanlab": "bench",
    "jax": "jax",
    "flax": "jax",
    "optax": "jax",
    "timm": "timm",
    "lightning": "lightning",
    "transformers": "huggingface",
    "accelerate": "huggingface",
}


def missing_extra(command: str, module: str) -> str:
    """The one-line answer to a missing optional package: which extra to install."""
    top = module.split(".")[0]
    extra = EXTRA_OF.get(top, "cli")
    return (
        f"gwa {command}: error: this command needs the '{top}' package, which is not installed; install the "
        f"'{extra}' extra: pip install '{DISTRIBUTION}[{extra}]'"
    )


class CommandError(Exception):
    """An expected failure of a command: printed as one line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    from gwa import __version__

    parser = argparse.ArgumentParser(
        prog="gwa",
        description="Gradient-Weight Alignment: validation-free "
        "monitoring, stopping and mislabel detection for classifiers.",
    )
    parser.add_argument("--version", action="version", version=f"gwa {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        cmd.set_defaults(_module=module_name)
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if not exc.name or not exc.name.startswith("gwa"):
                cmd.set_defaults(_missing=exc)
                continue
            raise
        module.add_arguments(cmd)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    if args.command is None:
        parser.print_help()
        return 2
    missing = getattr(args, "_missing", None)
    if missing is not None:
        print(missing_extra(args.command, missing.name), file=sys.stderr)
        return 2
    module = importlib.import_module(args._module)
    warnings.showwarning = _show_warning
    code = _run(module, args)
    _leave_torchrun_worker(code)
    return code


def _run(module, args: argparse.Namespace) -> int:
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        print(
            f"\ngwa {args.command}: interrupted; every finished epoch is kept in the run directory "
            f"(continue with --resume).",
            file=sys.stderr,
        )
        return 130
    except (CommandError, ValueError, OSError, ModuleNotFoundError) as exc:
        # Errors a user can cause (bad input, a corrupt or foreign file, a full disk, a locked run, a missing
        # extra) end in one line; anything else is a bug and keeps its traceback.
        if args.verbose:
            raise
        if isinstance(exc, ModuleNotFoundError) and exc.name and not exc.name.startswith("gwa"):
            print(missing_extra(args.command, exc.name), file=sys.stderr)
            return 2
        print(f"gwa {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2


def _leave_torchrun_worker(code: int) -> None:
    """End a ``torchrun`` worker (``WORLD_SIZE`` > 1) without the interpreter's teardown, as multiprocessing ends
    its children. With all its work written and the process group destroyed, a gloo rank could still abort in
    the C++ teardown at exit ("terminate called without an active exception", seen under load), which torchrun
    then reports as a failed run."""
    if "TORCHELASTIC_RUN_ID" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return
    _exit_process(code)


def _exit_process(code: int) -> None:
    """Flush what Python buffers (streams, log handlers), then end the process at once with ``code``."""
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        return f"{exc.strerror}: {exc.filename}"  # e.g. 'No space left on device: runs/x/scores/loss_0003.npy.tmp'
    return " ".join(str(exc).split()) or type(exc).__name__


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """gwa's own warnings (an unreadable line in a run directory, ...) as one line on stderr."""
    if category.__module__.startswith("gwa"):
        print(f"gwa: warning: {message}", file=file or sys.stderr)
    else:
        _default_show_warning(message, category, filename, lineno, file, line)


_default_show_warning = warnings.showwarning


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
