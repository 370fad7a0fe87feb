"""Who is calling: tokens, scopes and access policy (grows with the security issue)."""
