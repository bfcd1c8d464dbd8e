"""A plugin whose hook name is misspelled: start-up must refuse it."""

import turnout


@turnout.hookimpl
def register_routerz():
    return []
