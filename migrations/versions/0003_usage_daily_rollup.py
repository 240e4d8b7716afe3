"""usage daily rollup

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 04:41:45.022235
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('usage_daily',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.Column('api_key_id', sa.Integer(), nullable=True),
    sa.Column('model', sa.String(length=200), nullable=False),
    sa.Column('backend', sa.String(length=100), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('requests', sa.BigInteger(), nullable=False),
    sa.Column('prompt_tokens', sa.BigInteger(), nullable=False),
    sa.Column('completion_tokens', sa.BigInteger(), nullable=False),
    sa.Column('ttft_ms_sum', sa.Float(), nullable=False),
    sa.Column('ttft_count', sa.BigInteger(), nullable=False),
    sa.Column('latency_ms_sum', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['api_key_id'], ['api_keys.id'], name=op.f('fk_usage_daily_api_key_id_api_keys'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_usage_daily_user_id_users'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_usage_daily'))
    )
    with op.batch_alter_table('usage_daily', schema=None) as batch_op:
        batch_op.create_index('ix_usage_daily_day', ['day', 'model', 'user_id', 'api_key_id', 'backend', 'status'], unique=False)
        batch_op.create_index('ix_usage_daily_user_day', ['user_id', 'day'], unique=False)
    # Usage recorded before this revision joins the rollup.
    day = ("(created_at AT TIME ZONE 'UTC')::date" if op.get_bind().dialect.name == "postgresql"
           else "date(created_at)")
    op.execute(
        "INSERT INTO usage_daily (day, user_id, api_key_id, model, backend, status, requests, prompt_tokens, "  # noqa: S608 (the only variable part is one of two fixed expressions)
        "completion_tokens, ttft_ms_sum, ttft_count, latency_ms_sum) "
        f"SELECT {day}, user_id, api_key_id, model, backend, status, count(*), sum(prompt_tokens), "
        "sum(completion_tokens), coalesce(sum(ttft_ms), 0), count(ttft_ms), coalesce(sum(latency_ms), 0) "
        f"FROM usage_logs GROUP BY {day}, user_id, api_key_id, model, backend, status"
    )


def downgrade() -> None:
    with op.batch_alter_table('usage_daily', schema=None) as batch_op:
        batch_op.drop_index('ix_usage_daily_user_day')
        batch_op.drop_index('ix_usage_daily_day')

    op.drop_table('usage_daily')
