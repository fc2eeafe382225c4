"""Show the library's real source in a notebook, instead of pasting copies that drift.

    from vpt_explore.apps.show import show_source
    show_source(vx.vit_math.embed)                         # a function
    show_source("vpt_explore.model.prompted.PromptedViT.insert")  # a dotted name
    show_source(vx.PromptedViT, lines=(1, 30))             # a slice of a long class

The result displays as syntax-highlighted HTML (Pygments, inline styles, so it needs no CSS and
works in JupyterLab, classic Notebook, Colab and Voila), as a Markdown code block where HTML is
not rendered, and as plain numbered text in a terminal.
"""
from __future__ import annotations

import html
import importlib
import inspect
from pathlib import Path
from typing import Any, Optional, Tuple

from ..errors import ConfigError

__all__ = ["SourceView", "show_source", "resolve"]


def resolve(name: str) -> Any:
    """The object behind a dotted name such as ``"vpt_explore.model.prompted.PromptedViT.pool"``."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            if not hasattr(obj, attr):
                raise ConfigError(f"{name!r}: {'.'.join(parts[:cut])} has no attribute {attr!r}")
            obj = getattr(obj, attr)
        return obj
    raise ConfigError(f"{name!r} does not start with an importable module")


class SourceView:
    """Source text of one object, with its file and first line number, rich-displayable.

    Attributes:
        title: qualified name of the object.
        path: source file, shown relative to the package folder when inside it.
        start: line number of ``text``'s first line in ``path``.
        text: the source lines.
    """

    def __init__(self, title: str, path: str, start: int, text: str):
        self.title, self.path, self.start, self.text = title, path, start, text

    def header(self) -> str:
        end = self.start + self.text.count("\n") - (1 if self.text.endswith("\n") else 0)
        return f"{self.title}  ({self.path}, lines {self.start}-{end})"

    def __repr__(self) -> str:
        lines = self.text.rstrip("\n").split("\n")
        width = len(str(self.start + len(lines)))
        body = "\n".join(f"{self.start + i:>{width}} | {ln}" for i, ln in enumerate(lines))
        return f"# {self.header()}\n{body}"

    def _repr_markdown_(self) -> str:
        return f"**{self.header()}**\n\n```python\n{self.text.rstrip()}\n```\n"

    def _repr_html_(self) -> str:
        title = f"<div style='font-family:sans-serif;font-size:90%;margin:2px 0'><b>" \
                f"{html.escape(self.header())}</b></div>"
        try:
            from pygments import highlight
            from pygments.formatters import HtmlFormatter
            from pygments.lexers import PythonLexer
        except ImportError:  # plain, escaped text still reads fine
            return f"{title}<pre>{html.escape(self.text)}</pre>"
        fmt = HtmlFormatter(noclasses=True, linenos="inline", linenostart=self.start,
                            style="default", cssstyles="padding:4px;line-height:125%")
        return title + highlight(self.text, PythonLexer(), fmt)


def _location(obj: Any) -> Tuple[str, str]:
    """(qualified name, file path shown) of a function, class, method or module."""
    target = inspect.unwrap(getattr(obj, "fget", None) or obj)
    title = getattr(target, "__qualname__", None) or getattr(target, "__name__", repr(target))
    module = getattr(target, "__module__", None) or getattr(target, "__name__", "")
    if inspect.ismodule(target):
        title, module = target.__name__, ""
    try:
        path = Path(inspect.getsourcefile(target) or "?")
    except TypeError:
        path = Path("?")
    root = Path(__file__).resolve().parents[2]  # the repository (or site-packages)
    try:
        shown = str(path.resolve().relative_to(root))
    except ValueError:
        shown = path.name
    return (f"{module}.{title}" if module else title), shown


def show_source(obj: Any, lines: Optional[Tuple[int, int]] = None) -> SourceView:
    """The real source of a library function, class, method, property or module, for display.

    Args:
        obj: the object, or its dotted name (``"vpt_explore.vit_math.embed"``).
        lines: optional (first, last) line numbers *within the object's source*, 1-based and
            inclusive, to show part of a long class.

    Returns:
        A :class:`SourceView`; as the last value of a notebook cell it renders highlighted.

    Raises:
        ConfigError: the name cannot be resolved, or the object has no Python source
            (a builtin or a C extension).
    """
    if isinstance(obj, str):
        obj = resolve(obj)
    target = getattr(obj, "fget", None) or obj  # a property shows its getter
    try:
        src, start = inspect.getsourcelines(inspect.unwrap(target))
    except (TypeError, OSError) as e:
        raise ConfigError(f"no Python source for {obj!r} ({e}); pass a function, class, method or "
                          f"module written in Python") from None
    start = max(start, 1)
    if lines is not None:
        a, b = lines
        if not (1 <= a <= b):
            raise ConfigError(f"lines={lines!r} must be (first, last) with 1 <= first <= last")
        src, start = src[a - 1:b], start + a - 1
    title, path = _location(obj)
    return SourceView(title, path, start, "".join(src))
