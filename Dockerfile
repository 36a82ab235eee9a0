# optml: one image that SageMaker runs as `train` and as `serve`.
#
# Build with `optml build` (or `make image`, which runs it): it fills the wheelhouse from the lock on the
# host, for linux/amd64, picks the base image (the public python image, or a local debootstrap stand-in
# where no registry is reachable) and passes what differs between the CPU and the GPU image as the build
# arguments below. Nothing in the build touches the network.
ARG BASE_IMAGE=python:3.11-slim-bookworm
# cpu, or gpu (`optml build --gpu`): the GPU image installs the CUDA build of torch from its own lock and
# wheelhouse, and asks the NVIDIA container runtime for the GPUs.
ARG VARIANT=cpu
ARG IMAGE_LOCK=requirements/image.lock
ARG WHEELHOUSE=wheelhouse

# ---- dependencies: a virtual environment installed from the host-built wheelhouse ----
FROM ${BASE_IMAGE} AS deps
ARG IMAGE_LOCK
ARG WHEELHOUSE
COPY ${IMAGE_LOCK} /tmp/image.lock
# The wheels stay in this stage: the runtime stage copies only the installed venv.
COPY ${WHEELHOUSE} /tmp/wheelhouse
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --no-index --find-links /tmp/wheelhouse -r /tmp/image.lock
# pip stays: script mode installs a user's requirements.txt (container/user_code.py), and SDK v3's own
# training driver (sm_train.sh) runs pip, bash, tar and torchrun.

# ---- runtime ----
FROM ${BASE_IMAGE} AS runtime-cpu
FROM ${BASE_IMAGE} AS runtime-gpu
# The NVIDIA container runtime mounts the GPUs and the driver's libraries into containers whose image asks
# for them, as the nvidia/cuda images do; GPU hosts that run it by default (SageMaker's) need the ask.
ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

FROM runtime-${VARIANT}
LABEL com.amazonaws.sagemaker.capabilities.accept-bind-to-port=true \
      com.amazonaws.sagemaker.capabilities.multi-models=true \
      org.opencontainers.image.title="optml" \
      org.opencontainers.image.description="SageMaker-compatible PyTorch training and serving container"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/opt/optml \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LANG=C.UTF-8 \
    MPLCONFIGDIR=/opt/optml-cache/matplotlib
COPY --from=deps /opt/venv /opt/venv
# matplotlib's font cache, built once here instead of in every training job (~0.6 s, "generated new
# fontManager"); the directory stays writable for a job that runs as another user.
RUN python -c "import matplotlib.font_manager" && chmod -R a+rwX /opt/optml-cache
# One import name, optml: the top-level folders become optml.container, optml.train and optml.serve, and
# nothing a user's own train.py or serve.py could shadow (or be shadowed by) is on the path.
COPY optml/__init__.py /opt/optml/optml/__init__.py
COPY container /opt/optml/optml/container
COPY train /opt/optml/optml/train
COPY serve /opt/optml/optml/serve
# Script mode's helpers for a user's own train.py (`import optml_runtime`): beside optml, on PYTHONPATH.
COPY optml_runtime /opt/optml/optml_runtime
RUN python -m compileall -q /opt/optml
WORKDIR /opt/optml
EXPOSE 8080
# Right for every start: /ping when a model server runs, healthy otherwise (training, a replaced
# entrypoint); see container/healthcheck.py. -I: standard library only, whatever the caller's PYTHONPATH.
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["/opt/venv/bin/python", "-I", "/opt/optml/optml/container/healthcheck.py"]
ENTRYPOINT ["python", "-m", "optml.container.entrypoint"]
