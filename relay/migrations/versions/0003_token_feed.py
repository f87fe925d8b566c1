"""token feed scope: which deposits a ledger token's feed shows

Revision ID: 0003
Revises: 0002
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('tokens', schema=None) as batch_op:
        batch_op.add_column(sa.Column('feed', sa.String(length=8), nullable=True))
    # Ledger tokens created before this migration saw every workflow's deposits, and a Zapier "New Deposit"
    # trigger may rely on it: they keep that, now spelled out (and shown by `tokens show`). New tokens see their own.
    op.execute("UPDATE tokens SET feed = 'all' WHERE CAST(operations AS TEXT) LIKE '%ledger%'")


def downgrade():
    with op.batch_alter_table('tokens', schema=None) as batch_op:
        batch_op.drop_column('feed')
