"""Every exception lb defines derives from `LBError`, and its module docstring names it."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import lb
from lb.exceptions import LBError


def lb_exceptions() -> list[type[BaseException]]:
    found = []
    for info in pkgutil.walk_packages(lb.__path__, "lb."):
        if info.name.endswith("__main__"):  # runs the command line when imported
            continue
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__ == info.name
                and not name.startswith("_")
            ):
                found.append(value)
    return found


def test_every_exception_of_lb_is_an_lb_error_drawn_in_the_hierarchy() -> None:
    found = lb_exceptions()
    assert len(found) >= 10
    doc = importlib.import_module("lb.exceptions").__doc__ or ""
    for cls in found:
        assert issubclass(cls, LBError), cls
        if cls is not LBError:
            assert f"{cls.__name__} " in doc and cls.__module__ in doc, cls
