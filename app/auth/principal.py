"""Who is calling: the authenticated token and what it may do."""

from __future__ import annotations

from dataclasses import dataclass

from app.auth.models import Role
from app.core.errors import ForbiddenError, NotFoundError


@dataclass(frozen=True)
class Principal:
    token_id: int
    token_name: str
    role: Role
    project_id: int | None  # None for an instance-wide admin token

    @property
    def is_admin(self) -> bool:
        return self.role is Role.admin

    @property
    def audit_name(self) -> str:
        return f"token:{self.token_id}:{self.token_name}"

    def require_admin(self) -> None:
        if not self.is_admin:
            raise ForbiddenError(
                "This action needs an instance admin token.", code="admin_required"
            )

    def has_project_role(self, project_id: int | None, minimum: Role) -> bool:
        return self.is_admin or (self.project_id == project_id and self.role.rank >= minimum.rank)

    def require_project(self, project_id: int | None, minimum: Role) -> None:
        """Another project's records are invisible (404); a weaker role is refused (403).
        Instance-level records (`project_id` None) are an admin's."""
        if project_id is None:
            self.require_admin()
            return
        if self.is_admin:
            return
        if self.project_id != project_id:
            raise NotFoundError("The project does not exist or you cannot see it.")
        if self.role.rank < minimum.rank:
            raise ForbiddenError(
                f"This action needs the {minimum.value} role; your token has {self.role.value}.",
                code="insufficient_role",
            )
