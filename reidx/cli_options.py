"""Command flags generated from dataclass fields: ``reidx train``'s from :class:`~reidx.train.config.TrainConfig`,
``embed``/``search``/``serve``'s from their request objects (:func:`with_request_options`, fields declared
with :func:`reidx.options.option`).

Each field gives one flag (``--batch-ids``), its help and default (the field's metadata and default) and,
where the field has a registry, its choices. Bools are ``--x/--no-x``; ``pretrained`` (bool or a path) is
``--pretrained PATH`` / ``--no-pretrained``; ``input_size`` is ``--input-size HxW``; a tuple of paths
(``dataset``) is a repeatable flag. A flag not given is None,
so a ``--config`` file's value stands. Choices are read from their registry only when listed or checked
(``reidx train --help`` or a run), and so are the models' own options (:class:`TrainCommand` adds their flags
when ``reidx train`` parses or shows its help), so ``reidx --help`` imports no torch.
"""

from __future__ import annotations

import inspect
import shutil
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import MISSING, Field, fields, is_dataclass
from enum import Enum, EnumMeta
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, TypeVar, get_args, get_origin, get_type_hints

import click
import typer
from typer.core import TyperCommand

from reidx.train.config import CommonOptions, config_class, flag, parse_size, pretrained_option, value_text

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


def _option(name: str, kind: Any, *decls: str, default: Any = None, **info: Any) -> inspect.Parameter:
    option = typer.Option(*decls, **info)
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=Annotated[kind, option])


def _flags(spec: Field, kind: Any) -> list[inspect.Parameter]:
    """The parameters (usually one) of the flag for one TrainConfig field."""
    meta, dashed = spec.metadata, flag(spec.name)
    default = "" if spec.default in ("", (), MISSING) else f" (default {value_text(spec.default)})"
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
#: ``ctx.meta`` key of the models' own options given to ``reidx train`` (name -> value, None = not given).
MODEL_OPTIONS = "reidx.model_options"


def _click_params(parameters: list[inspect.Parameter]) -> list[click.Parameter]:
    """The click parameters Typer makes of these keyword parameters."""

    def holder(**options: Any) -> None:
        """Only carries the signature."""

    holder.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    single = typer.Typer()
    single.command()(holder)
    return typer.main.get_command(single).params


class TrainCommand(TyperCommand):
    """``reidx train``. Its flags of the models' own options (:func:`~reidx.train.config.config_class`) are added
    on first use, in the order of the config's fields; their values reach the command in
    ``ctx.meta[MODEL_OPTIONS]``.

    Rich's option table cuts its long flag names (``--residual-reco…``) on terminals narrower than
    :data:`RICH_HELP_COLUMNS`, so there the help is click's plain layout, which wraps the help text beside or
    under each whole flag name instead."""

    @cached_property
    def model_params(self) -> list[click.Parameter]:
        """The flags of the models' own options; the command's params now include them, in field order."""
        config = config_class()
        common = {spec.name for spec in fields(CommonOptions)}
        types = get_type_hints(config)
        own = [spec for spec in fields(config) if spec.name not in common]
        generated = _click_params([param for spec in own for param in _flags(spec, types[spec.name])])
        by_name = {param.name: param for param in [*self.params, *generated]}
        order = [name for spec in fields(config) for name in (spec.name, f"no_{spec.name}") if name in by_name]
        rest = [param for param in self.params if param.name not in order]
        self.params = [*rest[:-1], *(by_name[name] for name in order), *rest[-1:]]
        return generated

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        assert self.model_params is not None  # added on first use
        return super().get_params(ctx)

    def invoke(self, ctx: click.Context) -> Any:
        ctx.meta[MODEL_OPTIONS] = {param.name: ctx.params.pop(param.name, None) for param in self.model_params}
        return super().invoke(ctx)

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


def with_train_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Give ``command`` (which takes ``**options``) one keyword parameter per flag of the common options,
    inserted before its last parameter (``--json``); :class:`TrainCommand` adds the models' own."""
    types = get_type_hints(CommonOptions)
    return _spliced(command, [param for spec in fields(CommonOptions) for param in _flags(spec, types[spec.name])])


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
        limits = {"min": meta["minimum"], "max": meta["maximum"], "parser": meta["parser"], "metavar": meta["metavar"]}
        info = {key: value for key, value in limits.items() if value not in (None, "")}
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
    """The TrainConfig values of the flags that were given (None = not given); the models' own options are
    plain values (bool, number, text)."""
    values = dict(options)
    types = get_type_hints(CommonOptions)
    for spec in fields(CommonOptions):
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
