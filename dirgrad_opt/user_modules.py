"""The researcher's own Python modules in gin configs: ``--import``, gin ``import``, and the
folders they come from.

A run may use code that is not part of dirgrad_opt — an optimizer subclass, a dataset, a model
in the researcher's own ``my_opt.py``. Two ways to bring it in, both recorded in the run's
``operative_config.gin`` so the run can be repeated from its workdir alone:

* ``--import=my_opt`` (``experiments.train``/``sweep``/``analyze``, repeatable): imported before
  the gin files are parsed, looked up in the folders given with ``--import_path``, then on
  ``sys.path`` (the current directory first);
* ``import my_opt`` at the top of a gin file: while a gin file is parsed, **its own folder is
  importable**, so a gin file beside ``my_opt.py`` works from any current directory (and so do
  files it ``include``\\s, each with its own folder).

Either way, the module's *root folder* (the ``sys.path`` entry it was found in) is written at
the top of ``operative_config.gin`` as ``# dirgrad_opt.import_path: /abs/folder``, and gin
writes the ``import my_opt`` lines itself; :func:`parse` reads those comment lines back and
puts the folders on ``sys.path`` while it parses the file.

Standard library and gin only (no TensorFlow): the sweep and train entry points use it to
check ``--import`` names before their heavy imports.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import sys
import sysconfig
from collections.abc import Iterator, Sequence
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
#: The comment that records a folder in ``operative_config.gin``.
PATH_MARKER = "# dirgrad_opt.import_path:"
#: Most characters of a value quoted in an error message.
MAX_QUOTE = 300


class ImportFailed(ValueError):
    """A user module could not be imported; the message names it and says where we looked."""


def _system_roots() -> list[Path]:
    roots = {Path(sys.prefix), Path(sys.base_prefix), Path(sys.exec_prefix), PROJECT_ROOT}
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        with contextlib.suppress(KeyError):
            roots.add(Path(sysconfig.get_paths()[key]))
    return [r.resolve() for r in roots]


def _is_under(path: Path, roots: Sequence[Path]) -> bool:
    return any(path == r or r in path.parents for r in roots)


def module_root(name: str, file: str | None) -> Path | None:
    """The ``sys.path`` folder a module was imported from (``None`` for built-ins).

    ``a.b`` from ``/x/a/b.py`` → ``/x``; ``a`` from ``/x/a/__init__.py`` → ``/x``.
    """
    if not file:
        return None
    path = Path(file).resolve()
    depth = len(name.split(".")) + (1 if path.stem == "__init__" else 0)
    return path.parents[depth - 1] if depth - 1 < len(path.parents) else None


#: Root folders of the user modules imported by the last :func:`parse` (for :func:`header`).
_RECORDED: list[str] = []


def user_root(name: str) -> str | None:
    """The root folder of the imported module ``name`` if it is the researcher's own code —
    neither the standard library, an installed package nor dirgrad_opt — else ``None``."""
    module = sys.modules.get(name)
    root = module_root(name, getattr(module, "__file__", None))
    if root is None or _is_under(root, _system_roots()):
        return None
    return str(root)


def find_root(name: str, search: Sequence[str] = ()) -> str:
    """Where ``import name`` would find a module, without running it: its root folder.

    Looks on ``search`` first, then ``sys.path`` (which holds the current directory for
    ``python -m``). Used by the sweep driver to forward a module to its trials.

    Raises:
      ImportFailed: no such module.
    """
    top = name.split(".")[0]
    with on_sys_path(search):
        try:
            spec = importlib.util.find_spec(top)
        except (ImportError, ValueError) as error:
            raise ImportFailed(f"--import={name}: {error}") from None
    if spec is None:
        raise ImportFailed(_not_found(name, search))
    if spec.origin in (None, "built-in", "frozen"):
        locations = list(spec.submodule_search_locations or [])
        if not locations:
            return ""
        return str(Path(locations[0]).resolve().parent)
    return str(module_root(top, spec.origin) or "")


def _not_found(name: str, search: Sequence[str]) -> str:
    where = [os.getcwd(), *search]
    return (
        f"--import={name}: no module named {name!r} (looked in the current directory "
        f"{where[0]!r}{', ' + ', '.join(map(repr, where[1:])) if len(where) > 1 else ''} and on "
        "sys.path); give the folder that holds it with --import_path, or run from that folder"
    )


@contextlib.contextmanager
def on_sys_path(folders: Sequence[str]) -> Iterator[None]:
    """Puts ``folders`` at the front of ``sys.path`` for the block; afterwards each one stays
    (at the end) only if a module was imported from it."""
    added = [str(Path(f).resolve()) for f in folders if f]
    added = [f for f in dict.fromkeys(added) if f not in sys.path]
    before = set(sys.modules)
    sys.path[:0] = added
    try:
        yield
    finally:
        new = [sys.modules[n] for n in list(sys.modules) if n not in before]
        files = [getattr(module, "__file__", None) or "" for module in new]
        for folder in added:
            with contextlib.suppress(ValueError):
                sys.path.remove(folder)
            if any(f.startswith(folder + os.sep) for f in files) and folder not in sys.path:
                sys.path.append(folder)


def import_modules(names: Sequence[str], search: Sequence[str] = ()) -> list[object]:
    """Imports the researcher's modules (``--import``) with ``search`` folders importable.

    Raises:
      ImportFailed: a module is missing, or raised while it was imported (the message names
        the module and the error, in one line).
    """
    modules = []
    with on_sys_path(search):
        for name in names:
            name = name.strip()
            if not name or not all(part.isidentifier() for part in name.split(".")):
                raise ImportFailed(
                    f"--import={name!r} is not a module name; write a dotted name such as "
                    "'my_opt' or 'my_project.optimizers' (put its folder on --import_path)"
                )
            try:
                modules.append(importlib.import_module(name))
            except ModuleNotFoundError as error:
                if error.name and (name == error.name or name.startswith(error.name + ".")):
                    raise ImportFailed(_not_found(name, search)) from None
                raise ImportFailed(f"--import={name}: {one_line(error)}") from error
            except Exception as error:  # noqa: BLE001 - any error in user code is reported
                raise ImportFailed(f"--import={name}: {one_line(error)}") from error
    return modules


def one_line(error: BaseException) -> str:
    """``Type: message`` on one line, at most :data:`MAX_QUOTE` × 2 characters."""
    text = " ".join(str(error).split()) or type(error).__name__
    if not text.startswith(type(error).__name__):
        text = f"{type(error).__name__}: {text}"
    return text if len(text) <= 2 * MAX_QUOTE else text[: 2 * MAX_QUOTE - 3] + "..."


def recorded_paths(gin_file: str | os.PathLike) -> list[str]:
    """The ``# dirgrad_opt.import_path:`` folders at the top of a gin file (e.g. a run's
    ``operative_config.gin``); ``[]`` for an unreadable file."""
    out = []
    try:
        with open(gin_file, encoding="utf-8") as f:
            for line in f:
                if line.startswith(PATH_MARKER):
                    out.append(line[len(PATH_MARKER) :].strip())
    except OSError:
        return []
    return [p for p in out if p]


@contextlib.contextmanager
def gin_files_importable() -> Iterator[None]:
    """While the block runs, every gin file gin opens (top-level or ``include``\\d) has its own
    folder, and the folders its ``# dirgrad_opt.import_path:`` lines record, importable
    during its parse; so ``import my_opt`` in a gin file beside ``my_opt.py`` works from any
    current directory."""
    import gin.config

    readers = gin.config._FILE_READERS  # gin 0.5: [(reader, existence_check)], first match wins

    @contextlib.contextmanager
    def reader(path: str) -> Iterator[object]:
        folders = [str(Path(path).resolve().parent), *recorded_paths(path)]
        with on_sys_path(folders), open(path, encoding="utf-8") as f:
            yield f

    entry = (reader, os.path.isfile)
    readers.insert(0, entry)
    try:
        yield
    finally:
        readers.remove(entry)


def header(roots: Sequence[str] | None = None) -> str:
    """The lines that start ``operative_config.gin``: the folders of the user modules that the
    last :func:`parse` imported (``--import`` and gin ``import`` statements)."""
    roots = list(_RECORDED) if roots is None else list(roots)
    if not roots:
        return ""
    lines = [
        "# Folders of this run's own Python modules (--import, gin `import`): experiments.train",
        "# puts them on sys.path before parsing this file, so it repeats the run on its own:",
        "#   python -m experiments.train --gin_file=<this file> --workdir=<new folder>",
        *(f"{PATH_MARKER} {root}" for root in roots),
    ]
    return "\n".join(lines) + "\n\n"


def parse(
    gin_files: Sequence[str],
    gin_params: Sequence[str],
    imports: Sequence[str] = (),
    import_paths: Sequence[str] = (),
) -> None:
    """Clears gin, imports ``imports`` (recorded as gin ``import`` statements, so they appear
    in the operative config), then parses the files and bindings with unknown names as errors
    and every gin file's folder importable while it is parsed.

    Raises:
      ImportFailed: an ``--import`` module is missing or fails.
      Exception: whatever gin raises for a bad file or binding.
    """
    import gin
    import gin.config

    gin.clear_config()
    _RECORDED.clear()
    import_modules(imports, import_paths)
    with on_sys_path(import_paths):
        if imports:
            gin.parse_config([f"import {name.strip()}" for name in imports])
        with gin_files_importable():
            gin.parse_config_files_and_bindings(gin_files, gin_params, skip_unknown=False)
    names = [s.module for s in getattr(gin.config, "_IMPORTS", ())]  # gin 0.5's import record
    roots = {user_root(name) for name in [*imports, *names]}
    _RECORDED[:] = sorted(r for r in roots if r)
