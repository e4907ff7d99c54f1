"""Models from ``package.module:factory``: a function or nn.Module class defined in that module.

Only a Python function or class whose ``__module__`` is the named module is called, never another
callable (``os:system`` and ``os:fork`` are refused before anything runs), a class only when it is
an ``nn.Module``, and only without arguments; its result must be an ``nn.Module``.
"""

from __future__ import annotations

import importlib
import inspect

from torch import nn

from scorecam_cli.errors import UnknownModel, UnsupportedModel, WeightsError, first_line
from scorecam_cli.models.base import LoadedModel, Preprocessing, is_path
from scorecam_cli.models.checkpoints import load_state_dict_file


def load_custom(name: str, spec: str) -> LoadedModel:
    """The nn.Module from factory ``module:attr`` with weights ``spec`` (DEFAULT/none or PATH)."""
    module_name, _, attr = name.partition(":")
    try:
        source = importlib.import_module(module_name)
        factory = getattr(source, attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise UnknownModel(f"cannot import model factory {name!r}: {first_line(exc)}") from exc
    except (Exception, SystemExit) as exc:  # the module's own code failed (a SyntaxError...)
        raise UnknownModel(
            f"cannot import model factory {name!r}: importing {module_name} raised "
            f"{type(exc).__name__}: {first_line(exc)}"
        ) from None
    _check_factory(name, factory, source.__name__)
    try:
        module = factory()
    except (Exception, SystemExit) as exc:
        raise UnsupportedModel(f"model factory {name} failed: {first_line(exc)}") from None
    if not isinstance(module, nn.Module):
        raise UnsupportedModel(f"{name} returned a {type(module).__name__}, not a torch nn.Module")
    if spec not in {"DEFAULT", "none"}:
        if not is_path(spec):
            raise WeightsError(f"a custom model takes --weights PATH, not {spec!r}")
        load_state_dict_file(module, spec)
    label = spec if spec not in {"DEFAULT", "none"} else "factory"
    return LoadedModel(name, module, Preprocessing(), None, label)


def _check_factory(name: str, factory: object, module_name: str) -> None:
    """Refuse anything but a function or nn.Module class of ``module_name`` taking no arguments."""
    is_function, is_class = inspect.isfunction(factory), inspect.isclass(factory)
    if not (is_function or is_class) or getattr(factory, "__module__", None) != module_name:
        raise UnsupportedModel(
            f"{name} is not a function or class defined in {module_name}; --model MODULE:NAME "
            "calls only those"
        )
    if is_class and not issubclass(factory, nn.Module):  # type: ignore[arg-type]
        raise UnsupportedModel(f"{name} is a class but not a torch nn.Module")
    try:
        inspect.signature(factory).bind()  # type: ignore[arg-type]
    except TypeError:
        raise UnsupportedModel(
            f"{name} needs arguments; give a factory that takes none "
            "(a function in your own module that builds the model)"
        ) from None
    except ValueError:
        pass  # no signature to inspect: the call itself will tell
