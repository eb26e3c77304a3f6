//! Key groups: the unit of rescaling.
//!
//! The arithmetic here is normative and identical to Apache Flink's (see `docs/key-groups.md`):
//! a key's canonical bytes are hashed with MurmurHash3 x86 32-bit (seed 0), the hash is mixed
//! once more with Flink's `MathUtils.murmurHash`, and the result modulo the max parallelism is
//! the key group. Contiguous key-group ranges are assigned to operator subtasks.
//!
//! ```
//! use flowstate_api::key_groups::*;
//! let max = MaxParallelism::new(128)?;
//! let kg = key_group_for_key_bytes(b"hello", max);
//! let p = Parallelism::new(3)?;
//! let subtask = operator_index_for_key_group(max, p, kg);
//! assert!(key_group_range_for_operator(max, p, subtask)?.contains(kg));
//! # Ok::<(), flowstate_api::Error>(())
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The largest max parallelism (and parallelism) flowstate accepts: 2^15, as Flink.
pub const UPPER_BOUND_MAX_PARALLELISM: u32 = 1 << 15;

/// The number of key groups of a job: fixed for the life of its state.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct MaxParallelism(u32);

impl MaxParallelism {
    /// Accepts `1..=32768`.
    pub fn new(value: u32) -> Result<Self> {
        if (1..=UPPER_BOUND_MAX_PARALLELISM).contains(&value) {
            Ok(Self(value))
        } else {
            Err(Error::InvalidMaxParallelism { value })
        }
    }
    /// The number of key groups.
    pub fn get(self) -> u32 {
        self.0
    }
    /// The full range of key groups, `[0, max - 1]`.
    pub fn full_range(self) -> KeyGroupRange {
        KeyGroupRange {
            start: 0,
            end: self.0 - 1,
        }
    }
    /// Checks that `parallelism` fits under this max parallelism.
    pub fn check(self, parallelism: Parallelism) -> Result<()> {
        if parallelism.get() > self.0 {
            Err(Error::ParallelismAboveMax {
                parallelism: parallelism.get(),
                max_parallelism: self.0,
            })
        } else {
            Ok(())
        }
    }
}

impl TryFrom<u32> for MaxParallelism {
    type Error = Error;
    fn try_from(value: u32) -> Result<Self> {
        Self::new(value)
    }
}
impl From<MaxParallelism> for u32 {
    fn from(value: MaxParallelism) -> u32 {
        value.0
    }
}
impl fmt::Display for MaxParallelism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The number of parallel subtasks of an operator.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct Parallelism(u32);

impl Parallelism {
    /// Accepts `1..=32768`; whether it fits a given max parallelism is checked where both meet.
    pub fn new(value: u32) -> Result<Self> {
        if (1..=UPPER_BOUND_MAX_PARALLELISM).contains(&value) {
            Ok(Self(value))
        } else {
            Err(Error::InvalidParallelism { value })
        }
    }
    /// The number of subtasks.
    pub fn get(self) -> u32 {
        self.0
    }
}
impl TryFrom<u32> for Parallelism {
    type Error = Error;
    fn try_from(value: u32) -> Result<Self> {
        Self::new(value)
    }
}
impl From<Parallelism> for u32 {
    fn from(value: Parallelism) -> u32 {
        value.0
    }
}
impl fmt::Display for Parallelism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// One key group: `0..max_parallelism`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KeyGroup(u32);

impl KeyGroup {
    /// Accepts `0..max`.
    pub fn new(value: u32, max: MaxParallelism) -> Result<Self> {
        if value < max.get() {
            Ok(Self(value))
        } else {
            Err(Error::KeyGroupOutOfBounds {
                key_group: value,
                max_parallelism: max.get(),
            })
        }
    }
    /// For values already known to be below some max parallelism (e.g. taken from a validated
    /// [`KeyGroupRange`]). Values above 32767 are rejected.
    pub fn from_validated(value: u32) -> Result<Self> {
        if value < UPPER_BOUND_MAX_PARALLELISM {
            Ok(Self(value))
        } else {
            Err(Error::KeyGroupOutOfBounds {
                key_group: value,
                max_parallelism: UPPER_BOUND_MAX_PARALLELISM,
            })
        }
    }
    /// The key group's index, below the max parallelism.
    pub fn get(self) -> u32 {
        self.0
    }
    /// The fixed-width big-endian prefix ordered stores put in front of every key.
    pub fn to_be_bytes(self) -> [u8; 2] {
        // 2^15 key groups fit in two bytes.
        (self.0 as u16).to_be_bytes()
    }
}
impl fmt::Display for KeyGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An inclusive, non-empty range of key groups `[start, end]`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawRange", into = "RawRange")]
pub struct KeyGroupRange {
    start: u32,
    end: u32,
}

#[derive(Serialize, Deserialize)]
struct RawRange {
    start: u32,
    end: u32,
}
impl TryFrom<RawRange> for KeyGroupRange {
    type Error = Error;
    fn try_from(r: RawRange) -> Result<Self> {
        Self::new(r.start, r.end)
    }
}
impl From<KeyGroupRange> for RawRange {
    fn from(r: KeyGroupRange) -> Self {
        RawRange {
            start: r.start,
            end: r.end,
        }
    }
}

impl KeyGroupRange {
    /// Accepts `start <= end < 32768`.
    pub fn new(start: u32, end: u32) -> Result<Self> {
        if start <= end && end < UPPER_BOUND_MAX_PARALLELISM {
            Ok(Self { start, end })
        } else {
            Err(Error::InvalidKeyGroupRange { start, end })
        }
    }
    /// A range that must also lie within `max`'s key groups.
    pub fn new_within(start: u32, end: u32, max: MaxParallelism) -> Result<Self> {
        let range = Self::new(start, end)?;
        if end >= max.get() {
            return Err(Error::KeyGroupOutOfBounds {
                key_group: end,
                max_parallelism: max.get(),
            });
        }
        Ok(range)
    }
    /// `Ok` when the range holds `key_group`, else [`Error::KeyGroupNotOwned`]: the one check
    /// every backend, view and restore makes before touching a key group's state.
    #[inline]
    pub fn check_owns(&self, key_group: KeyGroup) -> Result<()> {
        if self.contains(key_group) {
            Ok(())
        } else {
            Err(self.not_owned(key_group))
        }
    }

    /// The [`Error::KeyGroupNotOwned`] for `key_group`, which this range does not hold.
    #[cold]
    pub fn not_owned(&self, key_group: KeyGroup) -> Error {
        Error::KeyGroupNotOwned {
            key_group: key_group.get(),
            range: self.to_string(),
        }
    }
    /// The range holding `key_group` alone.
    pub fn single(key_group: KeyGroup) -> Self {
        Self {
            start: key_group.0,
            end: key_group.0,
        }
    }
    /// The first key group of the range.
    pub fn start(&self) -> KeyGroup {
        KeyGroup(self.start)
    }
    /// The last key group of the range (inclusive).
    pub fn end(&self) -> KeyGroup {
        KeyGroup(self.end)
    }
    /// Number of key groups in the range (at least 1).
    pub fn len(&self) -> u32 {
        self.end - self.start + 1
    }
    /// Always false: a range is non-empty by construction (kept for clippy's `len` rule).
    pub fn is_empty(&self) -> bool {
        false
    }
    /// Whether `key_group` lies in the range.
    #[inline]
    pub fn contains(&self, key_group: KeyGroup) -> bool {
        self.start <= key_group.0 && key_group.0 <= self.end
    }
    /// True when every key group of `other` is in `self`.
    pub fn contains_range(&self, other: &KeyGroupRange) -> bool {
        self.start <= other.start && other.end <= self.end
    }
    /// The key groups in both ranges, or `None` when they are disjoint.
    pub fn intersection(&self, other: &KeyGroupRange) -> Option<KeyGroupRange> {
        let start = self.start.max(other.start);
        let end = self.end.min(other.end);
        (start <= end).then_some(KeyGroupRange { start, end })
    }
    /// Key groups in ascending order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = KeyGroup> {
        (self.start..=self.end).map(KeyGroup)
    }
}

impl IntoIterator for KeyGroupRange {
    type Item = KeyGroup;
    type IntoIter = std::iter::Map<std::ops::RangeInclusive<u32>, fn(u32) -> KeyGroup>;
    fn into_iter(self) -> Self::IntoIter {
        (self.start..=self.end).map(KeyGroup as fn(u32) -> KeyGroup)
    }
}

impl fmt::Display for KeyGroupRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}, {}]", self.start, self.end)
    }
}

/// Standard MurmurHash3 x86 32-bit. Written here rather than taken from the `murmur3` crate
/// because that crate hashes through `io::Read` (an `io::Result` on an infallible slice) and this
/// runs once per record on the hot path.
pub fn murmur3_x86_32(data: &[u8], seed: u32) -> u32 {
    const C1: u32 = 0xcc9e_2d51;
    const C2: u32 = 0x1b87_3593;
    let mut h = seed;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
        h ^= k;
        h = h.rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64);
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        let mut k = 0u32;
        for (i, b) in tail.iter().enumerate() {
            k |= (*b as u32) << (8 * i);
        }
        k = k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
        h ^= k;
    }
    h ^= data.len() as u32;
    fmix32(h)
}

fn fmix32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    h
}

/// Flink's `MathUtils.murmurHash(int)`: a second mixing of the key's hash, made non-negative.
pub fn flink_murmur(code: i32) -> i32 {
    let mut c = code as u32;
    c = c
        .wrapping_mul(0xcc9e_2d51)
        .rotate_left(15)
        .wrapping_mul(0x1b87_3593);
    c = c.rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64);
    c ^= 4;
    let c = fmix32(c) as i32;
    if c >= 0 {
        c
    } else if c == i32::MIN {
        0
    } else {
        -c
    }
}

/// The key group of a key whose (Java-style, signed) hash is `hash`.
pub fn key_group_for_hash(hash: i32, max: MaxParallelism) -> KeyGroup {
    // flink_murmur is non-negative, so the remainder is in 0..max.
    KeyGroup((flink_murmur(hash) as u32) % max.get())
}

/// The key group of a key given its canonical serialized bytes.
pub fn key_group_for_key_bytes(key_bytes: &[u8], max: MaxParallelism) -> KeyGroup {
    key_group_for_hash(murmur3_x86_32(key_bytes, 0) as i32, max)
}

/// The subtask that owns `key_group` at `parallelism`.
pub fn operator_index_for_key_group(
    max: MaxParallelism,
    parallelism: Parallelism,
    key_group: KeyGroup,
) -> u32 {
    // u64: 32767 * 32768 overflows nothing, but stays exact whatever the inputs.
    ((key_group.0 as u64 * parallelism.get() as u64) / max.get() as u64) as u32
}

/// The inclusive key-group range owned by subtask `operator_index`.
pub fn key_group_range_for_operator(
    max: MaxParallelism,
    parallelism: Parallelism,
    operator_index: u32,
) -> Result<KeyGroupRange> {
    max.check(parallelism)?;
    if operator_index >= parallelism.get() {
        return Err(Error::OperatorIndexOutOfBounds {
            operator_index,
            parallelism: parallelism.get(),
        });
    }
    let (m, p, i) = (
        max.get() as u64,
        parallelism.get() as u64,
        operator_index as u64,
    );
    let start = (i * m).div_ceil(p);
    let end = ((i + 1) * m - 1) / p;
    KeyGroupRange::new(start as u32, end as u32)
}

/// Flink's default max parallelism for an operator of parallelism `p`:
/// `min(max(next_power_of_two(p + p / 2), 128), 32768)`.
pub fn default_max_parallelism(parallelism: Parallelism) -> MaxParallelism {
    let p = parallelism.get();
    let wanted = (p + p / 2).next_power_of_two();
    MaxParallelism(wanted.clamp(128, UPPER_BOUND_MAX_PARALLELISM))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur3_known_value() {
        assert_eq!(murmur3_x86_32(b"hello", 0), 613153351);
        assert_eq!(murmur3_x86_32(b"", 0), 0);
    }

    #[test]
    fn worked_examples() {
        let m = MaxParallelism::new(128).unwrap();
        assert_eq!(flink_murmur(0), 593689054);
        assert_eq!(key_group_for_hash(0, m).get(), 94);
        assert_eq!(key_group_for_hash(1, m).get(), 86);
        assert_eq!(key_group_for_hash(42, m).get(), 29);
    }

    #[test]
    fn ranges_for_three_and_four() {
        let m = MaxParallelism::new(128).unwrap();
        let ranges = |p: u32| {
            let p = Parallelism::new(p).unwrap();
            (0..p.get())
                .map(|i| {
                    let r = key_group_range_for_operator(m, p, i).unwrap();
                    (r.start().get(), r.end().get())
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(ranges(3), vec![(0, 42), (43, 85), (86, 127)]);
        assert_eq!(ranges(4), vec![(0, 31), (32, 63), (64, 95), (96, 127)]);
    }

    #[test]
    fn invalid_values_are_rejected() {
        assert!(MaxParallelism::new(0).is_err());
        assert!(MaxParallelism::new(32769).is_err());
        assert!(Parallelism::new(0).is_err());
        assert!(KeyGroupRange::new(5, 4).is_err());
        let m = MaxParallelism::new(4).unwrap();
        assert!(KeyGroup::new(4, m).is_err());
        let p = Parallelism::new(5).unwrap();
        assert!(matches!(
            key_group_range_for_operator(m, p, 0),
            Err(Error::ParallelismAboveMax { .. })
        ));
        let p = Parallelism::new(2).unwrap();
        assert!(key_group_range_for_operator(m, p, 2).is_err());
    }

    #[test]
    fn intersection_and_contains() {
        let a = KeyGroupRange::new(0, 10).unwrap();
        let b = KeyGroupRange::new(5, 20).unwrap();
        assert_eq!(a.intersection(&b), Some(KeyGroupRange::new(5, 10).unwrap()));
        assert_eq!(a.intersection(&KeyGroupRange::new(11, 12).unwrap()), None);
        assert!(a.contains(KeyGroup(10)) && !a.contains(KeyGroup(11)));
        assert_eq!(b.iter().count(), 16);
        assert_eq!(b.into_iter().next(), Some(KeyGroup(5)));
    }
}
