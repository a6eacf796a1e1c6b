"""edge images: which agent holds an edge image's file, and whether someone wants it

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05

An image an edge agent scored keeps its file on the imager PC (`edge://IMAGER/PATH`).
`edge_images` records where (kept when the file comes and the image's uri is pointed at
it), which agent holds it (the scope of the token that sent its result), when someone
asked for the file, and why the agent cannot send it. Images stored before this revision
get their row from the remembered edge results (`uploads` rows of kind "edge-result",
whose answer names the image).
"""

from datetime import UTC, datetime

from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

uploads = sa.table(
    'uploads',
    sa.column('id', sa.Integer),
    sa.column('scope', sa.String),
    sa.column('kind', sa.String),
    sa.column('response', sa.JSON),
)
images = sa.table('images', sa.column('id', sa.Integer), sa.column('uri', sa.String))


def _owners() -> list[dict]:
    """One row per edge image still on its imager PC: the first scope that sent it."""
    bind = op.get_bind()
    owners: dict[int, str] = {}
    query = sa.select(uploads.c.scope, uploads.c.response).where(uploads.c.kind == 'edge-result')
    for scope, response in bind.execute(query.order_by(uploads.c.id)):
        image_id = response.get('image_id') if isinstance(response, dict) else None
        if isinstance(image_id, int):
            owners.setdefault(image_id, scope)
    query = sa.select(images.c.id, images.c.uri).where(images.c.uri.like('edge://%'))
    remote = {image_id: uri for image_id, uri in bind.execute(query)}
    created = datetime.now(UTC).replace(tzinfo=None)
    return [
        {'image_id': image_id, 'remote_uri': remote[image_id], 'scope': scope,
         'created_at': created}
        for image_id, scope in sorted(owners.items())
        if image_id in remote
    ]


def upgrade() -> None:
    table = op.create_table(
        'edge_images',
        sa.Column('image_id', sa.Integer(), nullable=False),
        sa.Column('remote_uri', sa.String(length=2048), nullable=False),
        sa.Column('scope', sa.String(length=80), nullable=False),
        sa.Column('wanted_at', sa.DateTime(), nullable=True),
        sa.Column('offered_at', sa.DateTime(), nullable=True),
        sa.Column('unavailable', sa.Text(), nullable=True),
        sa.Column('received_at', sa.DateTime(), nullable=True),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ['image_id'],
            ['images.id'],
            name=op.f('fk_edge_images_image_id_images'),
            ondelete='CASCADE',
        ),
        sa.PrimaryKeyConstraint('image_id', name=op.f('pk_edge_images')),
    )
    op.create_index('ix_edge_images_scope_wanted', 'edge_images', ['scope', 'wanted_at'])
    rows = _owners()
    if rows:
        op.bulk_insert(table, rows)


def downgrade() -> None:
    op.drop_index('ix_edge_images_scope_wanted', table_name='edge_images')
    op.drop_table('edge_images')
