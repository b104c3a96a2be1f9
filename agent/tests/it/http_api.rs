//! One test per endpoint family, against a `-dev` agent, checking Consul's wire details.

use crate::harness::{json, text, wait_for, TestAgent};
use std::time::{Duration, Instant};

#[tokio::test]
async fn kv_reads_writes_cas_and_errors() {
    let a = TestAgent::start("127.0.0.101", true, &[]);
    a.ready().await;
    assert_eq!(json(&a.put("/v1/kv/app/config?flags=42", "hello").await), true);
    let r = a.get("/v1/kv/app/config").await;
    assert_eq!(r.status, 200);
    let v = json(&r);
    assert_eq!(v[0]["Key"], "app/config");
    assert_eq!(v[0]["Value"], "aGVsbG8=");
    assert_eq!(v[0]["Flags"], 42);
    assert!(v[0].get("Session").is_none());
    let index: u64 = r.headers["X-Consul-Index"].to_str().unwrap().parse().unwrap();
    assert_eq!(v[0]["ModifyIndex"], index);
    assert_eq!(text(&a.get("/v1/kv/app/config?raw").await), "hello");
    // CAS: a stale index loses, the current one wins.
    let modify = v[0]["ModifyIndex"].as_u64().unwrap();
    assert_eq!(json(&a.put(&format!("/v1/kv/app/config?cas={}", modify - 1), "x").await), false);
    assert_eq!(json(&a.put(&format!("/v1/kv/app/config?cas={modify}"), "y").await), true);
    assert_eq!(json(&a.put("/v1/kv/app/config?cas=0", "z").await), false, "cas=0 only creates");
    a.put("/v1/kv/app/sub/one", "1").await;
    a.put("/v1/kv/app/sub/two", "").await;
    let keys = json(&a.get("/v1/kv/app/?keys&separator=/").await);
    assert_eq!(keys, serde_json::json!(["app/config", "app/sub/"]));
    let all = json(&a.get("/v1/kv/app?recurse").await);
    assert_eq!(all.as_array().unwrap().len(), 3);
    assert_eq!(all[2]["Value"], serde_json::Value::Null, "empty body is null");
    // Missing keys are 404 with an index, empty listings too.
    let missing = a.get("/v1/kv/nope").await;
    assert_eq!(missing.status, 404);
    assert!(missing.headers.contains_key("X-Consul-Index"));
    assert_eq!(a.get("/v1/kv/nope/?recurse").await.status, 404);
    // Delete: recurse takes the prefix.
    assert_eq!(json(&a.delete("/v1/kv/app/sub?recurse").await), true);
    assert_eq!(a.get("/v1/kv/app/sub/one").await.status, 404);
    // Bad input gets Consul's status and text; the agent stays up.
    let big = "x".repeat(512 * 1024 + 1);
    let r = a.put("/v1/kv/big", &big).await;
    assert_eq!(r.status, 413, "{}", text(&r));
    assert!(text(&r).contains("too large"));
    assert_eq!(text(&a.get("/v1/kv/app/config?index=abc").await), "Invalid index");
    assert_eq!(a.get("/v1/kv/app/config?index=abc").await.status, 400);
    assert_eq!(text(&a.get("/v1/kv/app/config?index=1&wait=forever").await), "Invalid wait time");
    let both = a.get("/v1/kv/app/config?stale&consistent").await;
    assert_eq!(
        (both.status, text(&both).as_str()),
        (400, "Cannot specify ?stale with ?consistent, conflicting semantics.")
    );
    assert_eq!(a.get("/v1/kv/app/config?consistent").await.status, 200);
    let r = a.client.request(api::client::Method::PATCH, "/v1/kv/x", None, None).await.expect("patch");
    assert_eq!(r.status, 405);
    assert_eq!(a.get("/v1/kv/app/config").await.status, 200, "still serving");
}

#[tokio::test]
async fn blocking_queries_wake_on_the_watched_write_and_time_out_otherwise() {
    let a = TestAgent::start("127.0.0.102", true, &[]);
    a.ready().await;
    a.put("/v1/kv/watched", "1").await;
    let r = a.get("/v1/kv/watched").await;
    let index: u64 = r.headers["X-Consul-Index"].to_str().unwrap().parse().unwrap();
    assert!(index > 0);
    // A wait that runs out returns the same index (within wait + wait/16).
    let started = Instant::now();
    let r = a.get(&format!("/v1/kv/watched?index={index}&wait=300ms")).await;
    let took = started.elapsed();
    assert_eq!(r.headers["X-Consul-Index"].to_str().unwrap(), index.to_string());
    assert!(took >= Duration::from_millis(290), "returned early after {took:?}");
    // A write to another key does not wake it; a write to the key does.
    let client = a.client.clone();
    let waiter = tokio::spawn(async move {
        let r = client
            .request(api::client::Method::GET, &format!("/v1/kv/watched?index={index}&wait=30s"), None, None)
            .await
            .expect("blocking get");
        (Instant::now(), r)
    });
    a.put("/v1/kv/unrelated", "x").await;
    // The waiter must still be parked after the unrelated write has committed.
    assert!(!waiter.is_finished(), "an unrelated write woke the query");
    let wrote = Instant::now();
    a.put("/v1/kv/watched", "2").await;
    let (woke, r) = tokio::time::timeout(Duration::from_secs(10), waiter).await.expect("woken").expect("joined");
    let new_index: u64 = r.headers["X-Consul-Index"].to_str().unwrap().parse().unwrap();
    assert!(new_index > index);
    assert_eq!(json(&r)[0]["Value"], "Mg==");
    assert!(woke >= wrote);
    // Health blocking: a check change wakes a service watcher.
    a.put(
        "/v1/agent/service/register",
        r#"{"Name":"web","ID":"web1","Port":80,"Check":{"CheckID":"web1-ttl","TTL":"30s"}}"#,
    )
    .await;
    let r = a.get("/v1/health/service/web").await;
    let index: u64 = r.headers["X-Consul-Index"].to_str().unwrap().parse().unwrap();
    let client = a.client.clone();
    let waiter = tokio::spawn(async move {
        client
            .request(
                api::client::Method::GET,
                &format!("/v1/health/service/web?passing&index={index}&wait=30s"),
                None,
                None,
            )
            .await
            .expect("get")
    });
    a.put("/v1/agent/check/pass/web1-ttl", "").await;
    let r = tokio::time::timeout(Duration::from_secs(10), waiter).await.expect("woken").expect("joined");
    assert_eq!(json(&r).as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn agent_services_checks_and_health_follow_each_other() {
    let a = TestAgent::start("127.0.0.103", true, &["-enable-script-checks"]);
    a.ready().await;
    let r = a
        .put(
            "/v1/agent/service/register",
            r#"{"name":"api","id":"api-1","port":9000,"tags":["v1","primary"],"meta":{"Ver":"1"},
                "weights":{"passing":5,"warning":1},"check":{"ttl":"30s","check_id":"api-ttl"}}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", text(&r));
    let svcs = json(&a.get("/v1/agent/services").await);
    assert_eq!(svcs["api-1"]["Service"], "api");
    assert_eq!(svcs["api-1"]["Weights"]["Passing"], 5);
    assert_eq!(svcs["api-1"]["Meta"]["Ver"], "1");
    // A new TTL check starts critical; passing it is visible in the catalog at once.
    let checks = json(&a.get("/v1/health/checks/api").await);
    assert_eq!(checks[0]["Status"], "critical");
    assert_eq!(checks[0]["Type"], "ttl");
    assert!(json(&a.get("/v1/health/service/api?passing").await).as_array().unwrap().is_empty());
    a.put("/v1/agent/check/pass/api-ttl?note=ok", "").await;
    let entries = json(&a.get("/v1/health/service/api?passing=1").await);
    assert_eq!(entries[0]["Service"]["ID"], "api-1");
    assert_eq!(
        entries[0]["Checks"].as_array().unwrap().iter().filter(|c| c["CheckID"] == "api-ttl").next().unwrap()["Output"],
        "ok"
    );
    let r = a.get("/v1/agent/health/service/name/api?format=text").await;
    assert_eq!((r.status, text(&r).as_str()), (200, "passing"));
    a.put("/v1/agent/check/update/api-ttl", r#"{"Status":"warning","Output":"slow"}"#).await;
    assert_eq!(a.get("/v1/agent/health/service/id/api-1").await.status, 429);
    assert_eq!(
        text(&a.put("/v1/agent/check/update/api-ttl", r#"{"Status":"bogus"}"#).await),
        "Invalid check status: \"bogus\""
    );
    // Catalog views and tag filters.
    let services = json(&a.get("/v1/catalog/services").await);
    assert_eq!(services["api"], serde_json::json!(["primary", "v1"]));
    assert!(services.get("consul").is_some(), "servers register the consul service");
    assert_eq!(json(&a.get("/v1/catalog/service/api?tag=v1&tag=primary").await).as_array().unwrap().len(), 1);
    assert!(json(&a.get("/v1/catalog/service/api?tag=v2").await).as_array().unwrap().is_empty());
    let filtered = json(&a.get("/v1/catalog/service/api?filter=ServiceMeta.Ver%20%3D%3D%20%221%22").await);
    assert_eq!(filtered.as_array().map(|a| a.len()), Some(1));
    // A script check runs and reports its exit code.
    a.put("/v1/agent/check/register", r#"{"Name":"disk","Args":["sh","-c","echo full; exit 2"],"Interval":"100ms"}"#)
        .await;
    wait_for(Duration::from_secs(10), "script check critical with output", || async {
        let c = json(&a.get("/v1/health/state/critical").await);
        c.as_array()?
            .iter()
            .find(|c| c["CheckID"] == "disk" && c["Output"].as_str().unwrap_or("").contains("full"))
            .map(|_| ())
    })
    .await;
    assert_eq!(a.get("/v1/health/state/bogus").await.status, 400);
    // Maintenance mode shows as Consul's special check.
    a.put("/v1/agent/service/maintenance/api-1?enable=true&reason=deploy", "").await;
    let c = json(&a.get("/v1/health/checks/api").await);
    assert!(c
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["CheckID"] == "_service_maintenance:api-1" && c["Notes"] == "deploy"));
    assert_eq!(a.put("/v1/agent/service/maintenance/api-1", "").await.status, 400);
    // Deregistering removes the service and its checks everywhere.
    assert_eq!(a.put("/v1/agent/service/deregister/api-1", "").await.status, 200);
    assert!(json(&a.get("/v1/catalog/service/api").await).as_array().unwrap().is_empty());
    assert!(json(&a.get("/v1/health/checks/api").await).as_array().unwrap().is_empty());
    assert_eq!(a.put("/v1/agent/service/deregister/api-1", "").await.status, 404);
    // Bad registrations are 400 with a message, never a crash.
    let r = a.put("/v1/agent/service/register", "{not json").await;
    assert_eq!(r.status, 400);
    let r = a.put("/v1/agent/service/register", r#"{"Name":"x","Check":{"HTTP":"http://127.0.0.1:1/"}}"#).await;
    assert_eq!(r.status, 400, "{}", text(&r));
    assert_eq!(a.get("/v1/agent/self").await.status, 200);
}

#[tokio::test]
async fn catalog_register_and_deregister_external_nodes() {
    let a = TestAgent::start("127.0.0.104", true, &[]);
    a.ready().await;
    let r = a
        .put(
            "/v1/catalog/register",
            r#"{"Node":"ext","Address":"10.1.0.5","NodeMeta":{"rack":"r1"},
                "Service":{"Service":"db","Port":5432,"Tags":["primary"]},
                "Check":{"CheckID":"db-alive","Name":"db alive","Status":"passing","ServiceID":"db"}}"#,
        )
        .await;
    assert_eq!((r.status, json(&r)), (200, serde_json::json!(true)));
    let nodes = json(&a.get("/v1/catalog/nodes?node-meta=rack:r1").await);
    assert_eq!(nodes.as_array().unwrap().len(), 1);
    assert_eq!(nodes[0]["Node"], "ext");
    let node = json(&a.get("/v1/catalog/node/ext").await);
    assert_eq!(node["Services"]["db"]["Port"], 5432);
    assert_eq!(json(&a.get("/v1/catalog/node/missing").await), serde_json::Value::Null);
    let entries = json(&a.get("/v1/health/service/db?passing").await);
    assert_eq!(entries[0]["Node"]["Address"], "10.1.0.5");
    let r = a.put("/v1/catalog/register", r#"{"Node":"ext2"}"#).await;
    assert_eq!((r.status, text(&r).as_str()), (400, "Must provide address"));
    let r = a
        .put(
            "/v1/catalog/register",
            r#"{"Node":"ext","Address":"10.1.0.5","Check":{"CheckID":"c","ServiceID":"ghost"}}"#,
        )
        .await;
    assert_eq!(r.status, 400);
    a.put("/v1/catalog/deregister", r#"{"Node":"ext","ServiceID":"db"}"#).await;
    assert!(json(&a.get("/v1/catalog/service/db").await).as_array().unwrap().is_empty());
    a.put("/v1/catalog/deregister", r#"{"Node":"ext"}"#).await;
    assert_eq!(json(&a.get("/v1/catalog/node/ext").await), serde_json::Value::Null);
}

#[tokio::test]
async fn sessions_locks_and_transactions() {
    let a = TestAgent::start("127.0.0.105", true, &[]);
    a.ready().await;
    let s1 = json(&a.put("/v1/session/create", r#"{"Name":"leader","TTL":"15s","LockDelay":"0s"}"#).await)["ID"]
        .as_str()
        .unwrap()
        .to_string();
    let s2 = json(&a.put("/v1/session/create", r#"{"Name":"other"}"#).await)["ID"].as_str().unwrap().to_string();
    let info = json(&a.get(&format!("/v1/session/info/{s1}")).await);
    assert_eq!(info[0]["TTL"], "15s");
    assert_eq!(info[0]["Behavior"], "release");
    assert_eq!(info[0]["NodeChecks"], serde_json::json!(["serfHealth"]));
    assert_eq!(json(&a.get(&format!("/v1/session/info/{s2}")).await)[0]["LockDelay"], 15_000_000_000u64);
    assert_eq!(json(&a.put(&format!("/v1/kv/lock?acquire={s1}"), "me").await), true);
    assert_eq!(json(&a.put(&format!("/v1/kv/lock?acquire={s2}"), "you").await), false);
    let kv = json(&a.get("/v1/kv/lock").await);
    assert_eq!((kv[0]["Session"].as_str(), kv[0]["LockIndex"].as_u64()), (Some(s1.as_str()), Some(1)));
    assert_eq!(json(&a.put(&format!("/v1/session/renew/{s1}"), "").await)[0]["ID"], s1);
    assert_eq!(a.put("/v1/session/renew/00000000-0000-0000-0000-000000000000", "").await.status, 404);
    // Destroying the holder releases the lock (lock-delay 0), so the other session gets it.
    assert_eq!(json(&a.put(&format!("/v1/session/destroy/{s1}"), "").await), true);
    assert!(json(&a.get("/v1/kv/lock").await)[0].get("Session").is_none());
    assert_eq!(json(&a.put(&format!("/v1/kv/lock?acquire={s2}"), "you").await), true);
    assert_eq!(json(&a.get(&format!("/v1/session/info/{s1}")).await), serde_json::json!([]));
    assert_eq!(json(&a.get("/v1/session/list").await).as_array().unwrap().len(), 1);
    let r = a.put("/v1/session/create", r#"{"TTL":"5s"}"#).await;
    assert_eq!(r.status, 400, "{}", text(&r));
    assert_eq!(a.put("/v1/session/create", r#"{"Behavior":"explode"}"#).await.status, 400);
    // Transactions commit all or nothing; a failed one is 409 with per-op errors.
    let ok = a
        .put("/v1/txn", r#"[{"KV":{"Verb":"set","Key":"t/a","Value":"YQ=="}},{"KV":{"Verb":"get","Key":"t/a"}}]"#)
        .await;
    assert_eq!(ok.status, 200, "{}", text(&ok));
    assert_eq!(json(&ok)["Results"][1]["KV"]["Value"], "YQ==");
    let bad = a.put("/v1/txn", r#"[{"KV":{"Verb":"set","Key":"t/b","Value":"Yg=="}},{"KV":{"Verb":"check-index","Key":"t/a","Index":999}}]"#).await;
    assert_eq!(bad.status, 409);
    assert_eq!(json(&bad)["Errors"][0]["OpIndex"], 1);
    assert_eq!(a.get("/v1/kv/t/b").await.status, 404);
    let ops: Vec<String> = (0..129).map(|i| format!(r#"{{"KV":{{"Verb":"get","Key":"k{i}"}}}}"#)).collect();
    assert_eq!(a.put("/v1/txn", &format!("[{}]", ops.join(","))).await.status, 413);
}

#[tokio::test]
async fn status_events_operator_metrics_and_snapshots() {
    let a = TestAgent::start("127.0.0.106", true, &[]);
    a.ready().await;
    assert_eq!(json(&a.get("/v1/status/leader").await), "127.0.0.106:8300");
    assert_eq!(json(&a.get("/v1/status/peers").await), serde_json::json!(["127.0.0.106:8300"]));
    let raft = json(&a.get("/v1/operator/raft/configuration").await);
    assert_eq!(raft["Servers"][0]["Leader"], true);
    assert_eq!(raft["Servers"][0]["Node"], "node-127-0-0-106");
    let ev = json(&a.put("/v1/event/fire/deploy?service=web", "v2").await);
    assert_eq!(ev["Name"], "deploy");
    assert_eq!(ev["Payload"], "djI=");
    let list = json(&a.get("/v1/event/list?name=deploy").await);
    assert_eq!(list[0]["ID"], ev["ID"]);
    let members = json(&a.get("/v1/agent/members").await);
    assert_eq!(members[0]["Tags"]["role"], "consul");
    assert_eq!(members[0]["Status"], 1);
    let me = json(&a.get("/v1/agent/self").await);
    assert_eq!(me["Config"]["NodeName"], "node-127-0-0-106");
    let prom = text(&a.get("/v1/agent/metrics?format=prometheus").await);
    assert!(prom.contains("consul_http_requests"));
    assert!(json(&a.get("/v1/agent/metrics").await)["Gauges"].is_array());
    // Snapshot: save, change, restore, and the change is undone.
    a.put("/v1/kv/snap", "before").await;
    let snap = a.get("/v1/snapshot").await;
    assert_eq!(snap.status, 200);
    a.put("/v1/kv/snap", "after").await;
    let r = a
        .client
        .request(api::client::Method::PUT, "/v1/snapshot", Some(snap.body.clone()), None)
        .await
        .expect("restore");
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(text(&a.get("/v1/kv/snap?raw").await), "before");
    assert_eq!(
        a.client
            .request(api::client::Method::PUT, "/v1/snapshot", Some("junk".into()), None)
            .await
            .expect("junk")
            .status,
        400
    );
}

#[tokio::test]
async fn concurrent_writes_are_batched_but_each_keeps_its_own_answer() {
    let a = TestAgent::start("127.0.0.108", false, &[]);
    a.ready().await;
    a.put("/v1/kv/race", "start").await;
    let index = json(&a.get("/v1/kv/race").await)[0]["ModifyIndex"].as_u64().unwrap();
    // 40 writers race a CAS on one key with the same index: exactly one may win, even when
    // their writes share a log entry. 100 plain writes to distinct keys all land.
    let mut tasks = Vec::new();
    for i in 0..40 {
        let c = a.client.clone();
        tasks.push(tokio::spawn(async move {
            c.kv_put("race", format!("w{i}").into_bytes(), &[("cas".into(), index.to_string())]).await.expect("cas put")
        }));
    }
    let mut plain = Vec::new();
    for i in 0..100 {
        let c = a.client.clone();
        plain.push(tokio::spawn(async move { c.kv_put(&format!("many/{i}"), vec![b'x'], &[]).await.expect("put") }));
    }
    let mut wins = 0;
    for t in tasks {
        if t.await.expect("join") {
            wins += 1;
        }
    }
    for t in plain {
        assert!(t.await.expect("join"));
    }
    assert_eq!(wins, 1, "exactly one CAS wins");
    assert_eq!(json(&a.get("/v1/kv/many/?keys").await).as_array().unwrap().len(), 100);
    // The autopilot configuration is replicated with CAS too.
    let cfg = json(&a.get("/v1/operator/autopilot/configuration").await);
    let m = cfg["ModifyIndex"].as_u64().unwrap();
    assert_eq!(
        json(
            &a.put(
                &format!("/v1/operator/autopilot/configuration?cas={}", m + 1000),
                r#"{"CleanupDeadServers":false}"#
            )
            .await
        ),
        false
    );
    assert_eq!(json(&a.put("/v1/operator/autopilot/configuration", r#"{"CleanupDeadServers":false}"#).await), true);
    assert_eq!(json(&a.get("/v1/operator/autopilot/configuration").await)["CleanupDeadServers"], false);
}
