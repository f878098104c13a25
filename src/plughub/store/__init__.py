"""The daemon's store: tenants, API keys, installations, encrypted credentials, plugin storage,
install tasks and the invocation audit log, on SQLAlchemy 2 (a SQLite file by default, any
PostgreSQL URL for several replicas) with Alembic migrations.

```python
store = Store("sqlite:////var/lib/plughub/store.db")
store.migrate()
store.create_tenant("acme")
acme = store.tenant("acme")                     # every query of this view is acme's only
key_id, token = acme.create_key("admin", "ops")  # the token is shown once
info = store.authenticate(token)                 # KeyInfo(tenant_id="acme", role="admin", ...)
```

See ``docs/operators/store.md``.
"""

from ._crypto import KEY_ENV, KEY_FILE_ENV, Keyring, generate_key
from ._kv import PluginStorage
from ._models import ROLES, TASK_STATUSES
from ._redact import REDACTED, is_secret_name, redact
from ._store import DEFAULT_KV_QUOTA, Store, default_url
from ._tenant import TenantStore
from ._types import (
    AuditRecord,
    CredentialInfo,
    InstallationInfo,
    KeyInfo,
    NewKey,
    Role,
    TaskInfo,
    TenantInfo,
)

__all__ = [
    "DEFAULT_KV_QUOTA",
    "KEY_ENV",
    "KEY_FILE_ENV",
    "REDACTED",
    "ROLES",
    "TASK_STATUSES",
    "AuditRecord",
    "CredentialInfo",
    "InstallationInfo",
    "KeyInfo",
    "Keyring",
    "NewKey",
    "PluginStorage",
    "Role",
    "Store",
    "TaskInfo",
    "TenantInfo",
    "TenantStore",
    "default_url",
    "generate_key",
    "is_secret_name",
    "redact",
]
