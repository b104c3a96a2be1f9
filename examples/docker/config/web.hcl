# The demo service, registered from a config file on client1 and client2. Its nginx shares the
# client's network namespace (network_mode: service:clientN), so the check reaches it on
# 127.0.0.1 and the service is found at the client's address.
service {
  name = "web"
  port = 8080
  tags = ["demo"]

  check {
    id       = "web-health"
    name     = "web /health"
    http     = "http://127.0.0.1:8080/health"
    interval = "1s"
    timeout  = "1s"
  }
}
