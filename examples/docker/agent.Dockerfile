# The agent as the official Consul image is used: `docker run agent:dev agent -server ...`.
# Built by examples/docker/build from the release binary and the libraries it loads.
FROM scratch
COPY rootfs/ /
ENV PATH=/bin
VOLUME ["/consul/data", "/consul/config"]
EXPOSE 8300 8301 8301/udp 8302 8302/udp 8500 8600 8600/udp
ENTRYPOINT ["/bin/docker-entrypoint"]
CMD ["agent", "-dev", "-client", "0.0.0.0"]
