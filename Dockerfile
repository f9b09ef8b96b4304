# Static (musl) build of the operator in a scratch image: no shell, no libc, non-root.
FROM rust:1.95-alpine AS build
RUN apk add --no-cache musl-dev
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p redis-operator \
 && cp target/release/redis-operator /redis-operator

FROM scratch
COPY --from=build /redis-operator /redis-operator
USER 65532:65532
ENTRYPOINT ["/redis-operator"]
CMD ["run"]
