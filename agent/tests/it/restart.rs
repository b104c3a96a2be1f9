//! A server restarted from its data dir (after SIGKILL) brings back everything it acknowledged.

use crate::harness::{json, text, TestAgent};

#[tokio::test]
async fn kill9_and_restart_keeps_kv_catalog_sessions_and_local_services() {
    let a = TestAgent::start("127.0.0.107", false, &[]);
    a.ready().await;
    for i in 0..50 {
        assert_eq!(json(&a.put(&format!("/v1/kv/durable/{i}"), &format!("v{i}")).await), true);
    }
    let r = a
        .put(
            "/v1/agent/service/register",
            r#"{"Name":"web","ID":"web-1","Port":8080,"Check":{"CheckID":"web-ttl","TTL":"60s"}}"#,
        )
        .await;
    assert_eq!(r.status, 200);
    a.put("/v1/agent/check/pass/web-ttl", "").await;
    a.put("/v1/catalog/register", r#"{"Node":"ext","Address":"10.0.0.9","Service":{"Service":"db","Port":5432}}"#)
        .await;
    let session = json(&a.put("/v1/session/create", r#"{"Name":"s"}"#).await)["ID"].as_str().unwrap().to_string();
    assert_eq!(json(&a.put(&format!("/v1/kv/held?acquire={session}"), "x").await), true);

    let b = a.restart_hard();
    b.ready().await;
    for i in [0, 25, 49] {
        assert_eq!(text(&b.get(&format!("/v1/kv/durable/{i}?raw")).await), format!("v{i}"));
    }
    assert_eq!(json(&b.get("/v1/kv/durable/?keys").await).as_array().unwrap().len(), 50);
    assert_eq!(json(&b.get("/v1/agent/services").await)["web-1"]["Port"], 8080);
    assert_eq!(json(&b.get("/v1/catalog/service/db").await)[0]["Address"], "10.0.0.9");
    assert_eq!(json(&b.get(&format!("/v1/session/info/{session}")).await)[0]["ID"], session);
    assert_eq!(json(&b.get("/v1/kv/held").await)[0]["Session"], session);
    let checks = json(&b.get("/v1/agent/checks").await);
    assert_eq!(checks["web-ttl"]["Status"], "passing", "the last TTL status survives the restart");
}
