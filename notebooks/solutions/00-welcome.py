# Solution of "Try it" in 00-welcome: the signing keys named by the OpenID configuration.
signing_keys = httpx.get(oidc["jwks_uri"]).raise_for_status().json()["keys"]
print(f"{len(signing_keys)} key(s) with ids", ", ".join(key["kid"][:8] + "…" for key in signing_keys))
