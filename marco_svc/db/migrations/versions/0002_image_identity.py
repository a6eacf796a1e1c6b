"""image identity: unique versions per drop slot; (uri, sha256) unique only for unplaced failures

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03

Before this, an image was unique by (uri, sha256), so identical bytes uploaded for two
drop slots (uploads share a content-addressed file) were one image, and versions were
max+1 without a constraint, so concurrent writers made duplicates. Duplicated versions
are renumbered 1..N per slot in (version, id) order before the constraint is added.
"""

from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

images = sa.table(
    'images',
    sa.column('id', sa.Integer),
    sa.column('inspection_id', sa.Integer),
    sa.column('drop_id', sa.Integer),
    sa.column('imaging_mode', sa.String),
    sa.column('version', sa.Integer),
)
SLOT = (images.c.inspection_id, images.c.drop_id, images.c.imaging_mode)


def _renumber_duplicate_versions() -> None:
    bind = op.get_bind()
    crowded = (
        sa.select(*SLOT)
        .where(images.c.drop_id.is_not(None))
        .group_by(*SLOT)
        .having(sa.func.count() > sa.func.count(sa.distinct(images.c.version)))
    )
    slots = bind.execute(crowded).all()
    for inspection_id, drop_id, mode in slots:
        rows = bind.execute(
            sa.select(images.c.id, images.c.version)
            .where(
                images.c.inspection_id == inspection_id,
                images.c.drop_id == drop_id,
                images.c.imaging_mode == mode,
            )
            .order_by(images.c.version, images.c.id)
        ).all()
        for number, (image_id, version) in enumerate(rows, start=1):
            if version != number:
                bind.execute(
                    sa.update(images).where(images.c.id == image_id).values(version=number)
                )


def upgrade() -> None:
    _renumber_duplicate_versions()
    with op.batch_alter_table('images', schema=None) as batch_op:
        batch_op.drop_constraint('uq_images_uri', type_='unique')
        batch_op.drop_index('ix_images_slot')
        batch_op.create_unique_constraint(
            'uq_images_slot_version', ['inspection_id', 'drop_id', 'imaging_mode', 'version']
        )
        batch_op.create_index('ix_images_uri', ['uri'], unique=False)
        batch_op.create_index(
            'uq_images_unplaced_uri_sha256',
            ['uri', 'sha256'],
            unique=True,
            sqlite_where=sa.text('drop_id IS NULL'),
            postgresql_where=sa.text('drop_id IS NULL'),
        )


def downgrade() -> None:
    # (uri, sha256) was unique for every image before; refuse rather than delete images.
    shared = op.get_bind().execute(sa.text(
        'SELECT count(*) FROM (SELECT uri, sha256 FROM images GROUP BY uri, sha256 '
        'HAVING count(*) > 1) AS pairs'
    )).scalar()
    if shared:
        raise RuntimeError(
            f'cannot downgrade below 0002: {shared} files are stored as images of several drop '
            'slots (identical bytes), which revision 0001 cannot hold; delete those images first'
        )
    with op.batch_alter_table('images', schema=None) as batch_op:
        batch_op.drop_index('uq_images_unplaced_uri_sha256')
        batch_op.drop_index('ix_images_uri')
        batch_op.drop_constraint('uq_images_slot_version', type_='unique')
        batch_op.create_index(
            'ix_images_slot', ['inspection_id', 'drop_id', 'imaging_mode', 'version'], unique=False
        )
        batch_op.create_unique_constraint('uq_images_uri', ['uri', 'sha256'])
