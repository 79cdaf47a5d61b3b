# Two images from one wheel (multi-stage; `docker build --target api|worker .`):
#   api    - the API server and the dashboard on a slim Python base, WITHOUT torch: it validates, plans,
#            previews and enqueues; jobs run on workers (it needs PRUNESCOPE_BROKER_URL).
#   worker - `prunescope worker` on a CUDA runtime base with torch: prunescope[torch].
# The build stage makes the wheel, so both images install exactly what `pip install prunescope` does.

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY api ./api
COPY worker ./worker
COPY pruning_core ./pruning_core
COPY frontend ./frontend
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim AS api
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PRUNESCOPE_DATA_DIR=/data
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/prunescope-*.whl && rm -rf /wheels \
    && ! python -c "import torch" 2>/dev/null
VOLUME /data
EXPOSE 8000
CMD ["prunescope", "serve", "--host", "0.0.0.0", "--port", "8000", "--no-demo"]

# torch and torchvision come with the base image; the extra adds torch-pruning and scikit-learn.
FROM pytorch/pytorch:2.4.1-cuda12.1-cudnn9-runtime AS worker
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PRUNESCOPE_DATA_DIR=/data
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir "$(ls /wheels/prunescope-*.whl)[torch]" && rm -rf /wheels
VOLUME /data
CMD ["prunescope", "worker", "--concurrency", "1"]
