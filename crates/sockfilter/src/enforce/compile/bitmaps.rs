//! The bitmap store: bitmaps of rule indexes, each distinct one stored once
//! and named by its id (its index in `Compiled::bitmaps`).

use std::collections::HashMap;

/// Hands out one id per distinct bitmap, in the order bitmaps are first seen.
pub(super) struct Interner {
    words: usize,
    ids: HashMap<Vec<u64>, u32>,
    list: Vec<Vec<u64>>,
}

impl Interner {
    /// A store for bitmaps of `words` words.
    pub(super) fn new(words: usize) -> Interner {
        Interner {
            words,
            ids: HashMap::new(),
            list: Vec::new(),
        }
    }

    /// The id of `bits`, stored now if it is new.
    pub(super) fn id(&mut self, bits: &[u64]) -> u32 {
        if let Some(&id) = self.ids.get(bits) {
            return id;
        }
        let id = self.list.len() as u32;
        self.ids.insert(bits.to_vec(), id);
        self.list.push(bits.to_vec());
        id
    }

    /// A bitmap with no rule set.
    pub(super) fn empty(&self) -> Vec<u64> {
        vec![0; self.words]
    }

    /// Every stored bitmap, indexed by id.
    pub(super) fn into_bitmaps(self) -> Vec<Vec<u64>> {
        self.list
    }
}

/// Adds `rule` to `bits`.
pub(super) fn set(bits: &mut [u64], rule: usize) {
    bits[rule / 64] |= 1 << (rule % 64);
}

/// Removes `rule` from `bits`.
pub(super) fn clear(bits: &mut [u64], rule: usize) {
    bits[rule / 64] &= !(1 << (rule % 64));
}
