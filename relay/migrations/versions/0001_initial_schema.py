"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-26 10:35:30.977255
"""
from alembic import op
import sqlalchemy as sa


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('idempotency_keys',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('scope', sa.String(length=120), nullable=False),
    sa.Column('key', sa.String(length=255), nullable=False),
    sa.Column('fingerprint', sa.String(length=80), nullable=False),
    sa.Column('token_id', sa.String(length=16), nullable=False),
    sa.Column('operation', sa.String(length=16), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('locked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('generation', sa.Integer(), nullable=False),
    sa.Column('reserved_micros', sa.BigInteger(), nullable=False),
    sa.Column('reserved_periods', sa.JSON(), nullable=False),
    sa.Column('response_status', sa.Integer(), nullable=True),
    sa.Column('response_body', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('scope', 'key', name='uq_idempotency_scope_key')
    )
    with op.batch_alter_table('idempotency_keys', schema=None) as batch_op:
        batch_op.create_index('ix_idempotency_created', ['created_at'], unique=False)

    op.create_table('ledger',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('token_id', sa.String(length=16), nullable=False),
    sa.Column('token_label', sa.String(length=200), nullable=False),
    sa.Column('operation', sa.String(length=16), nullable=False),
    sa.Column('user', sa.String(length=128), nullable=True),
    sa.Column('amount', sa.String(length=32), nullable=True),
    sa.Column('metadata', sa.JSON(), nullable=True),
    sa.Column('idempotency_key', sa.String(length=255), nullable=True),
    sa.Column('upstream_key', sa.String(length=80), nullable=True),
    sa.Column('upstream_status', sa.Integer(), nullable=True),
    sa.Column('latency_ms', sa.Integer(), nullable=True),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('balance_formatted', sa.String(length=64), nullable=True),
    sa.Column('request_id', sa.String(length=64), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('ledger', schema=None) as batch_op:
        batch_op.create_index('ix_ledger_created', ['created_at'], unique=False)
        batch_op.create_index('ix_ledger_outcome_id', ['outcome', 'id'], unique=False)
        batch_op.create_index('ix_ledger_user', ['user'], unique=False)

    op.create_table('tokens',
    sa.Column('id', sa.String(length=16), nullable=False),
    sa.Column('secret_hash', sa.String(length=64), nullable=False),
    sa.Column('label', sa.String(length=200), nullable=False),
    sa.Column('notes', sa.Text(), nullable=True),
    sa.Column('operations', sa.JSON(), nullable=False),
    sa.Column('max_amount_micros', sa.BigInteger(), nullable=True),
    sa.Column('daily_cap_micros', sa.BigInteger(), nullable=True),
    sa.Column('monthly_cap_micros', sa.BigInteger(), nullable=True),
    sa.Column('user_pattern', sa.String(length=200), nullable=True),
    sa.Column('required_metadata', sa.JSON(), nullable=False),
    sa.Column('rate_limit', sa.String(length=50), nullable=True),
    sa.Column('dedupe_on', sa.JSON(), nullable=False),
    sa.Column('namespace', sa.String(length=100), nullable=True),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_used_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('disabled', sa.Boolean(), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('usage',
    sa.Column('token_id', sa.String(length=16), nullable=False),
    sa.Column('period', sa.String(length=16), nullable=False),
    sa.Column('settled_micros', sa.BigInteger(), nullable=False),
    sa.Column('reserved_micros', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('token_id', 'period')
    )


def downgrade():
    op.drop_table('usage')
    op.drop_table('tokens')
    with op.batch_alter_table('ledger', schema=None) as batch_op:
        batch_op.drop_index('ix_ledger_user')
        batch_op.drop_index('ix_ledger_outcome_id')
        batch_op.drop_index('ix_ledger_created')

    op.drop_table('ledger')
    with op.batch_alter_table('idempotency_keys', schema=None) as batch_op:
        batch_op.drop_index('ix_idempotency_created')

    op.drop_table('idempotency_keys')
