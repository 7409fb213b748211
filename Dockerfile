# One image for every process; docker-compose.yml picks the command (the same lines as the Procfile).
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /srv
COPY pyproject.toml README.md celeryconfig.py gunicorn.conf.py flowerconfig.py Procfile ./
COPY app ./app
COPY tasks ./tasks
COPY cli ./cli
COPY kernel ./kernel
RUN pip install . && useradd --system --no-create-home auth0events
USER auth0events
EXPOSE 8000 5555
CMD ["sh", "-c", "gunicorn --bind 0.0.0.0:${PORT:-8000} --workers ${WEB_CONCURRENCY:-2} 'app:create_app()'"]
