"""Remedies for domain shift, one module each, behind one interface (:mod:`shiftbench.remedies.base`).

Every module of this package is imported here, so each registers its remedy by name: adding a
remedy is adding a module. None of them imports torch at import time.
"""

import importlib
import pkgutil

from shiftbench.remedies.base import Remedy, get_remedy, register_remedy, remedy_for

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_module}")

__all__ = ["Remedy", "get_remedy", "register_remedy", "remedy_for"]
