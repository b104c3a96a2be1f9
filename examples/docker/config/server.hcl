# Mounted into every server's /consul/config. The flags in docker-compose.yml are the seeds'
# `docker run` lines; this file adds what a demo wants on top of them.
ui_config {
  enabled = true
}

# A dead leader is replaced in about a second (Consul's default, 5, takes several).
performance {
  raft_multiplier = 1
}
