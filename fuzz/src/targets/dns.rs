//! DNS messages: a raw message answered by the agent's `dns::Resolver` (the path both the UDP
//! threads and TCP connections take), over UDP and over TCP, from the shared agent's catalog.
//! No recursors are configured, so nothing leaves the process.
//!
//! Asserts: no panic, an answer within [`super::REQUEST_LIMIT`], a response that decodes, with
//! the query's ID, and over UDP no larger than the client allows (512 bytes, or its EDNS size).

use super::{env, REQUEST_LIMIT};
use hickory_proto::op::Message;

pub fn dns_message(data: &[u8]) {
    let env = env();
    let request = Message::from_vec(data).ok();
    for udp in [true, false] {
        let answer = env
            .rt
            .block_on(async { tokio::time::timeout(REQUEST_LIMIT, env.resolver.answer(data, udp)).await })
            .unwrap_or_else(|_| panic!("no answer within {REQUEST_LIMIT:?}"));
        let Some(bytes) = answer else {
            crate::feature(udp as u64);
            continue;
        };
        let response = Message::from_vec(&bytes).unwrap_or_else(|e| panic!("the response does not decode: {e}"));
        if data.len() >= 2 {
            assert_eq!(response.metadata.id, u16::from_be_bytes([data[0], data[1]]), "response ID");
        }
        if let (true, Some(req)) = (udp, &request) {
            let max = req.edns.as_ref().map_or(512, |e| (e.max_payload() as usize).max(512));
            assert!(bytes.len() <= max, "{} bytes over UDP, the client takes {max}", bytes.len());
        }
        crate::feature(
            (u16::from(response.metadata.response_code) as u64) << 8
                | (response.answers.len().min(15) as u64) << 2
                | (response.metadata.truncation as u64) << 1
                | udp as u64,
        );
    }
}
