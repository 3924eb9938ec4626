"""Rules for access tokens: authentication, creation (token shown once) and revocation."""

from __future__ import annotations

import time
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from app.audit.service import record_audit
from app.auth import repository
from app.auth.models import AccessToken, Role
from app.auth.principal import Principal
from app.auth.tokens import display_prefix, generate_token, hash_token
from app.core.db import utcnow
from app.core.errors import BadRequestError, ForbiddenError, NotFoundError, UnauthorizedError

API_TOKEN_PREFIX = "cpt_"  # noqa: S105  (a prefix, not a secret)
# Writing last_used_at on every request would turn reads into writes; once a minute is enough.
LAST_USED_GRANULARITY = timedelta(minutes=1)


# Recently authenticated tokens, so a burst of requests with one token costs one lookup. An
# entry lives one second: a revocation through another replica takes effect within a second
# everywhere (like agent tokens), and at once on the replica that revoked it.
RECENT_TTL_SECONDS = 1.0
_RECENT_MAX = 10_000
_recent: dict[str, tuple[float, Principal, datetime | None]] = {}


def forget_recent_tokens() -> None:
    _recent.clear()


def forget_token(token_hash: str) -> None:
    """A revoked token: the next use looks it up again."""
    _recent.pop(token_hash, None)


async def authenticate(session: AsyncSession, raw: str) -> Principal:
    if not raw.startswith(API_TOKEN_PREFIX):
        raise UnauthorizedError("The token is not a clusterport API token.", code="invalid_token")
    token_hash = hash_token(raw)
    cached = _recent.get(token_hash)
    if cached is not None:
        seen_at, principal, expires_at = cached
        if time.monotonic() - seen_at < RECENT_TTL_SECONDS and (
            expires_at is None or expires_at > utcnow()
        ):
            return principal
        del _recent[token_hash]
    token = await repository.get_by_hash(session, token_hash)
    if token is None:
        raise UnauthorizedError("The token is not valid.", code="invalid_token")
    now = utcnow()
    if token.revoked_at is not None:
        raise UnauthorizedError("The token has been revoked.", code="token_revoked")
    if token.expires_at is not None and token.expires_at <= now:
        raise UnauthorizedError("The token has expired.", code="token_expired")
    if token.last_used_at is None or now - token.last_used_at > LAST_USED_GRANULARITY:
        await repository.touch(session, token.id, now)
    principal = Principal(token.id, token.name, Role(token.role), token.project_id)
    if len(_recent) >= _RECENT_MAX:
        _recent.clear()
    _recent[token_hash] = (time.monotonic(), principal, token.expires_at)
    return principal


def _check_expiry(expires_at: datetime | None) -> None:
    if expires_at is not None and expires_at <= utcnow():
        raise BadRequestError("expires_at must be in the future.", code="invalid_expiry")


def new_token(
    *, name: str, role: Role, project_id: int | None, expires_at: datetime | None = None
) -> tuple[AccessToken, str]:
    raw = generate_token(API_TOKEN_PREFIX)
    token = AccessToken(
        name=name,
        role=role.value,
        project_id=project_id,
        token_hash=hash_token(raw),
        token_prefix=display_prefix(raw),
        expires_at=expires_at,
    )
    return token, raw


async def create_token(
    session: AsyncSession,
    principal: Principal,
    *,
    project_id: int | None,
    name: str,
    role: Role,
    expires_at: datetime | None,
) -> tuple[AccessToken, str]:
    _check_expiry(expires_at)
    if project_id is None and role is not Role.admin:
        raise BadRequestError("Instance tokens have the admin role.", code="invalid_role")
    if project_id is not None and role is Role.admin:
        raise BadRequestError("Project tokens cannot have the admin role.", code="invalid_role")
    if role.rank > principal.role.rank:
        raise ForbiddenError(
            "A token cannot grant more than its creator has.", code="role_too_high"
        )
    token, raw = new_token(name=name, role=role, project_id=project_id, expires_at=expires_at)
    session.add(token)
    await session.flush()
    record_audit(
        session,
        principal,
        "token.create",
        "access_token",
        token.id,
        project_id=project_id,
        details={"name": name, "role": role.value},
    )
    return token, raw


async def revoke_token(
    session: AsyncSession, principal: Principal, *, project_id: int | None, token_id: int
) -> None:
    token = await repository.get(session, token_id, project_id)
    if token is None:
        raise NotFoundError("The token does not exist.", code="token_not_found")
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        forget_recent_tokens()
        record_audit(
            session, principal, "token.revoke", "access_token", token.id, project_id=project_id
        )


def create_bootstrap_admin_token(session: Session, raw: str | None) -> str:
    """Create an admin token on an empty database; returns the raw token."""
    if raw is None:
        token, raw = new_token(name="bootstrap", role=Role.admin, project_id=None)
    else:
        if not raw.startswith(API_TOKEN_PREFIX) or len(raw) < len(API_TOKEN_PREFIX) + 20:
            raise ValueError(
                f"CLUSTERPORT_BOOTSTRAP_TOKEN must start with {API_TOKEN_PREFIX!r} "
                "and have at least 20 more characters."
            )
        token = AccessToken(
            name="bootstrap",
            role=Role.admin.value,
            project_id=None,
            token_hash=hash_token(raw),
            token_prefix=display_prefix(raw),
        )
    session.add(token)
    return raw
