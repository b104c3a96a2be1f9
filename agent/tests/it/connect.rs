//! The rest of the API clients call: config entries with CAS, intentions, the Connect CA and
//! leaf certificates, the discovery chain, gateway services, coordinates, and Go's redirects of
//! unclean paths.

use crate::harness::{json, wait_for, TestAgent};

/// The body without the newline `-dev`'s pretty printing adds.
fn text(r: &api::client::Response) -> String {
    crate::harness::text(r).trim_end().to_string()
}
use std::time::Duration;

#[tokio::test]
async fn config_entries_with_cas_validation_and_blocking() {
    let a = TestAgent::start("127.0.128.1", true, &[]);
    a.ready().await;
    let r = a.put("/v1/config", r#"{"Kind": "service-defaults", "Name": "web", "Protocol": "http"}"#).await;
    assert_eq!((r.status, text(&r).as_str()), (200, "true"));
    let e = json(&a.get("/v1/config/service-defaults/web").await);
    assert_eq!((e["Kind"].as_str(), e["Protocol"].as_str()), (Some("service-defaults"), Some("http")));
    let idx = e["ModifyIndex"].as_u64().expect("index");
    // A stale cas does not apply; the right one does.
    let r = a
        .put(
            &format!("/v1/config?cas={}", idx + 1000),
            r#"{"Kind": "service-defaults", "Name": "web", "Protocol": "grpc"}"#,
        )
        .await;
    assert_eq!((r.status, text(&r).as_str()), (200, "false"));
    let r = a
        .put(&format!("/v1/config?cas={idx}"), r#"{"Kind": "service-defaults", "Name": "web", "Protocol": "grpc"}"#)
        .await;
    assert_eq!((r.status, text(&r).as_str()), (200, "true"));
    // cas=0 creates only if absent.
    let r = a.put("/v1/config?cas=0", r#"{"Kind": "service-defaults", "Name": "web", "Protocol": "http"}"#).await;
    assert_eq!(text(&r), "false");
    // Consul's refusals.
    for (body, want) in [
        (r#"{"Kind": "service-defaults", "Name": "web", "Protocol": "ftp"}"#, "invalid protocol"),
        (r#"{"Kind": "nonsense", "Name": "web"}"#, "invalid config entry kind"),
        (r#"{"Kind": "proxy-defaults", "Name": "web"}"#, "only \"global\""),
        (r#"{"Kind": "service-splitter", "Name": "web", "Splits": [{"Weight": 60}]}"#, "must be 100"),
        (r#"{"Kind": "service-router", "Name": "db"}"#, "non-L7 protocol"),
        (r#"{"Kind": "service-defaults", "Name": 5}"#, "cannot unmarshal"),
    ] {
        let r = a.put("/v1/config", body).await;
        assert_eq!(r.status, 400, "{body}: {}", text(&r));
        assert!(text(&r).contains(want), "{body}: {}", text(&r));
    }
    // A blocking list wakes on a write.
    let list = a.get("/v1/config/service-defaults").await;
    let index: u64 =
        list.headers.get("x-consul-index").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).expect("index");
    let c = a.client.clone();
    let waiter = tokio::spawn(async move {
        c.request(
            api::client::Method::GET,
            &format!("/v1/config/service-defaults?index={index}&wait=10s"),
            None,
            Some(Duration::from_secs(20)),
        )
        .await
        .expect("blocking get")
    });
    assert_eq!(a.put("/v1/config", r#"{"Kind": "service-defaults", "Name": "api"}"#).await.status, 200);
    let woke = waiter.await.expect("join");
    let names: Vec<String> =
        json(&woke).as_array().expect("list").iter().filter_map(|e| e["Name"].as_str().map(str::to_string)).collect();
    assert_eq!(names, vec!["api".to_string(), "web".to_string()]);
    // Delete with cas, then without.
    let idx = json(&a.get("/v1/config/service-defaults/web").await)["ModifyIndex"].as_u64().expect("index");
    assert_eq!(text(&a.delete(&format!("/v1/config/service-defaults/web?cas={}", idx + 7)).await), "false");
    assert_eq!(text(&a.delete(&format!("/v1/config/service-defaults/web?cas={idx}")).await), "true");
    assert_eq!(a.get("/v1/config/service-defaults/web").await.status, 404);
}

#[tokio::test]
async fn intentions_ca_chain_gateways_coordinates_and_paths() {
    let a = TestAgent::start("127.0.128.2", true, &[]);
    a.ready().await;
    // Intentions, stored as service-intentions entries.
    assert_eq!(
        text(&a.put("/v1/connect/intentions/exact?source=web&destination=db", r#"{"Action": "allow"}"#).await),
        "true"
    );
    assert_eq!(
        text(&a.put("/v1/connect/intentions/exact?source=*&destination=db", r#"{"Action": "deny"}"#).await),
        "true"
    );
    let i = json(&a.get("/v1/connect/intentions/exact?source=web&destination=db").await);
    assert_eq!((i["Action"].as_str(), i["Precedence"].as_u64()), (Some("allow"), Some(9)));
    assert_eq!(json(&a.get("/v1/connect/intentions/check?source=web&destination=db").await)["Allowed"], true);
    assert_eq!(json(&a.get("/v1/connect/intentions/check?source=api&destination=db").await)["Allowed"], false);
    let m = json(&a.get("/v1/connect/intentions/match?by=destination&name=db").await);
    assert_eq!(m["db"][0]["SourceName"], "web", "most specific first: {m}");
    let entry = json(&a.get("/v1/config/service-intentions/db").await);
    assert_eq!(entry["Sources"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        a.put("/v1/connect/intentions/exact?source=web&destination=db", r#"{"Action": "maybe"}"#).await.status,
        400
    );
    assert_eq!(text(&a.delete("/v1/connect/intentions/exact?source=web&destination=db").await), "true");
    assert_eq!(a.get("/v1/connect/intentions/exact?source=web&destination=db").await.status, 404);

    // The CA: a root made at first leadership, its configuration, and leaf certificates.
    let roots = wait_for(Duration::from_secs(10), "the CA root", || async {
        let r = json(&a.get("/v1/connect/ca/roots").await);
        r["Roots"].as_array().filter(|x| !x.is_empty()).map(|_| r.clone())
    })
    .await;
    assert!(roots["Roots"][0]["RootCert"].as_str().is_some_and(|c| c.starts_with("-----BEGIN CERTIFICATE-----")));
    assert!(roots["Roots"][0].get("SigningKeyPem").is_none() && roots.get("SigningKeyPem").is_none());
    let cfg = json(&a.get("/v1/connect/ca/configuration").await);
    assert_eq!(cfg["Provider"], "consul");
    let r = a.put("/v1/connect/ca/configuration", r#"{"Provider": "consul", "Config": {"LeafCertTTL": "24h"}}"#).await;
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(json(&a.get("/v1/connect/ca/configuration").await)["Config"]["LeafCertTTL"], "24h");
    assert_eq!(a.put("/v1/connect/ca/configuration", r#"{"Provider": "vault"}"#).await.status, 400);
    let leaf = json(&a.get("/v1/agent/connect/ca/leaf/web").await);
    let trust = roots["TrustDomain"].as_str().expect("trust domain");
    assert_eq!(leaf["ServiceURI"], format!("spiffe://{trust}/ns/default/dc/dc1/svc/web"));
    assert!(leaf["CertPEM"].as_str().is_some_and(|c| c.contains("BEGIN CERTIFICATE")));

    // The discovery chain follows the entries.
    let c = json(&a.get("/v1/discovery-chain/web").await);
    assert_eq!((c["Chain"]["ServiceName"].as_str(), c["Chain"]["Protocol"].as_str()), (Some("web"), Some("tcp")));
    assert_eq!(
        a.put("/v1/config", r#"{"Kind": "service-defaults", "Name": "web", "Protocol": "http"}"#).await.status,
        200
    );
    let split = r#"{"Kind": "service-splitter", "Name": "web", "Splits": [{"Weight": 90}, {"Weight": 10, "Service": "web-canary"}]}"#;
    assert_eq!(a.put("/v1/config", split).await.status, 200);
    let c = json(&a.get("/v1/discovery-chain/web").await);
    assert_eq!(c["Chain"]["StartNode"], "splitter:web.default.default");
    assert!(c["Chain"]["Targets"].get("web-canary.default.default.dc1").is_some(), "{c}");
    let c = json(&a.get("/v1/discovery-chain/web?override-protocol=tcp").await);
    assert_eq!(c["Chain"]["StartNode"], "resolver:web.default.default.dc1");

    // Gateway services from an ingress gateway's entry.
    assert_eq!(json(&a.get("/v1/catalog/gateway-services/ig").await), serde_json::json!([]));
    let ig = r#"{"Kind": "ingress-gateway", "Name": "ig", "Listeners": [{"Port": 8080, "Protocol": "tcp", "Services": [{"Name": "web"}]}]}"#;
    assert_eq!(a.put("/v1/config", ig).await.status, 200);
    let g = json(&a.get("/v1/catalog/gateway-services/ig").await);
    assert_eq!(
        (g[0]["Service"]["Name"].as_str(), g[0]["GatewayKind"].as_str()),
        (Some("web"), Some("ingress-gateway"))
    );

    // A coordinate posted for the name /v1/coordinate/datacenters reports reads back.
    let dcs = json(&a.get("/v1/coordinate/datacenters").await);
    let node = dcs[0]["Coordinates"][0]["Node"].as_str().expect("wan name").to_string();
    let coord = serde_json::json!({"Node": node, "Coord": {"Vec": [0.1, 0, 0, 0, 0, 0, 0, 0], "Error": 1.5, "Adjustment": 0, "Height": 0.0001}});
    assert_eq!(a.put("/v1/coordinate/update", &coord.to_string()).await.status, 200);
    let back = json(&a.get(&format!("/v1/coordinate/node/{node}")).await);
    assert_eq!(back[0]["Coord"]["Vec"][0], 0.1);

    // Unclean paths: Go's 301 to the cleaned one, which the client then follows.
    assert_eq!(a.put("/v1/kv/app/config", "v").await.status, 200);
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{redirect_url}",
            "http://127.0.128.2:8500/v1/kv//app/config?raw",
        ])
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "301 http://127.0.128.2:8500/v1/kv/app/config?raw");
    let out = std::process::Command::new("curl")
        .args(["-sL", "http://127.0.128.2:8500/v1/kv/x/../app/./config?raw"])
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "v");
}
