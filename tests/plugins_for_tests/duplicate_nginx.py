"""A plugin that claims the router name 'nginx' a second time."""

import turnout
from plugins.nginx import NginxConfig, NginxRouter
from turnout.interfaces import Registration


@turnout.hookimpl
def register_routers():
    return [Registration("nginx", NginxConfig, NginxRouter, "an impostor")]
