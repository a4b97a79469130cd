//! The simulator's own pseudo-random number generator.
//!
//! Output must be a pure function of the config, for ever: a simulation
//! written to a log today has to be reproducible from its seed after any
//! dependency upgrade. So the generator lives here instead of coming from
//! the `rand` crate, whose streams may change between versions.
//!
//! - [`SplitMix64`] (Steele, Lea & Flood 2014) expands a 64-bit seed into
//!   well-mixed state words; it is the seeding procedure recommended by the
//!   xoshiro authors.
//! - [`Rng`] is xoshiro256++ 1.0 (Blackman & Vigna 2019,
//!   <https://prng.di.unimi.it/xoshiro256plusplus.c>): 256 bits of state,
//!   period 2²⁵⁶ − 1, passes BigCrush, a handful of adds, xors and rotates
//!   per 64-bit output. Not cryptographic, which a simulator does not need.
//!
//! The distributions ([`Rng::uniform`], [`Rng::normal`], [`Rng::poisson`])
//! are written out here for the same reason. The ones using `ln`, `cos` or
//! `exp` depend on the platform's libm, which may round the last bit
//! differently on another target; on one build the output is exact.

/// SplitMix64: a 64-bit state advanced by the golden-ratio increment and
/// passed through a variant of the MurmurHash3 finaliser.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// xoshiro256++ with the distributions the simulator needs.
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A generator for one independent stream of a simulation: the seed and
    /// a stream number go through SplitMix64, so streams of the same seed
    /// are unrelated and the state is never all zero (SplitMix64 is a
    /// bijection of its counter; four consecutive outputs are never all 0).
    pub fn new(seed: u64, stream: u64) -> Self {
        let mut sm = SplitMix64::new(seed ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03));
        Self {
            s: [sm.next_u64(), sm.next_u64(), sm.next_u64(), sm.next_u64()],
        }
    }

    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in `[0, 1)` with 53 random bits (every double of the form
    /// k·2⁻⁵³).
    #[inline]
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[lo, hi)`.
    #[inline]
    pub fn range_f64(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }

    /// Uniform integer in `[lo, hi]` (inclusive); `lo` when `hi <= lo`.
    /// Lemire's multiply-shift: the bias is below 2⁻⁶⁴·(span), far under
    /// anything a simulation could observe.
    #[inline]
    pub fn range_i64(&mut self, lo: i64, hi: i64) -> i64 {
        if hi <= lo {
            return lo;
        }
        let span = (hi - lo) as u64 + 1;
        let offset = ((u128::from(self.next_u64()) * u128::from(span)) >> 64) as u64;
        lo + offset as i64
    }

    /// Uniform index in `[0, n)`; `0` when `n == 0`.
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// `true` with probability `p`.
    #[inline]
    pub fn chance(&mut self, p: f64) -> bool {
        self.uniform() < p
    }

    /// Standard normal (Box–Muller; one of the pair is discarded so that a
    /// draw always consumes exactly two outputs).
    pub fn normal(&mut self) -> f64 {
        // 1 − u is in (0, 1], so the logarithm is finite.
        let u1 = 1.0 - self.uniform();
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Poisson-distributed count with mean `lambda` (finite, ≥ 0). Knuth's product
    /// of uniforms, applied to chunks of at most 30 (a sum of independent
    /// Poisson variables is Poisson with the summed mean), so it stays exact
    /// and cannot underflow for any mean; cost grows with the mean, which
    /// is at most the number of events generated anyway.
    pub fn poisson(&mut self, lambda: f64) -> u64 {
        const CHUNK: f64 = 30.0;
        // NaN and infinite means cannot come from a validated config;
        // answer them with 0 rather than loop forever.
        if !lambda.is_finite() || lambda <= 0.0 {
            return 0;
        }
        let mut remaining = lambda;
        let mut count = 0;
        while remaining > 0.0 {
            let l = remaining.min(CHUNK);
            remaining -= l;
            let limit = (-l).exp();
            let mut p = self.uniform();
            while p > limit {
                count += 1;
                p *= self.uniform();
            }
        }
        count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_reference_values() {
        // Reference outputs of splitmix64.c for seed 1234567.
        let mut sm = SplitMix64::new(1_234_567);
        assert_eq!(sm.next_u64(), 6_457_827_717_110_365_317);
        assert_eq!(sm.next_u64(), 3_203_168_211_198_807_973);
        assert_eq!(sm.next_u64(), 9_817_491_932_198_370_423);
    }

    #[test]
    fn xoshiro_reference_values() {
        // xoshiro256plusplus.c with state {1, 2, 3, 4}.
        let mut rng = Rng { s: [1, 2, 3, 4] };
        let expected: [u64; 4] = [
            41_943_041,
            58_720_359,
            3_588_806_011_781_223,
            3_591_011_842_654_386,
        ];
        for e in expected {
            assert_eq!(rng.next_u64(), e);
        }
    }

    #[test]
    fn streams_are_reproducible_and_distinct() {
        let a: Vec<u64> = {
            let mut r = Rng::new(7, 1);
            (0..4).map(|_| r.next_u64()).collect()
        };
        let b: Vec<u64> = {
            let mut r = Rng::new(7, 1);
            (0..4).map(|_| r.next_u64()).collect()
        };
        let c: Vec<u64> = {
            let mut r = Rng::new(7, 2);
            (0..4).map(|_| r.next_u64()).collect()
        };
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn distributions_have_the_right_moments() {
        let mut rng = Rng::new(42, 0);
        let n = 200_000;
        let mean = |xs: &[f64]| xs.iter().sum::<f64>() / xs.len() as f64;

        let u: Vec<f64> = (0..n).map(|_| rng.uniform()).collect();
        assert!(u.iter().all(|x| (0.0..1.0).contains(x)));
        assert!((mean(&u) - 0.5).abs() < 0.01);

        let z: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
        let m = mean(&z);
        let var = z.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / n as f64;
        assert!(m.abs() < 0.01, "{m}");
        assert!((var - 1.0).abs() < 0.02, "{var}");

        for lambda in [0.0, 0.3, 6.0, 75.0] {
            let p: Vec<f64> = (0..20_000).map(|_| rng.poisson(lambda) as f64).collect();
            let m = mean(&p);
            assert!((m - lambda).abs() < 0.05 * lambda.max(1.0), "{lambda}: {m}");
        }

        let r: Vec<i64> = (0..n).map(|_| rng.range_i64(-2, 2)).collect();
        for v in -2..=2 {
            let share = r.iter().filter(|x| **x == v).count() as f64 / n as f64;
            assert!((share - 0.2).abs() < 0.01, "{v}: {share}");
        }
        assert_eq!(rng.range_i64(5, 5), 5);
        assert_eq!(rng.below(0), 0);
    }
}
