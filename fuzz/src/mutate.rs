//! The stable engine's mutations: libFuzzer's usual ones (bit flips, byte changes, inserts,
//! deletes, copies, splices with another input, dictionary words, numbers) over a seeded
//! generator, so a run is repeatable from its seed.

/// splitmix64: small, fast and good enough to pick mutations.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e3779b97f4a7c15);
        crate::mix(self.0)
    }

    /// Uniform enough in `0..n`; 0 when `n` is 0.
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }

    pub fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
}

/// Numbers that find off-by-ones and overflows, as text.
const NUMBERS: &[&str] = &[
    "0",
    "1",
    "-1",
    "7",
    "255",
    "256",
    "65535",
    "65536",
    "2147483647",
    "-2147483648",
    "4294967295",
    "4294967296",
    "9223372036854775807",
    "-9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "99999999999999999999999",
    "1e308",
    "1e309",
    "-1e309",
    "0.5",
    "-0",
    "1.7976931348623157e308",
    "NaN",
];

/// Bytes that matter to parsers.
const BYTES: &[u8] = &[0, 0xff, 0x7f, 0x80, 0xc3, 0xe2, 0xf0, b'\n', b'\r', b' ', b'"', b'\\', b'%', b'{', b'}'];

pub struct Mutator<'a> {
    pub dict: Vec<&'a [u8]>,
    pub max_len: usize,
}

impl Mutator<'_> {
    /// A new input from `base`: one to five stacked mutations. `others` are splice partners.
    pub fn mutate(&self, base: &[u8], others: &[Vec<u8>], rng: &mut Rng) -> Vec<u8> {
        let mut out = base.to_vec();
        let rounds = 1 + rng.below(5);
        for _ in 0..rounds {
            self.once(&mut out, others, rng);
        }
        out.truncate(self.max_len);
        out
    }

    fn once(&self, out: &mut Vec<u8>, others: &[Vec<u8>], rng: &mut Rng) {
        let len = out.len();
        match rng.below(13) {
            // Flip a bit.
            0 if len > 0 => {
                let i = rng.below(len);
                out[i] ^= 1 << rng.below(8);
            }
            // Set a byte to an interesting or random value.
            1 if len > 0 => {
                let i = rng.below(len);
                out[i] = if rng.chance(2) { BYTES[rng.below(BYTES.len())] } else { rng.next_u64() as u8 };
            }
            // Insert a few bytes.
            2 => {
                let at = rng.below(len + 1);
                let n = 1 + rng.below(4);
                for _ in 0..n {
                    let b = if rng.chance(2) { BYTES[rng.below(BYTES.len())] } else { rng.next_u64() as u8 };
                    out.insert(at, b);
                }
            }
            // Delete a range.
            3 | 4 if len > 0 => {
                let at = rng.below(len);
                let n = 1 + rng.below((len - at).min(16));
                out.drain(at..at + n);
            }
            // Copy a range elsewhere (repeats structure: nesting, repeated keys).
            5 if len > 0 => {
                let from = rng.below(len);
                let n = 1 + rng.below((len - from).min(64));
                let chunk = out[from..from + n].to_vec();
                let at = rng.below(len + 1);
                let times = if rng.chance(8) { 1 + rng.below(64) } else { 1 };
                for _ in 0..times {
                    if out.len() + chunk.len() > self.max_len {
                        break;
                    }
                    out.splice(at..at, chunk.iter().copied());
                }
            }
            // Insert a dictionary word.
            6 | 7 if !self.dict.is_empty() => {
                let word = self.dict[rng.below(self.dict.len())];
                let at = rng.below(len + 1);
                out.splice(at..at, word.iter().copied());
            }
            // Overwrite with a dictionary word.
            8 if !self.dict.is_empty() && len > 0 => {
                let word = self.dict[rng.below(self.dict.len())];
                let at = rng.below(len);
                let end = (at + word.len()).min(len);
                out.splice(at..end, word.iter().copied());
            }
            // Replace a run of digits (or insert) with an interesting number.
            9 => {
                let n = NUMBERS[rng.below(NUMBERS.len())].as_bytes();
                let at = rng.below(len + 1);
                let mut end = at;
                while end < len && (out[end].is_ascii_digit() || out[end] == b'-' || out[end] == b'.') {
                    end += 1;
                }
                out.splice(at..end, n.iter().copied());
            }
            // Splice: this input's head with another's tail.
            10 | 11 if !others.is_empty() => {
                let other = &others[rng.below(others.len())];
                let cut = rng.below(len + 1);
                let from = rng.below(other.len() + 1);
                out.truncate(cut);
                out.extend_from_slice(&other[from..]);
            }
            // Swap two bytes.
            12 if len > 1 => {
                let (a, b) = (rng.below(len), rng.below(len));
                out.swap(a, b);
            }
            _ => {
                out.push(rng.next_u64() as u8);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_inputs() {
        let m = Mutator { dict: vec![b"{{".as_slice(), b"}}"], max_len: 64 };
        let others = vec![b"other input".to_vec()];
        let run = |seed| {
            let mut rng = Rng::new(seed);
            (0..100).map(|_| m.mutate(b"GET / HTTP/1.1\r\n\r\n", &others, &mut rng)).collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
        assert!(run(7).iter().all(|i| i.len() <= 64));
    }
}
