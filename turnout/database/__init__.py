"""The application's database: its URL, its Alembic project, lint, backups with proof, and applying migrations.

Plain Python (no Prefect); `flows/migrate.py` composes these into the migrate flow.
"""
