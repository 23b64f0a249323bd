def refuse_reason(claims: dict) -> str | None:
    """Why a validly signed token with these claims must still be refused, or None."""
    now = time.time()
    if "exp" not in claims:
        return "no exp: the token would never expire"
    if claims.get("nbf", 0) > now + 300:  # five minutes of clock skew, as Entra's libraries allow
        return "nbf in the future: not valid yet"
    if claims.get("tid") != target.tenant_id:
        return "tid names another tenant"
    return None
