"""`optml train`: a training job of the image, in AWS (CreateTrainingJob) or in SageMaker local mode (--local).

Everything the job needs is checked before any call — the hyperparameters against the image's own table, the
channels, the spot limits — so that a mistake costs a message, not a rejected or failed job. The metric
definitions are the image's own (the code its `metric-definitions` command runs), plus any --metric.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from optml.cli import follow, jobs
from optml.cli.aws import Aws
from optml.cli.errors import CliError
from optml.cli.search import SCRIPT_PROGRAM

TRAIN_CHANNEL = "train"  # the one channel the image requires
CHANNEL_NAME = re.compile(r"[A-Za-z0-9.\-_]{1,64}")
DISTRIBUTIONS = {"replicated": "FullyReplicated", "sharded": "ShardedByS3Key"}
INPUT_MODES = ("File", "FastFile", "Pipe")  # a channel's InputMode: the image streams FastFile and Pipe
DEFAULT_INSTANCE_TYPE = "ml.m5.xlarge"
DEFAULT_MAX_RUN = 86400  # seconds: SageMaker's own default, a day
DEFAULT_VOLUME_GB = 30
CHECKPOINT_LOCAL_PATH = "/opt/ml/checkpoints"  # where the image checkpoints when the job names no LocalPath
METRIC_NAME_LIMIT = 255

EXAMPLES = """\
examples:
  # a training job in AWS on spot capacity, following its status and log until it ends
  optml train --image-uri 123456789012.dkr.ecr.eu-west-1.amazonaws.com/optml:latest \\
      --role arn:aws:iam::123456789012:role/SageMakerExecution \\
      --channel train=s3://my-bucket/churn/train --channel validation=s3://my-bucket/churn/validation \\
      --content-type train=text/csv --content-type validation=text/csv \\
      --hp epochs=30 --hp learning_rate=0.01 --output-path s3://my-bucket/churn/models \\
      --spot --max-run 3600 --max-wait 7200 --checkpoint-s3-uri s3://my-bucket/churn/checkpoints --wait

  # the same request printed as JSON, nothing called (no credentials needed)
  optml train ... --dry-run --region eu-west-1

  # SageMaker local mode: the image in Docker on this machine, local folders as channels, no AWS account
  optml train --local --image-uri optml:latest --channel train=data/breast_cancer/train \\
      --channel validation=data/breast_cancer/validation --hp epochs=5 --output-path demo-output
"""


@dataclass(frozen=True)
class Channel:
    name: str
    uri: str
    content_type: str | None = None
    distribution: str = DISTRIBUTIONS["replicated"]
    input_mode: str | None = None  # None: the job's, File

    def request(self) -> dict[str, Any]:
        source = {"S3DataType": "S3Prefix", "S3Uri": self.uri, "S3DataDistributionType": self.distribution}
        channel: dict[str, Any] = {"ChannelName": self.name, "DataSource": {"S3DataSource": source}}
        if self.content_type:
            channel["ContentType"] = self.content_type
        if self.input_mode:
            channel["InputMode"] = self.input_mode
        return channel


@dataclass(frozen=True)
class TrainingJob:
    """A training job in AWS, checked: what CreateTrainingJob gets."""

    name: str
    image: str
    role: str
    instance_type: str
    instance_count: int
    volume_size: int
    channels: tuple[Channel, ...]
    hyperparameters: dict[str, str]
    metric_definitions: list[dict[str, str]]
    output_path: str
    max_run: int
    max_wait: int | None = None  # set: managed spot training
    checkpoint_s3_uri: str | None = None
    experiment: jobs.Experiment | None = None


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "train",
        help="run a training job in AWS or in local mode",
        description=__doc__,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    job = parser.add_argument_group("the job")
    jobs.add_image_and_role(job, "the IAM role SageMaker assumes for the job (README 'To AWS')")
    job.add_argument("--instance-type", help=f"default {DEFAULT_INSTANCE_TYPE}")
    job.add_argument("--instance-count", type=jobs.positive, default=1, help="hosts (default 1)")
    job.add_argument(
        "--volume-size", type=jobs.positive, metavar="GB", help=f"storage per host (default {DEFAULT_VOLUME_GB})"
    )
    job.add_argument("--name", help="the job's name (default: optml-<date>-<time>-<random>)")
    data = parser.add_argument_group("data")
    data.add_argument(
        "--channel",
        action="append",
        required=True,
        metavar="NAME=URI",
        help="a channel, once each: train (required), validation, test, model; s3://bucket/prefix, or with"
        " --local a folder or file:// URI",
    )
    data.add_argument(
        "--content-type",
        action="append",
        metavar="NAME=TYPE",
        help="a channel's ContentType, e.g. train=text/csv (README 'Training data formats'; default: by file)",
    )
    data.add_argument(
        "--distribution",
        action="append",
        metavar="NAME=sharded|replicated",
        help="how a channel's files are shared among hosts (default replicated)",
    )
    data.add_argument(
        "--input-mode",
        action="append",
        metavar="NAME=File|FastFile|Pipe",
        help="how a channel reaches the job (default File; FastFile and Pipe are streamed: README 'Data bigger"
        " than memory')",
    )
    data.add_argument(
        "--output-path", metavar="URI", help="where the model goes: s3://bucket/prefix; with --local a folder"
    )
    add_hyperparameter_and_limit_options(parser)
    jobs.add_experiment_options(parser)
    jobs.add_aws_options(parser)
    jobs.add_local_options(
        parser,
        local_help="train in SageMaker local mode, in Docker on this machine (no AWS account needed)",
        summary_help="--local: where to write the run's summary, a JSON file (default OUTPUT-PATH/summary.json)",
    )
    parser.set_defaults(run=run)


def add_hyperparameter_and_limit_options(parser: argparse.ArgumentParser) -> None:
    hyperparameters = parser.add_argument_group("hyperparameters (README 'Hyperparameters'; checked before any call)")
    hyperparameters.add_argument("--hp", action="append", metavar="KEY=VALUE", help="a hyperparameter; repeat for each")
    hyperparameters.add_argument(
        "--hp-file", metavar="FILE", help="a JSON object of hyperparameters; --hp overrides its keys"
    )
    limits = parser.add_argument_group("time, spot and metrics (AWS)")
    limits.add_argument(
        "--max-run",
        type=jobs.MAX_SECONDS,
        metavar="SECONDS",
        help=f"stop the job after this long (default {DEFAULT_MAX_RUN})",
    )
    limits.add_argument(
        "--spot", action="store_true", help="managed spot training; needs --max-wait and --checkpoint-s3-uri"
    )
    limits.add_argument(
        "--max-wait",
        type=jobs.MAX_SECONDS,
        metavar="SECONDS",
        help="spot: the longest the job may take, waiting for capacity included (≥ --max-run)",
    )
    limits.add_argument(
        "--checkpoint-s3-uri",
        metavar="URI",
        help="s3://bucket/prefix for checkpoints: an interrupted job resumes from them",
    )
    limits.add_argument(
        "--metric",
        action="append",
        metavar="NAME=REGEX",
        help="a metric definition besides the image's own (for a script of your own)",
    )
    limits.add_argument("--wait", action="store_true", help="follow the job's status and log until it ends")


def run(args: argparse.Namespace) -> int:
    channels = channels_from(args.channel, args.content_type, args.distribution, args.input_mode)
    hyperparameters = hyperparameters_from(args.hp, args.hp_file)
    refuse_sharded_in_memory(channels, args.instance_count, hyperparameters)
    jobs.experiment_from(args)  # --local records the names only; both check them first
    if args.local:
        return train_locally(args, channels, hyperparameters)
    job = training_job_from(args, channels, hyperparameters)
    return train_in_aws(job, jobs.aws_from(args), args.wait, sys.stdout)


def channels_from(
    channel_pairs: list[str] | None,
    content_type_pairs: list[str] | None,
    distribution_pairs: list[str] | None,
    input_mode_pairs: list[str] | None = None,
) -> tuple[Channel, ...]:
    uris = jobs.parse_pairs(channel_pairs, "--channel")
    content_types = jobs.parse_pairs(content_type_pairs, "--content-type")
    distributions = jobs.parse_pairs(distribution_pairs, "--distribution")
    input_modes = jobs.parse_pairs(input_mode_pairs, "--input-mode")
    for name in uris:
        if not CHANNEL_NAME.fullmatch(name):
            raise CliError(f"--channel {name!r}: a channel name is 1 to 64 letters, digits, '.', '-' or '_'")
    if TRAIN_CHANNEL not in uris:
        raise CliError(
            f"no {TRAIN_CHANNEL} channel: add --channel {TRAIN_CHANNEL}=URI (the image trains on it; validation,"
            " test and model are optional)"
        )
    for option, pairs in (
        ("--content-type", content_types),
        ("--distribution", distributions),
        ("--input-mode", input_modes),
    ):
        for name in pairs:
            if name not in uris:
                raise CliError(f"{option} {name}=...: no --channel {name}=URI (channels: {', '.join(uris)})")
    for name, distribution in distributions.items():
        if distribution not in DISTRIBUTIONS:
            raise CliError(f"--distribution {name}={distribution}: use {name}=sharded or {name}=replicated")
    for name, mode in input_modes.items():
        if mode not in INPUT_MODES:
            raise CliError(f"--input-mode {name}={mode}: use {' or '.join(f'{name}={m}' for m in INPUT_MODES)}")
    return tuple(
        Channel(
            name,
            uri,
            content_types.get(name),
            DISTRIBUTIONS[distributions.get(name, "replicated")],
            input_modes.get(name),
        )  # fmt: skip
        for name, uri in uris.items()
    )


def refuse_sharded_in_memory(
    channels: tuple[Channel, ...], instance_count: int, hyperparameters: dict[str, str]
) -> None:
    """The image refuses such a job when it starts (train/memory.py, choose_loading): sharded channels across
    hosts are trained by streaming. The same rule here fails it before it costs anything."""
    sharded = [channel.name for channel in channels if channel.distribution == DISTRIBUTIONS["sharded"]]
    if sharded and instance_count > 1 and hyperparameters.get("data_loading") == "memory":
        raise CliError(
            f"channel {', '.join(map(repr, sharded))} is sharded across {instance_count} instances, but"
            " data_loading=memory: each instance gets different files, which only the streaming path combines;"
            f" use data_loading=auto (or stream), or --distribution {sharded[0]}=replicated"
        )


def hyperparameters_from(pairs: list[str] | None, hp_file: str | None) -> dict[str, str]:
    """--hp-file's values, then --hp's, checked as the image will check them (every problem at once)."""
    from optml.container.config import SDK_KEY_PREFIX, TUNING_OBJECTIVE_KEY, read_hyperparameters
    from optml.container.errors import UserError
    from optml.train.hyperparameters import parse_hyperparameters

    values: dict[str, str] = {}
    if hp_file:
        if not Path(hp_file).is_file():
            raise CliError(f"--hp-file {hp_file} does not exist")
        try:
            values = read_hyperparameters(Path(hp_file)).values  # the image's reading: numbers and JSON strings
        except UserError as error:
            raise CliError(f"--hp-file: {error}") from None
    values.update(jobs.parse_pairs(pairs, "--hp"))
    if SCRIPT_PROGRAM in values:
        return values  # script mode: the other names are the user's own script's, not the image's table
    # The image ignores the SDKs' keys; so does the check.
    algorithm = {key: value for key, value in values.items() if not key.startswith(SDK_KEY_PREFIX)}
    algorithm.pop(TUNING_OBJECTIVE_KEY, None)
    try:
        parse_hyperparameters(algorithm)
    except UserError as error:
        raise CliError(str(error)) from None
    return values


def metric_definitions(extra: dict[str, str], task: str | None = None) -> list[dict[str, str]]:
    """The image's MetricDefinitions for a job of `task` (what `docker run IMAGE metric-definitions --task
    TASK` prints; every task's without one), then `extra`. SageMaker takes 40: when `extra` needs room, the
    image's lowest-priority names (train:, test:) make way, with a note on stderr; validation: and cv: ones,
    what a tuner optimizes, never do."""
    from optml.container.logs import METRIC_DEFINITIONS_LIMIT, METRIC_REGEX_LIMIT
    from optml.container.logs import metric_definitions as image_definitions
    from optml.train.metric_names import is_objective_candidate, metric_names

    names = metric_names(task)
    for name, regex in extra.items():
        problem = None
        if name in names:
            problem = "the image defines a metric of that name already: pick another"
        elif len(name) > METRIC_NAME_LIMIT or len(regex) > METRIC_REGEX_LIMIT:
            problem = (
                f"SageMaker takes names of up to {METRIC_NAME_LIMIT}, regexes of up to {METRIC_REGEX_LIMIT} characters"
            )
        else:
            problem = regex_problem(regex)
        if problem:
            raise CliError(f"--metric {name}={regex}: {problem}")
    kept, left_out = (
        names[: max(METRIC_DEFINITIONS_LIMIT - len(extra), 0)],
        names[METRIC_DEFINITIONS_LIMIT - len(extra) :],
    )
    if any(is_objective_candidate(name) for name in left_out):
        kept_always = sum(map(is_objective_candidate, names))
        raise CliError(
            f"{len(names) + len(extra)} metric definitions: SageMaker accepts {METRIC_DEFINITIONS_LIMIT}, and the"
            f" image's validation: and cv: metrics ({kept_always}) never make way, so --metric can add"
            f" {METRIC_DEFINITIONS_LIMIT - kept_always}"
        )
    if left_out:
        print(
            f"optml: SageMaker takes {METRIC_DEFINITIONS_LIMIT} metric definitions: left out {', '.join(left_out)}"
            " to make room for --metric",
            file=sys.stderr,
        )
    return image_definitions(kept) + [{"Name": name, "Regex": regex} for name, regex in extra.items()]


def job_task(hyperparameters: dict[str, str]) -> str | None:
    """The task whose metrics the job logs: its `task` hyperparameter, else the one its `loss` implies (bce,
    cross_entropy and focal: classification, whose binary and multiclass metrics are the same); None when the
    job infers it from the labels."""
    from optml.train.hyperparameters import TASK_LOSSES, parse_hyperparameters

    given = {key: value for key, value in hyperparameters.items() if key in ("task", "loss")}
    parsed = parse_hyperparameters(given)  # checked already with the rest
    if parsed.task:
        return parsed.task
    return next((task for task, losses in TASK_LOSSES.items() if parsed.loss in losses), None)


def regex_problem(regex: str) -> str | None:
    try:
        groups = re.compile(regex).groups
    except re.error as error:
        return f"not a regular expression ({error})"
    if groups < 1:
        return "SageMaker records the regex's first group: put one around the number, e.g. 'my_loss=([0-9.]+)'"
    return None


def training_job_from(
    args: argparse.Namespace,
    channels: tuple[Channel, ...],
    hp: dict[str, str],
    name: str | None = None,
    definitions: list[dict[str, str]] | None = None,
) -> TrainingJob:
    """The job `optml train` creates, or (`name`: the tuning job's, `definitions`: the search's) each job of a
    tuning job."""
    image = jobs.ecr_image(args.image_uri)
    role = jobs.role_arn(args.role)
    for channel in channels:
        s3_channel(channel)
    if not args.output_path:
        raise CliError("--output-path is required: the s3://bucket/prefix where the job writes the model")
    max_run = args.max_run or DEFAULT_MAX_RUN
    check_spot(args.spot, max_run, args.max_wait, args.checkpoint_s3_uri)
    if definitions is None:
        definitions = metric_definitions(jobs.parse_pairs(args.metric, "--metric"), job_task(hp))
    return TrainingJob(
        name=name or jobs.resource_name(args.name),
        image=image,
        role=role,
        instance_type=jobs.instance_type(args.instance_type or DEFAULT_INSTANCE_TYPE),
        instance_count=args.instance_count,
        volume_size=args.volume_size or DEFAULT_VOLUME_GB,
        channels=channels,
        hyperparameters=hp,
        metric_definitions=definitions,
        output_path=jobs.s3_uri(args.output_path, "--output-path"),
        max_run=max_run,
        max_wait=args.max_wait,
        checkpoint_s3_uri=args.checkpoint_s3_uri and jobs.s3_uri(args.checkpoint_s3_uri, "--checkpoint-s3-uri"),
        experiment=jobs.experiment_from(args),
    )


def s3_channel(channel: Channel) -> None:
    """A job in AWS reads its channels from S3: a local folder is named as what to upload."""
    if channel.uri.startswith("s3://"):
        jobs.s3_uri(channel.uri, f"--channel {channel.name}")
        return
    local = existing_channel_path(channel)
    raise CliError(
        f"--channel {channel.name}={channel.uri}: a training job in AWS reads S3; upload the data first (aws s3"
        f" sync {local} s3://BUCKET/PREFIX) and pass the s3:// URI, or train here with --local"
    )


def existing_channel_path(channel: Channel) -> Path:
    from optml.cli import localmode

    with jobs.local_checks():
        path = localmode.local_path(channel.uri)
    if not path.exists():
        raise CliError(f"--channel {channel.name}={channel.uri}: {path} does not exist")
    return path


def check_spot(spot: bool, max_run: int, max_wait: int | None, checkpoint_s3_uri: str | None) -> None:
    """Managed spot's rules, which CreateTrainingJob would otherwise refuse (or a lost spot host would punish)."""
    if not spot:
        if max_wait is not None:
            raise CliError("--max-wait limits a spot job's total time: add --spot, or drop --max-wait")
        return
    if max_wait is None:
        raise CliError(
            f"--spot needs --max-wait SECONDS, at least --max-run ({max_run}): the longest the job may take in all,"
            " waiting for spot capacity included"
        )
    if max_wait < max_run:
        raise CliError(
            f"--max-wait {max_wait} is less than --max-run {max_run}: SageMaker requires max-wait ≥ max-run (it"
            " counts the time waiting for spot capacity as well as training); raise --max-wait or lower --max-run"
        )
    if not checkpoint_s3_uri:
        raise CliError(
            "--spot needs --checkpoint-s3-uri s3://bucket/prefix: a job that loses its spot host resumes from the"
            " checkpoints there, else it starts over"
        )


def job_definition(job: TrainingJob) -> dict[str, Any]:
    """What CreateTrainingJob and a tuning job's TrainingJobDefinition share: the image, its metrics, the role,
    the channels, the output, the hosts, the time limits, spot and checkpoints."""
    algorithm = {"TrainingImage": job.image, "TrainingInputMode": "File", "MetricDefinitions": job.metric_definitions}
    definition: dict[str, Any] = {
        "AlgorithmSpecification": algorithm,
        "RoleArn": job.role,
        "InputDataConfig": [channel.request() for channel in job.channels],
        "OutputDataConfig": {"S3OutputPath": job.output_path},
        "ResourceConfig": {
            "InstanceType": job.instance_type,
            "InstanceCount": job.instance_count,
            "VolumeSizeInGB": job.volume_size,
        },
        "StoppingCondition": {"MaxRuntimeInSeconds": job.max_run},
    }
    if job.max_wait is not None:
        definition["EnableManagedSpotTraining"] = True
        definition["StoppingCondition"]["MaxWaitTimeInSeconds"] = job.max_wait
    if job.checkpoint_s3_uri:
        definition["CheckpointConfig"] = {"S3Uri": job.checkpoint_s3_uri, "LocalPath": CHECKPOINT_LOCAL_PATH}
    return definition


def training_job_request(job: TrainingJob) -> dict[str, Any]:
    """CreateTrainingJob's request."""
    request: dict[str, Any] = {"TrainingJobName": job.name, **job_definition(job)}
    if job.hyperparameters:
        request["HyperParameters"] = dict(job.hyperparameters)
    if job.experiment:
        request["ExperimentConfig"] = job.experiment.config()
    return request


def train_in_aws(job: TrainingJob, aws: Aws, wait: bool, out: TextIO, **follow_options: Any) -> int:
    if job.experiment:
        job.experiment.create(aws)
    answer = aws.call("sagemaker", "CreateTrainingJob", **training_job_request(job))
    if aws.dry_run:
        return 0
    print(f"training job {job.name}: {answer['TrainingJobArn']}", file=out, flush=True)
    if not wait:
        print(f"follow it: aws sagemaker describe-training-job --training-job-name {job.name}", file=out)
        return 0
    return report(follow.training_job(aws, job.name, job.instance_count, out, **follow_options), out)


def report(job: dict[str, Any], out: TextIO) -> int:
    """How the job ended: its model, what spot saved; exit code 1 unless it Completed."""
    saving = spot_saving(job)
    if saving:
        print(saving, file=out)
    model = job.get("ModelArtifacts", {}).get("S3ModelArtifacts")
    if model and job["TrainingJobStatus"] != "Failed":  # a stopped job saved the model it had reached
        print(f"model: {model}", file=out)
    if job["TrainingJobStatus"] == "Completed":
        return 0
    reason = job.get("FailureReason") or job.get("SecondaryStatus", "")
    print(f"optml: training job {job['TrainingJobName']} {job['TrainingJobStatus']}: {reason}", file=sys.stderr)
    return 1


def spot_saving(job: dict[str, Any]) -> str | None:
    training, billable = job.get("TrainingTimeInSeconds"), job.get("BillableTimeInSeconds")
    if not job.get("EnableManagedSpotTraining") or not training or billable is None:
        return None
    return f"managed spot: billed {billable} s of {training} s of training, {1 - billable / training:.0%} saved"


def train_locally(args: argparse.Namespace, channels: tuple[Channel, ...], hyperparameters: dict[str, str]) -> int:
    from optml.cli import local_v3, localmode

    jobs.refuse_with_local(
        {
            "--role": args.role,
            "--instance-type": args.instance_type,
            "--volume-size": args.volume_size,
            "--name": args.name,
            "--max-run": args.max_run,
            "--spot": args.spot,
            "--max-wait": args.max_wait,
            "--checkpoint-s3-uri": args.checkpoint_s3_uri,
            "--metric": args.metric,
            "--input-mode": args.input_mode,  # local mode delivers every channel as File
            "--dry-run": args.dry_run,
            "--region": args.region,
            "--profile": args.profile,
        }
    )
    if not args.output_path:
        raise CliError("--output-path is required: the folder for the run's files and model.tar.gz")
    for channel in channels:
        existing_channel_path(channel)
    with jobs.local_checks():
        local_v3.require_sdk()
        output_dir = localmode.local_path(args.output_path)
        summary = localmode.local_path(args.summary) if args.summary else localmode.default_summary_path(output_dir)
    image = args.image_uri or jobs.LOCAL_IMAGE

    def steps(run: localmode.LocalRun) -> None:
        janitor = run.start_docker(image)
        run.record_training(
            lambda: local_v3.train(image, channels, output_dir, args.instance_count, hyperparameters, run.name, janitor)
        )

    timeout = jobs.DEFAULT_LOCAL_TIMEOUT if args.timeout is None else args.timeout
    run = localmode.run_locally(local_v3.RUN_PREFIX, steps, timeout, args.allow_telemetry, args.verbose)
    record_local_run(args, image, hyperparameters, run.result)
    return localmode.finish(
        run.result, summary, run.exit_code, lambda file: localmode.run_summary_text(run.result, [], file)
    )


def record_local_run(
    args: argparse.Namespace, image: str, hyperparameters: dict[str, str], result: dict[str, Any]
) -> None:
    """The run in the registry `optml runs` lists: its summary's hyperparameters, final metrics and model."""
    from optml.cli import runs

    experiment, run_name = runs.experiment_of(args)
    entry = runs.new_record(
        kind=runs.TRAIN,
        name=str(result.get("run", "")),
        image=image,
        hyperparameters=hyperparameters,
        metrics=result.get("metrics", {}),
        model=result.get("model_data"),
        status="failed" if "error" in result else "completed",
        experiment=experiment,
        run=run_name,
    )
    runs.record_safely(entry)
