FROM python:3.11-slim
WORKDIR /app
# the CPU build of torch (the default index would pull several GB of CUDA libraries)
RUN pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md ./
COPY app app
COPY indexing indexing
COPY retrieval retrieval
COPY compression compression
COPY generation generation
COPY service service
COPY eval eval
COPY samples samples
RUN pip install --no-cache-dir ".[llm]"
ENV HF_HUB_OFFLINE=1 OMP_NUM_THREADS=2
EXPOSE 8000
# with API keys always: the first start writes an admin key to /data/admin.key (README: Security)
ENV SPANRAG_DATA_DIR=/data
CMD ["sh", "-c", "spanrag keys create --collection '*' --scope admin --name bootstrap --if-none --out /data/admin.key && exec spanrag serve --host 0.0.0.0 --port 8000"]
