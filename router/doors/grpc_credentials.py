"""What a gRPC call carried as its credential: the `authorization` metadata and, under mTLS, the
verified client certificate's common name. The guard (router/core/auth/) decides what they are worth."""
from __future__ import annotations

from typing import Optional

import grpc

from router.core.auth import Credential

AUTHORIZATION_METADATA_KEY = "authorization"


def credential_of(context: grpc.aio.ServicerContext) -> Credential:
    authorization: Optional[str] = None
    for key, value in context.invocation_metadata() or ():
        if key == AUTHORIZATION_METADATA_KEY:
            authorization = value if isinstance(value, str) else value.decode("utf-8", "replace")
            break
    cert_cn: Optional[str] = None
    auth_context = context.auth_context() or {}
    # gRPC fills the peer's certificate fields only once the handshake verified it against the
    # server's client CA (server.tls_client_ca_file); without mTLS there is none.
    names = auth_context.get("x509_common_name")
    if names:
        cert_cn = names[0].decode("utf-8", "replace")
    return Credential(authorization=authorization, cert_cn=cert_cn)
