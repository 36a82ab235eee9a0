"""`optml tune`: a hyperparameter search over the image's training, in AWS (CreateHyperParameterTuningJob) or on
this machine with optuna (--local), from one ranges file and one objective.

Everything is checked before any call: each range against the image's hyperparameter table, the objective
against the metric definitions every job will send, the strategy's own rules (Hyperband and early stopping,
Grid and categorical ranges, at most 5 warm-start parents).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from typing import Any, TextIO

from optml.cli import follow, jobs, search
from optml.cli import train as train_command
from optml.cli.aws import Aws
from optml.cli.errors import CliError

DEFAULT_MAX_JOBS = 10
DEFAULT_MAX_PARALLEL_JOBS = 2
WARM_START_TYPES = ("IdenticalDataAndAlgorithm", "TransferLearning")
MAX_WARM_START_PARENTS = 5
# CreateHyperParameterTuningJob's name: at most 32 characters (a training job's name is the tuning job's + a suffix).
TUNING_JOB_NAME = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,31}")
TUNING_NAME_LIMIT = 32  # the pattern counts letters and digits only
TUNING_NAME_RULE = "1 to 32 letters, digits and hyphens, starting and ending with a letter or digit"
# CreateHyperParameterTuningJob has no ExperimentConfig: the experiment's name goes on as a tag.
EXPERIMENT_TAG = "optml:experiment"

EXAMPLES = """\
examples:
  # try the search on this machine first: 6 trials with TPE, the objective read from each container's log
  optml tune --local --ranges ranges.json --objective validation:f1 --strategy Bayesian --max-jobs 6 \\
      --channel train=data/breast_cancer/train --channel validation=data/breast_cancer/validation \\
      --output-path tuning-output

  # then the same search in AWS: 20 training jobs, 3 at a time, following it until it ends
  optml tune --ranges ranges.json --objective validation:f1 --max-jobs 20 --max-parallel-jobs 3 \\
      --image-uri 123456789012.dkr.ecr.eu-west-1.amazonaws.com/optml:latest \\
      --role arn:aws:iam::123456789012:role/SageMakerExecution \\
      --channel train=s3://my-bucket/churn/train --channel validation=s3://my-bucket/churn/validation \\
      --output-path s3://my-bucket/churn/tuning --wait

  # the same request printed as JSON, nothing called (no credentials needed)
  optml tune ... --dry-run --region eu-west-1

a ranges file (JSON or YAML), each name a hyperparameter of the image's table:
  {"learning_rate": {"min": 1e-4, "max": 0.1, "scaling": "log"},
   "batch_size": {"min": 16, "max": 256, "type": "integer"},
   "optimizer": ["adam", "sgd"]}
"""


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "tune",
        help="search hyperparameters: Automatic Model Tuning in AWS, or optuna locally",
        description=__doc__,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_search_options(parser)
    job = parser.add_argument_group("each training job")
    jobs.add_image_and_role(job, "the IAM role SageMaker assumes for the training jobs (README 'To AWS')")
    job.add_argument("--instance-type", help=f"default {train_command.DEFAULT_INSTANCE_TYPE}")
    job.add_argument("--instance-count", type=jobs.positive, default=1, help="hosts per training job (default 1)")
    job.add_argument("--volume-size", type=jobs.positive, metavar="GB", help="storage per host")
    job.add_argument("--name", help="the tuning job's name, at most 32 characters (default: optml-<date>-<time>)")
    data = parser.add_argument_group("data")
    data.add_argument("--channel", action="append", required=True, metavar="NAME=URI", help="as for optml train")
    data.add_argument("--content-type", action="append", metavar="NAME=TYPE", help="as for optml train")
    data.add_argument("--distribution", action="append", metavar="NAME=sharded|replicated", help="as for optml train")
    data.add_argument("--input-mode", action="append", metavar="NAME=File|FastFile|Pipe", help="as for optml train")
    data.add_argument(
        "--output-path", metavar="URI", help="where each job's model goes: s3://bucket/prefix; --local: a folder"
    )
    train_command.add_hyperparameter_and_limit_options(parser)
    jobs.add_experiment_options(parser)
    jobs.add_aws_options(parser)
    add_local_options(parser)
    parser.set_defaults(run=run)


def add_search_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("the search")
    group.add_argument("--ranges", required=True, metavar="FILE", help="the hyperparameter ranges, JSON or YAML")
    group.add_argument(
        "--objective", required=True, metavar="METRIC", help="the metric to optimize, e.g. validation:f1"
    )
    direction = group.add_mutually_exclusive_group()
    direction.add_argument("--maximize", action="store_true", help="default for scores (accuracy, f1, auc, r2, ...)")
    direction.add_argument("--minimize", action="store_true", help="default for losses and errors")
    group.add_argument("--strategy", choices=search.STRATEGIES, default="Bayesian", help="default Bayesian")
    group.add_argument(
        "--early-stopping",
        choices=("auto", "off"),
        default="off",
        help="stop jobs that are unlikely to beat the best so far (auto; not with Hyperband, which stops its own)",
    )
    group.add_argument(
        "--max-jobs", type=jobs.positive, metavar="N", help=f"training jobs in all (default {DEFAULT_MAX_JOBS})"
    )
    group.add_argument(
        "--max-parallel-jobs",
        type=jobs.positive,
        metavar="N",
        help=f"AWS: jobs at a time (default {DEFAULT_MAX_PARALLEL_JOBS})",
    )
    group.add_argument("--random-seed", type=int, metavar="N", help="the strategy's seed, for a repeatable search")
    group.add_argument(
        "--warm-start-from",
        nargs="+",
        metavar="TUNING_JOB",
        help="AWS: earlier tuning jobs (at most 5) whose results start this search",
    )
    group.add_argument("--warm-start-type", choices=WARM_START_TYPES, help="AWS: default IdenticalDataAndAlgorithm")


def add_local_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("local search (Docker and optuna: pip install '.[local]')")
    group.add_argument("--local", action="store_true", help="run each trial as a container on this machine")
    group.add_argument("--parallel", type=jobs.positive, metavar="N", help="trials at a time (default 1)")
    group.add_argument(
        "--study", metavar="PATH", help="optuna's study file: resumes the search it holds (the local warm start)"
    )
    group.add_argument(
        "--timeout", type=int, metavar="SECONDS", help="give up on a trial after this long; 0 = no limit"
    )


def run(args: argparse.Namespace) -> int:
    channels = train_command.channels_from(args.channel, args.content_type, args.distribution, args.input_mode)
    checked = search_from(args)
    if args.local:
        from optml.cli import tune_local

        return tune_local.run(args, checked, channels)
    return tune_in_aws(args, checked, channels)


def search_from(args: argparse.Namespace) -> search.Search:
    """The ranges file, the objective and the strategy's rules, checked: every problem before any call."""
    refuse_misplaced_options(args)
    if not args.local:
        tuning_job_name(args.name)
    jobs.experiment_from(args)
    static = train_command.hyperparameters_from(args.hp, args.hp_file)
    ranges = search.read_ranges(args.ranges, static)
    ranged = {each.name for each in ranges}
    task = None if ranged & {"task", "loss"} else train_command.job_task(static)
    definitions = train_command.metric_definitions(jobs.parse_pairs(args.metric, "--metric"), task)
    objective = search.objective_from(args.objective, args.maximize, args.minimize, definitions)
    max_jobs = args.max_jobs or (search.grid_size(ranges) if args.strategy == "Grid" else DEFAULT_MAX_JOBS)
    check_strategy(args, ranges, max_jobs)
    return search.Search(
        ranges=ranges,
        objective=objective,
        strategy=args.strategy,
        early_stopping=args.early_stopping == "auto",
        max_jobs=max_jobs,
        static_hyperparameters=static,
        metric_definitions=definitions,
        seed=args.random_seed,
    )


def refuse_misplaced_options(args: argparse.Namespace) -> None:
    if args.local:
        jobs.refuse_with_local(
            {
                "--role": args.role,
                "--instance-type": args.instance_type,
                "--volume-size": args.volume_size,
                "--name": args.name,
                "--max-parallel-jobs": args.max_parallel_jobs,
                "--warm-start-from": args.warm_start_from,
                "--warm-start-type": args.warm_start_type,
                "--max-run": args.max_run,
                "--spot": args.spot,
                "--max-wait": args.max_wait,
                "--checkpoint-s3-uri": args.checkpoint_s3_uri,
                "--input-mode": args.input_mode,
                "--dry-run": args.dry_run,
                "--region": args.region,
                "--profile": args.profile,
            }
        )
        return
    local_only = {"--parallel": args.parallel, "--study": args.study, "--timeout": args.timeout}
    given = [option for option, value in local_only.items() if value is not None]
    if given:
        raise CliError(f"{', '.join(given)} only apply to a local search: add --local, or drop them")


def check_strategy(args: argparse.Namespace, ranges: tuple[search.Range, ...], max_jobs: int) -> None:
    """SageMaker's rules for each strategy, and for warm start, before the API refuses them."""
    if args.strategy == "Hyperband":
        if args.early_stopping == "auto":
            raise CliError(
                "--early-stopping auto with --strategy Hyperband: SageMaker requires it off, Hyperband stops"
                " jobs itself (drop --early-stopping auto)"
            )
        if any(each.name == "epochs" for each in ranges):
            raise CliError(
                "epochs is a range, but Hyperband owns the epoch budget (its MaxResource is epochs): set --hp epochs=N"
                " and drop epochs from the ranges"
            )
    if args.strategy == "Grid":
        numeric = [each.name for each in ranges if not isinstance(each, search.CategoricalRange)]
        if numeric:
            raise CliError(
                f"--strategy Grid searches lists of values only: {', '.join(numeric)} is a min/max range; list its"
                " values instead"
            )
        size = search.grid_size(ranges)
        if args.max_jobs is not None and args.max_jobs != size:
            raise CliError(
                f"--max-jobs {args.max_jobs} with --strategy Grid: the grid has {size} combinations, and SageMaker"
                " runs each once (drop --max-jobs)"
            )
    if args.max_parallel_jobs and args.max_parallel_jobs > max_jobs:
        raise CliError(f"--max-parallel-jobs {args.max_parallel_jobs} is more than the {max_jobs} jobs in all")
    check_warm_start(args)


def check_warm_start(args: argparse.Namespace) -> None:
    if args.warm_start_type and not args.warm_start_from:
        raise CliError("--warm-start-type says how to use --warm-start-from TUNING_JOB...: add the parent jobs")
    if not args.warm_start_from:
        return
    if len(args.warm_start_from) > MAX_WARM_START_PARENTS:
        raise CliError(
            f"--warm-start-from names {len(args.warm_start_from)} tuning jobs: SageMaker takes at most"
            f" {MAX_WARM_START_PARENTS} parents"
        )
    for parent in args.warm_start_from:
        if len(parent) > TUNING_NAME_LIMIT or not TUNING_JOB_NAME.fullmatch(parent):
            raise CliError(f"--warm-start-from {parent!r} is not a tuning job's name: {TUNING_NAME_RULE}")
    if args.strategy not in ("Bayesian", "Random"):
        raise CliError(
            f"--warm-start-from with --strategy {args.strategy}: SageMaker's warm start continues a Bayesian or"
            " Random search; use one of those"
        )


def tuning_job_name(given: str | None) -> str:
    if given is None:
        return jobs.resource_name(None)  # optml-<date>-<time>-<4 hex>: 26 characters
    if len(given) > TUNING_NAME_LIMIT or not TUNING_JOB_NAME.fullmatch(given):
        raise CliError(f"--name {given!r} is not a tuning job name SageMaker accepts: {TUNING_NAME_RULE}")
    return given


def tuning_job_request(
    name: str, checked: search.Search, job: train_command.TrainingJob, args: argparse.Namespace
) -> dict[str, Any]:
    """CreateHyperParameterTuningJob's request."""
    limits: dict[str, Any] = {"MaxParallelTrainingJobs": args.max_parallel_jobs or DEFAULT_MAX_PARALLEL_JOBS}
    if checked.strategy != "Grid" or args.max_jobs:
        limits["MaxNumberOfTrainingJobs"] = checked.max_jobs
    config: dict[str, Any] = {
        "Strategy": checked.strategy,
        "HyperParameterTuningJobObjective": {"Type": checked.objective.type, "MetricName": checked.objective.metric},
        "ResourceLimits": limits,
        "ParameterRanges": search.parameter_ranges(checked.ranges),
        "TrainingJobEarlyStoppingType": "Auto" if checked.early_stopping else "Off",
    }
    if checked.seed is not None:
        config["RandomSeed"] = checked.seed
    if checked.strategy == "Hyperband":
        budget = {"MinResource": 1, "MaxResource": search.hyperband_max_resource(checked)}
        config["StrategyConfig"] = {"HyperbandStrategyConfig": budget}
    definition = train_command.job_definition(job)
    if checked.static_hyperparameters:
        definition["StaticHyperParameters"] = dict(checked.static_hyperparameters)
    request: dict[str, Any] = {
        "HyperParameterTuningJobName": name,
        "HyperParameterTuningJobConfig": config,
        "TrainingJobDefinition": definition,
    }
    if args.warm_start_from:
        request["WarmStartConfig"] = {
            "ParentHyperParameterTuningJobs": [{"HyperParameterTuningJobName": p} for p in args.warm_start_from],
            "WarmStartType": args.warm_start_type or WARM_START_TYPES[0],
        }
    if job.experiment:
        request["Tags"] = [{"Key": EXPERIMENT_TAG, "Value": job.experiment.name}]
    return request


def tune_in_aws(args: argparse.Namespace, checked: search.Search, channels: tuple[train_command.Channel, ...]) -> int:
    name = tuning_job_name(args.name)
    train_command.refuse_sharded_in_memory(channels, args.instance_count, checked.static_hyperparameters)
    job = train_command.training_job_from(
        args, channels, checked.static_hyperparameters, name=name, definitions=checked.metric_definitions
    )
    aws = jobs.aws_from(args)
    trial = (job.experiment.run or name) if job.experiment else None
    if job.experiment and trial:
        job.experiment.create(aws)
        aws.create_if_missing("sagemaker", "CreateTrial", TrialName=trial, ExperimentName=job.experiment.name)
    answer = aws.call("sagemaker", "CreateHyperParameterTuningJob", **tuning_job_request(name, checked, job, args))
    if aws.dry_run:
        return 0
    print(f"tuning job {name}: {answer['HyperParameterTuningJobArn']}", flush=True)
    if not args.wait:
        print(f"follow it: aws sagemaker describe-hyper-parameter-tuning-job --hyper-parameter-tuning-job-name {name}")
        if trial:
            print(f"its training jobs join trial {trial} of experiment {args.experiment} with --wait only")
        return 0
    return follow_tuning_job(aws, name, trial, sys.stdout)


def follow_tuning_job(
    aws: Aws,
    name: str,
    trial: str | None,
    out: TextIO,
    sleep: follow.Sleep = time.sleep,
    interval: float = follow.POLL_SECONDS,
) -> int:
    """--wait: the counts of training jobs as they change, each new job into the trial, then the best job;
    exit code 1 unless the tuning job Completed."""
    shown: list[str] = []
    joined: set[str] = set()

    def show(answer: dict[str, Any]) -> None:
        counts = answer.get("TrainingJobStatusCounters", {})
        line = f"{answer['HyperParameterTuningJobStatus']}: " + ", ".join(f"{k} {v}" for k, v in counts.items())
        if not shown or shown[-1] != line:
            shown.append(line)
            print(line, file=out, flush=True)
        if trial:
            join_trial(aws, name, trial, joined)

    def describe() -> dict[str, Any]:
        return aws.call("sagemaker", "DescribeHyperParameterTuningJob", HyperParameterTuningJobName=name)

    answer = follow.poll(
        describe, lambda a: a["HyperParameterTuningJobStatus"] in follow.JOB_DONE, show, sleep, interval
    )
    return report(answer, out)


def join_trial(aws: Aws, name: str, trial: str, joined: set[str]) -> None:
    """Each training job of the tuning job not in the trial yet, into it (its trial component is
    <training job>-aws-training-job, the name SageMaker gives it)."""
    params: dict[str, Any] = {"HyperParameterTuningJobName": name, "MaxResults": 100}
    while True:
        page = aws.call("sagemaker", "ListTrainingJobsForHyperParameterTuningJob", **params)
        for summary in page.get("TrainingJobSummaries", []):
            job = summary["TrainingJobName"]
            if job not in joined:
                aws.call(
                    "sagemaker",
                    "AssociateTrialComponent",
                    TrialComponentName=f"{job}-aws-training-job",
                    TrialName=trial,
                )
                joined.add(job)
        if not page.get("NextToken"):
            return
        params["NextToken"] = page["NextToken"]


def report(answer: dict[str, Any], out: TextIO) -> int:
    best = answer.get("BestTrainingJob")
    if best:
        metric = best.get("FinalHyperParameterTuningJobObjectiveMetric", {})
        print(f"best training job: {best['TrainingJobName']}", file=out)
        if metric:
            print(f"objective: {metric.get('MetricName')} = {metric.get('Value')}", file=out)
        for key, value in sorted(best.get("TunedHyperParameters", {}).items()):
            print(f"  {key}={value}", file=out)
    if answer["HyperParameterTuningJobStatus"] == "Completed":
        return 0
    status, reason = answer["HyperParameterTuningJobStatus"], answer.get("FailureReason", "")
    print(f"optml: tuning job {answer['HyperParameterTuningJobName']} {status}: {reason}", file=sys.stderr)
    return 1
