//! The leader's Connect duty: a CA exists. The first leader of a cluster makes the root (with a
//! new cluster ID) and writes it through Raft; later leaders find it there.

use crate::agent::Agent;
use std::sync::Arc;
use std::time::Duration;

pub async fn run(agent: Arc<Agent>) {
    let Some(server) = agent.server.clone() else { return };
    let mut shutdown = agent.shutdown.subscribe();
    let mut metrics = server.raft.metrics();
    loop {
        if server.is_leader() && agent.store.read().connect_ca.is_none() {
            let cluster_id = uuid::Uuid::new_v4().to_string();
            match crate::connect::new_ca(
                &cluster_id,
                crate::connect::default_ca_config(),
                time::OffsetDateTime::now_utc(),
            ) {
                // `cas: 0`: only if no other leader wrote one meanwhile.
                Ok(ca) => match agent.write(crate::structs::Command::ConnectCaSet { ca, cas: Some(0) }).await {
                    Ok(_) => tracing::info!(cluster_id = %cluster_id, "connect: initialized the built-in CA"),
                    Err(e) => tracing::warn!(error = %e, "connect: writing the CA failed"),
                },
                Err(e) => tracing::error!(error = %e, "connect: making the CA root failed"),
            }
        }
        tokio::select! {
            r = metrics.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = shutdown.changed() => return,
        }
    }
}
