# The SmartUnit collector image.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY collector ./collector
COPY detectors ./detectors
COPY fieldtools ./fieldtools
# fieldtools/config/ links to the samples in config/; the build copies them into the package
COPY config ./config
RUN pip install --no-cache-dir .
COPY config /etc/smartunit
RUN useradd --system --home /var/lib/smartunit smartunit \
    && mkdir -p /var/lib/smartunit && chown smartunit /var/lib/smartunit
USER smartunit
# Inside a container the API listens on every interface, or a published port cannot reach
# it; set SMARTUNIT_PUBLIC_URL to the address people open the console at.
ENV SMARTUNIT_DATA_DIR=/var/lib/smartunit \
    SMARTUNIT_HTTP_HOST=0.0.0.0 \
    SMARTUNIT_HTTP_PORT=8080 \
    SMARTUNIT_PUBLIC_URL=http://localhost:8080
EXPOSE 8080
ENTRYPOINT ["smartunit"]
CMD ["run", "--config", "/etc/smartunit/smartunit.example.toml"]
