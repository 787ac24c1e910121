//! Which seeds a sweep runs: a range `A..B`, or one shard's share of it
//! (`upsim sweep … --shard K/N`).
//!
//! A seed belongs to shard `seed mod N`: its shard depends on the seed and
//! the shard count only, never on the range or on which machine asks, so N
//! machines given the same range and N split it without talking to each
//! other, every seed in exactly one shard, and a shard re-run after a crash
//! runs the same seeds again. Consecutive seeds go to consecutive shards, so
//! the shards of a range differ in size by at most one seed.

use std::ops::Range;

/// Most shards a sweep may be cut into: far more machines than a sweep
/// needs, and small enough that `K/N` never overflows a seed computation.
pub const SHARD_COUNT_MAX: u64 = 1 << 20;

/// One shard of N: the seeds `s` with `s mod count == index`.
///
/// Invariant: `1 <= count <= SHARD_COUNT_MAX` and `index < count`
/// (checked by [`Shard::new`], the only way to build one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    index: u64,
    count: u64,
}

/// A `--shard` that is not a shard, with what is wrong in its numbers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardError {
    /// Not of the form `K/N`.
    #[error("shard {text:?} is not K/N (K the 0-based shard index, N the shard count, e.g. 0/4)")]
    NotKOverN {
        /// What was given.
        text: String,
    },
    /// K or N is not a whole number.
    #[error("shard {text:?}: {part} {value:?} is not a whole number")]
    NotANumber {
        /// What was given.
        text: String,
        /// `index K` or `count N`.
        part: &'static str,
        /// The offending part.
        value: String,
    },
    /// N is 0 or above [`SHARD_COUNT_MAX`].
    #[error("shard count N = {count} is outside 1..={max}")]
    CountOutOfRange {
        /// N as given.
        count: u64,
        /// [`SHARD_COUNT_MAX`].
        max: u64,
    },
    /// K is not below N (K is 0-based).
    #[error(
        "shard index K = {index} is not below the shard count N = {count}: K is 0-based, \
         so the shards of {count} are 0/{count} to {last}/{count}",
        last = count - 1
    )]
    IndexNotBelowCount {
        /// K as given.
        index: u64,
        /// N as given.
        count: u64,
    },
}

/// A `--seeds` that is not a seed range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SeedRangeError {
    /// Not of the form `A..B`.
    #[error("seed range {text:?} is not A..B")]
    NotARange {
        /// What was given.
        text: String,
    },
    /// A or B is not a whole number.
    #[error("seed range {part} {value:?} is not a number")]
    NotANumber {
        /// `start` or `end`.
        part: &'static str,
        /// The offending part.
        value: String,
    },
    /// `A >= B`.
    #[error("seed range {start}..{end} is empty")]
    Empty {
        /// A.
        start: u64,
        /// B.
        end: u64,
    },
}

/// Why `text` is not two whole numbers around a separator.
enum PairError<'a> {
    /// No separator.
    NoSeparator,
    /// Part 0 (before the separator) or 1 is not a whole number.
    NotANumber { part: usize, value: &'a str },
}

/// `text` split at `separator` into two whole numbers (`A..B`, `K/N`),
/// each trimmed.
fn number_pair<'a>(text: &'a str, separator: &str) -> Result<(u64, u64), PairError<'a>> {
    let (a, b) = text.split_once(separator).ok_or(PairError::NoSeparator)?;
    let number = |part: usize, value: &'a str| {
        value
            .trim()
            .parse::<u64>()
            .map_err(|_| PairError::NotANumber { part, value })
    };
    Ok((number(0, a)?, number(1, b)?))
}

/// Parses `A..B` (B excluded) into a non-empty seed range.
///
/// # Errors
/// [`SeedRangeError`], naming what is wrong.
pub fn parse_seed_range(text: &str) -> Result<Range<u64>, SeedRangeError> {
    let (start, end) = number_pair(text, "..").map_err(|e| match e {
        PairError::NoSeparator => SeedRangeError::NotARange {
            text: text.to_owned(),
        },
        PairError::NotANumber { part, value } => SeedRangeError::NotANumber {
            part: ["start", "end"][part],
            value: value.to_owned(),
        },
    })?;
    if start >= end {
        return Err(SeedRangeError::Empty { start, end });
    }
    Ok(start..end)
}

impl Shard {
    /// The whole range: one shard of one.
    pub const WHOLE: Self = Self { index: 0, count: 1 };

    /// Shard `index` of `count`.
    ///
    /// # Errors
    /// [`ShardError::CountOutOfRange`] unless `1 <= count <=
    /// SHARD_COUNT_MAX`; [`ShardError::IndexNotBelowCount`] unless `index <
    /// count`.
    pub fn new(index: u64, count: u64) -> Result<Self, ShardError> {
        if count == 0 || count > SHARD_COUNT_MAX {
            return Err(ShardError::CountOutOfRange {
                count,
                max: SHARD_COUNT_MAX,
            });
        }
        if index >= count {
            return Err(ShardError::IndexNotBelowCount { index, count });
        }
        Ok(Self { index, count })
    }

    /// Parses `K/N` (K 0-based, as Kubernetes' `JOB_COMPLETION_INDEX`).
    ///
    /// # Errors
    /// [`ShardError`], naming what is wrong.
    pub fn parse(text: &str) -> Result<Self, ShardError> {
        let (index, count) = number_pair(text, "/").map_err(|e| match e {
            PairError::NoSeparator => ShardError::NotKOverN {
                text: text.to_owned(),
            },
            PairError::NotANumber { part, value } => ShardError::NotANumber {
                text: text.to_owned(),
                part: ["index K", "count N"][part],
                value: value.to_owned(),
            },
        })?;
        Self::new(index, count)
    }

    /// K, 0-based.
    pub fn index(self) -> u64 {
        self.index
    }

    /// N.
    pub fn count(self) -> u64 {
        self.count
    }

    /// Whether `seed` is in this shard.
    pub fn contains(self, seed: u64) -> bool {
        seed % self.count == self.index
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// The seeds a sweep runs: those of `range` in `shard`, in increasing
/// order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedSet {
    /// The whole sweep's range (every shard's).
    pub range: Range<u64>,
    /// This sweep's share of it.
    pub shard: Shard,
}

impl SeedSet {
    /// `shard`'s share of `range`.
    pub fn new(range: Range<u64>, shard: Shard) -> Self {
        Self { range, shard }
    }

    /// The first seed of the range in the shard, if any.
    fn first(&self) -> Option<u64> {
        let n = self.shard.count;
        let start = self.range.start;
        // The next seed at or after `start` whose residue is the index.
        let step = (self.shard.index + n - start % n) % n;
        start.checked_add(step).filter(|s| *s < self.range.end)
    }

    /// How many seeds.
    pub fn len(&self) -> u64 {
        match self.first() {
            Some(first) => (self.range.end - 1 - first) / self.shard.count + 1,
            None => 0,
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `i`-th seed (0-based), if `i < len()`.
    pub fn nth(&self, i: u64) -> Option<u64> {
        if i >= self.len() {
            return None;
        }
        self.first().map(|first| first + i * self.shard.count)
    }

    /// Every seed, in order.
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        (0..self.len()).filter_map(|i| self.nth(i))
    }
}

impl From<Range<u64>> for SeedSet {
    fn from(range: Range<u64>) -> Self {
        Self::new(range, Shard::WHOLE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_a_range_once_whatever_the_range() {
        for range in [0..16, 3..17, 5..6, 7..7, 1000..1013] {
            for count in 1..=5 {
                let mut seen: Vec<u64> = (0..count)
                    .flat_map(|k| {
                        let set = SeedSet::new(range.clone(), Shard::new(k, count).expect("valid"));
                        let seeds: Vec<u64> = set.iter().collect();
                        assert_eq!(seeds.len() as u64, set.len(), "{set:?}");
                        assert!(seeds.iter().all(|s| s % count == k && range.contains(s)));
                        seeds
                    })
                    .collect();
                seen.sort_unstable();
                assert_eq!(
                    seen,
                    range.clone().collect::<Vec<_>>(),
                    "{range:?} in {count}"
                );
            }
        }
    }

    #[test]
    fn a_seeds_shard_depends_on_the_seed_and_the_count_only() {
        let shard = Shard::parse("2/4").expect("valid");
        assert!(shard.contains(6) && shard.contains(10) && !shard.contains(7));
        let a = SeedSet::new(0..100, shard);
        let b = SeedSet::new(5..23, shard);
        assert!(b.iter().all(|s| a.iter().any(|t| t == s)));
        assert_eq!(b.iter().collect::<Vec<_>>(), [6, 10, 14, 18, 22]);
        assert_eq!(SeedSet::from(4..7).iter().collect::<Vec<_>>(), [4, 5, 6]);
        assert_eq!(
            SeedSet::new(0..2, Shard::parse("3/4").expect("valid")).len(),
            0
        );
    }

    #[test]
    fn a_bad_seed_range_says_what_is_wrong() {
        assert_eq!(parse_seed_range(" 2 .. 9"), Ok(2..9));
        assert_eq!(
            parse_seed_range("5..5"),
            Err(SeedRangeError::Empty { start: 5, end: 5 })
        );
        assert!(matches!(
            parse_seed_range("a..3"),
            Err(SeedRangeError::NotANumber { part: "start", .. })
        ));
        assert!(matches!(
            parse_seed_range("1..x"),
            Err(SeedRangeError::NotANumber { part: "end", .. })
        ));
        assert!(matches!(
            parse_seed_range("3"),
            Err(SeedRangeError::NotARange { .. })
        ));
    }

    #[test]
    fn a_bad_shard_says_what_is_wrong() {
        assert_eq!(Shard::parse("0/1"), Ok(Shard::WHOLE));
        assert!(matches!(
            Shard::parse("4/4"),
            Err(ShardError::IndexNotBelowCount { index: 4, count: 4 })
        ));
        let e = Shard::parse("4/4")
            .expect_err("K must be below N")
            .to_string();
        assert!(e.contains("0-based") && e.contains("0/4 to 3/4"), "{e}");
        assert!(matches!(
            Shard::parse("0/0"),
            Err(ShardError::CountOutOfRange { count: 0, .. })
        ));
        assert!(matches!(
            Shard::parse("3"),
            Err(ShardError::NotKOverN { .. })
        ));
        assert!(matches!(
            Shard::parse("a/4"),
            Err(ShardError::NotANumber {
                part: "index K",
                ..
            })
        ));
        assert!(matches!(
            Shard::parse("1/-2"),
            Err(ShardError::NotANumber {
                part: "count N",
                ..
            })
        ));
        assert_eq!(
            Shard::parse(" 1 / 3 ").map(|s| s.to_string()),
            Ok("1/3".into())
        );
    }
}
