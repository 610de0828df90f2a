"""Users and API tokens in the metadata store, and the user behind a web session.

API tokens are ``cdn_`` followed by 43 URL-safe characters (256 random bits). Only their SHA-256 is stored;
:meth:`AccountStore.authenticate` hashes the presented token and looks the hash up, so no comparison against a
secret happens in Python and the plaintext cannot be recovered from the database.
"""

from __future__ import annotations

import secrets

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from storage.metadata.base import StoreBase
from storage.metadata.checks import check_int, check_number, check_text, check_user_name
from storage.metadata.records import ROLES, TOKEN_PREFIX, ApiToken, User, hash_token
from storage.metadata.schema import api_tokens, token_from_row, user_from_row, users

__all__ = ["AccountStore"]


class AccountStore(StoreBase):
    """The users and API tokens of :class:`~storage.metadata.store.MetadataStore`."""

    # users ---------------------------------------------------------------------------------------

    def create_user(self, name: str, role: str = "user", max_running_jobs: int = 2) -> User:
        """Create a user; a name already taken raises :class:`ValueError`."""
        name = check_user_name(name)
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; one of {', '.join(ROLES)}")
        max_running_jobs = check_int(max_running_jobs, "max_running_jobs", minimum=0, maximum=1000)
        user = User(name=name, role=role, max_running_jobs=max_running_jobs, created_at=self._now())
        try:
            with self._writer.begin() as conn:
                if conn.execute(sa.select(users.c.name).where(users.c.name == name)).first() is not None:
                    raise ValueError(f"a user named {name!r} already exists")
                conn.execute(
                    sa.insert(users).values(
                        name=name, role=role, max_running_jobs=max_running_jobs, created_at=user.created_at
                    )
                )
        except IntegrityError:
            raise ValueError(f"a user named {name!r} already exists") from None
        return user

    def get_user(self, name: str) -> User | None:
        if not isinstance(name, str):
            raise TypeError(f"user name must be a str, got {type(name).__name__}")
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(users).where(users.c.name == name)).first()
        return None if row is None else user_from_row(row)

    def list_users(self) -> list[User]:
        with self._engine.connect() as conn:
            return [user_from_row(row) for row in conn.execute(sa.select(users).order_by(users.c.name))]

    def _require_user(self, conn: Connection, name: str) -> None:
        if conn.execute(sa.select(users.c.name).where(users.c.name == name)).first() is None:
            raise ValueError(f"no user named {name!r}")

    # API tokens ----------------------------------------------------------------------------------

    def create_token(self, user_name: str, label: str = "", *, expires_in_s: float | None = None) -> str:
        """Create an API token for ``user_name`` and return it; this is the only time it is visible.

        With ``expires_in_s`` the token stops working that many seconds from now; without, it lasts until revoked.
        """
        user_name = check_user_name(user_name)
        label = check_text(label, "token label", max_len=200, allow_empty=True)
        now = self._now()
        expires_at = None
        if expires_in_s is not None:
            expires_at = now + check_number(expires_in_s, "expires_in_s", minimum=1.0, maximum=100 * 365 * 86400.0)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self._writer.begin() as conn:
            self._require_user(conn, user_name)
            conn.execute(
                sa.insert(api_tokens).values(
                    user_name=user_name,
                    token_hash=hash_token(token),
                    label=label,
                    created_at=now,
                    expires_at=expires_at,
                )
            )
        return token

    def authenticate(self, token: str) -> User | None:
        """The user owning the (unrevoked) token, or ``None``."""
        if not isinstance(token, str):
            raise TypeError(f"token must be a str, got {type(token).__name__}")
        if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
            return None
        query = (
            sa.select(users)
            .join(api_tokens, api_tokens.c.user_name == users.c.name)
            .where(
                api_tokens.c.token_hash == hash_token(token),
                api_tokens.c.revoked_at.is_(None),
                sa.or_(api_tokens.c.expires_at.is_(None), api_tokens.c.expires_at > self._now()),
            )
        )
        with self._engine.connect() as conn:
            row = conn.execute(query).first()
        return None if row is None else user_from_row(row)

    def session_user(self, session_id: str) -> User | None:
        """The user of a live web session (:attr:`sessions`) whose sign-in token is still valid, or ``None``."""
        record = self.sessions.lookup(session_id)
        if record is None:
            return None
        if record.token_hash is None:
            return self.get_user(record.user_name)
        query = (
            sa.select(users)
            .join(api_tokens, api_tokens.c.user_name == users.c.name)
            .where(
                api_tokens.c.token_hash == record.token_hash,
                users.c.name == record.user_name,
                api_tokens.c.revoked_at.is_(None),
                sa.or_(api_tokens.c.expires_at.is_(None), api_tokens.c.expires_at > self._now()),
            )
        )
        with self._engine.connect() as conn:
            row = conn.execute(query).first()
        return None if row is None else user_from_row(row)

    def revoke_token(self, token: int | str, *, user_name: str | None = None) -> bool:
        """Revoke a token given by its id (from :meth:`list_tokens`) or its secret text.

        With ``user_name``, only that user's token is revoked (so a user cannot revoke others' tokens).
        Returns whether an active token was revoked.
        """
        if isinstance(token, bool) or not isinstance(token, int | str):
            raise TypeError(f"token must be a token id (int) or the token (str), got {type(token).__name__}")
        where: list[sa.ColumnElement[bool]] = [api_tokens.c.revoked_at.is_(None)]
        where.append(
            api_tokens.c.id == token if isinstance(token, int) else api_tokens.c.token_hash == hash_token(token)
        )
        if user_name is not None:
            where.append(api_tokens.c.user_name == check_user_name(user_name))
        with self._writer.begin() as conn:
            result = conn.execute(sa.update(api_tokens).where(*where).values(revoked_at=self._now()))
        return result.rowcount == 1

    def list_tokens(self, user_name: str) -> list[ApiToken]:
        """The user's tokens (revoked ones included, marked), oldest first; no secrets."""
        user_name = check_user_name(user_name)
        with self._engine.connect() as conn:
            rows = conn.execute(
                sa.select(api_tokens).where(api_tokens.c.user_name == user_name).order_by(api_tokens.c.id)
            )
            return [token_from_row(row) for row in rows]
