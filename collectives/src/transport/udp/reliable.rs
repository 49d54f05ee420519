//! The reliable layer's bookkeeping, apart from the socket: which chunks of a message arrived or
//! were acknowledged ([`Bits`], with the ACK a receiver sends), and which messages of a sender were
//! delivered ([`DoneSet`], so a resent chunk of a finished message is acknowledged again but never
//! delivered twice).

use std::collections::BTreeSet;

/// How far ahead of the lowest message id a sender has not finished a new message may be.
pub(crate) const MSG_WINDOW: u32 = 1 << 16;

/// A fixed-size bit set.
pub(crate) struct Bits(Vec<u64>);

impl Bits {
    pub(crate) fn new(n: u32) -> Bits {
        Bits(vec![0; (n as usize).div_ceil(64)])
    }
    pub(crate) fn get(&self, i: u32) -> bool {
        self.0[(i / 64) as usize] & (1 << (i % 64)) != 0
    }
    /// Sets bit `i`; true if it was clear.
    pub(crate) fn set(&mut self, i: u32) -> bool {
        let w = &mut self.0[(i / 64) as usize];
        let was = *w & (1 << (i % 64)) != 0;
        *w |= 1 << (i % 64);
        !was
    }
    /// `n` bits, bit `i` set when `f(i)`.
    pub(crate) fn from_fn(n: u32, f: impl Fn(u32) -> bool) -> Bits {
        let mut b = Bits::new(n);
        (0..n).filter(|&i| f(i)).for_each(|i| {
            b.set(i);
        });
        b
    }
    /// (first clear bit below `n`, bitmap of the 64 bits from it).
    pub(crate) fn ack_state(&self, n: u32) -> (u32, u64) {
        let next = (0..n).find(|&i| !self.get(i)).unwrap_or(n);
        let mut map = 0u64;
        for i in 0..64 {
            if next + i < n && self.get(next + i) {
                map |= 1 << i;
            }
        }
        (next, map)
    }
}

/// Message ids completed from one sender.
#[derive(Default)]
pub(crate) struct DoneSet {
    below: u32,
    above: BTreeSet<u32>,
}

impl DoneSet {
    pub(crate) fn contains(&self, m: u32) -> bool {
        m < self.below || self.above.contains(&m)
    }
    pub(crate) fn insert(&mut self, m: u32) {
        self.above.insert(m);
        while self.above.remove(&self.below) {
            self.below = self.below.wrapping_add(1);
        }
    }
    /// Whether a new message `m` is within [`MSG_WINDOW`] of the lowest id not completed.
    pub(crate) fn in_reach(&self, m: u32) -> bool {
        m.wrapping_sub(self.below) < MSG_WINDOW
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ack_state_is_the_first_hole_and_the_bitmap_after_it() {
        let mut b = Bits::new(70);
        for i in [0, 1, 3, 4, 66] {
            assert!(b.set(i));
        }
        assert!(!b.set(3), "set twice");
        let (next, map) = b.ack_state(70);
        assert_eq!(next, 2);
        // Chunks 3 and 4 are 1 and 2 after the hole; 66 is 64 after it, past the bitmap.
        assert_eq!(map, 0b110);
        let full = Bits::from_fn(5, |_| true);
        assert_eq!(full.ack_state(5), (5, 0));
    }

    proptest! {
        /// Whatever order messages complete in (with repeats), each is delivered once, and the set
        /// stays small: everything below `below` is forgotten.
        #[test]
        fn done_set_delivers_each_message_once(order in proptest::collection::vec(0u32..200, 0..400)) {
            let mut d = DoneSet::default();
            let mut seen = std::collections::HashSet::new();
            for m in order {
                prop_assert_eq!(d.contains(m), seen.contains(&m));
                if !d.contains(m) {
                    d.insert(m);
                    seen.insert(m);
                }
                prop_assert!(d.contains(m));
                prop_assert!(d.above.iter().all(|&x| x > d.below));
            }
            let lowest_missing = (0..).find(|m| !seen.contains(m)).unwrap_or(0);
            prop_assert_eq!(d.below, lowest_missing);
        }
    }
}
