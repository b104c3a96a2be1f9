# The same setup as a consul-template configuration file: `template -config=config.hcl`.
consul {
  address = "127.0.0.1:8500"
}

log_level = "info"

wait {
  min = "1s"
  max = "4s"
}

template {
  source      = "upstreams.hbs"
  destination = "/etc/nginx/conf.d/upstreams.conf"
  perms       = 0644
  command     = "nginx -s reload"
  command_timeout = "30s"
}
