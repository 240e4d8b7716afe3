"""streams, rate windows, user limits

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 03:59:55.828615
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('rate_windows',
    sa.Column('subject', sa.String(length=40), nullable=False),
    sa.Column('minute', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('requests', sa.Integer(), nullable=False),
    sa.Column('tokens', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('subject', 'minute', name=op.f('pk_rate_windows'))
    )
    op.create_table('chat_streams',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('conversation_id', sa.Uuid(), nullable=True),
    sa.Column('model', sa.String(length=200), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('cancel_requested', sa.Boolean(), nullable=False),
    sa.Column('follower_seen_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['conversation_id'], ['conversations.id'], name=op.f('fk_chat_streams_conversation_id_conversations'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_chat_streams_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_chat_streams'))
    )
    with op.batch_alter_table('chat_streams', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_chat_streams_expires_at'), ['expires_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_chat_streams_user_id'), ['user_id'], unique=False)

    op.create_table('chat_stream_events',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('stream_id', sa.Uuid(), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('event', sa.String(length=16), nullable=False),
    sa.Column('data', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['stream_id'], ['chat_streams.id'], name=op.f('fk_chat_stream_events_stream_id_chat_streams'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_chat_stream_events')),
    sa.UniqueConstraint('stream_id', 'seq', name=op.f('uq_chat_stream_events_stream_id'))
    )
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('requests_per_minute', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('tokens_per_minute', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('monthly_token_quota', sa.Integer(), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('monthly_token_quota')
        batch_op.drop_column('tokens_per_minute')
        batch_op.drop_column('requests_per_minute')

    op.drop_table('chat_stream_events')
    with op.batch_alter_table('chat_streams', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_chat_streams_user_id'))
        batch_op.drop_index(batch_op.f('ix_chat_streams_expires_at'))

    op.drop_table('chat_streams')
    op.drop_table('rate_windows')
