"""Label Studio's token shapes: JWT-shaped strings, and personal access tokens (refresh JWTs)."""

from __future__ import annotations

import base64
import json
import time


def jwt(claims: dict) -> str:
    """A JWT-shaped string (header.payload.signature, base64url JSON); nobody checks the signature."""

    def part(obj: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}.c2lnbmF0dXJl"


def make_pat(exp_in: float = 3600, jti: str = "pat1") -> str:
    """A personal access token as LS issues it: a refresh JWT expiring in `exp_in` seconds."""
    return jwt({"token_type": "refresh", "exp": int(time.time() + exp_in), "jti": jti, "user_id": 1})
