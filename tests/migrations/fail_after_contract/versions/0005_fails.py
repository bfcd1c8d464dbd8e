"""fails half-way

Revision ID: 0005
Revises: 0003
"""

from alembic import op

revision = "0005"
down_revision = "0003"


def upgrade() -> None:
    op.execute("CREATE TABLE audit (id integer PRIMARY KEY)")
    op.execute("INSERT INTO audit VALUES (1), (1)")


def downgrade() -> None:
    op.execute("DROP TABLE audit")
