"""A metrics provider that writes a line to $TURNOUT_COUNT_FILE each time it is built, validated or checks
series: it tells a test how often a run resolves its metrics source (once, whoever started the run)."""

import os

import turnout
from turnout.interfaces import Registration
from turnout.plugins.scrape import ScrapeConfig, ScrapeProvider


def _count(what: str) -> None:
    with open(os.environ["TURNOUT_COUNT_FILE"], "a") as f:
        f.write(f"{what} pid={os.getpid()}\n")


class CountingProvider(ScrapeProvider):
    """The scrape provider, counted."""

    def __init__(self, config, environment):
        _count("built")
        super().__init__(config, environment)

    def validate(self) -> None:
        _count("validated")
        super().validate()

    def check_series(self, slot: str, endpoints: list[str], fresh: bool = False) -> None:
        _count(f"check_series {'new' if fresh else 'live'}")
        super().check_series(slot, endpoints, fresh=fresh)


@turnout.hookimpl
def register_metrics_providers():
    return [Registration("counting", ScrapeConfig, CountingProvider, "scrape, counted (tests)")]
