"""Command line: ``python -m vpt_explore {demo,tasks,backbones,bench,pretrain-tiny,pretrain-dino,reference,reproduce,precompute,resolution,site}``."""
from __future__ import annotations

import sys

USAGE = """usage: python -m vpt_explore COMMAND [options]

commands:
  demo            train the paper's methods on the offline suite, print a table, save a figure
  tasks           list the offline task suite (group, classes, sizes, source, offline)
  backbones       list the known backbones (resolution, patch, d, depth, offline)
  bench           benchmarks: `bench infer` / `bench train` (ratios measured side by side)
  pretrain-tiny   rebuild the shipped tiny backbone from Fashion-MNIST
  pretrain-dino   rebuild the default tiny-dino backbone (distilled from the offline DINOv2)
  reference       regenerate the offline reference results (resumable)
  reproduce       run the reference protocol for one task and method, compare with the reference
  resolution      accuracy and training seconds of DINOv2-S at several input sizes (why 56 px)
  precompute      retrain the small models notebooks 07 and 08 show with PRECOMPUTED = True
  site            execute the course notebooks and build a static HTML site (`make site`)

`python -m vpt_explore COMMAND --help` shows each command's options."""


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


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    cmd, rest = argv[0], argv[1:]
    from .errors import VPTError, bad_choice
    commands = {"demo": None, "tasks": _tasks, "backbones": _backbones, "bench": None, "pretrain-tiny": None,
                "pretrain-dino": None, "reference": None, "reproduce": None, "site": None, "precompute": None, "resolution": None}
    if cmd not in commands:
        print(f"error: {bad_choice('command', cmd, list(commands))}\n\n{USAGE}", file=sys.stderr)
        return 2
    try:
        if cmd == "demo":
            from .apps.demo import main as run
        elif cmd == "bench":
            from .apps.bench import main as run
        elif cmd == "pretrain-tiny":
            from .backbones.pretrain_tiny import main as run
        elif cmd == "pretrain-dino":
            from .backbones.pretrain_dino import main as run
        elif cmd == "reference":
            from .apps.reproduce import main_reference as run
        elif cmd == "reproduce":
            from .apps.reproduce import main_reproduce as run
        elif cmd == "resolution":
            from .apps.resolution import main as run
        elif cmd == "precompute":
            from .apps.precomputed import main as run
        elif cmd == "site":
            from .apps.site import main as run
        else:
            run = commands[cmd]
        return run(rest) or 0
    except VPTError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
