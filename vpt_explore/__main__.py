"""Command line: ``python -m vpt_explore COMMAND [options]``, one row of ``COMMANDS`` per command."""
from __future__ import annotations

import importlib
import sys
from typing import Callable, Tuple, Union


def _backbones(argv) -> int:
    from .backbones.load import list_backbones
    print(f"{'name':<36}{'res':>5}{'patch':>6}{'d':>5}{'depth':>6}  offline  note")
    for b in list_backbones():
        print(f"{b.name:<36}{b.resolution:>5}{b.patch:>6}{b.dim:>5}{b.depth:>6}  {'yes' if b.offline else 'no':<7}  {b.note}")
    return 0


def _tasks(argv) -> int:
    from .data.registry import format_tasks_table
    print(format_tasks_table())
    return 0


# (name, help, function or "module:function" imported only when the command runs)
COMMANDS: Tuple[Tuple[str, str, Union[str, Callable]], ...] = (
    ("demo", "train the paper's methods on the offline suite, print a table, save a figure",
     "apps.demo:main"),
    ("tasks", "list the offline task suite (group, classes, sizes, source, offline)", _tasks),
    ("backbones", "list the known backbones (resolution, patch, d, depth, offline)", _backbones),
    ("bench", "benchmarks: `bench infer` / `bench train` (ratios measured side by side)", "apps.bench:main"),
    ("pretrain-tiny", "rebuild the shipped tiny backbone from Fashion-MNIST", "backbones.pretrain_tiny:main"),
    ("pretrain-dino", "rebuild the default tiny-dino backbone (distilled from the offline DINOv2)",
     "backbones.pretrain_dino:main"),
    ("reference", "regenerate the offline reference results (resumable)", "apps.reproduce:main_reference"),
    ("reproduce", "run the reference protocol for one task and method, compare with the reference",
     "apps.reproduce:main_reproduce"),
    ("ablations", "train notebook 09's ablation plan once at the cpu profile's sizes (resumable)",
     "apps.ablations:main"),
    ("resolution", "accuracy and training seconds of DINOv2-S at several input sizes (why 56 px)",
     "apps.resolution:main"),
    ("precompute", "retrain the small models notebooks 07 and 08 show with PRECOMPUTED = True",
     "apps.precomputed:main"),
    ("site", "execute the course notebooks and build a static HTML site (`make site`)", "apps.site:main"),
)

USAGE = "usage: python -m vpt_explore COMMAND [options]\n\ncommands:\n" + "\n".join(
    f"  {name:<15} {text}" for name, text, _ in COMMANDS) + \
    "\n\n`python -m vpt_explore COMMAND --help` shows each command's options."


def _function(target: Union[str, Callable]) -> Callable:
    """The command's function: itself, or ``"module:function"`` imported relative to this package."""
    if callable(target):
        return target
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(f".{module}", __package__), name)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    cmd, rest = argv[0], argv[1:]
    from .errors import VPTError, bad_choice
    table = {name: target for name, _, target in COMMANDS}
    if cmd not in table:
        print(f"error: {bad_choice('command', cmd, list(table))}\n\n{USAGE}", file=sys.stderr)
        return 2
    try:
        return _function(table[cmd])(rest) or 0
    except VPTError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
