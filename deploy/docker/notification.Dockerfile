# syntax=docker/dockerfile:1
# The notification image: built by the project's Makefile on Debian 12, run on debian:12-slim with only
# the shared libraries the binary links. Build from the repository top:
#   docker build -f deploy/docker/notification.Dockerfile -t chat-platform/notification .
# Every process's Dockerfile is this file with the process name, source folder and port changed
# (deploy/README.md, "Adding a service"); `make check-deploy` checks that they stay in step.

FROM debian:12 AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /src
# The Debian packages a developer's `make deps` installs: deploy/deps.sh holds the one list.
COPY deploy/deps.sh deploy/deps.sh
# Versions come from the Debian 12 archive of the day, exactly as for a developer.
RUN apt-get update \
 && bash deploy/deps.sh --print-apt-packages \
    | xargs env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
 && rm -rf /var/lib/apt/lists/*
COPY . .
# The developer's own Makefile target, then the runtime packages of exactly what it links.
RUN make MODE=rel build/rel/bin/notification \
 && deploy/docker/runtime-packages.sh build/rel/bin/notification > /runtime-packages.txt

FROM debian:12-slim
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
COPY --from=build /runtime-packages.txt /tmp/runtime-packages.txt
# runtime-packages.txt names the packages of the libraries the binary links (nothing else);
# curl runs the HEALTHCHECK, ca-certificates lets the clients use TLS, tzdata gives quiet hours
# their IANA time zones (the slim image has none: every zone would be refused).
RUN apt-get update \
 && xargs -a /tmp/runtime-packages.txt env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y --no-install-recommends curl ca-certificates tzdata \
 && rm -rf /var/lib/apt/lists/* /tmp/runtime-packages.txt \
 && groupadd --gid 10001 chat \
 && useradd --uid 10001 --gid chat --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin chat
COPY --from=build /src/build/rel/bin/notification /usr/local/bin/notification

# Configuration is by environment only (`notification --help` lists every variable); nothing is
# written to the filesystem, so the root filesystem can be mounted read-only.
ENV HTTP_HOST=0.0.0.0 \
    HTTP_PORT=8086
EXPOSE 8086
USER 10001:10001
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["/bin/sh", "-c", "curl -fsS -o /dev/null http://127.0.0.1:${HTTP_PORT}/health/live || exit 1"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/notification"]
