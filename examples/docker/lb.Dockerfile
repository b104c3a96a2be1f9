# lb on port 88 over the agents' HTTP APIs and the services' instances. Built by examples/docker/build.
FROM scratch
COPY rootfs/ /
ENV PATH=/bin
EXPOSE 88
ENTRYPOINT ["/bin/docker-entrypoint", "--program=lb"]
CMD ["-listen=0.0.0.0:88", "-consul-addr=127.0.0.1:8500"]
