# The signer with SoftHSM2 for development and evaluation. In production mount your vendor's PKCS#11
# module and point SIGNER_HSM_MODULE at it.
FROM python:3.11-slim-bookworm
RUN apt-get update \
 && apt-get install -y --no-install-recommends softhsm2 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --home /var/lib/signer --create-home signer
WORKDIR /opt/signer
COPY pyproject.toml README.md ./
COPY signer ./signer
COPY policy ./policy
COPY softhsm ./softhsm
RUN pip install --no-cache-dir .
USER signer
ENV SIGNER_DATA_DIR=/var/lib/signer \
    SIGNER_HOST=0.0.0.0 \
    SIGNER_PORT=8080
EXPOSE 8080
VOLUME ["/var/lib/signer"]
CMD ["sh", "-c", "signer init && exec signer serve"]
