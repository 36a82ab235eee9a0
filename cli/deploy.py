"""`optml deploy`, `optml invoke` and `optml delete-endpoint`: a real-time endpoint of the image.

In AWS an endpoint is three resources, which `optml deploy` names alike: the model (image + model.tar.gz),
the endpoint config (instance type and count of its one variant) and the endpoint; `optml delete-endpoint
NAME` deletes all three. With --local, the same requests go to SageMaker local mode: the endpoint runs in
Docker on this machine, predicts --predict-csv's rows, or serves until Ctrl-C.
"""

from __future__ import annotations

import argparse
import re
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, TextIO

from optml.cli import follow, jobs, localmode
from optml.cli.aws import Aws
from optml.cli.errors import CliError
from optml.cli.jobs import Request

DEFAULT_INSTANCE_TYPE = "ml.m5.large"
# Instance families with a GPU or another accelerator (g4dn, g5, g6, p3, p4d, p5, inf1, inf2, trn1, ...).
GPU_INSTANCE = re.compile(r"ml\.(g|p|inf|trn)\d")
DEFAULT_VARIANT = "AllTraffic"
CUSTOM_ATTRIBUTES = re.compile(r"[\x20-\x7e]{1,1024}")  # InvokeEndpoint's own rule for CustomAttributes
INVOKE_LIMIT = 6 * 1024 * 1024  # bytes: InvokeEndpoint's largest request body
TEXT_TYPES = ("text/csv", "application/json", "application/jsonlines")

DEPLOY_EXAMPLES = """\
examples:
  # an endpoint in AWS of a model a training job made, waiting until it is InService
  optml deploy --image-uri 123456789012.dkr.ecr.eu-west-1.amazonaws.com/optml:latest \\
      --role arn:aws:iam::123456789012:role/SageMakerExecution \\
      --model-data s3://my-bucket/churn/models/optml-20261201-152143-0e51/output/model.tar.gz \\
      --name churn --instance-type ml.m5.large --wait

  # local mode: host a model in Docker, predict a few CSV rows, delete the endpoint
  optml deploy --local --model-data demo-output/optml-v3-.../compressed_artifacts/model.tar.gz \\
      --predict-csv rows.csv
  # ... or serve on localhost:8080 until Ctrl-C (optml invoke --local rows.csv meanwhile)
  optml deploy --local --model-data model.tar.gz
"""
INVOKE_EXAMPLES = """\
examples:
  optml invoke --endpoint churn rows.csv                       # text/csv, by the file's extension
  optml invoke --endpoint churn batch.json --accept application/jsonlines
  optml invoke --local rows.csv                                # the endpoint of `optml deploy --local`
"""


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    add_deploy_parser(commands)
    add_invoke_parser(commands)
    add_delete_parser(commands)


def add_deploy_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "deploy",
        help="host a model behind an endpoint in AWS or in local mode",
        description=__doc__,
        epilog=DEPLOY_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model-data", metavar="URI", help="the model.tar.gz: s3://...; with --local a local file")
    jobs.add_image_and_role(parser, "the IAM role SageMaker assumes for the model")
    parser.add_argument("--name", help="the endpoint's name, and its model's and config's (default: optml-<time>)")
    parser.add_argument("--instance-type", help=f"default {DEFAULT_INSTANCE_TYPE}")
    parser.add_argument("--instance-count", type=jobs.positive, help="instances behind the endpoint (default 1)")
    parser.add_argument("--variant", default=DEFAULT_VARIANT, help=f"the variant's name (default {DEFAULT_VARIANT})")
    parser.add_argument(
        "--env", action="append", metavar="KEY=VALUE", help="the container's environment (README 'Settings')"
    )
    parser.add_argument("--wait", action="store_true", help="wait until the endpoint is InService")
    jobs.add_aws_options(parser)
    local = jobs.add_local_options(
        parser,
        local_help="host the model in SageMaker local mode, in Docker on this machine (no AWS account needed)",
        summary_help="--local: a JSON file for the run's summary; a summary of the training run that made the"
        " model is added to",
    )
    local.add_argument("--predict-csv", metavar="FILE", help="CSV rows of features (no label) to predict, then stop")
    local.add_argument(
        "--predict-from",
        metavar="PATH",
        help=f"or label-first CSV data, a file or folder (e.g. the validation channel): predict its first"
        f" {localmode.DEFAULT_PREDICT_ROWS} rows, the label column dropped, then stop",
    )
    local.add_argument(
        "--serving-port",
        type=jobs.positive,
        default=jobs.DEFAULT_SERVING_PORT,
        help=f"the host port of the endpoint (default {jobs.DEFAULT_SERVING_PORT}; must be free)",
    )
    parser.set_defaults(run=deploy)


def add_invoke_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "invoke",
        help="send a file to an endpoint and print the answer",
        description="Send a file to an endpoint (InvokeEndpoint) with the content type its extension says, and"
        " print the answer.",
        epilog=INVOKE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("file", metavar="FILE", help="the request body: .csv, .json, .jsonl, .npy or .npz")
    parser.add_argument("--endpoint", metavar="NAME", help="the endpoint in AWS")
    parser.add_argument("--content-type", help="the body's type (default: by the file's extension)")
    parser.add_argument("--accept", help="the answer's type (default: the body's; JSON for .npy and .npz)")
    parser.add_argument(
        "--custom-attributes", metavar="TEXT", help="e.g. output=probabilities (README 'Custom attributes')"
    )
    parser.add_argument("--output", metavar="FILE", help="write the answer to FILE instead of printing it")
    parser.add_argument("--local", action="store_true", help="the local endpoint of `optml deploy --local`")
    parser.add_argument("--serving-port", type=jobs.positive, default=jobs.DEFAULT_SERVING_PORT, help="with --local")
    jobs.add_aws_options(parser)
    parser.set_defaults(run=invoke)


def add_delete_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "delete-endpoint",
        help="delete an endpoint, its config and its model",
        description="Delete an endpoint and the endpoint config and model `optml deploy` made with it (they share"
        " its name), so that nothing is left to bill.",
        epilog="example:\n  optml delete-endpoint churn",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("name", metavar="NAME", help="the endpoint")
    parser.add_argument("--endpoint-only", action="store_true", help="keep the endpoint config and the model")
    jobs.add_aws_options(parser)
    parser.set_defaults(run=delete_endpoint)


def endpoint_requests(model: Request, instance_type: str, instance_count: int, variant: str) -> list[Request]:
    """The model, an endpoint config of one variant, and the endpoint: all three with the model's name."""
    name = model.params["ModelName"]
    production_variant = {
        "VariantName": variant,
        "ModelName": name,
        "InitialInstanceCount": instance_count,
        "InstanceType": instance_type,
        "InitialVariantWeight": 1.0,
    }
    return [
        model,
        Request(
            "sagemaker",
            "CreateEndpointConfig",
            {"EndpointConfigName": name, "ProductionVariants": [production_variant]},
        ),
        Request("sagemaker", "CreateEndpoint", {"EndpointName": name, "EndpointConfigName": name}),
    ]


def deletion_requests(name: str, endpoint_only: bool = False) -> list[Request]:
    requests = [Request("sagemaker", "DeleteEndpoint", {"EndpointName": name})]
    if not endpoint_only:
        requests.append(Request("sagemaker", "DeleteEndpointConfig", {"EndpointConfigName": name}))
        requests.append(Request("sagemaker", "DeleteModel", {"ModelName": name}))
    return requests


def deploy(args: argparse.Namespace) -> int:
    environment = jobs.environment(args.env)
    if args.local:
        return deploy_locally(args, environment)
    if args.predict_csv or args.predict_from:
        option = "--predict-csv" if args.predict_csv else "--predict-from"
        raise CliError(f"{option} works with --local; for an endpoint in AWS use `optml invoke --endpoint NAME FILE`")
    image = jobs.ecr_image(args.image_uri)
    role = jobs.role_arn(args.role)
    if not args.model_data:
        raise CliError("--model-data is required: the model.tar.gz in S3 that `optml train --wait` prints")
    model_data = jobs.s3_uri(args.model_data, "--model-data")
    name = jobs.resource_name(args.name)
    model = jobs.model_request(name, image, model_data, role, environment)
    instance_type = jobs.instance_type(args.instance_type or DEFAULT_INSTANCE_TYPE)
    if GPU_INSTANCE.match(instance_type):
        print(
            f"optml: note: optml's server predicts on the CPU, also in the GPU image: {instance_type} pays for"
            " accelerators the endpoint will not use (an ml.c* or ml.m* type serves the same model)",
            file=sys.stderr,
        )
    requests = endpoint_requests(
        model, instance_type, args.instance_count or 1, jobs.resource_name(args.variant, option="--variant")
    )
    return deploy_in_aws(requests, jobs.aws_from(args), args.wait, sys.stdout)


def deploy_in_aws(requests: list[Request], aws: Aws, wait: bool, out: TextIO, **follow_options: Any) -> int:
    jobs.send(aws, requests)
    if aws.dry_run:
        return 0
    name = requests[-1].params["EndpointName"]
    print(
        f"endpoint {name} is being created (minutes); then: optml invoke --endpoint {name} FILE", file=out, flush=True
    )
    if not wait:
        return 0
    endpoint = follow.succeeded(
        aws, "endpoint", "DescribeEndpoint", {"EndpointName": name}, "EndpointStatus", follow.ENDPOINT_DONE, out,
        **follow_options,
    )  # fmt: skip
    return 0 if endpoint else 1


def deploy_locally(args: argparse.Namespace, environment: dict[str, str]) -> int:
    from optml.cli import local_v3

    model_data = jobs.local_model(args, {}, "the model.tar.gz that `optml train --local` wrote")
    with jobs.local_checks():
        rows = rows_to_predict(args.predict_csv, args.predict_from)
        summary = localmode.local_path(args.summary) if args.summary else None
    image = args.image_uri or jobs.LOCAL_IMAGE
    port = args.serving_port
    timeout = args.timeout
    if timeout is None:  # hosting until Ctrl-C has no time limit of its own
        timeout = jobs.DEFAULT_LOCAL_TIMEOUT if rows else 0

    def steps(run: localmode.LocalRun) -> None:
        janitor = run.start_docker(image, port)
        local = local_v3.session(port)
        model = jobs.model_request(run.name, image, localmode.file_uri(model_data), None, environment)
        create, delete = endpoint_requests(model, "local", 1, args.variant), deletion_requests(run.name)
        run.result.update(model_data=str(model_data), endpoint=run.name)
        if rows:
            run.record_predictions(lambda: local_v3.deploy_and_predict(local, create, delete, rows, janitor))
        else:
            local_v3.host(local, create, delete, port, janitor)

    extends = localmode.training_summary_of(summary, model_data) if summary else None
    run = localmode.run_locally(local_v3.RUN_PREFIX, steps, timeout, args.allow_telemetry, args.verbose, extends)
    return localmode.finish(
        run.result, summary, run.exit_code, lambda file: localmode.run_summary_text(run.result, rows, file)
    )


def rows_to_predict(predict_csv: str | None, predict_from: str | None) -> list[str]:
    """--predict-csv's rows, or the first rows of --predict-from with their label dropped; none: host."""
    if predict_csv and predict_from:
        raise CliError("--predict-csv or --predict-from: one of them, not both")
    if predict_csv or predict_from:
        return localmode.read_predict_rows(predict_csv, predict_from, "")
    return []


def invoke(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not path.is_file():
        raise CliError(f"{args.file} does not exist")
    content_type = jobs.content_type_of(path, args.content_type)
    accept = args.accept or (content_type if content_type.split(";")[0] in TEXT_TYPES else "application/json")
    body = path.read_bytes()
    if args.local:
        jobs.refuse_with_local({"--endpoint": args.endpoint, "--dry-run": args.dry_run})
        answer, answer_type = invoke_locally(args.serving_port, body, content_type, accept, args.custom_attributes)
        return show_answer(answer, answer_type, args.output)
    if not args.endpoint:
        raise CliError("--endpoint NAME is required (the name `optml deploy` printed), or --local")
    if args.custom_attributes and not CUSTOM_ATTRIBUTES.fullmatch(args.custom_attributes):
        raise CliError(
            f"--custom-attributes is {len(args.custom_attributes)} characters: SageMaker forwards at most"
            " 1024 visible ASCII characters"
        )
    if len(body) > INVOKE_LIMIT:
        raise CliError(
            f"{args.file} is {len(body)} bytes; an endpoint takes at most {INVOKE_LIMIT} (6 MiB) per request: split"
            " it, or run it through `optml transform`"
        )
    request: dict[str, Any] = {
        "EndpointName": args.endpoint,
        "Body": readable(body, content_type),
        "ContentType": content_type,
        "Accept": accept,
    }
    if args.custom_attributes:
        request["CustomAttributes"] = args.custom_attributes
    aws = jobs.aws_from(args)
    response = aws.call("sagemaker-runtime", "InvokeEndpoint", **request)
    if aws.dry_run:
        return 0
    return show_answer(response["Body"].read(), response.get("ContentType", accept), args.output)


def readable(body: bytes, content_type: str) -> bytes | str:
    """A text body as text: the same request, and --dry-run prints it as it is rather than as bytes."""
    if content_type.split(";")[0] in TEXT_TYPES:
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError:
            pass
    return body


def invoke_locally(
    port: int, body: bytes, content_type: str, accept: str, custom_attributes: str | None
) -> tuple[bytes, str]:
    """POST the body to the local endpoint's /invocations, as local mode's runtime client does."""
    headers = {"Content-Type": content_type, "Accept": accept}
    if custom_attributes:
        headers["X-Amzn-SageMaker-Custom-Attributes"] = custom_attributes
    url = f"http://localhost:{port}/invocations"
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.read(), response.headers.get("Content-Type", accept)
    except urllib.error.HTTPError as error:
        raise CliError(f"the endpoint answered HTTP {error.code}: {error.read().decode('utf-8', 'replace')}") from None
    except urllib.error.URLError as error:
        raise CliError(
            f"nothing answers on {url} ({error.reason}): start an endpoint with `optml deploy --local --model-data"
            " model.tar.gz`, which serves until Ctrl-C"
        ) from None


def show_answer(answer: bytes, answer_type: str, output: str | None) -> int:
    if output:
        Path(output).write_bytes(answer)
        print(f"{len(answer)} bytes of {answer_type} written to {output}")
        return 0
    try:
        text = answer.decode("utf-8")
    except UnicodeDecodeError:
        raise CliError(f"the answer is {answer_type}, not text: pass --output FILE to keep it") from None
    print(text, end="" if text.endswith("\n") else "\n")
    return 0


def delete_endpoint(args: argparse.Namespace) -> int:
    name = jobs.resource_name(args.name, option="NAME")
    aws = jobs.aws_from(args)
    jobs.send(aws, deletion_requests(name, args.endpoint_only))
    if not aws.dry_run:
        print(f"deleted endpoint {name}" + ("" if args.endpoint_only else ", its endpoint config and its model"))
    return 0
