"""`python -m optml.serve.run ARGS`: gunicorn's own runner, with a stop handled from the first line.

`serve` (serve/main.py) execs this as PID 1 of the container. gunicorn installs its signal handlers only
after its imports and the model's load, and the kernel sends PID 1 no signal it has no handler for: a
SIGTERM in those seconds would wait for SageMaker's SIGKILL (container/signals.py). Nothing else is
imported before the handler, to keep that window as short as the interpreter's start.
"""

from optml.container.signals import exit_on_stop_until_handled


def main() -> None:
    exit_on_stop_until_handled()
    from gunicorn.app.wsgiapp import run

    run(prog="gunicorn")


if __name__ == "__main__":
    main()
