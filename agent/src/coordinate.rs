//! Network coordinates: the Vivaldi algorithm with height and adjustment, with Serf's constants
//! (`serf/coordinate`), so that coordinates mean what Consul's do (`/v1/coordinate/*`, RTT
//! estimates in seconds). Pure: the caller measures round trips and feeds them in.

use rand::Rng;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};

pub const DIMENSIONALITY: usize = 8;
const ERROR_MAX: f64 = 1.5;
const CE: f64 = 0.25;
const CC: f64 = 0.25;
const ADJUSTMENT_WINDOW: usize = 20;
const HEIGHT_MIN: f64 = 10.0e-6;
const LATENCY_FILTER: usize = 3;
const GRAVITY_RHO: f64 = 150.0;
const ZERO: f64 = 1.0e-6;
/// Round trips beyond this are measurement errors, not distances (Serf's limit).
const MAX_RTT_SECONDS: f64 = 10.0;

/// A coordinate as Consul's API has it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Coord {
    pub vec: Vec<f64>,
    pub error: f64,
    pub adjustment: f64,
    pub height: f64,
}

impl Default for Coord {
    fn default() -> Coord {
        Coord { vec: vec![0.0; DIMENSIONALITY], error: ERROR_MAX, adjustment: 0.0, height: HEIGHT_MIN }
    }
}

fn magnitude(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

impl Coord {
    /// Whether it can be used: the right dimension and every component finite.
    pub fn is_valid(&self) -> bool {
        self.vec.len() == DIMENSIONALITY
            && self.vec.iter().chain([&self.error, &self.adjustment, &self.height]).all(|x| x.is_finite())
    }

    fn raw_distance(&self, other: &Coord) -> f64 {
        let diff: Vec<f64> = self.vec.iter().zip(&other.vec).map(|(a, b)| a - b).collect();
        magnitude(&diff) + self.height + other.height
    }

    /// The estimated round trip to `other`, in seconds.
    pub fn distance(&self, other: &Coord) -> f64 {
        let d = self.raw_distance(other);
        let adjusted = d + self.adjustment + other.adjustment;
        if adjusted > 0.0 {
            adjusted
        } else {
            d
        }
    }

    fn apply_force(&self, force: f64, other: &Coord) -> Coord {
        let mut ret = self.clone();
        let mut unit: Vec<f64> = self.vec.iter().zip(&other.vec).map(|(a, b)| a - b).collect();
        let mag = magnitude(&unit);
        if mag > ZERO {
            unit.iter_mut().for_each(|x| *x /= mag);
        } else {
            // Two coordinates in the same place: push apart in a random direction.
            let mut rng = rand::thread_rng();
            unit.iter_mut().for_each(|x| *x = rng.gen::<f64>() - 0.5);
            let m = magnitude(&unit);
            if m > ZERO {
                unit.iter_mut().for_each(|x| *x /= m);
            }
        }
        ret.vec.iter_mut().zip(&unit).for_each(|(x, u)| *x += u * force);
        if mag > ZERO {
            ret.height = ((ret.height + other.height) * force / mag + ret.height).max(HEIGHT_MIN);
        }
        ret
    }
}

/// One node's coordinate and what it remembers to update it.
#[derive(Debug, Default)]
pub struct Client {
    coord: Coord,
    samples: HashMap<String, VecDeque<f64>>,
    adjustments: VecDeque<f64>,
}

impl Client {
    pub fn coord(&self) -> &Coord {
        &self.coord
    }

    /// Takes one round trip to `node`, whose coordinate is `other`. Refused: a coordinate that
    /// is not valid, or an impossible round trip.
    pub fn update(&mut self, node: &str, other: &Coord, rtt_seconds: f64) -> Result<&Coord, String> {
        if !other.is_valid() {
            return Err("invalid coordinate".into());
        }
        if !(0.0..=MAX_RTT_SECONDS).contains(&rtt_seconds) {
            return Err(format!("round trip of {rtt_seconds} s is out of range"));
        }
        let rtt = self.filtered(node, rtt_seconds);
        self.vivaldi(other, rtt);
        self.adjust(other, rtt);
        self.gravity();
        if !self.coord.is_valid() {
            *self = Client::default();
        }
        Ok(&self.coord)
    }

    /// The median of the last few round trips to `node`, which drops spikes.
    fn filtered(&mut self, node: &str, rtt: f64) -> f64 {
        let s = self.samples.entry(node.to_string()).or_default();
        s.push_back(rtt);
        if s.len() > LATENCY_FILTER {
            s.pop_front();
        }
        let mut sorted: Vec<f64> = s.iter().copied().collect();
        sorted.sort_by(f64::total_cmp);
        sorted[sorted.len() / 2]
    }

    fn vivaldi(&mut self, other: &Coord, rtt: f64) {
        let rtt = rtt.max(ZERO);
        let dist = self.coord.distance(other);
        let wrongness = (dist - rtt).abs() / rtt;
        let total = (self.coord.error + other.error).max(ZERO);
        let weight = self.coord.error / total;
        self.coord.error = (CE * weight * wrongness + self.coord.error * (1.0 - CE * weight)).min(ERROR_MAX);
        let force = CC * weight * (rtt - dist);
        self.coord = self.coord.apply_force(force, other);
    }

    fn adjust(&mut self, other: &Coord, rtt: f64) {
        self.adjustments.push_back(rtt - self.coord.raw_distance(other));
        if self.adjustments.len() > ADJUSTMENT_WINDOW {
            self.adjustments.pop_front();
        }
        self.coord.adjustment = self.adjustments.iter().sum::<f64>() / (2.0 * ADJUSTMENT_WINDOW as f64);
    }

    fn gravity(&mut self) {
        let origin = Coord::default();
        let dist = origin.distance(&self.coord);
        let force = -(dist / GRAVITY_RHO).powi(2);
        self.coord = self.coord.apply_force(force, &origin);
    }
}

/// The median of `xs` (`None` when empty).
pub fn median(mut xs: Vec<f64>) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    xs.sort_by(f64::total_cmp);
    Some(xs[xs.len() / 2])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three nodes, a and b 10 ms apart, c 100 ms from both: after some rounds the estimates
    /// order them as the network does.
    #[test]
    fn converges_to_the_network() {
        let rtt = |x: usize, y: usize| if (x == 2) != (y == 2) { 0.100 } else { 0.010 };
        let names = ["a", "b", "c"];
        let mut clients: Vec<Client> = (0..3).map(|_| Client::default()).collect();
        for round in 0..300 {
            for i in 0..3 {
                let j = (i + 1 + round % 2) % 3;
                let other = clients[j].coord().clone();
                clients[i].update(names[j], &other, rtt(i, j)).expect("update");
            }
        }
        let d = |i: usize, j: usize| clients[i].coord().distance(clients[j].coord());
        assert!(d(0, 1) < 0.03, "a-b estimated {}", d(0, 1));
        assert!((d(0, 2) - 0.100).abs() < 0.03, "a-c estimated {}", d(0, 2));
        assert!(d(0, 1) < d(0, 2) && d(1, 0) < d(1, 2));
    }

    #[test]
    fn refuses_bad_input_and_stays_valid() {
        let mut c = Client::default();
        let mut bad = Coord::default();
        bad.vec[0] = f64::NAN;
        assert!(c.update("x", &bad, 0.01).is_err());
        assert!(c.update("x", &Coord { vec: vec![0.0; 3], ..Coord::default() }, 0.01).is_err());
        assert!(c.update("x", &Coord::default(), -1.0).is_err());
        assert!(c.update("x", &Coord::default(), 60.0).is_err());
        // Same place, zero round trip: still a valid coordinate.
        for _ in 0..50 {
            c.update("x", &Coord::default(), 0.0).expect("update");
        }
        assert!(c.coord().is_valid());
        let v = serde_json::to_value(c.coord()).expect("json");
        assert_eq!(v["Vec"].as_array().map(Vec::len), Some(DIMENSIONALITY));
        assert!(v["Height"].as_f64().is_some_and(|h| h >= HEIGHT_MIN));
    }
}
