"""A script-mode training job, start to end: hyperparameters → code → requirements → environment → run.

Anything wrong before the script starts (no code, an unsafe archive, a requirement pip cannot install, a
missing entry point, a peer that never comes up) is a UserError: failure file, exit 1. Once the script runs,
the job's exit code is the script's, and a non-zero one writes the failure file (train/script/failure.py).
"""

from __future__ import annotations

import logging
import os
import shlex
from collections.abc import Mapping, Sequence

from optml.container.errors import UserError
from optml.container.failure import run_reporting_failure
from optml.container.hosts import PEER_WAIT_SECONDS, usable_interface, wait_for_host
from optml.container.logs import configure_logging
from optml.container.paths import Paths
from optml.container.user_code import install_requirements
from optml.train.script.command import build_command
from optml.train.script.environment import Context, Host, count_gpus, process_environment, to_cmd_args
from optml.train.script.failure import exit_description, failure_reason, file_state, report_failure
from optml.train.script.job import read_raw_json, script_job
from optml.train.script.launcher import grace_seconds, run_user_process
from optml.train.script.process_tree import become_subreaper
from optml.train.script.source import fetch_code

log = logging.getLogger("optml.train.script")


def main(argv: Sequence[str] | None = None) -> int:
    configure_logging()
    paths = Paths.from_env(os.environ)
    exit_code = 0

    def job() -> None:
        nonlocal exit_code
        exit_code = run(paths, os.environ)

    setup_code = run_reporting_failure(job, paths.failure_file, "script-mode training", log)
    return setup_code or exit_code


def read_context(paths: Paths, env: Mapping[str, str]) -> Context:
    job = script_job(read_raw_json(paths.hyperparameters_file), env)
    if job is None:
        raise UserError("no entry point: set the sagemaker_program hyperparameter or SAGEMAKER_PROGRAM")
    resources = read_raw_json(paths.resource_config_file) or {"current_host": "algo-1", "hosts": ["algo-1"]}
    host = Host(
        resource_config=resources,
        network_interface=usable_interface(resources.get("network_interface_name")),
        num_gpus=count_gpus(),
        num_cpus=os.cpu_count() or 1,
    )
    return Context(job, host, paths, read_raw_json(paths.input_data_config_file), env.get("TRAINING_JOB_NAME"))


def run(paths: Paths, env: Mapping[str, str]) -> int:
    """Set the job up, run the script; its exit code."""
    context = read_context(paths, env)
    job, host = context.job, context.host
    logging.getLogger().setLevel(_log_level(job.log_level))
    log.info("script mode: %s (%s)", job.program, fetch_code(job.submit_directory, paths, env, job.region))
    install_requirements(paths.code_dir)
    command = build_command(job, host, paths.code_dir, to_cmd_args(job.hyperparameters))
    if command.torchrun and len(host.hosts) > 1:
        deadline = float(env.get("OPTML_PEER_WAIT_SECONDS") or PEER_WAIT_SECONDS)
        for peer in host.hosts:
            wait_for_host(peer, deadline)
    become_subreaper()
    before = file_state(paths.failure_file)
    log.info("running %s in %s", shlex.join(command.argv), paths.code_dir)
    outcome = run_user_process(
        command.argv, paths.code_dir, process_environment(context, env), grace_seconds(env), command.torchrun
    )
    if outcome.exit_code != 0:
        log.error("%s", exit_description(job.program, outcome.exit_code))
        reason = failure_reason(job.program, outcome.exit_code, command.argv, outcome.stderr_tail)
        if not report_failure(paths.failure_file, reason, before):
            log.info("the script wrote %s itself; it is left as it is", paths.failure_file)
    return outcome.exit_code


def _log_level(value: object) -> int:
    try:
        return int(str(value))
    except ValueError:
        level = logging.getLevelName(str(value).upper())
        return level if isinstance(level, int) else logging.INFO
