"""Each run option is defined once: a field of a frozen config dataclass, declared with
`option(...)`, carries its default, its command-line flag, its help, the environment
variables that may set it and the check its value must pass.

From that one definition:
- `add_options(parser, Cls)` generates the argparse arguments of every command that takes
  the options (`dfray score`, `dfray extract`, `jobs/score.py`, the SageMaker entry …),
  with the default shown in `--help`;
- `from_args(Cls, args, **fixed)` builds the frozen config; this is the edge: the only
  place the environment is read (a flag beats its environment variables, which beat the
  default);
- `to_argv(cfg)` turns a config back into arguments, for entry points that run elsewhere;
- `check_options(cfg)` (called by each config's `__post_init__`) rejects out-of-range
  values with a ConfigError naming the flag, so a bad value stops the command before
  anything runs, whether it came from the CLI or from the Python API.

Nested config dataclasses (RunConfig.decode, RunConfig.storage) contribute their own
options; flags must be unique across a command.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import MISSING, dataclass
from typing import Any

KINDS = ("value", "flag", "no_flag", "append", "positional")


@dataclass(frozen=True)
class Option:
    flag: str | None  # "--frames"; None for a positional argument
    help: str
    kind: str = "value"  # value | flag (store_true) | no_flag (sets False) | append | positional
    env: tuple[str, ...] = ()
    check: Callable[[Any], str | None] | None = None  # value -> what is wrong, or None
    choices: tuple[str, ...] | None = None
    metavar: str | None = None
    parse: Callable[[str], Any] | None = None  # text -> value (default: from the field type)
    show_default: str | None = None  # what --help says the default is, if not the value

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_") if self.flag else ""


def option(
    default: Any = MISSING,
    *,
    help: str,
    flag: str | None = None,
    kind: str = "value",
    env: Sequence[str] = (),
    check: Callable[[Any], str | None] | None = None,
    choices: Sequence[str] | None = None,
    metavar: str | None = None,
    parse: Callable[[str], Any] | None = None,
    default_factory: Callable[[], Any] | Any = MISSING,
    show_default: str | None = None,
) -> Any:
    """A dataclass field that is also a command-line option (see the module docstring)."""
    if kind not in KINDS:
        raise ValueError(f"option kind must be one of {KINDS}, got {kind!r}")
    meta = Option(
        flag=flag,
        help=help,
        kind=kind,
        env=tuple(env),
        check=check,
        choices=tuple(choices) if choices else None,
        metavar=metavar,
        parse=parse,
        show_default=show_default,
    )
    kw: dict[str, Any] = {"metadata": {"option": meta}}
    if default_factory is not MISSING:
        kw["default_factory"] = default_factory
    else:
        kw["default"] = default
    return dataclasses.field(**kw)


# -- checks ------------------------------------------------------------------------------------


def at_least(lo: float) -> Callable[[Any], str | None]:
    def check(v):
        return None if v is None or v >= lo else f"must be >= {lo:g}"

    return check


def positive(v) -> str | None:
    return None if v is None or v > 0 else "must be > 0"


def fraction(v) -> str | None:
    return None if v is None or 0 <= v < 1 else "must be in [0, 1)"


def no_userinfo(v) -> str | None:
    """A URL without `user:password@` (S3 requests are signed with the AWS credential chain;
    a password in a URL would only end up in logs)."""
    from urllib.parse import urlsplit

    try:
        netloc = urlsplit(v).netloc if v else ""
    except ValueError:
        return "is not a valid URL"
    return ("must not carry user info (user:password@); credentials come from the AWS "
            "credential chain" if "@" in netloc else None)


# -- introspection -----------------------------------------------------------------------------


def _meta(f: dataclasses.Field) -> Option | None:
    return f.metadata.get("option")


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _base_type(tp: Any) -> Any:
    """int for `int | None`, the dataclass for a nested config, etc."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if args and typing.get_origin(tp) in (typing.Union, types.UnionType):
        return args[0] if len(args) == 1 else tp
    return tp


def _nested(cls: type, f: dataclasses.Field) -> type | None:
    tp = _base_type(_hints(cls)[f.name])
    return tp if dataclasses.is_dataclass(tp) else None


_FACTORY = object()  # marks a default computed by a factory (shown via show_default)


def iter_options(cls: type, path: tuple[str, ...] = ()):
    """(field path, Option, field type, default) of every option of cls and its nested configs."""
    for f in dataclasses.fields(cls):
        meta = _meta(f)
        if meta is not None:
            has_factory = f.default_factory is not MISSING
            default = _FACTORY if has_factory else f.default
            yield (*path, f.name), meta, _base_type(_hints(cls)[f.name]), default
        elif (sub := _nested(cls, f)) is not None:
            yield from iter_options(sub, (*path, f.name))


def _parser_for(meta: Option, tp: Any) -> Callable[[str], Any]:
    if meta.parse is not None:
        return meta.parse
    if tp in (int, float, str):
        return tp
    if typing.get_origin(tp) is tuple:
        return str
    return str


def _default_text(meta: Option, default: Any) -> str:
    if meta.show_default is not None:
        return meta.show_default
    if default is MISSING or default is None or default is _FACTORY or default == ():
        return "none"
    if isinstance(default, float):
        return f"{default:g}"
    return str(default)


# -- argparse ----------------------------------------------------------------------------------


def add_options(parser, cls: type, *, skip: Sequence[str] = ()) -> None:
    """Add an argparse argument for every option of `cls` (and nested configs) except the
    field names in `skip`. Defaults are left to `from_args`, so an unset flag is None."""
    for path, meta, tp, default in iter_options(cls):
        if path[-1] in skip:
            continue
        env = f"; env ${', $'.join(meta.env)}" if meta.env else ""
        text = meta.help
        if default is MISSING:
            pass  # required: no default to show
        elif meta.kind not in ("flag", "no_flag"):
            text += f" (default: {_default_text(meta, default)}{env})"
        elif env:
            text += f" ({env[2:]})"
        if meta.kind == "positional":
            parser.add_argument(path[-1], help=text, metavar=meta.metavar)
        elif meta.kind == "flag":
            parser.add_argument(meta.flag, action="store_true", default=None, help=text)
        elif meta.kind == "no_flag":
            parser.add_argument(meta.flag, action="store_false", default=None, help=text)
        elif meta.kind == "append":
            parser.add_argument(
                meta.flag, action="append", default=None, metavar=meta.metavar, help=text,
                type=_parser_for(meta, str),
            )
        else:
            parser.add_argument(
                meta.flag,
                default=None,
                type=_parser_for(meta, tp),
                choices=meta.choices,
                metavar=meta.metavar or ("N" if tp is int else None),
                required=default is MISSING and not meta.env,
                help=text,
            )


def _from_env(meta: Option, tp: Any, environ: typing.Mapping[str, str]) -> Any:
    for name in meta.env:
        raw = environ.get(name)
        if raw:
            if meta.kind in ("flag", "no_flag"):
                return raw.strip().lower() in ("1", "true", "yes", "on")
            return _parser_for(meta, tp)(raw)
    return None


def from_args(cls: type, args: Any, environ: typing.Mapping[str, str] | None = None, **fixed):
    """Build `cls` from parsed arguments (an argparse Namespace or a mapping), reading the
    environment for options left unset. `fixed` gives field values directly (they win)."""
    environ = os.environ if environ is None else environ
    get = args.get if isinstance(args, dict) else (lambda k, d=None: getattr(args, k, d))
    kw: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name in fixed:
            kw[f.name] = fixed[f.name]
            continue
        meta = _meta(f)
        if meta is None:
            sub = _nested(cls, f)
            if sub is not None and any(True for _ in iter_options(sub)):
                kw[f.name] = from_args(sub, args, environ)
            continue
        key = f.name if meta.kind == "positional" else meta.dest
        value = get(key)
        if value is None:
            value = _from_env(meta, _base_type(_hints(cls)[f.name]), environ)
        if value is None:
            continue  # the field's default
        if meta.kind == "append":
            value = tuple(value)
        kw[f.name] = value
    return cls(**kw)


def option_names(cls: type) -> set[str]:
    """Field names of every option of `cls` and its nested configs (the Python API's
    keyword names: `n_frames`, `endpoint_url`, …)."""
    return {path[-1] for path, *_ in iter_options(cls)}


def from_kwargs(cls: type, kwargs: typing.Mapping[str, Any],
                environ: typing.Mapping[str, str] | None = None, **fixed):
    """`from_args` for the Python API: options named by their field names (nested
    configs' too). A string given for an option that parses text (`ensemble`: a YAML path
    or builtin:NAME) is parsed as its flag's value would be. Unknown names raise
    ConfigError."""
    from dfray.config import ConfigError

    metas = {path[-1]: (meta, tp) for path, meta, tp, _ in iter_options(cls)}
    unknown = sorted(set(kwargs) - set(metas))
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(unknown)}; known: "
                          f"{', '.join(sorted(metas))}")
    args: dict[str, Any] = {}
    for name, value in kwargs.items():
        meta, tp = metas[name]
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        if isinstance(value, str) and meta.parse is not None and tp is not str:
            value = meta.parse(value)
        args[name if meta.kind == "positional" else meta.dest] = value
    return from_args(cls, args, environ, **fixed)


def to_argv(cfg: Any, *, skip: Sequence[str] = ()) -> list[str]:
    """Command-line arguments that rebuild `cfg`'s options (values that differ from the
    default; positional options first). Fields named in `skip` are left out."""
    positional: list[str] = []
    out: list[str] = []

    def walk(obj: Any) -> None:
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            meta = _meta(f)
            if f.name in skip:
                continue
            if meta is None:
                if dataclasses.is_dataclass(value):
                    walk(value)
                continue
            if meta.kind == "positional":
                positional.append(str(value))
                continue
            if f.default is not MISSING and value == f.default:
                continue
            if meta.kind == "flag" and value or meta.kind == "no_flag" and not value:
                out.append(meta.flag)
            elif meta.kind == "append":
                for v in value:
                    out.extend((meta.flag, str(v)))
            elif meta.kind == "value" and value is not None:
                out.extend((meta.flag, f"{value:g}" if isinstance(value, float) else str(value)))

    walk(cfg)
    return positional + out


def check_options(cfg: Any) -> None:
    """Raise ConfigError for the first option of `cfg` (not nested) whose value fails its
    check or is not among its choices."""
    from dfray.config import ConfigError

    for f in dataclasses.fields(cfg):
        meta = _meta(f)
        if meta is None:
            continue
        value = getattr(cfg, f.name)
        name = meta.flag or f.name
        if meta.choices and value not in meta.choices:
            raise ConfigError(f"{name} must be one of {', '.join(meta.choices)}; got {value!r}")
        problem = meta.check(value) if meta.check else None
        if problem:
            raise ConfigError(f"{name} {problem}; got {value!r}")
