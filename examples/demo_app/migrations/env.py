"""Alembic environment of the demo service: online with the connection turnout passes, offline for lint."""

from alembic import context

config = context.config


def run_offline() -> None:
    """`--sql` mode: render the SQL for the dialect in sqlalchemy.url (turnout lints it)."""
    context.configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True,
                      transaction_per_migration=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    """Apply on the connection turnout made (with lock_timeout and statement_timeout already set)."""
    connection = config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run the demo's migrations through `turnout migrate`: it supplies the connection")
    # one transaction per migration: a failure leaves a known revision, and CONCURRENTLY works
    context.configure(connection=connection, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
