"""prompt presets: a library prompt with a user template around the chat's input

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22 07:25:04.482519
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('system_prompts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('user_template', sa.Text(), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('system_prompts', schema=None) as batch_op:
        batch_op.drop_column('user_template')

