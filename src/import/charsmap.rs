//! Builds a SentencePiece `precompiled_charsmap` (what the tokenizers crate's `Precompiled`
//! normaliser reads) from a code point -> replacement map.
//!
//! The blob is `u32 trie_bytes`, a Darts-clone double-array trie over the UTF-8 bytes of the
//! keys (`trie_bytes / 4` little-endian u32 units), then the replacements, each ending in a NUL
//! byte; a key's value is the byte offset of its replacement. A unit is either a node:
//! `label (bits 0-7) | has_leaf (bit 8) | offset << 10`, whose child with byte `c` sits at
//! `position ^ offset ^ c` and whose leaf at `position ^ offset`; or a leaf: `1 << 31 | value`.
use std::collections::BTreeMap;

use anyhow::{ensure, Result};

/// Largest offset a unit stores without the extension bit (darts-clone's limit).
const MAX_OFFSET: usize = 1 << 21;

/// Encodes `map` (each key becomes its value, possibly the empty string).
pub fn build(map: &[(char, String)]) -> Result<Vec<u8>> {
    // Replacement strings, deduplicated, each followed by NUL.
    let mut normalized = Vec::new();
    let mut value_of: BTreeMap<&str, u32> = BTreeMap::new();
    let mut keys: Vec<(Vec<u8>, u32)> = Vec::with_capacity(map.len());
    for (from, to) in map {
        ensure!(!to.contains('\0') && *from != '\0', "NUL cannot appear in a charsmap");
        let value = *value_of.entry(to.as_str()).or_insert_with(|| {
            let at = normalized.len() as u32;
            normalized.extend_from_slice(to.as_bytes());
            normalized.push(0);
            at
        });
        keys.push((from.to_string().into_bytes(), value));
    }
    keys.sort();
    keys.dedup_by(|a, b| a.0 == b.0);
    let units = DoubleArray::build(&keys)?;

    let mut blob = Vec::with_capacity(4 + units.len() * 4 + normalized.len());
    blob.extend_from_slice(&((units.len() * 4) as u32).to_le_bytes());
    for unit in &units {
        blob.extend_from_slice(&unit.to_le_bytes());
    }
    blob.extend_from_slice(&normalized);
    Ok(blob)
}

/// A trie node while building: children by byte, and the value of a key ending here.
#[derive(Default)]
struct Node {
    children: BTreeMap<u8, Node>,
    value: Option<u32>,
}

struct DoubleArray {
    units: Vec<u32>,
    used: Vec<bool>,
    /// Offsets (child-block bases) already taken: two nodes sharing one would see each other's
    /// children.
    bases: Vec<bool>,
    /// Where the search for a free base resumes.
    next_base: usize,
}

impl DoubleArray {
    fn build(keys: &[(Vec<u8>, u32)]) -> Result<Vec<u32>> {
        let mut root = Node::default();
        for (key, value) in keys {
            ensure!(!key.is_empty() && !key.contains(&0), "charsmap keys must be non-empty and NUL-free");
            let node = key.iter().fold(&mut root, |node, &b| node.children.entry(b).or_default());
            node.value = Some(*value);
        }
        let mut da = DoubleArray { units: vec![0; 256], used: vec![false; 256], bases: vec![false; 1], next_base: 256 };
        da.used[0] = true;
        // Breadth-first: (position already given to the node, node).
        let mut queue = std::collections::VecDeque::from([(0usize, &root)]);
        while let Some((pos, node)) = queue.pop_front() {
            let labels: Vec<usize> = node.value.iter().map(|_| 0).chain(node.children.keys().map(|&b| b as usize)).collect();
            if labels.is_empty() {
                continue;
            }
            let base = da.find_base(&labels);
            let offset = pos ^ base;
            ensure!(offset < MAX_OFFSET, "charsmap trie too large ({offset} >= {MAX_OFFSET})");
            let label = da.units[pos] & 0xFF;
            da.units[pos] = label | (u32::from(node.value.is_some()) << 8) | ((offset as u32) << 10);
            if let Some(value) = node.value {
                ensure!(value < 1 << 31, "charsmap value too large");
                da.set(base, (1 << 31) | value);
            }
            for (&byte, child) in &node.children {
                let child_pos = base ^ byte as usize;
                da.set(child_pos, byte as u32);
                queue.push_back((child_pos, child));
            }
        }
        Ok(da.units)
    }

    /// The first unused base whose slots `base ^ label` are all free.
    fn find_base(&mut self, labels: &[usize]) -> usize {
        let mut base = self.next_base;
        loop {
            self.grow(base | 0xFF);
            let free = !self.bases[base] && labels.iter().all(|&l| !self.used[base ^ l]);
            if free {
                self.bases[base] = true;
                // Keep scanning from the first still-free slot's block.
                while self.used[self.next_base] {
                    self.next_base += 1;
                    self.grow(self.next_base | 0xFF);
                }
                return base;
            }
            base += 1;
        }
    }

    fn set(&mut self, pos: usize, unit: u32) {
        debug_assert!(!self.used[pos]);
        self.used[pos] = true;
        self.units[pos] = unit;
    }

    /// Makes every position up to `last` exist, so lookups of any byte from any base stay in
    /// bounds (the reader indexes `base ^ byte` without a bounds check of its own).
    fn grow(&mut self, last: usize) {
        if last >= self.units.len() {
            let len = (last | 0xFF) + 1;
            self.units.resize(len, 0);
            self.used.resize(len, false);
        }
        if last >= self.bases.len() {
            self.bases.resize((last | 0xFF) + 1, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokenizers::normalizers::Precompiled;

    #[test]
    fn every_key_maps_and_others_pass_through() {
        let map: Vec<(char, String)> = vec![
            ('\u{1}', String::new()),
            ('\t', " ".into()),
            ('\u{a0}', " ".into()),
            ('²', "2".into()),
            ('ﬁ', "fi".into()),
            ('Ａ', "A".into()),
            ('ｱ', "ア".into()),
            ('𝐀', "A".into()),
            ('¼', "1⁄4".into()),
        ];
        let blob = build(&map).unwrap();
        let pre = Precompiled::from(&blob).unwrap();
        for (from, to) in &map {
            assert_eq!(pre.transform(&from.to_string()), Some(to.as_str()), "{from:?}");
        }
        for other in ['a', 'é', 'ア', 'A', '3', '😀', 'ก', '\u{2}'] {
            assert_eq!(pre.transform(&other.to_string()), None, "{other:?}");
        }
        assert_eq!(pre.normalize_string("x\t²ﬁ\u{1}Ａ"), "x 2fiA");
    }
}
