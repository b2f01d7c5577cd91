"""Load a scenario: a Python file or module whose ``build()`` returns a `nengo.Network`.

A scenario spec is one of

* ``path/to/file.py``: the file's ``build()``;
* ``path/to/file.py:function``: another function of the file;
* ``package.module:function`` (or ``package.module``, meaning its ``build()``): an
  importable module;
* ``name``: a bundled scenario (e.g. ``mnist_conv``), when no file or module of that
  name exists. Bundled scenarios are the ``*.py`` files of the project's
  ``scenarios/`` folder, installed with the package as ``partitioner.scenarios``, so
  their names work after any install and from any directory.

The file or module may also define ``ensemble_rates(net)``, returning
``{nengo.Ensemble: per-neuron rates in Hz}`` for the network ``build()`` returned.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import nengo

from partitioner.errors import ScenarioError

__all__ = ["Scenario", "load_scenario", "bundled_scenarios", "BUNDLED_DIR"]



def _bundled_dir():
    """Folder of the bundled scenarios: the ``partitioner.scenarios`` package as
    installed (its files are the project's ``scenarios/*.py``), or the ``scenarios/``
    folder next to the package in a source tree that is not installed."""
    try:
        spec = importlib.util.find_spec("partitioner.scenarios")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations))).resolve()
    return Path(__file__).resolve().parent.parent / "scenarios"


#: Folder of the scenarios bundled with the project.
BUNDLED_DIR = _bundled_dir()

_MODULE_NAME_RE = re.compile(r"^[A-Za-z_][\w.]*$")


@dataclass(eq=False)
class Scenario:
    """A loaded scenario.

    Attributes
    ----------
    name : str
        Short name (the file stem, or ``module:function``).
    network : nengo.Network
        The network ``build()`` returned.
    ensemble_rates : dict or None
        ``{nengo.Ensemble: per-neuron rates in Hz}`` from the scenario's optional
        ``ensemble_rates(net)``, or None when it defines none.
    source : str
        Where the scenario came from (file path or module name).
    """

    name: str
    network: nengo.Network
    ensemble_rates: dict = None
    source: str = ""


def bundled_scenarios():
    """Names of the bundled scenarios (every ``*.py`` file of `BUNDLED_DIR`).

    Returns
    -------
    list of str
        Sorted file stems (files starting with ``_`` left out).
    """
    if not BUNDLED_DIR.is_dir():
        return []
    return sorted(p.stem for p in BUNDLED_DIR.glob("*.py") if not p.stem.startswith("_"))


def load_scenario(spec):
    """Load a scenario and build its network.

    Parameters
    ----------
    spec : str or os.PathLike
        ``file.py``, ``file.py:function``, ``package.module:function``,
        ``package.module`` or the name of a bundled scenario (see the module
        docstring).

    Returns
    -------
    Scenario

    Raises
    ------
    ScenarioError
        The file or module does not exist or fails to import, it has no such
        function, the function raises, or it does not return a `nengo.Network`.
    """
    spec = str(spec).strip()
    if not spec:
        raise ScenarioError("Empty scenario: give a .py file exposing build().")
    target, func_name = _split_spec(spec)
    module, source, name = _import_target(target, spec)
    func_name = func_name or "build"
    if func_name != "build":
        name = f"{name}:{func_name}"
    network = _build(module, func_name, source)
    rates = _ensemble_rates(module, network, source)
    return Scenario(name=name, network=network, ensemble_rates=rates, source=source)


# ------------------------------------------------------------------ helpers
def _one_line(text):
    """``text`` with all whitespace runs (newlines included) collapsed to one space."""
    return " ".join(str(text).split())


def _split_spec(spec):
    """``(target, function or None)``: split at the last ``:`` that is not a drive."""
    head, sep, tail = spec.rpartition(":")
    if sep and tail and re.fullmatch(r"[A-Za-z_]\w*", tail) and not re.fullmatch(
        r"[A-Za-z]", head
    ):
        return head, tail
    return spec, None


def _import_target(target, spec):
    """Import a file or module; returns ``(module, source, name)``."""
    path = Path(target).expanduser()
    looks_like_file = target.endswith(".py") or "/" in target or "\\" in target
    if path.is_file():
        return _import_file(path), str(path), path.stem
    if looks_like_file:
        raise ScenarioError(
            f"Scenario file not found: {target}. Give the path of a .py file that "
            f"defines build() returning a nengo.Network."
        )
    bundled = BUNDLED_DIR / f"{target}.py"
    if bundled.is_file() and not _module_exists(target):
        return _import_file(bundled), str(bundled), target
    if _MODULE_NAME_RE.match(target):
        return _import_module(target), target, target
    raise ScenarioError(
        f"Cannot load scenario {spec!r}: not a file, a bundled scenario "
        f"({', '.join(bundled_scenarios()) or 'none found'}) or an importable module."
    )


def _module_exists(name):
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _import_file(path):
    """Execute a Python file as a fresh module (its folder importable meanwhile)."""
    path = path.resolve()
    mod_name = "_partitioner_scenario_" + re.sub(r"\W", "_", path.stem)
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None or spec.loader is None:
        raise ScenarioError(f"{path} cannot be loaded as a Python module.")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        sys.modules.pop(mod_name, None)
        raise ScenarioError(
            f"{path} failed to load: {type(e).__name__}: {_one_line(e)}"
        ) from e
    finally:
        sys.path.remove(str(path.parent))
    return module


def _import_module(name):
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        raise ScenarioError(
            f"Cannot load scenario {name!r}: no such file or module ({_one_line(e)})."
        ) from e
    except Exception as e:
        raise ScenarioError(
            f"Module {name} failed to import: {type(e).__name__}: {_one_line(e)}"
        ) from e


def _build(module, func_name, source):
    func = getattr(module, func_name, None)
    if not callable(func):
        raise ScenarioError(
            f"{source} has no function {func_name}(). A scenario must define "
            f"{func_name}() returning a nengo.Network."
        )
    try:
        network = func()
    except Exception as e:
        raise ScenarioError(
            f"{source}: {func_name}() raised {type(e).__name__}: {_one_line(e)}"
        ) from e
    if not isinstance(network, nengo.Network):
        raise ScenarioError(
            f"{source}: {func_name}() returned {type(network).__name__}, not a "
            f"nengo.Network."
        )
    return network


def _ensemble_rates(module, network, source):
    func = getattr(module, "ensemble_rates", None)
    if func is None:
        return None
    if not callable(func):
        raise ScenarioError(f"{source}: ensemble_rates must be a function of the network.")
    try:
        rates = func(network)
    except Exception as e:
        raise ScenarioError(
            f"{source}: ensemble_rates(net) raised {type(e).__name__}: {_one_line(e)}"
        ) from e
    if rates is not None and not isinstance(rates, dict):
        raise ScenarioError(
            f"{source}: ensemble_rates(net) returned {type(rates).__name__}, not a dict "
            f"{{nengo.Ensemble: per-neuron rates in Hz}}."
        )
    return rates
