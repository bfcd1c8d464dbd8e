"""The canary chart: canary vs stable 5xx rate and p95 per measurement, as an SVG beside the report."""

from __future__ import annotations

from pathlib import Path

__all__ = ["write_canary_chart"]


def write_canary_chart(rows: list[dict], path: Path) -> Path | None:
    """Draw the measurements in `rows` (as the analysis task returns them) to `path`; None when empty."""
    rows = [r for r in rows if r.get("canary_requests") is not None]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")  # no display: render to a file
    import matplotlib.pyplot as plt

    x = list(range(1, len(rows) + 1))
    labels = [f"{r['stage']}%#{r['measurement']}" for r in rows]
    pct = lambda v: None if v is None else 100 * v  # noqa: E731
    ms = lambda v: None if v is None else 1000 * v  # noqa: E731
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 5), sharex=True)
    ax1.plot(x, [pct(r["canary_5xx_rate"]) for r in rows], "o-", color="tab:red", label="canary")
    ax1.plot(x, [pct(r["stable_5xx_rate"]) for r in rows], "s--", color="tab:blue", label="stable")
    ax1.set_ylabel("5xx rate (%)")
    ax1.legend(loc="upper left")
    ax2.plot(x, [ms(r["canary_p95_s"]) for r in rows], "o-", color="tab:red", label="canary")
    ax2.plot(x, [ms(r["stable_p95_s"]) for r in rows], "s--", color="tab:blue", label="stable")
    ax2.set_ylabel("p95 (ms)")
    ax2.set_xticks(x, labels, rotation=45, ha="right", fontsize=8)
    for i, r in enumerate(rows, 1):
        if r["outcome"] != "pass":
            for ax in (ax1, ax2):
                ax.axvline(i, color="grey", alpha=0.3)
    fig.suptitle("canary vs stable, per measurement (grey: not a pass)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format=path.suffix.lstrip(".") or "svg")
    plt.close(fig)
    return path
