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
ENV SMARTUNIT_DATA_DIR=/var/lib/smartunit
EXPOSE 8080
ENTRYPOINT ["smartunit"]
CMD ["run", "--config", "/etc/smartunit/smartunit.example.toml"]
