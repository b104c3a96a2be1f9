# template beside a real nginx (the host's binary and libraries), so `-exec nginx` and reload
# commands work in one container; /bin/sh runs those commands. Built by examples/docker/build.
FROM scratch
COPY rootfs/ /
ENV PATH=/bin:/usr/sbin
ENTRYPOINT ["/bin/docker-entrypoint", "--program=template"]
