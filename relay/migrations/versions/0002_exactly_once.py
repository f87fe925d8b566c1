"""exactly once: leases, nonces, request bodies, reservation owners, client keys bound to events

Revision ID: 0002
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('idempotency_keys', schema=None) as batch_op:
        batch_op.add_column(sa.Column('lease', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('nonce', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('request_body', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('reserved_token_id', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('reserved_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index('ix_idempotency_state', ['state'], unique=False)
    # Keys left open with a reservation were ambiguous: say so, and say whose reservation it is.
    op.execute("UPDATE idempotency_keys SET reserved_token_id = token_id, reserved_at = created_at "
               "WHERE reserved_micros > 0")
    op.execute("UPDATE idempotency_keys SET state = 'ambiguous' WHERE state = 'open' AND reserved_micros > 0")

    op.create_table('client_keys',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('scope', sa.String(length=120), nullable=False),
    sa.Column('key', sa.String(length=255), nullable=False),
    sa.Column('event_id', sa.BigInteger(), nullable=False),
    sa.Column('fingerprint', sa.String(length=80), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('scope', 'key', name='uq_client_keys_scope_key')
    )
    with op.batch_alter_table('client_keys', schema=None) as batch_op:
        batch_op.create_index('ix_client_keys_event', ['event_id'], unique=False)

    with op.batch_alter_table('ledger', schema=None) as batch_op:
        batch_op.add_column(sa.Column('client_key', sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column('recorded_at', sa.DateTime(timezone=True), nullable=True))


def downgrade():
    with op.batch_alter_table('ledger', schema=None) as batch_op:
        batch_op.drop_column('recorded_at')
        batch_op.drop_column('client_key')
    with op.batch_alter_table('client_keys', schema=None) as batch_op:
        batch_op.drop_index('ix_client_keys_event')
    op.drop_table('client_keys')
    op.execute("UPDATE idempotency_keys SET state = 'open' WHERE state = 'ambiguous'")
    with op.batch_alter_table('idempotency_keys', schema=None) as batch_op:
        batch_op.drop_index('ix_idempotency_state')
        batch_op.drop_column('reserved_at')
        batch_op.drop_column('reserved_token_id')
        batch_op.drop_column('request_body')
        batch_op.drop_column('nonce')
        batch_op.drop_column('lease')
