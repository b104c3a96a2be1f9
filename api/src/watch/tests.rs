use super::*;
use crate::fake::{serve, Reply};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

const WAIT: Duration = Duration::from_secs(1);

fn client(addr: &str) -> Client {
    Client::new(addr).unwrap()
}

#[test]
fn bad_addresses_and_empty_lists_are_errors() {
    let t = || Target::new("/v1/kv/k");
    assert!(matches!(Watcher::<Vec<String>>::new(Vec::new(), t(), WAIT), Err(Error::NoAgents)));
    assert!(matches!(Watcher::<Vec<String>>::connect(&["unix:///x"], t(), WAIT), Err(Error::Address(_))));
    assert!(matches!(Watcher::<Vec<String>>::connect(&[""], t(), WAIT), Err(Error::Address(_))));
    assert!(matches!(Watcher::<Vec<String>>::connect(&[] as &[&str], t(), WAIT), Err(Error::NoAgents)));
    let w = Watcher::<Vec<String>>::connect(
        &["127.0.97.1:8500", "http://127.0.97.2:8500", "https://127.0.97.3:8501"],
        t(),
        WAIT,
    )
    .unwrap();
    assert_eq!(w.agents(), vec!["127.0.97.1:8500", "127.0.97.2:8500", "127.0.97.3:8501"]);
}

#[test]
fn retry_delays_double_up_to_the_cap() {
    let r =
        Retry { enabled: true, attempts: 12, backoff: Duration::from_millis(250), max_backoff: Duration::from_secs(1) };
    let got: Vec<u128> = (0..5).map(|n| r.delay(n).as_millis()).collect();
    assert_eq!(got, vec![250, 500, 1000, 1000, 1000]);
    let uncapped = Retry { max_backoff: Duration::ZERO, ..r };
    assert_eq!(uncapped.delay(6), Duration::from_millis(16_000));
    assert_eq!(uncapped.delay(200), uncapped.delay(31), "no overflow");
}

#[tokio::test]
async fn a_stale_answer_older_than_max_stale_is_read_again_from_the_leader() {
    // Stale reads come from a follower 5 s behind; default-consistency reads from the leader.
    let fake = serve("127.0.97.1", |_, path| {
        if path.contains("stale") {
            Reply::json(7, r#"["old"]"#).header("X-Consul-LastContact", "5000")
        } else {
            Reply::json(9, r#"["new"]"#).header("X-Consul-LastContact", "0")
        }
    })
    .await;
    let mut w = Watcher::<Vec<String>>::new(vec![client(&fake.addr)], Target::new("/v1/kv/k"), WAIT)
        .unwrap()
        .max_stale(Duration::from_secs(2));
    assert_eq!(w.next().await.unwrap(), vec!["new"]);
    assert_eq!(w.last_index(), 9);
    let paths = fake.paths();
    assert_eq!(paths.len(), 2, "{paths:?}");
    let times = fake.times();
    assert!(times[1] - times[0] < MIN_DELAY, "the re-read is not held back by the minimum delay");
    assert!(paths[0].contains("stale"), "first read is stale: {paths:?}");
    assert!(!paths[1].contains("stale") && !paths[1].contains("index=7"), "then the leader, same index: {paths:?}");

    // Within max_stale the stale answer is taken; -max-stale=0 never asks for stale data.
    let mut w = Watcher::<Vec<String>>::new(vec![client(&fake.addr)], Target::new("/v1/kv/k"), WAIT)
        .unwrap()
        .max_stale(Duration::from_secs(10))
        .min_delay(Duration::ZERO);
    assert_eq!(w.next().await.unwrap(), vec!["old"]);
    assert_eq!(fake.paths().len(), 3);
    let mut w = Watcher::<Vec<String>>::new(vec![client(&fake.addr)], Target::new("/v1/kv/k"), WAIT)
        .unwrap()
        .max_stale(Duration::ZERO);
    assert_eq!(w.next().await.unwrap(), vec!["new"]);
    assert!(!fake.paths()[3].contains("stale"));
}

#[tokio::test]
async fn fetches_of_a_flapping_value_are_spaced_by_the_minimum_delay() {
    // Every answer is new at once: without the delay this is a hot loop.
    let n = Arc::new(AtomicU64::new(0));
    let fake = serve("127.0.97.2", move |_, _| {
        let i = n.fetch_add(1, Ordering::SeqCst) + 1;
        Reply::json(i, &format!(r#"["v{i}"]"#))
    })
    .await;
    let mut w = Watcher::<Vec<String>>::new(vec![client(&fake.addr)], Target::new("/v1/kv/k"), WAIT).unwrap();
    for i in 1..=4 {
        assert_eq!(w.next().await.unwrap(), vec![format!("v{i}")]);
    }
    let times = fake.times();
    for pair in times.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(gap >= MIN_DELAY, "fetches {gap:?} apart");
        assert!(gap < MIN_DELAY + MIN_DELAY_JITTER + Duration::from_millis(200), "fetches {gap:?} apart");
    }
}

#[tokio::test]
async fn errors_back_off_with_jitter_but_the_first_failover_is_immediate() {
    let a = serve("127.0.97.3", |_, _| Reply::status(500)).await;
    let b = serve("127.0.97.4", |_, _| Reply::status(500)).await;
    let retry = Retry {
        enabled: true,
        attempts: 0,
        backoff: Duration::from_millis(80),
        max_backoff: Duration::from_millis(200),
    };
    let mut w = Watcher::<Vec<String>>::new(vec![client(&a.addr), client(&b.addr)], Target::new("/v1/kv/k"), WAIT)
        .unwrap()
        .retry(retry.clone());
    let mut at = Vec::new();
    for _ in 0..5 {
        assert_eq!(w.next().await.unwrap_err().status(), Some(500));
        at.push(Instant::now());
    }
    assert_eq!((a.paths().len(), b.paths().len()), (3, 2), "agents alternate");
    let start = |i: usize| if i.is_multiple_of(2) { a.times()[i / 2] } else { b.times()[i / 2] };
    let gaps: Vec<Duration> = (1..5).map(|i| start(i) - start(i - 1)).collect();
    assert!(gaps[0] < Duration::from_millis(60), "the failover to b is at once: {gaps:?}");
    for (n, gap) in gaps.iter().enumerate().skip(1) {
        // Retry n waits backoff × 2ⁿ (capped), jittered into [d/2, d].
        let d = retry.delay(n as u32);
        assert!(*gap >= d / 2 && *gap < d + Duration::from_millis(100), "retry {n}: {gap:?} for {d:?}");
    }

    // One agent: even the first retry waits.
    let mut w = Watcher::<Vec<String>>::new(vec![client(&a.addr)], Target::new("/v1/kv/k"), WAIT).unwrap().retry(retry);
    let t0 = Instant::now();
    w.next().await.unwrap_err();
    w.next().await.unwrap_err();
    assert!(t0.elapsed() >= Duration::from_millis(40));
}

#[tokio::test]
async fn retries_end_after_the_configured_attempts_or_at_once_when_off() {
    let bad = serve("127.0.97.5", |_, _| Reply::status(503)).await;
    let quick =
        Retry { enabled: true, attempts: 2, backoff: Duration::from_millis(5), max_backoff: Duration::from_millis(5) };
    let mut w = Watcher::<Vec<String>>::new(vec![client(&bad.addr)], Target::new("/v1/kv/k"), WAIT)
        .unwrap()
        .retry(quick.clone());
    assert_eq!(w.next().await.unwrap_err().status(), Some(503));
    assert_eq!(w.next().await.unwrap_err().status(), Some(503));
    match w.next().await {
        Err(Error::RetriesExhausted { attempts: 3, last }) => assert_eq!(last.status(), Some(503)),
        other => panic!("expected RetriesExhausted, got {other:?}"),
    }
    let mut w = Watcher::<Vec<String>>::new(vec![client(&bad.addr)], Target::new("/v1/kv/k"), WAIT)
        .unwrap()
        .retry(Retry { enabled: false, ..quick });
    assert!(matches!(w.next().await, Err(Error::RetriesExhausted { attempts: 1, .. })));
}

#[tokio::test]
async fn set_clients_keeps_the_agent_in_use_or_starts_over() {
    let a = serve("127.0.97.6", |_, _| Reply::json(5, r#"["a"]"#)).await;
    let b = serve("127.0.97.7", |_, _| Reply::json(6, r#"["b"]"#)).await;
    let mut w = Watcher::<Vec<String>>::new(vec![client(&a.addr)], Target::new("/v1/kv/k"), WAIT)
        .unwrap()
        .min_delay(Duration::ZERO);
    assert_eq!(w.next().await.unwrap(), vec!["a"]);
    assert!(matches!(w.set_clients(Vec::new()), Err(Error::NoAgents)));
    assert_eq!(w.agents(), vec![a.addr.as_str()], "refused: unchanged");
    w.set_clients(vec![client(&b.addr), client(&a.addr)]).unwrap();
    assert_eq!((w.agent(), w.last_index()), (a.addr.as_str(), 5), "still on a, same index");
    w.set_clients(vec![client(&b.addr)]).unwrap();
    assert_eq!((w.agent(), w.last_index()), (b.addr.as_str(), 0), "a is gone: b, from scratch");
    assert_eq!(w.next().await.unwrap(), vec!["b"]);
    assert!(b.paths()[0].starts_with("/v1/kv/k?wait="), "no index carried over: {:?}", b.paths());
}

#[tokio::test]
async fn a_watcher_works_over_https() {
    let pki = crate::fake::Pki::new();
    let fake = crate::fake::serve_tls("127.0.97.24", pki.acceptor(true), |n, _| match n {
        0 => Reply::json(3, r#"["a"]"#),
        _ => Reply::json(4, r#"["b"]"#),
    })
    .await;
    let tls = crate::tls::TlsOptions {
        ca_file: Some(pki.ca.clone()),
        cert_file: Some(pki.client_cert.clone()),
        key_file: Some(pki.client_key.clone()),
        server_name: Some("localhost".into()),
        insecure_skip_verify: false,
        ca_path: None,
    }
    .load()
    .unwrap();
    let mut w = Watcher::<Vec<String>>::connect_tls(&[&fake.addr], Some(&tls), Target::new("/v1/kv/k"), WAIT)
        .unwrap()
        .min_delay(Duration::ZERO);
    assert_eq!(w.next().await.unwrap(), vec!["a"]);
    assert_eq!(w.next().await.unwrap(), vec!["b"]);
    assert_eq!(w.last_index(), 4);
    assert!(fake.paths()[1].contains("index=3"), "{:?}", fake.paths());
}
