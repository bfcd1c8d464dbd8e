"""Plugin modules the tests load through TURNOUT_PLUGIN_MODULES."""
