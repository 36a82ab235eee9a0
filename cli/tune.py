"""`optml tune`: a hyperparameter search over the image's training, in AWS (CreateHyperParameterTuningJob) or on
this machine with optuna (--local), from one ranges file and one objective.

Everything is checked before any call: each range against the image's hyperparameter table, the objective
against the metric definitions every job will send, the strategy's own rules (Hyperband and early stopping,
Grid and categorical ranges, at most 5 warm-start parents).
"""

from __future__ import annotations

import argparse

from optml.cli import jobs, search
from optml.cli import train as train_command
from optml.cli.errors import CliError

DEFAULT_MAX_JOBS = 10
DEFAULT_MAX_PARALLEL_JOBS = 2
WARM_START_TYPES = ("IdenticalDataAndAlgorithm", "TransferLearning")

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
    channels = train_command.channels_from(args.channel, args.content_type, args.distribution)
    checked = search_from(args)
    if args.local:
        from optml.cli import tune_local

        return tune_local.run(args, checked, channels)
    return tune_in_aws(args, checked, channels)


def search_from(args: argparse.Namespace) -> search.Search:
    """The ranges file, the objective and the strategy's rules, checked: every problem before any call."""
    raise CliError("optml tune: not finished yet")


def tune_in_aws(args: argparse.Namespace, checked: search.Search, channels: tuple[train_command.Channel, ...]) -> int:
    raise CliError("optml tune: not finished yet")
