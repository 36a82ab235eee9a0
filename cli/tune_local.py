"""`optml tune --local`: the search run on this machine with optuna, each trial a container of the image.

The strategies map onto optuna's samplers: Bayesian → TPE (its first trials random: a third of the trials
planned, 2 to 10), Random → random, Grid → grid (categorical ranges only), Hyperband → random sampling with
optuna's Hyperband pruner (1 epoch up to `epochs`). `--early-stopping auto` with the others is optuna's median
pruner: from the third trial on, a trial whose objective at an epoch is worse than the median of the earlier
trials at that epoch is stopped (SageMaker's rule, on fewer trials). Each trial reports its objective at every
`epoch=N` line of its log (trials.py); a pruned trial's container is stopped and keeps the model it had.

Ranges: integer and continuous ranges are sampled linearly (Auto, Linear) or on a log scale (Logarithmic);
ReverseLogarithmic (continuous, within [0, 1)) samples 1 - x on a log scale, so values crowd towards 1 as in
SageMaker, and optuna's study records it as the parameter `1-NAME`.

The study lives in an SQLite file (`--study PATH`, default OUTPUT/study.db): run again with the same file and
the search goes on — trial numbers continue, earlier trials stay and inform the sampler — provided it optimizes
the same objective in the same direction.
"""

from __future__ import annotations

import argparse
import json
import math
import secrets
import shlex
import sys
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TextIO

from optml.cli import jobs, runs, search, trials
from optml.cli.errors import CliError
from optml.cli.localmode import aligned, clip, shown_path
from optml.cli.train import Channel

if TYPE_CHECKING:
    import docker
    import optuna

STUDY_NAME = "optml"  # the one study in a study file
STUDY_FILE = "study.db"
TUNING_FILE = "tuning.json"
MEDIAN_STARTUP_TRIALS = 2  # --early-stopping auto: trials that run to their end before any is pruned
REVERSE_PREFIX = "1-"  # optuna's name of a ReverseLogarithmic range: it samples 1 - value
STATE_ORDER = {"COMPLETE": 0, "PRUNED": 1, "RUNNING": 2, "WAITING": 3, "FAIL": 4}


# ---------------------------------------------------------------------------------------------------------------
# The search space and the strategy, in optuna's terms


def distributions(ranges: Iterable[search.Range]) -> dict[str, Any]:
    """Each range as optuna's distribution, by parameter name (see the module docstring for the scalings)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    result: dict[str, Any] = {}
    for item in ranges:
        if isinstance(item, search.CategoricalRange):
            result[item.name] = CategoricalDistribution(list(item.values))
        elif item.scaling == "ReverseLogarithmic":
            if isinstance(item, search.IntegerRange) or not 0 <= item.low < item.high < 1:
                raise CliError(
                    f"{item.name}: ReverseLogarithmic scaling takes a continuous range within [0, 1), not"
                    f" {item.low}..{item.high}"
                )
            result[REVERSE_PREFIX + item.name] = FloatDistribution(1 - item.high, 1 - item.low, log=True)
        else:
            log = item.scaling == "Logarithmic"
            if log and item.low <= 0:
                raise CliError(f"{item.name}: Logarithmic scaling needs a range above 0, not {item.low}..{item.high}")
            if isinstance(item, search.IntegerRange):
                result[item.name] = IntDistribution(item.low, item.high, log=log)
            else:
                result[item.name] = FloatDistribution(item.low, item.high, log=log)
    return result


def hyperparameter_values(ranges: Iterable[search.Range], params: Mapping[str, Any]) -> dict[str, str]:
    """A trial's parameters as the hyperparameters its container gets: text, as SageMaker passes them."""
    values = {}
    for item in ranges:
        if item.name in params:
            values[item.name] = str(params[item.name])
        else:
            values[item.name] = str(1 - params[REVERSE_PREFIX + item.name])
    return values


def grid(ranges: Iterable[search.Range]) -> dict[str, list[str]]:
    """Grid's search space: every range categorical (SageMaker's rule for the Grid strategy)."""
    space = {}
    for item in ranges:
        if not isinstance(item, search.CategoricalRange):
            raise CliError(f"--strategy Grid takes categorical ranges only: {item.name} is a range of numbers")
        space[item.name] = list(item.values)
    return space


def sampler_for(checked: search.Search, seed: int | None, planned: int) -> Any:
    """The strategy's sampler; `planned` (trials in the study once this run is done) sizes TPE's random start."""
    import optuna

    if checked.strategy == "Grid":
        return grid_sampler(grid(checked.ranges), seed)
    if checked.strategy == "Bayesian":
        startup = min(10, max(2, planned // 3))
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)
    return optuna.samplers.RandomSampler(seed=seed)


def grid_sampler(space: Mapping[str, Sequence[str]], seed: int | None) -> Any:
    """optuna's GridSampler, less its study.stop() at the grid's end, which only works inside study.optimize:
    trials are asked and told here, and trials_to_run() counts the grid points left before any starts."""
    import optuna

    class AskAndTellGrid(optuna.samplers.GridSampler):
        def after_trial(self, *args: Any) -> None:
            return None

    return AskAndTellGrid(space, seed=seed)


def pruner_for(checked: search.Search) -> Any:
    """Hyperband's own pruner; the median rule for --early-stopping auto; else none."""
    import optuna

    if checked.strategy == "Hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=search.hyperband_max_resource(checked))
    if checked.early_stopping:
        return optuna.pruners.MedianPruner(n_startup_trials=MEDIAN_STARTUP_TRIALS, n_warmup_steps=0)
    return optuna.pruners.NopPruner()


# ---------------------------------------------------------------------------------------------------------------
# The study file


def open_study(path: Path, checked: search.Search) -> optuna.Study:
    """The study in `path`, created when missing; a study of another objective or direction is refused."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    path.parent.mkdir(parents=True, exist_ok=True)
    direction: Literal["maximize", "minimize"] = "maximize" if checked.objective.maximize else "minimize"
    try:
        study = optuna.create_study(
            storage=f"sqlite:///{path}", study_name=STUDY_NAME, direction=direction, load_if_exists=True
        )
    except Exception as error:  # SQLAlchemy's errors: a file that is not a study
        raise CliError(f"--study {path}: not an optuna study file ({type(error).__name__}: {error})") from None
    earlier = study.user_attrs.get("objective")
    wanted = f"{'maximize' if checked.objective.maximize else 'minimize'} {checked.objective.metric}"
    found = earlier or f"{study.direction.name.lower()} (its objective unknown)"
    if (earlier and earlier != wanted) or study.direction.name.lower() != direction:
        raise CliError(
            f"--study {path} holds a search to {found}, not to {wanted}: give another --study file, or the"
            " objective and direction it was started with"
        )
    study.set_user_attr("objective", wanted)
    study.set_user_attr("strategy", checked.strategy)
    return study


def trials_to_run(study: optuna.Study, checked: search.Search) -> int:
    """--max-jobs, but no more than the grid points still to try with Grid."""
    if checked.strategy != "Grid":
        return checked.max_jobs
    grid(checked.ranges)  # categorical ranges only
    points = search.grid_size(checked.ranges)
    tried = {tuple(sorted(t.params.items())) for t in study.trials if t.state.is_finished()}
    return max(0, min(checked.max_jobs, points - len(tried)))


# ---------------------------------------------------------------------------------------------------------------
# The leaderboard and the end of the search


def ranked(study_trials: Sequence[optuna.trial.FrozenTrial], maximize: bool) -> list[optuna.trial.FrozenTrial]:
    """Best first: completed trials by objective, then pruned, running and failed ones."""

    def key(trial: optuna.trial.FrozenTrial) -> tuple[int, float, int]:
        value = reported_value(trial)
        score = math.inf if value is None or math.isnan(value) else (-value if maximize else value)
        return STATE_ORDER.get(trial.state.name, 5), score, trial.number

    return sorted(study_trials, key=key)


def reported_value(trial: optuna.trial.FrozenTrial) -> float | None:
    """The objective: a completed trial's, else the last one its log reported."""
    if trial.value is not None:
        return float(trial.value)
    if trial.intermediate_values:
        return float(trial.intermediate_values[max(trial.intermediate_values)])
    return None


def leaderboard(
    study_trials: Sequence[optuna.trial.FrozenTrial], objective: search.Objective, names: Sequence[str]
) -> list[str]:
    """The trials as a table, best first: objective, the ranged hyperparameters, seconds, and what ended it."""
    rows = [("trial", "state", objective.metric, *names, "seconds", "note")]
    for trial in ranked(study_trials, objective.maximize):
        value = reported_value(trial)
        hyperparameters = trial.user_attrs.get("hyperparameters", {})
        note = trial.user_attrs.get("failure") or ""
        if trial.state.name == "PRUNED" and trial.intermediate_values:
            note = f"pruned at epoch {max(trial.intermediate_values)}"
        seconds = trial.user_attrs.get("seconds")
        rows.append(
            (
                str(trial.number),
                trial.state.name.lower(),
                "-" if value is None else f"{value:.6g}",
                *(clip(short(hyperparameters.get(name, "-")), 24) for name in names),
                "-" if seconds is None else f"{seconds:.0f}",
                clip(note, 70),
            )
        )
    return aligned(rows)


def short(value: str) -> str:
    """A number in 6 significant digits (a sampled 0.012164941464151846 as 0.0121649); other text as is."""
    try:
        number = float(value)
    except ValueError:
        return value
    return value if value.isdigit() else f"{number:.6g}"


def quoted(option: str, values: Iterable[str] | None) -> list[str]:
    return [f"{option} {shlex.quote(value)}" for value in values or []]


def aws_command(args: argparse.Namespace, checked: search.Search, channels: Sequence[Channel]) -> list[str]:
    """The `optml tune` command that runs this search in AWS: the CAPITALS are for the user to fill in."""
    search_line = [
        f"optml tune --ranges {shlex.quote(str(args.ranges))}",
        f"--objective {shlex.quote(checked.objective.metric)}",
        "--maximize" if checked.objective.maximize else "--minimize",
        f"--strategy {checked.strategy}",
        f"--max-jobs {checked.max_jobs}",
    ]
    if (args.parallel or 1) > 1:
        search_line.append(f"--max-parallel-jobs {args.parallel}")
    if checked.early_stopping and checked.strategy != "Hyperband":
        search_line.append("--early-stopping auto")
    if checked.seed is not None:
        search_line.append(f"--random-seed {checked.seed}")
    hyperparameters = quoted("--hp-file", [args.hp_file] if args.hp_file else []) + quoted("--hp", args.hp)
    experiment_name, run_name = runs.experiment_of(args)
    experiment = quoted("--experiment", [experiment_name] if experiment_name else [])
    experiment += quoted("--run", [run_name] if run_name else [])
    channel_options = [f"--channel {c.name}=s3://BUCKET/PREFIX/{c.name}" for c in channels]
    channel_options += [f"--content-type {c.name}={shlex.quote(c.content_type)}" for c in channels if c.content_type]
    lines = [
        search_line,
        hyperparameters + quoted("--metric", args.metric) + experiment,
        ["--image-uri ACCOUNT.dkr.ecr.REGION.amazonaws.com/optml:latest", "--role arn:aws:iam::ACCOUNT:role/ROLE"],
        channel_options,
        ["--output-path s3://BUCKET/PREFIX/tuning", "--region REGION", "--wait"],
    ]
    text = [" ".join(line) for line in lines if line]
    return [line + (" \\" if number < len(text) - 1 else "") for number, line in enumerate(text)]


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    completed = [t for t in study.trials if t.state.name == "COMPLETE"]
    return ranked(completed, study.direction.name == "MAXIMIZE")[0] if completed else None


def final_text(study: optuna.Study, checked: search.Search, command: Sequence[str], tuning_file: Path) -> list[str]:
    """What the search prints last: the best trial, its model, the AWS command."""
    best = best_trial(study)
    if best is None:
        return ["", "no trial completed: see each trial's log.txt", f"trials: {shown_path(tuning_file)}"]
    hyperparameters = best.user_attrs.get("hyperparameters", {})
    return [
        "",
        f"best: trial {best.number}, {checked.objective.metric}={best.value:.6g}",
        *aligned([(name, value) for name, value in hyperparameters.items()] or [("(no ranges)", "")]),
        f"model: {shown_path(Path(best.user_attrs['folder']) / 'model')}/",
        f"trials: {shown_path(tuning_file)}",
        "",
        "the same search in AWS (fill in ACCOUNT, REGION, ROLE and BUCKET/PREFIX; upload each channel first:"
        " aws s3 sync FOLDER s3://BUCKET/PREFIX/NAME):",
        *(f"  {line}" if number == 0 else f"      {line}" for number, line in enumerate(command)),
    ]


def tuning_summary(study: optuna.Study, checked: search.Search, study_path: Path) -> dict[str, Any]:
    """What OUTPUT/tuning.json holds: the search and every trial of the study."""
    best = best_trial(study)
    return {
        "study": str(study_path),
        "objective": checked.objective.metric,
        "direction": study.direction.name.lower(),
        "strategy": checked.strategy,
        "best_trial": None if best is None else best.number,
        "trials": [
            {
                "number": t.number,
                "state": t.state.name.lower(),
                "objective": reported_value(t),
                "hyperparameters": t.user_attrs.get("hyperparameters", {}),
                "metrics": t.user_attrs.get("metrics", {}),
                "seconds": t.user_attrs.get("seconds"),
                "failure": t.user_attrs.get("failure"),
                "model": str(Path(t.user_attrs["folder"]) / "model") if "folder" in t.user_attrs else None,
            }
            for t in study.trials
        ],
    }


# ---------------------------------------------------------------------------------------------------------------
# Running the trials


@dataclass
class LocalSearch:
    """The trials of one invocation: each one asked of the study, run as a container, told back."""

    study: optuna.Study
    client: docker.DockerClient
    checked: search.Search
    image: str
    output: Path
    channels: tuple[trials.MountedChannel, ...]
    budget: int  # trials still to start
    timeout: int | None = None
    experiment: str | None = None
    run_name: str | None = None
    out: TextIO = field(default_factory=lambda: sys.stdout)  # the leaderboard
    progress: TextIO = field(default_factory=lambda: sys.stderr)  # a line per trial's epoch
    search_id: str = field(default_factory=lambda: secrets.token_hex(6))
    stopping: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self) -> bool:
        """One more trial to start, unless the budget is spent or the search is stopping."""
        with self.lock:
            if self.budget <= 0 or self.stopping.is_set():
                return False
            self.budget -= 1
            return True

    def worker(self) -> None:
        while self.take():
            self.one_trial()

    def stop(self) -> None:
        """No trial starts any more; every container of this search goes (their trials then fail)."""
        self.stopping.set()
        trials.remove_labelled(self.client, self.search_id)

    def spec(self, number: int, values: Mapping[str, str]) -> trials.TrialSpec:
        from optml.container.config import TUNING_OBJECTIVE_KEY  # what SageMaker's tuner adds to each job's

        objective = self.checked.objective.metric
        return trials.TrialSpec(
            image=self.image,
            folder=self.output / f"trial-{number:03d}",
            channels=self.channels,
            hyperparameters={
                **self.checked.static_hyperparameters,
                **values,
                TUNING_OBJECTIVE_KEY: objective,
            },
            metric_definitions=self.checked.metric_definitions,
            objective=objective,
            labels={trials.LABEL: self.search_id},
            timeout=self.timeout,
        )

    def one_trial(self) -> None:
        from optuna.trial import TrialState

        trial = self.study.ask(distributions(self.checked.ranges))
        values = hyperparameter_values(self.checked.ranges, trial.params)
        spec = self.spec(trial.number, values)
        trial.set_user_attr("hyperparameters", values)  # the leaderboard shows a running trial's values
        trial.set_user_attr("folder", str(spec.folder))

        def on_epoch(epoch: int, value: float) -> bool:
            print(f"trial {trial.number} epoch {epoch}: {spec.objective}={value:.6g}", file=self.progress, flush=True)
            trial.report(value, epoch)
            return bool(trial.should_prune())

        try:
            result = trials.run_trial(self.client, spec, on_epoch)
        except Exception as error:  # the engine's errors, a container removed by a stop: the trial failed
            reason = "interrupted" if self.stopping.is_set() else f"{type(error).__name__}: {error}"
            result = trials.TrialResult(trials.FAILED, None, {}, 0.0, reason)
        for key, value in (("metrics", result.metrics), ("seconds", result.seconds), ("failure", result.failure)):
            trial.set_user_attr(key, value)
        if result.status == trials.COMPLETED:
            self.study.tell(trial, result.objective)
        else:
            self.study.tell(trial, state=TrialState.PRUNED if result.status == trials.PRUNED else TrialState.FAIL)
        self.record(trial.number, spec, result)
        self.show()

    def record(self, number: int, spec: trials.TrialSpec, result: trials.TrialResult) -> None:
        runs.record_safely(
            runs.new_record(
                kind=runs.TUNING_TRIAL,
                name=f"{shown_path(self.output)}/trial-{number:03d}",
                image=self.image,
                hyperparameters=spec.hyperparameters,
                metrics=result.metrics,
                model=str(spec.folder / "model"),
                status=result.status,
                experiment=self.experiment,
                run=self.run_name,
                tuning={"study": str(self.output), "trial": number, "objective": spec.objective},
            ),
            self.progress,
        )

    def show(self) -> None:
        names = [item.name for item in self.checked.ranges]
        with self.lock:
            table = leaderboard(self.study.trials, self.checked.objective, names)
            print("", *table, sep="\n", file=self.out, flush=True)


def optimize(local: LocalSearch, parallel: int) -> None:
    """Run `local`'s trials, `parallel` at a time; Ctrl-C, a SIGTERM (a CI runner's timeout, `kill`) or an error
    removes every container it started."""
    from optml.cli.localmode import time_limit

    try:
        with time_limit(0), ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="trial") as pool:
            futures = [pool.submit(local.worker) for _ in range(parallel)]
            try:
                for future in futures:
                    future.result()
            except BaseException:
                local.stop()
                raise
    finally:
        local.stop()


# ---------------------------------------------------------------------------------------------------------------
# The command


def run(args: argparse.Namespace, checked: search.Search, channels: tuple[Channel, ...]) -> int:
    if not args.output_path:
        raise CliError("--output-path is required: the folder for the trials (trial-NNN/), the study and tuning.json")
    with jobs.local_checks():
        from optml.cli import localmode

        output = localmode.local_path(args.output_path)
        study_path = localmode.local_path(args.study) if args.study else output / STUDY_FILE
    mounted = trials.mounted_channels(channels)
    distributions(checked.ranges)  # a range optuna cannot sample fails now, not in a trial
    trials.MetricReader(checked.metric_definitions, checked.objective.metric)
    require_optuna()
    image = args.image_uri or jobs.LOCAL_IMAGE
    client = engine_with_image(image)
    study = open_study(study_path, checked)
    refuse_trial_folders(output, len(study.trials))
    budget = trials_to_run(study, checked)
    seed = checked.seed
    if seed is not None and study.trials and checked.strategy != "Grid":
        seed += len(study.trials)  # a resumed search does not draw the first run's values again
    study.sampler = sampler_for(checked, seed, len(study.trials) + budget)
    study.pruner = pruner_for(checked)
    experiment, run_name = runs.experiment_of(args)
    local = LocalSearch(
        study, client, checked, image, output, mounted, budget, args.timeout or None, experiment, run_name
    )
    print(f"{budget} trial(s) of {image}, {args.parallel or 1} at a time; study {shown_path(study_path)}", flush=True)
    output.mkdir(parents=True, exist_ok=True)
    tuning_file = output / TUNING_FILE
    try:
        optimize(local, args.parallel or 1)
    finally:  # an interrupted search's trials too
        tuning_file.write_text(json.dumps(tuning_summary(study, checked, study_path), indent=2) + "\n")
    print(*final_text(study, checked, aws_command(args, checked, channels), tuning_file), sep="\n", flush=True)
    return 0 if best_trial(study) is not None else 1


def require_optuna() -> None:
    try:
        import optuna  # noqa: F401
    except ImportError:
        raise CliError("optml tune --local needs optuna: pip install '.[local]'") from None


def engine_with_image(image: str, connect: Callable[[], docker.DockerClient] | None = None) -> docker.DockerClient:
    """The Docker engine, holding `image` (a trial never pulls: the image is the one you built)."""
    import docker

    from optml.cli import docker_client

    client = (connect or docker_client.connect)()
    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        raise CliError(f"image {image} is not on this machine: build it (optml build) or pass --image-uri") from None
    return client


def refuse_trial_folders(output: Path, first: int) -> None:
    """Trial folders numbered from `first` on belong to another study: its files are not overwritten."""
    taken = sorted(p.name for p in output.glob("trial-*") if p.name[6:].isdigit() and int(p.name[6:]) >= first)
    if taken:
        raise CliError(
            f"{shown_path(output)} holds {', '.join(taken)} of another search: give another --output-path, or"
            f" --study {shown_path(output / STUDY_FILE)} to continue that search"
        )
