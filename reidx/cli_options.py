"""Command flags generated from dataclass fields: ``reidx train``'s from :class:`~reidx.train.config.TrainConfig`,
``embed``/``search``/``serve``'s from their request objects (:func:`with_request_options`, fields declared
with :func:`reidx.flags.flag_field`).

Each field gives one flag (``--batch-ids``), its help and default (the field's metadata and default) and,
where the field has a registry, its choices. Bools are ``--x/--no-x``; ``pretrained`` (bool or a path) is
``--pretrained PATH`` / ``--no-pretrained``; ``input_size`` is ``--input-size HxW``; a tuple of paths
(``dataset``) is a repeatable flag. A flag not given is None,
so a ``--config`` file's value stands. Choices are read from their registry only when listed or checked
(``reidx train --help`` or a run), so ``reidx --help`` imports no torch.
"""

from __future__ import annotations

import inspect
import shutil
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import MISSING, Field, fields, is_dataclass
from enum import Enum, EnumMeta
from pathlib import Path
from typing import Annotated, Any, TypeVar, get_args, get_origin, get_type_hints

import typer
from typer.core import TyperCommand

from reidx.train.config import TrainConfig, flag, format_size, parse_size, pretrained_option

#: The metavars that mark an option as a path reidx writes: a file, or a folder (the output tests walk them).
OUT_FILE, OUT_DIR = "OUT_FILE", "OUT_DIR"


class LazyChoices(EnumMeta):
    """An Enum type whose members are a registry's names, read when Typer first iterates it."""

    def __iter__(cls):
        return iter(cls._names())


def lazy_choice(name: str, names: Callable[[], Sequence[str]]) -> type[Enum]:
    """A Typer choice type for ``names()`` (a registry's names), called only when the choices are needed."""
    choice = LazyChoices(name, (Enum,), LazyChoices.__prepare__(name, (Enum,)))
    type.__setattr__(choice, "_names", staticmethod(names))
    return choice


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        return format_size(value) if isinstance(value[0], int) else " ".join(map(str, value))
    return str(value)


def _option(name: str, kind: Any, *decls: str, default: Any = None, **info: Any) -> inspect.Parameter:
    option = typer.Option(*decls, **info)
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=Annotated[kind, option])


def _flags(spec: Field, kind: Any) -> list[inspect.Parameter]:
    """The parameters (usually one) of the flag for one TrainConfig field."""
    meta, dashed = spec.metadata, flag(spec.name)
    default = "" if spec.default in ("", (), MISSING) else f" (default {_shown(spec.default)})"
    text = meta["help"] + default
    if meta["choices"] is not None:
        return [_option(spec.name, lazy_choice(spec.name, meta["choices"]) | None, help=text)]
    if kind is bool:
        return [_option(spec.name, bool | None, f"--{dashed}/--no-{dashed}", help=text)]
    if kind == bool | str:  # on, off, or a file
        return [
            _option(spec.name, str | None, metavar=meta["metavar"], help=text),
            _option(f"no_{spec.name}", bool, f"--no-{dashed}", default=False, help=meta["off"]),
        ]
    if kind == tuple[int, int]:  # HxW text
        return [_option(spec.name, str | None, metavar=meta["metavar"], help=text)]
    if kind == tuple[str, ...]:  # repeatable: --dataset A --dataset B
        return [_option(spec.name, list[Path] | None, metavar=meta["metavar"], help=text)]
    return [_option(spec.name, (Path if meta["metavar"] == "PATH" else kind) | None, help=text)]


#: Terminal width from which rich's option table shows ``reidx train``'s longest flag names whole.
RICH_HELP_COLUMNS = 110


class TrainCommand(TyperCommand):
    """``reidx train``: rich's option table cuts its long flag names (``--residual-reco…``) on terminals narrower
    than :data:`RICH_HELP_COLUMNS`, so there the help is click's plain layout, which wraps the help text
    beside or under each whole flag name instead."""

    def format_help(self, ctx: typer.Context, formatter: Any) -> None:
        if shutil.get_terminal_size().columns < RICH_HELP_COLUMNS:
            return super(TyperCommand, self).format_help(ctx, formatter)  # click's own layout
        return super().format_help(ctx, formatter)

    def format_help_text(self, ctx: typer.Context, formatter: Any) -> None:
        """The docstring for click's layout: paragraphs wrapped, each ``* example`` line its own item."""
        for paragraph in inspect.cleandoc(self.help or "").replace("`", "").split("\n\n"):
            formatter.write_paragraph()
            with formatter.indentation():
                lines = paragraph.splitlines()
                if not all(line.startswith("* ") for line in lines):
                    formatter.write_text(paragraph)
                    continue
                margin = " " * formatter.current_indent
                for line in lines:  # a command line is never broken inside a flag
                    width = formatter.width - formatter.current_indent
                    for part in textwrap.wrap(line, width, subsequent_indent="  ", break_on_hyphens=False):
                        formatter.write(f"{margin}{part}\n")


def _spliced(command: Callable[..., Any], generated: Sequence[inspect.Parameter]) -> Callable[..., Any]:
    """``command`` (which takes ``**options``) with the ``generated`` keyword parameters inserted before its
    last parameter (``--json``)."""
    own = [
        param.replace(kind=inspect.Parameter.KEYWORD_ONLY)
        for param in inspect.signature(command, eval_str=True).parameters.values()
        if param.kind is not inspect.Parameter.VAR_KEYWORD
    ]
    command.__signature__ = inspect.Signature([*own[:-1], *generated, own[-1]])
    return command


def with_train_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Give ``command`` (which takes ``**options``) one keyword parameter per TrainConfig flag, inserted
    before its last parameter (``--json``)."""
    types = get_type_hints(TrainConfig)
    return _spliced(command, [param for spec in fields(TrainConfig) for param in _flags(spec, types[spec.name])])


def _request_flags(request: type) -> list[inspect.Parameter]:
    """The flag parameters of a request dataclass: one per field with help, a nested request's included. The
    flag's default is the field's; a tuple field is a repeatable flag (not given: None)."""
    types = get_type_hints(request)
    params = []
    for spec in fields(request):
        kind, meta = types[spec.name], spec.metadata
        if is_dataclass(kind):
            params += _request_flags(kind)
            continue
        if "help" not in meta:
            continue
        decls = (meta["flag"],) if meta["flag"] else ()
        info = {key: meta[key] for key in ("min", "max", "parser", "metavar") if meta[key] is not None}
        default = spec.default
        if meta["choices"] is not None:
            kind = lazy_choice(spec.name, meta["choices"]) | None
        elif kind is bool:
            decls = decls or (f"--{flag(spec.name)}",)
        elif get_origin(kind) is tuple:
            kind, default = list[get_args(kind)[0]] | None, None
        params.append(_option(spec.name, kind, *decls, default=default, help=meta["help"], **info))
    return params


def with_request_options(*requests: type) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A decorator giving ``command`` (which takes ``**options``) the flags of the ``requests`` dataclasses
    (:func:`request_from` turns their values back into a request), before its last parameter (``--json``); a
    flag two requests share (the same field name) is given once."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        generated: dict[str, inspect.Parameter] = {}
        for request in requests:
            for param in _request_flags(request):
                generated.setdefault(param.name, param)
        return _spliced(command, list(generated.values()))

    return decorate


R = TypeVar("R")


def request_from(request: type[R], options: dict[str, Any]) -> R:
    """The ``request`` dataclass of the values of its flags in ``options`` (fields without a flag keep their
    default; a repeatable flag not given is an empty tuple)."""
    types = get_type_hints(request)
    values: dict[str, Any] = {}
    for spec in fields(request):
        kind = types[spec.name]
        if is_dataclass(kind):
            values[spec.name] = request_from(kind, options)
        elif spec.name in options:
            value = options[spec.name]
            values[spec.name] = tuple(value or ()) if get_origin(kind) is tuple else value
    return request(**values)


def train_overrides(options: dict[str, Any]) -> dict[str, Any]:
    """The TrainConfig values of the flags that were given (None = not given)."""
    values = dict(options)
    types = get_type_hints(TrainConfig)
    for spec in fields(TrainConfig):
        kind, value = types[spec.name], values.get(spec.name)
        if kind == bool | str:
            values[spec.name] = pretrained_option(value, values.pop(f"no_{spec.name}"))
        elif kind == tuple[int, int] and value is not None:
            values[spec.name] = parse_size(value)
        elif kind == tuple[str, ...]:
            values[spec.name] = tuple(str(path) for path in value) if value else None
        elif isinstance(value, Path):
            values[spec.name] = str(value)
    return {name: value for name, value in values.items() if value is not None}
