"""The front door of every Hydra command (``launchers/*.py``):

1. one line saying what is loading, before any slow import (torch alone takes seconds);
2. the config composed once before the real run, so that a mistake on the command line (a key
   that does not exist, a value of the wrong type, a config group option that does not exist,
   a ``+key`` the schema does not have) is one line naming the key, with the nearest valid key,
   and exit 2 (Hydra itself prints several lines and exits 1, once per rank);
3. Hydra's own ``main`` with the command's task.

A launcher is ``run_app(config_dir, config_name, task="module:function",
schema="module:function", loading="...")``; task and schema are imported after the first line.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cllm4rec_dist.cli.errors import one_line, report

if TYPE_CHECKING:
    from omegaconf import DictConfig

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
# Hydra options that do not run the task: nothing to check ahead of them.
_NOT_A_RUN = ("help", "hydra_help", "shell_completion", "info", "multirun", "experimental_rerun")


def announce(what: str) -> None:
    """``<command>: loading <what> ...`` on stderr (rank 0 of a launch only)."""
    if os.environ.get("RANK", "0") == "0":
        print(f"{Path(sys.argv[0]).stem}: loading {what} ...", file=sys.stderr, flush=True)


def _load(target: str) -> Callable[..., Any]:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def run_app(
    config_dir: Path,
    config_name: str,
    *,
    task: str,
    schema: str,
    loading: str,
    version_base: str | None = "1.3",
) -> None:
    """Announce, register the schema, check the command line, then run ``task(cfg)`` under
    ``hydra.main``."""
    announce(loading)
    import hydra

    _load(schema)()
    preflight(config_dir, config_name, sys.argv[1:], version_base)
    main = hydra.main(
        config_path=str(config_dir), config_name=config_name, version_base=version_base
    )
    main(_load(task))()
    _leave_process_group()


def _leave_process_group() -> None:
    """Destroy the process group the task joined, if any, before the interpreter exits: gloo's
    threads torn down at exit can abort a finished run ("terminate called without an active
    exception", exit -6). Looked up in sys.modules: a task without torch does not import it."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def preflight(
    config_dir: Path, config_name: str, argv: list[str], version_base: str | None
) -> None:
    """Compose the config the way Hydra will; a mistake is reported as one line (exit 2).
    The command line is read by Hydra's own parser (``hydra._internal``, hydra-core 1.3), so
    ``--config-name`` and the options that do not run the task are understood as Hydra does."""
    from hydra._internal.utils import get_args_parser

    args = get_args_parser().parse_args(argv)
    if args.config_dir or any(getattr(args, flag, None) for flag in _NOT_A_RUN):
        return
    problem = compose_problem(config_dir, args.config_name or config_name, args.overrides,
                              version_base)  # fmt: skip
    if problem:
        report(problem, traceback_hint=False)


def compose_problem(
    config_dir: Path, config_name: str, overrides: list[str], version_base: str | None
) -> str | None:
    """What is wrong with composing ``config_name`` with ``overrides`` (None: nothing)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(
            config_dir=str(Path(config_dir).resolve()), version_base=version_base
        ):
            try:
                cfg = compose(config_name, overrides=overrides)
            except (HydraException, OmegaConfBaseException) as err:
                base = _quiet_compose(compose, config_name)
                return explain(err, base, config_dir)
            return added_key_problem(cfg, overrides, config_dir)
    finally:
        GlobalHydra.instance().clear()


def _quiet_compose(compose: Callable[..., Any], config_name: str) -> Any:
    try:
        return compose(config_name)
    except Exception:  # the primary config itself is broken: no key to suggest from
        return None


def config_keys(cfg: DictConfig) -> list[str]:
    """Every dotted key of ``cfg`` (mappings only; list elements are not keys)."""
    from omegaconf import DictConfig

    keys: list[str] = []

    def walk(node: Any, prefix: str) -> None:
        for key in node:
            path = f"{prefix}{key}"
            keys.append(path)
            child = node._get_node(key)
            if isinstance(child, DictConfig) and not child._is_missing() and not child._is_none():
                walk(child, path + ".")

    if cfg is not None:
        walk(cfg, "")
    return keys


def nearest(key: str, candidates: list[str]) -> str | None:
    """The candidate closest to ``key``: among its siblings first, then among all keys."""
    parent = key.rpartition(".")[0]
    siblings = [c for c in candidates if c.rpartition(".")[0] == parent]
    for pool in (siblings, candidates):
        match = difflib.get_close_matches(key, pool, n=1, cutoff=0.6)
        if match:
            return match[0]
    return None


def _suggest(key: str, candidates: list[str]) -> str:
    match = nearest(key, candidates)
    return f" (did you mean {match}?)" if match else ""


def _groups(config_dir: Path) -> list[str]:
    return sorted(p.name for p in config_dir.iterdir() if p.is_dir())


def explain(err: BaseException, base: Any, config_dir: Path) -> str:
    """One line for a composition error: the key or option, and the nearest valid one."""
    from hydra.errors import MissingConfigException

    text = str(err)
    keys = config_keys(base) + _groups(config_dir)
    if isinstance(err, MissingConfigException):
        missing = re.search(r"Could not find '([^']+)'", text)
        options = [
            o
            for o in re.findall(r"^\t(\S+)$", text.split("Config search path")[0], re.M)
            if not o.endswith("_schema")
        ]  # the schemas registered beside the files
        if missing and "/" in missing.group(1):
            group, _, option = missing.group(1).rpartition("/")
            hint = difflib.get_close_matches(option, options, n=1, cutoff=0.5)
            return f"{group}={option}: no such option; {group} is one of {', '.join(options)}" + (
                f" (did you mean {group}={hint[0]}?)" if hint else ""
            )
        return one_line(text.split("Config search path")[0])
    cause = err.__cause__
    unknown = re.search(r"Could not (?:override|append to) '([^']+)'", text)
    if unknown and type(cause).__name__ in ("ConfigAttributeError", "ConfigKeyError"):
        key = unknown.group(1)
        return f"unknown config key `{key}`{_suggest(key, keys)}"
    if cause is not None and getattr(cause, "full_key", None):
        reason = str(getattr(cause, "msg", cause)).splitlines()[0]
        return f"invalid config `{cause.full_key}`: {reason}"
    if type(err).__name__ == "OverrideParseException":
        return f"cannot parse the command line: {one_line(text.split('See https://hydra.cc')[0])}"
    return one_line(text.split("See https://hydra.cc")[0])


def added_key_problem(cfg: DictConfig, overrides: list[str], config_dir: Path) -> str | None:
    """A ``+key=value`` / ``++key=value`` that adds a key to a typed section of the schema (it
    would be accepted and change nothing); keys of free-form sections may be added."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    groups = set(_groups(config_dir))
    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.key_or_group
        if not (override.is_add() or override.is_force_add()) or override.package is not None:
            continue
        if "/" in key or key in groups or key.startswith("hydra"):
            continue
        bad = _first_unknown(cfg, key)
        if bad is None:
            continue
        where, fields = bad
        return (
            f"`{override.input_line}`: the schema has no key `{where}`{_suggest(where, fields)}; "
            "`+` adds keys only to free-form sections such as deepspeed.extra"
        )
    return None


def _first_unknown(cfg: DictConfig, key: str) -> tuple[str, list[str]] | None:
    """(the first prefix of ``key`` that a typed section of ``cfg`` does not declare, that
    section's keys), or None when every typed section on the way declares it."""
    from omegaconf import DictConfig, OmegaConf

    node, prefix = cfg, ""
    for part in key.split("."):
        kind = OmegaConf.get_type(node)
        path = f"{prefix}{part}"
        if kind is not None and dataclasses.is_dataclass(kind):
            fields = [f.name for f in dataclasses.fields(kind)]
            if part not in fields:
                return path, [f"{prefix}{name}" for name in fields]
        node, prefix = node._get_node(part), path + "."
        if not isinstance(node, DictConfig):
            return None
    return None
