from typing import Any

PGLAST_VERSION: str

def parse(sql: str, /) -> dict[str, Any]: ...
