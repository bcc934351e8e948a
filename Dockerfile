# The review_nlp training and serving image for SageMaker: `docker run IMAGE train` and
# `docker run IMAGE serve` (ENTRYPOINT below; CMD defaults to train).
#
# Builds need no network: pip installs only from a wheelhouse in the build context.
#   python3 -m pip download -d wheelhouse -c constraints.txt -r container/requirements.txt \
#       "setuptools>=68" wheel
#   DOCKER_BUILDKIT=0 docker build --network none -t review-nlp .
# With the default BASE_IMAGE, a PyTorch CUDA image, the virtual environment is created with
# --system-site-packages, so the base image's torch satisfies `torch>=2.2,<3` and pip installs
# no second copy; a torch wheel in the wheelhouse is then unused and can be deleted. On a base
# image without torch (the CPU test image), the wheelhouse must contain a torch wheel.
ARG BASE_IMAGE=pytorch/pytorch:2.6.0-cuda12.4-cudnn9-runtime

# Stage 1: the dependencies in a virtual environment. Cached until the wheelhouse or
# container/requirements.txt change.
FROM ${BASE_IMAGE} AS deps
ARG WHEELHOUSE=wheelhouse
COPY ${WHEELHOUSE}/ /wheels/
COPY container/requirements.txt /build/container/requirements.txt
RUN python3 -m venv --system-site-packages /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --no-index --find-links /wheels \
        -r /build/container/requirements.txt

# Stage 2: the review_nlp wheel, built from this checkout.
FROM deps AS package
COPY pyproject.toml README.md /build/
COPY src/ /build/src/
COPY container/ /build/container/
RUN /opt/venv/bin/pip wheel --no-cache-dir --no-index --find-links /wheels --no-deps \
        --wheel-dir /dist /build

# The image: the environment of stage 1 (a cached layer when only the code changed) plus
# the package, without the wheelhouse.
FROM ${BASE_IMAGE}
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/program:/opt/venv/bin:$PATH \
    MPLBACKEND=Agg
COPY --from=deps /opt/venv /opt/venv
COPY --from=package /dist/ /tmp/dist/
RUN /opt/venv/bin/pip install --no-cache-dir --no-index --no-deps /tmp/dist/*.whl \
    && rm -rf /tmp/dist
COPY container/bin/train container/bin/serve /opt/program/
WORKDIR /opt/program
EXPOSE 8080
ENTRYPOINT ["/opt/venv/bin/python", "-m", "review_nlp.container"]
CMD ["train"]
