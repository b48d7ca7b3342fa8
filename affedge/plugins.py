"""The user's own extensions, imported before the command line is read: detectors, sinks and
backends that register themselves (``@register_detector``, ``@register_sink``, ...).

Two ways to name them, both read by ``affedge`` at start-up (the Python API needs neither: an
app imports its module before it makes a Recognizer):

* ``AFFEDGE_PLUGINS=mypkg.detectors,mypkg.sinks``: modules to import, comma-separated;
* a package's entry point in the group ``affedge.plugins`` (its ``pyproject.toml``:
  ``[project.entry-points."affedge.plugins"] name = "mypkg.affedge_plugin"``), imported when
  that package is installed.

Then ``affedge run --detector NAME``, ``--out SCHEME://...``, serve's config and ``--help``'s
choices include them. A module that cannot be imported stops the command with its reason.
"""
from __future__ import annotations

import importlib
import os

ENV = "AFFEDGE_PLUGINS"
GROUP = "affedge.plugins"


def load_plugins(environ=None) -> list[str]:
    """Import every plugin module; returns their names. ImportError (one line) naming the
    module and where it was asked for when one fails."""
    environ = os.environ if environ is None else environ
    wanted = [(m.strip(), ENV) for m in environ.get(ENV, "").split(",") if m.strip()]
    try:
        from importlib.metadata import entry_points

        wanted += [(ep.value.split(":", 1)[0], f"entry point {ep.name!r} ({GROUP})")
                   for ep in entry_points(group=GROUP)]
    except Exception:  # noqa: BLE001, S110  (a broken distribution's metadata: env plugins only)
        pass
    loaded = []
    for module, where in wanted:
        try:
            importlib.import_module(module)
        except Exception as exc:  # noqa: BLE001  (reported as the plugin's failure)
            raise ImportError(f"plugin {module!r} ({where}) failed to import: "
                              f"{type(exc).__name__}: {exc}") from None
        loaded.append(module)
    return loaded
