"""Authentication: credentials to principals (router/domain/access.py). A door extracts the credential
from its transport; `Guard` decides who that is and what they may do."""
from router.core.auth.guard import Guard, Credential
from router.core.auth.principals import (PrincipalEntry, PrincipalsFile, PrincipalsFileError, hash_token,
                                         new_token)

__all__ = ["Credential", "Guard", "PrincipalEntry", "PrincipalsFile", "PrincipalsFileError", "hash_token",
           "new_token"]
