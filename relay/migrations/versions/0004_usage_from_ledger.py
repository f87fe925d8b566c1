"""usage of tokens without caps from the ledger: amount_micros and two partial indexes (issue 15)

A token without caps no longer updates a shared usage row on every call (one busy token serialised every
process on it, on PostgreSQL): its usage is the indexed sum of its applied ledger amounts plus what its
calls in flight or ambiguous still hold.

Revision ID: 0004
Revises: 0003
"""
from decimal import Decimal

from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

APPLIED = ('credited', 'charged')


def upgrade():
    with op.batch_alter_table('ledger', schema=None) as batch_op:
        batch_op.add_column(sa.Column('amount_micros', sa.BigInteger(), nullable=True))
    # Rows written before: the amount text, exactly (a decimal string of at most 6 fraction digits).
    connection = op.get_bind()
    ledger = sa.table('ledger', sa.column('id', sa.BigInteger), sa.column('amount', sa.String),
                      sa.column('outcome', sa.String), sa.column('amount_micros', sa.BigInteger))
    rows = connection.execute(sa.select(ledger.c.id, ledger.c.amount)
                              .where(ledger.c.outcome.in_(APPLIED), ledger.c.amount.is_not(None))).all()
    updates = []
    for row in rows:
        try:
            updates.append({"row_id": row.id, "micros": int(Decimal(row.amount) * 1_000_000)})
        except ArithmeticError:
            continue
    if updates:
        connection.execute(ledger.update().where(ledger.c.id == sa.bindparam("row_id"))
                           .values(amount_micros=sa.bindparam("micros")), updates)
    applied = sa.text("outcome IN ('credited', 'charged')")
    op.create_index('ix_ledger_token_applied', 'ledger', ['token_id', 'created_at'], unique=False,
                    postgresql_where=applied, sqlite_where=applied)
    reserved = sa.text("reserved_micros > 0")
    op.create_index('ix_idempotency_reserved', 'idempotency_keys', ['reserved_token_id', 'reserved_at'], unique=False,
                    postgresql_where=reserved, sqlite_where=reserved)


def downgrade():
    op.drop_index('ix_idempotency_reserved', table_name='idempotency_keys')
    op.drop_index('ix_ledger_token_applied', table_name='ledger')
    with op.batch_alter_table('ledger', schema=None) as batch_op:
        batch_op.drop_column('amount_micros')
