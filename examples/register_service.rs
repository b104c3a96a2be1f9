//! Registers a service with a TTL check on the local agent, marks it passing, then lists the
//! healthy instances. `cargo run -p examples --example register_service -- 127.0.0.1:8500`
use anyhow::Context;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8500".into());
    let client = api::Client::new(&addr)?;
    let registration = serde_json::json!({
        "ID": "web-1", "Name": "web", "Port": 8080, "Tags": ["v1"],
        "Check": { "CheckID": "web-1-ttl", "TTL": "30s" }
    });
    client.put_json("/v1/agent/service/register", &registration).await.context("register")?;
    client
        .request_ok(http_put(), "/v1/agent/check/pass/web-1-ttl?note=example", None)
        .await
        .context("pass the check")?;
    let (entries, meta) = client.health_service("web", true, &api::QueryOptions::default()).await?;
    println!("index {}: {} passing instance(s) of web", meta.last_index, entries.len());
    for e in entries {
        println!("  {} {}:{} {}", e.service.id, e.address(), e.service.port, e.aggregated_status());
    }
    Ok(())
}

fn http_put() -> api::client::Method {
    api::client::Method::PUT
}
