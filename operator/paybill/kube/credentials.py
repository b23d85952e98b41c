"""The emulated API server's credentials kept in its state directory: the CA and serving key, and every token
(admin, static, bound), so that kubeconfigs written before a restart still work after it."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from .access import AccessControl
from .auth import Tokens
from .persistence import CREDENTIALS, StateDirError, read_private, write_atomically
from .tls import ServingCertificate


def persistent_access(directory: Path) -> AccessControl:
    """The access control saved in ``directory`` (made and saved now if there is none); saved again whenever a
    token is issued."""
    path = directory / CREDENTIALS
    raw = read_private(path)
    if raw is None:
        access = AccessControl()
    else:
        try:
            data = json.loads(raw)
            pem = {name: base64.b64decode(data["certificate"][name]) for name in ("ca", "chain", "key")}
            access = AccessControl(
                tokens=Tokens.from_json(data["tokens"]),
                certificate=ServingCertificate(pem["ca"], pem["chain"], pem["key"]),
            )
        except (ValueError, KeyError, TypeError):
            raise StateDirError(f"{path} is not the emulator's credentials file") from None

    def save() -> None:
        certificate = access.certificate
        pem = {"ca": certificate.certificate_authority, "chain": certificate.certificate, "key": certificate.key}
        data = {
            "certificate": {name: base64.b64encode(value).decode() for name, value in pem.items()},
            "tokens": access.tokens.to_json(),
        }
        write_atomically(path, json.dumps(data).encode())

    access.tokens.changed = save
    save()
    return access
