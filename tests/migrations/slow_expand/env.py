"""The demo service's Alembic environment, reused by this test history."""

import runpy
from pathlib import Path

runpy.run_path(str(Path(__file__).resolve().parents[3] / "examples" / "demo_app" / "migrations" / "env.py"))
