# syntax=docker/dockerfile:1
#
# Custom Beam SDK container: the SDK harness that runs the pipeline's Beam steps (validate,
# sessionize, corpora, transform) on Dataflow, or on Flink / Spark through a portable job server.
# Build from the repository root:
#
#   docker build -f docker/beam-worker.Dockerfile -t REGISTRY/adsformer-beam-worker:TAG .
#
# and pass it to the job: --sdk_container_image REGISTRY/adsformer-beam-worker:TAG (Dataflow) or
# --environment_type DOCKER --environment_config REGISTRY/adsformer-beam-worker:TAG (portable
# runners). See docker/README.md.
#
# The base's Beam and Python versions must equal the launcher's: apache-beam 2.77.0 in
# requirements.lock and Python 3.11 (tests/test_docker_images.py checks both).
FROM apache/beam_python3.11_sdk:2.77.0

ARG GIT_SHA=unknown
LABEL org.opencontainers.image.title="adsformer-beam-worker" \
      org.opencontainers.image.description="Beam Python SDK harness with the adsformer pipeline and its locked dependencies" \
      org.opencontainers.image.source="adsformer" \
      org.opencontainers.image.revision="${GIT_SHA}"

# RUN_PYTHON_SDK_IN_DEFAULT_ENVIRONMENT: the boot entrypoint otherwise creates a fresh virtualenv
# at every worker start; with it, the harness runs in exactly the environment checked below.
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    RUN_PYTHON_SDK_IN_DEFAULT_ENVIRONMENT=1

# The same pip as the Makefile's environment (pip itself is not in the lock).
RUN python -m pip install --no-cache-dir "pip==25.3"

# Exactly the lock's pins, over the SDK image's own packages (apache-beam 2.77.0 is already there
# and stays), then the project without dependencies.
COPY requirements.lock /tmp/build/requirements.lock
RUN python -m pip install --no-cache-dir --no-deps -r /tmp/build/requirements.lock

COPY pyproject.toml README.md /tmp/build/src/
COPY schemas /tmp/build/src/schemas
COPY components /tmp/build/src/components
COPY pipelines /tmp/build/src/pipelines
COPY docker/check_env.py /tmp/build/check_env.py
# --no-build-isolation: build with the locked setuptools/wheel. Then fail the build unless every
# pin is installed at its version and the project's dependency closure is consistent (the SDK
# image's extra packages are only reported), and the pipeline's Beam modules import.
RUN python -m pip install --no-cache-dir --no-deps --no-build-isolation /tmp/build/src \
    && python /tmp/build/check_env.py /tmp/build/requirements.lock --project \
    && python -c "import tensorflow_transform.beam, components.validate.transforms, components.sessionize.transforms, components.corpora.transforms, components.transform.transforms" \
    && rm -rf /tmp/build

# Runs as root like the SDK base image: the boot program installs staged artifacts and writes
# under /opt/apache/beam at start-up. The entrypoint stays the SDK harness boot program.
ENTRYPOINT ["/opt/apache/beam/boot"]
