"""`serve`: check the settings and install a script's requirements.txt, then replace this process with
gunicorn (serve/run.py) so signals reach it directly."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from optml.container.errors import UserError
from optml.container.healthcheck import SERVER_APP
from optml.container.logs import configure_logging
from optml.container.paths import Paths
from optml.container.user_code import install_requirements
from optml.serve.settings import ServerSettings, SettingsError
from optml.serve.user_module import UserCodeError, locate_user_code


def gunicorn_command(extra: Sequence[str] = ()) -> list[str]:
    return [
        sys.executable,
        "-m",
        "optml.serve.run",  # gunicorn, with a stop handled from the start
        "--config",
        "python:optml.serve.gunicorn_conf",
        *extra,
        SERVER_APP,  # the health check recognises the server by it
    ]


def install_script_requirements(env: dict[str, str] | os._Environ[str], paths: Paths) -> None:
    """Script mode: the code directory's requirements.txt, installed before the server (and so /ping)
    starts. Raises UserError naming the package, or UserCodeError for a SAGEMAKER_PROGRAM that is nowhere."""
    code = locate_user_code(env, paths.model_dir, paths.code_dir)
    install_requirements(code.code_dir if code is not None else paths.model_dir / "code")


def main(argv: Sequence[str] | None = None) -> int:
    configure_logging()
    try:
        settings = ServerSettings.from_env(os.environ)
    except SettingsError as error:
        print(f"serve: cannot start: {error}", file=sys.stderr)
        return 2
    if not settings.multi_model:  # a multi-model endpoint installs each model's requirements as it loads it
        try:
            install_script_requirements(os.environ, Paths.from_env(os.environ))
        except (UserError, UserCodeError) as error:
            print(f"serve: cannot start: {error}", file=sys.stderr)
            return 3
    # torch.cuda.is_available() in a script's module code must not initialise CUDA in the process the
    # workers are forked from: NVML answers it instead.
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    command = gunicorn_command(list(argv or ()))
    os.execv(command[0], command)
    return 0  # not reached
