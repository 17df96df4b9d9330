# One image for every Herald role: `herald worker`, `herald projector`, `herald api`.
FROM python:3.11-slim
RUN pip install --no-cache-dir uv
WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
COPY schemas schemas
COPY engine engine
COPY streams streams
COPY projections projections
COPY api api
COPY herald herald
# Locked production set only: the dev group (herald dev's broker and SMTP capture, test tools) stays out.
RUN uv sync --frozen --no-dev --compile-bytecode
ENV PATH="/app/.venv/bin:$PATH"
USER nobody
ENTRYPOINT ["herald"]
