"""The operator's routes, served on the local listener only: making, listing, revoking tokens.

``POST /api/tokens`` makes a token and answers it once (only its digest is kept);
``GET /api/tokens`` lists them, revoked ones included, never the tokens themselves;
``DELETE /api/tokens/{id}`` revokes one. ``mimrelay token`` is the command line for these.
"""

from __future__ import annotations

from typing import Annotated, Final

from fastapi import FastAPI, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from services.gateway.answers import ErrorBody, refusal
from services.gateway.tokens import TokenBook

__all__ = ["CreatedToken", "TokenAsked", "TokenListed", "install"]

_ID_PATTERN: Final = r"^[0-9a-f]{8}$"


class TokenAsked(BaseModel):
    """What a new token is for."""

    model_config = ConfigDict(strict=True)

    name: str = Field(
        min_length=1,
        max_length=64,
        pattern=r"^[^\x00-\x1f\x7f]+$",
        description="Who or what will use it (no control characters).",
    )
    rate_per_minute: int | None = Field(
        None, ge=1, le=1_000_000, description="Objects it may submit a minute (empty: default)."
    )


class CreatedToken(BaseModel):
    """A token just made: ``token`` is shown this once."""

    id: str = Field(description="Its public id, for listings and revoking.")
    name: str
    token: str = Field(description="`Authorization: Bearer <token>` on the public listener.")
    rate_per_minute: int


class TokenListed(BaseModel):
    """A token as listed: never the token itself."""

    id: str
    name: str
    rate_per_minute: int
    created_at: int = Field(description="Unix time it was made.")
    revoked_at: int | None = Field(description="Unix time it was revoked; empty while it works.")


class Revoked(BaseModel):
    """A token revoked."""

    id: str
    revoked: bool


def install(app: FastAPI) -> None:
    """Add the token routes to the local listener's ``app`` (``app.state.tokens`` is the book)."""

    @app.post(
        "/api/tokens",
        status_code=201,
        response_model=CreatedToken,
        responses={
            400: {"model": ErrorBody, "description": "The body does not fit the schema."},
            409: {"model": ErrorBody, "description": "As many tokens as allowed work."},
        },
        summary="Make a token for submitting on the public listener",
    )
    async def create_token(request: Request, asked: TokenAsked) -> CreatedToken | Response:
        book: TokenBook = request.app.state.tokens
        made = await book.create(asked.name, asked.rate_per_minute)
        if made is None:
            reason = "revoke one before making another (MIM_GATEWAY_TOKENS_MAX)"
            return refusal(409, "name", "tokens.max", reason)
        return CreatedToken(
            id=made.id, name=made.name, token=made.token, rate_per_minute=made.rate_per_minute
        )

    @app.get("/api/tokens", response_model=list[TokenListed], summary="List the tokens")
    async def list_tokens(request: Request) -> list[TokenListed]:
        book: TokenBook = request.app.state.tokens
        return [
            TokenListed(
                id=t.id,
                name=t.name,
                rate_per_minute=t.rate_per_minute,
                created_at=t.created_at,
                revoked_at=t.revoked_at,
            )
            for t in await book.listing()
        ]

    @app.delete(
        "/api/tokens/{token_id}",
        response_model=Revoked,
        responses={
            400: {"model": ErrorBody, "description": "Not a token id."},
            404: {"model": ErrorBody, "description": "No working token has this id."},
        },
        summary="Revoke a token",
    )
    async def revoke_token(
        request: Request,
        token_id: Annotated[str, Path(pattern=_ID_PATTERN, description="The token's public id.")],
    ) -> Revoked | Response:
        book: TokenBook = request.app.state.tokens
        if not await book.revoke(token_id):
            return refusal(404, "id", "tokens.unknown", f"no working token {token_id[:16]!r}")
        return Revoked(id=token_id, revoked=True)
