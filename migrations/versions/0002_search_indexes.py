"""Search index tables, one per parameter type (docs/architecture.md §4)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('search_composite',
    sa.Column('res_type', sa.String(length=64), nullable=False),
    sa.Column('res_id', sa.String(length=64), nullable=False),
    sa.Column('param', sa.String(length=100), nullable=False),
    sa.Column('c1_system', sa.String(length=255), nullable=True),
    sa.Column('c1_code', sa.String(length=255), nullable=True),
    sa.Column('c2_system', sa.String(length=255), nullable=True),
    sa.Column('c2_code', sa.String(length=255), nullable=True),
    sa.Column('c2_value', sa.Float(precision=53), nullable=True),
    sa.Column('c2_low', sa.DateTime(timezone=True), nullable=True),
    sa.Column('c2_high', sa.DateTime(timezone=True), nullable=True),
    sa.Column('compartment_patient_id', sa.String(length=64), nullable=True)
    )
    op.create_index('ix_search_composite_code', 'search_composite', ['res_type', 'param', 'c1_code'])
    op.create_index('ix_search_composite_resource', 'search_composite', ['res_type', 'res_id'])

    op.create_table('search_date',
    sa.Column('res_type', sa.String(length=64), nullable=False),
    sa.Column('res_id', sa.String(length=64), nullable=False),
    sa.Column('param', sa.String(length=100), nullable=False),
    sa.Column('low', sa.DateTime(timezone=True), nullable=False),
    sa.Column('high', sa.DateTime(timezone=True), nullable=False),
    sa.Column('compartment_patient_id', sa.String(length=64), nullable=True)
    )
    op.create_index('ix_search_date_range', 'search_date', ['res_type', 'param', 'low', 'high'])
    op.create_index('ix_search_date_resource', 'search_date', ['res_type', 'res_id'])

    op.create_table('search_number',
    sa.Column('res_type', sa.String(length=64), nullable=False),
    sa.Column('res_id', sa.String(length=64), nullable=False),
    sa.Column('param', sa.String(length=100), nullable=False),
    sa.Column('value', sa.Float(precision=53), nullable=False),
    sa.Column('compartment_patient_id', sa.String(length=64), nullable=True)
    )
    op.create_index('ix_search_number_resource', 'search_number', ['res_type', 'res_id'])
    op.create_index('ix_search_number_value', 'search_number', ['res_type', 'param', 'value'])

    op.create_table('search_quantity',
    sa.Column('res_type', sa.String(length=64), nullable=False),
    sa.Column('res_id', sa.String(length=64), nullable=False),
    sa.Column('param', sa.String(length=100), nullable=False),
    sa.Column('value', sa.Float(precision=53), nullable=False),
    sa.Column('system', sa.String(length=255), nullable=True),
    sa.Column('code', sa.String(length=255), nullable=True),
    sa.Column('compartment_patient_id', sa.String(length=64), nullable=True)
    )
    op.create_index('ix_search_quantity_resource', 'search_quantity', ['res_type', 'res_id'])
    op.create_index('ix_search_quantity_value', 'search_quantity', ['res_type', 'param', 'code', 'value'])

    op.create_table('search_reference',
    sa.Column('res_type', sa.String(length=64), nullable=False),
    sa.Column('res_id', sa.String(length=64), nullable=False),
    sa.Column('param', sa.String(length=100), nullable=False),
    sa.Column('target_type', sa.String(length=64), nullable=True),
    sa.Column('target_id', sa.String(length=64), nullable=True),
    sa.Column('url', sa.String(length=512), nullable=True),
    sa.Column('identifier_system', sa.String(length=255), nullable=True),
    sa.Column('identifier_value', sa.String(length=255), nullable=True),
    sa.Column('compartment_patient_id', sa.String(length=64), nullable=True)
    )
    op.create_index(
        'ix_search_reference_identifier', 'search_reference', ['res_type', 'param', 'identifier_value'],
        postgresql_where=sa.text('identifier_value IS NOT NULL'), sqlite_where=sa.text('identifier_value IS NOT NULL'),
    )
    op.create_index('ix_search_reference_resource', 'search_reference', ['res_type', 'res_id'])
    op.create_index(
        'ix_search_reference_target', 'search_reference', ['target_type', 'target_id', 'res_type', 'param'],
        postgresql_where=sa.text('target_id IS NOT NULL'), sqlite_where=sa.text('target_id IS NOT NULL'),
    )
    op.create_index(
        'ix_search_reference_url', 'search_reference', ['res_type', 'param', 'url'],
        postgresql_where=sa.text('url IS NOT NULL'), sqlite_where=sa.text('url IS NOT NULL'),
    )

    op.create_table('search_string',
    sa.Column('res_type', sa.String(length=64), nullable=False),
    sa.Column('res_id', sa.String(length=64), nullable=False),
    sa.Column('param', sa.String(length=100), nullable=False),
    sa.Column('value_norm', sa.String(length=255), nullable=False),
    sa.Column('value_exact', sa.String(length=255), nullable=False),
    sa.Column('compartment_patient_id', sa.String(length=64), nullable=True)
    )
    op.create_index('ix_search_string_resource', 'search_string', ['res_type', 'res_id'])
    op.create_index(
        "ix_search_string_value",
        "search_string",
        ["res_type", "param", "value_norm"],
        postgresql_ops={"value_norm": "varchar_pattern_ops"},
    )

    op.create_table('search_token',
    sa.Column('res_type', sa.String(length=64), nullable=False),
    sa.Column('res_id', sa.String(length=64), nullable=False),
    sa.Column('param', sa.String(length=100), nullable=False),
    sa.Column('system', sa.String(length=255), nullable=True),
    sa.Column('code', sa.String(length=255), nullable=True),
    sa.Column('text_norm', sa.String(length=255), nullable=True),
    sa.Column('compartment_patient_id', sa.String(length=64), nullable=True)
    )
    op.create_index('ix_search_token_code', 'search_token', ['res_type', 'param', 'code', 'system'])
    op.create_index('ix_search_token_resource', 'search_token', ['res_type', 'res_id'])

    op.create_table('search_uri',
    sa.Column('res_type', sa.String(length=64), nullable=False),
    sa.Column('res_id', sa.String(length=64), nullable=False),
    sa.Column('param', sa.String(length=100), nullable=False),
    sa.Column('value', sa.String(length=512), nullable=False),
    sa.Column('compartment_patient_id', sa.String(length=64), nullable=True)
    )
    op.create_index('ix_search_uri_resource', 'search_uri', ['res_type', 'res_id'])
    op.create_index('ix_search_uri_value', 'search_uri', ['res_type', 'param', 'value'])



def downgrade() -> None:
    op.drop_index('ix_search_uri_value', table_name='search_uri')
    op.drop_index('ix_search_uri_resource', table_name='search_uri')

    op.drop_table('search_uri')
    op.drop_index('ix_search_token_resource', table_name='search_token')
    op.drop_index('ix_search_token_code', table_name='search_token')

    op.drop_table('search_token')
    op.drop_index('ix_search_string_value', table_name='search_string')
    op.drop_index('ix_search_string_resource', table_name='search_string')

    op.drop_table('search_string')
    op.drop_index('ix_search_reference_url', table_name='search_reference')
    op.drop_index('ix_search_reference_target', table_name='search_reference')
    op.drop_index('ix_search_reference_resource', table_name='search_reference')
    op.drop_index('ix_search_reference_identifier', table_name='search_reference')

    op.drop_table('search_reference')
    op.drop_index('ix_search_quantity_value', table_name='search_quantity')
    op.drop_index('ix_search_quantity_resource', table_name='search_quantity')

    op.drop_table('search_quantity')
    op.drop_index('ix_search_number_value', table_name='search_number')
    op.drop_index('ix_search_number_resource', table_name='search_number')

    op.drop_table('search_number')
    op.drop_index('ix_search_date_resource', table_name='search_date')
    op.drop_index('ix_search_date_range', table_name='search_date')

    op.drop_table('search_date')
    op.drop_index('ix_search_composite_resource', table_name='search_composite')
    op.drop_index('ix_search_composite_code', table_name='search_composite')

    op.drop_table('search_composite')
