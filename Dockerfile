# optml: one image that SageMaker runs as `train` and as `serve`.
#
# Build with `make image`: it fills ./wheelhouse from requirements/image.lock on the host and picks the
# base image (the public python image, or a local debootstrap stand-in where no registry is reachable).
# Nothing in the build touches the network.
ARG BASE_IMAGE=python:3.11-slim-bookworm

# ---- dependencies: a virtual environment installed from the host-built wheelhouse ----
FROM ${BASE_IMAGE} AS deps
COPY requirements/image.lock /tmp/image.lock
# The wheels stay in this stage: the runtime stage copies only the installed venv.
COPY wheelhouse /tmp/wheelhouse
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --no-index --find-links /tmp/wheelhouse -r /tmp/image.lock \
 && /opt/venv/bin/pip uninstall -y -q pip

# ---- runtime ----
FROM ${BASE_IMAGE}
LABEL com.amazonaws.sagemaker.capabilities.accept-bind-to-port=true \
      com.amazonaws.sagemaker.capabilities.multi-models=true \
      org.opencontainers.image.title="optml" \
      org.opencontainers.image.description="SageMaker-compatible PyTorch training and serving container"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/opt/optml \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LANG=C.UTF-8
COPY --from=deps /opt/venv /opt/venv
COPY container /opt/optml/container
COPY train /opt/optml/train
COPY serve /opt/optml/serve
RUN python -m compileall -q /opt/optml
WORKDIR /opt/optml
EXPOSE 8080
# Only meaningful for `serve`; a training container has no server and Docker just reports it unhealthy.
HEALTHCHECK --interval=10s --timeout=2s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/ping' % os.environ.get('SAGEMAKER_BIND_TO_PORT', '8080'), timeout=2)"]
ENTRYPOINT ["python", "-m", "container.entrypoint"]
