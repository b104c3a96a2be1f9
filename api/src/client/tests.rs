use super::*;
use crate::fake::{serve, Reply};
use tokio::time::Instant;

#[tokio::test]
async fn a_hung_agent_cannot_hang_a_call_that_does_not_block() {
    let hung = serve("127.0.97.10", |_, _| Reply::hang()).await;
    let c = Client::new(&hung.addr).unwrap().with_timeout(Duration::from_millis(300));
    let t0 = Instant::now();
    assert!(matches!(c.catalog_datacenters().await, Err(Error::Timeout { .. })));
    assert!(matches!(c.request_ok(Method::PUT, "/v1/kv/k", None).await, Err(Error::Timeout { .. })));
    let (got, _) = tokio::join!(c.agent_members(), c.status_leader());
    assert!(matches!(got, Err(Error::Timeout { .. })));
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    assert_eq!(Client::new("127.0.0.1:8500").unwrap().timeout(), DEFAULT_TIMEOUT);
}

#[tokio::test]
async fn a_blocking_query_may_take_its_wait() {
    // Answers after 600 ms, past the client's 300 ms timeout but within the blocking wait.
    let slow = serve("127.0.97.11", |_, _| Reply::json(3, "[]").after(Duration::from_millis(600))).await;
    let c = Client::new(&slow.addr).unwrap().with_timeout(Duration::from_millis(300));
    let opts = QueryOptions { index: 2, wait: Some(Duration::from_secs(1)), ..Default::default() };
    let got: Option<(Vec<String>, QueryMeta)> = c.query("/v1/kv/k", &[], &opts).await.unwrap();
    assert_eq!(got.unwrap().1.last_index, 3);
}

#[tokio::test]
async fn catalog_datacenters_and_node_helpers() {
    let fake = serve("127.0.97.12", |_, path| match path {
        "/v1/catalog/datacenters" => Reply::json(1, r#"["dc1","dc2"]"#),
        "/v1/catalog/node/n1" => Reply::json(
            4,
            r#"{"Node":{"ID":"","Node":"n1","Address":"10.0.0.1","Datacenter":"dc1","TaggedAddresses":null,"Meta":{"rack":"r1"},"CreateIndex":1,"ModifyIndex":1},"Services":{"web":{"ID":"web","Service":"web","Tags":[],"Port":80}}}"#,
        ),
        "/v1/catalog/node/gone" => Reply::json(4, "null"),
        _ => Reply::status(404),
    })
    .await;
    let c = Client::new(&fake.addr).unwrap();
    assert_eq!(c.catalog_datacenters().await.unwrap(), vec!["dc1", "dc2"]);
    let (n, meta) = c.catalog_node("n1", &QueryOptions::default()).await.unwrap();
    let n = n.unwrap();
    assert_eq!(meta.last_index, 4);
    let node = n.node.unwrap();
    assert_eq!((node.node.as_str(), node.address.as_str(), node.meta["rack"].as_str()), ("n1", "10.0.0.1", "r1"));
    assert_eq!(n.services["web"].port, 80);
    assert_eq!(c.catalog_node("gone", &QueryOptions::default()).await.unwrap().0, None);
    assert_eq!(c.catalog_node("404", &QueryOptions::default()).await.unwrap().0, None);
}
