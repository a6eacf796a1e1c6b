"""access and feeds: API tokens with roles, commit-ordered feed positions, scoped idempotency

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04

Scores and human scores get a feed position (`feed_seq`) claimed from `feed_counters` at
commit, so a client polling `?since=` never skips a row that committed late. Existing rows
keep their id as position. Idempotency keys of uploads become unique per token scope
(existing keys get the scope of the configured api_tokens: '').
"""

from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

FEEDS = ('scores', 'human_scores')


def upgrade() -> None:
    op.create_table(
        'api_tokens',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=128), nullable=False),
        sa.Column('role', sa.String(length=16), nullable=False),
        sa.Column('token_sha256', sa.String(length=64), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('last_used_at', sa.DateTime(), nullable=True),
        sa.Column('revoked_at', sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_api_tokens')),
        sa.UniqueConstraint('token_sha256', name=op.f('uq_api_tokens_token_sha256')),
    )
    counters = op.create_table(
        'feed_counters',
        sa.Column('name', sa.String(length=32), nullable=False),
        sa.Column('value', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('name', name=op.f('pk_feed_counters')),
    )
    bind = op.get_bind()
    for table in FEEDS:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column('feed_seq', sa.BigInteger(), nullable=True))
        bind.execute(sa.text(f'UPDATE {table} SET feed_seq = id'))
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.alter_column('feed_seq', existing_type=sa.BigInteger(), nullable=False)
            batch_op.create_unique_constraint(f'uq_{table}_feed_seq', ['feed_seq'])
        last = bind.execute(sa.text(f'SELECT coalesce(max(id), 0) FROM {table}')).scalar()
        op.bulk_insert(counters, [{'name': table, 'value': int(last)}])
    op.create_index(
        'ix_scores_model_hit_feed', 'scores', ['model_version_id', 'hit', 'feed_seq']
    )
    with op.batch_alter_table('human_scores', schema=None) as batch_op:
        batch_op.add_column(sa.Column('updated_at', sa.DateTime(), nullable=True))
    bind.execute(sa.text('UPDATE human_scores SET updated_at = created_at'))
    with op.batch_alter_table('human_scores', schema=None) as batch_op:
        batch_op.alter_column('updated_at', existing_type=sa.DateTime(), nullable=False)
    with op.batch_alter_table('uploads', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('scope', sa.String(length=80), nullable=False, server_default='')
        )
        batch_op.drop_constraint('uq_uploads_idempotency_key', type_='unique')
        batch_op.create_unique_constraint('uq_uploads_scope_key', ['scope', 'idempotency_key'])


def downgrade() -> None:
    with op.batch_alter_table('uploads', schema=None) as batch_op:
        batch_op.drop_constraint('uq_uploads_scope_key', type_='unique')
        batch_op.create_unique_constraint('uq_uploads_idempotency_key', ['idempotency_key'])
        batch_op.drop_column('scope')
    with op.batch_alter_table('human_scores', schema=None) as batch_op:
        batch_op.drop_column('updated_at')
    op.drop_index('ix_scores_model_hit_feed', table_name='scores')
    for table in FEEDS:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_constraint(f'uq_{table}_feed_seq', type_='unique')
            batch_op.drop_column('feed_seq')
    op.drop_table('feed_counters')
    op.drop_table('api_tokens')
