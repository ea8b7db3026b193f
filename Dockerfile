# parapet in a small image, running as a non-root user.
#
#   docker build -t parapet .
#   docker run -p 8080:8080 -p 9901:9901 parapet
#
# The image serves deploy/parapet.container.toml (listeners on 0.0.0.0, the admin listener on 9901 for
# the orchestrator's probes); mount your own config at /etc/parapet/parapet.toml to replace it.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked && strip target/release/parapet

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin parapet \
    && mkdir -p /etc/parapet /var/lib/parapet \
    && chown parapet /var/lib/parapet
COPY --from=build /src/target/release/parapet /usr/local/bin/parapet
COPY deploy/parapet.container.toml /etc/parapet/parapet.toml
COPY config/public /etc/parapet/public
COPY config/errors /etc/parapet/errors
USER parapet
WORKDIR /etc/parapet
EXPOSE 8080 9901
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/parapet"]
CMD ["run", "-c", "/etc/parapet/parapet.toml"]
