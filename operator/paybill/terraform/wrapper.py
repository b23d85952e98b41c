"""python_terraform's `Terraform`, with the process launch replaced: a run's own environment, its process
group killed at the run's deadline, the embedded fallback as the program, and nothing logged.

python_terraform (PyPI `python-terraform-wrapper`) builds each command line; its own launcher copies the
operator's environment, waits forever and logs stdout (outputs, sensitive ones too), so it is not used.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from python_terraform import Terraform  # type: ignore[import-untyped]

from . import process
from .binary import TerraformProgram

logging.getLogger("python_terraform").disabled = True  # it logs command output and variable values


class RunTerraform(Terraform):  # type: ignore[misc]
    """One run's Terraform: every command shares `deadline` and the run's environment."""

    def __init__(
        self, program: TerraformProgram, working_dir: Path, env: Mapping[str, str], deadline: float, timeout: float
    ) -> None:
        super().__init__(working_dir=str(working_dir), terraform_bin_path=program.argv[0], is_env_vars_included=False)
        self.program, self.env, self.deadline, self.timeout = program, dict(env), deadline, timeout

    def read_state_file(self, file_path: str | None = None) -> None:
        """State lives in the pg backend; there is no local file to read."""

    def cmd(self, cmd: str, *args: Any, raise_on_error: bool = False, **kwargs: Any) -> tuple[int, str, str]:
        argv = list(self.program.argv) + self.generate_cmd_string(cmd, *args, **kwargs)[1:]
        try:
            done = process.run(argv, Path(self.working_dir), self.env, self.deadline, self.timeout, cmd)
        finally:
            self.temp_var_files.clean_up()
        return done.exit_code, done.stdout, done.stderr
