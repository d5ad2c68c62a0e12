//! kiln-ml's own small, versioned random numbers: shuffles and seeds derived from the job's
//! seed, so a resumed job (even on another machine or build) repeats exactly what an
//! uninterrupted one would have done. Not for cryptography.

/// Serialises "seed libtorch's global generator, then draw from it" sections (weight
/// initialisation, a dropout forward pass) across threads: libtorch has one CPU generator per
/// process, and two jobs (or tests) interleaving their draws would make both irreproducible.
pub(crate) fn torch_rng_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// SplitMix64 (Steele, Lea and Flood 2014): tiny, fast, and stable by definition.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator for one purpose (`stream`) of one job (`seed`).
    pub(crate) fn new(seed: u64, stream: &[u64]) -> Self {
        let mut state = seed ^ 0x6b69_6c6e_2d6d_6c00; // "kiln-ml"
        for &s in stream {
            state = mix(state ^ mix(s.wrapping_add(0x9e37_79b9_7f4a_7c15)));
        }
        SplitMix64(state)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }

    /// Uniform in `0..n` (n > 0), by Lemire's multiply-shift (bias below 2^-32 for our n).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// Fisher–Yates.
    pub(crate) fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }

    /// A non-negative seed for `tch::manual_seed`.
    pub(crate) fn torch_seed(&mut self) -> i64 {
        (self.next_u64() >> 1) as i64
    }
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The purposes random numbers serve; each gets its own stream.
pub(crate) mod stream {
    pub(crate) const SPLIT: u64 = 1;
    pub(crate) const INIT: u64 = 2;
    pub(crate) const SHUFFLE: u64 = 3;
    pub(crate) const STEP: u64 = 4;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_reproducible_and_distinct() {
        let a: Vec<u64> = (0..4).map(|_| SplitMix64::new(42, &[1, 2]).next_u64()).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        assert_ne!(
            SplitMix64::new(42, &[1, 2]).next_u64(),
            SplitMix64::new(42, &[1, 3]).next_u64()
        );
        assert_ne!(SplitMix64::new(42, &[1]).next_u64(), SplitMix64::new(43, &[1]).next_u64());
    }

    #[test]
    fn shuffle_is_a_permutation() {
        let mut items: Vec<usize> = (0..100).collect();
        SplitMix64::new(7, &[]).shuffle(&mut items);
        assert_ne!(items, (0..100).collect::<Vec<_>>());
        items.sort_unstable();
        assert_eq!(items, (0..100).collect::<Vec<_>>());
    }
}
