"""bulk batches: files of deposits or charges sent over HTTP, run in the background (issue 18)

Revision ID: 0005
Revises: 0004
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'bulk_batches',
        sa.Column('id', sa.String(length=32), nullable=False),
        sa.Column('token_id', sa.String(length=16), nullable=False),
        sa.Column('operation', sa.String(length=16), nullable=False),
        sa.Column('batch_key', sa.String(length=120), nullable=False),
        sa.Column('content', sa.Text(), nullable=False),
        sa.Column('skip_invalid', sa.Boolean(), nullable=False),
        sa.Column('total_rows', sa.Integer(), nullable=False),
        sa.Column('state', sa.String(length=16), nullable=False),
        sa.Column('lease', sa.Integer(), nullable=False),
        sa.Column('lease_owner', sa.String(length=80), nullable=True),
        sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True),
        sa.Column('progress', sa.JSON(), nullable=True),
        sa.Column('report', sa.Text(), nullable=True),
        sa.Column('error', sa.Text(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('token_id', 'operation', 'batch_key', name='uq_bulk_batches_token_key'),
    )
    op.create_index('ix_bulk_batches_state', 'bulk_batches', ['state', 'lease_until'], unique=False)


def downgrade():
    op.drop_index('ix_bulk_batches_state', table_name='bulk_batches')
    op.drop_table('bulk_batches')
