# One image for the API and the worker. The CUDA runtime base lets the worker use the GPU when the
# container is given one; the API process never imports torch, so it runs fine on the same image.
FROM pytorch/pytorch:2.4.1-cuda12.1-cudnn9-runtime

WORKDIR /app
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PRUNESCOPE_DATA_DIR=/data
COPY pyproject.toml README.md ./
COPY api ./api
COPY worker ./worker
COPY pruning_core ./pruning_core
COPY frontend ./frontend
RUN pip install --no-cache-dir .
VOLUME /data
EXPOSE 8000
CMD ["prunescope", "serve", "--host", "0.0.0.0", "--port", "8000", "--no-demo"]
