# Solution of "Try it" in 05b-performance: a cache keyed by a digest of the user's token and the scopes.
import hashlib
import time

obo_results: dict = {}  # key -> {"access_token": ..., "expires_at": ...}

async def cached_exchange(app: msal.ConfidentialClientApplication, assertion: str, scopes: list[str]) -> str:
    """A Graph token for `assertion`: from `obo_results` while it has five minutes left, else a new exchange."""
    key = (hashlib.sha256(assertion.encode()).hexdigest(), tuple(sorted(set(scopes))))
    kept = obo_results.get(key)
    if kept is not None and kept["expires_at"] - 300 > time.time():
        return kept["access_token"]
    result = await asyncio.to_thread(lambda: app.acquire_token_on_behalf_of(assertion, scopes))
    obo_results[key] = {"access_token": result["access_token"], "expires_at": time.time() + int(result["expires_in"])}
    return result["access_token"]
