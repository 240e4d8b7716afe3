"""gateway catalog: a model alias served by one or more deployments (local or a provider's upstream model)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 06:54:13.937680
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('model_deployments',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('model_id', sa.Integer(), nullable=False),
    sa.Column('provider_id', sa.Integer(), nullable=True),
    sa.Column('upstream_model', sa.String(length=200), nullable=True),
    sa.Column('context_window', sa.Integer(), nullable=True),
    sa.Column('defaults', sa.JSON(), nullable=False),
    sa.Column('priority', sa.Integer(), nullable=False),
    sa.Column('is_active', sa.Boolean(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['model_id'], ['models.id'], name=op.f('fk_model_deployments_model_id_models'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['provider_id'], ['providers.id'], name=op.f('fk_model_deployments_provider_id_providers'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_model_deployments'))
    )
    with op.batch_alter_table('model_deployments', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_model_deployments_model_id'), ['model_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_model_deployments_provider_id'), ['provider_id'], unique=False)

    # An alias row that pointed at one backend keeps it, as its one deployment.
    op.execute("INSERT INTO model_deployments (model_id, provider_id, upstream_model, context_window, defaults, "
               "priority, is_active, updated_at, created_at) SELECT id, provider_id, upstream_model, context_window, "
               "defaults, 0, is_active, updated_at, created_at FROM models")
    with op.batch_alter_table('models', schema=None) as batch_op:
        batch_op.add_column(sa.Column('description', sa.String(length=500), nullable=True))
        batch_op.add_column(sa.Column('allowed_users', sa.JSON(), nullable=True))
        batch_op.drop_index(batch_op.f('ix_models_provider_id'))
        batch_op.drop_constraint(batch_op.f('fk_models_provider_id_providers'), type_='foreignkey')
        batch_op.drop_column('local_path')
        batch_op.drop_column('upstream_model')
        batch_op.drop_column('provider_id')

    with op.batch_alter_table('providers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('upstream_models', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('runner_id', sa.String(length=64), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('providers', schema=None) as batch_op:
        batch_op.drop_column('runner_id')
        batch_op.drop_column('upstream_models')

    with op.batch_alter_table('models', schema=None) as batch_op:
        batch_op.add_column(sa.Column('provider_id', sa.INTEGER(), nullable=True))
        batch_op.add_column(sa.Column('upstream_model', sa.VARCHAR(length=200), nullable=True))
        batch_op.add_column(sa.Column('local_path', sa.VARCHAR(length=1000), nullable=True))
        batch_op.create_foreign_key(batch_op.f('fk_models_provider_id_providers'), 'providers', ['provider_id'], ['id'], ondelete='CASCADE')
        batch_op.create_index(batch_op.f('ix_models_provider_id'), ['provider_id'], unique=False)
        batch_op.drop_column('allowed_users')
        batch_op.drop_column('description')

    with op.batch_alter_table('model_deployments', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_model_deployments_provider_id'))
        batch_op.drop_index(batch_op.f('ix_model_deployments_model_id'))

    op.drop_table('model_deployments')
