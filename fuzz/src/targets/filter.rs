//! `?filter=` expressions: `agent::filter::parse`, then `Filter::matches` over elements of the
//! answers that take a filter, and `Filter::check_selectors` against each endpoint's sample
//! element, as the HTTP layer runs them.

use agent::http::routes::Endpoint;
use serde_json::{json, Value};
use std::sync::OnceLock;

pub const DICT: &[&str] = &[
    " and ",
    " or ",
    "not ",
    " == ",
    " != ",
    " in ",
    " not in ",
    " contains ",
    " not contains ",
    " matches ",
    " not matches ",
    " is empty",
    " is not empty",
    "(",
    ")",
    "\"",
    "`",
    ".",
    "[\"",
    "\"]",
    "ServiceName",
    "ServiceTags",
    "ServiceMeta",
    "Service.Meta",
    "Checks",
    "Checks.Status",
    "Node",
    "NodeMeta",
    "Meta",
    "Tags",
    "Port",
    "ServicePort",
    "Weights.Passing",
    "TaggedAddresses",
    "Status",
    "passing",
    "critical",
    "web",
    ".*",
    "[",
    "\\",
    "0",
    "-1",
    "1.5",
    "true",
    "1e99",
];

/// Real elements of each list a filter applies to, plus every endpoint's sample.
fn elements() -> &'static [Value] {
    static E: OnceLock<Vec<Value>> = OnceLock::new();
    E.get_or_init(|| {
        let mut v = vec![
            json!({"ID":"n1","Node":"web1","Address":"10.0.0.1","Datacenter":"dc1",
                "TaggedAddresses":{"lan":"10.0.0.1"},"Meta":{"rack":"r1","env":"prod"},"CreateIndex":5,"ModifyIndex":7}),
            json!({"Node":"web1","ServiceID":"web-1","ServiceName":"web","ServiceTags":["v1","primary"],
                "ServiceMeta":{"env":"prod","version":"2"},"ServicePort":8080,"ServiceAddress":"",
                "ServiceWeights":{"Passing":1,"Warning":1},"ServiceEnableTagOverride":false,"NodeMeta":null}),
            json!({"Node":{"Node":"web1","Meta":{}},"Service":{"ID":"web-1","Service":"web","Tags":[],"Port":80,
                "Meta":{"a":"b"},"Weights":{"Passing":3}},
                "Checks":[{"CheckID":"serfHealth","Status":"passing","ServiceTags":[]},
                          {"CheckID":"c2","Status":"critical","ServiceTags":["x"],"Definition":{"HTTP":"h"}}]}),
            json!({"Name":"s1","Addr":"10.0.0.1","Port":8301,"Tags":{"role":"consul","dc":"dc1"},"Status":1}),
            json!({"CheckID":"c","Status":"warning","Output":"ünïcode","ServiceTags":null,"Interval":"10s"}),
            json!([1, "two", {"three": 3.5}]),
            json!("just a string"),
            json!(null),
        ];
        for e in SAMPLE_ENDPOINTS {
            if let Some(s) = agent::http::shape::filter_sample(e) {
                v.push(s.clone());
            }
        }
        v
    })
}

const SAMPLE_ENDPOINTS: &[Endpoint] = &[
    Endpoint::CatalogNodes,
    Endpoint::AgentChecks,
    Endpoint::HealthService(String::new()),
    Endpoint::CatalogServices,
    Endpoint::AgentServices,
    Endpoint::AgentMembers,
];

pub fn filter(data: &[u8]) {
    let expr = String::from_utf8_lossy(data);
    let f = match agent::filter::parse(&expr) {
        Ok(f) => f,
        Err(e) => {
            assert!(!e.is_empty());
            crate::feature(crate::error_kind(&e));
            return;
        }
    };
    let negated = agent::filter::parse(&format!("not ({expr})")).ok();
    for (i, el) in elements().iter().enumerate() {
        let m = f.matches(el);
        if let Some(n) = &negated {
            assert_eq!(n.matches(el), !m, "`not (...)` of element {i}");
        }
        crate::feature((i as u64) << 1 | m as u64);
    }
    for e in SAMPLE_ENDPOINTS {
        if let Some(sample) = agent::http::shape::filter_sample(e) {
            crate::feature(f.check_selectors(sample).is_ok() as u64 + 100);
        }
    }
}
