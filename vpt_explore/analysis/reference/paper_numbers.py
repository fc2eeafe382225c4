"""Reference numbers of the VPT paper (Jia et al., ECCV 2022), as data, with a small API.

The numbers live in ``assets/paper_vpt.json`` (ViT-B/16, supervised ImageNet-21k): Table 1 per task
and group means for Full, Linear, VPT-shallow and VPT-deep (plus restated rows for Partial-1,
Mlp-3 and Bias), the "total params" multipliers, and a few headline numbers (storage, ablations,
the MAE weakness). Every number cites where it sits in the paper and says whether it was
confirmed by a second public source.

    from vpt_explore.analysis.reference import paper, paper_group_means, paper_headlines
    rows = paper("vpt-deep", "structured")       # list of PaperNumber, one per task
    pd.DataFrame(paper())                          # every per-task number as a table
    paper_group_means()["vpt-deep"]["natural"]     # 78.48

This module uses only the standard library.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from ...errors import DataError, MissingFileError, bad_choice

PAPER_JSON = Path(__file__).resolve().parents[2] / "assets" / "paper_vpt.json"
"""Where the numbers are read from (tests point this elsewhere)."""

SCHEMA = 1
GROUP_MEAN_TOL = 0.05

_cache: Dict[Tuple[str, int, int], Dict[str, Any]] = {}


@dataclass(frozen=True)
class PaperNumber:
    """One per-task number of the paper.

    Attributes:
        method: Method key, e.g. ``"vpt-deep"``.
        task: Task key, e.g. ``"dsprites_loc"`` (VTAB folder name) or ``"cub"`` (FGVC).
        group: ``"fgvc"``, ``"natural"``, ``"specialized"`` or ``"structured"``.
        value: Top-1 accuracy in percent.
        source: Where the number sits in the paper, e.g. ``"Tables 13-14 (...)"``.
        confirmed: True when the same number was found in a second public source.
        confirmed_by: Keys of the second sources (see :func:`paper_sources`).
        notes: Caveats (known discrepancies, restatement-only values), or ``""``.
    """

    method: str
    task: str
    group: str
    value: float
    source: str
    confirmed: bool
    confirmed_by: Tuple[str, ...] = ()
    notes: str = ""


@dataclass(frozen=True)
class Headline:
    """One headline number (storage, ablation, other backbones).

    Attributes:
        id: Short key, e.g. ``"location_prepend_pixel_drop_natural"``.
        text: What the number is.
        value: The number.
        unit: Its unit, e.g. ``"points"``, ``"params"``, ``"%"``.
        source: Where it sits in the paper, e.g. ``"Fig. 5"``.
        confirmed: True when the same number was found in a second public source.
        confirmed_by: Keys of the second sources.
        baseline_value: The number it is compared with (e.g. Linear's accuracy), or None.
        notes: Caveats, or ``""``.
    """

    id: str
    text: str
    value: float
    unit: str
    source: str
    confirmed: bool
    confirmed_by: Tuple[str, ...] = ()
    baseline_value: Optional[float] = None
    notes: str = ""


@dataclass(frozen=True)
class GroupMeanCheck:
    """A stated group mean next to the mean recomputed from the per-task numbers.

    Attributes:
        method: Method key.
        group: Group key.
        stated: The group mean the paper states.
        recomputed: Mean of the per-task values of the group.
        diff: ``abs(recomputed - stated)``.
        tol: Tolerance used (``tol`` plus 0.05 when the stated mean has only 1 decimal).
        ok: ``diff <= tol``.
    """

    method: str
    group: str
    stated: float
    recomputed: float
    diff: float
    tol: float
    ok: bool


def _data_path() -> Path:
    return Path(PAPER_JSON)


def _fail(path: Path, what: str) -> DataError:
    return DataError(f"paper reference file {str(path)!r} is malformed: {what}")


def _check_number(path: Path, where: str, entry: Any, sources: Dict[str, str]) -> None:
    if not isinstance(entry, dict):
        raise _fail(path, f"{where} should be an object with value/source/confirmed, got {type(entry).__name__}")
    value = entry.get("value")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _fail(path, f"{where}.value should be a finite number, got {value!r}")
    if not isinstance(entry.get("source"), str) or not entry["source"].strip():
        raise _fail(path, f"{where}.source should be a non-empty string, got {entry.get('source')!r}")
    if not isinstance(entry.get("confirmed"), bool):
        raise _fail(path, f"{where}.confirmed should be true or false, got {entry.get('confirmed')!r}")
    by = entry.get("confirmed_by", [])
    if not isinstance(by, list) or any(b not in sources for b in by):
        raise _fail(path, f"{where}.confirmed_by should list keys of 'sources' ({', '.join(sources)}), got {by!r}")
    if entry["confirmed"] != bool(by):
        raise _fail(path, f"{where}: confirmed={entry['confirmed']} but confirmed_by={by!r}")


def _validate(path: Path, data: Any) -> Dict[str, Any]:
    if not isinstance(data, dict):
        raise _fail(path, f"top level should be an object, got {type(data).__name__}")
    if data.get("schema") != SCHEMA:
        raise _fail(path, f"schema should be {SCHEMA}, got {data.get('schema')!r}")
    for key in ("groups", "methods", "headlines", "sources"):
        if key not in data:
            raise _fail(path, f"missing top-level key {key!r}")
    sources = data["sources"]
    groups = data["groups"]
    if not isinstance(sources, dict) or not isinstance(groups, dict) or not groups:
        raise _fail(path, "'sources' and 'groups' should be non-empty objects")
    task_group = {}
    for g, tasks in groups.items():
        if not isinstance(tasks, list) or not tasks:
            raise _fail(path, f"groups.{g} should be a non-empty list of task keys")
        for t in tasks:
            task_group[t] = g
    if not isinstance(data["methods"], dict) or not data["methods"]:
        raise _fail(path, "'methods' should be a non-empty object")
    for m, md in data["methods"].items():
        if not isinstance(md, dict) or not isinstance(md.get("per_task", {}), dict):
            raise _fail(path, f"methods.{m} should be an object with per_task / group_means")
        for t, entry in md.get("per_task", {}).items():
            if t not in task_group:
                raise _fail(path, f"methods.{m}.per_task has unknown task {t!r}")
            _check_number(path, f"methods.{m}.per_task.{t}", entry, sources)
        for g, entry in md.get("group_means", {}).items():
            if g not in groups:
                raise _fail(path, f"methods.{m}.group_means has unknown group {g!r}")
            _check_number(path, f"methods.{m}.group_means.{g}", entry, sources)
        if "total_params" in md:
            _check_number(path, f"methods.{m}.total_params", md["total_params"], sources)
    if not isinstance(data["headlines"], list):
        raise _fail(path, "'headlines' should be a list")
    for i, entry in enumerate(data["headlines"]):
        where = f"headlines[{i}]"
        _check_number(path, where, entry, sources)
        if not isinstance(entry.get("id"), str) or not isinstance(entry.get("text"), str):
            raise _fail(path, f"{where} needs string 'id' and 'text'")
    return data


def load_paper_data(path: Optional[str | Path] = None) -> Dict[str, Any]:
    """Read and validate the reference file (cached until the file changes).

    Args:
        path: File to read; defaults to :data:`PAPER_JSON`.

    Returns:
        The parsed JSON document (treat it as read-only).

    Raises:
        MissingFileError: The file does not exist.
        DataError: The file is not valid JSON or does not follow the schema.
    """
    path = Path(path) if path is not None else _data_path()
    try:
        st = path.stat()
    except FileNotFoundError:
        raise MissingFileError(f"paper reference file {str(path)!r} does not exist; it ships in "
                               f"vpt_explore/assets/paper_vpt.json (reinstall the package?)") from None
    key = (str(path), st.st_mtime_ns, st.st_size)
    if key not in _cache:
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DataError(f"paper reference file {str(path)!r} is not valid JSON: {e}") from None
        _cache.clear()
        _cache[key] = _validate(path, raw)
    return _cache[key]


def _norm(value: Any) -> Any:
    return value.strip().lower().replace("_", "-") if isinstance(value, str) else value


def paper_methods() -> List[str]:
    """Return the method keys in the file, in table order (e.g. ``["full", "linear", ...]``)."""
    return list(load_paper_data()["methods"])


def paper_groups() -> Dict[str, List[str]]:
    """Return ``{group: [task keys]}`` for ``fgvc``, ``natural``, ``specialized``, ``structured``."""
    return {g: list(ts) for g, ts in load_paper_data()["groups"].items()}


def paper_sources() -> Dict[str, str]:
    """Return ``{key: description}`` of the second public sources used to confirm numbers."""
    return dict(load_paper_data()["sources"])


def task_name(task: str) -> str:
    """Return the display name of a task key (``"dsprites_loc"`` -> ``"dSprites-loc"``)."""
    names = load_paper_data().get("task_names", {})
    if task not in names:
        raise bad_choice("task", task, list(names))
    return names[task]


def _check_method(method: Optional[str]) -> Optional[str]:
    if method is None:
        return None
    allowed = paper_methods()
    m = _norm(method)
    if m not in allowed:
        raise bad_choice("method", method, allowed)
    return m


def _check_group(group: Optional[str]) -> Optional[str]:
    if group is None:
        return None
    allowed = list(load_paper_data()["groups"])
    g = _norm(group)
    if g not in allowed:
        raise bad_choice("group", group, allowed)
    return g


def paper(method: Optional[str] = None, group: Optional[str] = None,
          confirmed_only: bool = False) -> List[PaperNumber]:
    """Return the paper's per-task numbers as rows (easy to tabulate or plot).

    Args:
        method: Keep one method (e.g. ``"vpt-deep"``, case-insensitive); None keeps all.
        group: Keep one group (``"fgvc"``, ``"natural"``, ``"specialized"``, ``"structured"``).
        confirmed_only: Keep only numbers confirmed by a second public source.

    Returns:
        PaperNumber rows in table order (methods, then groups, then tasks).
        ``pandas.DataFrame(paper())`` gives a tidy table.

    Raises:
        ConfigError: Unknown method or group (the message lists the allowed values).
    """
    m_sel, g_sel = _check_method(method), _check_group(group)
    data = load_paper_data()
    rows = []
    for m, md in data["methods"].items():
        if m_sel is not None and m != m_sel:
            continue
        for g, tasks in data["groups"].items():
            if g_sel is not None and g != g_sel:
                continue
            for t in tasks:
                entry = md.get("per_task", {}).get(t)
                if entry is None or (confirmed_only and not entry["confirmed"]):
                    continue
                rows.append(PaperNumber(m, t, g, float(entry["value"]), entry["source"], entry["confirmed"],
                                        tuple(entry.get("confirmed_by", ())), entry.get("notes", "")))
    return rows


def paper_value(method: str, task: str) -> float:
    """Return one per-task number, e.g. ``paper_value("vpt-deep", "dsprites_loc") == 73.6``.

    Raises:
        ConfigError: Unknown method, or a task the paper gives no number for with that method.
    """
    m = _check_method(method)
    per_task = load_paper_data()["methods"][m].get("per_task", {})
    if task not in per_task:
        raise bad_choice(f"task (for method {m!r})", task, list(per_task))
    return float(per_task[task]["value"])


def paper_group_means(confirmed_only: bool = False) -> Dict[str, Dict[str, float]]:
    """Return the group means the paper states: ``{method: {group: mean}}``.

    Args:
        confirmed_only: Keep only means confirmed by a second public source.

    Returns:
        e.g. ``{"vpt-deep": {"fgvc": 89.11, "natural": 78.48, ...}, ...}``.
    """
    out: Dict[str, Dict[str, float]] = {}
    for m, md in load_paper_data()["methods"].items():
        means = {g: float(e["value"]) for g, e in md.get("group_means", {}).items()
                 if e["confirmed"] or not confirmed_only}
        if means:
            out[m] = means
    return out


def paper_total_params() -> Dict[str, float]:
    """Return the "total params" multiplier of Table 1 (x backbone, 24 tasks): ``{method: x}``."""
    return {m: float(md["total_params"]["value"]) for m, md in load_paper_data()["methods"].items()
            if "total_params" in md}


def paper_headlines() -> List[Headline]:
    """Return the headline numbers (storage, prompt location and pooling ablations, MAE, ...)."""
    out = []
    for e in load_paper_data()["headlines"]:
        base = e.get("baseline_value")
        out.append(Headline(e["id"], e["text"], float(e["value"]), e.get("unit", ""), e["source"], e["confirmed"],
                            tuple(e.get("confirmed_by", ())), None if base is None else float(base),
                            e.get("notes", "")))
    return out


def paper_headline(id: str) -> Headline:
    """Return one headline by id, e.g. ``paper_headline("storage_deep_params").value == 460800``.

    Raises:
        ConfigError: Unknown id (the message lists the ids).
    """
    heads = {h.id: h for h in paper_headlines()}
    if id not in heads:
        raise bad_choice("headline", id, list(heads))
    return heads[id]


def check_group_means(tol: float = GROUP_MEAN_TOL, strict: bool = False) -> List[GroupMeanCheck]:
    """Recompute each group mean from the per-task numbers and compare it with the stated one.

    Only (method, group) pairs with every task of the group present are checked. A stated mean
    given to 1 decimal (a restatement) gets 0.05 extra tolerance for its own rounding.

    Args:
        tol: Allowed difference for means stated to 2 decimals (the paper's precision).
        strict: Raise instead of returning when any check fails.

    Returns:
        One GroupMeanCheck per checked (method, group).

    Raises:
        DataError: ``strict`` and some recomputed mean is off by more than its tolerance.
    """
    data = load_paper_data()
    checks = []
    for m, md in data["methods"].items():
        per_task = md.get("per_task", {})
        for g, tasks in data["groups"].items():
            stated = md.get("group_means", {}).get(g)
            if stated is None or not all(t in per_task for t in tasks):
                continue
            recomputed = sum(per_task[t]["value"] for t in tasks) / len(tasks)
            t_ok = tol + (0.05 if stated.get("decimals", 2) < 2 else 0.0)
            diff = abs(recomputed - stated["value"])
            checks.append(GroupMeanCheck(m, g, float(stated["value"]), recomputed, diff, t_ok,
                                         diff <= t_ok + 1e-9))
    bad = [c for c in checks if not c.ok]
    if strict and bad:
        listed = "; ".join(f"{c.method}/{c.group}: stated {c.stated}, recomputed {c.recomputed:.3f}" for c in bad)
        raise DataError(f"paper reference file {str(_data_path())!r}: group means do not match the "
                        f"per-task numbers within tolerance: {listed}")
    return checks


__all__ = ["PAPER_JSON", "PaperNumber", "Headline", "GroupMeanCheck", "load_paper_data", "paper", "paper_value",
           "paper_group_means", "paper_total_params", "paper_headlines", "paper_headline", "paper_methods",
           "paper_groups", "paper_sources", "task_name", "check_group_means"]
