"""The model registry: model folders (registered and shipped), their ModelVersion rows, which
model scores now, and the import of the official MARCO model.

`store` knows folders and cards (no database); `versions` the rows and the one answer to
"which model version scores now"; `import_marco` registers the official model.
"""

from marco_svc.registry.store import (
    DEFAULT_FILE,
    SHIPPED_DIR,
    ModelStoreError,
    StoredModel,
    all_models,
    default_shipped,
    find,
    models_root,
    parse_ref,
    register,
    registered,
    shipped,
)
from marco_svc.registry.versions import (
    activate,
    active_version,
    existing_database,
    resolve,
    scoring_version_id,
    upsert_version,
)

__all__ = [
    "DEFAULT_FILE",
    "SHIPPED_DIR",
    "ModelStoreError",
    "StoredModel",
    "activate",
    "active_version",
    "all_models",
    "default_shipped",
    "existing_database",
    "find",
    "models_root",
    "parse_ref",
    "register",
    "registered",
    "resolve",
    "scoring_version_id",
    "shipped",
    "upsert_version",
]
