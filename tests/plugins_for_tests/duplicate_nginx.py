"""A plugin that claims the router name 'nginx' a second time."""

import turnout
from turnout.interfaces import Registration
from turnout.plugins.nginx import NginxConfig, NginxRouter


@turnout.hookimpl
def register_routers():
    return [Registration("nginx", NginxConfig, NginxRouter, "an impostor")]
