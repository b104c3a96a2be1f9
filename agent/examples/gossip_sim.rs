//! Gossip figures in virtual time, from the deterministic simulator with Consul's LAN timings:
//! convergence (every agent knows every other after all joined through one seed at t=0) and
//! failure detection (one agent killed; until every other marks it Failed).
//!
//! cargo run -p agent --release --example gossip_sim -- [sizes...] [--seeds N] [--loss P]

use std::time::{Duration, Instant};

use agent::gossip::sim::{Network, Sim};
use agent::gossip::{MemberStatus, Timing};

fn main() {
    let mut sizes = Vec::new();
    let mut seeds = 3u64;
    let mut loss = 0.0;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seeds" => seeds = args.next().and_then(|s| s.parse().ok()).unwrap_or(seeds),
            "--loss" => loss = args.next().and_then(|s| s.parse().ok()).unwrap_or(loss),
            n => sizes.extend(n.parse::<usize>().ok()),
        }
    }
    if sizes.is_empty() {
        sizes = vec![100, 1000];
    }
    let timing = Timing::lan();
    println!("LAN timings: {timing:?}; network 0.5 ms + up to 0.5 ms jitter, {:.0}% datagram loss", loss * 100.0);
    println!("{:>6} {:>5} {:>12} {:>12} {:>14} {:>10}", "agents", "seed", "converge", "detect", "pkts/agent/s", "wall");
    for &n in &sizes {
        for seed in 1..=seeds {
            let wall = Instant::now();
            let mut sim = Sim::new(seed, Network { loss, ..Network::lan() }, timing.clone());
            for i in 0..n {
                sim.add();
                if i > 0 {
                    sim.join(i, 0);
                }
            }
            let limit = Duration::from_secs(600);
            let converge = sim.run_until(limit, Sim::converged);
            let (start, packets) = (sim.now(), sim.packets);
            let victim = n / 2;
            sim.kill(victim);
            let detect = sim.run_until(limit, |s| s.all_see(victim, MemberStatus::Failed));
            let rate = (sim.packets - packets) as f64 / (sim.now() - start).as_secs_f64().max(1e-9) / n as f64;
            let show = |d: Option<Duration>| d.map_or("> 600s".to_string(), |d| format!("{:.2}s", d.as_secs_f64()));
            println!(
                "{n:>6} {seed:>5} {:>12} {:>12} {rate:>14.1} {:>9.1}s",
                show(converge),
                show(detect),
                wall.elapsed().as_secs_f64()
            );
        }
    }
}
