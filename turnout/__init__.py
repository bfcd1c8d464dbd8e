"""turnout: blue-green and canary deployments with automatic rollback.

Plugin authors need only `turnout.hookimpl` and the types in `turnout.interfaces` and
`turnout.models`; see `turnout.hookspecs` for every hook.
"""

import pluggy

__all__ = ["hookimpl", "__version__"]
__version__ = "0.1.0"

#: Marks a function in a plugin module as the implementation of a hook in `turnout.hookspecs`.
hookimpl = pluggy.HookimplMarker("turnout")
