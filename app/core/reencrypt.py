"""Key rotation: re-encrypt every encrypted column with the first configured key."""

from __future__ import annotations

from sqlalchemy import Text, select, type_coerce, update
from sqlalchemy.orm import Session

from app.core.crypto import rotate_secret
from app.core.db import Base, EncryptedString


def reencrypt_all(session: Session) -> int:
    import app.models  # noqa: F401  (every table must be known)

    count = 0
    for table in Base.metadata.sorted_tables:
        pk = next(iter(table.primary_key.columns))
        for column in table.columns:
            if not isinstance(column.type, EncryptedString):
                continue
            raw = type_coerce(column, Text)
            rows = session.execute(select(pk, raw).where(column.is_not(None))).all()
            for key, ciphertext in rows:
                session.execute(
                    update(table)
                    .where(pk == key)
                    .values({column.name: type_coerce(rotate_secret(ciphertext), Text)})
                )
                count += 1
    return count
